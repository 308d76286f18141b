//! Group-relative advantages (GRPO, DAPO, GSPO, Dr. GRPO) with NaN-aware statistics.
//!
//! Semantics follow TRL and EasyR1: `(r - mean_g) / (std_g + eps)` with the sample standard deviation
//! (ddof = 1). A NaN reward is "unscorable": it is left out of its group's statistics and gets advantage 0.
//! A group with fewer than two valid rewards, or whose valid rewards are all equal, is degenerate: every
//! member gets advantage 0, and the flag lets DAPO-style dynamic sampling drop the group.

use std::collections::HashMap;
use std::fmt;

/// How advantages are scaled after subtracting the group mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Divide by the group's standard deviation (GRPO as in TRL's `scale_rewards="group"`).
    Group,
    /// Divide by the standard deviation of the whole batch (`scale_rewards="batch"`).
    Batch,
    /// Do not divide (Dr. GRPO, `scale_rewards="none"`).
    None,
}

impl Scale {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "group" => Some(Self::Group),
            "batch" => Some(Self::Batch),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// How samples are assigned to groups.
#[derive(Clone, Copy, Debug)]
pub enum Groups<'a> {
    /// Consecutive runs of this many samples.
    Size(usize),
    /// One id per sample; groups are numbered in order of first appearance and need not be contiguous.
    Ids(&'a [i64]),
}

/// Bad arguments, with enough detail for the caller to name what and where.
#[derive(Clone, Debug, PartialEq)]
pub enum AdvantageError {
    ZeroGroupSize,
    NotDivisible { len: usize, group_size: usize },
    IdsLength { rewards: usize, ids: usize },
    Infinite { index: usize, value: f64 },
    NegativeEps(f64),
}

impl fmt::Display for AdvantageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroGroupSize => write!(f, "group_size must be a positive integer"),
            Self::NotDivisible { len, group_size } => {
                write!(f, "{len} rewards cannot be split into groups of group_size={group_size}")
            }
            Self::IdsLength { rewards, ids } => {
                write!(f, "group_ids has {ids} entries but rewards has {rewards}")
            }
            Self::Infinite { index, value } => write!(
                f,
                "rewards[{index}] is {value}; rewards must be finite (use NaN for an unscorable completion)"
            ),
            Self::NegativeEps(e) => write!(f, "eps must be finite and >= 0, got {e}"),
        }
    }
}

impl std::error::Error for AdvantageError {}

/// Per-group statistics over the valid (non-NaN) rewards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupStats {
    /// Group index of every sample.
    pub group_of: Vec<u32>,
    pub mean: Vec<f64>,
    /// Sample standard deviation (ddof = 1); NaN when fewer than two valid rewards.
    pub std: Vec<f64>,
    /// Number of valid rewards.
    pub count: Vec<u32>,
    pub degenerate: Vec<bool>,
}

/// Advantages and the statistics they came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdvantageOutput {
    pub advantages: Vec<f64>,
    pub stats: GroupStats,
}

fn assign_groups(n: usize, groups: Groups<'_>) -> Result<(Vec<u32>, usize), AdvantageError> {
    match groups {
        Groups::Size(0) => Err(AdvantageError::ZeroGroupSize),
        Groups::Size(g) if n % g != 0 => Err(AdvantageError::NotDivisible { len: n, group_size: g }),
        Groups::Size(g) => Ok(((0..n).map(|i| (i / g) as u32).collect(), n / g)),
        Groups::Ids(ids) if ids.len() != n => Err(AdvantageError::IdsLength { rewards: n, ids: ids.len() }),
        Groups::Ids(ids) => {
            let mut seen: HashMap<i64, u32> = HashMap::new();
            let mut out = Vec::with_capacity(n);
            let mut prev: Option<(i64, u32)> = None;
            for &id in ids {
                // Contiguous runs (the usual layout) skip the hash lookup.
                let g = match prev {
                    Some((p, g)) if p == id => g,
                    _ => {
                        let next = seen.len() as u32;
                        *seen.entry(id).or_insert(next)
                    }
                };
                prev = Some((id, g));
                out.push(g);
            }
            Ok((out, seen.len()))
        }
    }
}

/// True when all valid values of a group are equal up to rounding.
#[inline]
fn is_flat(min: f64, max: f64) -> bool {
    max - min <= 1e-12 * max.abs().max(min.abs()).max(1.0)
}

/// Computes advantages and per-group statistics.
pub fn group_advantages(
    rewards: &[f64],
    groups: Groups<'_>,
    scale: Scale,
    eps: f64,
) -> Result<AdvantageOutput, AdvantageError> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(AdvantageError::NegativeEps(eps));
    }
    if let Some((index, &value)) = rewards.iter().enumerate().find(|(_, r)| r.is_infinite()) {
        return Err(AdvantageError::Infinite { index, value });
    }
    let n = rewards.len();
    let (group_of, n_groups) = assign_groups(n, groups)?;

    let mut sum = vec![0.0f64; n_groups];
    let mut count = vec![0u32; n_groups];
    let mut min = vec![f64::INFINITY; n_groups];
    let mut max = vec![f64::NEG_INFINITY; n_groups];
    for (&r, &g) in rewards.iter().zip(&group_of) {
        if !r.is_nan() {
            let g = g as usize;
            sum[g] += r;
            count[g] += 1;
            min[g] = min[g].min(r);
            max[g] = max[g].max(r);
        }
    }
    let mean: Vec<f64> = sum.iter().zip(&count).map(|(&s, &c)| if c > 0 { s / f64::from(c) } else { f64::NAN }).collect();
    let mut sq = vec![0.0f64; n_groups];
    for (&r, &g) in rewards.iter().zip(&group_of) {
        if !r.is_nan() {
            let d = r - mean[g as usize];
            sq[g as usize] += d * d;
        }
    }
    let std: Vec<f64> = sq.iter().zip(&count).map(|(&s, &c)| if c >= 2 { (s / f64::from(c - 1)).sqrt() } else { f64::NAN }).collect();
    let degenerate: Vec<bool> = (0..n_groups).map(|g| count[g] < 2 || is_flat(min[g], max[g])).collect();

    let denom: Vec<f64> = match scale {
        Scale::Group => std.iter().map(|s| s + eps).collect(),
        Scale::None => vec![1.0; n_groups],
        Scale::Batch => {
            let valid = rewards.iter().filter(|r| !r.is_nan());
            let (s, c) = valid.clone().fold((0.0, 0usize), |(s, c), &r| (s + r, c + 1));
            let batch_std = if c >= 2 {
                let m = s / c as f64;
                (valid.map(|&r| (r - m) * (r - m)).sum::<f64>() / (c - 1) as f64).sqrt()
            } else {
                0.0
            };
            vec![batch_std + eps; n_groups]
        }
    };

    let advantages = rewards
        .iter()
        .zip(&group_of)
        .map(|(&r, &g)| {
            let g = g as usize;
            if r.is_nan() || degenerate[g] || denom[g] == 0.0 {
                0.0
            } else {
                (r - mean[g]) / denom[g]
            }
        })
        .collect();
    Ok(AdvantageOutput { advantages, stats: GroupStats { group_of, mean, std, count, degenerate } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(r: &[f64], g: Groups<'_>, s: Scale) -> Vec<f64> {
        group_advantages(r, g, s, 0.0).unwrap().advantages
    }

    #[test]
    fn sample_std_like_trl() {
        let a = adv(&[1.0, 0.0, 1.0, 0.0], Groups::Size(4), Scale::Group);
        let std = (1.0f64 / 3.0).sqrt();
        assert!((a[0] - 0.5 / std).abs() < 1e-12);
        assert!((a[1] + 0.5 / std).abs() < 1e-12);
    }

    #[test]
    fn nan_excluded_and_degenerate_zero() {
        let out = group_advantages(&[1.0, f64::NAN, 0.0, 0.3, 0.3, 0.3], Groups::Size(3), Scale::Group, 1e-6).unwrap();
        assert_eq!(out.advantages[1], 0.0);
        assert!(out.advantages[0] > 0.0 && out.advantages[2] < 0.0);
        assert_eq!(&out.advantages[3..], &[0.0, 0.0, 0.0]);
        assert_eq!(out.stats.degenerate, vec![false, true]);
        assert_eq!(out.stats.count, vec![2, 3]);
    }

    #[test]
    fn ids_first_appearance_and_none_scale() {
        let ids = [7, 3, 7, 3];
        let out = group_advantages(&[1.0, 2.0, 3.0, 6.0], Groups::Ids(&ids), Scale::None, 0.0).unwrap();
        assert_eq!(out.advantages, vec![-1.0, -2.0, 1.0, 2.0]);
        assert_eq!(out.stats.group_of, vec![0, 1, 0, 1]);
    }

    #[test]
    fn errors() {
        assert_eq!(group_advantages(&[1.0; 3], Groups::Size(2), Scale::Group, 0.0).unwrap_err(), AdvantageError::NotDivisible { len: 3, group_size: 2 });
        assert!(matches!(group_advantages(&[1.0, f64::INFINITY], Groups::Size(2), Scale::Group, 0.0), Err(AdvantageError::Infinite { index: 1, .. })));
        assert_eq!(adv(&[], Groups::Size(8), Scale::Batch), Vec::<f64>::new());
    }
}

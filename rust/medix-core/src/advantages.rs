//! Group-relative advantages (GRPO, DAPO, GSPO, Dr. GRPO) with NaN-aware statistics.
//!
//! Semantics follow TRL and EasyR1: `(r - mean_g) / (std_g + eps)` with the sample standard deviation
//! (ddof = 1). A NaN reward is "unscorable": it is left out of its group's statistics and gets advantage 0.
//! A group with fewer than two valid rewards, or whose valid rewards are all equal (sample std at most
//! 1e-12 x max(1, |mean|)), is degenerate: every
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
                write!(
                    f,
                    "{len} rewards cannot be split into groups of group_size={group_size}"
                )
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
    /// Group index of every sample, for `Groups::Ids`; empty for `Groups::Size(g)`, where sample `i` is in
    /// group `i / g` (not materialised, to keep the hot path free of a per-sample allocation).
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

fn assign_ids(ids: &[i64]) -> (Vec<u32>, usize) {
    let mut seen: HashMap<i64, u32> = HashMap::new();
    let mut out = Vec::with_capacity(ids.len());
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
    (out, seen.len())
}

/// True when a group's valid values are all equal up to rounding: sample std <= 1e-12 * max(1, |mean|).
#[inline]
fn is_flat(mean: f64, std: f64) -> bool {
    std <= 1e-12 * mean.abs().max(1.0)
}

/// Statistics of one group's valid values: (mean, sample std, count, degenerate).
#[inline]
fn stats_of(values: &[f64]) -> (f64, f64, u32, bool) {
    let (mut sum, mut count) = (0.0f64, 0u32);
    for &r in values {
        if !r.is_nan() {
            sum += r;
            count += 1;
        }
    }
    if count == 0 {
        return (f64::NAN, f64::NAN, 0, true);
    }
    let mean = sum / f64::from(count);
    if count < 2 {
        return (mean, f64::NAN, count, true);
    }
    let sq: f64 = values
        .iter()
        .filter(|r| !r.is_nan())
        .map(|&r| (r - mean) * (r - mean))
        .sum();
    let std = (sq / f64::from(count - 1)).sqrt();
    (mean, std, count, is_flat(mean, std))
}

fn batch_std(rewards: &[f64]) -> f64 {
    let (_, std, count, _) = stats_of(rewards);
    if count >= 2 {
        std
    } else {
        0.0
    }
}

/// 1 / denominator, or 0 for a degenerate group or a zero denominator (so its advantages are 0).
#[inline]
fn inverse(degenerate: bool, denom: f64) -> f64 {
    if degenerate || denom == 0.0 {
        0.0
    } else {
        1.0 / denom
    }
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
    let n = rewards.len();
    let batch_denom = match scale {
        Scale::Batch => batch_std(rewards) + eps,
        _ => 1.0,
    };
    let denom_of = |std: f64| match scale {
        Scale::Group => std + eps,
        Scale::Batch => batch_denom,
        Scale::None => 1.0,
    };
    let mut stats = GroupStats::default();
    let mut advantages = Vec::with_capacity(n);
    let push_stats = |st: &mut GroupStats, (mean, std, count, degenerate): (f64, f64, u32, bool)| {
        st.mean.push(mean);
        st.std.push(std);
        st.count.push(count);
        st.degenerate.push(degenerate);
    };
    match groups {
        Groups::Size(0) => return Err(AdvantageError::ZeroGroupSize),
        Groups::Size(g) if n % g != 0 => {
            return Err(AdvantageError::NotDivisible {
                len: n,
                group_size: g,
            })
        }
        Groups::Size(g) => {
            // Common group sizes get a monomorphised copy whose inner loops have a constant trip count, so the
            // compiler unrolls and vectorises them; other sizes take the same code with a runtime width.
            match g {
                2 => sized_groups(rewards, Fixed::<2>, &denom_of, &mut advantages, &mut stats),
                4 => sized_groups(rewards, Fixed::<4>, &denom_of, &mut advantages, &mut stats),
                5 => sized_groups(rewards, Fixed::<5>, &denom_of, &mut advantages, &mut stats),
                8 => sized_groups(rewards, Fixed::<8>, &denom_of, &mut advantages, &mut stats),
                16 => sized_groups(rewards, Fixed::<16>, &denom_of, &mut advantages, &mut stats),
                _ => sized_groups(rewards, Runtime(g), &denom_of, &mut advantages, &mut stats),
            }
        }
        Groups::Ids(ids) if ids.len() != n => {
            return Err(AdvantageError::IdsLength {
                rewards: n,
                ids: ids.len(),
            })
        }
        Groups::Ids(ids) => {
            check_finite(rewards)?;
            let (group_of, n_groups) = assign_ids(ids);
            let mut members: Vec<Vec<f64>> = vec![Vec::new(); n_groups];
            for (&r, &g) in rewards.iter().zip(&group_of) {
                members[g as usize].push(r);
            }
            let mut inv = Vec::with_capacity(n_groups);
            for m in &members {
                let st = stats_of(m);
                inv.push(inverse(st.3, denom_of(st.1)));
                push_stats(&mut stats, st);
            }
            advantages.extend(rewards.iter().zip(&group_of).map(|(&r, &g)| {
                let g = g as usize;
                if r.is_nan() {
                    0.0
                } else {
                    (r - stats.mean[g]) * inv[g]
                }
            }));
            stats.group_of = group_of;
        }
    }
    if advantages.len() == n {
        Ok(AdvantageOutput { advantages, stats })
    } else {
        // `sized_groups` found an infinity in its first pass and stopped; name the first one.
        check_finite(rewards)?;
        unreachable!("sized_groups stops only on an infinite reward")
    }
}

fn check_finite(rewards: &[f64]) -> Result<(), AdvantageError> {
    match rewards.iter().enumerate().find(|(_, r)| r.is_infinite()) {
        Some((index, &value)) => Err(AdvantageError::Infinite { index, value }),
        None => Ok(()),
    }
}

/// A group width known at compile time or at run time.
trait Width: Copy {
    fn get(self) -> usize;
}

#[derive(Clone, Copy)]
struct Fixed<const G: usize>;

impl<const G: usize> Width for Fixed<G> {
    #[inline(always)]
    fn get(self) -> usize {
        G
    }
}

#[derive(Clone, Copy)]
struct Runtime(usize);

impl Width for Runtime {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// Consecutive groups of width `w`, in passes over all groups so that the divisions and square roots of
/// different groups overlap in the pipeline instead of forming one dependency chain per group. Leaves
/// `advantages` empty if a reward is infinite (the caller reports which).
#[inline(always)]
fn sized_groups<W: Width>(
    rewards: &[f64],
    w: W,
    denom_of: &impl Fn(f64) -> f64,
    advantages: &mut Vec<f64>,
    stats: &mut GroupStats,
) {
    let g = w.get();
    let ng = rewards.len() / g;
    let mut sum = vec![0.0f64; ng];
    let mut count = vec![0u32; ng];
    let mut degenerate = vec![true; ng];
    let mut infinite = false;
    for (gi, chunk) in rewards.chunks_exact(g).enumerate() {
        let (mut s, mut c) = (0.0f64, 0u32);
        // Branch-free: rewards like {0, 0.1, 1} in random order would defeat the branch predictor.
        for &r in chunk {
            let ok = !r.is_nan();
            s += if ok { r } else { 0.0 };
            c += u32::from(ok);
            infinite |= r.is_infinite();
        }
        sum[gi] = s;
        count[gi] = c;
    }
    if infinite {
        return;
    }
    let mean: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| if c > 0 { s / f64::from(c) } else { f64::NAN })
        .collect();
    let mut std = vec![f64::NAN; ng];
    let mut inv = vec![0.0f64; ng];
    for (gi, chunk) in rewards.chunks_exact(g).enumerate() {
        if count[gi] < 2 {
            continue;
        }
        let m = mean[gi];
        let sq: f64 = chunk
            .iter()
            .map(|&r| if r.is_nan() { 0.0 } else { (r - m) * (r - m) })
            .sum();
        std[gi] = (sq / f64::from(count[gi] - 1)).sqrt();
        degenerate[gi] = is_flat(m, std[gi]);
        inv[gi] = inverse(degenerate[gi], denom_of(std[gi]));
    }
    advantages.resize(rewards.len(), 0.0);
    for (gi, (chunk, out)) in rewards
        .chunks_exact(g)
        .zip(advantages.chunks_exact_mut(g))
        .enumerate()
    {
        let (m, k) = (mean[gi], inv[gi]);
        for (o, &r) in out.iter_mut().zip(chunk) {
            *o = if r.is_nan() { 0.0 } else { (r - m) * k };
        }
    }
    stats.mean = mean;
    stats.std = std;
    stats.count = count;
    stats.degenerate = degenerate;
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
        let out = group_advantages(
            &[1.0, f64::NAN, 0.0, 0.3, 0.3, 0.3],
            Groups::Size(3),
            Scale::Group,
            1e-6,
        )
        .unwrap();
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
        let sized = group_advantages(&[1.0, 2.0, 3.0, 6.0], Groups::Size(2), Scale::None, 0.0).unwrap();
        assert!(sized.stats.group_of.is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(
            group_advantages(&[1.0; 3], Groups::Size(2), Scale::Group, 0.0).unwrap_err(),
            AdvantageError::NotDivisible {
                len: 3,
                group_size: 2
            }
        );
        assert!(matches!(
            group_advantages(&[1.0, f64::INFINITY], Groups::Size(2), Scale::Group, 0.0),
            Err(AdvantageError::Infinite { index: 1, .. })
        ));
        assert_eq!(adv(&[], Groups::Size(8), Scale::Batch), Vec::<f64>::new());
    }
}

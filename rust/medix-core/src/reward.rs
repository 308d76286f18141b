//! Format, modality, answer extraction and answer validity, in two modes.
//!
//! `Strict` is this project's definition (exactly one think block and one answer block, tolerant tag
//! spelling, no stray tags). `Reference` reproduces the MediX-R1 authors' released reward code bit for bit
//! (their `re.sub`/`re.fullmatch`/`str.strip` pipeline) so that the paper's numbers can be reproduced.

use std::borrow::Cow;

use memchr::memmem;

use crate::tags::{modality_tag_at, Block, TagIter, MODALITY_TAGS};
use crate::text::{clean_answer, is_blank, is_py_space, py_strip, skip_space};

/// Which rule set to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Reference,
}

impl Mode {
    /// Parses `"strict"` or `"reference"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "strict" => Some(Self::Strict),
            "reference" => Some(Self::Reference),
            _ => None,
        }
    }
}

/// Everything the reward needs from one response, computed in one pass over the text.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// 1.0 or 0.0.
    pub format: f64,
    /// 1.0, 0.0, or NaN when not applicable (strict mode, ground truth without a modality tag, or no ground truth).
    pub modality: f64,
    /// The extracted answer ("" when there is none in strict mode).
    pub answer: String,
    /// Whether `answer` is unusable for the accuracy rewards.
    pub invalid: bool,
}

// ---------------------------------------------------------------------------------------------------------
// Ground truth
// ---------------------------------------------------------------------------------------------------------

/// `"<TAG> text"` -> (`Some(TAG)` canonical upper-case, cleaned text); without a leading known tag,
/// (`None`, the whole text cleaned).
pub fn parse_ground_truth(gt: &str) -> (Option<&'static str>, &str) {
    let start = skip_space(gt, 0);
    if let Some((idx, end)) = modality_tag_at(gt, start) {
        (Some(MODALITY_TAGS[idx]), clean_answer(&gt[end..]))
    } else {
        (None, clean_answer(gt))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Strict mode
// ---------------------------------------------------------------------------------------------------------

/// Index of the modality tag a response starts with (after whitespace), and the offset past it.
fn leading_modality(resp: &str) -> Option<(usize, usize)> {
    modality_tag_at(resp, skip_space(resp, 0))
}

fn strict_format(resp: &str) -> bool {
    let mut pos = skip_space(resp, 0);
    if let Some((_, end)) = modality_tag_at(resp, pos) {
        pos = skip_space(resp, end);
    }
    let mut tags = TagIter::new(resp);
    let (Some(t0), Some(t1), Some(t2), Some(t3)) = (tags.next(), tags.next(), tags.next(), tags.next())
    else {
        return false;
    };
    if tags.next().is_some() {
        return false;
    }
    let think_ok = t0.start == pos
        && !t0.closing
        && matches!(t0.block, Block::Think | Block::Thinking)
        && t1.closing
        && t1.block == t0.block
        && !is_blank(&resp[t0.end..t1.start]);
    think_ok
        && is_blank(&resp[t1.end..t2.start])
        && !t2.closing
        && t2.block == Block::Answer
        && t3.closing
        && t3.block == Block::Answer
        && !clean_answer(&resp[t2.end..t3.start]).is_empty()
        && is_blank(&resp[t3.end..])
}

/// The content of the single answer block, or `None` unless there is exactly one open and one close
/// answer tag, in that order.
fn strict_answer(resp: &str) -> Option<&str> {
    let mut open = None;
    let mut close = None;
    for tag in TagIter::new(resp).filter(|t| t.block == Block::Answer) {
        let slot = if tag.closing { &mut close } else { &mut open };
        if slot.is_some() {
            return None;
        }
        *slot = Some(tag);
    }
    match (open, close) {
        (Some(o), Some(c)) if o.end <= c.start => Some(clean_answer(&resp[o.end..c.start])),
        _ => None,
    }
}

fn strict_modality(resp: &str, gt: &str) -> f64 {
    match parse_ground_truth(gt).0 {
        None => f64::NAN,
        Some(tag) => match leading_modality(resp) {
            Some((idx, _)) if MODALITY_TAGS[idx] == tag => 1.0,
            _ => 0.0,
        },
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reference mode (the authors' code)
// ---------------------------------------------------------------------------------------------------------

const THINKING_OPEN: &str = "<thinking>";
const THINKING_CLOSE: &str = "</thinking>";
const ANSWER_OPEN: &str = "<answer>";
const ANSWER_CLOSE: &str = "</answer>";

/// `re.sub(r"\s*(<|>|/)\s*", r"\1", s)`: drop whitespace on both sides of every `<`, `>` and `/`.
pub fn collapse_delimiters(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut delims = memchr::memchr3_iter(b'<', b'>', b'/', bytes).peekable();
    if delims.peek().is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = 0;
    for d in delims {
        // Whitespace never contains a delimiter, so `rest <= d` always holds.
        out.push_str(s[rest..d].trim_end_matches(is_py_space));
        out.push(bytes[d] as char);
        let after = &s[d + 1..];
        rest = s.len() - after.trim_start_matches(is_py_space).len();
    }
    out.push_str(&s[rest..]);
    Cow::Owned(out)
}

/// `re.fullmatch(r"<thinking>.*?</thinking>\s*<answer>.*?</answer>", text, re.DOTALL)` on the text from the
/// first `<thinking>` on, stripped.
fn reference_format(collapsed: &str) -> bool {
    let Some(idx) = memmem::find(collapsed.as_bytes(), THINKING_OPEN.as_bytes()) else {
        return false;
    };
    let t = py_strip(&collapsed[idx..]);
    if !t.ends_with(ANSWER_CLOSE)
        || t.len() < THINKING_OPEN.len() + THINKING_CLOSE.len() + ANSWER_OPEN.len() + ANSWER_CLOSE.len()
    {
        return false;
    }
    let last_answer_open_end = t.len() - ANSWER_CLOSE.len();
    let bytes = t.as_bytes();
    // Each `</thinking>` after the opening tag is a candidate split; the whitespace runs that follow distinct
    // candidates are disjoint (whitespace holds no `<`), so this loop is linear.
    for p in memmem::find_iter(&bytes[THINKING_OPEN.len()..], THINKING_CLOSE.as_bytes()) {
        let after = THINKING_OPEN.len() + p + THINKING_CLOSE.len();
        let q = skip_space(t, after);
        if t[q..].starts_with(ANSWER_OPEN) && q + ANSWER_OPEN.len() <= last_answer_open_end {
            return true;
        }
    }
    false
}

/// `given = re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)`; group 1 stripped, else the whole text
/// stripped; then `.strip(".")`.
fn reference_answer(collapsed: &str) -> &str {
    let bytes = collapsed.as_bytes();
    let inner = memmem::find(bytes, ANSWER_OPEN.as_bytes()).and_then(|a| {
        let from = a + ANSWER_OPEN.len();
        memmem::find(&bytes[from..], ANSWER_CLOSE.as_bytes()).map(|b| &collapsed[from..from + b])
    });
    py_strip(inner.unwrap_or(collapsed)).trim_matches('.')
}

/// `predict[:predict.find("<thinking>")].strip().upper() == (gt.split(">", 1)[0] + ">").upper()`.
///
/// Exact for ASCII text only: Rust's and CPython's Unicode case tables differ (55 code points between Rust
/// 1.95 and CPython 3.11, and they move with every release), so `medix_r1.rewards.structure` redoes this
/// comparison with `str.upper()` for every row that is not pure ASCII.
fn reference_modality(collapsed: &str, gt: &str) -> f64 {
    let Some(idx) = memmem::find(collapsed.as_bytes(), THINKING_OPEN.as_bytes()) else {
        return 0.0;
    };
    let predicted = py_strip(&collapsed[..idx]);
    let gt_head = gt.split('>').next().unwrap_or("");
    // Cheap reject before allocating: upper-casing can change lengths only outside ASCII.
    if predicted.is_ascii() && gt_head.is_ascii() && predicted.len() != gt_head.len() + 1 {
        return 0.0;
    }
    let mut expected = gt_head.to_uppercase();
    expected.push('>');
    if predicted.to_uppercase() == expected {
        1.0
    } else {
        0.0
    }
}

fn reference_invalid(answer: &str) -> bool {
    let mut chars = answer.chars();
    let short = matches!((chars.next(), chars.next()), (None, _) | (Some(_), None));
    short || answer.contains("__") || answer.contains(':') || answer.contains('?')
}

// ---------------------------------------------------------------------------------------------------------
// Public per-item API
// ---------------------------------------------------------------------------------------------------------

/// 1.0 if the response is well formed, else 0.0.
pub fn format_reward(resp: &str, mode: Mode) -> f64 {
    let ok = match mode {
        Mode::Strict => strict_format(resp),
        Mode::Reference => reference_format(&collapse_delimiters(resp)),
    };
    if ok {
        1.0
    } else {
        0.0
    }
}

/// 1.0 if the response names the ground truth's modality, 0.0 if not, NaN if not applicable (strict mode only).
pub fn modality_reward(resp: &str, gt: &str, mode: Mode) -> f64 {
    match mode {
        Mode::Strict => strict_modality(resp, gt),
        Mode::Reference => reference_modality(&collapse_delimiters(resp), gt),
    }
}

/// The final answer of a response.
pub fn extract_answer(resp: &str, mode: Mode) -> Cow<'_, str> {
    match mode {
        Mode::Strict => Cow::Borrowed(strict_answer(resp).unwrap_or("")),
        Mode::Reference => match collapse_delimiters(resp) {
            Cow::Borrowed(b) => Cow::Borrowed(reference_answer(b)),
            Cow::Owned(o) => Cow::Owned(reference_answer(&o).to_owned()),
        },
    }
}

/// Whether an extracted answer cannot be scored for accuracy.
pub fn is_invalid_answer(answer: &str, mode: Mode) -> bool {
    match mode {
        Mode::Strict => is_blank(answer),
        Mode::Reference => reference_invalid(answer),
    }
}

/// Format, modality, answer and validity of one response, sharing the work between them.
pub fn analyze(resp: &str, gt: Option<&str>, mode: Mode) -> Analysis {
    match mode {
        Mode::Strict => {
            let answer = strict_answer(resp).unwrap_or("");
            Analysis {
                format: if strict_format(resp) { 1.0 } else { 0.0 },
                modality: gt.map_or(f64::NAN, |g| strict_modality(resp, g)),
                invalid: is_blank(answer),
                answer: answer.to_owned(),
            }
        }
        Mode::Reference => {
            let collapsed = collapse_delimiters(resp);
            let answer = reference_answer(&collapsed);
            Analysis {
                format: if reference_format(&collapsed) { 1.0 } else { 0.0 },
                modality: gt.map_or(f64::NAN, |g| reference_modality(&collapsed, g)),
                invalid: reference_invalid(answer),
                answer: answer.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "<CT_SCAN><think>The lesion enhances.</think>\n<answer>Hepatocellular carcinoma.</answer>\n";

    #[test]
    fn strict_format_cases() {
        assert_eq!(format_reward(GOOD, Mode::Strict), 1.0);
        assert_eq!(
            format_reward("  <thinking>x</thinking><answer>y</answer>", Mode::Strict),
            1.0
        );
        assert_eq!(
            format_reward("< THINK >x</think ><ANSWER>y</ answer >", Mode::Strict),
            1.0
        );
        // mismatched closing name, blank reasoning, empty answer, trailing text, leading text, duplicates
        assert_eq!(
            format_reward("<think>x</thinking><answer>y</answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("<think> </think><answer>y</answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("<think>x</think><answer> . </answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("<think>x</think><answer>y</answer>z", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("hi<think>x</think><answer>y</answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("<BRAIN><think>x</think><answer>y</answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward("<think>x<think>x</think><answer>y</answer>", Mode::Strict),
            0.0
        );
        assert_eq!(
            format_reward(
                "<think>x</think><answer>y</answer><answer>y</answer>",
                Mode::Strict
            ),
            0.0
        );
        assert_eq!(
            format_reward("<think>x</think>between<answer>y</answer>", Mode::Strict),
            0.0
        );
    }

    #[test]
    fn strict_answer_and_modality() {
        assert_eq!(extract_answer(GOOD, Mode::Strict), "Hepatocellular carcinoma");
        assert_eq!(
            extract_answer("<answer>a</answer><answer>b</answer>", Mode::Strict),
            ""
        );
        assert_eq!(extract_answer("</answer>a<answer>", Mode::Strict), "");
        assert_eq!(modality_reward(GOOD, "<ct_scan> HCC", Mode::Strict), 1.0);
        assert_eq!(modality_reward(GOOD, "<MRI_SCAN> HCC", Mode::Strict), 0.0);
        assert!(modality_reward(GOOD, "HCC", Mode::Strict).is_nan());
        assert_eq!(
            parse_ground_truth(" < x_ray > Right lower lobe pneumonia. "),
            (Some("X_RAY"), "Right lower lobe pneumonia")
        );
        assert_eq!(parse_ground_truth("<BRAIN> a."), (None, "<BRAIN> a"));
    }

    #[test]
    fn reference_matches_authors() {
        assert_eq!(collapse_delimiters("a < b > c / d  e"), "a<b>c/d  e");
        let r = "<CT_SCAN> <thinking> because </thinking>\n <answer> . HCC . </answer>\n";
        assert_eq!(format_reward(r, Mode::Reference), 1.0);
        assert_eq!(modality_reward(r, "<ct_scan> HCC", Mode::Reference), 1.0);
        assert_eq!(extract_answer(r, Mode::Reference), " HCC ");
        // fullmatch with lazy groups still accepts a trailing duplicate closing tag
        assert_eq!(
            format_reward(
                "<thinking>a</thinking><answer>b</answer>c</answer>",
                Mode::Reference
            ),
            1.0
        );
        assert_eq!(
            format_reward("<think>a</think><answer>b</answer>", Mode::Reference),
            0.0
        );
        assert_eq!(modality_reward("no tags", "<X_RAY> a", Mode::Reference), 0.0);
        assert!(is_invalid_answer("a", Mode::Reference));
        assert!(is_invalid_answer("a: b", Mode::Reference));
        assert!(!is_invalid_answer("ab", Mode::Reference));
        assert_eq!(extract_answer("  just text.  ", Mode::Reference), "just text");
    }

    #[test]
    fn adversarial_input_is_linear() {
        let big = "<think <thinking></thinking> </answer".repeat(100_000);
        // A quadratic scan would make this test hang (the benchmark prints the time); here only the result.
        for mode in [Mode::Strict, Mode::Reference] {
            let a = analyze(&big, Some("<X_RAY> a"), mode);
            assert_eq!(a.format, 0.0);
        }
    }
}

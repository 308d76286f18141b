//! Character classes and trimming that match CPython exactly.
//!
//! The reference mode must reproduce the authors' Python code bit for bit, so "whitespace" here is what
//! `str.isspace()` (and therefore `str.strip()` and `re`'s `\s` on `str` patterns) accepts, which is not
//! Rust's `char::is_whitespace` (CPython also counts U+001C..U+001F as whitespace).

/// `true` iff CPython's `str.isspace()` is true for `c`.
#[inline]
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Python's `s.strip()`.
#[inline]
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `s.lstrip()`.
#[inline]
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_space)
}

/// `true` iff `s` is empty or only whitespace.
#[inline]
pub fn is_blank(s: &str) -> bool {
    s.chars().all(is_py_space)
}

/// Strict-mode answer cleaning: trim whitespace, then drop trailing periods (and any whitespace they expose).
///
/// Leading periods are kept on purpose: ".5 mg" is an answer, "Pneumonia." is "Pneumonia".
#[inline]
pub fn clean_answer(s: &str) -> &str {
    py_lstrip(s).trim_end_matches(|c: char| c == '.' || is_py_space(c))
}

/// Byte offset just past the whitespace that starts at `from`.
#[inline]
pub fn skip_space(s: &str, from: usize) -> usize {
    from + (s.len() - from - py_lstrip(&s[from..]).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_set() {
        for c in ['\u{1C}', '\u{1F}', '\u{85}', '\u{A0}', '\u{3000}', '\u{2009}'] {
            assert!(is_py_space(c), "{c:?}");
        }
        for c in ['\u{200B}', '\u{FEFF}', 'a', '\u{180E}'] {
            assert!(!is_py_space(c), "{c:?}");
        }
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean_answer("  Pneumonia. . "), "Pneumonia");
        assert_eq!(clean_answer(".5 mg."), ".5 mg");
        assert_eq!(clean_answer(" ... "), "");
        assert_eq!(skip_space("  \u{3000}x", 0), 5);
    }
}

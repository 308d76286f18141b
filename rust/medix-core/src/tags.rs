//! Tag recognition for strict mode: `<think>`, `<thinking>`, `<answer>` and the 16 modality tags.
//!
//! Tags are case-insensitive and may carry whitespace inside the brackets (`< think >`, `</ANSWER >`,
//! `< / answer>`). Every scan is linear: a tag candidate starts at a `<`, reads whitespace that no other
//! candidate can share, and a name of bounded length.

use crate::text::is_py_space;

/// The 16 modality tags of MediX-R1, in the order the paper lists them.
pub const MODALITY_TAGS: [&str; 16] = [
    "X_RAY",
    "MICROSCOPY",
    "CLINICAL_PHOTOGRAPHY",
    "CT_SCAN",
    "GRAPHICS",
    "ANGIOGRAPHY",
    "PET_SCAN",
    "ULTRASOUND",
    "MRI_SCAN",
    "FUNDUS_PHOTOGRAPHY",
    "OCT_SCAN",
    "ENDOSCOPY",
    "MAMMOGRAPHY",
    "FLUOROSCOPY",
    "OTHER",
    "SPECT",
];

/// Longest name a tag can have ("CLINICAL_PHOTOGRAPHY" is 20 bytes); longer words are not tags.
const MAX_NAME: usize = 24;

/// Index into [`MODALITY_TAGS`] of `name`, compared case-insensitively.
pub fn modality_index(name: &str) -> Option<usize> {
    MODALITY_TAGS
        .iter()
        .position(|t| t.len() == name.len() && t.eq_ignore_ascii_case(name))
}

/// Which block a structural tag belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    Think,
    Thinking,
    Answer,
}

/// A structural tag found in a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub block: Block,
    pub closing: bool,
    /// Byte offset of the `<`.
    pub start: usize,
    /// Byte offset just past the `>`.
    pub end: usize,
}

/// What a `<...>` at some offset turned out to be.
enum Candidate<'a> {
    /// `<` [ws] [`/`] [ws] name [ws] `>` with the name's text and whether it had the slash.
    Named {
        name: &'a str,
        closing: bool,
        end: usize,
    },
    NotATag,
}

fn skip_ws(bytes: &[u8], s: &str, mut i: usize) -> usize {
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if is_py_space(b as char) {
                i += 1;
                continue;
            }
            return i;
        }
        // Multi-byte: decode one char (the offset is always on a char boundary here).
        let c = s[i..].chars().next().unwrap_or('\0');
        if is_py_space(c) {
            i += c.len_utf8();
        } else {
            return i;
        }
    }
    i
}

fn candidate_at(s: &str, lt: usize) -> Candidate<'_> {
    let bytes = s.as_bytes();
    let mut i = skip_ws(bytes, s, lt + 1);
    let mut closing = false;
    if i < bytes.len() && bytes[i] == b'/' {
        closing = true;
        i = skip_ws(bytes, s, i + 1);
    }
    let name_start = i;
    while i < bytes.len()
        && i - name_start <= MAX_NAME
        && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
    {
        i += 1;
    }
    let name_end = i;
    if name_end == name_start || name_end - name_start > MAX_NAME {
        return Candidate::NotATag;
    }
    i = skip_ws(bytes, s, i);
    if i < bytes.len() && bytes[i] == b'>' {
        Candidate::Named {
            name: &s[name_start..name_end],
            closing,
            end: i + 1,
        }
    } else {
        Candidate::NotATag
    }
}

fn block_of(name: &str) -> Option<Block> {
    if name.eq_ignore_ascii_case("think") {
        Some(Block::Think)
    } else if name.eq_ignore_ascii_case("thinking") {
        Some(Block::Thinking)
    } else if name.eq_ignore_ascii_case("answer") {
        Some(Block::Answer)
    } else {
        None
    }
}

/// A known modality tag (no slash) starting exactly at byte `at`: its index and the offset past `>`.
pub fn modality_tag_at(s: &str, at: usize) -> Option<(usize, usize)> {
    if s.as_bytes().get(at) != Some(&b'<') {
        return None;
    }
    match candidate_at(s, at) {
        Candidate::Named {
            name,
            closing: false,
            end,
        } => modality_index(name).map(|i| (i, end)),
        _ => None,
    }
}

/// Iterator over the structural (think/thinking/answer) tags of `s`, left to right.
pub struct TagIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> TagIter<'a> {
    pub fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }
}

impl Iterator for TagIter<'_> {
    type Item = Tag;

    fn next(&mut self) -> Option<Tag> {
        let bytes = self.s.as_bytes();
        while let Some(off) = memchr::memchr(b'<', &bytes[self.pos..]) {
            let lt = self.pos + off;
            if let Candidate::Named { name, closing, end } = candidate_at(self.s, lt) {
                if let Some(block) = block_of(name) {
                    self.pos = end;
                    return Some(Tag {
                        block,
                        closing,
                        start: lt,
                        end,
                    });
                }
            }
            self.pos = lt + 1;
        }
        self.pos = bytes.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tags_with_inner_space_and_case() {
        let s = "< think >a</THINK ><answer>b< / answer>";
        let tags: Vec<Tag> = TagIter::new(s).collect();
        assert_eq!(tags.len(), 4);
        assert_eq!(tags[0].block, Block::Think);
        assert!(tags[1].closing);
        assert_eq!(tags[3].block, Block::Answer);
        assert!(tags[3].closing);
    }

    #[test]
    fn modality() {
        assert_eq!(modality_tag_at("< x_ray >", 0), Some((0, 9)));
        assert_eq!(modality_tag_at("</X_RAY>", 0), None);
        assert_eq!(modality_tag_at("<BRAIN>", 0), None);
    }

    #[test]
    fn near_misses_are_not_tags() {
        assert_eq!(TagIter::new("<thinkx> <think <answer/> <<answer").count(), 0);
    }
}

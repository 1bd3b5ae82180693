//! LIKE patterns, compiled once when the expression is parsed.
//!
//! `%` matches any run of characters (none included), `_` exactly one character (a Unicode
//! scalar value), `\%` and `\_` a literal `%` or `_`. A backslash before anything else is a
//! literal backslash (as in the reference SDKs; the spec defines no other escape). Matching is
//! case-sensitive and allocates nothing.
//!
//! Patterns of the common shapes (`abc`, `abc%`, `%abc`, `%abc%`) compile to a plain string
//! comparison; anything else to segments of fixed character length separated by `%`, matched
//! left to right taking the first fit for each middle segment, which is exact for such globs.

use std::fmt;

/// A compiled LIKE pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct LikePattern {
    source: Box<str>,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// No wildcard: the whole value.
    Exact(Box<str>),
    /// `lit%`.
    Prefix(Box<str>),
    /// `%lit`.
    Suffix(Box<str>),
    /// `%lit%` (and `%` alone, with an empty literal).
    Contains(Box<str>),
    /// Anything else.
    General {
        /// The pattern starts with `%`.
        open_start: bool,
        /// The pattern ends with `%`.
        open_end: bool,
        /// The non-empty runs between `%`s.
        segments: Vec<Segment>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    items: Vec<Item>,
    /// Length in characters.
    chars: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Literal(Box<str>),
    /// `_`: one character.
    One,
}

impl LikePattern {
    /// Compiles the pattern (the string literal's value, after string-literal unescaping).
    pub fn new(pattern: &str) -> LikePattern {
        // Split into segments at unescaped `%`.
        let mut segments: Vec<Vec<Item>> = vec![Vec::new()];
        let mut literal = String::new();
        let mut open_start = false;
        let mut open_end = false;
        let mut chars = pattern.chars().peekable();
        let flush = |literal: &mut String, items: &mut Vec<Item>| {
            if !literal.is_empty() {
                items.push(Item::Literal(std::mem::take(literal).into()));
            }
        };
        let mut first = true;
        while let Some(c) = chars.next() {
            open_end = false;
            let current = segments.len() - 1;
            match c {
                '\\' if matches!(chars.peek(), Some('%' | '_')) => {
                    literal.push(chars.next().unwrap_or(c));
                }
                '%' => {
                    if first {
                        open_start = true;
                    }
                    open_end = true;
                    flush(&mut literal, &mut segments[current]);
                    if !segments[current].is_empty() {
                        segments.push(Vec::new());
                    }
                }
                '_' => {
                    flush(&mut literal, &mut segments[current]);
                    segments[current].push(Item::One);
                }
                c => literal.push(c),
            }
            first = false;
        }
        let last = segments.len() - 1;
        flush(&mut literal, &mut segments[last]);
        if segments[last].is_empty() {
            segments.pop();
        }
        LikePattern {
            source: pattern.into(),
            matcher: Matcher::of(segments, open_start, open_end),
        }
    }

    /// The pattern as written (after string-literal unescaping).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(s) => value == &**s,
            Matcher::Prefix(s) => value.starts_with(&**s),
            Matcher::Suffix(s) => value.ends_with(&**s),
            Matcher::Contains(s) => value.contains(&**s),
            Matcher::General {
                open_start,
                open_end,
                segments,
            } => general_match(value, *open_start, *open_end, segments),
        }
    }
}

fn general_match(value: &str, open_start: bool, open_end: bool, segments: &[Segment]) -> bool {
    let mut segments = segments;
    let mut pos = 0;
    let mut end = value.len();
    // A single segment with no `%` at all must cover the whole value.
    if !open_start && !open_end && segments.len() == 1 {
        return segments[0].match_at(value, 0) == Some(value.len());
    }
    if !open_start {
        let Some((first, rest)) = segments.split_first() else {
            return value.is_empty();
        };
        match first.match_at(value, 0) {
            Some(e) => pos = e,
            None => return false,
        }
        segments = rest;
    }
    if !open_end {
        let Some((last, rest)) = segments.split_last() else {
            // The pattern was `lit...` with nothing after it but it is not open at the end:
            // only possible for a single segment, handled above.
            return pos == value.len();
        };
        // The last segment has a fixed character length: it must start that many characters
        // before the end.
        let Some(start) = back_chars(value, last.chars) else {
            return false;
        };
        if start < pos || last.match_at(value, start) != Some(value.len()) {
            return false;
        }
        end = start;
        segments = rest;
    }
    for segment in segments {
        match segment.find(&value[..end], pos) {
            Some(e) => pos = e,
            None => return false,
        }
    }
    true
}

/// Offset of the character `n` characters before the end of `value`.
fn back_chars(value: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return Some(value.len());
    }
    value.char_indices().rev().nth(n - 1).map(|(i, _)| i)
}

impl Segment {
    /// If the segment matches `value` at byte offset `pos`, the offset after the match.
    fn match_at(&self, value: &str, mut pos: usize) -> Option<usize> {
        for item in &self.items {
            let rest = value.get(pos..)?;
            match item {
                Item::Literal(s) => {
                    if !rest.starts_with(&**s) {
                        return None;
                    }
                    pos += s.len();
                }
                Item::One => pos += rest.chars().next()?.len_utf8(),
            }
        }
        Some(pos)
    }

    /// The end of the first match at or after `from` that lies entirely within `value`.
    fn find(&self, value: &str, from: usize) -> Option<usize> {
        let mut start = from;
        loop {
            if let Some(end) = self.match_at(value, start) {
                return Some(end);
            }
            // Next candidate: the next character boundary, then straight on to the next
            // occurrence of the segment's first literal, if it starts with one.
            start += value.get(start..)?.chars().next()?.len_utf8();
            if let Some(Item::Literal(s)) = self.items.first() {
                start += value[start..].find(&**s)?;
            }
        }
    }
}

impl fmt::Debug for LikePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LikePattern")
            .field("source", &self.source)
            .field("matcher", &self.matcher)
            .finish()
    }
}

impl Matcher {
    /// The fastest matcher for `segments` (the pattern split at `%`), open at the start or
    /// the end when the pattern begins or ends with `%`.
    fn of(segments: Vec<Vec<Item>>, open_start: bool, open_end: bool) -> Matcher {
        match segments.as_slice() {
            [] if open_start || open_end => Matcher::Contains("".into()),
            [] => Matcher::Exact("".into()),
            [only] if only.iter().all(|i| matches!(i, Item::Literal(_))) => {
                let text: String = only
                    .iter()
                    .map(|i| match i {
                        Item::Literal(s) => &**s,
                        Item::One => "",
                    })
                    .collect();
                let text: Box<str> = text.into();
                match (open_start, open_end) {
                    (false, false) => Matcher::Exact(text),
                    (false, true) => Matcher::Prefix(text),
                    (true, false) => Matcher::Suffix(text),
                    (true, true) => Matcher::Contains(text),
                }
            }
            _ => Matcher::General {
                open_start,
                open_end,
                segments: segments
                    .into_iter()
                    .map(|items| Segment {
                        chars: items
                            .iter()
                            .map(|i| match i {
                                Item::Literal(s) => s.chars().count(),
                                Item::One => 1,
                            })
                            .sum(),
                        items,
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(value: &str, pattern: &str) -> bool {
        LikePattern::new(pattern).matches(value)
    }

    #[test]
    fn shapes() {
        assert!(matches!(LikePattern::new("abc").matcher, Matcher::Exact(_)));
        assert!(matches!(
            LikePattern::new("abc%").matcher,
            Matcher::Prefix(_)
        ));
        assert!(matches!(
            LikePattern::new("%abc").matcher,
            Matcher::Suffix(_)
        ));
        assert!(matches!(
            LikePattern::new("%%abc%%").matcher,
            Matcher::Contains(_)
        ));
        assert!(matches!(
            LikePattern::new("a\\%b%").matcher,
            Matcher::Prefix(ref s) if &**s == "a%b"
        ));
        assert!(matches!(
            LikePattern::new("a%b").matcher,
            Matcher::General { .. }
        ));
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("ab\\c", "ab\\c", true),
            ("abc", "a%b%c", true),
            ("azzzbzzzc", "a%b%c", true),
            ("ac", "abc", false),
            ("", "abc", false),
            ("", "%", true),
            ("", "", true),
            ("x", "", false),
            ("", "_", false),
            (".ab.cde.", ".%.%.", true),
            ("ab.cde", ".%.%.", false),
            ("abc", "a_b_c", false),
            ("azbzc", "a_b_c", true),
            ("abcd.", "._._.", false),
            (".a.b.", "._._.", true),
            ("a_b_c", "a\\_b\\_c", true),
            ("azbzc", "a\\_b\\_c", false),
            ("a%b%c", "a\\%b\\%c", true),
            ("abc", "a\\%b\\%c", false),
            ("abc123123%456_dzf", "abc%123\\%456\\_d_f", true),
            ("aaa", "a%a", true),
            ("aa", "a%aa", false),
            ("aXbXc", "%X_X%", true),
            ("é", "_", true),
            ("éé", "_", false),
            ("xéyéz", "x_y%z", true),
            ("ab", "%b_", false),
            ("abc", "%b_", true),
            ("mississippi", "%iss%pi", true),
            ("mississippi", "m%ss%ss%", true),
            ("mississippi", "m%ss%ss%ss%", false),
            ("abcabd", "%ab_", true),
            ("trailing\\", "%\\", true),
        ];
        for &(value, pattern, expected) in cases {
            assert_eq!(like(value, pattern), expected, "{value:?} LIKE {pattern:?}");
        }
    }
}

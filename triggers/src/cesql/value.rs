//! CESQL values, types and the casts between them (spec section 3.7).

use std::borrow::Cow;
use std::fmt;

/// The three primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` or `false`; zero value `false`.
    Boolean,
    /// A 32-bit signed integer; zero value `0`.
    Integer,
    /// A Unicode string; zero value `""`.
    String,
}

impl Type {
    /// The type's zero value, returned by a node that fails.
    pub fn zero(self) -> Value<'static> {
        match self {
            Type::Boolean => Value::Boolean(false),
            Type::Integer => Value::Integer(0),
            Type::String => Value::String(Cow::Borrowed("")),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Boolean => "Boolean",
            Type::Integer => "Integer",
            Type::String => "String",
        })
    }
}

/// A value. Strings borrow from the expression (literals) or the event (attributes) when they
/// can, so evaluating a comparison of an attribute with a literal copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// A Boolean.
    Boolean(bool),
    /// An Integer.
    Integer(i32),
    /// A String.
    String(Cow<'a, str>),
}

impl Default for Value<'_> {
    fn default() -> Self {
        Value::Boolean(false)
    }
}

impl<'a> Value<'a> {
    /// The value's type.
    pub fn ty(&self) -> Type {
        match self {
            Value::Boolean(_) => Type::Boolean,
            Value::Integer(_) => Type::Integer,
            Value::String(_) => Type::String,
        }
    }

    /// Whether this is Boolean `true`.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Boolean(true))
    }

    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Boolean(b) => Value::Boolean(b),
            Value::Integer(i) => Value::Integer(i),
            Value::String(s) => Value::String(Cow::Owned(s.into_owned())),
        }
    }

    /// Casts to Boolean: integers are `true` unless 0; strings must be `true` or `false` in
    /// any case. `None` when the cast fails (the caller raises the _CastError_).
    pub fn to_boolean(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            Value::Integer(i) => Some(*i != 0),
            Value::String(s) => parse_boolean(s),
        }
    }

    /// Casts to Integer: Booleans are 1 or 0; strings are read as a base-10 32-bit integer with
    /// an optional sign. `None` when the cast fails.
    pub fn to_integer(&self) -> Option<i32> {
        match self {
            Value::Boolean(b) => Some(i32::from(*b)),
            Value::Integer(i) => Some(*i),
            Value::String(s) => parse_integer(s),
        }
    }

    /// Casts to String (never fails). Only an Integer allocates.
    pub fn into_string(self) -> Cow<'a, str> {
        match self {
            Value::Boolean(b) => Cow::Borrowed(bool_str(b)),
            Value::Integer(i) => Cow::Owned(i.to_string()),
            Value::String(s) => s,
        }
    }

    /// Runs `f` on the value cast to String, without allocating (integers are formatted on the
    /// stack).
    pub(crate) fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Value::Boolean(b) => f(bool_str(*b)),
            Value::Integer(i) => {
                let mut buf = IntBuf::default();
                f(buf.format(*i))
            }
            Value::String(s) => f(s),
        }
    }
}

/// Shown as a CESQL literal: `true`, `42`, `'it\'s'`.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(b) => f.write_str(bool_str(*b)),
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => write_string_literal(f, s),
        }
    }
}

/// Writes `s` as a single-quoted CESQL string literal.
pub(crate) fn write_string_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for (i, part) in s.split('\'').enumerate() {
        if i > 0 {
            f.write_str("\\'")?;
        }
        f.write_str(part)?;
    }
    f.write_char('\'')
}

pub(crate) fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// String -> Boolean: the lower-case form must be exactly `true` or `false`. (No non-ASCII
/// character lower-cases to an ASCII letter of those words, so an ASCII comparison is exact.)
pub(crate) fn parse_boolean(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// String -> Integer: optional `+` or `-`, then base-10 digits, in the 32-bit range. No
/// whitespace.
pub(crate) fn parse_integer(s: &str) -> Option<i32> {
    s.parse::<i32>().ok()
}

/// A stack buffer for formatting an i32 (at most 11 bytes: `-2147483648`).
#[derive(Default)]
pub(crate) struct IntBuf([u8; 11]);

impl IntBuf {
    pub(crate) fn format(&mut self, i: i32) -> &str {
        let mut n = i.unsigned_abs();
        let mut pos = self.0.len();
        loop {
            pos -= 1;
            // n % 10 < 10, so the cast is exact.
            self.0[pos] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if i < 0 {
            pos -= 1;
            self.0[pos] = b'-';
        }
        std::str::from_utf8(&self.0[pos..]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_buf_formats_like_to_string() {
        for i in [0, 1, -1, 9, 10, -10, 123_456, i32::MAX, i32::MIN] {
            let mut buf = IntBuf::default();
            assert_eq!(buf.format(i), i.to_string());
        }
    }

    #[test]
    fn casts() {
        assert_eq!(Value::String("TrUe".into()).to_boolean(), Some(true));
        assert_eq!(Value::String("yes".into()).to_boolean(), None);
        assert_eq!(Value::Integer(-50).to_boolean(), Some(true));
        assert_eq!(Value::String("+5".into()).to_integer(), Some(5));
        assert_eq!(
            Value::String("-2147483648".into()).to_integer(),
            Some(i32::MIN)
        );
        assert_eq!(Value::String("2147483648".into()).to_integer(), None);
        assert_eq!(Value::String(" 5".into()).to_integer(), None);
        assert_eq!(Value::String("".into()).to_integer(), None);
        assert_eq!(Value::Boolean(true).to_integer(), Some(1));
        assert_eq!(Value::Integer(-7).into_string(), "-7");
    }

    #[test]
    fn display_as_literal() {
        assert_eq!(Value::String("it's".into()).to_string(), r"'it\'s'");
        assert_eq!(Value::Integer(-3).to_string(), "-3");
        assert_eq!(Value::Boolean(false).to_string(), "false");
    }
}

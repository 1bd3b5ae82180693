//! The built-in functions (spec section 3.5, and the casting functions of the TCK).
//!
//! Functions are resolved by name (case-insensitive) and argument count when the expression is
//! compiled; a name or count with no definition is a compile error, never an evaluation one.

use std::borrow::Cow;
use std::fmt;

use super::ast::{Node, Span};
use super::error::{EvalError, EvalErrorKind, ParseErrorKind};
use super::eval::{Evaluator, Sink};
use super::value::{Type, Value};

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `LENGTH(x): String -> Integer`, in characters.
    Length,
    /// `CONCAT(x1, ...): String^n -> String`, n >= 0.
    Concat,
    /// `CONCAT_WS(delimiter, x1, ...): String x String^n -> String`, n >= 0.
    ConcatWs,
    /// `LOWER(x): String -> String`.
    Lower,
    /// `UPPER(x): String -> String`.
    Upper,
    /// `TRIM(x): String -> String` (Unicode whitespace).
    Trim,
    /// `LEFT(x, y): String x Integer -> String`.
    Left,
    /// `RIGHT(x, y): String x Integer -> String`.
    Right,
    /// `SUBSTRING(x, pos)` and `SUBSTRING(x, pos, len)`.
    Substring,
    /// `ABS(x): Integer -> Integer`.
    Abs,
    /// `BOOL(x): Any -> Boolean`, the cast.
    Bool,
    /// `INT(x): Any -> Integer`, the cast.
    Int,
    /// `STRING(x): Any -> String`, the cast.
    String,
    /// `IS_BOOL(x): Any -> Boolean`, whether `x` casts to Boolean.
    IsBool,
    /// `IS_INT(x): Any -> Boolean`, whether `x` casts to Integer.
    IsInt,
}

const ALL: [Function; 15] = [
    Function::Length,
    Function::Concat,
    Function::ConcatWs,
    Function::Lower,
    Function::Upper,
    Function::Trim,
    Function::Left,
    Function::Right,
    Function::Substring,
    Function::Abs,
    Function::Bool,
    Function::Int,
    Function::String,
    Function::IsBool,
    Function::IsInt,
];

impl Function {
    /// The function's name, upper-case.
    pub fn name(self) -> &'static str {
        match self {
            Function::Length => "LENGTH",
            Function::Concat => "CONCAT",
            Function::ConcatWs => "CONCAT_WS",
            Function::Lower => "LOWER",
            Function::Upper => "UPPER",
            Function::Trim => "TRIM",
            Function::Left => "LEFT",
            Function::Right => "RIGHT",
            Function::Substring => "SUBSTRING",
            Function::Abs => "ABS",
            Function::Bool => "BOOL",
            Function::Int => "INT",
            Function::String => "STRING",
            Function::IsBool => "IS_BOOL",
            Function::IsInt => "IS_INT",
        }
    }

    /// The accepted argument counts: minimum, and maximum (`None`: variadic).
    pub fn arity(self) -> (usize, Option<usize>) {
        match self {
            Function::Concat => (0, None),
            Function::ConcatWs => (1, None),
            Function::Left | Function::Right => (2, Some(2)),
            Function::Substring => (2, Some(3)),
            _ => (1, Some(1)),
        }
    }

    fn arity_words(self) -> &'static str {
        match self {
            Function::Concat => "any number of arguments",
            Function::ConcatWs => "at least 1 argument",
            Function::Left | Function::Right => "2 arguments",
            Function::Substring => "2 or 3 arguments",
            _ => "1 argument",
        }
    }

    /// The type of the result (and of the zero value returned when the call fails).
    pub fn return_type(self) -> Type {
        match self {
            Function::Length | Function::Abs | Function::Int => Type::Integer,
            Function::Bool | Function::IsBool | Function::IsInt => Type::Boolean,
            _ => Type::String,
        }
    }

    /// Finds the definition for `name` (any case) called with `args` arguments.
    pub fn resolve(name: &str, args: usize) -> Result<Function, ParseErrorKind> {
        let function = ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseErrorKind::UnknownFunction(name.to_owned()))?;
        let (min, max) = function.arity();
        if args < min || max.is_some_and(|max| args > max) {
            return Err(ParseErrorKind::WrongArgumentCount {
                function: function.name(),
                expected: function.arity_words(),
                found: args,
            });
        }
        Ok(function)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'a, S: Sink> Evaluator<'a, '_, S> {
    /// Evaluates a call. Every argument is evaluated; if any fails, or cannot be cast to its
    /// parameter's type, the call returns its zero value without running.
    pub(crate) fn call(&mut self, function: Function, args: &'a [Node], span: Span) -> Value<'a> {
        let zero = function.return_type().zero();
        let before = self.sink.count();
        match function {
            Function::Concat | Function::ConcatWs => {
                let mut parts = args.iter().map(|arg| self.eval(arg).into_string());
                let first = parts.next();
                let result = match function {
                    Function::Concat => concat(first, parts, ""),
                    _ => {
                        let delimiter = first.unwrap_or_default();
                        concat(parts.next(), parts, &delimiter)
                    }
                };
                if self.sink.count() > before {
                    return zero;
                }
                Value::String(result)
            }
            _ => {
                // Fixed arity, at most 3 (checked when compiled).
                let mut values: [Value<'a>; 3] = Default::default();
                for (slot, arg) in values.iter_mut().zip(args) {
                    *slot = self.eval(arg);
                }
                if self.sink.count() > before {
                    return zero;
                }
                let [a, b, c] = values;
                self.apply(function, args, [a, b, c], span).unwrap_or(zero)
            }
        }
    }

    /// Runs a fixed-arity function on evaluated arguments. `None` when an argument failed its
    /// cast (the error is raised).
    fn apply(
        &mut self,
        function: Function,
        args: &'a [Node],
        [a, b, c]: [Value<'a>; 3],
        span: Span,
    ) -> Option<Value<'a>> {
        let arg_span = |i: usize| args.get(i).map_or(span, |n| n.span);
        Some(match function {
            Function::Length => {
                Value::Integer(i32::try_from(a.into_string().chars().count()).unwrap_or(i32::MAX))
            }
            Function::Lower => Value::String(lower(a.into_string())),
            Function::Upper => Value::String(upper(a.into_string())),
            Function::Trim => Value::String(map_slice(a.into_string(), str::trim)),
            Function::Left | Function::Right => {
                let x = a.into_string();
                let y = self.cast_integer(&b, arg_span(1))?;
                if y < 0 {
                    self.sink.push(|| {
                        EvalError::new(
                            EvalErrorKind::FunctionEvaluation,
                            span,
                            format!("{function}: the length {y} is negative"),
                        )
                    });
                    return Some(Value::String(x));
                }
                let n = usize::try_from(y).unwrap_or(usize::MAX);
                Value::String(if function == Function::Left {
                    map_slice(x, |s| &s[..char_offset(s, n)])
                } else {
                    let total = s_chars(&x);
                    map_slice(x, |s| &s[char_offset(s, total.saturating_sub(n))..])
                })
            }
            Function::Substring => {
                let x = a.into_string();
                let pos = self.cast_integer(&b, arg_span(1));
                let len = if args.len() == 3 {
                    Some(self.cast_integer(&c, arg_span(2)))
                } else {
                    None
                };
                let (pos, len) = (pos?, len.map_or(Some(None), |l| l.map(Some))?);
                match substring_range(&x, pos, len) {
                    Ok(Some((start, end))) => Value::String(map_slice(x, |s| &s[start..end])),
                    Ok(None) => Value::String(Cow::Borrowed("")),
                    Err(message) => {
                        self.sink.push(|| {
                            EvalError::new(EvalErrorKind::FunctionEvaluation, span, message)
                        });
                        Value::String(Cow::Borrowed(""))
                    }
                }
            }
            Function::Abs => {
                let x = self.cast_integer(&a, arg_span(0))?;
                Value::Integer(match x.checked_abs() {
                    Some(abs) => abs,
                    None => {
                        self.sink.push(|| {
                            EvalError::new(
                                EvalErrorKind::Math,
                                span,
                                format!("ABS({x}) is out of the 32-bit range"),
                            )
                        });
                        i32::MAX
                    }
                })
            }
            Function::Bool => Value::Boolean(self.cast_boolean(&a, arg_span(0))?),
            Function::Int => Value::Integer(self.cast_integer(&a, arg_span(0))?),
            Function::String => Value::String(a.into_string()),
            Function::IsBool => Value::Boolean(a.to_boolean().is_some()),
            Function::IsInt => Value::Boolean(a.to_integer().is_some()),
            Function::Concat | Function::ConcatWs => Value::String(Cow::Borrowed("")),
        })
    }
}

/// Joins strings; a single part is returned as it is (borrowed if it was).
fn concat<'a>(
    first: Option<Cow<'a, str>>,
    rest: impl Iterator<Item = Cow<'a, str>>,
    delimiter: &str,
) -> Cow<'a, str> {
    let Some(first) = first else {
        return Cow::Borrowed("");
    };
    let mut rest = rest.peekable();
    if rest.peek().is_none() {
        return first;
    }
    let mut out = first.into_owned();
    for part in rest {
        out.push_str(delimiter);
        out.push_str(&part);
    }
    Cow::Owned(out)
}

fn s_chars(s: &str) -> usize {
    s.chars().count()
}

/// Byte offset of the `n`th character (the length if there are fewer).
fn char_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// Applies a slicing function, keeping a borrow when there was one.
fn map_slice<'a>(s: Cow<'a, str>, f: impl for<'x> FnOnce(&'x str) -> &'x str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_owned()),
    }
}

fn lower(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            s
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn upper(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(s.to_ascii_uppercase())
        } else {
            s
        }
    } else {
        Cow::Owned(s.to_uppercase())
    }
}

/// The byte range SUBSTRING selects: `Ok(None)` for the empty result of `pos = 0`, `Err` with
/// the message of the _FunctionEvaluationError_.
fn substring_range(s: &str, pos: i32, len: Option<i32>) -> Result<Option<(usize, usize)>, String> {
    let total = i64::try_from(s_chars(s)).unwrap_or(i64::MAX);
    let p = i64::from(pos);
    if p > total || p < -total {
        return Err(format!(
            "SUBSTRING: the position {pos} is outside the string, whose length is {total}"
        ));
    }
    if let Some(len) = len
        && len < 0
    {
        return Err(format!("SUBSTRING: the length {len} is negative"));
    }
    if p == 0 {
        return Ok(None);
    }
    // 0-based character index of the first character.
    let first = if p > 0 { p - 1 } else { total + p };
    let last = match len {
        Some(len) => (first + i64::from(len)).min(total),
        None => total,
    };
    let to_usize = |i: i64| usize::try_from(i).unwrap_or(0);
    let start = char_offset(s, to_usize(first));
    let end = start + char_offset(&s[start..], to_usize(last - first));
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str, pos: i32, len: Option<i32>) -> Result<&str, String> {
        substring_range(s, pos, len).map(|r| r.map_or("", |(a, b)| &s[a..b]))
    }

    #[test]
    fn substring_cases() {
        assert_eq!(sub("abcdef", 1, None), Ok("abcdef"));
        assert_eq!(sub("Quadratically", 5, None), Ok("ratically"));
        assert_eq!(sub("Sakila", -3, None), Ok("ila"));
        assert_eq!(sub("Sakila", -5, Some(3)), Ok("aki"));
        assert_eq!(sub("abcdef", 2, Some(4)), Ok("bcde"));
        assert_eq!(sub("abcdef", 6, Some(100)), Ok("f"));
        assert_eq!(sub("abcdef", -6, None), Ok("abcdef"));
        assert_eq!(sub("", 0, None), Ok(""));
        assert_eq!(sub("héllo", 2, Some(2)), Ok("él"));
        assert!(sub("abcdef", 7, None).is_err());
        assert!(sub("abcdef", -7, None).is_err());
        assert!(sub("abcdef", 1, Some(-1)).is_err());
        assert!(sub("abc", i32::MIN, None).is_err());
        assert_eq!(sub("abc", 1, Some(i32::MAX)), Ok("abc"));
    }

    #[test]
    fn resolve() {
        assert_eq!(Function::resolve("concat_ws", 1), Ok(Function::ConcatWs));
        assert_eq!(Function::resolve("Substring", 3), Ok(Function::Substring));
        assert!(matches!(
            Function::resolve("CONCAT_WS", 0),
            Err(ParseErrorKind::WrongArgumentCount { found: 0, .. })
        ));
        assert!(matches!(
            Function::resolve("NOPE", 1),
            Err(ParseErrorKind::UnknownFunction(_))
        ));
    }
}

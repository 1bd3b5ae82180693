//! Compile-time and evaluation errors.

use std::fmt;

use super::ast::Span;

/// Why an expression was rejected when compiled: a syntax error, or a call that cannot be
/// dispatched (the spec's _MissingFunctionError_, which Switchyard reports at compile time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// The offending source text (byte offsets); empty at the end of the input.
    pub span: Span,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column of `span.start`, in characters.
    pub column: usize,
}

impl ParseError {
    pub(crate) fn new(src: &str, kind: ParseErrorKind, span: Span) -> Self {
        let (line, column) = line_column(src, span.start);
        ParseError {
            kind,
            span,
            line,
            column,
        }
    }

    /// Byte offset of the error in the source text.
    pub fn offset(&self) -> usize {
        self.span.start
    }

    /// Whether this is the spec's _MissingFunctionError_ (an unknown function, or a known one
    /// called with a number of arguments it has no definition for) rather than a syntax error.
    pub fn is_missing_function(&self) -> bool {
        matches!(
            self.kind,
            ParseErrorKind::UnknownFunction(_) | ParseErrorKind::WrongArgumentCount { .. }
        )
    }
}

/// The reasons an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A character that starts no token.
    #[error("unexpected character `{0}`")]
    UnexpectedCharacter(char),
    /// A string literal without its closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// The parser needed something else here.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What would have been valid.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// An integer literal outside -2147483648..=2147483647.
    #[error("integer literal {0} is out of the 32-bit range -2147483648 to 2147483647")]
    IntegerOutOfRange(String),
    /// An identifier that cannot name an attribute.
    #[error("invalid attribute name `{0}`: attribute names have only letters and digits")]
    InvalidAttributeName(String),
    /// A function that does not exist.
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    /// A known function called with an argument count it has no definition for.
    #[error("function {function} takes {expected}, not {found}")]
    WrongArgumentCount {
        /// The function's name.
        function: &'static str,
        /// The argument counts it accepts, in words.
        expected: &'static str,
        /// The count given.
        found: usize,
    },
    /// Parentheses, unary operators, calls or IN sets nested deeper than the parser accepts.
    #[error(
        "parentheses, unary operators, function calls and IN sets nest more than {0} levels deep"
    )]
    TooDeep(usize),
    /// A syntax tree deeper than the evaluator accepts.
    #[error(
        "the expression is more than {0} operators deep (each operator of a chain such as `a OR b OR c` adds a level; IN takes a long list of values)"
    )]
    TooComplex(usize),
}

/// 1-based line and character column of byte `offset` in `src`.
pub(crate) fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset).unwrap_or(src);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The spec's runtime error types (section 3.3) that evaluation can raise. _ParseError_ and
/// _MissingFunctionError_ are compile-time errors here ([`ParseError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvalErrorKind {
    /// _MathError_: division or remainder by zero, integer overflow.
    Math,
    /// _CastError_: a value that cannot be cast to the type an operator or function needs.
    Cast,
    /// _MissingAttributeError_: the event has no such attribute.
    MissingAttribute,
    /// _FunctionEvaluationError_: a function's argument is out of its domain.
    FunctionEvaluation,
}

impl EvalErrorKind {
    /// The TCK's name for the error type (`math`, `cast`, `missingAttribute`,
    /// `functionEvaluation`).
    pub fn tck_name(self) -> &'static str {
        match self {
            EvalErrorKind::Math => "math",
            EvalErrorKind::Cast => "cast",
            EvalErrorKind::MissingAttribute => "missingAttribute",
            EvalErrorKind::FunctionEvaluation => "functionEvaluation",
        }
    }
}

impl fmt::Display for EvalErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvalErrorKind::Math => "math error",
            EvalErrorKind::Cast => "cast error",
            EvalErrorKind::MissingAttribute => "missing attribute",
            EvalErrorKind::FunctionEvaluation => "function evaluation error",
        })
    }
}

/// An error raised while evaluating, with the sub-expression that raised it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct EvalError {
    /// The spec's error type.
    pub kind: EvalErrorKind,
    /// The sub-expression that raised it.
    pub span: Span,
    /// What happened, in words.
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(kind: EvalErrorKind, span: Span, message: impl Into<String>) -> Self {
        EvalError {
            kind,
            span,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("abc", 3), (1, 4));
        assert_eq!(line_column("é = x", 3), (1, 3));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
    }
}

//! CloudEvents SQL (CESQL) v1.0: parser, compile-time checks, evaluator and explanations.
//!
//! ```
//! use switchyard_triggers::cesql::Expression;
//!
//! let filter = Expression::parse("type LIKE 'com.example.%' AND (subject = 'a' OR myext > 10)")
//!     .expect("a valid expression");
//! let event = switchyard_core::json::decode_event(
//!     br#"{"specversion":"1.0","id":"1","source":"/s","type":"com.example.created",
//!          "subject":"b","myext":11}"#,
//! )
//! .expect("a valid event");
//! assert!(filter.matches(&event));
//!
//! // Without a subject, `subject = 'a'` fails (missing attribute), and so does the filter.
//! let event = switchyard_core::json::decode_event(
//!     br#"{"specversion":"1.0","id":"1","source":"/s","type":"com.example.created","myext":11}"#,
//! )
//! .expect("a valid event");
//! assert!(!filter.matches(&event));
//! assert_eq!(
//!     filter.explain(&event).to_string(),
//!     "no match: evaluation raised an error\n  \
//!      - column 32: `subject` failed: missing attribute: the event has no attribute `subject`"
//! );
//! ```
//!
//! An [`Expression`] is compiled once ([`Expression::parse`]): a syntax error, an unknown
//! function or a call with an argument count the function has no definition for is a
//! [`ParseError`] with its line, column and reason. Evaluation ([`Expression::eval`]) follows
//! the spec's type system, implicit casts and error rules, returning the value and every error
//! raised; as a filter ([`Expression::matches`]) an event passes only on Boolean `true` with no
//! error. [`Expression::explain`] says why an event does not match.
//!
//! What Switchyard's CESQL accepts and how it decides what the spec leaves open is in
//! `spec/cesql.md`.

mod ast;
mod error;
mod eval;
mod explain;
mod functions;
mod lexer;
mod like;
mod parser;
mod value;

use std::fmt;
use std::str::FromStr;

use switchyard_core::CloudEvent;

pub use ast::{Attribute, BinaryOp, Node, NodeKind, Span};
pub use error::{EvalError, EvalErrorKind, ParseError, ParseErrorKind};
pub use explain::{Cause, Explanation};
pub use functions::Function;
pub use like::LikePattern;
pub use parser::{MAX_DEPTH, MAX_NESTING};
pub use value::{Type, Value};

use eval::{Count, Evaluator};

/// A compiled CESQL expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: Box<str>,
    root: Node,
}

impl Expression {
    /// Compiles `source`.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        let root = parser::parse(source)?;
        Ok(Expression {
            source: source.into(),
            root,
        })
    }

    /// The source text, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The source text of a sub-expression's span.
    pub fn text(&self, span: Span) -> &str {
        self.source.get(span.start..span.end).unwrap_or_default()
    }

    /// Evaluates the expression against `event`: its value, and every error raised (complete
    /// evaluation mode, with AND/OR short-circuiting). Strings in the value borrow from the
    /// expression or the event.
    pub fn eval<'a>(&'a self, event: &'a CloudEvent) -> (Value<'a>, Vec<EvalError>) {
        let mut errors = Vec::new();
        let value = Evaluator {
            event,
            sink: &mut errors,
        }
        .eval(&self.root);
        (value, errors)
    }

    /// Whether `event` passes the expression as a filter: Boolean `true` and no error. Builds
    /// no error values.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        let mut errors = Count::default();
        let value = Evaluator {
            event,
            sink: &mut errors,
        }
        .eval(&self.root);
        errors.0 == 0 && value.is_true()
    }

    /// Evaluates and, when the event does not match, says why: the errors raised, or the false
    /// sub-expressions that decided the result, each with its source text and position.
    pub fn explain(&self, event: &CloudEvent) -> Explanation {
        explain::explain(self, event)
    }
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::parse(s)
    }
}

/// The source text.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

//! The typed syntax tree a CESQL expression compiles to.
//!
//! Every node carries the [`Span`] of source text it was parsed from, so evaluation errors and
//! explanations can point at the exact sub-expression.

use std::fmt;

use super::functions::Function;
use super::like::LikePattern;

/// A byte range `start..end` in the expression's source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A node of the syntax tree: what it is and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The kind of node, with its children.
    pub kind: NodeKind,
    /// The source text it was parsed from (parentheses around it included).
    pub span: Span,
}

/// The kinds of node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `TRUE` or `FALSE`.
    Boolean(bool),
    /// An integer literal, already range-checked (a leading `-` or `+` is folded in).
    Integer(i32),
    /// A string literal, unescaped.
    String(Box<str>),
    /// A context attribute or extension, by its lower-case name.
    Attribute(Attribute),
    /// `EXISTS name`.
    Exists(Attribute),
    /// `NOT x`.
    Not(Box<Node>),
    /// `-x` (when `x` is not an integer literal, which is folded into the literal).
    Negate(Box<Node>),
    /// `x op y`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// The left operand.
        lhs: Box<Node>,
        /// The right operand.
        rhs: Box<Node>,
    },
    /// `x [NOT] LIKE 'pattern'`.
    Like {
        /// Whether it is `NOT LIKE`.
        negated: bool,
        /// The value matched.
        operand: Box<Node>,
        /// The precompiled pattern.
        pattern: LikePattern,
    },
    /// `x [NOT] IN (y1, y2, ...)`.
    In {
        /// Whether it is `NOT IN`.
        negated: bool,
        /// The value looked for.
        operand: Box<Node>,
        /// The set's elements, at least one.
        set: Vec<Node>,
    },
    /// A call of a built-in function, with an argument count checked at compile time.
    Call {
        /// The function.
        function: Function,
        /// The arguments.
        args: Vec<Node>,
    },
}

/// The binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `AND` (short-circuit).
    And,
    /// `OR` (short-circuit).
    Or,
    /// `XOR`.
    Xor,
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    NotEq,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/` (truncating).
    Div,
    /// `%` (sign of the dividend).
    Rem,
}

impl BinaryOp {
    /// The operator as written (canonical form; `<>` is shown as `!=`).
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
            BinaryOp::Xor => "XOR",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}

/// An attribute reference, resolved at compile time so evaluation does not compare names of
/// context attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// `specversion`.
    SpecVersion,
    /// `id`.
    Id,
    /// `source`.
    Source,
    /// `type`.
    Type,
    /// `datacontenttype`.
    DataContentType,
    /// `dataschema` (1.0 events; a 0.3 event has none).
    DataSchema,
    /// `subject`.
    Subject,
    /// `time`.
    Time,
    /// `schemaurl`: the 0.3 name of `dataschema`; an extension in a 1.0 event.
    SchemaUrl,
    /// `datacontentencoding`: 0.3 only; an extension in a 1.0 event.
    DataContentEncoding,
    /// Any other name: an extension.
    Extension(Box<str>),
}

impl Attribute {
    /// Resolves a lower-case attribute name.
    pub fn from_name(name: &str) -> Attribute {
        match name {
            "specversion" => Attribute::SpecVersion,
            "id" => Attribute::Id,
            "source" => Attribute::Source,
            "type" => Attribute::Type,
            "datacontenttype" => Attribute::DataContentType,
            "dataschema" => Attribute::DataSchema,
            "subject" => Attribute::Subject,
            "time" => Attribute::Time,
            "schemaurl" => Attribute::SchemaUrl,
            "datacontentencoding" => Attribute::DataContentEncoding,
            other => Attribute::Extension(other.into()),
        }
    }

    /// The attribute's (lower-case) name.
    pub fn name(&self) -> &str {
        match self {
            Attribute::SpecVersion => "specversion",
            Attribute::Id => "id",
            Attribute::Source => "source",
            Attribute::Type => "type",
            Attribute::DataContentType => "datacontenttype",
            Attribute::DataSchema => "dataschema",
            Attribute::Subject => "subject",
            Attribute::Time => "time",
            Attribute::SchemaUrl => "schemaurl",
            Attribute::DataContentEncoding => "datacontentencoding",
            Attribute::Extension(name) => name,
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

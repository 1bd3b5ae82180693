//! Why an expression does or does not match an event, for operators debugging filters.
//!
//! When evaluation raised errors, each error is a cause, at the sub-expression that raised it.
//! When the result is not a Boolean, that is the cause. When it is plain `false`, the walk
//! goes down from the root through the operators that decided it: `a AND b` blames the
//! operand that was false (the left one first, as evaluation short-circuits), `a OR b` blames
//! both, and any other node (a comparison, LIKE, IN, EXISTS, NOT, a function call, a Boolean
//! attribute) is a cause itself, shown with the values of its non-literal operands.

use std::fmt;

use switchyard_core::CloudEvent;

use super::Expression;
use super::ast::{BinaryOp, Node, NodeKind, Span};
use super::error::{EvalError, line_column};
use super::eval::Evaluator;
use super::value::Value;

/// The verdict on one event, with its causes.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Whether the event passes: the result is Boolean `true` and no error was raised.
    pub matched: bool,
    /// The expression's value.
    pub value: Value<'static>,
    /// The errors evaluation raised, in order.
    pub errors: Vec<EvalError>,
    /// Why it did not match (empty when it matched).
    pub causes: Vec<Cause>,
}

/// One reason for a non-match, located in the expression's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The sub-expression (byte offsets in the source).
    pub span: Span,
    /// 1-based line of the sub-expression.
    pub line: usize,
    /// 1-based column of the sub-expression, in characters.
    pub column: usize,
    /// The sub-expression's source text.
    pub text: String,
    /// What went wrong with it, e.g. "is false: `type` is 'org.example'".
    pub reason: String,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(f, "line {}, ", self.line)?;
        }
        write!(f, "column {}: `{}` {}", self.column, self.text, self.reason)
    }
}

/// One line for the verdict, then one per cause, indented:
///
/// ```text
/// no match: the expression is false
///   - column 1: `type LIKE 'com.example.%'` is false: `type` is 'org.example.created'
/// ```
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.matched {
            return f.write_str("match: the expression is true");
        }
        match (self.errors.len(), &self.value) {
            (0, Value::Boolean(_)) => f.write_str("no match: the expression is false")?,
            (0, other) => write!(
                f,
                "no match: the expression yields the {} {other}, not a Boolean",
                other.ty()
            )?,
            (1, _) => f.write_str("no match: evaluation raised an error")?,
            (n, _) => write!(f, "no match: evaluation raised {n} errors")?,
        }
        for cause in &self.causes {
            write!(f, "\n  - {cause}")?;
        }
        Ok(())
    }
}

pub(crate) fn explain(expression: &Expression, event: &CloudEvent) -> Explanation {
    let (value, errors) = expression.eval(event);
    let value = value.into_owned();
    let matched = value.is_true() && errors.is_empty();
    let mut causes = Vec::new();
    let cause = |span: Span, reason: String| {
        let (line, column) = line_column(expression.source(), span.start);
        Cause {
            span,
            line,
            column,
            text: expression.text(span).to_owned(),
            reason,
        }
    };
    if !matched {
        if !errors.is_empty() {
            for error in &errors {
                causes.push(cause(error.span, format!("failed: {error}")));
            }
        } else if let Value::Boolean(false) = value {
            let mut blamed = Vec::new();
            blame(expression, expression.root(), event, &mut blamed);
            causes.extend(blamed.into_iter().map(|(span, reason)| cause(span, reason)));
        } else {
            let root = expression.root().span;
            causes.push(cause(
                root,
                format!("yields the {} {value}, not a Boolean", value.ty()),
            ));
        }
    }
    Explanation {
        matched,
        value,
        errors,
        causes,
    }
}

/// Evaluates a sub-expression on its own (the tree is pure, so this repeats what the full
/// evaluation computed).
fn value_of<'a>(node: &'a Node, event: &'a CloudEvent) -> Value<'a> {
    let mut sink: Vec<EvalError> = Vec::new();
    Evaluator {
        event,
        sink: &mut sink,
    }
    .eval(node)
}

fn is_false(node: &Node, event: &CloudEvent) -> bool {
    value_of(node, event).to_boolean() == Some(false)
}

/// Collects the false sub-expressions that made `node` (itself false, without errors) false.
fn blame(expression: &Expression, node: &Node, event: &CloudEvent, out: &mut Vec<(Span, String)>) {
    match &node.kind {
        NodeKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => {
            if is_false(lhs, event) {
                blame(expression, lhs, event, out);
            } else {
                blame(expression, rhs, event, out);
            }
        }
        NodeKind::Binary {
            op: BinaryOp::Or,
            lhs,
            rhs,
        } => {
            blame(expression, lhs, event, out);
            blame(expression, rhs, event, out);
        }
        NodeKind::Not(operand) => {
            let reason = format!("is false: `{}` is true", expression.text(operand.span));
            out.push((node.span, reason));
        }
        NodeKind::Exists(attribute) => {
            out.push((
                node.span,
                format!("is false: the event has no attribute `{attribute}`"),
            ));
        }
        _ => {
            let mut operands = Vec::new();
            for operand in operands_of(node) {
                if is_literal(operand) {
                    continue;
                }
                let value = value_of(operand, event);
                operands.push(format!("`{}` is {value}", expression.text(operand.span)));
            }
            let value = value_of(node, event);
            let mut reason = if matches!(value, Value::Boolean(false)) {
                "is false".to_owned()
            } else {
                format!("is {value} (false as a Boolean)")
            };
            if !operands.is_empty() {
                reason.push_str(": ");
                reason.push_str(&operands.join(", "));
            }
            out.push((node.span, reason));
        }
    }
}

/// The operands shown next to a false node.
fn operands_of(node: &Node) -> Vec<&Node> {
    match &node.kind {
        NodeKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
        NodeKind::Like { operand, .. } | NodeKind::Negate(operand) => vec![operand],
        NodeKind::In { operand, set, .. } => std::iter::once(&**operand).chain(set).collect(),
        NodeKind::Call { args, .. } => args.iter().collect(),
        _ => Vec::new(),
    }
}

fn is_literal(node: &Node) -> bool {
    matches!(
        node.kind,
        NodeKind::Boolean(_) | NodeKind::Integer(_) | NodeKind::String(_)
    )
}

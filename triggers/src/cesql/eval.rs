//! The evaluator: spec sections 3.2 to 3.7.
//!
//! The error rule, applied at every node: all operands (arguments) are evaluated, and if any
//! raised an error, the node returns the zero value of its own return type without running, so
//! it raises nothing of its own, not even a cast error; a node that fails itself (a cast of an
//! operand, a division by zero, a function's domain) raises its errors and returns the value
//! the spec gives, else its zero value. Errors accumulate in evaluation order. Hence
//! `missing / 0` is `0` with only the missing-attribute error: the division never runs.
//! `AND` and `OR` evaluate their right operand only while the result is open: not after a
//! false (AND) or true (OR) left operand, nor after a failed one (the result is then `false`).

use std::borrow::Cow;

use switchyard_core::{CloudEvent, ExtValue, SpecVersion};

use super::ast::{Attribute, BinaryOp, Node, NodeKind, Span};
use super::error::{EvalError, EvalErrorKind};
use super::value::{Type, Value};

/// Where errors go. `Vec<EvalError>` keeps them; [`Count`] only counts, so filtering never
/// builds an error message.
pub(crate) trait Sink {
    /// Records an error; `make` is called only if the sink keeps errors.
    fn push(&mut self, make: impl FnOnce() -> EvalError);
    /// How many errors so far.
    fn count(&self) -> usize;
}

impl Sink for Vec<EvalError> {
    fn push(&mut self, make: impl FnOnce() -> EvalError) {
        Vec::push(self, make());
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// A sink that only counts errors.
#[derive(Debug, Default)]
pub(crate) struct Count(pub(crate) usize);

impl Sink for Count {
    fn push(&mut self, _make: impl FnOnce() -> EvalError) {
        self.0 += 1;
    }
    fn count(&self) -> usize {
        self.0
    }
}

/// One evaluation against one event.
pub(crate) struct Evaluator<'a, 's, S> {
    pub(crate) event: &'a CloudEvent,
    pub(crate) sink: &'s mut S,
}

impl<'a, S: Sink> Evaluator<'a, '_, S> {
    /// Evaluates a node.
    pub(crate) fn eval(&mut self, node: &'a Node) -> Value<'a> {
        match &node.kind {
            NodeKind::Boolean(b) => Value::Boolean(*b),
            NodeKind::Integer(i) => Value::Integer(*i),
            NodeKind::String(s) => Value::String(Cow::Borrowed(s)),
            NodeKind::Attribute(attribute) => match lookup(self.event, attribute) {
                Some(raw) => raw.value(),
                None => {
                    self.sink.push(|| missing_attribute(attribute, node.span));
                    // The engine cannot know the attribute's type: Boolean (section 3.2).
                    Value::Boolean(false)
                }
            },
            NodeKind::Exists(attribute) => Value::Boolean(lookup(self.event, attribute).is_some()),
            NodeKind::Not(operand) => Value::Boolean(self.boolean(operand).is_some_and(|b| !b)),
            NodeKind::Negate(operand) => Value::Integer(match self.integer(operand) {
                Some(i) => self.checked(i.checked_neg(), i32::MAX, node.span),
                None => 0,
            }),
            NodeKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs, node.span),
            NodeKind::Like {
                negated,
                operand,
                pattern,
            } => {
                let before = self.sink.count();
                let value = self.eval(operand);
                if self.sink.count() > before {
                    return Value::Boolean(false);
                }
                Value::Boolean(value.with_str(|s| pattern.matches(s)) != *negated)
            }
            NodeKind::In {
                negated,
                operand,
                set,
            } => self.in_set(*negated, operand, set),
            NodeKind::Call { function, args } => self.call(*function, args, node.span),
        }
    }

    /// Evaluates and casts to Boolean; `None` if either failed (the error is raised).
    pub(crate) fn boolean(&mut self, node: &'a Node) -> Option<bool> {
        let before = self.sink.count();
        let value = self.eval(node);
        if self.sink.count() > before {
            return None;
        }
        self.cast_boolean(&value, node.span)
    }

    /// Evaluates and casts to Integer; `None` if either failed (the error is raised).
    pub(crate) fn integer(&mut self, node: &'a Node) -> Option<i32> {
        let before = self.sink.count();
        let value = self.eval(node);
        if self.sink.count() > before {
            return None;
        }
        self.cast_integer(&value, node.span)
    }

    pub(crate) fn cast_boolean(&mut self, value: &Value<'_>, span: Span) -> Option<bool> {
        let b = value.to_boolean();
        if b.is_none() {
            self.sink.push(|| cast_error(value, Type::Boolean, span));
        }
        b
    }

    pub(crate) fn cast_integer(&mut self, value: &Value<'_>, span: Span) -> Option<i32> {
        let i = value.to_integer();
        if i.is_none() {
            self.sink.push(|| cast_error(value, Type::Integer, span));
        }
        i
    }

    /// An arithmetic result: on overflow, a _MathError_ and `saturated`.
    fn checked(&mut self, result: Option<i32>, saturated: i32, span: Span) -> i32 {
        result.unwrap_or_else(|| {
            self.sink.push(|| {
                EvalError::new(
                    EvalErrorKind::Math,
                    span,
                    "the result is out of the 32-bit integer range",
                )
            });
            saturated
        })
    }

    /// Evaluates both operands; `None` if either raised an error.
    fn operands(&mut self, lhs: &'a Node, rhs: &'a Node) -> Option<(Value<'a>, Value<'a>)> {
        let before = self.sink.count();
        let left = self.eval(lhs);
        let right = self.eval(rhs);
        (self.sink.count() == before).then_some((left, right))
    }

    /// Evaluates both operands and casts them to Integer; `None` if anything failed.
    fn integers(&mut self, lhs: &'a Node, rhs: &'a Node) -> Option<(i32, i32)> {
        let (left, right) = self.operands(lhs, rhs)?;
        let left = self.cast_integer(&left, lhs.span);
        let right = self.cast_integer(&right, rhs.span);
        Some((left?, right?))
    }

    fn binary(&mut self, op: BinaryOp, lhs: &'a Node, rhs: &'a Node, span: Span) -> Value<'a> {
        match op {
            // Short-circuits: the right operand is evaluated only while the result is open,
            // so not after a false (AND) or true (OR) left operand, nor after a failed one.
            BinaryOp::And => {
                Value::Boolean(self.boolean(lhs) == Some(true) && self.boolean(rhs) == Some(true))
            }
            BinaryOp::Or => Value::Boolean(match self.boolean(lhs) {
                Some(true) => true,
                Some(false) => self.boolean(rhs) == Some(true),
                None => false,
            }),
            BinaryOp::Xor => {
                let Some((left, right)) = self.operands(lhs, rhs) else {
                    return Value::Boolean(false);
                };
                let left = self.cast_boolean(&left, lhs.span);
                let right = self.cast_boolean(&right, rhs.span);
                Value::Boolean(matches!((left, right), (Some(l), Some(r)) if l != r))
            }
            BinaryOp::Eq | BinaryOp::NotEq => {
                let Some((left, right)) = self.operands(lhs, rhs) else {
                    return Value::Boolean(false);
                };
                // `=` is ambiguous: the right operand's type picks the definition, and the left
                // operand is cast to it (section 3.7).
                match equals_as(&right, &left) {
                    Some(equal) => Value::Boolean(equal != (op == BinaryOp::NotEq)),
                    None => {
                        self.sink.push(|| cast_error(&left, right.ty(), lhs.span));
                        Value::Boolean(false)
                    }
                }
            }
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                let Some((l, r)) = self.integers(lhs, rhs) else {
                    return Value::Boolean(false);
                };
                Value::Boolean(match op {
                    BinaryOp::Lt => l < r,
                    BinaryOp::Le => l <= r,
                    BinaryOp::Gt => l > r,
                    _ => l >= r,
                })
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
                let Some((l, r)) = self.integers(lhs, rhs) else {
                    return Value::Integer(0);
                };
                Value::Integer(self.arithmetic(op, l, r, span))
            }
        }
    }

    fn arithmetic(&mut self, op: BinaryOp, l: i32, r: i32, span: Span) -> i32 {
        match op {
            BinaryOp::Add => self.checked(l.checked_add(r), l.saturating_add(r), span),
            BinaryOp::Sub => self.checked(l.checked_sub(r), l.saturating_sub(r), span),
            BinaryOp::Mul => self.checked(l.checked_mul(r), l.saturating_mul(r), span),
            BinaryOp::Div | BinaryOp::Rem if r == 0 => {
                self.sink.push(|| {
                    let what = if op == BinaryOp::Div {
                        "division by zero"
                    } else {
                        "remainder of a division by zero"
                    };
                    EvalError::new(EvalErrorKind::Math, span, what)
                });
                0
            }
            // Only -2147483648 / -1 overflows.
            BinaryOp::Div => self.checked(l.checked_div(r), i32::MAX, span),
            // -2147483648 % -1 is 0, which wrapping_rem gives without overflowing.
            _ => l.wrapping_rem(r),
        }
    }

    /// `x [NOT] IN (...)`: every element is evaluated, then cast to the type of `x`.
    fn in_set(&mut self, negated: bool, operand: &'a Node, set: &'a [Node]) -> Value<'a> {
        let before = self.sink.count();
        let value = self.eval(operand);
        let mut found = false;
        // Elements that do not cast: reported only if nothing failed to evaluate.
        let mut uncastable: Vec<usize> = Vec::new();
        for (i, element) in set.iter().enumerate() {
            let candidate = self.eval(element);
            if self.sink.count() > before {
                continue;
            }
            match equals_as(&value, &candidate) {
                Some(equal) => found |= equal,
                None => uncastable.push(i),
            }
        }
        if self.sink.count() > before {
            return Value::Boolean(false);
        }
        for &i in &uncastable {
            // Evaluated again only to describe it (evaluation is pure, and it succeeded).
            let candidate = self.eval(&set[i]);
            self.sink
                .push(|| cast_error(&candidate, value.ty(), set[i].span));
        }
        Value::Boolean(uncastable.is_empty() && found != negated)
    }
}

/// Compares `other` cast to the type of `target` with `target`; `None` when the cast fails.
fn equals_as(target: &Value<'_>, other: &Value<'_>) -> Option<bool> {
    match target {
        Value::Boolean(t) => other.to_boolean().map(|o| o == *t),
        Value::Integer(t) => other.to_integer().map(|o| o == *t),
        Value::String(t) => Some(other.with_str(|o| o == t)),
    }
}

fn cast_error(value: &Value<'_>, to: Type, span: Span) -> EvalError {
    EvalError::new(
        EvalErrorKind::Cast,
        span,
        format!("cannot cast {} {value} to {to}", value.ty()),
    )
}

fn missing_attribute(attribute: &Attribute, span: Span) -> EvalError {
    EvalError::new(
        EvalErrorKind::MissingAttribute,
        span,
        format!("the event has no attribute `{attribute}`"),
    )
}

/// An attribute's value as stored in the event.
enum Raw<'a> {
    Str(&'a str),
    Ext(&'a ExtValue),
}

impl<'a> Raw<'a> {
    /// The CESQL value: Integer and Boolean extensions keep their type, everything else is a
    /// String (section 3.2). Only a Binary extension allocates (its base64 form).
    fn value(self) -> Value<'a> {
        match self {
            Raw::Str(s) => Value::String(Cow::Borrowed(s)),
            Raw::Ext(ext) => match ext {
                ExtValue::String(s)
                | ExtValue::Uri(s)
                | ExtValue::UriRef(s)
                | ExtValue::Timestamp(s) => Value::String(Cow::Borrowed(s)),
                ExtValue::Integer(i) => Value::Integer(*i),
                ExtValue::Boolean(b) => Value::Boolean(*b),
                ExtValue::Binary(_) => Value::String(Cow::Owned(ext.to_canonical_string())),
            },
        }
    }
}

/// Finds an attribute, with the same names as [`CloudEvent::attribute`].
fn lookup<'a>(event: &'a CloudEvent, attribute: &Attribute) -> Option<Raw<'a>> {
    let v03 = event.specversion == SpecVersion::V03;
    let ext = |name: &str| event.extensions.get(name).map(Raw::Ext);
    match attribute {
        Attribute::SpecVersion => Some(Raw::Str(event.specversion.as_str())),
        Attribute::Id => Some(Raw::Str(&event.id)),
        Attribute::Source => Some(Raw::Str(&event.source)),
        Attribute::Type => Some(Raw::Str(&event.ty)),
        Attribute::DataContentType => event.datacontenttype.as_deref().map(Raw::Str),
        Attribute::Subject => event.subject.as_deref().map(Raw::Str),
        Attribute::Time => event.time.as_deref().map(Raw::Str),
        Attribute::DataSchema if v03 => None,
        Attribute::DataSchema => event.dataschema.as_deref().map(Raw::Str),
        Attribute::SchemaUrl if v03 => event.dataschema.as_deref().map(Raw::Str),
        Attribute::DataContentEncoding if v03 => event.datacontentencoding.as_deref().map(Raw::Str),
        Attribute::SchemaUrl | Attribute::DataContentEncoding => ext(attribute.name()),
        Attribute::Extension(name) => ext(name),
    }
}

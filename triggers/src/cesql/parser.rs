//! The parser: precedence climbing with the precedence of spec section 3.6.
//!
//! From loosest to tightest binding, every binary level left-associative:
//!
//! ```text
//! expression := operand ( infix )*
//! infix      := (AND | OR | XOR) expression            level 1
//!             | (= | != | <> | < | <= | > | >=) expr   level 2
//!             | (+ | -) expr                           level 3
//!             | (* | / | %) expr                       level 4
//!             | [NOT] LIKE string-literal              level 5 (postfix)
//!             | [NOT] IN '(' expression (',' expression)* ')'   level 5 (postfix)
//! operand    := NOT operand | '-' operand | EXISTS identifier | primary
//! primary    := integer | ['+' | '-'] integer | string | TRUE | FALSE
//!             | identifier | function '(' [expression (',' expression)*] ')' | '(' expression ')'
//! ```
//!
//! Syntax errors are reported first, at the first token that cannot continue the expression;
//! an unknown function or a wrong argument count (checked once the call is parsed) is reported
//! only if the whole expression is otherwise well-formed.

use super::ast::{Attribute, BinaryOp, Node, NodeKind, Span};
use super::error::{ParseError, ParseErrorKind};
use super::functions::Function;
use super::lexer::{Keyword, Token, TokenKind, tokenize};
use super::like::LikePattern;

/// How deeply parentheses, unary operators, function calls and IN sets may nest. Keeps the
/// parser's recursion well within a thread's stack (about 5 KiB a level in a debug build).
pub const MAX_NESTING: usize = 128;

/// How deep the syntax tree may be, where each operator of a chain such as `a OR b OR c` adds
/// a level. Keeps evaluation, explanation and dropping of the tree well within a thread's
/// stack (about 1 KiB a level in a debug build).
pub const MAX_DEPTH: usize = 512;

/// Parses `src` into a syntax tree.
pub(crate) fn parse(src: &str) -> Result<Node, ParseError> {
    let mut parser = Parser {
        src,
        tokens: tokenize(src),
        pos: 0,
        nesting: 0,
        deferred: None,
    };
    let parsed = parser.expression(0).map_err(|e| *e)?;
    if parser.kind() != &TokenKind::Eof {
        return Err(*parser.unexpected("an operator or the end of the expression"));
    }
    match parser.deferred {
        Some(error) => Err(error),
        None => Ok(parsed.node),
    }
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    /// Current nesting of recursive constructs.
    nesting: usize,
    /// The first unknown-function or arity error, reported if no syntax error comes.
    deferred: Option<ParseError>,
}

/// A parsed node and the depth of its tree.
struct Parsed {
    node: Node,
    depth: usize,
}

/// Errors are boxed while parsing, to keep the recursive functions' frames small.
type PResult<T = Parsed> = Result<T, Box<ParseError>>;

/// Binding strength of the infix operators.
const LOGIC: u8 = 1;
const COMPARISON: u8 = 2;
const ADDITIVE: u8 = 3;
const MULTIPLICATIVE: u8 = 4;
const POSTFIX: u8 = 5;

enum Infix {
    Binary(BinaryOp),
    Like { negated: bool },
    In { negated: bool },
}

impl Parser<'_> {
    fn token(&self) -> &Token {
        // The token list always ends with Eof or Error, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn kind(&self) -> &TokenKind {
        &self.token().kind
    }

    fn kind_at(&self, ahead: usize) -> Option<&TokenKind> {
        self.tokens.get(self.pos + ahead).map(|t| &t.kind)
    }

    fn span(&self) -> Span {
        self.token().span
    }

    /// Moves past the current token, returning its span.
    fn bump(&mut self) -> Span {
        let span = self.span();
        if !matches!(self.kind(), TokenKind::Eof | TokenKind::Error(_)) {
            self.pos += 1;
        }
        span
    }

    /// Moves past a string token, taking its value.
    fn take_string(&mut self) -> Option<(String, Span)> {
        let token = self.tokens.get_mut(self.pos)?;
        let TokenKind::String(value) = &mut token.kind else {
            return None;
        };
        let value = std::mem::take(value);
        let span = token.span;
        self.pos += 1;
        Some((value, span))
    }

    #[inline(never)]
    fn error(&self, kind: ParseErrorKind, span: Span) -> Box<ParseError> {
        Box::new(ParseError::new(self.src, kind, span))
    }

    /// The error for the current token: its own lexing error, or "expected ..., found it".
    #[inline(never)]
    fn unexpected(&self, expected: &'static str) -> Box<ParseError> {
        self.unexpected_at(expected, self.pos)
    }

    #[inline(never)]
    fn unexpected_at(&self, expected: &'static str, index: usize) -> Box<ParseError> {
        let token = &self.tokens[index.min(self.tokens.len() - 1)];
        if let TokenKind::Error(kind) = &token.kind {
            return self.error(kind.clone(), token.span);
        }
        let found = describe(self.src, token);
        self.error(ParseErrorKind::Expected { expected, found }, token.span)
    }

    fn expect(&mut self, kind: &TokenKind, expected: &'static str) -> PResult<Span> {
        if self.kind() == kind {
            Ok(self.bump())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Enters a recursive construct opened at `span`.
    fn enter(&mut self, span: Span) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.error(ParseErrorKind::TooDeep(MAX_NESTING), span));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Builds a node over children whose deepest tree is `child_depth`.
    #[inline(never)]
    fn node(&self, kind: NodeKind, span: Span, child_depth: usize) -> PResult {
        let depth = child_depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.error(ParseErrorKind::TooComplex(MAX_DEPTH), span));
        }
        Ok(Parsed {
            node: Node { kind, span },
            depth,
        })
    }

    fn leaf(kind: NodeKind, span: Span) -> PResult {
        Ok(Parsed {
            node: Node { kind, span },
            depth: 1,
        })
    }

    fn infix(&self) -> Option<(u8, Infix)> {
        let binary = |level, op| Some((level, Infix::Binary(op)));
        match self.kind() {
            TokenKind::Keyword(Keyword::And) => binary(LOGIC, BinaryOp::And),
            TokenKind::Keyword(Keyword::Or) => binary(LOGIC, BinaryOp::Or),
            TokenKind::Keyword(Keyword::Xor) => binary(LOGIC, BinaryOp::Xor),
            TokenKind::Eq => binary(COMPARISON, BinaryOp::Eq),
            TokenKind::NotEq | TokenKind::Diamond => binary(COMPARISON, BinaryOp::NotEq),
            TokenKind::Lt => binary(COMPARISON, BinaryOp::Lt),
            TokenKind::Le => binary(COMPARISON, BinaryOp::Le),
            TokenKind::Gt => binary(COMPARISON, BinaryOp::Gt),
            TokenKind::Ge => binary(COMPARISON, BinaryOp::Ge),
            TokenKind::Plus => binary(ADDITIVE, BinaryOp::Add),
            TokenKind::Minus => binary(ADDITIVE, BinaryOp::Sub),
            TokenKind::Star => binary(MULTIPLICATIVE, BinaryOp::Mul),
            TokenKind::Slash => binary(MULTIPLICATIVE, BinaryOp::Div),
            TokenKind::Percent => binary(MULTIPLICATIVE, BinaryOp::Rem),
            TokenKind::Keyword(Keyword::Like) => Some((POSTFIX, Infix::Like { negated: false })),
            TokenKind::Keyword(Keyword::In) => Some((POSTFIX, Infix::In { negated: false })),
            TokenKind::Keyword(Keyword::Not) => match self.kind_at(1) {
                Some(TokenKind::Keyword(Keyword::Like)) => {
                    Some((POSTFIX, Infix::Like { negated: true }))
                }
                Some(TokenKind::Keyword(Keyword::In)) => {
                    Some((POSTFIX, Infix::In { negated: true }))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// An expression whose infix operators bind at least as tightly as `min_level`.
    fn expression(&mut self, min_level: u8) -> PResult {
        let mut lhs = self.operand()?;
        while let Some((level, infix)) = self.infix() {
            if level < min_level {
                break;
            }
            self.bump();
            lhs = match infix {
                Infix::Binary(op) => {
                    // Left-associative: the right operand takes only tighter operators.
                    let rhs = self.expression(level + 1)?;
                    self.binary(op, lhs, rhs)?
                }
                Infix::Like { negated } => {
                    if negated {
                        self.bump();
                    }
                    self.like(lhs, negated)?
                }
                Infix::In { negated } => {
                    if negated {
                        self.bump();
                    }
                    self.in_set(lhs, negated)?
                }
            };
        }
        if matches!(self.kind(), TokenKind::Keyword(Keyword::Not)) {
            // `x NOT y`: NOT is only a prefix operator, or part of NOT LIKE / NOT IN.
            return Err(self.unexpected_at("LIKE or IN after NOT", self.pos + 1));
        }
        Ok(lhs)
    }

    #[inline(never)]
    fn binary(&self, op: BinaryOp, lhs: Parsed, rhs: Parsed) -> PResult {
        let span = lhs.node.span.to(rhs.node.span);
        let depth = lhs.depth.max(rhs.depth);
        let kind = NodeKind::Binary {
            op,
            lhs: Box::new(lhs.node),
            rhs: Box::new(rhs.node),
        };
        self.node(kind, span, depth)
    }

    /// After LIKE: the pattern, which must be a string literal.
    #[inline(never)]
    fn like(&mut self, operand: Parsed, negated: bool) -> PResult {
        let Some((pattern, pattern_span)) = self.take_string() else {
            return Err(self.unexpected("a string literal (LIKE takes only a literal pattern)"));
        };
        let span = operand.node.span.to(pattern_span);
        let kind = NodeKind::Like {
            negated,
            operand: Box::new(operand.node),
            pattern: LikePattern::new(&pattern),
        };
        self.node(kind, span, operand.depth)
    }

    /// After IN: the parenthesised set.
    fn in_set(&mut self, operand: Parsed, negated: bool) -> PResult {
        let open = self.expect(&TokenKind::LParen, "`(` to open the IN set")?;
        self.enter(open)?;
        let elements = self.list();
        self.leave();
        let (set, depth) = elements?;
        let close = self.expect(&TokenKind::RParen, "`,` or `)` in the IN set")?;
        let span = operand.node.span.to(close);
        let depth = depth.max(operand.depth);
        let kind = NodeKind::In {
            negated,
            operand: Box::new(operand.node),
            set,
        };
        self.node(kind, span, depth)
    }

    /// One or more comma-separated expressions, and their deepest tree.
    fn list(&mut self) -> PResult<(Vec<Node>, usize)> {
        let mut nodes = Vec::new();
        let mut depth = 0;
        loop {
            let item = self.expression(0)?;
            depth = depth.max(item.depth);
            nodes.push(item.node);
            if self.kind() != &TokenKind::Comma {
                return Ok((nodes, depth));
            }
            self.bump();
        }
    }

    /// A unary operation, EXISTS or a primary.
    fn operand(&mut self) -> PResult {
        match self.kind() {
            TokenKind::Keyword(Keyword::Not) => {
                let start = self.bump();
                self.enter(start)?;
                let operand = self.operand();
                self.leave();
                self.unary(start, operand?, true)
            }
            TokenKind::Minus => {
                let start = self.bump();
                if let TokenKind::Integer(digits) = *self.kind() {
                    // A negative literal, folded so that -2147483648 is in range.
                    let span = start.to(self.bump());
                    return self.integer(digits, true, span);
                }
                self.enter(start)?;
                let operand = self.operand();
                self.leave();
                self.unary(start, operand?, false)
            }
            TokenKind::Plus => {
                // `+` exists only as the sign of an integer literal.
                let start = self.bump();
                let TokenKind::Integer(digits) = *self.kind() else {
                    return Err(self.unexpected("an integer after `+`"));
                };
                let span = start.to(self.bump());
                self.integer(digits, false, span)
            }
            TokenKind::Keyword(Keyword::Exists) => self.exists(),
            _ => self.primary(),
        }
    }

    #[inline(never)]
    fn unary(&self, start: Span, operand: Parsed, not: bool) -> PResult {
        let span = start.to(operand.node.span);
        let child = Box::new(operand.node);
        let kind = if not {
            NodeKind::Not(child)
        } else {
            NodeKind::Negate(child)
        };
        self.node(kind, span, operand.depth)
    }

    #[inline(never)]
    fn exists(&mut self) -> PResult {
        let start = self.bump();
        if self.kind() != &TokenKind::Word {
            return Err(self.unexpected("an attribute name after EXISTS"));
        }
        let name = self.bump();
        let attribute = self.attribute(name)?;
        Self::leaf(NodeKind::Exists(attribute), start.to(name))
    }

    fn primary(&mut self) -> PResult {
        match self.kind() {
            TokenKind::Integer(digits) => {
                let digits = *digits;
                let span = self.bump();
                self.integer(digits, false, span)
            }
            TokenKind::String(_) => {
                let (value, span) = self
                    .take_string()
                    .ok_or_else(|| self.unexpected("a string"))?;
                Self::leaf(NodeKind::String(value.into()), span)
            }
            TokenKind::Keyword(Keyword::True) => Self::leaf(NodeKind::Boolean(true), self.bump()),
            TokenKind::Keyword(Keyword::False) => Self::leaf(NodeKind::Boolean(false), self.bump()),
            TokenKind::Word => {
                let name = self.bump();
                if self.kind() == &TokenKind::LParen {
                    self.call(name)
                } else {
                    Self::leaf(NodeKind::Attribute(self.attribute(name)?), name)
                }
            }
            TokenKind::LParen => {
                let open = self.bump();
                self.enter(open)?;
                let inner = self.expression(0);
                self.leave();
                let inner = inner?;
                let close = self.expect(&TokenKind::RParen, "`)`")?;
                // The node keeps its own kind; its span grows to cover the parentheses, so
                // explanations quote what was written.
                Ok(Parsed {
                    node: Node {
                        kind: inner.node.kind,
                        span: open.to(close),
                    },
                    depth: inner.depth,
                })
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// A function call; the name has been read and the current token is `(`.
    fn call(&mut self, name_span: Span) -> PResult {
        let open = self.bump();
        let (args, depth) = if self.kind() == &TokenKind::RParen {
            (Vec::new(), 0)
        } else {
            self.enter(open)?;
            let args = self.list();
            self.leave();
            args?
        };
        let close = self.expect(&TokenKind::RParen, "`,` or `)` after a function argument")?;
        self.resolve_call(name_span, name_span.to(close), args, depth)
    }

    #[inline(never)]
    fn resolve_call(&mut self, name: Span, span: Span, args: Vec<Node>, depth: usize) -> PResult {
        match Function::resolve(&self.src[name.start..name.end], args.len()) {
            Ok(function) => self.node(NodeKind::Call { function, args }, span, depth),
            Err(kind) => {
                if self.deferred.is_none() {
                    self.deferred = Some(*self.error(kind, name));
                }
                // A stand-in: the parse fails anyway.
                Self::leaf(NodeKind::Boolean(false), span)
            }
        }
    }

    /// Resolves an identifier as an attribute name: letters and digits, case-insensitive.
    #[inline(never)]
    fn attribute(&self, span: Span) -> PResult<Attribute> {
        let name = &self.src[span.start..span.end];
        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(self.error(ParseErrorKind::InvalidAttributeName(name.to_owned()), span));
        }
        Ok(Attribute::from_name(&name.to_ascii_lowercase()))
    }

    /// An integer literal from its digits (`None`: more than 64 bits of them).
    #[inline(never)]
    fn integer(&self, digits: Option<u64>, negative: bool, span: Span) -> PResult {
        let value = digits
            .and_then(|d| i64::try_from(d).ok())
            .map(|d| if negative { -d } else { d })
            .and_then(|d| i32::try_from(d).ok());
        match value {
            Some(value) => Self::leaf(NodeKind::Integer(value), span),
            None => {
                let text = &self.src[span.start..span.end];
                Err(self.error(ParseErrorKind::IntegerOutOfRange(text.to_owned()), span))
            }
        }
    }
}

/// How a token is named in "found ..." messages.
fn describe(src: &str, token: &Token) -> String {
    let text = &src[token.span.start..token.span.end];
    match &token.kind {
        TokenKind::Eof => "the end of the expression".to_owned(),
        TokenKind::Integer(_) => format!("the integer {text}"),
        TokenKind::String(_) => format!("the string {text}"),
        TokenKind::Word => format!("the identifier `{text}`"),
        TokenKind::Keyword(kw) => format!("the keyword {}", kw.as_str()),
        _ => format!("`{text}`"),
    }
}

//! The tokenizer: source text to tokens with byte spans.
//!
//! Keywords are recognised case-insensitively. A word made only of digits is an integer
//! literal; any other run of letters, digits and `_` is a word (an identifier or a keyword;
//! the parser decides whether it names an attribute or a function). String literals are
//! delimited by `'` or `"`; inside, a backslash before the delimiting quote escapes it and
//! every other character, a backslash included, stands for itself (as in the reference SDKs, so
//! `'ab\c'` is the four characters `ab\c`, which LIKE then reads as its own escapes).

use super::ast::Span;
use super::error::ParseErrorKind;

/// The keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Xor,
    Not,
    Like,
    In,
    Exists,
    True,
    False,
}

impl Keyword {
    fn from_word(word: &str) -> Option<Keyword> {
        const KEYWORDS: [(&str, Keyword); 9] = [
            ("AND", Keyword::And),
            ("OR", Keyword::Or),
            ("XOR", Keyword::Xor),
            ("NOT", Keyword::Not),
            ("LIKE", Keyword::Like),
            ("IN", Keyword::In),
            ("EXISTS", Keyword::Exists),
            ("TRUE", Keyword::True),
            ("FALSE", Keyword::False),
        ];
        KEYWORDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
            .map(|&(_, kw)| kw)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Keyword::And => "AND",
            Keyword::Or => "OR",
            Keyword::Xor => "XOR",
            Keyword::Not => "NOT",
            Keyword::Like => "LIKE",
            Keyword::In => "IN",
            Keyword::Exists => "EXISTS",
            Keyword::True => "TRUE",
            Keyword::False => "FALSE",
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A run of digits; `None` when it does not even fit in 64 bits.
    Integer(Option<u64>),
    /// A string literal, unescaped.
    String(String),
    /// An identifier (attribute or function name), as written.
    Word,
    Keyword(Keyword),
    LParen,
    RParen,
    Comma,
    Eq,
    /// `!=`
    NotEq,
    /// `<>`
    Diamond,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eof,
    /// Text the lexer could not read; the parser reports it when it gets there.
    Error(ParseErrorKind),
}

/// A token and the source text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) span: Span,
}

/// Splits `src` into tokens. The last token is `Eof`, or `Error` at the first text that is not
/// a token (nothing after it is read).
pub(crate) fn tokenize(src: &str) -> Vec<Token> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        // Skip whitespace (any Unicode whitespace).
        while let Some(c) = src[i..].chars().next() {
            if c.is_whitespace() {
                i += c.len_utf8();
            } else {
                break;
            }
        }
        let start = i;
        let Some(c) = src[i..].chars().next() else {
            tokens.push(Token {
                kind: TokenKind::Eof,
                span: Span::new(i, i),
            });
            return tokens;
        };
        let single = |kind| (kind, start + 1);
        let next = bytes.get(i + 1).copied();
        let (kind, end) = match c {
            '(' => single(TokenKind::LParen),
            ')' => single(TokenKind::RParen),
            ',' => single(TokenKind::Comma),
            '=' => single(TokenKind::Eq),
            '+' => single(TokenKind::Plus),
            '-' => single(TokenKind::Minus),
            '*' => single(TokenKind::Star),
            '/' => single(TokenKind::Slash),
            '%' => single(TokenKind::Percent),
            '!' if next == Some(b'=') => (TokenKind::NotEq, start + 2),
            '<' if next == Some(b'>') => (TokenKind::Diamond, start + 2),
            '<' if next == Some(b'=') => (TokenKind::Le, start + 2),
            '<' => single(TokenKind::Lt),
            '>' if next == Some(b'=') => (TokenKind::Ge, start + 2),
            '>' => single(TokenKind::Gt),
            '\'' | '"' => match string_literal(src, start, c as u8) {
                Ok((value, end)) => (TokenKind::String(value), end),
                Err(kind) => (TokenKind::Error(kind), src.len()),
            },
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let end = start
                    + src[start..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(src.len() - start);
                let word = &src[start..end];
                let kind = if word.bytes().all(|b| b.is_ascii_digit()) {
                    TokenKind::Integer(word.parse::<u64>().ok())
                } else if let Some(kw) = Keyword::from_word(word) {
                    TokenKind::Keyword(kw)
                } else {
                    TokenKind::Word
                };
                (kind, end)
            }
            other => (
                TokenKind::Error(ParseErrorKind::UnexpectedCharacter(other)),
                start + other.len_utf8(),
            ),
        };
        let is_error = matches!(kind, TokenKind::Error(_));
        tokens.push(Token {
            kind,
            span: Span::new(start, end),
        });
        if is_error {
            return tokens;
        }
        i = end;
    }
}

/// Reads the string literal opening at `start` with `quote`; returns its value and the offset
/// after the closing quote.
fn string_literal(src: &str, start: usize, quote: u8) -> Result<(String, usize), ParseErrorKind> {
    let bytes = src.as_bytes();
    let mut value = String::new();
    // Start of the pending run of characters to copy unchanged.
    let mut run = start + 1;
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && bytes.get(i + 1) == Some(&quote) {
            value.push_str(&src[run..i]);
            value.push(quote as char);
            i += 2;
            run = i;
        } else if b == quote {
            value.push_str(&src[run..i]);
            return Ok((value, i + 1));
        } else {
            // Quotes and backslashes are ASCII, so stepping through UTF-8 bytes is safe.
            i += 1;
        }
    }
    Err(ParseErrorKind::UnterminatedString)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn operators_and_words() {
        assert_eq!(
            kinds("a<>b!=c<=d>=e<f>g"),
            vec![
                TokenKind::Word,
                TokenKind::Diamond,
                TokenKind::Word,
                TokenKind::NotEq,
                TokenKind::Word,
                TokenKind::Le,
                TokenKind::Word,
                TokenKind::Ge,
                TokenKind::Word,
                TokenKind::Lt,
                TokenKind::Word,
                TokenKind::Gt,
                TokenKind::Word,
                TokenKind::Eof,
            ]
        );
        assert_eq!(
            kinds("nOt LiKe 12 1a"),
            vec![
                TokenKind::Keyword(Keyword::Not),
                TokenKind::Keyword(Keyword::Like),
                TokenKind::Integer(Some(12)),
                TokenKind::Word,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            kinds(r#"'a"b\'c' "a'b\"c" 'ab\c' 'é'"#),
            vec![
                TokenKind::String("a\"b'c".into()),
                TokenKind::String("a'b\"c".into()),
                TokenKind::String("ab\\c".into()),
                TokenKind::String("é".into()),
                TokenKind::Eof,
            ]
        );
        assert_eq!(
            kinds("'abc"),
            vec![TokenKind::Error(ParseErrorKind::UnterminatedString)]
        );
        assert_eq!(
            kinds(r"'abc\'"),
            vec![TokenKind::Error(ParseErrorKind::UnterminatedString)]
        );
    }

    #[test]
    fn bad_character_stops() {
        let tokens = tokenize("a ! b");
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens[1].kind,
            TokenKind::Error(ParseErrorKind::UnexpectedCharacter('!'))
        );
        assert_eq!(tokens[1].span, Span::new(2, 3));
    }
}

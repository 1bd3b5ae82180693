//! CESQL beyond the TCK: compile errors and their positions, the semantics the spec leaves to
//! the engine (see spec/cesql.md), borrowing, nesting limits and explanations.

use std::borrow::Cow;

use proptest::prelude::*;
use switchyard_core::CloudEvent;
use switchyard_triggers::cesql::{
    EvalErrorKind, Expression, MAX_DEPTH, MAX_NESTING, ParseError, ParseErrorKind, Span, Value,
};

fn event(json: &str) -> CloudEvent {
    switchyard_core::json::decode_event(json.as_bytes()).expect("a valid test event")
}

fn sample() -> CloudEvent {
    event(
        r#"{"specversion":"1.0","id":"e1","source":"/orders","type":"com.example.created",
            "subject":"b","myint":3,"mybool":true,"mystr":"10","empty":""}"#,
    )
}

fn parse_err(src: &str) -> ParseError {
    match Expression::parse(src) {
        Ok(_) => panic!("`{src}` compiled"),
        Err(e) => e,
    }
}

/// Value and error kinds against the sample event.
fn eval(src: &str) -> (Value<'static>, Vec<EvalErrorKind>) {
    let expression = Expression::parse(src).unwrap_or_else(|e| panic!("`{src}`: {e}"));
    let event = sample();
    let (value, errors) = expression.eval(&event);
    (
        value.into_owned(),
        errors.into_iter().map(|e| e.kind).collect(),
    )
}

fn int(i: i32) -> Value<'static> {
    Value::Integer(i)
}

fn boolean(b: bool) -> Value<'static> {
    Value::Boolean(b)
}

fn string(s: &str) -> Value<'static> {
    Value::String(Cow::Owned(s.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Compile errors

#[test]
fn parse_errors_have_positions_and_reasons() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "ABC(",
            5,
            "expected an expression, found the end of the expression",
        ),
        (
            "x LIKE 123",
            8,
            "expected a string literal (LIKE takes only a literal pattern), found the integer 123",
        ),
        (
            "a = ",
            5,
            "expected an expression, found the end of the expression",
        ),
        ("a = 'abc", 5, "unterminated string literal"),
        (r"a = 'abc\'", 5, "unterminated string literal"),
        ("a ! b", 3, "unexpected character `!`"),
        (
            "a = 1 1",
            7,
            "expected an operator or the end of the expression, found the integer 1",
        ),
        ("(a = 1", 7, "expected `)`, found the end of the expression"),
        ("a IN ()", 7, "expected an expression, found `)`"),
        (
            "a IN 1",
            6,
            "expected `(` to open the IN set, found the integer 1",
        ),
        (
            "a IN (1 2)",
            9,
            "expected `,` or `)` in the IN set, found the integer 2",
        ),
        (
            "a NOT b",
            7,
            "expected LIKE or IN after NOT, found the identifier `b`",
        ),
        (
            "EXISTS 'a'",
            8,
            "expected an attribute name after EXISTS, found the string 'a'",
        ),
        (
            "+'5'",
            2,
            "expected an integer after `+`, found the string '5'",
        ),
        (
            "a AND",
            6,
            "expected an expression, found the end of the expression",
        ),
        (
            "LENGTH('a' 'b')",
            12,
            "expected `,` or `)` after a function argument, found the string 'b'",
        ),
        (
            "2147483648",
            1,
            "integer literal 2147483648 is out of the 32-bit range -2147483648 to 2147483647",
        ),
        (
            "-2147483649",
            1,
            "integer literal -2147483649 is out of the 32-bit range -2147483648 to 2147483647",
        ),
        (
            "99999999999999999999999",
            1,
            "integer literal 99999999999999999999999 is out of the 32-bit range -2147483648 to 2147483647",
        ),
        (
            "my_attr = 1",
            1,
            "invalid attribute name `my_attr`: attribute names have only letters and digits",
        ),
        ("NOPE(1)", 1, "unknown function `NOPE`"),
        (
            "substring('abc')",
            1,
            "function SUBSTRING takes 2 or 3 arguments, not 1",
        ),
        (
            "type = 'x' AND CONCAT_WS()",
            16,
            "function CONCAT_WS takes at least 1 argument, not 0",
        ),
        ("'é' = ?", 7, "unexpected character `?`"),
        ("é = 1", 1, "unexpected character `é`"),
    ];
    for &(src, column, message) in cases {
        let e = parse_err(src);
        assert_eq!(
            (e.line, e.column, e.kind.to_string().as_str()),
            (1, column, message),
            "`{src}`"
        );
        assert_eq!(e.to_string(), format!("line 1, column {column}: {message}"));
    }
}

#[test]
fn parse_error_spans_and_kinds() {
    let e = parse_err("NOPE(1) AND subject = 'x'");
    assert_eq!(e.span, Span::new(0, 4));
    assert!(e.is_missing_function());
    assert_eq!(e.kind, ParseErrorKind::UnknownFunction("NOPE".into()));

    let e = parse_err("x LIKE 123");
    assert_eq!((e.offset(), e.span), (7, Span::new(7, 10)));
    assert!(!e.is_missing_function());

    // Multi-line expressions: line and column (in characters) of the offending token.
    let e = parse_err("type = 'a' AND\n  (subject = 'é' OR\n   myext >)");
    assert_eq!((e.line, e.column), (3, 11));
}

#[test]
fn syntax_errors_win_over_unknown_functions() {
    // The unknown function comes first in the text, but the expression does not parse at all.
    let e = parse_err("NOPE(1) AND (");
    assert!(!e.is_missing_function(), "{e}");
    assert_eq!(e.column, 14);
    // The first unknown function is the one reported.
    let e = parse_err("NOPE(1) AND OTHER(2)");
    assert_eq!(e.kind, ParseErrorKind::UnknownFunction("NOPE".into()));
}

#[test]
fn functions_are_case_insensitive_and_checked() {
    for src in [
        "length('a') = 1",
        "Concat() = ''",
        "concat_ws(',') = ''",
        "SUBSTRING('abc', 1) = 'abc'",
        "substring('abc', 1, 1) = 'a'",
        "is_bool('true')",
        "Is_Int('1')",
    ] {
        assert_eq!(eval(src), (boolean(true), vec![]), "{src}");
    }
    assert!(parse_err("LEFT('a')").is_missing_function());
    assert!(parse_err("ABS(1, 2)").is_missing_function());
    assert!(parse_err("LOG10(1)").is_missing_function());
}

// ---------------------------------------------------------------------------------------------
// Literals, precedence and associativity

#[test]
fn integer_literal_range() {
    assert_eq!(eval("-2147483648"), (int(i32::MIN), vec![]));
    assert_eq!(eval("2147483647"), (int(i32::MAX), vec![]));
    assert_eq!(eval("- 2147483648"), (int(i32::MIN), vec![]));
    assert_eq!(eval("+5"), (int(5), vec![]));
    assert_eq!(eval("4 +5"), (int(9), vec![]));
    assert_eq!(eval("4 -5"), (int(-1), vec![]));
    assert_eq!(eval("007"), (int(7), vec![]));
    // Parenthesised, the literal is no longer negative: out of range.
    assert!(matches!(
        parse_err("-(2147483648)").kind,
        ParseErrorKind::IntegerOutOfRange(_)
    ));
}

#[test]
fn string_literal_escapes() {
    assert_eq!(eval(r#"'it\'s'"#), (string("it's"), vec![]));
    assert_eq!(eval(r#""say \"hi\"""#), (string("say \"hi\""), vec![]));
    // Only the delimiting quote is escaped; other backslashes stay.
    assert_eq!(eval(r#"'a\"b'"#), (string("a\\\"b"), vec![]));
    assert_eq!(eval(r"'a\nb'"), (string("a\\nb"), vec![]));
    assert_eq!(eval(r"'a\\b'"), (string("a\\\\b"), vec![]));
}

#[test]
fn keywords_and_attributes_are_case_insensitive() {
    assert_eq!(
        eval("SUBJECT = 'b' aNd TyPe LiKe 'com.%'"),
        (boolean(true), vec![])
    );
    assert_eq!(eval("exists MyInt"), (boolean(true), vec![]));
}

#[test]
fn logical_operators_share_one_level_left_to_right() {
    // Spec 3.6: AND, OR and XOR have the same precedence, evaluated left to right.
    // (FALSE AND FALSE) OR TRUE
    assert_eq!(eval("FALSE AND FALSE OR TRUE"), (boolean(true), vec![]));
    // (TRUE OR FALSE) AND FALSE: unlike SQL, where AND binds tighter.
    assert_eq!(eval("TRUE OR FALSE AND FALSE"), (boolean(false), vec![]));
    // (TRUE XOR TRUE) OR TRUE
    assert_eq!(eval("TRUE XOR TRUE OR TRUE"), (boolean(true), vec![]));
}

#[test]
fn comparisons_share_one_level_left_to_right() {
    // (1 < 2) = TRUE
    assert_eq!(eval("1 < 2 = TRUE"), (boolean(true), vec![]));
    // (3 = 3) != FALSE
    assert_eq!(eval("3 = 3 != FALSE"), (boolean(true), vec![]));
}

#[test]
fn unary_operators_bind_tighter_than_binary_ones() {
    // (NOT TRUE) = FALSE
    assert_eq!(eval("NOT TRUE = FALSE"), (boolean(true), vec![]));
    // (NOT subject) LIKE ...: 'b' does not cast to Boolean.
    assert_eq!(
        eval("NOT subject LIKE 'a%'"),
        (boolean(false), vec![EvalErrorKind::Cast])
    );
    assert_eq!(eval("subject NOT LIKE 'a%'"), (boolean(true), vec![]));
    // LIKE binds tighter than arithmetic: 1 + (TRUE LIKE 'tr%') = 2.
    assert_eq!(eval("1 + TRUE LIKE 'tr%'"), (int(2), vec![]));
    assert_eq!(eval("-myint * 2"), (int(-6), vec![]));
    assert_eq!(eval("--myint"), (int(3), vec![]));
}

// ---------------------------------------------------------------------------------------------
// Types, casts and errors

#[test]
fn typed_extensions_keep_their_type() {
    assert_eq!(eval("myint"), (int(3), vec![]));
    assert_eq!(eval("mybool"), (boolean(true), vec![]));
    assert_eq!(eval("myint = 3"), (boolean(true), vec![]));
    assert_eq!(eval("myint + 1"), (int(4), vec![]));
    // The right operand's type picks `=`: myint is cast to String.
    assert_eq!(eval("myint = '3'"), (boolean(true), vec![]));
    assert_eq!(eval("myint = '03'"), (boolean(false), vec![]));
    assert_eq!(eval("mybool = 'TRUE'"), (boolean(false), vec![]));
    assert_eq!(eval("'TRUE' = mybool"), (boolean(true), vec![]));
    // A string extension holding digits compares as an Integer against one.
    assert_eq!(eval("mystr = 10 AND mystr > 9"), (boolean(true), vec![]));
}

#[test]
fn event_attribute_kinds() {
    let v03 = event(
        r#"{"specversion":"0.3","id":"e1","source":"/s","type":"t","schemaurl":"/schema",
            "datacontentencoding":"base64"}"#,
    );
    let check = |src: &str, ev: &CloudEvent, expected: Value<'static>| {
        let expression = Expression::parse(src).expect("valid");
        let (value, errors) = expression.eval(ev);
        assert_eq!((value, errors.len()), (expected, 0), "{src}");
    };
    check("specversion", &v03, string("0.3"));
    check("schemaurl", &v03, string("/schema"));
    check("datacontentencoding", &v03, string("base64"));
    check("EXISTS dataschema", &v03, boolean(false));
    let v1 = event(
        r#"{"specversion":"1.0","id":"e1","source":"/s","type":"t",
            "dataschema":"https://example.com/s","schemaurl":"ext"}"#,
    );
    check("dataschema", &v1, string("https://example.com/s"));
    check("schemaurl", &v1, string("ext"));
    check("specversion = '1.0'", &v1, boolean(true));
    check("EXISTS data", &v1, boolean(false));
}

#[test]
fn integer_overflow_is_a_math_error() {
    let math = vec![EvalErrorKind::Math];
    assert_eq!(eval("2147483647 + 1"), (int(i32::MAX), math.clone()));
    assert_eq!(eval("-2147483648 - 1"), (int(i32::MIN), math.clone()));
    assert_eq!(eval("65536 * 65536"), (int(i32::MAX), math.clone()));
    assert_eq!(eval("-2147483648 / -1"), (int(i32::MAX), math.clone()));
    assert_eq!(eval("-(-2147483648)"), (int(i32::MAX), math.clone()));
    assert_eq!(eval("ABS(-2147483648)"), (int(i32::MAX), math));
    // Exact, no overflow.
    assert_eq!(eval("-2147483648 % -1"), (int(0), vec![]));
    assert_eq!(eval("-5 / 3"), (int(-1), vec![]));
    assert_eq!(eval("-5 % 3"), (int(-2), vec![]));
    assert_eq!(eval("5 % -3"), (int(2), vec![]));
}

#[test]
fn failed_operands_give_the_parent_its_zero_value() {
    let missing = EvalErrorKind::MissingAttribute;
    // Missing attribute wins over the math error: the division never runs.
    assert_eq!(eval("missing / 0"), (int(0), vec![missing]));
    assert_eq!(eval("LENGTH(missing)"), (int(0), vec![missing]));
    assert_eq!(eval("CONCAT('a', missing)"), (string(""), vec![missing]));
    assert_eq!(eval("UPPER(missing)"), (string(""), vec![missing]));
    assert_eq!(eval("NOT missing"), (boolean(false), vec![missing]));
    assert_eq!(eval("missing != 1"), (boolean(false), vec![missing]));
    assert_eq!(eval("missing NOT IN (1)"), (boolean(false), vec![missing]));
    // Errors accumulate, in evaluation order.
    assert_eq!(
        eval("(missing + 'x') + (1 / 0)"),
        (int(0), vec![missing, EvalErrorKind::Math])
    );
    assert_eq!(
        eval("'abc' + 'def'"),
        (int(0), vec![EvalErrorKind::Cast, EvalErrorKind::Cast])
    );
    assert_eq!(
        eval("'abc' < 'abd'"),
        (boolean(false), vec![EvalErrorKind::Cast; 2])
    );
    // A failed operand leaves the node without running: no cast error for the other one.
    assert_eq!(eval("missing + 'x'"), (int(0), vec![missing]));
    assert_eq!(eval("'x' + missing"), (int(0), vec![missing]));
    assert_eq!(eval("missing IN ('x', 1)"), (boolean(false), vec![missing]));
    assert_eq!(eval("1 IN ('x', missing)"), (boolean(false), vec![missing]));
    assert_eq!(
        eval("1 IN ('x', 'y', 1)"),
        (boolean(false), vec![EvalErrorKind::Cast; 2])
    );
    assert_eq!(
        eval("SUBSTRING('abc', 'x', 'y')"),
        (string(""), vec![EvalErrorKind::Cast; 2])
    );
}

#[test]
fn short_circuits() {
    let missing = EvalErrorKind::MissingAttribute;
    assert_eq!(eval("FALSE AND missing"), (boolean(false), vec![]));
    assert_eq!(eval("TRUE OR missing"), (boolean(true), vec![]));
    // A failed left operand decides the result (false): neither evaluates its right operand.
    assert_eq!(eval("missing AND TRUE"), (boolean(false), vec![missing]));
    assert_eq!(eval("missing OR TRUE"), (boolean(false), vec![missing]));
    assert_eq!(eval("missing OR other"), (boolean(false), vec![missing]));
    // XOR does not short-circuit.
    assert_eq!(
        eval("missing XOR other"),
        (boolean(false), vec![missing, missing])
    );
    // Operands are cast to Boolean.
    assert_eq!(eval("1 AND 'true'"), (boolean(true), vec![]));
    assert_eq!(
        eval("'yes' OR TRUE"),
        (boolean(false), vec![EvalErrorKind::Cast])
    );
}

#[test]
fn in_sets() {
    assert_eq!(eval("subject IN ('a', 'b')"), (boolean(true), vec![]));
    assert_eq!(eval("myint IN ('3', 4)"), (boolean(true), vec![]));
    assert_eq!(eval("myint NOT IN (1, 2)"), (boolean(true), vec![]));
    // Every element is evaluated: a failing one makes the result false even after a match.
    assert_eq!(
        eval("subject IN ('b', missing)"),
        (boolean(false), vec![EvalErrorKind::MissingAttribute])
    );
    assert_eq!(
        eval("myint IN ('x', 3)"),
        (boolean(false), vec![EvalErrorKind::Cast])
    );
    assert_eq!(eval("TRUE IN (1)"), (boolean(true), vec![]));
    assert_eq!(eval("(1 + 1) IN (2, 3)"), (boolean(true), vec![]));
}

#[test]
fn like_patterns() {
    for (src, expected) in [
        ("type LIKE 'com.example.%'", true),
        ("type LIKE '%.created'", true),
        ("type LIKE '%example%'", true),
        ("type LIKE 'com._xample.%d'", true),
        ("type LIKE 'COM.%'", false),
        ("myint LIKE '3'", true),
        ("empty LIKE ''", true),
        ("empty LIKE '%'", true),
        ("empty LIKE '_'", false),
        ("'é' LIKE '_'", true),
        ("'100%' LIKE '%\\%'", true),
        ("'100' LIKE '%\\%'", false),
    ] {
        assert_eq!(eval(src), (boolean(expected), vec![]), "{src}");
    }
}

#[test]
fn string_functions_on_unicode() {
    assert_eq!(eval("LENGTH('héllo')"), (int(5), vec![]));
    assert_eq!(eval("UPPER('straße')"), (string("STRASSE"), vec![]));
    assert_eq!(eval("LOWER('ÀB')"), (string("àb"), vec![]));
    assert_eq!(eval("LEFT('héllo', 2)"), (string("hé"), vec![]));
    assert_eq!(eval("RIGHT('héllo', 4)"), (string("éllo"), vec![]));
    assert_eq!(eval("SUBSTRING('héllo', -4, 2)"), (string("él"), vec![]));
    assert_eq!(eval("TRIM('\u{2003} a\t\n')"), (string("a"), vec![]));
    assert_eq!(
        eval("CONCAT_WS('-', 1, TRUE, 'x')"),
        (string("1-true-x"), vec![])
    );
    assert_eq!(
        eval("LEFT('abc', 'x')"),
        (string(""), vec![EvalErrorKind::Cast])
    );
    assert_eq!(
        eval("SUBSTRING('abc', 1, -1)"),
        (string(""), vec![EvalErrorKind::FunctionEvaluation])
    );
}

#[test]
fn casting_functions() {
    assert_eq!(eval("INT(mystr) + 1"), (int(11), vec![]));
    assert_eq!(eval("INT('+7')"), (int(7), vec![]));
    assert_eq!(eval("INT(' 7')"), (int(0), vec![EvalErrorKind::Cast]));
    assert_eq!(eval("BOOL('True')"), (boolean(true), vec![]));
    assert_eq!(eval("STRING(-2147483648)"), (string("-2147483648"), vec![]));
    assert_eq!(
        eval("IS_INT('12') AND NOT IS_INT('1.5')"),
        (boolean(true), vec![])
    );
    assert_eq!(
        eval("IS_BOOL('FALSE') AND NOT IS_BOOL('no')"),
        (boolean(true), vec![])
    );
    // Any Integer or Boolean casts to the other, so these are true.
    assert_eq!(eval("IS_BOOL(5) AND IS_INT(TRUE)"), (boolean(true), vec![]));
}

#[test]
fn missing_attribute_message_names_the_attribute() {
    let expression = Expression::parse("type = 'x' OR myext = 'y'").expect("valid");
    let event = sample();
    let (_, errors) = expression.eval(&event);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "missing attribute: the event has no attribute `myext`"
    );
    assert_eq!(expression.text(errors[0].span), "myext");
}

// ---------------------------------------------------------------------------------------------
// Evaluation borrows

#[test]
fn values_borrow_from_the_event_and_the_expression() {
    let event = sample();
    for src in [
        "subject",
        "'literal'",
        "LOWER(type)",
        "TRIM(subject)",
        "LEFT(type, 3)",
        "SUBSTRING(type, 5)",
        "CONCAT(subject)",
        "STRING(TRUE)",
    ] {
        let expression = Expression::parse(src).expect("valid");
        let (value, errors) = expression.eval(&event);
        assert!(errors.is_empty());
        assert!(
            matches!(value, Value::String(Cow::Borrowed(_))),
            "{src} gave {value:?}"
        );
    }
}

#[test]
fn matches_is_true_only_for_boolean_true_without_errors() {
    let event = sample();
    let cases = [
        ("type = 'com.example.created'", true),
        ("TRUE", true),
        ("mybool", true),
        ("1", false),
        ("'true'", false),
        ("subject", false),
        ("TRUE OR missing", true),
        ("missing OR TRUE", false),
        ("1 / 0 = 0", false),
    ];
    for (src, expected) in cases {
        let expression = Expression::parse(src).expect("valid");
        assert_eq!(expression.matches(&event), expected, "{src}");
    }
}

// ---------------------------------------------------------------------------------------------
// Nesting limits

fn nested_parens(depth: usize) -> String {
    format!("{}TRUE{}", "(".repeat(depth), ")".repeat(depth))
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let too_deep = ParseErrorKind::TooDeep(MAX_NESTING);
    let n = MAX_NESTING + 1;
    assert_eq!(parse_err(&nested_parens(n)).kind, too_deep);
    assert_eq!(
        parse_err(&format!("{}TRUE", "NOT ".repeat(n))).kind,
        too_deep
    );
    assert_eq!(parse_err(&format!("{}'1'", "-".repeat(n))).kind, too_deep);
    let calls = format!("{}1{}", "ABS(".repeat(n), ")".repeat(n));
    assert_eq!(parse_err(&calls).kind, too_deep);
    let sets = format!("{}1{}", "1 IN (".repeat(n), ")".repeat(n));
    assert_eq!(parse_err(&sets).kind, too_deep);
    // Far beyond the limit, still an error rather than a stack overflow.
    assert_eq!(parse_err(&nested_parens(100_000)).kind, too_deep);

    let chain = vec!["myint = 1"; MAX_DEPTH + 1].join(" OR ");
    let e = parse_err(&chain);
    assert_eq!(e.kind, ParseErrorKind::TooComplex(MAX_DEPTH));
    assert!(
        e.to_string().contains("IN takes a long list of values"),
        "{e}"
    );
    let e = parse_err(&vec!["1"; 100_000].join(" + "));
    assert_eq!(e.kind, ParseErrorKind::TooComplex(MAX_DEPTH));
}

#[test]
fn deep_but_allowed_expressions_evaluate_on_a_small_stack() {
    // Test threads have 2 MiB of stack (as have Tokio's workers); use 1 MiB to keep a margin
    // in this unoptimised build.
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let event = sample();
            let n = MAX_NESTING;
            let sources = [
                nested_parens(n),
                format!("{}TRUE", "NOT NOT ".repeat(n / 2)),
                format!("{}1{}", "ABS(".repeat(n), ")".repeat(n)),
                format!("{}1{}", "1 IN (".repeat(n), ")".repeat(n)),
                vec!["myint = 0"; MAX_DEPTH - 2].join(" OR ") + " OR myint = 3",
                vec!["1"; MAX_DEPTH - 2].join(" + ") + " > 0",
            ];
            for src in &sources {
                let expression = Expression::parse(src).expect("within the limits");
                let (value, errors) = expression.eval(&event);
                assert!(errors.is_empty());
                assert!(value.is_true() || value == Value::Integer(1), "{value}");
                let _ = expression.explain(&event).to_string();
            }
        })
        .expect("a thread");
    handle.join().expect("no stack overflow");
}

// ---------------------------------------------------------------------------------------------
// Explanations

#[test]
fn explain_names_the_false_sub_expressions() {
    let expression =
        Expression::parse("type LIKE 'com.example.%' AND (subject = 'a' OR myint > 10)")
            .expect("valid");
    let explanation = expression.explain(&sample());
    assert!(!explanation.matched);
    assert_eq!(explanation.value, Value::Boolean(false));
    assert!(explanation.errors.is_empty());
    let causes: Vec<(usize, &str, &str)> = explanation
        .causes
        .iter()
        .map(|c| (c.column, c.text.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        causes,
        [
            (32, "subject = 'a'", "is false: `subject` is 'b'"),
            (49, "myint > 10", "is false: `myint` is 3"),
        ]
    );
    assert_eq!(
        explanation.to_string(),
        "no match: the expression is false\n  \
         - column 32: `subject = 'a'` is false: `subject` is 'b'\n  \
         - column 49: `myint > 10` is false: `myint` is 3"
    );
}

#[test]
fn explain_blames_the_first_false_operand_of_and() {
    let expression = Expression::parse("type LIKE 'org.%' AND subject = 'b'").expect("valid");
    let explanation = expression.explain(&sample());
    assert_eq!(explanation.causes.len(), 1);
    assert_eq!(explanation.causes[0].text, "type LIKE 'org.%'");
    assert_eq!(
        explanation.causes[0].reason,
        "is false: `type` is 'com.example.created'"
    );
}

#[test]
fn explain_reports_errors_where_they_happened() {
    let expression =
        Expression::parse("type = 'com.example.created' AND\n  myext = 'x'").expect("valid");
    let explanation = expression.explain(&sample());
    assert!(!explanation.matched);
    assert_eq!(explanation.errors.len(), 1);
    assert_eq!(
        explanation.to_string(),
        "no match: evaluation raised an error\n  \
         - line 2, column 3: `myext` failed: missing attribute: the event has no attribute `myext`"
    );
}

#[test]
fn explain_other_shapes() {
    let event = sample();
    let explain = |src: &str| {
        Expression::parse(src)
            .expect("valid")
            .explain(&event)
            .to_string()
    };
    assert_eq!(explain("subject = 'b'"), "match: the expression is true");
    assert_eq!(
        explain("myint + 1"),
        "no match: the expression yields the Integer 4, not a Boolean\n  \
         - column 1: `myint + 1` yields the Integer 4, not a Boolean"
    );
    assert_eq!(
        explain("NOT EXISTS subject"),
        "no match: the expression is false\n  \
         - column 1: `NOT EXISTS subject` is false: `EXISTS subject` is true"
    );
    assert_eq!(
        explain("EXISTS dataschema OR myint IN (1, 2, mystr)"),
        "no match: the expression is false\n  \
         - column 1: `EXISTS dataschema` is false: the event has no attribute `dataschema`\n  \
         - column 22: `myint IN (1, 2, mystr)` is false: `myint` is 3, `mystr` is '10'"
    );
    assert_eq!(
        explain("(myint - 3)"),
        "no match: the expression yields the Integer 0, not a Boolean\n  \
         - column 1: `(myint - 3)` yields the Integer 0, not a Boolean"
    );
    assert_eq!(
        explain("mybool AND (myint - 3)"),
        "no match: the expression is false\n  \
         - column 12: `(myint - 3)` is 0 (false as a Boolean): `myint` is 3"
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness: no input panics the parser, the evaluator or explain.

const TOKENS: &[&str] = &[
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "AND",
    "OR",
    "XOR",
    "NOT",
    "LIKE",
    "IN",
    "EXISTS",
    "TRUE",
    "false",
    "0",
    "1",
    "-1",
    "2147483647",
    "2147483648",
    "'a%b_c'",
    "'\\%'",
    "\"x\"",
    "''",
    "'",
    "subject",
    "myint",
    "mybool",
    "missing",
    "type",
    "LENGTH",
    "CONCAT",
    "CONCAT_WS",
    "SUBSTRING",
    "ABS",
    "INT",
    "BOOL",
    "LEFT",
    "NOPE",
    "my_ext",
    "é",
    "!",
    "\\",
];

fn check_no_panic(src: &str) {
    if let Ok(expression) = Expression::parse(src) {
        let event = sample();
        let (value, errors) = expression.eval(&event);
        assert_eq!(
            expression.matches(&event),
            value.is_true() && errors.is_empty()
        );
        let explanation = expression.explain(&event);
        assert_eq!(explanation.matched, expression.matches(&event));
        let _ = explanation.to_string();
    }
}

proptest! {
    #[test]
    fn random_token_sequences_never_panic(
        tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..24)
    ) {
        check_no_panic(&tokens.join(" "));
        check_no_panic(&tokens.concat());
    }

    #[test]
    fn random_text_never_panics(src in "[a-zA-Z0-9_ '\"\\\\()%,=<>!+*/é-]{0,40}") {
        check_no_panic(&src);
    }
}

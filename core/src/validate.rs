//! Validation of attribute names and values (CloudEvents 1.0 type system, section "Type System").

use crate::error::EventError;

/// Extension names: 1 to 20 characters of `a-z` and `0-9`, and never `data`.
pub fn extension_name(name: &str) -> Result<(), EventError> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        return Err(EventError::InvalidAttributeName(name.to_owned()));
    }
    if name == "data" {
        return Err(EventError::invalid(name, "is reserved for the event data"));
    }
    Ok(())
}

/// A String value: no control characters (U+0000–U+001F, U+007F–U+009F).
pub fn string_value(name: &str, value: &str) -> Result<(), EventError> {
    if let Some(c) = value
        .chars()
        .find(|c| matches!(*c as u32, 0x00..=0x1F | 0x7F..=0x9F))
    {
        return Err(EventError::invalid(
            name,
            format!(
                "contains the control character U+{:04X}, which is not allowed",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// A non-empty String.
pub fn non_empty_string(name: &str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::invalid(name, "must not be empty"));
    }
    string_value(name, value)
}

/// A media type as RFC 2046 shapes it: `type/subtype` with optional parameters.
pub fn media_type(name: &str, value: &str) -> Result<(), EventError> {
    non_empty_string(name, value)?;
    let essence = value.split(';').next().unwrap_or("").trim();
    let mut parts = essence.splitn(2, '/');
    let (ty, sub) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-*'%`|~".contains(&b))
    };
    if !token(ty) || !token(sub) {
        return Err(EventError::invalid(
            name,
            "must be a media type such as `application/json`",
        ));
    }
    Ok(())
}

fn uri_scheme(value: &str) -> Option<&str> {
    let end = value.find([':', '/', '?', '#'])?;
    if value.as_bytes()[end] != b':' {
        return None;
    }
    Some(&value[..end])
}

fn valid_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Characters RFC 3986 allows in a URI, plus `%` escapes checked separately. Non-ASCII
/// characters are tolerated (IRIs are common in the wild and harmless to pass through).
fn uri_chars(name: &str, value: &str) -> Result<(), EventError> {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(EventError::invalid(
                        name,
                        "has a `%` that is not followed by two hex digits",
                    ));
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() => {}
            b if b"-._~:/?#[]@!$&'()*+,;=".contains(&b) => {}
            b if b >= 0x80 => {}
            other => {
                return Err(EventError::invalid(
                    name,
                    format!(
                        "must be a URI-reference (RFC 3986); the character {:?} is not allowed",
                        other as char
                    ),
                ));
            }
        }
        i += 1;
    }
    Ok(())
}

/// A URI-reference (RFC 3986 section 4.1): a URI or a relative reference.
pub fn uri_reference(name: &str, value: &str) -> Result<(), EventError> {
    string_value(name, value)?;
    uri_chars(name, value)?;
    if let Some(scheme) = uri_scheme(value) {
        // `a:b` with an invalid scheme could still be a relative path only if the colon is
        // after a slash, which uri_scheme already excludes; so the scheme must be valid.
        if !valid_scheme(scheme) {
            return Err(EventError::invalid(
                name,
                format!("has an invalid URI scheme `{scheme}`"),
            ));
        }
    }
    Ok(())
}

/// An absolute URI (RFC 3986 section 4.3): a scheme is required.
pub fn absolute_uri(name: &str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::invalid(name, "must not be empty"));
    }
    uri_reference(name, value)?;
    if uri_scheme(value).is_none() {
        return Err(EventError::invalid(
            name,
            "must be an absolute URI with a scheme, such as `https://example.com/schema`",
        ));
    }
    Ok(())
}

/// An RFC 3339 timestamp (`date-time` production), validated strictly but kept as received.
pub fn timestamp(name: &str, value: &str) -> Result<(), EventError> {
    if is_rfc3339(value) {
        Ok(())
    } else {
        Err(EventError::invalid(
            name,
            format!("must be an RFC 3339 timestamp such as `2018-04-05T17:31:00Z`, not `{value}`"),
        ))
    }
}

/// Strict RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`, `T` and `Z`
/// in either case, with calendar and clock ranges checked (leap second 60 allowed).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let part = b.get(from..from + n)?;
        part.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day)) = (digits(0, 4), digits(5, 2), digits(8, 2)) else {
        return false;
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days_in_month {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11, 2), digits(14, 2), digits(17, 2))
    else {
        return false;
    };
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return false;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            let (Some(oh), Some(om)) = (digits(i + 1, 2), digits(i + 4, 2)) else {
                return false;
            };
            b.get(i + 3) == Some(&b':') && oh <= 23 && om <= 59 && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_accepts_the_spec_forms_and_rejects_the_rest() {
        for ok in [
            "2018-04-05T17:31:00Z",
            "2018-04-05t17:31:00z",
            "2018-04-05T17:31:00.123456789+02:00",
            "2020-02-29T23:59:60-00:00",
            "1985-04-12T23:20:50.52Z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2018-04-05",
            "2018-04-05 17:31:00Z",
            "2018-04-05T17:31:00",
            "2019-02-29T00:00:00Z",
            "2018-13-05T17:31:00Z",
            "2018-04-31T17:31:00Z",
            "2018-04-05T24:00:00Z",
            "2018-04-05T17:31:00.Z",
            "2018-04-05T17:31:00+0200",
            "2018-04-05T17:31:00Z ",
            "２018-04-05T17:31:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn uri_reference_rules() {
        for ok in [
            "https://example.com/a?b#c",
            "/relative/path",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "a%20b",
            "#frag",
        ] {
            assert!(uri_reference("source", ok).is_ok(), "{ok}");
        }
        for bad in ["a b", "1http://x", "a%2", "x\"y", "tab\there"] {
            assert!(uri_reference("source", bad).is_err(), "{bad}");
        }
        assert!(absolute_uri("dataschema", "/no/scheme").is_err());
        assert!(absolute_uri("dataschema", "https://x/y").is_ok());
    }

    #[test]
    fn extension_names() {
        assert!(extension_name("abc123").is_ok());
        assert!(extension_name("a23456789012345678901").is_err());
        assert!(extension_name("Abc").is_err());
        assert!(extension_name("a_b").is_err());
        assert!(extension_name("").is_err());
        assert!(extension_name("data").is_err());
    }
}

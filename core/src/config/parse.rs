//! One document → a resource (with the fields it ignores), a skipped document, or a
//! refusal that names the file, the resource and the field.

use serde::Deserialize;

use super::{ConfigError, SERVER_METADATA};
use crate::kinds::Resource;
use std::fmt;

pub(super) fn describe(value: &serde_json::Value, index: usize) -> String {
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("resource");
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|v| v.as_str())
        .unwrap_or(crate::resources::DEFAULT_NAMESPACE);
    if name == "?" {
        format!("{kind} (document {})", index + 1)
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Parses one resource from a generic value (a YAML/JSON document or an API body).
pub fn parse_resource(
    value: serde_json::Value,
    file: &str,
    index: usize,
) -> Result<Parsed, ConfigError> {
    let resource = describe(&value, index);
    let err = |field: Option<String>, message: String| ConfigError {
        file: file.to_owned(),
        resource: Some(resource.clone()),
        field,
        message,
    };
    let Some(obj) = value.as_object() else {
        return Err(err(
            None,
            "a resource must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let api = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api.is_empty() || kind.is_empty() {
        return Err(err(None, "`apiVersion` and `kind` are required".into()));
    }
    let mut body = obj.clone();
    body.remove("apiVersion");
    body.remove("kind");
    let supported = Resource::KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(a, _)| *a);
    let ignore = |field: Option<String>, why: String| Ignored {
        file: file.to_owned(),
        resource: resource.clone(),
        field,
        why,
    };
    let (api, ignored) = match crate::compat::prepare(api, kind, supported, &mut body) {
        crate::compat::Prepared::Keep {
            api_version,
            ignored,
        } => (
            api_version,
            ignored
                .into_iter()
                .map(|(field, why)| ignore(Some(field), why))
                .collect::<Vec<_>>(),
        ),
        crate::compat::Prepared::Skip(why) => return Ok(Parsed::Skipped(ignore(None, why))),
        crate::compat::Prepared::Refuse(why) => return Err(err(Some("kind".into()), why)),
        crate::compat::Prepared::Unknown => (api, Vec::new()),
    };
    if !Resource::KINDS.contains(&(api, kind)) {
        let supported: Vec<String> = Resource::KINDS
            .iter()
            .map(|(a, k)| format!("{a} {k}"))
            .collect();
        let same_kind = Resource::KINDS.iter().find(|(_, k)| *k == kind);
        let message = match same_kind {
            Some((a, _)) => {
                format!("apiVersion `{api}` is not supported for kind {kind}; use `{a}`")
            }
            None => format!(
                "kind `{kind}` ({api}) is not supported; supported kinds: {}",
                supported.join(", ")
            ),
        };
        return Err(err(Some("kind".into()), message));
    }
    // `status` and the server-populated metadata are written by a control plane; manifests
    // exported with `kubectl get -o yaml` carry them, and they mean nothing here.
    body.remove("status");
    if let Some(serde_json::Value::Object(meta)) = body.get_mut("metadata") {
        for field in SERVER_METADATA {
            meta.remove(*field);
        }
    }
    let body = serde_json::Value::Object(body);
    let parsed = Resource::parse(kind, body);
    let resource_value = parsed.map_err(|(path, message)| {
        err((!path.is_empty() && path != ".").then_some(path), message)
    })?;
    resource_value
        .validate()
        .map_err(|e| err(Some(e.field), e.message))?;
    Ok(Parsed::Resource(resource_value, ignored))
}

/// What one document came to.
// Like `Resource`: few and short-lived (config loading); boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A resource, with the fields it ignored.
    Resource(Resource, Vec<Ignored>),
    /// A document Switchyard does not run (a Deployment, a Knative Service): skipped.
    Skipped(Ignored),
}

/// A document or a field that loaded without effect, and why (docs/knative-compatibility.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The file.
    pub file: String,
    /// `Kind namespace/name` (or `Kind (document N)`).
    pub resource: String,
    /// The field, when a field is ignored rather than the whole document.
    pub field: Option<String>,
    /// Why it means nothing here.
    pub why: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.resource)?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": ignored: {}", self.why)
    }
}

/// Parses the documents of one file's text, leaving out what is ignored
/// ([`parse_documents`] says what). `name` is used in errors.
pub fn parse_text(text: &str, name: &str) -> Result<Vec<Resource>, ConfigError> {
    Ok(parse_documents(text, name)?
        .into_iter()
        .filter_map(|p| match p {
            Parsed::Resource(r, _) => Some(r),
            Parsed::Skipped(_) => None,
        })
        .collect())
}

/// Parses the documents of one file's text. `name` is used in errors; a `.json` name is read
/// as JSON (one resource, or an array of them), anything else as YAML.
pub fn parse_documents(text: &str, name: &str) -> Result<Vec<Parsed>, ConfigError> {
    split_documents(text, name)?
        .into_iter()
        .map(|(i, v)| parse_resource(v, name, i))
        .collect()
}

/// The documents of a file's text, each with its index (empty YAML documents left out): a
/// `.json` name is one resource or an array of them, anything else YAML. A syntax error is
/// the file's: what follows it cannot be split reliably.
pub(super) fn split_documents(
    text: &str,
    name: &str,
) -> Result<Vec<(usize, serde_json::Value)>, ConfigError> {
    let file_err = |message: String| ConfigError {
        file: name.to_owned(),
        resource: None,
        field: None,
        message,
    };
    let mut values = Vec::new();
    if name.ends_with(".json") {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| file_err(format!("invalid JSON: {e}")))?;
        match v {
            serde_json::Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    } else {
        check_flow_depth(text).map_err(file_err)?;
        for doc in serde_norway::Deserializer::from_str(text) {
            let v = serde_json::Value::deserialize(doc)
                .map_err(|e| file_err(format!("invalid YAML: {e}")))?;
            values.push(v);
        }
    }
    Ok(values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .collect())
}

/// The deepest nesting of YAML flow collections (`[ ]`, `{ }`) a configuration may have.
/// libyaml's scanner, which serde_norway's parser is a translation of, rescans its stack of
/// possible keys for every token, so deeply nested flow collections take time quadratic in
/// their depth: fuzzing found files of 16–34 KiB nested some 20,000 levels deep that took up
/// to a second to refuse. No manifest needs more than a few levels.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Brackets open at once, counting every one (in quotes and comments too), past which text is
/// refused whatever [`check_flow_depth`]'s reading of its quotes: the backstop for text that
/// reads as quoted to that rough scan but not to YAML. The scanner's time at this depth is
/// milliseconds.
pub const MAX_OPEN_BRACKETS: usize = 1024;

/// Refuses YAML text whose flow collections nest deeper than [`MAX_FLOW_DEPTH`], before the
/// parser sees it. A rough scan: quoted scalars (a quote where a scalar can begin: after
/// white space, `[`, `{` or `,`) and comments are skipped, and a bracket inside a plain
/// scalar counts too. Where it could take text for quoted that YAML does not (`it's`
/// after a space), the count of every bracket, [`MAX_OPEN_BRACKETS`], still holds.
fn check_flow_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut previous = '\n';
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n' && c != '\r';
        } else if let Some(q) = quote {
            if q == '"' && c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '#' if previous.is_whitespace() => comment = true,
                '\'' | '"' if previous.is_whitespace() || matches!(previous, '[' | '{' | ',') => {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "invalid YAML: flow collections ([ ], {{ }}) nest deeper than \
                             {MAX_FLOW_DEPTH} levels"
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = c;
    }
    let mut open = 0usize;
    for c in text.chars() {
        match c {
            '[' | '{' => {
                open += 1;
                if open > MAX_OPEN_BRACKETS {
                    return Err(format!(
                        "invalid YAML: more than {MAX_OPEN_BRACKETS} brackets ([, {{) open at \
                         once, counting those in quotes and comments"
                    ));
                }
            }
            ']' | '}' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn nested(levels: usize) -> String {
        format!("a: {}1{}\n", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn flow_collections_nested_deeper_than_the_limit_are_refused_before_parsing() {
        assert!(check_flow_depth(&nested(MAX_FLOW_DEPTH)).is_ok());
        let err = check_flow_depth(&nested(MAX_FLOW_DEPTH + 1)).unwrap_err();
        assert!(err.contains("nest deeper than 64"), "{err}");
        // What the fuzzer found: 20,000 levels took the parser up to a second.
        let err = split_documents(&nested(20_000), "deep.yaml").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: flow"), "{err}");
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        let text = format!(
            "a: '{0}'\nb: \"{0}\\\"{0}\"\n# {0}\nc: x # {0}\rd: [1]\n",
            "[".repeat(100)
        );
        assert!(check_flow_depth(&text).is_ok());
        // A line break ends a comment, a carriage return too.
        assert!(check_flow_depth(&format!("# x\r{}", "[".repeat(100))).is_err());
    }

    #[test]
    fn a_quote_inside_a_plain_scalar_does_not_hide_brackets() {
        // What the fuzzer found: `ree"try` read as the start of a quoted scalar hid 17,885
        // levels from the count, and the scanner took seconds over them.
        let text = format!("a: ree\"try\nb: {}\n", "{".repeat(100));
        let err = check_flow_depth(&text).unwrap_err();
        assert!(err.contains("nest deeper than 64"), "{err}");
        // Quotes where a scalar begins still hide what they hold.
        let text = format!("a: [\"{0}\", '{0}',\"{0}\"]\n", "[".repeat(100));
        assert!(check_flow_depth(&text).is_ok());
    }

    #[test]
    fn more_brackets_open_than_the_backstop_are_refused_even_in_quotes() {
        let within = format!("a: '{}'\n", "[".repeat(MAX_OPEN_BRACKETS));
        assert!(check_flow_depth(&within).is_ok());
        // A plain scalar that YAML would read as it is: `it's` after a space is no quote.
        let past = format!("a: it 's {}\n", "[".repeat(MAX_OPEN_BRACKETS + 1));
        let err = check_flow_depth(&past).unwrap_err();
        assert!(err.contains("more than 1024 brackets"), "{err}");
    }
}

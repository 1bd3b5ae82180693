//! Trigger filters, compiled once from the resource and evaluated per event without
//! allocating in the common cases, and the per-broker index that keeps the cost of matching
//! flat in the number of triggers whose exact `type` or `source` does not fit the event.

use std::borrow::Cow;
use std::collections::HashMap;

use switchyard_core::resources::{SubscriptionsApiFilter, TriggerSpec};
use switchyard_core::{CloudEvent, ExtValue};

/// An attribute a filter reads, resolved at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// `specversion`.
    SpecVersion,
    /// `id`.
    Id,
    /// `source`.
    Source,
    /// `type`.
    Type,
    /// `subject`.
    Subject,
    /// `datacontenttype`.
    DataContentType,
    /// `dataschema` (`schemaurl` in 0.3).
    DataSchema,
    /// `time`.
    Time,
    /// An extension.
    Ext(String),
}

impl Attr {
    /// Resolves an attribute name.
    pub fn new(name: &str) -> Attr {
        match name {
            "specversion" => Attr::SpecVersion,
            "id" => Attr::Id,
            "source" => Attr::Source,
            "type" => Attr::Type,
            "subject" => Attr::Subject,
            "datacontenttype" => Attr::DataContentType,
            "dataschema" | "schemaurl" => Attr::DataSchema,
            "time" => Attr::Time,
            other => Attr::Ext(other.to_owned()),
        }
    }

    /// The attribute's name.
    pub fn name(&self) -> &str {
        match self {
            Attr::SpecVersion => "specversion",
            Attr::Id => "id",
            Attr::Source => "source",
            Attr::Type => "type",
            Attr::Subject => "subject",
            Attr::DataContentType => "datacontenttype",
            Attr::DataSchema => "dataschema",
            Attr::Time => "time",
            Attr::Ext(name) => name,
        }
    }

    /// The attribute's value in canonical string form; borrowed except for integer and
    /// boolean extensions.
    pub fn get<'a>(&self, e: &'a CloudEvent) -> Option<Cow<'a, str>> {
        let borrowed = |s: &'a String| Some(Cow::Borrowed(s.as_str()));
        match self {
            Attr::SpecVersion => Some(Cow::Borrowed(e.specversion.as_str())),
            Attr::Id => borrowed(&e.id),
            Attr::Source => borrowed(&e.source),
            Attr::Type => borrowed(&e.ty),
            Attr::Subject => e.subject.as_ref().and_then(borrowed),
            Attr::DataContentType => e.datacontenttype.as_ref().and_then(borrowed),
            Attr::DataSchema => e.dataschema.as_ref().and_then(borrowed),
            Attr::Time => e.time.as_ref().and_then(borrowed),
            Attr::Ext(name) => match e.extensions.get(name)? {
                ExtValue::String(s)
                | ExtValue::Uri(s)
                | ExtValue::UriRef(s)
                | ExtValue::Timestamp(s) => Some(Cow::Borrowed(s.as_str())),
                other => Some(Cow::Owned(other.to_canonical_string())),
            },
        }
    }
}

/// A compiled filter.
#[derive(Debug)]
pub enum Filter {
    /// Matches every event (no filter given).
    True,
    /// The attribute equals the value.
    Exact(Attr, String),
    /// The attribute starts with the value.
    Prefix(Attr, String),
    /// The attribute ends with the value.
    Suffix(Attr, String),
    /// The attribute is present and not empty (legacy `filter.attributes` with `""`).
    NonEmpty(Attr),
    /// Every nested filter matches.
    All(Vec<Filter>),
    /// At least one nested filter matches.
    Any(Vec<Filter>),
    /// The nested filter does not match.
    Not(Box<Filter>),
    /// A CESQL expression.
    Cesql(Box<crate::cesql::Expression>),
}

/// A filter that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    /// The field of the Trigger, such as `spec.filters[0].cesql`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn map_filter(
    dialect: fn(Attr, String) -> Filter,
    m: &std::collections::BTreeMap<String, String>,
) -> Filter {
    let mut terms: Vec<Filter> = m
        .iter()
        .map(|(k, v)| dialect(Attr::new(k), v.clone()))
        .collect();
    if terms.len() == 1 {
        terms.pop().unwrap_or(Filter::True)
    } else {
        Filter::All(terms)
    }
}

fn compile_one(f: &SubscriptionsApiFilter, field: &str) -> Result<Filter, FilterError> {
    Ok(match f {
        SubscriptionsApiFilter::Exact(m) => map_filter(Filter::Exact, m),
        SubscriptionsApiFilter::Prefix(m) => map_filter(Filter::Prefix, m),
        SubscriptionsApiFilter::Suffix(m) => map_filter(Filter::Suffix, m),
        SubscriptionsApiFilter::All(v) => Filter::All(
            v.iter()
                .enumerate()
                .map(|(i, f)| compile_one(f, &format!("{field}.all[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        SubscriptionsApiFilter::Any(v) => Filter::Any(
            v.iter()
                .enumerate()
                .map(|(i, f)| compile_one(f, &format!("{field}.any[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        SubscriptionsApiFilter::Not(f) => {
            Filter::Not(Box::new(compile_one(f, &format!("{field}.not"))?))
        }
        SubscriptionsApiFilter::Cesql(e) | SubscriptionsApiFilter::Sql(e) => {
            let dialect = if matches!(f, SubscriptionsApiFilter::Cesql(_)) {
                "cesql"
            } else {
                "sql"
            };
            let expr = crate::cesql::Expression::parse(e).map_err(|err| FilterError {
                field: format!("{field}.{dialect}"),
                message: err.to_string(),
            })?;
            Filter::Cesql(Box::new(expr))
        }
    })
}

impl Filter {
    /// Compiles Subscriptions API filters that must all pass (a Trigger's or an
    /// EventPolicy's `spec.filters`).
    pub fn compile_all(filters: &[SubscriptionsApiFilter]) -> Result<Filter, FilterError> {
        let mut all: Vec<Filter> = filters
            .iter()
            .enumerate()
            .map(|(i, f)| compile_one(f, &format!("spec.filters[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(match all.len() {
            0 => Filter::True,
            1 => all.pop().unwrap_or(Filter::True),
            _ => Filter::All(all),
        })
    }

    /// Compiles a trigger's filters: a non-empty `filters` wins over the legacy `filter`.
    pub fn compile(spec: &TriggerSpec) -> Result<Filter, FilterError> {
        if !spec.filters.is_empty() {
            return Filter::compile_all(&spec.filters);
        }
        let Some(legacy) = &spec.filter else {
            return Ok(Filter::True);
        };
        let mut terms: Vec<Filter> = legacy
            .attributes
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    Filter::NonEmpty(Attr::new(k))
                } else {
                    Filter::Exact(Attr::new(k), v.clone())
                }
            })
            .collect();
        Ok(match terms.len() {
            0 => Filter::True,
            1 => terms.pop().unwrap_or(Filter::True),
            _ => Filter::All(terms),
        })
    }

    /// Whether the event passes. Case-sensitive; a missing attribute fails exact, prefix and
    /// suffix.
    pub fn matches(&self, e: &CloudEvent) -> bool {
        match self {
            Filter::True => true,
            Filter::Exact(a, v) => a.get(e).is_some_and(|x| x == v.as_str()),
            Filter::Prefix(a, v) => a.get(e).is_some_and(|x| x.starts_with(v.as_str())),
            Filter::Suffix(a, v) => a.get(e).is_some_and(|x| x.ends_with(v.as_str())),
            Filter::NonEmpty(a) => a.get(e).is_some_and(|x| !x.is_empty()),
            Filter::All(v) => v.iter().all(|f| f.matches(e)),
            Filter::Any(v) => v.iter().any(|f| f.matches(e)),
            Filter::Not(f) => !f.matches(e),
            Filter::Cesql(expr) => expr.matches(e),
        }
    }

    /// Why the event does not pass, as lines naming the sub-filter and the values involved;
    /// empty when it passes. For operators debugging filters (`switchyard explain`).
    pub fn explain(&self, e: &CloudEvent) -> Vec<String> {
        let compare = |a: &Attr, v: &str, dialect: &str, ok: &dyn Fn(&str) -> bool| match a.get(e) {
            None => vec![format!(
                "{dialect} `{}` = '{v}': the event has no `{}`",
                a.name(),
                a.name()
            )],
            Some(x) if ok(&x) => Vec::new(),
            Some(x) => vec![format!("{dialect} `{}` = '{v}': it is '{x}'", a.name())],
        };
        match self {
            Filter::True => Vec::new(),
            Filter::Exact(a, v) => compare(a, v, "exact", &|x| x == v),
            Filter::Prefix(a, v) => compare(a, v, "prefix", &|x| x.starts_with(v.as_str())),
            Filter::Suffix(a, v) => compare(a, v, "suffix", &|x| x.ends_with(v.as_str())),
            Filter::NonEmpty(a) => match a.get(e) {
                Some(x) if !x.is_empty() => Vec::new(),
                _ => vec![format!("`{}` must be present and not empty", a.name())],
            },
            Filter::All(v) => v.iter().flat_map(|f| f.explain(e)).collect(),
            Filter::Any(v) => {
                if v.iter().any(|f| f.matches(e)) {
                    return Vec::new();
                }
                let mut out = vec!["any: none of these passes:".to_owned()];
                out.extend(
                    v.iter()
                        .flat_map(|f| f.explain(e))
                        .map(|l| format!("  {l}")),
                );
                out
            }
            Filter::Not(f) => {
                if f.matches(e) {
                    vec!["not: the negated filter passes".to_owned()]
                } else {
                    Vec::new()
                }
            }
            Filter::Cesql(expr) => {
                let x = expr.explain(e);
                if x.matched {
                    Vec::new()
                } else {
                    x.to_string()
                        .lines()
                        .map(|l| format!("cesql: {l}"))
                        .collect()
                }
            }
        }
    }

    /// The exact value this filter requires of `attr`, if every match must have it.
    fn required_exact(&self, attr: &Attr) -> Option<&str> {
        match self {
            Filter::Exact(a, v) if a == attr => Some(v),
            Filter::All(v) => v.iter().find_map(|f| f.required_exact(attr)),
            _ => None,
        }
    }
}

/// The filters of one broker's triggers, indexed by the exact `type` (or else `source`) they
/// require, so an event is only checked against triggers that can match it.
#[derive(Debug, Default)]
pub struct FilterIndex {
    by_type: HashMap<String, Vec<usize>>,
    by_source: HashMap<String, Vec<usize>>,
    rest: Vec<usize>,
    filters: Vec<Filter>,
}

impl FilterIndex {
    /// Indexes the filters; trigger `i` is `filters[i]`.
    pub fn new(filters: Vec<Filter>) -> Self {
        let mut index = FilterIndex::default();
        for (i, f) in filters.iter().enumerate() {
            if let Some(t) = f.required_exact(&Attr::Type) {
                index.by_type.entry(t.to_owned()).or_default().push(i);
            } else if let Some(s) = f.required_exact(&Attr::Source) {
                index.by_source.entry(s.to_owned()).or_default().push(i);
            } else {
                index.rest.push(i);
            }
        }
        index.filters = filters;
        index
    }

    /// Calls `hit` with the position of every trigger whose filter matches `e`, each once.
    pub fn for_each_match(&self, e: &CloudEvent, mut hit: impl FnMut(usize)) {
        let candidates = self
            .by_type
            .get(e.ty.as_str())
            .into_iter()
            .chain(self.by_source.get(e.source.as_str()))
            .flatten()
            .chain(&self.rest);
        for &i in candidates {
            if self.filters[i].matches(e) {
                hit(i);
            }
        }
    }

    /// Number of triggers indexed.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether there are no triggers.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

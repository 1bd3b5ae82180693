//! The CloudEvent model: attributes as received, data as the bytes received.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::EventError;
use crate::validate;

/// The CloudEvents specification version an event declares.
///
/// Events are passed through as they came: a 0.3 event stays a 0.3 event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecVersion {
    /// CloudEvents 0.3, accepted on input for compatibility.
    V03,
    /// CloudEvents 1.0, the current version.
    V10,
}

impl SpecVersion {
    /// The version's text, as it appears in the `specversion` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V03 => "0.3",
            SpecVersion::V10 => "1.0",
        }
    }

    /// Parses a `specversion` value; anything but `1.0` or `0.3` is an error.
    pub fn parse(value: &str) -> Result<Self, EventError> {
        match value {
            "1.0" => Ok(SpecVersion::V10),
            "0.3" => Ok(SpecVersion::V03),
            other => Err(EventError::UnsupportedSpecVersion(other.to_owned())),
        }
    }
}

/// The value of an extension attribute, with its CloudEvents type.
///
/// Formats without types (HTTP headers) decode every extension as [`ExtValue::String`]; the
/// JSON format keeps `Integer` and `Boolean`. The other variants are for events built in code
/// (sources, the broker's own attributes) and are written as their canonical string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtValue {
    /// A string.
    String(String),
    /// A 32-bit signed integer.
    Integer(i32),
    /// `true` or `false`.
    Boolean(bool),
    /// A byte sequence, written as base64.
    Binary(Vec<u8>),
    /// An absolute URI.
    Uri(String),
    /// A URI-reference.
    UriRef(String),
    /// An RFC 3339 timestamp, kept as its text.
    Timestamp(String),
}

impl ExtValue {
    /// The canonical string form (CloudEvents type system, "String encoding" column).
    pub fn to_canonical_string(&self) -> String {
        match self {
            ExtValue::String(s)
            | ExtValue::Uri(s)
            | ExtValue::UriRef(s)
            | ExtValue::Timestamp(s) => s.clone(),
            ExtValue::Integer(i) => i.to_string(),
            ExtValue::Boolean(b) => b.to_string(),
            ExtValue::Binary(b) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(b)
            }
        }
    }

    /// The value as an integer, if it is one or is a string holding one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ExtValue::Integer(i) => Some(i64::from(*i)),
            ExtValue::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Checks the value against its type's rules.
    pub(crate) fn validate(&self, name: &str) -> Result<(), EventError> {
        match self {
            ExtValue::String(s) => validate::string_value(name, s),
            ExtValue::Integer(_) | ExtValue::Boolean(_) | ExtValue::Binary(_) => Ok(()),
            ExtValue::Uri(s) => validate::absolute_uri(name, s),
            ExtValue::UriRef(s) => validate::uri_reference(name, s),
            ExtValue::Timestamp(s) => validate::timestamp(name, s),
        }
    }
}

/// The event's data, exactly as it was received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Data {
    /// No data at all (no `data` member, or an empty binary-mode body).
    #[default]
    Absent,
    /// The JSON format's `data` member: the raw JSON text of its value, as received. An explicit
    /// `"data": null` is `Json("null")`, which is not the same as [`Data::Absent`].
    Json(Box<str>),
    /// Bytes: a binary-mode HTTP body, or the decoded `data_base64` member.
    Binary(Bytes),
}

/// A CloudEvent. Construct with [`CloudEvent::new`] or decode one with the codecs; either way a
/// value of this type has passed validation, unless it was modified through its public fields,
/// in which case call [`CloudEvent::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// `specversion`.
    pub specversion: SpecVersion,
    /// `id`: non-empty; with `source`, identifies the event.
    pub id: String,
    /// `source`: a non-empty URI-reference.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `datacontenttype`: the media type of `data`.
    pub datacontenttype: Option<String>,
    /// `dataschema` (`schemaurl` in 0.3).
    pub dataschema: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`: an RFC 3339 timestamp, kept as the exact text received.
    pub time: Option<String>,
    /// `datacontentencoding`, only in 0.3 events.
    pub datacontentencoding: Option<String>,
    /// Extension attributes by name.
    pub extensions: BTreeMap<String, ExtValue>,
    /// The event data.
    pub data: Data,
}

/// Names of the context attributes that are not extensions (in either spec version).
pub const CORE_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

impl CloudEvent {
    /// A 1.0 event with the three attributes every event must have and nothing else.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        ty: impl Into<String>,
    ) -> Result<Self, EventError> {
        let event = CloudEvent {
            specversion: SpecVersion::V10,
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            datacontentencoding: None,
            extensions: BTreeMap::new(),
            data: Data::Absent,
        };
        event.validate()?;
        Ok(event)
    }

    /// Checks every attribute against the rules of the event's spec version.
    pub fn validate(&self) -> Result<(), EventError> {
        validate::non_empty_string("id", &self.id)?;
        validate::uri_reference("source", &self.source)?;
        if self.source.is_empty() {
            return Err(EventError::invalid("source", "must not be empty"));
        }
        validate::non_empty_string("type", &self.ty)?;
        if let Some(v) = &self.datacontenttype {
            validate::media_type("datacontenttype", v)?;
        }
        if let Some(v) = &self.dataschema {
            match self.specversion {
                SpecVersion::V10 => validate::absolute_uri("dataschema", v)?,
                SpecVersion::V03 => validate::uri_reference("schemaurl", v)?,
            }
        }
        if let Some(v) = &self.subject {
            validate::non_empty_string("subject", v)?;
        }
        if let Some(v) = &self.time {
            validate::timestamp("time", v)?;
        }
        if let Some(v) = &self.datacontentencoding {
            if self.specversion != SpecVersion::V03 {
                return Err(EventError::invalid(
                    "datacontentencoding",
                    "exists only in specversion 0.3",
                ));
            }
            validate::non_empty_string("datacontentencoding", v)?;
        }
        for (name, value) in &self.extensions {
            self.check_extension(name, value)?;
        }
        Ok(())
    }

    /// An extension's name must be valid and not a context attribute; its value must fit
    /// its type.
    fn check_extension(&self, name: &str, value: &ExtValue) -> Result<(), EventError> {
        validate::extension_name(name)?;
        if self.is_reserved_name(name) {
            return Err(EventError::invalid(
                name,
                "is a context attribute, not an extension",
            ));
        }
        value.validate(name)
    }

    /// Whether `name` is one of this version's context attributes (so not an extension).
    pub fn is_reserved_name(&self, name: &str) -> bool {
        CORE_ATTRIBUTES.contains(&name)
            || (self.specversion == SpecVersion::V03
                && matches!(name, "schemaurl" | "datacontentencoding"))
    }

    /// Name of the attribute that holds `dataschema` in this event's version.
    pub fn dataschema_name(&self) -> &'static str {
        match self.specversion {
            SpecVersion::V10 => "dataschema",
            SpecVersion::V03 => "schemaurl",
        }
    }

    /// The `partitionkey` extension (Partitioning extension), in canonical string form: what
    /// ordered delivery and Kafka record keys go by.
    pub fn partition_key(&self) -> Option<String> {
        self.extensions
            .get("partitionkey")
            .map(ExtValue::to_canonical_string)
    }

    /// Sets an extension after validating its name and value.
    pub fn set_extension(&mut self, name: &str, value: ExtValue) -> Result<(), EventError> {
        self.check_extension(name, &value)?;
        self.extensions.insert(name.to_owned(), value);
        Ok(())
    }

    /// The data as bytes, the way a binary-mode body carries it: raw JSON text for JSON media
    /// types, the string's content for a JSON string under any other media type, and the
    /// bytes themselves for binary data. `None` when the event has no data.
    pub fn data_bytes(&self) -> Option<Bytes> {
        match &self.data {
            Data::Absent => None,
            Data::Binary(b) => Some(b.clone()),
            Data::Json(raw) => {
                if !crate::json::is_json_media_type(self.datacontenttype.as_deref())
                    && raw.starts_with('"')
                    && let Ok(s) = serde_json::from_str::<String>(raw)
                {
                    return Some(Bytes::from(s));
                }
                Some(Bytes::copy_from_slice(raw.as_bytes()))
            }
        }
    }

    /// A string attribute's value by name (context attributes and extensions), in canonical
    /// string form.
    pub fn attribute(&self, name: &str) -> Option<String> {
        match name {
            "specversion" => Some(self.specversion.as_str().to_owned()),
            "id" => Some(self.id.clone()),
            "source" => Some(self.source.clone()),
            "type" => Some(self.ty.clone()),
            "datacontenttype" => self.datacontenttype.clone(),
            "subject" => self.subject.clone(),
            "time" => self.time.clone(),
            "dataschema" if self.specversion == SpecVersion::V10 => self.dataschema.clone(),
            "schemaurl" if self.specversion == SpecVersion::V03 => self.dataschema.clone(),
            "datacontentencoding" if self.specversion == SpecVersion::V03 => {
                self.datacontentencoding.clone()
            }
            other => self
                .extensions
                .get(other)
                .map(ExtValue::to_canonical_string),
        }
    }
}

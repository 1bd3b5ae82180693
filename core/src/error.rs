//! Typed errors for events that cannot be decoded or do not validate.

/// Why an event (or a request carrying events) was refused. Every variant names the attribute
/// or the part of the message it is about, and the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute is absent.
    #[error("missing required attribute `{0}`")]
    MissingAttribute(&'static str),
    /// An attribute is present but breaks a rule of its type.
    #[error("attribute `{name}` {rule}")]
    InvalidAttribute {
        /// The attribute.
        name: String,
        /// The rule, phrased to follow the attribute name.
        rule: String,
    },
    /// `specversion` is neither `1.0` nor `0.3`.
    #[error("unsupported specversion `{0}`: expected `1.0` (or `0.3`)")]
    UnsupportedSpecVersion(String),
    /// An attribute name that is not `[a-z0-9]{{1,20}}`.
    #[error("invalid attribute name `{0}`: names are 1 to 20 characters of a-z and 0-9")]
    InvalidAttributeName(String),
    /// The same attribute given twice.
    #[error("attribute `{0}` is given more than once")]
    DuplicateAttribute(String),
    /// An HTTP header value that cannot be decoded.
    #[error("header `{header}` {rule}")]
    InvalidHeader {
        /// The header name.
        header: String,
        /// What is wrong with it.
        rule: String,
    },
    /// The body is not a JSON event (or batch) as the format requires.
    #[error("malformed JSON event: {0}")]
    MalformedJson(String),
    /// The message is not a CloudEvent in any content mode.
    #[error(
        "not a CloudEvent: no `ce-specversion` header (binary mode) and the content type is not application/cloudevents+json (structured mode) or application/cloudevents-batch+json (batch mode)"
    )]
    NotACloudEvent,
    /// A structured or batch media type with a format we do not support.
    #[error("unsupported event format `{0}`: only JSON is supported")]
    UnsupportedFormat(String),
    /// An event in a batch is invalid; the batch is refused as a whole.
    #[error("event {index} of the batch: {source}")]
    InBatch {
        /// Zero-based position of the event in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<EventError>,
    },
}

impl EventError {
    /// Shorthand for [`EventError::InvalidAttribute`].
    pub fn invalid(name: &str, rule: impl Into<String>) -> Self {
        EventError::InvalidAttribute {
            name: name.to_owned(),
            rule: rule.into(),
        }
    }

    /// The attribute this error is about, if it is about one.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            EventError::MissingAttribute(n) => Some(n),
            EventError::InvalidAttribute { name, .. }
            | EventError::InvalidAttributeName(name)
            | EventError::DuplicateAttribute(name) => Some(name),
            EventError::UnsupportedSpecVersion(_) => Some("specversion"),
            EventError::InBatch { source, .. } => source.attribute(),
            _ => None,
        }
    }

    /// Whether the HTTP answer should be 415 (unsupported media type) rather than 400.
    pub fn is_unsupported_media_type(&self) -> bool {
        matches!(self, EventError::UnsupportedFormat(_))
    }
}

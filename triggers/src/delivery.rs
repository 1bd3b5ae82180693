//! One delivery attempt, over HTTP or to a stream sink ([`Deliverer`]), what an HTTP answer means (the table in `spec/delivery.md`), and
//! the backoff formula. Pure functions where possible, so the rules are tested as tables.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchyard_broker::traces::Hop;
use switchyard_core::egress::EgressPolicy;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use switchyard_broker::append::TTL_EXTENSION;
use switchyard_core::resources::{BackoffPolicy, DeliveryFormat, DeliverySpec};
use switchyard_core::{CloudEvent, EventError};

use crate::http_client::causes;
pub use crate::http_client::{build_client, client, needs_trust_roots, system_trust_roots};
use crate::streams::{StreamSink, StreamSinks};

/// The delivery settings of one trigger, resolved from its `delivery` (or its broker's) and
/// the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Retries after the first attempt.
    pub retry: u32,
    /// How the delay grows.
    pub backoff_policy: BackoffPolicy,
    /// Base delay.
    pub backoff_delay: Duration,
    /// Cap on any one delay.
    pub backoff_max: Duration,
    /// Random shortening of each delay, 0 to 1.
    pub jitter: f64,
    /// Bound on each attempt (the whole response).
    pub timeout: Duration,
    /// The longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// Binary or structured mode.
    pub format: DeliveryFormat,
    /// How long an event's attempts are held (not counted against `retry`) while the
    /// subscriber is down; zero turns the down state off.
    pub hold_while_down: Duration,
}

/// Defaults when neither the trigger nor its broker says (written in `spec/delivery.md`).
pub mod defaults {
    use std::time::Duration;
    /// Retries after the first attempt.
    pub const RETRY: u32 = 10;
    /// Base delay.
    pub const BACKOFF_DELAY: Duration = Duration::from_millis(200);
    /// Cap on one delay.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
    /// Per-attempt timeout: long enough for a scale-from-zero cold start.
    pub const TIMEOUT: Duration = Duration::from_secs(60);
    /// Cap on honoured `Retry-After`.
    pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
    /// Connection establishment timeout, kept short and apart from the response timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Largest response body read (a reply event, or an error body excerpt).
    pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
    /// How long an event may wait for a subscriber that is down (scaled to zero) before its
    /// attempts count against `retry` again.
    pub const HOLD_WHILE_DOWN: Duration = Duration::from_secs(15 * 60);
}

impl DeliverySettings {
    /// Resolves a `DeliverySpec` (the trigger's, else the broker's, as a whole).
    pub fn resolve(spec: Option<&DeliverySpec>) -> Self {
        let d = spec.cloned().unwrap_or_default();
        DeliverySettings {
            retry: d
                .retry
                .map_or(defaults::RETRY, |r| u32::try_from(r).unwrap_or(0)),
            backoff_policy: d.backoff_policy.unwrap_or_default(),
            backoff_delay: d.backoff_delay.map_or(defaults::BACKOFF_DELAY, |x| x.0),
            backoff_max: d.backoff_max.map_or(defaults::BACKOFF_MAX, |x| x.0),
            jitter: d.jitter.unwrap_or(0.0),
            timeout: d.timeout.map_or(defaults::TIMEOUT, |x| x.0),
            retry_after_max: d.retry_after_max.map_or(defaults::RETRY_AFTER_MAX, |x| x.0),
            format: d.format.unwrap_or_default(),
            hold_while_down: d.hold_while_down.map_or(defaults::HOLD_WHILE_DOWN, |x| x.0),
        }
    }

    /// How long a connection may take to be made: [`defaults::CONNECT_TIMEOUT`], or half the
    /// attempt's `timeout` when that is shorter, so that a connection never made (a link
    /// that drops packets) is told from an answer that does not come.
    pub fn connect_timeout(&self) -> Duration {
        defaults::CONNECT_TIMEOUT.min(self.timeout / 2)
    }

    /// The delay before retry `k` (1-based): `delay·2^(k-1)` or `delay·k`, capped by
    /// `backoffMax`, then shortened by up to `jitter` of itself (`unit` is a uniform random
    /// number in [0, 1)), and never shorter than an honoured `Retry-After`.
    pub fn backoff(&self, k: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let base = match self.backoff_policy {
            BackoffPolicy::Exponential => self
                .backoff_delay
                .saturating_mul(2u32.saturating_pow(k.saturating_sub(1))),
            BackoffPolicy::Linear => self.backoff_delay.saturating_mul(k),
        };
        let capped = base.min(self.backoff_max);
        let jittered = capped.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.retry_after_max)),
            None => jittered,
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Delivered,
    /// Failed; try again if retries are left.
    Retry,
    /// Failed for good: dead-letter now.
    DeadLetter,
}

/// The rule for an HTTP status: 2xx delivered; 404, 408, 409, 429 and 5xx retried; 410,
/// other 4xx, 3xx (redirects are not followed) and 1xx dead-lettered at once.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        404 | 408 | 409 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::DeadLetter,
    }
}

/// Why an attempt got no usable answer. The text (`Display`) is what attempt records keep;
/// the class ([`AttemptError::class`]) is what metrics count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// No answer (or no whole answer) within the attempt's timeout.
    #[error("timeout{}", suffix(.0))]
    Timeout(String),
    /// The connection could not be established.
    #[error("connection failed{}", suffix(.0))]
    Connect(String),
    /// The request or the response failed otherwise (reset, protocol error).
    #[error("request failed{}", suffix(.0))]
    Request(String),
    /// The response body is larger than the broker reads.
    #[error("the response body is larger than {limit_bytes} bytes")]
    BodyTooLarge {
        /// The read limit.
        limit_bytes: usize,
    },
    /// A 2xx answer that claims to be a CloudEvent and is not a valid one.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    /// A reply the broker's `eventTypes` refuses (at most [`MAX_REFUSAL_BYTES`] of detail).
    #[error("reply refused by the broker: {0}")]
    ReplyRefused(String),
    /// A stream sink did not take the event.
    #[error("{0}")]
    Stream(String),
    /// The destination's address is one the server may not send to (`--deny-internal-destinations`).
    #[error("destination refused: {0}")]
    Refused(String),
}

/// The longest reply refusal an attempt keeps, in bytes.
pub const MAX_REFUSAL_BYTES: usize = 1024;

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl AttemptError {
    /// A refusal of the attempt's replies, its detail cut to about [`MAX_REFUSAL_BYTES`] (the
    /// detail can quote the reply's data, and every attempt record keeps it).
    pub fn reply_refused(detail: &str) -> AttemptError {
        let budget = MAX_REFUSAL_BYTES.saturating_sub("reply refused by the broker: ".len());
        if detail.len() <= budget {
            return AttemptError::ReplyRefused(detail.to_owned());
        }
        let mut end = budget;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        AttemptError::ReplyRefused(format!("{}…", &detail[..end]))
    }

    /// The `response_code` label an attempt without an HTTP status is counted under.
    pub fn class(&self) -> &'static str {
        match self {
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Stream(_) => "stream_error",
            AttemptError::Refused(_) => "refused_destination",
            _ => "connection_error",
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// When it started.
    pub started: SystemTime,
    /// The status, when an answer came.
    pub status: Option<u16>,
    /// Why there was no usable answer (connection refused, timeout, malformed reply, …).
    pub error: Option<AttemptError>,
    /// How long it took.
    pub latency: Duration,
    /// The response body (up to the read limit).
    pub body: Bytes,
    /// A `Retry-After` on 429 or 503.
    pub retry_after: Option<Duration>,
    /// Reply events carried by a 2xx answer (not 202).
    pub replies: Vec<CloudEvent>,
    /// What to do next.
    pub verdict: Verdict,
    /// Whether the attempt failed while the subscriber was down (`dispatch/down.rs`): it is
    /// retried without counting against `retry`.
    pub held: bool,
}

impl AttemptResult {
    /// An attempt that started at `started`, with no answer (yet).
    fn begun(started: SystemTime, verdict: Verdict, error: Option<AttemptError>) -> Self {
        AttemptResult {
            started,
            status: None,
            error,
            latency: Duration::ZERO,
            body: Bytes::new(),
            retry_after: None,
            replies: Vec::new(),
            verdict,
            held: false,
        }
    }

    /// The `response_code` label of `switchyard_delivery_count_total` this attempt is counted
    /// under: the HTTP status; `timeout` or `connection_error` when no answer came; for a
    /// stream sink, `stream_accepted` or `stream_error`.
    pub fn response_code(&self) -> std::borrow::Cow<'static, str> {
        match (self.status, &self.error) {
            (Some(s), _) => std::borrow::Cow::Owned(s.to_string()),
            (None, Some(e)) => std::borrow::Cow::Borrowed(e.class()),
            (None, None) => std::borrow::Cow::Borrowed("stream_accepted"),
        }
    }

    /// Fails a delivered attempt (its replies are malformed or refused): it is retried like
    /// any failed attempt, and its replies are not stored.
    pub fn fail(&mut self, error: AttemptError) {
        self.error = Some(error);
        self.verdict = Verdict::Retry;
        self.replies.clear();
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads the reply events of a 2xx answer. `Ok(empty)` when the answer is not a CloudEvent
/// (no `ce-specversion`, not a `cloudevents` content type), or is a 202.
pub fn replies_of(
    status: u16,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Vec<CloudEvent>, EventError> {
    if status == 202 || !(200..=299).contains(&status) {
        return Ok(Vec::new());
    }
    match switchyard_core::http::decode(headers, body) {
        Ok((_, events)) => Ok(events),
        Err(EventError::NotACloudEvent) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The broker's loop guard ([`TTL_EXTENSION`]) as a binary-mode header: removed from
/// deliveries.
const TTL_HEADER: &str = "ce-knativebrokerttl";

/// Where a trigger sends events (its subscriber, or its dead-letter sink), resolved when the
/// dispatcher starts: a reference to a stream sink that has no writer is an error then, not
/// an HTTP request to nowhere later.
#[derive(Debug, Clone)]
pub enum Subscriber {
    /// An HTTP endpoint, by URL.
    Http(HttpTarget),
    /// A KafkaSink or NatsSink.
    Stream {
        /// How it is named in dead letters and logs: `kafkasink:{ns}/{name}`, `natssink:…`.
        address: String,
        /// Its writer.
        sink: Arc<dyn StreamSink>,
    },
}

impl Subscriber {
    /// The URL, or the stream sink's address.
    pub fn address(&self) -> &str {
        match self {
            Subscriber::Http(target) => target.as_str(),
            Subscriber::Stream { address, .. } => address,
        }
    }

    /// Resolves a destination's address (a URL, or a stream sink's [`address`]) against the
    /// stream sinks the server started; `None` for a stream address without a writer.
    ///
    /// [`address`]: crate::streams::address
    pub fn resolve(address: String, streams: &StreamSinks) -> Option<Subscriber> {
        if !crate::streams::is_stream_address(&address) {
            return Some(Subscriber::Http(HttpTarget::new(address)));
        }
        let sink = Arc::clone(streams.get(&address)?);
        Some(Subscriber::Stream { address, sink })
    }
}

/// An HTTP subscriber's URL as written, parsed once: not again for every attempt.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    text: String,
    /// `None` when the text is not a URL; an attempt then hands reqwest the text, which
    /// fails it with reqwest's own error.
    parsed: Option<url::Url>,
}

impl HttpTarget {
    /// `text`, parsed.
    pub fn new(text: String) -> Self {
        let parsed = url::Url::parse(&text).ok();
        HttpTarget { text, parsed }
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Sends events to subscribers: HTTP endpoints through one client (its own connection pool),
/// stream sinks through their writers.
#[derive(Debug, Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    egress: EgressPolicy,
}

impl Deliverer {
    /// A deliverer with a new HTTP client trusting `ca_certs` too (see [`client`]), sending
    /// only where `egress` allows, making connections within `connect_timeout`
    /// ([`DeliverySettings::connect_timeout`]).
    pub fn new(
        ca_certs: &[&str],
        egress: &EgressPolicy,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Deliverer {
            http: client(ca_certs, egress, connect_timeout)?,
            egress: egress.clone(),
        })
    }

    /// One attempt to deliver `event` to `to`. `extra` attributes are added (for dead-letter
    /// sinks); `hop` is the attempt's trace context, sent to an HTTP subscriber as the
    /// `traceparent` header (the event's own `traceparent` extension travels as
    /// `ce-traceparent`, unchanged).
    pub async fn attempt(
        &self,
        to: &Subscriber,
        event: &CloudEvent,
        settings: &DeliverySettings,
        extra: &[(&str, String)],
        hop: Option<&Hop>,
    ) -> AttemptResult {
        match to {
            Subscriber::Stream { sink, .. } => {
                attempt_stream(sink.as_ref(), event, settings, extra).await
            }
            Subscriber::Http(target) => match self.allowed(target) {
                Ok(()) => attempt(&self.http, target, event, settings, extra, hop).await,
                Err(why) => refused(why),
            },
        }
    }

    /// One attempt to deliver `events` to `to` in one request, a JSON batch (see
    /// [`attempt_batch`]).
    pub async fn attempt_batch(
        &self,
        to: &HttpTarget,
        events: &[&CloudEvent],
        settings: &DeliverySettings,
        hop: Option<&Hop>,
    ) -> AttemptResult {
        match self.allowed(to) {
            Ok(()) => attempt_batch(&self.http, to, events, settings, hop).await,
            Err(why) => refused(why),
        }
    }

    /// Whether the egress policy lets attempts go to `target`; if not, why.
    fn allowed(&self, target: &HttpTarget) -> Result<(), String> {
        match &target.parsed {
            Some(parsed) => crate::egress::check_parsed(parsed, &self.egress),
            None => crate::egress::check_url(&target.text, &self.egress),
        }
    }
}

/// An attempt the egress policy refused (`why`): dead-lettered, not retried.
fn refused(why: String) -> AttemptResult {
    AttemptResult::begun(
        SystemTime::now(),
        Verdict::DeadLetter,
        Some(AttemptError::Refused(why)),
    )
}

/// The event as it leaves the broker: without the broker's loop guard, with `extra`
/// attributes (for dead-letter sinks).
fn outgoing(event: &CloudEvent, extra: &[(&str, String)]) -> CloudEvent {
    let mut outgoing = event.clone();
    outgoing.extensions.remove(TTL_EXTENSION);
    for (name, value) in extra {
        outgoing.extensions.insert(
            (*name).to_owned(),
            switchyard_core::ExtValue::String(value.clone()),
        );
    }
    outgoing
}

/// Writes `event` to a stream sink once, bounded by the delivery timeout.
async fn attempt_stream(
    sink: &dyn StreamSink,
    event: &CloudEvent,
    settings: &DeliverySettings,
    extra: &[(&str, String)],
) -> AttemptResult {
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    let mut outgoing = outgoing(event, extra);
    if sink.takes_ttl()
        && let Some(ttl) = event.extensions.get(TTL_EXTENSION)
    {
        outgoing
            .extensions
            .insert(TTL_EXTENSION.to_owned(), ttl.clone());
    }
    let (verdict, error) = match tokio::time::timeout(settings.timeout, sink.send(&outgoing)).await
    {
        Ok(Ok(())) => (Verdict::Delivered, None),
        Ok(Err(e)) if e.retryable => (Verdict::Retry, Some(AttemptError::Stream(e.message))),
        Ok(Err(e)) => (Verdict::DeadLetter, Some(AttemptError::Stream(e.message))),
        Err(_) => (
            Verdict::Retry,
            Some(AttemptError::Timeout(format!(
                "the stream did not take the event within {} ms",
                settings.timeout.as_millis()
            ))),
        ),
    };
    let mut result = AttemptResult::begun(started, verdict, error);
    result.latency = clock.elapsed();
    result
}

/// Sends `event` to `url` once, with `hop` as its `traceparent` header. Never follows
/// redirects (the client is built without them).
pub async fn attempt(
    client: &reqwest::Client,
    to: &HttpTarget,
    event: &CloudEvent,
    settings: &DeliverySettings,
    extra: &[(&str, String)],
    hop: Option<&Hop>,
) -> AttemptResult {
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    // The loop guard is the broker's own and is not sent; extra attributes are only for
    // dead-letter sinks. Binary mode drops the header instead of copying the event.
    let (mut headers, body) = if extra.is_empty() && settings.format == DeliveryFormat::Binary {
        let (mut h, b) = switchyard_core::http::encode_binary(event);
        h.remove(TTL_HEADER);
        (h, b)
    } else {
        let outgoing = outgoing(event, extra);
        match settings.format {
            DeliveryFormat::Binary => switchyard_core::http::encode_binary(&outgoing),
            DeliveryFormat::Json => switchyard_core::http::encode_structured(&outgoing),
        }
    };
    headers.insert("prefer", HeaderValue::from_static("reply"));
    send(
        client, to, headers, body, settings, hop, started, clock, true,
    )
    .await
}

/// Sends `events` to `to` once, in one request in the JSON batch format
/// (`application/cloudevents-batch+json`), without the broker's loop guard. The answer's
/// body is not read as replies: a batch's answer has none.
pub async fn attempt_batch(
    client: &reqwest::Client,
    to: &HttpTarget,
    events: &[&CloudEvent],
    settings: &DeliverySettings,
    hop: Option<&Hop>,
) -> AttemptResult {
    let started = SystemTime::now();
    let clock = std::time::Instant::now();
    let outgoing: Vec<CloudEvent> = events.iter().map(|e| outgoing(e, &[])).collect();
    let body = switchyard_core::json::encode_batch(&outgoing);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(switchyard_core::http::BATCH_JSON),
    );
    send(
        client,
        to,
        headers,
        body.into(),
        settings,
        hop,
        started,
        clock,
        false,
    )
    .await
}

/// Sends one request, with `hop` as its `traceparent` header, and reads the answer into an
/// attempt begun at `started` (`clock` times it); a 2xx's body is read as replies when
/// `replies` says so.
#[allow(clippy::too_many_arguments)]
async fn send(
    client: &reqwest::Client,
    to: &HttpTarget,
    mut headers: HeaderMap,
    body: Bytes,
    settings: &DeliverySettings,
    hop: Option<&Hop>,
    started: SystemTime,
    clock: std::time::Instant,
    replies: bool,
) -> AttemptResult {
    if let Some(hop) = hop {
        for (name, value) in [
            ("traceparent", Some(&hop.traceparent)),
            ("tracestate", hop.tracestate.as_ref()),
        ] {
            if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
    }
    let request = match &to.parsed {
        Some(url) => client.post(url.clone()),
        None => client.post(&to.text),
    };
    let sent = request
        .headers(headers)
        .body(body)
        .timeout(settings.timeout)
        .send()
        .await;
    let mut result = AttemptResult::begun(started, Verdict::Retry, None);
    match sent {
        Err(e) => {
            result.error = Some(describe(&e));
        }
        Ok(response) => read_answer(response, &mut result, replies).await,
    }
    result.latency = clock.elapsed();
    result
}

/// Reads a subscriber's answer into `result`: its status and verdict, `Retry-After`, the
/// body (up to [`defaults::MAX_RESPONSE_BYTES`]), and the reply events of a 2xx. A body
/// that is too large or breaks off fails a 2xx attempt.
async fn read_answer(mut response: reqwest::Response, result: &mut AttemptResult, replies: bool) {
    let status = response.status().as_u16();
    result.status = Some(status);
    result.verdict = verdict_for_status(status);
    if status == StatusCode::TOO_MANY_REQUESTS.as_u16()
        || status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
    {
        result.retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
    }
    // Taken, not copied: only the reply's decoding reads them.
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    let broken = loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > defaults::MAX_RESPONSE_BYTES => {
                break Some(AttemptError::BodyTooLarge {
                    limit_bytes: defaults::MAX_RESPONSE_BYTES,
                });
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break None,
            Err(e) => break Some(describe(&e)),
        }
    };
    result.body = Bytes::from(body);
    if let Some(error) = broken {
        result.error = Some(error);
        if result.verdict == Verdict::Delivered {
            result.verdict = Verdict::Retry;
        }
        return;
    }
    if replies && result.verdict == Verdict::Delivered {
        match replies_of(status, &headers, result.body.clone()) {
            Ok(replies) => result.replies = replies,
            Err(e) => result.fail(AttemptError::MalformedReply(e.to_string())),
        }
    }
}

fn describe(e: &reqwest::Error) -> AttemptError {
    let detail = causes(e);
    // A connection not made within the connect timeout (a link that drops packets) is a
    // connection that failed, as a refused one is, not a subscriber too slow to answer.
    if e.is_connect() {
        AttemptError::Connect(detail)
    } else if e.is_timeout() {
        AttemptError::Timeout(detail)
    } else {
        AttemptError::Request(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_guard_header_is_the_extension_in_binary_mode() {
        assert_eq!(TTL_HEADER, format!("ce-{TTL_EXTENSION}"));
    }

    #[test]
    fn status_table() {
        let table: &[(u16, Verdict)] = &[
            (200, Verdict::Delivered),
            (201, Verdict::Delivered),
            (202, Verdict::Delivered),
            (204, Verdict::Delivered),
            (301, Verdict::DeadLetter),
            (302, Verdict::DeadLetter),
            (307, Verdict::DeadLetter),
            (400, Verdict::DeadLetter),
            (401, Verdict::DeadLetter),
            (403, Verdict::DeadLetter),
            (404, Verdict::Retry),
            (408, Verdict::Retry),
            (409, Verdict::Retry),
            (410, Verdict::DeadLetter),
            (413, Verdict::DeadLetter),
            (422, Verdict::DeadLetter),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
            (504, Verdict::Retry),
        ];
        for (status, verdict) in table {
            assert_eq!(verdict_for_status(*status), *verdict, "{status}");
        }
    }

    fn settings(policy: BackoffPolicy) -> DeliverySettings {
        DeliverySettings {
            backoff_policy: policy,
            backoff_delay: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..DeliverySettings::resolve(None)
        }
    }

    #[test]
    fn backoff_formula() {
        let ms = |d: Duration| d.as_millis();
        let e = settings(BackoffPolicy::Exponential);
        let got: Vec<u128> = (1..=6).map(|k| ms(e.backoff(k, None, 0.0))).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        let l = settings(BackoffPolicy::Linear);
        let got: Vec<u128> = (1..=4).map(|k| ms(l.backoff(k, None, 0.0))).collect();
        assert_eq!(got, [100, 200, 300, 400]);
        // Jitter only shortens, by up to its fraction.
        let j = DeliverySettings {
            jitter: 0.5,
            ..e.clone()
        };
        assert_eq!(ms(j.backoff(2, None, 0.0)), 200);
        assert_eq!(ms(j.backoff(2, None, 0.999_999)), 100);
        // Retry-After wins over a shorter backoff, up to retryAfterMax.
        let r = DeliverySettings {
            retry_after_max: Duration::from_secs(5),
            ..e.clone()
        };
        assert_eq!(ms(r.backoff(1, Some(Duration::from_secs(3)), 0.0)), 3000);
        assert_eq!(ms(r.backoff(1, Some(Duration::from_secs(30)), 0.0)), 5000);
        assert_eq!(ms(r.backoff(4, Some(Duration::from_millis(10)), 0.0)), 800);
        // No overflow with absurd retry counts.
        assert_eq!(ms(e.backoff(200, None, 0.0)), 1000);
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
            .unwrap_or(SystemTime::UNIX_EPOCH);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

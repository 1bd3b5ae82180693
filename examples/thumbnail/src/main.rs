//! The thumbnail function: an HTTP sink that takes `com.amazonaws.s3.ObjectCreated:*` events
//! (from Switchyard's S3Source), reads the image from the S3-compatible store, writes a
//! thumbnail next to it (or to another bucket) and replies with a
//! `com.example.thumbnail.created` CloudEvent. Written the way a sink author would, with the
//! official `cloudevents-sdk` crate. See `README.md` in this folder.
//!
//! Answers: 200 with the reply event; 200 without one for events it ignores (other types, its
//! own output); 422 for a non-image or a corrupt image (not retried: the broker dead-letters
//! it); 503 when the store cannot be reached (retried).

mod thumb;
mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cloudevents::Event;
use cloudevents::event::{AttributesReader as _, Data, EventBuilder as _, EventBuilderV10};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig};

/// Settings, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    /// `S3_ENDPOINT`: the S3-compatible store (path-style), e.g. `http://127.0.0.1:5000`.
    endpoint: Option<String>,
    /// `AWS_REGION` (default `us-east-1`).
    region: String,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    access_key_id: String,
    secret_access_key: String,
    /// `THUMBNAIL_BUCKET`: where thumbnails go (default: the image's own bucket).
    bucket: Option<String>,
    /// `THUMBNAIL_PREFIX`: key prefix of thumbnails (default `thumbnails/`).
    prefix: String,
    /// `THUMBNAIL_MAX_EDGE`: the longest side of a thumbnail, in pixels (default 256).
    max_edge: u32,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(Settings {
            endpoint: var("S3_ENDPOINT"),
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id: var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")
                .context("AWS_SECRET_ACCESS_KEY is not set")?,
            bucket: var("THUMBNAIL_BUCKET"),
            prefix: var("THUMBNAIL_PREFIX").unwrap_or_else(|| "thumbnails/".into()),
            max_edge: var("THUMBNAIL_MAX_EDGE")
                .map(|v| {
                    v.parse()
                        .context("THUMBNAIL_MAX_EDGE must be a number of pixels")
                })
                .transpose()?
                .unwrap_or(256),
        })
    }
}

struct App {
    settings: Settings,
    /// One client per bucket.
    stores: Mutex<HashMap<String, Arc<AmazonS3>>>,
    /// OpenTelemetry, when the `OTEL_*` variables ask for it.
    traces: Option<trace::Traces>,
}

impl App {
    fn store(&self, bucket: &str) -> Result<Arc<AmazonS3>, object_store::Error> {
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = stores.get(bucket) {
            return Ok(Arc::clone(s));
        }
        let s = &self.settings;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            // Fail fast: the broker retries, with backoff, when we answer 503.
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            });
        if let Some(e) = &s.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false);
        }
        let store = Arc::new(b.build()?);
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    if status.is_server_error() {
        tracing::warn!(%status, %message, "failed; the broker will retry");
    } else {
        tracing::info!(%status, %message, "refused");
    }
    (status, message).into_response()
}

/// The S3 key an event is about: the record's key, decoded (`+` is a space, then %-escapes).
fn key_of(record: &serde_json::Value) -> Option<String> {
    let raw = record.pointer("/s3/object/key")?.as_str()?;
    let spaced = raw.replace('+', " ");
    let bytes = spaced.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(app: Arc<App>, headers: HeaderMap, event: Event) -> Response {
    if !event.ty().starts_with("com.amazonaws.s3.ObjectCreated:") {
        return StatusCode::OK.into_response();
    }
    // With traces on, a span under the broker's attempt; the reply continues it.
    let cx = app.traces.as_ref().map(|t| t.start(&headers, &event));
    let response = make_thumbnail(&app, &event, cx.as_ref().and_then(trace::traceparent))
        .await
        .unwrap_or_else(|refusal| refusal);
    if let Some(cx) = &cx {
        trace::end(cx, response.status().as_u16());
    }
    response
}

/// The steps of [`handle`]; an `Err` is the answer that ends it early. The reply carries
/// `traceparent` as its extension, when traces are on.
async fn make_thumbnail(
    app: &App,
    event: &Event,
    traceparent: Option<String>,
) -> Result<Response, Response> {
    let Some((bucket, key)) = object_of(event) else {
        return Err(answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the event's data is not an S3 record",
        ));
    };
    let s = &app.settings;
    let target_bucket = s.bucket.clone().unwrap_or_else(|| bucket.clone());
    // Our own output (or anything in the thumbnail area): no thumbnail of a thumbnail.
    if target_bucket == bucket && key.starts_with(&s.prefix) {
        return Ok(StatusCode::OK.into_response());
    }
    // `Path::parse` keeps the key as it is (`Path::from` would percent-encode non-ASCII).
    let (in_path, out_key) = (Path::parse(&key), format!("{}{key}", s.prefix));
    let (Ok(in_path), Ok(out_path)) = (in_path, Path::parse(&out_key)) else {
        return Err(answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "s3://{bucket}/{key}: keys with empty segments or control characters are not supported"
            ),
        ));
    };
    let bytes = fetch(app, &bucket, &key, &in_path).await?;
    let max_edge = s.max_edge;
    // Decoding and resizing are CPU work: off the async runtime.
    let made = tokio::task::spawn_blocking(move || thumb::make(&bytes, max_edge)).await;
    let t = match made {
        Ok(Ok(t)) => t,
        Ok(Err(refusal)) => {
            return Err(answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("s3://{bucket}/{key}: {refusal}"),
            ));
        }
        Err(e) => return Err(answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let data = serde_json::json!({
        "bucket": target_bucket,
        "key": out_key,
        "width": t.size.0,
        "height": t.size.1,
        "bytes": t.bytes.len(),
        "contentType": t.content_type,
        "sourceBucket": bucket,
        "sourceKey": key,
        "sourceWidth": t.source_size.0,
        "sourceHeight": t.source_size.1,
    });
    let (width, height) = t.size;
    // Same input, same output key: a redelivery overwrites the same thumbnail.
    store(app, &target_bucket, &out_path, t).await?;
    tracing::info!(%bucket, %key, %out_key, width, height, "thumbnail written");
    let mut reply = EventBuilderV10::new()
        .id(format!("{}.thumbnail", event.id()))
        .source("/switchyard/examples/thumbnail")
        .ty("com.example.thumbnail.created")
        .subject(out_key.clone())
        .time(chrono::Utc::now())
        .data("application/json", data);
    if let Some(tp) = traceparent {
        reply = reply.extension("traceparent", tp);
    }
    let reply = reply.build();
    match reply {
        Ok(e) => Ok((StatusCode::OK, e).into_response()),
        Err(e) => Err(answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The bucket and key of the S3 record the event carries.
fn object_of(event: &Event) -> Option<(String, String)> {
    let record: serde_json::Value = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::Binary(b)) => serde_json::from_slice(b).unwrap_or_default(),
        Some(Data::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let bucket = record.pointer("/s3/bucket/name")?.as_str()?;
    Some((bucket.to_owned(), key_of(&record)?))
}

/// The object's bytes: a 422 when it is gone (it will not come back), a 503 when the store
/// cannot be reached (the broker retries).
async fn fetch(app: &App, bucket: &str, key: &str, path: &Path) -> Result<bytes::Bytes, Response> {
    let unavailable = |e: String| answer(StatusCode::SERVICE_UNAVAILABLE, e);
    let source = app.store(bucket).map_err(|e| unavailable(e.to_string()))?;
    match source.get(path).await {
        Ok(r) => r.bytes().await.map_err(|e| unavailable(e.to_string())),
        Err(object_store::Error::NotFound { .. }) => Err(answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("s3://{bucket}/{key} does not exist (deleted since?)"),
        )),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

/// Writes the thumbnail with its content type; a 503 when the store cannot take it.
async fn store(app: &App, bucket: &str, path: &Path, t: thumb::Thumbnail) -> Result<(), Response> {
    let unavailable = |e: String| answer(StatusCode::SERVICE_UNAVAILABLE, e);
    let target = app.store(bucket).map_err(|e| unavailable(e.to_string()))?;
    let attrs = object_store::Attributes::from_iter([(
        object_store::Attribute::ContentType,
        object_store::AttributeValue::from(t.content_type),
    )]);
    let opts = object_store::PutOptions {
        attributes: attrs,
        ..Default::default()
    };
    target
        .put_opts(path, PutPayload::from(t.bytes), opts)
        .await
        .map(|_| ())
        .map_err(|e| unavailable(e.to_string()))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::from_env()?;
    let traces = trace::init_from_env()?;
    let listen = std::env::var("THUMBNAIL_LISTEN").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let app = Arc::new(App {
        settings,
        stores: Mutex::new(HashMap::new()),
        traces,
    });
    let router = Router::new().route(
        "/",
        post(move |headers: HeaderMap, event: Event| handle(Arc::clone(&app), headers, event)),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("thumbnail listening on http://{addr}");
    }
    axum::serve(listener, router).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded() {
        let r = serde_json::json!({"s3": {"object": {"key": "a+b%C3%A9/c%2Bd.jpg"}}});
        assert_eq!(key_of(&r).as_deref(), Some("a bé/c+d.jpg"));
    }
}

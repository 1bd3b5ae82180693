//! A real HTTP subscriber in the test process: it records every request it gets (time,
//! headers, body, decoded event) and answers as the test scripts it.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_core::CloudEvent;
use tokio::sync::Notify;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The request's path (and query).
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The event it carried (`None` if it did not decode).
    pub event: Option<CloudEvent>,
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Answer {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Answer {
        self.delay = d;
        self
    }

    /// A 200 whose body is a binary-mode reply event of `ty`.
    pub fn reply(ty: &str, id: &str) -> Answer {
        Answer::status(200)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/sink")
            .header("ce-type", ty)
    }
}

type Script = dyn Fn(usize, &CloudEvent) -> Answer + Send + Sync;

struct Shared {
    received: Mutex<Vec<Received>>,
    completed: Mutex<usize>,
    arrived: Notify,
    script: Mutex<Arc<Script>>,
    /// The status every JSON batch request is answered with, if set (a receiver that does
    /// not take batches).
    refuse_batches: Mutex<Option<u16>>,
}

/// A running sink.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    shared: Arc<Shared>,
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = switchyard_core::http::decode(&headers, body.clone())
        .ok()
        .and_then(|(_, mut e)| e.pop());
    let n = {
        let mut r = shared.received.lock().unwrap();
        r.push(Received {
            at: Instant::now(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            headers: headers.clone(),
            body,
            event: event.clone(),
        });
        r.len() - 1
    };
    shared.arrived.notify_waiters();
    let script = Arc::clone(&shared.script.lock().unwrap());
    let batch = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/cloudevents-batch"));
    let refuse = (*shared.refuse_batches.lock().unwrap()).filter(|_| batch);
    let answer = match (&event, refuse) {
        (_, Some(status)) => Answer::status(status),
        (Some(e), None) => script(n, e),
        (None, None) => Answer::status(400),
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    *shared.completed.lock().unwrap() += 1;
    let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
    for (k, v) in answer.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    response
}

impl Sink {
    /// Starts a sink that answers 200 to everything.
    pub async fn ok() -> Sink {
        Sink::start(|_, _| Answer::status(200)).await
    }

    /// Starts a sink that answers with `script(request index, event)`.
    pub async fn start(
        script: impl Fn(usize, &CloudEvent) -> Answer + Send + Sync + 'static,
    ) -> Sink {
        Sink::start_at("127.0.0.1:0", script).await
    }

    /// [`Sink::start`] on address `addr` (a subscriber that comes up where one was
    /// expected).
    pub async fn start_at(
        addr: &str,
        script: impl Fn(usize, &CloudEvent) -> Answer + Send + Sync + 'static,
    ) -> Sink {
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            completed: Mutex::new(0),
            arrived: Notify::new(),
            script: Mutex::new(Arc::new(script)),
            refuse_batches: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(handle)
            // Every body, not axum's default 2 MB: events of up to 4 MiB are delivered.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // On a thread and runtime of its own, as a subscriber is a process of its own: it
        // answers while the test's thread is blocked (in `Switchyard::stop`, waiting for a
        // graceful stop that lets the attempts in flight settle).
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app).await;
            });
        });
        Sink { url, shared }
    }

    /// Starts a sink that answers `bad` until the returned switch is set, then 200.
    pub async fn switchable(bad: Answer) -> (Sink, Arc<std::sync::atomic::AtomicBool>) {
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = Arc::clone(&healthy);
        let sink = Sink::start(move |_, _| {
            if h.load(std::sync::atomic::Ordering::SeqCst) {
                Answer::status(200)
            } else {
                bad.clone()
            }
        })
        .await;
        (sink, healthy)
    }

    /// Changes how the sink answers from now on.
    pub fn set_script(
        &self,
        script: impl Fn(usize, &CloudEvent) -> Answer + Send + Sync + 'static,
    ) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// Answers every JSON batch request with `status` from now on, as a receiver that does
    /// not take batches does.
    pub fn refuse_batches(&self, status: u16) {
        *self.shared.refuse_batches.lock().unwrap() = Some(status);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Requests answered so far.
    pub fn completed(&self) -> usize {
        *self.shared.completed.lock().unwrap()
    }

    /// Ids of the events received so far, in arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter_map(|r| r.event.as_ref().map(|e| e.id.clone()))
            .collect()
    }

    /// Waits until at least `n` requests arrived, failing the test after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received();
                assert!(
                    got.len() >= n,
                    "sink got {} requests, expected {n} within {within:?}",
                    got.len()
                );
                return got;
            }
        }
    }

    /// Waits until at least `n` received requests satisfy `pred` (others, such as probes, are
    /// passed over) and returns those, failing the test after `within`.
    pub async fn wait_for_where(
        &self,
        n: usize,
        within: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.arrived.notified();
            let got: Vec<Received> = self.received().into_iter().filter(|r| pred(r)).collect();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got: Vec<Received> = self.received().into_iter().filter(|r| pred(r)).collect();
                assert!(
                    got.len() >= n,
                    "sink got {} matching requests, expected {n} within {within:?}",
                    got.len()
                );
                return got;
            }
        }
    }

    /// Asserts no more than `n` requests arrive in `window` (for "exactly n" checks after
    /// the n-th arrived).
    pub async fn assert_stays_at(&self, n: usize, window: Duration) {
        tokio::time::sleep(window).await;
        assert_eq!(
            self.received().len(),
            n,
            "more requests arrived than expected"
        );
    }
}

/// The event id and body length of each request (requests without an event left out),
/// sorted: what a test of size limits compares.
pub fn ids_and_sizes(got: &[Received]) -> Vec<(String, usize)> {
    let mut sizes: Vec<(String, usize)> = got
        .iter()
        .filter_map(|r| Some((r.event.as_ref()?.id.clone(), r.body.len())))
        .collect();
    sizes.sort();
    sizes
}

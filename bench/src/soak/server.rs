//! The server under test (started, killed with SIGKILL and restarted on the same port and
//! store) and the sampler that reads its memory, open files, store size and lag.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::sink::SinkState;
use super::traffic::Counters;

/// `switchyard serve` on a fixed port, so producers and the sampler find it after a restart.
pub(super) struct Server {
    bin: PathBuf,
    dir: PathBuf,
    data_dir: PathBuf,
    listen: String,
    child: Child,
    pub(super) pid: Arc<AtomicU32>,
    pub(super) base: String,
}

impl Server {
    pub(super) fn start(bin: &Path, dir: &Path, data_dir: &Path) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = spawn(bin, dir, data_dir, &listen)?;
        Ok(Server {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            data_dir: data_dir.to_owned(),
            pid: Arc::new(AtomicU32::new(child.id())),
            base: format!("http://{listen}"),
            listen,
            child,
        })
    }

    /// `kill -9`, then a new process on the same store. The task it returns says how long
    /// until the new one listened and until `/readyz` said ready (which waits for free space
    /// when the disk is full, so the schedule goes on meanwhile).
    pub(super) async fn kill_and_restart(&mut self) -> Result<tokio::task::JoinHandle<Value>> {
        self.child.kill()?;
        self.child.wait()?;
        let killed = Instant::now();
        let mut tries = 0;
        let child = loop {
            // The port can take a moment to be free again.
            match spawn(&self.bin, &self.dir, &self.data_dir, &self.listen) {
                Ok(child) => break child,
                Err(e) if tries < 50 => {
                    tries += 1;
                    super::progress(&format!("restart failed ({e:#}); trying again"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let listening_ms = killed.elapsed().as_secs_f64() * 1e3;
        self.pid.store(child.id(), Ordering::Relaxed);
        self.child = child;
        let client = reqwest::Client::builder().no_proxy().build()?;
        let ready_url = format!("{}/readyz", self.base);
        Ok(tokio::spawn(async move {
            let mut ready_ms = None;
            while killed.elapsed() < Duration::from_secs(300) {
                let r = client.get(&ready_url).send().await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    ready_ms = Some(killed.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            json!({"listening_ms": listening_ms, "ready_ms": ready_ms})
        }))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, dir: &Path, data_dir: &Path, listen: &str) -> Result<Child> {
    use std::io::BufRead as _;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("switchyard listening on ") {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "switchyard did not start (see {}): {line:?}",
            dir.join("server.log").display()
        );
    }
    Ok(child)
}

/// One reading, every five seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Sample {
    pub(super) t_s: f64,
    pub(super) pid: u32,
    pub(super) rss_bytes: u64,
    pub(super) fds: u64,
    /// Bytes the store's files take on disk.
    pub(super) store_bytes: u64,
    /// Events acknowledged (202) so far.
    pub(super) acked: u64,
    /// Deliveries the subscriber answered 200 so far.
    pub(super) delivered: u64,
    /// The triggers' lag (events routed but not finished), summed; -1 when unreadable.
    pub(super) lag_events: f64,
}

pub(super) struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(
        pid: Arc<AtomicU32>,
        data_dir: PathBuf,
        base: String,
        counters: Arc<Counters>,
        sink: Arc<SinkState>,
        started: Instant,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<std::sync::Mutex<Vec<Sample>>> = Arc::default();
        let task = tokio::spawn({
            let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
            async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .unwrap_or_default();
                let metrics = format!("{base}/metrics");
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let pid = pid.load(Ordering::Relaxed);
                    let lag = lag_of(&client, &metrics).await.unwrap_or(-1.0);
                    let sample = Sample {
                        t_s: started.elapsed().as_secs_f64(),
                        pid,
                        rss_bytes: crate::run::proc_usage(pid).1,
                        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                            .map_or(0, |d| d.count() as u64),
                        store_bytes: disk_usage(&data_dir),
                        acked: counters.acked_events(),
                        delivered: sink.delivered(),
                        lag_events: lag,
                    };
                    if let Ok(mut s) = samples.lock() {
                        s.push(sample);
                    }
                }
            }
        });
        Sampler {
            stop,
            samples,
            task,
        }
    }

    /// The latest reading as one line of progress.
    pub(super) fn last_line(&self) -> String {
        let s = self.samples.lock().ok().and_then(|s| s.last().cloned());
        s.map_or_else(String::new, |s| {
            format!(
                "t={:.0} s: RSS {:.1} MiB, {} fds, store {:.1} MiB, acked {}, delivered {}, lag {}",
                s.t_s,
                s.rss_bytes as f64 / 1048576.0,
                s.fds,
                s.store_bytes as f64 / 1048576.0,
                s.acked,
                s.delivered,
                s.lag_events
            )
        })
    }

    pub(super) async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn lag_of(client: &reqwest::Client, url: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("switchyard_trigger_lag_events"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Bytes the files under `dir` take on disk (allocated blocks, not their lengths).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

//! The container image, as a user runs it (issue 23): `deploy/image/build.sh` builds it with
//! podman from the binary under test, and the tests run it with a named volume for the store
//! and a configuration mounted at `/config`, deliver to subscribers on the host, restart it
//! on its volume, and stop it with SIGTERM. scripts/test installs podman and runc (Debian's);
//! where podman is missing or cannot run containers, each test says so on one line and skips.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::{Answer, Sink};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Podman with this sandbox's settings, and what a test made with it, removed when dropped.
struct Podman {
    /// Holds `containers.conf`.
    dir: tempfile::TempDir,
    containers: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl Podman {
    /// Podman, when it is installed and answers (whether it can run a container is known
    /// once an image is built: [`Podman::runs`]); otherwise `None`, having said why.
    fn new() -> Option<Podman> {
        if !common::have("podman") {
            common::skip(
                "podman is not installed (scripts/test installs Debian's podman and runc)",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // What these machines need (issue 23): runc, not crun; cgroupfs, as there is no
        // systemd; no default ulimits, which the sandbox refuses to raise. Elsewhere these are
        // harmless.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let podman = Podman {
            dir,
            containers: Vec::new(),
            volumes: Vec::new(),
            images: Vec::new(),
        };
        let info = podman.run(&["info", "--format", "{{.Host.OCIRuntime.Name}}"]);
        if !info.status.success() {
            let err = String::from_utf8_lossy(&info.stderr);
            common::skip(&format!(
                "podman cannot run here: {}",
                err.lines().last().unwrap_or("podman info failed")
            ));
            return None;
        }
        podman.remove_stale();
        Some(podman)
    }

    /// Removes what an earlier run of these tests left when it was killed before its `Drop`
    /// (its containers would hold the ports the thumbnail bundle takes): every container,
    /// pod, volume, network and image named `…switchyard-test-WHAT-PID…` whose process is
    /// gone.
    fn remove_stale(&self) {
        let stale = |name: &str| {
            let Some(at) = name.find("switchyard-test-") else {
                return false;
            };
            let rest = &name[at + "switchyard-test-".len()..];
            let Some((_, tail)) = rest.split_once('-') else {
                return false;
            };
            let pid: String = tail.chars().take_while(char::is_ascii_digit).collect();
            !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        };
        for (list, remove) in [
            (
                &["ps", "--all", "--format", "{{.Names}}"][..],
                &["rm", "--force", "--time", "0"][..],
            ),
            (
                &["pod", "ps", "--format", "{{.Name}}"][..],
                &["pod", "rm", "--force"][..],
            ),
            (
                &["volume", "ls", "--format", "{{.Name}}"][..],
                &["volume", "rm", "--force"][..],
            ),
            (
                &["network", "ls", "--format", "{{.Name}}"][..],
                &["network", "rm", "--force"][..],
            ),
            (
                &["images", "--format", "{{.Repository}}:{{.Tag}}"][..],
                &["rmi", "--force"][..],
            ),
        ] {
            let names = self.run(list);
            for name in String::from_utf8_lossy(&names.stdout).lines() {
                if stale(name) {
                    let mut args = remove.to_vec();
                    args.push(name);
                    let _ = self.run(&args);
                }
            }
        }
    }

    /// Whether `image` runs here (`BINARY --version` in it); if not, says why.
    fn runs(&self, image: &str, binary: &str) -> bool {
        let out = self.run(&["run", "--rm", "--entrypoint", binary, image, "--version"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            common::skip(&format!(
                "podman cannot run a container here: {}",
                err.lines().last().unwrap_or("podman run failed")
            ));
        }
        out.status.success()
    }

    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `podman ARGS`, which must succeed: its standard output, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        common::succeeded(&self.run(args), &format!("podman {args:?}"))
            .trim()
            .to_owned()
    }

    /// `bash SCRIPT ARGS` from the repository with this podman and `env`, which must succeed.
    fn script(&self, script: &str, args: &[&str], env: &[(&str, &str)]) {
        let out = Command::new("bash")
            .arg(repo().join(script))
            .args(args)
            .current_dir(repo())
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        common::succeeded(&out, script);
    }

    /// The container's log, standard output and error.
    fn logs(&self, name: &str) -> String {
        let out = self.run(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.run(&["rm", "--force", "--time", "0", c]);
        }
        for v in &self.volumes {
            let _ = self.run(&["volume", "rm", "--force", v]);
        }
        for i in &self.images {
            let _ = self.run(&["rmi", "--force", i]);
        }
    }
}

/// The folder of the binaries under test (`cargo test --workspace` builds the thumbnail
/// example's beside switchyard).
fn bin_dir() -> String {
    PathBuf::from(common::bin())
        .parent()
        .unwrap()
        .display()
        .to_string()
}

/// A name no other run of this test uses.
fn unique(what: &str) -> String {
    format!("switchyard-test-{what}-{}", std::process::id())
}

/// A subscriber on the host.
struct HostSink {
    sink: Sink,
    /// Set: it answers 200; unset: 503.
    up: Arc<AtomicBool>,
    /// The ids of the events it answered 200, in order.
    taken: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl HostSink {
    /// A sink on all of the host's addresses (a container reaches the host at
    /// `host.containers.internal`).
    async fn start(up: bool) -> HostSink {
        let up = Arc::new(AtomicBool::new(up));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (u, t) = (Arc::clone(&up), Arc::clone(&taken));
        let sink = Sink::start_at("0.0.0.0:0", move |_, e| {
            if u.load(Ordering::SeqCst) {
                t.lock().unwrap().push(e.id.clone());
                Answer::status(200)
            } else {
                Answer::status(503)
            }
        })
        .await;
        let port = sink
            .url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        HostSink {
            sink,
            up,
            taken,
            port,
        }
    }

    fn taken(&self) -> Vec<String> {
        self.taken.lock().unwrap().clone()
    }

    /// Waits until it has taken `n` events; then that no more come in a while.
    async fn has_taken_exactly(&self, n: usize) -> Vec<String> {
        common::eventually("the sink takes its events", Duration::from_secs(30), || {
            let t = self.taken();
            async move { (t.len() >= n).then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let t = self.taken();
        assert_eq!(t.len(), n, "{t:?}");
        t
    }
}

/// A configuration folder the image's user (10001) can read.
fn config_dir(config: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broker.yaml"), config).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.path().join("broker.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    dir
}

async fn wait_ready(base: &str, podman: &Podman, name: &str) {
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = common::client().get(&url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the container is not ready within 60 s:\n{}",
            podman.logs(name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(base: &str, id: &str) {
    let attrs = common::minimal(id);
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = common::binary(
        &common::client(),
        &format!("{base}/default/default"),
        &attrs,
    )
    .body("{}")
    .header("content-type", "application/json")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_delivers_keeps_its_store_across_a_restart_and_stops_gracefully() {
    let Some(mut podman) = Podman::new() else {
        return;
    };
    let image = format!("localhost/{}:latest", unique("image"));
    let rootfs = format!("target/image/{}", unique("rootfs"));
    podman.images.push(image.clone());
    podman.script(
        "deploy/image/build.sh",
        &[
            "switchyard",
            "--engine",
            "podman",
            "--tag",
            &image,
            "--bin-dir",
            &bin_dir(),
            "--rootfs",
            &rootfs,
        ],
        &[],
    );
    if !podman.runs(&image, "switchyard") {
        return;
    }

    // What the image says of itself.
    let user = podman.ok(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(user, "10001:10001");
    let version = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.version\"}}",
        &image,
    ]);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let health = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck.Test}}",
        &image,
    ]);
    assert!(
        health.contains("\"switchyard\",\"healthcheck\""),
        "{health}"
    );

    // `all` takes everything; `later` refuses until its switch is set, so its event waits in
    // the store across the restart.
    let all = HostSink::start(true).await;
    let later = HostSink::start(false).await;
    let (all_port, later_port) = (all.port, later.port);
    let config = config_dir(&format!(
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
  subscriber: {{uri: 'http://host.containers.internal:{all_port}/'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: later}}
spec:
  broker: default
  subscriber: {{uri: 'http://host.containers.internal:{later_port}/'}}
  delivery: {{retry: 1000, backoffPolicy: linear, backoffDelay: PT0.2S}}
"#
    ));
    let volume = unique("data");
    podman.ok(&["volume", "create", &volume]);
    podman.volumes.push(volume.clone());
    let name = unique("broker");
    let port = common::free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let data = format!("{volume}:/data");
    let conf = format!("{}:/config:ro", config.path().display());
    let run = [
        "run",
        "--detach",
        "--name",
        &name,
        "--publish",
        &publish,
        "--volume",
        &data,
        "--volume",
        &conf,
        &image,
        "--allow-unauthenticated",
        "--shutdown-drain-ms",
        "1000",
    ];
    podman.containers.push(name.clone());
    podman.ok(&run);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &podman, &name).await;

    // The image's own health check passes (the binary asks its /readyz).
    podman.ok(&["healthcheck", "run", &name]);

    post(&base, "before-restart").await;
    assert_eq!(all.has_taken_exactly(1).await, ["before-restart"]);
    later.sink.wait_for(1, Duration::from_secs(30)).await;

    // SIGTERM: a clean exit (0, not SIGKILL's 137), in about the drain (1 s): nothing waits
    // for the grace period to run out.
    let started = Instant::now();
    podman.ok(&["stop", "--time", "30", &name]);
    let took = started.elapsed();
    let code = podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let logs = podman.logs(&name);
    assert_eq!(code, "0", "exit code after SIGTERM:\n{logs}");
    assert!(
        took < Duration::from_secs(11),
        "stopped in {took:?}:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");

    // A new container on the same volume, as an upgrade makes: the event `later` had not
    // taken is in the volume's store and is delivered once `later` answers; `all`, which had
    // it, does not get it again.
    podman.ok(&["rm", &name]);
    podman.ok(&run);
    wait_ready(&base, &podman, &name).await;
    later.up.store(true, Ordering::SeqCst);
    assert_eq!(later.has_taken_exactly(1).await, ["before-restart"]);
    post(&base, "after-restart").await;
    assert_eq!(
        all.has_taken_exactly(2).await,
        ["before-restart", "after-restart"]
    );
}

/// A compose project, brought down with its volumes when dropped.
struct Compose<'a> {
    podman: &'a Podman,
    files: Vec<PathBuf>,
    project: String,
    env: Vec<(String, String)>,
}

impl Compose<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let compose = repo().join("target/test-venv/bin/podman-compose");
        let mut c = Command::new(compose);
        c.args(["--project-name", &self.project]);
        for f in &self.files {
            c.arg("--file").arg(f);
        }
        c.args(args)
            .current_dir(repo())
            .env(
                "CONTAINERS_CONF",
                self.podman.dir.path().join("containers.conf"),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }
}

impl Compose<'_> {
    /// `up --detach` with the images built, which must succeed.
    fn up(&self) {
        common::succeeded(
            &self.run(&["up", "--detach", "--no-build"]),
            "podman-compose up",
        );
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--volumes", "--timeout", "10"]);
    }
}

/// deploy/thumbnail/: its images built with its build.sh (the S3 server's on a Debian made
/// with debootstrap, as no registry is reachable), brought up with podman-compose, and the
/// quickstart's upload: the thumbnail appears and the event display shows the function's
/// reply.
///
/// These machines answer every DNS query themselves, so containers cannot find each other by
/// service name on a compose network; the test adds the bundle's overlay for such machines,
/// `host-network.yaml` (the host's network for every service, the services' names in each
/// one's /etc/hosts). Before it, `deploy/compose.yaml` (the broker alone) is brought up and
/// takes an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thumbnail_bundle_makes_a_thumbnail_in_containers() {
    let Some(mut podman) = Podman::new() else {
        return;
    };
    if !repo().join("target/test-venv/bin/podman-compose").exists() {
        common::skip(
            "podman-compose is not installed (scripts/test installs it into target/test-venv)",
        );
        return;
    }
    if !common::have("debootstrap") || !nix_is_root() {
        common::skip("the S3 server's base image needs debootstrap, as root");
        return;
    }
    // With the host's network, the services take the host's ports.
    if let Some(p) = [4566, 8080, 9090, 9091]
        .into_iter()
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_err())
    {
        common::skip(&format!(
            "port {p}, which the bundle's services take, is in use"
        ));
        return;
    }
    let images = [
        (
            "SWITCHYARD_IMAGE",
            format!("localhost/{}:latest", unique("sy")),
        ),
        (
            "THUMBNAIL_IMAGE",
            format!("localhost/{}:latest", unique("fn")),
        ),
        ("MOTO_IMAGE", format!("localhost/{}:latest", unique("s3"))),
    ];
    let env: Vec<(&str, &str)> = images.iter().map(|(k, v)| (*k, v.as_str())).collect();
    podman.images.extend(images.iter().map(|(_, v)| v.clone()));
    podman.script(
        "deploy/thumbnail/build.sh",
        &[
            "--engine",
            "podman",
            "--bin-dir",
            &bin_dir(),
            "--local-base",
        ],
        &env,
    );
    if !podman.runs(&images[0].1, "switchyard") {
        return;
    }
    let env: Vec<(String, String)> = images
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();

    // First deploy/compose.yaml, the broker alone: up, healthy, an event taken, down.
    {
        let alone = Compose {
            podman: &podman,
            files: vec![repo().join("deploy/compose.yaml")],
            project: unique("alone"),
            env: env.clone(),
        };
        alone.up();
        let broker = format!("{}_switchyard_1", alone.project);
        wait_ready("http://127.0.0.1:8080", &podman, &broker).await;
        podman.ok(&["healthcheck", "run", &broker]);
        post("http://127.0.0.1:8080", "alone").await;
    }

    let compose = Compose {
        podman: &podman,
        files: vec![
            repo().join("deploy/thumbnail/compose.yaml"),
            repo().join("deploy/thumbnail/host-network.yaml"),
        ],
        project: unique("thumb"),
        env,
    };
    compose.up();
    let broker = format!("{}_switchyard_1", compose.project);
    wait_ready("http://127.0.0.1:8080", &podman, &broker).await;

    // The quickstart's upload, from the host.
    let s3 = |args: &[&str]| {
        Command::new(common::python())
            .arg(repo().join("examples/thumbnail/s3.py"))
            .args(args)
            .env("S3_ENDPOINT", "http://127.0.0.1:4566")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap()
    };
    let sample = repo().join("examples/thumbnail/sample.jpg");
    // moto makes the buckets, the queue and the notification as it starts.
    let moto = format!("{}_s3_1", compose.project);
    common::eventually("the bucket setup", Duration::from_secs(60), || {
        let logs = podman.logs(&moto);
        async move { logs.contains("photos notifies it").then_some(()) }
    })
    .await;
    let put = s3(&[
        "put",
        "photos",
        "holiday/plage été.jpg",
        sample.to_str().unwrap(),
    ]);
    assert!(put.status.success(), "{put:?}");
    let wait = s3(&["wait", "thumbnails", "thumbnails/holiday/plage été.jpg"]);
    assert!(
        wait.status.success(),
        "no thumbnail: {wait:?}\n{}\n{}",
        podman.logs(&broker),
        podman.logs(&format!("{}_thumbnail_1", compose.project))
    );
    let display = format!("{}_display_1", compose.project);
    common::eventually(
        "the display shows the function's reply",
        Duration::from_secs(30),
        || {
            let logs = podman.logs(&display);
            async move { logs.contains("com.example.thumbnail.created").then_some(()) }
        },
    )
    .await;
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

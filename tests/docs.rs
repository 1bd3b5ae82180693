//! Docs that run: every example in README.md, spec/, examples/, docs/ and deploy/README.md is run
//! against the real binary, so a doc cannot drift from what the binary does. The convention
//! is the fenced block's info string (GitHub shows only its first word):
//!
//! - ` ```yaml `: a configuration, loaded as it is with `switchyard validate`. A block that
//!   does not define the Broker `default/default` itself is loaded next to `examples/config`
//!   (which does), as the docs say ("with a Broker `default` … (the one in examples/config)").
//! - ` ```yaml file: PATH `: a file the document's command blocks use, written at `PATH` in
//!   its working directory. `DIR/NAME.yaml`: one file of a configuration directory that
//!   several blocks of the document write; the directory is loaded once, with all of them.
//!   `NAME.yaml`: a configuration of its own, loaded alone.
//! - ` ```yaml fragment `: part of a resource (a field or two), not loadable alone: skipped.
//! - ` ```sh `: commands, run by `bash` in the document's working directory (see below).
//!   A full-line comment right after a command (no blank line between) is its stated output:
//!   each such line must match a line the command printed, in order; `…` or `...` stands for
//!   anything (ids, times), a trailing `<- note` is the reader's, and a line that ends with
//!   `,` continues on the next (a long JSON object split for reading). Other comments are
//!   prose. A command must exit 0,
//!   unless its trailing comment says `exits N`. What a block starts in the background (`&`)
//!   is stopped when the block ends.
//! - ` ```sh with: scripts/serve `: the same, with `scripts/serve` running ("With
//!   `scripts/serve` running: …"); it keeps running for the next blocks that say so and is
//!   stopped (Ctrl-C) before one that does not.
//! - ` ```sh session: NAME `: consecutive blocks with the same session run in one shell, as in
//!   one terminal: what the first starts in the background serves the next.
//! - ` ```yaml skip: REASON `, ` ```sh skip: REASON `: needs the outside world (AWS, a MinIO
//!   server): skipped, with the reason.
//!
//! Other blocks (`text`, `json`, none) are not run: outputs shown on their own, synopses,
//! diagrams.
//!
//! The working directory of a document is a new directory that holds the repository's
//! top-level entries (linked), with `target/release/` and `target/debug/` holding the binaries
//! under test; `target/release` is on `PATH` (as after `cargo install --path cli`), and
//! `SWITCHYARD_BIN_DIR` tells `scripts/serve` and the quickstart to use those binaries instead
//! of building. The commands use the fixed ports the docs name (8080 and the examples' own),
//! so they run one block at a time.
//!
//! The counts (run, skipped with reasons, failed) go to `target/docs-examples.txt`, which
//! `scripts/test` prints at the end.

mod common;
#[path = "docs/process.rs"]
mod process;
#[path = "docs/shell.rs"]
mod shell;

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process::{listening, ready, signal_group, stop_group, tail};
use shell::{Cmd, commands, first_unmatched, uncomparable};

/// How long one block (or session) may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(240);
/// The port the docs' servers listen on.
const DOCS_PORT: u16 = 8080;

/// One fenced example.
struct Example {
    /// `file:line` of its opening fence.
    place: String,
    /// The language, the info string's first word.
    lang: String,
    /// The rest of the info string.
    info: String,
    text: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned()
}

/// The Markdown files whose examples run.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md"), root.join("deploy/README.md")];
    for dir in ["spec", "examples", "docs"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).expect("a docs folder") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "md") {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    // While writing one document: `SWITCHYARD_DOCS_ONLY=docs/x.md cargo test --test docs`.
    if let Ok(only) = std::env::var("SWITCHYARD_DOCS_ONLY") {
        files.retain(|f| f.ends_with(&only));
    }
    files
}

/// The fenced blocks of `file` that have a language.
fn examples(file: &Path) -> Vec<Example> {
    let text = fs::read_to_string(file).expect("a readable doc");
    let rel = file
        .strip_prefix(repo())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                let info = info.trim();
                let (lang, rest) = info.split_once(' ').unwrap_or((info, ""));
                open = Some((
                    i + 1,
                    lang.to_owned(),
                    rest.trim().to_owned(),
                    String::new(),
                ));
            }
            (Some((start, lang, info, body)), Some(_)) => {
                if !lang.is_empty() {
                    out.push(Example {
                        place: format!("{rel}:{start}"),
                        lang: std::mem::take(lang),
                        info: std::mem::take(info),
                        text: std::mem::take(body),
                    });
                }
                open = None;
            }
            (Some((_, _, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// What the examples came to.
#[derive(Default)]
struct Tally {
    yaml_run: usize,
    sh_run: usize,
    commands: usize,
    outputs: usize,
    skipped: Vec<String>,
    failed: Vec<String>,
}

// ---- YAML ----------------------------------------------------------------------------------

/// Whether `text` defines the Broker `default` in namespace `default`.
fn defines_default_broker(text: &str) -> bool {
    switchyard_core::config::parse_text(text, "example.yaml").is_ok_and(|resources| {
        resources.iter().any(|r| {
            r.kind() == "Broker"
                && r.metadata().name == "default"
                && r.metadata().namespace == "default"
        })
    })
}

/// Loads `files` (name, text) as one configuration directory with `switchyard validate`;
/// the failure's text if it does not load.
fn validate(files: &[(String, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("written");
    }
    if !files.iter().any(|(_, text)| defines_default_broker(text)) {
        let broker = fs::read_to_string(repo().join("examples/config/broker.yaml"))
            .expect("examples/config/broker.yaml");
        fs::write(dir.path().join("examples-config-broker.yaml"), broker).expect("written");
    }
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .expect("switchyard runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    } else if let Some(line) = listed.lines().find(|l| l.starts_with("not ready: ")) {
        // It loads, but a reader copying it would get something that does not run.
        Err(line.to_owned())
    } else {
        Ok(())
    }
}

/// The shell script that runs `blocks`: each command's output goes to `OUT/N.out` and its
/// exit status to `OUT/N.rc` (N counts from 1 across the blocks); the script stops at the
/// first command whose status is not the stated one. Background commands run as written.
fn script(blocks: &[Block], out: &Path) -> String {
    let mut script = String::new();
    let mut n = 0;
    for (place, commands) in blocks {
        for cmd in commands {
            n += 1;
            script.push_str(&format!("# {place}, command {n}\n"));
            if cmd.background {
                script.push_str(&cmd.text);
                script.push('\n');
                continue;
            }
            let file = out.join(n.to_string());
            script.push_str(&format!(
                "{{\n{}\n}} >'{f}.out' 2>&1 </dev/null\n\
                 rc=$?; echo $rc >'{f}.rc'; [ $rc -eq {} ] || exit 90\n",
                cmd.text,
                cmd.status,
                f = file.display()
            ));
        }
    }
    script
}

/// Checks what each command of `blocks` printed (in `out`, as [`script`] wrote it) against
/// the doc, a failure per block.
fn check(blocks: &[Block], out: &Path, timed_out: bool, shell_log: &str, tally: &mut Tally) {
    let mut n = 0;
    for (place, commands) in blocks {
        tally.sh_run += 1;
        let mut failure = None;
        for cmd in commands {
            n += 1;
            tally.commands += 1;
            if !cmd.expected.is_empty() {
                tally.outputs += 1;
            }
            let first_line = cmd.text.lines().next().unwrap_or_default();
            if failure.is_none()
                && let Some(bad) = uncomparable(cmd)
            {
                failure = Some(format!("{place}: `{first_line}`: {bad}"));
            }
            if cmd.background || failure.is_some() {
                continue;
            }
            let file = out.join(n.to_string());
            let output = fs::read_to_string(file.with_extension("out"))
                .map(|s| s.replace('\r', ""))
                .unwrap_or_default();
            let status = fs::read_to_string(file.with_extension("rc"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            let what = match status {
                None if timed_out => Some(format!(
                    "did not finish within {} s",
                    BLOCK_TIMEOUT.as_secs()
                )),
                None => Some("did not run".to_owned()),
                Some(s) if s != cmd.status => {
                    Some(format!("exited {s}, the doc says {}", cmd.status))
                }
                Some(_) => first_unmatched(&cmd.expected, &output)
                    .map(|want| format!("printed no line like `{want}`")),
            };
            if let Some(what) = what {
                failure = Some(format!(
                    "{place}: `{first_line}` {what}; it printed:\n{}  the shell's own output:\n{}",
                    tail(&output, 30),
                    tail(shell_log, 20)
                ));
            }
        }
        tally.failed.extend(failure);
    }
}

// ---- A document ----------------------------------------------------------------------------

/// A configuration directory that several blocks of one document write: its path, the place
/// of its first block, and its files (name, text).
type Directory = (String, String, Vec<(String, String)>);

/// A `sh` block to run: its place and its commands.
type Block = (String, Vec<Cmd>);

/// One document's examples, run in order in its working directory.
struct Document {
    work: tempfile::TempDir,
    directories: Vec<Directory>,
    /// `scripts/serve`, while blocks `with:` it run.
    serve: Option<Child>,
    /// Consecutive blocks of one session, not run yet: the session's name and its blocks.
    session: Option<(String, Vec<Block>)>,
}

impl Document {
    fn new() -> Document {
        let work = tempfile::tempdir().expect("a temporary directory");
        let root = repo();
        for entry in fs::read_dir(&root).expect("the repository") {
            let name = entry.expect("an entry").file_name();
            if name.to_string_lossy().starts_with('.') || name == "target" {
                continue;
            }
            symlink(root.join(&name), work.path().join(&name)).expect("linked");
        }
        let built = Path::new(common::bin())
            .parent()
            .expect("the binaries' folder");
        for profile in ["release", "debug"] {
            let dir = work.path().join("target").join(profile);
            fs::create_dir_all(&dir).expect("created");
            for name in ["switchyard", "thumbnail", "event-display"] {
                if built.join(name).exists() {
                    symlink(built.join(name), dir.join(name)).expect("linked");
                }
            }
        }
        if root.join("target/test-venv").exists() {
            symlink(
                root.join("target/test-venv"),
                work.path().join("target/test-venv"),
            )
            .expect("linked");
        }
        Document {
            work,
            directories: Vec::new(),
            serve: None,
            session: None,
        }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// A command for this document's working directory and environment.
    fn command(&self, program: &str) -> Command {
        let bins = self.dir().join("target/release");
        let path = std::env::var("PATH").unwrap_or_default();
        let mut command = Command::new(program);
        command
            .current_dir(self.dir())
            .env("PATH", format!("{}:{path}", bins.display()))
            .env("SWITCHYARD_BIN_DIR", &bins)
            .stdin(Stdio::null())
            .process_group(0);
        command
    }

    fn yaml(&mut self, example: Example, tally: &mut Tally) {
        if example.info == "fragment" {
            tally
                .skipped
                .push(format!("{}: a fragment of a resource", example.place));
            return;
        }
        if let Some(reason) = example.info.strip_prefix("skip:") {
            tally
                .skipped
                .push(format!("{}: {}", example.place, reason.trim()));
            return;
        }
        if let Some(path) = example.info.strip_prefix("file:") {
            let path = path.trim();
            let target = self.dir().join(path);
            fs::create_dir_all(target.parent().expect("a folder")).expect("created");
            fs::write(&target, &example.text).expect("written");
            let Some((dir, name)) = path.rsplit_once('/') else {
                // A file of its own, loaded alone.
                tally.yaml_run += 1;
                if let Err(e) = validate(&[(path.to_owned(), example.text)]) {
                    tally.failed.push(format!("{}: {e}", example.place));
                }
                return;
            };
            let file = (name.to_owned(), example.text);
            match self.directories.iter_mut().find(|(d, _, _)| d == dir) {
                Some((_, _, files)) => files.push(file),
                None => self
                    .directories
                    .push((dir.to_owned(), example.place, vec![file])),
            }
            return;
        }
        tally.yaml_run += 1;
        if let Err(e) = validate(&[("example.yaml".to_owned(), example.text)]) {
            tally.failed.push(format!("{}: {e}", example.place));
        }
    }

    fn sh(&mut self, example: Example, tally: &mut Tally) {
        let info = example.info.trim();
        if let Some(reason) = info.strip_prefix("skip:") {
            self.flush(tally);
            tally
                .skipped
                .push(format!("{}: {}", example.place, reason.trim()));
            return;
        }
        let commands = commands(&example.text);
        if let Some(name) = info.strip_prefix("session:") {
            self.stop_serve();
            let name = name.trim().to_owned();
            if self.session.as_ref().is_some_and(|(n, _)| *n != name) {
                self.flush(tally);
            }
            let (_, blocks) = self.session.get_or_insert_with(|| (name, Vec::new()));
            blocks.push((example.place, commands));
            return;
        }
        self.flush(tally);
        match info {
            // Ctrl-C on `scripts/serve` before a block that does not run with it.
            "" => self.stop_serve(),
            "with: scripts/serve" => {
                if let Err(e) = self.start_serve() {
                    tally.failed.push(format!("{}: {e}", example.place));
                    return;
                }
            }
            other => {
                tally
                    .failed
                    .push(format!("{}: unknown info string `{other}`", example.place));
                return;
            }
        }
        self.run(vec![(example.place, commands)], tally);
    }

    /// Runs the pending session, if any.
    fn flush(&mut self, tally: &mut Tally) {
        if let Some((_, blocks)) = self.session.take() {
            self.run(blocks, tally);
        }
    }

    fn start_serve(&mut self) -> Result<(), String> {
        if self.serve.is_some() {
            return Ok(());
        }
        if listening(DOCS_PORT) {
            return Err(format!(
                "port {DOCS_PORT} is in use; stop what listens there to run the docs"
            ));
        }
        let log = File::create(self.dir().join("target/serve.log")).expect("a log");
        let child = self
            .command("bash")
            .arg("scripts/serve")
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .spawn()
            .expect("bash runs");
        self.serve = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ready(DOCS_PORT) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.serve.as_mut().map(Child::try_wait) {
                self.serve = None;
                let log = fs::read_to_string(self.dir().join("target/serve.log"));
                return Err(format!(
                    "scripts/serve ended ({status}):\n{}",
                    tail(&log.unwrap_or_default(), 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop_serve();
        Err("scripts/serve was not ready within 60 s".to_owned())
    }

    /// Stops `scripts/serve` as Ctrl-C would, and waits for it.
    fn stop_serve(&mut self) {
        if let Some(mut child) = self.serve.take() {
            signal_group(child.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stop_group(child.id());
            let _ = child.wait();
        }
    }

    /// Runs blocks (one, or a session's) in one shell and checks each command.
    fn run(&mut self, blocks: Vec<Block>, tally: &mut Tally) {
        if self.serve.is_none() && listening(DOCS_PORT) {
            // Something the last block started outlived it.
            let place = &blocks[0].0;
            tally.failed.push(format!(
                "{place}: port {DOCS_PORT} is still in use when the block starts"
            ));
            return;
        }
        let out = tempfile::tempdir().expect("a temporary directory");
        let script_path = out.path().join("script.sh");
        fs::write(&script_path, script(&blocks, out.path())).expect("written");
        let log_path = out.path().join("shell.log");
        let log = File::create(&log_path).expect("a log");
        let mut child = self
            .command("bash")
            .arg(&script_path)
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .spawn()
            .expect("bash runs");
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let timed_out = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false;
            }
            if Instant::now() > deadline {
                break true;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        stop_group(child.id());
        let _ = child.wait();
        let shell_log = fs::read_to_string(&log_path).unwrap_or_default();
        check(&blocks, out.path(), timed_out, &shell_log, tally);
    }

    /// Loads the directories the document's `file:` blocks wrote, and stops what still runs.
    fn finish(mut self, tally: &mut Tally) {
        self.flush(tally);
        self.stop_serve();
        for (dir, place, files) in std::mem::take(&mut self.directories) {
            tally.yaml_run += 1;
            if let Err(e) = validate(&files) {
                tally
                    .failed
                    .push(format!("{place} (the directory {dir}/): {e}"));
            }
        }
    }
}

#[test]
fn every_example_in_the_docs_runs() {
    assert!(
        !listening(DOCS_PORT),
        "port {DOCS_PORT} is in use; the docs' examples need it: stop what listens there"
    );
    let mut tally = Tally::default();
    for file in documents() {
        let examples = examples(&file);
        if !examples.iter().any(|e| e.lang == "yaml" || e.lang == "sh") {
            continue;
        }
        let mut doc = Document::new();
        for example in examples {
            match example.lang.as_str() {
                "yaml" => doc.yaml(example, &mut tally),
                "sh" => doc.sh(example, &mut tally),
                _ => {}
            }
        }
        doc.finish(&mut tally);
    }
    let mut summary = format!(
        "docs: {} YAML examples loaded; {} command blocks run ({} commands, {} stated outputs \
         compared); {} skipped; {} failed\n",
        tally.yaml_run,
        tally.sh_run,
        tally.commands,
        tally.outputs,
        tally.skipped.len(),
        tally.failed.len()
    );
    for s in &tally.skipped {
        summary.push_str(&format!("  skipped {s}\n"));
    }
    for f in &tally.failed {
        summary.push_str(&format!("  FAILED {f}\n"));
    }
    let target = repo().join("target");
    let _ = fs::create_dir_all(&target);
    let _ = fs::write(target.join("docs-examples.txt"), &summary);
    // A floor, so a change that stops this finding the examples cannot pass unnoticed.
    assert!(
        std::env::var_os("SWITCHYARD_DOCS_ONLY").is_some()
            || (tally.yaml_run >= 15 && tally.sh_run >= 10),
        "too few examples found: {summary}"
    );
    assert!(tally.failed.is_empty(), "{summary}");
}

/// The number after `key` in `text` (`--uid 10001`, `fsGroup: 10001`).
fn number_after(text: &str, key: &str) -> Option<u32> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The file `name` of the ConfigMap in `manifest`: the block under `name: |`, unindented.
fn config_map_file(manifest: &str, name: &str) -> Option<String> {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != format!("{name}: |"));
    lines.next()?;
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
    let text: String = body.iter().map(|l| format!("{}\n", &l[4..])).collect();
    (!text.is_empty()).then_some(text)
}

#[test]
fn the_kubernetes_manifest_runs_as_the_image_user_gives_it_the_volume_and_loads() {
    let dockerfile = fs::read_to_string(repo().join("deploy/Dockerfile")).expect("the Dockerfile");
    let manifest =
        fs::read_to_string(repo().join("deploy/kubernetes/switchyard.yaml")).expect("the manifest");
    // `USER 10001:10001`
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image's USER");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (u32, u32) = (uid.parse().expect("a uid"), gid.parse().expect("a gid"));
    assert_eq!(number_after(&manifest, "runAsUser:"), Some(uid));
    assert_eq!(number_after(&manifest, "runAsGroup:"), Some(gid));
    // Without fsGroup a fresh volume belongs to root and the non-root user cannot write it.
    assert_eq!(number_after(&manifest, "fsGroup:"), Some(gid));
    // The configuration the ConfigMap mounts at /config loads.
    let config = config_map_file(&manifest, "broker.yaml").expect("the ConfigMap's broker.yaml");
    validate(&[("broker.yaml".to_owned(), config)]).expect("the ConfigMap's config loads");
}

/// The image's and the compose file's health checks run without a shell (the image has none):
/// each is the binary's own `healthcheck`, and that command passes against a running server.
#[test]
fn the_health_checks_of_the_image_and_compose_run_the_binary_and_pass() {
    let dockerfile = fs::read_to_string(repo().join("deploy/Dockerfile")).expect("the Dockerfile");
    let compose = fs::read_to_string(repo().join("deploy/compose.yaml")).expect("compose.yaml");
    let compose: serde_json::Value = serde_norway::from_str(&compose).expect("compose is YAML");
    let mut checks: Vec<Vec<String>> = Vec::new();
    let from_compose: Vec<String> = compose["services"]["switchyard"]["healthcheck"]["test"]
        .as_array()
        .expect("a health check test")
        .iter()
        .map(|v| v.as_str().expect("strings").to_owned())
        .collect();
    assert_eq!(from_compose[0], "CMD", "not CMD-SHELL: {from_compose:?}");
    checks.push(from_compose[1..].to_vec());
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    let json = &line[line.find("CMD [").expect("exec form") + 4..];
    checks.push(serde_json::from_str(json).expect("a JSON array"));
    let sy = common::Switchyard::start(common::TWO_BROKERS);
    for check in checks {
        assert_eq!(check[0], "switchyard", "{check:?}");
        // In the container the server is on 127.0.0.1:8080; here on the test's port.
        let out = Command::new(common::bin())
            .args(&check[1..])
            .args(["--server", &sy.base])
            .output()
            .expect("ran");
        assert!(out.status.success(), "{check:?}: {out:?}");
    }
}

/// The systemd unit: `systemd-analyze verify` takes it without a word, its exposure score
/// (`systemd-analyze security`) stays "OK" (at most 2.0 of 10), and its `ExecStart` command
/// line serves (with this test's directories and port).
#[test]
#[allow(clippy::print_stderr)]
fn the_systemd_unit_verifies_is_hardened_and_its_command_line_serves() {
    let unit =
        fs::read_to_string(repo().join("deploy/systemd/switchyard.service")).expect("the unit");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (Debian's systemd package has it)");
        return;
    }
    let dir = tempfile::tempdir().expect("a directory");
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let local = unit.replace("/usr/local/bin/switchyard", common::bin());
    let path = dir.path().join("switchyard.service");
    fs::write(&path, &local).expect("written");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("ran");
    assert!(verify.status.success(), "{verify:?}");
    assert!(
        verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("ran");
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for switchyard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");

    // The command line itself: the unit's flags, this test's paths and a free port.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let config = dir.path().join("etc");
    fs::create_dir_all(&config).expect("created");
    fs::copy(
        repo().join("examples/config/broker.yaml"),
        config.join("broker.yaml"),
    )
    .expect("copied");
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| match a {
            "/etc/switchyard" => config.display().to_string(),
            "/var/lib/switchyard" => dir.path().join("state").display().to_string(),
            "127.0.0.1:8080" => "127.0.0.1:0".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let mut child = Command::new(common::bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("started");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    common::signal(child.id(), "-TERM");
    let status = child.wait().expect("exited");
    assert!(
        line.starts_with("switchyard listening on "),
        "{args:?}: {line}"
    );
    assert!(status.success(), "a graceful stop: {status:?}");
}

/// Every Kubernetes manifest validates offline against the API's schemas, strictly (no
/// field the API does not know), with `kubernetes-validate` (which `scripts/test` installs in
/// `target/test-venv`); and the JetStream mode's configuration loads.
#[test]
#[allow(clippy::print_stderr)]
fn every_kubernetes_manifest_validates_against_the_api_schemas() {
    let venv = repo().join("target/test-venv/bin/kubernetes-validate");
    let program = if venv.exists() {
        venv.display().to_string()
    } else {
        "kubernetes-validate".to_owned()
    };
    let mut manifests = Vec::new();
    let mut stack = vec![repo().join("deploy/kubernetes")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("a folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                manifests.push(path);
            }
        }
    }
    assert!(manifests.len() >= 2, "{manifests:?}");
    let jetstream = fs::read_to_string(repo().join("deploy/kubernetes/jetstream/switchyard.yaml"))
        .expect("the JetStream manifest");
    let files: Vec<(String, String)> = ["broker.yaml", "identity.yaml"]
        .iter()
        .map(|n| {
            let text = config_map_file(&jetstream, n).unwrap_or_else(|| panic!("{n}"));
            ((*n).to_owned(), text)
        })
        .collect();
    validate(&files).expect("the JetStream ConfigMap's config loads");
    let Ok(out) = Command::new(&program)
        .args(["--strict", "--quiet"])
        .args(&manifests)
        .output()
    else {
        eprintln!(
            "skipped: kubernetes-validate is not installed (scripts/test installs it from PyPI)"
        );
        return;
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

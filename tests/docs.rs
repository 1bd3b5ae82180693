//! Docs that run: every YAML example in README.md, spec/, examples/ and deploy/ is loaded by
//! the real binary (`switchyard validate`), so a doc cannot drift from what the binary
//! accepts. The convention, in a fenced block's info string:
//!
//! - ` ```yaml `: a configuration, loaded as it is. A block that does not define the Broker
//!   `default/default` itself is loaded next to `examples/config` (which does), as the docs
//!   say ("with a Broker `default` … (the one in examples/config)").
//! - ` ```yaml file: DIR/NAME.yaml `: one file of a configuration directory that several
//!   blocks of the same document write; the directory is loaded once, with all of them.
//! - ` ```yaml fragment `: part of a resource (a field or two), not loadable alone: skipped.
//! - ` ```yaml skip: REASON `: loadable only with the outside world: skipped, with the reason.
//!
//! The counts (run, skipped with reasons, failed) go to `target/docs-examples.txt`, which
//! `scripts/test` prints at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced example.
struct Example {
    /// `file:line` of its opening fence.
    place: String,
    /// The info string after the language.
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
    for dir in ["spec", "examples"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("a docs folder") {
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
    files
}

/// The fenced YAML blocks of `file`.
fn yaml_examples(file: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(file).expect("a readable doc");
    let rel = file
        .strip_prefix(repo())
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```yaml") {
                    open = Some((i + 1, info.trim().to_owned(), String::new()));
                }
            }
            Some((start, info, body)) => {
                if line.trim_start().starts_with("```") {
                    out.push(Example {
                        place: format!("{rel}:{start}"),
                        info: std::mem::take(info),
                        text: std::mem::take(body),
                    });
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

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
        std::fs::write(dir.path().join(name), text).expect("written");
    }
    if !files.iter().any(|(_, text)| defines_default_broker(text)) {
        let broker = std::fs::read_to_string(repo().join("examples/config/broker.yaml"))
            .expect("examples/config/broker.yaml");
        std::fs::write(dir.path().join("examples-config-broker.yaml"), broker).expect("written");
    }
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .expect("switchyard runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A configuration directory that several blocks of one document write: its path, the place
/// of its first block, and its files (name, text).
type Directory = (String, String, Vec<(String, String)>);

#[test]
fn every_yaml_example_in_the_docs_loads() {
    let (mut run, mut skipped, mut failed) = (0usize, Vec::new(), Vec::new());
    for file in documents() {
        // Blocks that write files of one directory, by directory: loaded together.
        let mut directories: Vec<Directory> = Vec::new();
        for example in yaml_examples(&file) {
            if example.info == "fragment" {
                skipped.push(format!("{}: a fragment of a resource", example.place));
                continue;
            }
            if let Some(reason) = example.info.strip_prefix("skip:") {
                skipped.push(format!("{}: {}", example.place, reason.trim()));
                continue;
            }
            if let Some(path) = example.info.strip_prefix("file:") {
                let (dir, name) = path.trim().rsplit_once('/').unwrap_or(("", path.trim()));
                let name = (name.to_owned(), example.text);
                match directories.iter_mut().find(|(d, _, _)| d == dir) {
                    Some((_, _, files)) => files.push(name),
                    None => directories.push((dir.to_owned(), example.place, vec![name])),
                }
                continue;
            }
            run += 1;
            if let Err(e) = validate(&[("example.yaml".to_owned(), example.text)]) {
                failed.push(format!("{}: {e}", example.place));
            }
        }
        for (dir, place, files) in directories {
            run += 1;
            if let Err(e) = validate(&files) {
                failed.push(format!("{place} (the directory {dir}/): {e}"));
            }
        }
    }
    let mut summary = format!(
        "docs: {run} YAML examples loaded, {} skipped, {} failed\n",
        skipped.len(),
        failed.len()
    );
    for s in &skipped {
        summary.push_str(&format!("  skipped {s}\n"));
    }
    for f in &failed {
        summary.push_str(&format!("  FAILED {f}\n"));
    }
    let target = repo().join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("docs-examples.txt"), &summary);
    // A floor, so a change that stops this finding the examples cannot pass unnoticed.
    assert!(run >= 15, "too few examples found: {summary}");
    assert!(failed.is_empty(), "{summary}");
}

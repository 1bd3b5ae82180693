//! Every input kept for a target — the minimised corpus the fuzzer grew (`corpus/<target>/`)
//! and every input that once made a target fail or hang (`found/<target>/`) — run through it
//! as an ordinary test, so a finding fixed stays fixed: an input that panics fails the test,
//! and so does one that runs longer than [`PER_INPUT`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// The longest one input may take. AFL calls an input that takes over a second a hang, in a
/// release build; this is a debug build, some tens of times slower, and runs beside other
/// tests, so the bound is wide: it catches a loop that does not end or a blow-up that came
/// back, not a slow input.
const PER_INPUT: Duration = Duration::from_secs(30);

/// What the worker thread says about each input.
enum Report {
    /// It starts on this input.
    Starting(String, PathBuf),
    /// The input it started on returned (`true`) or panicked (`false`).
    Done(bool),
}

#[test]
fn every_kept_input_passes_its_target_in_bounded_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).to_owned();
    let (tx, rx) = mpsc::channel();
    // The inputs run on a thread of their own, so that one that does not end can be named
    // here instead of hanging the suite.
    let worker = std::thread::spawn(move || {
        for (name, target) in switchyard_fuzz::TARGETS {
            for folder in ["corpus", "found"] {
                let dir = root.join(folder).join(name);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let data = std::fs::read(&path).expect("a readable input");
                    if tx.send(Report::Starting((*name).to_owned(), path)).is_err() {
                        return;
                    }
                    let result = std::panic::catch_unwind(|| target(&data));
                    if tx.send(Report::Done(result.is_ok())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut ran = 0;
    while let Ok(report) = rx.recv() {
        let Report::Starting(name, path) = report else {
            unreachable!("the worker reports a start before each result");
        };
        match rx.recv_timeout(PER_INPUT) {
            Ok(Report::Done(true)) => ran += 1,
            Ok(Report::Done(false)) => panic!("{name}: {} fails", path.display()),
            Ok(Report::Starting(..)) => unreachable!("one input at a time"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{name}: {} runs longer than {PER_INPUT:?}", path.display())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{name}: {} ended the worker", path.display())
            }
        }
    }
    // The worker ended: by running out of inputs, or by failing outside a target (an input
    // it could not read), which must fail the test too.
    worker.join().expect("the worker read every input");
    assert!(
        ran > 0,
        "no corpus found under {}",
        env!("CARGO_MANIFEST_DIR")
    );
}

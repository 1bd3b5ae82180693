//! Progress of a long operation (a replay, a redrive, a purge) on standard error: a counter
//! rewritten in place on a terminal, a plain line at most every second otherwise (a log, a
//! pipe), and a last line when it ends.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a line is written when the output is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// A counter of done out of a total (when known).
pub struct Progress {
    label: String,
    total: Option<u64>,
    tty: bool,
    last: Option<Instant>,
    shown: Option<u64>,
}

impl Progress {
    /// A counter for `label`, out of `total` when it is known.
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        Progress {
            label: label.to_owned(),
            total,
            tty: std::io::stderr().is_terminal(),
            last: None,
            shown: None,
        }
    }

    fn text(&self, done: u64) -> String {
        match self.total {
            Some(total) if total > 0 => {
                let percent = done.saturating_mul(100) / total;
                format!("{}: {done} of {total} ({percent}%)", self.label)
            }
            _ => format!("{}: {done}", self.label),
        }
    }

    /// `done` so far.
    pub fn update(&mut self, done: u64) {
        if self.shown == Some(done) {
            return;
        }
        let now = Instant::now();
        if !self.tty && self.last.is_some_and(|l| now - l < PLAIN_EVERY) {
            return;
        }
        self.last = Some(now);
        self.shown = Some(done);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{}", self.text(done))
        } else {
            writeln!(err, "{}", self.text(done))
        };
        let _ = err.flush();
    }

    /// Ends the counter at `done`, with `how` (`done`, `cancelled`, …).
    pub fn finish(self, done: u64, how: &str) {
        let mut err = std::io::stderr().lock();
        let text = self.text(done);
        let _ = if self.tty {
            writeln!(err, "\r\x1b[2K{text}, {how}")
        } else {
            writeln!(err, "{text}, {how}")
        };
    }
}

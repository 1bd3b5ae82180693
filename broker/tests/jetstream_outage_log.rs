//! What an operator reads in the log while the JetStream cluster cannot answer: one line at
//! info when the outage begins and one when it ends, however many waits it spans.
//!
//! A test binary of its own: the log lines are caught with a subscriber for this thread, and
//! tracing caches which call sites are wanted process-wide, so another test logging from the
//! same call sites on another thread could hide a line from it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_broker::jetstream::{SIDE_TABLE_PATIENCE, when_settled};
use switchyard_broker::log::LogError;

/// What the subscriber writes, kept for the test to read.
#[derive(Clone, Debug, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// The lines so far, and how many say that JetStream is not ready and that it is again.
    fn told(&self) -> (String, (usize, usize)) {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let told = (
            text.matches("JetStream is not ready").count(),
            text.matches("JetStream is ready again").count(),
        );
        (text, told)
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_told_once_at_info_when_it_begins_and_once_when_it_ends() {
    let lines = Lines::default();
    let writer = lines.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let unavailable = || async { Err::<(), _>(LogError::Unavailable("no leader".into())) };
    let available = || async { Ok::<(), LogError>(()) };

    // One outage through three waits that each run out of patience, as the pause follow
    // loop's do, then two reads that are answered.
    for _ in 0..3 {
        let got = when_settled(SIDE_TABLE_PATIENCE, "read", unavailable).await;
        assert!(matches!(got, Err(LogError::Unavailable(_))));
    }
    for _ in 0..2 {
        let got = when_settled(SIDE_TABLE_PATIENCE, "read", available).await;
        assert!(got.is_ok());
    }
    let (text, told) = lines.told();
    assert_eq!(told, (1, 1), "{text}");

    // A second outage, over within one wait, is told again.
    let calls = AtomicU32::new(0);
    let got = when_settled(SIDE_TABLE_PATIENCE, "read", || async {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Err(LogError::Unavailable("no leader".into())),
            _ => Ok(()),
        }
    })
    .await;
    assert!(got.is_ok());
    let (text, told) = lines.told();
    assert_eq!(told, (2, 2), "{text}");
    // The tries between are at debug, below what the subscriber takes.
    assert!(!text.contains("still not ready"), "{text}");
}

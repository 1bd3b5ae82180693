//! The one way Switchyard runs background tasks (sources' consumers and pollers, the stream
//! sinks' helpers, the dispatcher's loops, the server's housekeeping): spawned into a
//! [`Tasks`], which aborts them and waits for each to end at [`shutdown`](Tasks::shutdown),
//! and aborts them when dropped. A task that panics is logged at once, naming its owner.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Background tasks with one owner.
#[derive(Debug)]
pub struct Tasks {
    owner: &'static str,
    /// A watcher per task: it awaits the task, logs a panic, and aborts it (and waits for it
    /// to end) when `stop` turns true.
    set: JoinSet<()>,
    stop: watch::Sender<bool>,
}

/// Aborts the task it holds when dropped (when its watcher is aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Tasks {
    /// No tasks yet; `owner` names them in logs (`sources`, `dispatcher`, …).
    pub fn new(owner: &'static str) -> Tasks {
        Tasks {
            owner,
            set: JoinSet::new(),
            stop: watch::Sender::new(false),
        }
    }

    /// Runs `task` until it ends, or until this is shut down or dropped.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        while self.set.try_join_next().is_some() {}
        let owner = self.owner;
        let mut stop = self.stop.subscribe();
        self.set.spawn(async move {
            let mut task = AbortOnDrop(tokio::spawn(task));
            // Stopping wins over a task that has not started yet: it then never runs.
            let ended = tokio::select! {
                biased;
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    task.0.abort();
                    (&mut task.0).await
                }
                ended = &mut task.0 => ended,
            };
            if let Err(e) = ended
                && e.is_panic()
            {
                tracing::error!(owner, error = %e, "a background task panicked and has stopped (a bug: please report it)");
            }
        });
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits up to `within` for every task to end on its own, then aborts those still
    /// running and waits until each has ended.
    pub async fn finish(mut self, within: std::time::Duration) {
        let all_ended = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all_ended).await.is_err() {
            tracing::warn!(
                owner = self.owner,
                running = self.set.len(),
                "tasks did not end in time; stopping them"
            );
        }
        self.shutdown().await;
    }

    /// Aborts every task and waits until each has ended.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        while self.set.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Sets its flag when dropped: a task holding one has ended.
    struct Ended(Arc<AtomicBool>);

    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shutdown_and_drop_end_every_task() {
        let (a, b) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut tasks = Tasks::new("test");
        let guard = Ended(Arc::clone(&a));
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        tasks.shutdown().await;
        assert!(
            a.load(Ordering::SeqCst),
            "shutdown waits for the task to end"
        );

        let mut tasks = Tasks::new("test");
        let guard = Ended(Arc::clone(&b));
        tasks.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        drop(tasks);
        for _ in 0..100 {
            if b.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("dropping the tasks did not end the task");
    }
}

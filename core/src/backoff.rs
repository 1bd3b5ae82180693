//! The one backoff of every loop that waits for something to come back: the store after a
//! failed write, a server that cannot be reached. (A trigger's delivery retries follow their
//! own `DeliverySpec` formula, in `switchyard_triggers::delivery`.)

use std::time::Duration;

/// Pauses that double from `initial` up to `max`, and start over after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waiting for the local store (a full disk, a busy writer): 50 ms doubling to 5 s.
    pub const STORE: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

    /// Pauses from `initial`, doubling, never above `max`.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The pause before the next try; the one after it is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// After a success: the next pause is the first again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let ms: Vec<u128> = (0..5).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(200));
        let mut store = Backoff::STORE;
        assert_eq!(store.next_pause(), Duration::from_millis(50));
    }
}

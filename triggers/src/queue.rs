//! A trigger's queue of matched offsets, in delivery order.
//!
//! The first [`OffsetQueue::hot_limit`] entries keep their decoded event, so the hot path
//! never reads the log; past that, only offsets are kept, and consecutive offsets share one
//! range entry. A trigger with a million queued events from an unbroken stretch of the log
//! holds one 24-byte entry for them, not a million: memory goes to offsets only when the
//! filter leaves gaps between them.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use switchyard_core::CloudEvent;

/// One entry: an offset with its event, or a run of offsets whose events are in the log.
#[derive(Debug)]
enum Entry {
    Hot(u64, Arc<CloudEvent>),
    Cold(Range<u64>),
}

/// Offsets waiting for delivery, oldest first.
#[derive(Debug)]
pub(crate) struct OffsetQueue {
    entries: VecDeque<Entry>,
    /// Offsets held, with or without their event.
    len: usize,
    /// Offsets pushed while fewer than this are queued keep their event.
    hot_limit: usize,
}

impl OffsetQueue {
    /// An empty queue that keeps the events of up to `hot_limit` entries.
    pub(crate) fn new(hot_limit: usize) -> Self {
        OffsetQueue {
            entries: VecDeque::new(),
            len: 0,
            hot_limit,
        }
    }

    /// How many offsets are queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The oldest queued offset.
    pub(crate) fn front(&self) -> Option<u64> {
        self.entries.front().map(|e| match e {
            Entry::Hot(o, _) => *o,
            Entry::Cold(r) => r.start,
        })
    }

    /// Queues `offset` last; its event is kept while the queue is short.
    pub(crate) fn push_back(&mut self, offset: u64, event: &Arc<CloudEvent>) {
        self.len += 1;
        if self.len <= self.hot_limit {
            self.entries
                .push_back(Entry::Hot(offset, Arc::clone(event)));
            return;
        }
        if let Some(Entry::Cold(r)) = self.entries.back_mut()
            && r.end == offset
        {
            r.end += 1;
            return;
        }
        self.entries.push_back(Entry::Cold(offset..offset + 1));
    }

    /// Puts `offset` back at the head, without its event (it is read again from the log).
    pub(crate) fn push_front(&mut self, offset: u64) {
        self.len += 1;
        if let Some(Entry::Cold(r)) = self.entries.front_mut()
            && r.start == offset + 1
        {
            r.start = offset;
            return;
        }
        self.entries.push_front(Entry::Cold(offset..offset + 1));
    }

    /// Takes the oldest offset, with its event when the queue kept it.
    pub(crate) fn pop_front(&mut self) -> Option<(u64, Option<Arc<CloudEvent>>)> {
        let popped = match self.entries.front_mut()? {
            Entry::Hot(..) => match self.entries.pop_front() {
                Some(Entry::Hot(o, e)) => (o, Some(e)),
                _ => return None,
            },
            Entry::Cold(r) => {
                let o = r.start;
                r.start += 1;
                if r.is_empty() {
                    self.entries.pop_front();
                }
                (o, None)
            }
        };
        self.len -= 1;
        Some(popped)
    }

    /// How many offsets directly follow the front one in its run (0 when the front entry
    /// keeps its event): after a cold offset is popped, how many of the next records in the
    /// log this queue will ask for next.
    pub(crate) fn run_ahead(&self) -> usize {
        match self.entries.front() {
            Some(Entry::Cold(r)) => usize::try_from(r.end - r.start).unwrap_or(usize::MAX),
            _ => 0,
        }
    }

    /// Offsets held with their event.
    #[cfg(test)]
    fn hot(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Hot(..)))
            .count()
    }

    /// Entries held (a run of cold offsets is one).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event() -> Arc<CloudEvent> {
        Arc::new(CloudEvent::new("1", "/s", "t").unwrap())
    }

    fn drain(q: &mut OffsetQueue) -> Vec<(u64, bool)> {
        std::iter::from_fn(|| q.pop_front())
            .map(|(o, e)| (o, e.is_some()))
            .collect()
    }

    #[test]
    fn keeps_events_up_to_the_limit_then_offsets_in_runs() {
        let mut q = OffsetQueue::new(2);
        let e = event();
        for o in 10..20 {
            q.push_back(o, &e);
        }
        assert_eq!(q.len(), 10);
        assert_eq!(q.hot(), 2);
        // Two hot entries and one run for the eight offsets after them.
        assert_eq!(q.entries(), 3);
        assert_eq!(q.front(), Some(10));
        let got = drain(&mut q);
        let want: Vec<(u64, bool)> = (10..20).map(|o| (o, o < 12)).collect();
        assert_eq!(got, want);
        assert_eq!(q.len(), 0);
        assert_eq!(q.front(), None);
    }

    #[test]
    fn gaps_start_new_runs_and_order_is_kept() {
        let mut q = OffsetQueue::new(0);
        let e = event();
        for o in [1, 2, 3, 7, 8, 20] {
            q.push_back(o, &e);
        }
        assert_eq!(q.entries(), 3);
        assert_eq!(q.run_ahead(), 3);
        q.pop_front();
        // 2 and 3 follow in the run; 7 does not.
        assert_eq!(q.run_ahead(), 2);
        q.push_front(1);
        assert_eq!(
            drain(&mut q),
            vec![
                (1, false),
                (2, false),
                (3, false),
                (7, false),
                (8, false),
                (20, false)
            ]
        );
    }

    #[test]
    fn a_million_contiguous_offsets_are_one_entry() {
        let mut q = OffsetQueue::new(1024);
        let e = event();
        for o in 0..1_000_000 {
            q.push_back(o, &e);
        }
        assert_eq!(q.len(), 1_000_000);
        assert_eq!(q.entries(), 1025);
    }

    #[test]
    fn requeued_offsets_come_first_and_join_the_run_behind_them() {
        let mut q = OffsetQueue::new(1);
        let e = event();
        for o in 5..9 {
            q.push_back(o, &e);
        }
        let (first, kept) = q.pop_front().unwrap();
        assert_eq!((first, kept.is_some()), (5, true));
        let (second, _) = q.pop_front().unwrap();
        assert_eq!(second, 6);
        // 6's read failed: it goes back to the head and joins the run 7..9.
        q.push_front(6);
        assert_eq!(q.entries(), 1);
        q.push_front(5);
        assert_eq!(q.front(), Some(5));
        assert_eq!(
            drain(&mut q),
            vec![(5, false), (6, false), (7, false), (8, false)]
        );
    }

    #[test]
    fn the_queue_keeps_events_again_once_it_is_short() {
        let mut q = OffsetQueue::new(2);
        let e = event();
        for o in 0..4 {
            q.push_back(o, &e);
        }
        drain(&mut q);
        q.push_back(4, &e);
        assert_eq!(
            q.pop_front().map(|(o, e)| (o, e.is_some())),
            Some((4, true))
        );
    }
}

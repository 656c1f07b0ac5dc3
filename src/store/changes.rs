//! The change feed: which conversation changed, announced once the change is applied.
//!
//! Every committed turn and every recorded send outcome is announced here with an id
//! that only grows, and the last `RETAINED` announcements are kept so a reader that was
//! away (an SSE client reconnecting with `Last-Event-ID`) can catch up. Ids start at the
//! opening's epoch microsecond, so ids of a later run are above those of an earlier one.
//! In memory only: after a restart a reader is told to re-read (`Since::Gap`). Must not:
//! block a writer (announcing is a short lock, never I/O) or decide what a change means.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::now_ms;

/// How many announcements are kept for readers that catch up.
const RETAINED: usize = 10_000;

/// One conversation changed: new or changed transcript entries, or it was forgotten.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub id: u64,
    pub page_id: String,
    pub psid: String,
    /// Transcript entries added or changed (status, echo) by this change.
    pub entries: Vec<u64>,
    /// The record changed too (state, watermarks, pause, timers).
    pub record: bool,
    pub forgotten: bool,
}

/// What a reader asking for the changes after an id gets.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// Every change after the id, oldest first (maybe none yet).
    Changes(Vec<Change>),
    /// Some changes after the id are no longer kept (or were before a restart): the
    /// reader must re-read what it shows. Carries the changes that are kept.
    Gap(Vec<Change>),
}

/// The feed; cheap to clone, shared by the store's writers and the admin readers.
#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Mutex<Retained>>,
    latest: watch::Sender<u64>,
    /// Set when the server shuts down: readers end their streams.
    closed: watch::Sender<bool>,
}

struct Retained {
    next_id: u64,
    /// The id the feed started at: any id below it is from an earlier run.
    first_id: u64,
    changes: VecDeque<Change>,
}

/// A change before it has an id.
pub(crate) struct Announcement {
    pub page_id: String,
    pub psid: String,
    pub entries: Vec<u64>,
    pub record: bool,
    pub forgotten: bool,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed::starting_at(u64::try_from(now_ms()).unwrap_or_default() * 1000)
    }
}

impl ChangeFeed {
    fn starting_at(first_id: u64) -> ChangeFeed {
        let (latest, _) = watch::channel(first_id.saturating_sub(1));
        let (closed, _) = watch::channel(false);
        ChangeFeed {
            closed,
            inner: Arc::new(Mutex::new(Retained {
                next_id: first_id,
                first_id,
                changes: VecDeque::new(),
            })),
            latest,
        }
    }

    pub(crate) fn announce(&self, announcement: Announcement) {
        let id = {
            let mut retained = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let id = retained.next_id;
            retained.next_id += 1;
            if retained.changes.len() == RETAINED {
                retained.changes.pop_front();
            }
            retained.changes.push_back(Change {
                id,
                page_id: announcement.page_id,
                psid: announcement.psid,
                entries: announcement.entries,
                record: announcement.record,
                forgotten: announcement.forgotten,
            });
            id
        };
        self.latest.send_replace(id);
    }

    /// The changes after `after` (every kept one when `None`: a new reader starts now,
    /// so it gets none of the past).
    pub fn since(&self, after: Option<u64>) -> Since {
        let retained = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(after) = after else {
            return Since::Changes(Vec::new());
        };
        let kept: Vec<Change> = retained
            .changes
            .iter()
            .filter(|change| change.id > after)
            .cloned()
            .collect();
        let oldest_kept = retained
            .changes
            .front()
            .map_or(retained.next_id, |change| change.id);
        if after.saturating_add(1) < oldest_kept || after.saturating_add(1) < retained.first_id {
            Since::Gap(kept)
        } else {
            Since::Changes(kept)
        }
    }

    /// The newest id given so far (below the first id while nothing changed).
    pub fn latest_id(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Resolves when an id above `seen` has been given, or the feed is closed.
    pub async fn changed_after(&self, seen: u64) {
        let mut watcher = self.latest.subscribe();
        let mut closed = self.closed.subscribe();
        // `wait_for` checks the current value first, so nothing given since is missed.
        tokio::select! {
            _ = watcher.wait_for(|latest| *latest > seen) => {}
            _ = closed.wait_for(|closed| *closed) => {}
        }
    }

    /// Ends every reader's wait: the server is shutting down, and a stream left open
    /// would hold the admin listener's graceful stop for its whole timeout.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(feed: &ChangeFeed, psid: &str) {
        feed.announce(Announcement {
            page_id: "p".into(),
            psid: psid.into(),
            entries: vec![1],
            record: true,
            forgotten: false,
        });
    }

    fn psids(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.psid.as_str()).collect()
    }

    #[test]
    fn a_reader_gets_what_came_after_its_last_id() {
        let feed = ChangeFeed::starting_at(100);
        announce(&feed, "a");
        announce(&feed, "b");
        announce(&feed, "c");
        let Since::Changes(after_a) = feed.since(Some(100)) else {
            panic!("nothing was dropped");
        };
        assert_eq!(psids(&after_a), ["b", "c"]);
        assert_eq!(after_a[0].id, 101);
        assert_eq!(feed.since(Some(102)), Since::Changes(Vec::new()));
        assert_eq!(feed.latest_id(), 102);
    }

    #[test]
    fn an_id_from_an_earlier_run_or_dropped_changes_is_a_gap() {
        let feed = ChangeFeed::starting_at(1_000);
        assert!(matches!(feed.since(Some(5)), Since::Gap(_)));
        assert_eq!(feed.since(Some(999)), Since::Changes(Vec::new()));
        for n in 0..RETAINED + 5 {
            announce(&feed, &n.to_string());
        }
        let Since::Gap(kept) = feed.since(Some(1_000)) else {
            panic!("changes 1001..1004 are no longer kept");
        };
        assert_eq!(kept.len(), RETAINED);
        assert_eq!(kept[0].id, 1_005);
    }

    #[actix_rt::test]
    async fn a_waiting_reader_wakes_on_the_next_change() {
        let feed = ChangeFeed::starting_at(10);
        let seen = feed.latest_id();
        let waiting = feed.clone();
        let woken = actix_rt::spawn(async move { waiting.changed_after(seen).await });
        announce(&feed, "a");
        tokio::time::timeout(std::time::Duration::from_secs(5), woken)
            .await
            .expect("the reader wakes")
            .unwrap();
    }
}

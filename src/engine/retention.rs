//! Retention: keeps the dedup marks from growing forever (and removes the sent-message
//! index earlier builds kept).
//!
//! Every handled event leaves a mark so that a redelivery is skipped; Facebook redelivers
//! for hours, not weeks. This actor walks the marks in chunks (so the committer is never
//! held for long) and removes those older than `COLLOQUY_DEDUP_RETENTION_HOURS`, then
//! rests until the next pass. It removes nothing else: transcripts are the record. It
//! knows nothing of keys: the store walks what is prunable and hands back a cursor.

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::clock::now_ms;
use crate::store::{PruneCursor, Pruned, Store};

/// Marks looked at per chunk: a few milliseconds of the committer's time.
const CHUNK: usize = 5_000;
/// Pause between two chunks of one pass.
const BETWEEN_CHUNKS: Duration = Duration::from_secs(1);
/// Pause between two passes over all marks.
const BETWEEN_PASSES: Duration = Duration::from_secs(3600);

/// Stops the sweeper (at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

pub struct Sweeper {
    store: Store,
    retention: Duration,
    /// Where this pass goes on (dedup marks, then the sent-message index earlier builds
    /// wrote: the store walks both).
    cursor: PruneCursor,
    removed_this_pass: usize,
    pass_started: Instant,
    first_pass_after: Duration,
}

impl Sweeper {
    pub fn new(store: Store, retention: Duration) -> Self {
        Sweeper {
            store,
            retention,
            cursor: PruneCursor::default(),
            removed_this_pass: 0,
            pass_started: Instant::now(),
            // Start-up has better things to do than pruning.
            first_pass_after: Duration::from_secs(30),
        }
    }

    /// When the first pass starts (30 s after start by default).
    #[cfg(test)]
    pub fn first_pass_after(mut self, delay: Duration) -> Self {
        self.first_pass_after = delay;
        self
    }

    fn sweep_chunk(&mut self, ctx: &mut Context<Self>) {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let older_than = now_ms().saturating_sub(retention_ms);
        let from = std::mem::take(&mut self.cursor);
        let chunk = self
            .store
            .prune_dedup_marks_older_than(older_than, from, CHUNK);
        ctx.spawn(chunk.into_actor(self).map(|outcome, act, ctx| {
            let next = match outcome {
                Ok(Pruned { removed, next }) => {
                    act.removed_this_pass += removed;
                    next
                }
                Err(error) => {
                    // The pass ends here; the next one starts over in an hour.
                    log::error!("pruning dedup marks failed: {error}");
                    None
                }
            };
            match next {
                Some(cursor) => {
                    act.cursor = cursor;
                    ctx.run_later(BETWEEN_CHUNKS, Self::sweep_chunk);
                }
                None => {
                    act.cursor = PruneCursor::default();
                    log::info!(
                        "pruned {} dedup mark(s) and sent-message index entries older than {} h in {:?}",
                        act.removed_this_pass,
                        act.retention.as_secs() / 3600,
                        act.pass_started.elapsed()
                    );
                    act.removed_this_pass = 0;
                    ctx.run_later(BETWEEN_PASSES, |act, ctx| {
                        act.pass_started = Instant::now();
                        act.sweep_chunk(ctx);
                    });
                }
            }
        }));
    }
}

impl Actor for Sweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(self.first_pass_after, Self::sweep_chunk);
    }
}

impl Handler<Stop> for Sweeper {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TurnCommit;

    /// A fresh store holding one dedup mark, for `mid` on page `page`.
    async fn store_with_mark(mid: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mark = TurnCommit {
            handled: Some(("page".into(), mid.into())),
            handled_at: Some(1),
            ..TurnCommit::default()
        };
        store.commit_turn(mark, true).await.unwrap();
        (dir, store)
    }

    #[actix_rt::test]
    async fn a_pass_removes_marks_older_than_the_retention() {
        let (_dir, store) = store_with_mark("m.1").await;
        assert!(store.is_handled("page", 1, "m.1").unwrap());
        actix_rt::time::sleep(Duration::from_millis(5)).await;
        let sweeper = Sweeper::new(store.clone(), Duration::from_millis(1))
            .first_pass_after(Duration::from_millis(10))
            .start();
        let started = Instant::now();
        while store.is_handled("page", 1, "m.1").unwrap() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the mark was never pruned"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        sweeper.send(Stop).await.unwrap();
    }

    #[actix_rt::test]
    async fn marks_within_the_retention_are_kept() {
        let (_dir, store) = store_with_mark("m.2").await;
        let sweeper = Sweeper::new(store.clone(), Duration::from_secs(3600))
            .first_pass_after(Duration::from_millis(1))
            .start();
        // A whole pass is one chunk here; after it the sweeper rests for an hour.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        assert!(store.is_handled("page", 1, "m.2").unwrap());
        sweeper.send(Stop).await.unwrap();
    }
}

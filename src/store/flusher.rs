//! Group commit: one thread makes sled durable for every writer that is waiting.
//!
//! A webhook request must not be acknowledged before its events are on disk, but one
//! fsync per request would cap throughput at the disk's fsync rate. Writers insert their
//! records, then ask this thread for a flush and wait; the thread takes every request
//! queued so far, flushes once, and answers them all. This module never blocks an async
//! worker: the waiting side is a oneshot channel, the blocking `flush` runs here.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Answer to one flush request: `Err` carries sled's error text.
pub type FlushResult = Result<(), String>;

/// A request for durability; `None` when the writer does not wait for the answer.
type Waiter = Option<oneshot::Sender<FlushResult>>;

/// Handle to the flusher thread; dropping it stops the thread after a last flush.
pub struct Flusher {
    requests: Option<mpsc::Sender<Waiter>>,
    thread: Option<JoinHandle<()>>,
    stats: std::sync::Arc<FlushStats>,
}

/// Counters the flusher keeps for observability and benchmarks.
#[derive(Default, Debug)]
pub struct FlushStats {
    pub flushes: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
    pub total_micros: std::sync::atomic::AtomicU64,
}

impl Flusher {
    pub fn start(db: sled::Db) -> std::io::Result<Flusher> {
        let (requests, inbox) = mpsc::channel::<Waiter>();
        let stats = std::sync::Arc::new(FlushStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("colloquy-flusher".into())
            .spawn(move || run(db, inbox, &thread_stats))?;
        Ok(Flusher {
            requests: Some(requests),
            thread: Some(thread),
            stats,
        })
    }

    /// Asks for a flush covering every write made before this call and waits for it.
    /// The request is queued at once, not when the future is first polled.
    pub fn flush(&self) -> impl std::future::Future<Output = FlushResult> + 'static {
        let (answer, receive) = oneshot::channel();
        let queued = self.send(Some(answer));
        async move {
            queued?;
            receive
                .await
                .map_err(|_| "the flusher stopped before answering".to_string())?
        }
    }

    /// Asks for a flush soon without waiting (used where a lost write only means a retry).
    pub fn request(&self) {
        let _ = self.send(None);
    }

    pub fn stats(&self) -> &FlushStats {
        &self.stats
    }

    fn send(&self, waiter: Waiter) -> FlushResult {
        match &self.requests {
            Some(requests) => requests
                .send(waiter)
                .map_err(|_| "the flusher thread is gone".to_string()),
            None => Err("the store is closing".to_string()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining it makes sure the last
        // flush happened and sled's files are released before anyone reopens them.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: sled::Db, inbox: mpsc::Receiver<Waiter>, stats: &FlushStats) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = inbox.recv() {
        let mut waiters = vec![first];
        waiters.extend(inbox.try_iter());
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        if let Err(error) = &result {
            log::error!("sled flush failed: {error}");
        }
        stats.flushes.fetch_add(1, Relaxed);
        stats.requests.fetch_add(waiters.len() as u64, Relaxed);
        stats
            .total_micros
            .fetch_add(duration_micros(started.elapsed()), Relaxed);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(result.clone());
        }
    }
    if let Err(error) = db.flush() {
        log::error!("final sled flush failed: {error}");
    }
}

fn duration_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn concurrent_waiters_share_flushes_and_all_get_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flusher = Flusher::start(db.clone()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let waits: Vec<_> = (0..64u32)
                .map(|i| {
                    db.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
                    flusher.flush()
                })
                .collect();
            for result in futures_util::future::join_all(waits).await {
                assert_eq!(result, Ok(()));
            }
        });
        let stats = flusher.stats();
        assert_eq!(stats.requests.load(Relaxed), 64);
        // All 64 requests were queued before the thread could answer the first batch, so
        // they cannot each have cost a flush.
        assert!(stats.flushes.load(Relaxed) < 64);
    }

    #[test]
    fn dropping_the_flusher_releases_the_database_for_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"k", &b"v"[..]).unwrap();
            let _flusher = Flusher::start(db.clone()).unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}

//! Matches every reply that reaches the mock Graph API to the message it answers.
//!
//! Each message gets a number `n` and the text `bench <run> <n>`. With the echo flow the
//! reply carries that text back, so it names its message exactly; with the thanks flow
//! every reply has the same text and is matched to the oldest unanswered message of its
//! recipient. A reply that matches nothing is a duplicate (its message was already
//! answered) or unexpected (wrong recipient, wrong text, unknown message). Shared by the
//! client threads and the mock's workers behind one mutex: a few map operations each.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::args::FlowKind;

/// The thanks flow's reply (colloquy's `flow::builtin::THANKS_TEXT`).
pub use colloquy::flow::builtin::THANKS_TEXT;

/// Problems kept word for word for the report; the rest are only counted.
const PROBLEMS_KEPT: usize = 20;
/// Reply message ids kept for `--receipts`; older ones are dropped.
const RECEIPTS_KEPT: usize = 10_000;

/// How the server answered the POST that carried some messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// 200: the server stored the events and owes their replies.
    Ok,
    /// Another status: the server stored nothing (Facebook would redeliver).
    Rejected,
    /// No answer (connect error, timeout): the server may or may not have them.
    Unknown,
}

/// A message about to be sent.
pub struct Registered {
    pub n: u64,
    pub psid: Arc<str>,
    pub text: String,
    /// Resolves with the reply's message id when the reply arrives (closed loop only).
    pub reply: Option<oneshot::Receiver<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acked,
    Unknown,
}

struct Outstanding {
    psid: Arc<str>,
    sent_at: Instant,
    state: State,
    waiter: Option<oneshot::Sender<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Waiting,
    Replied,
    Refused,
}

#[derive(Default)]
struct Inner {
    outstanding: HashMap<u64, Outstanding>,
    /// By message number: what became of it.
    fate: Vec<Fate>,
    /// Thanks flow: each recipient's unanswered messages, oldest first.
    queues: HashMap<Arc<str>, VecDeque<u64>>,
    receipts: VecDeque<(Arc<str>, String)>,
    e2e_us: Vec<u32>,
    reply_at_ms: Vec<u32>,
    replies_to_unacked: u64,
    duplicates: u64,
    unexpected: u64,
    problems: Vec<String>,
    problems_dropped: u64,
}

pub struct Tracker {
    flow: FlowKind,
    prefix: String,
    started: Instant,
    warmup_end: Instant,
    keep_receipts: bool,
    inner: Mutex<Inner>,
    /// Correct replies so far (also read by the progress line).
    pub replies: AtomicU64,
}

/// Everything the tracker learnt, taken at the end of the run.
pub struct Verdict {
    pub replies: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub replies_to_unacked: u64,
    pub problems: Vec<String>,
    pub problems_dropped: u64,
    /// End-to-end latencies of messages sent after the warm-up, in µs, unsorted.
    pub e2e_us: Vec<u32>,
    /// Arrival of every correct reply, in ms since the start.
    pub reply_at_ms: Vec<u32>,
}

impl Tracker {
    pub fn new(
        flow: FlowKind,
        run: &str,
        started: Instant,
        warmup_end: Instant,
        keep_receipts: bool,
    ) -> Tracker {
        Tracker {
            flow,
            prefix: format!("bench {run} "),
            started,
            warmup_end,
            keep_receipts,
            inner: Mutex::new(Inner::default()),
            replies: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not hide the figures gathered so far.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers one message per sender id, about to be POSTed now.
    pub fn register(&self, psids: &[Arc<str>], wait: bool) -> Vec<Registered> {
        let now = Instant::now();
        let mut inner = self.lock();
        psids
            .iter()
            .map(|psid| {
                let n = inner.fate.len() as u64;
                inner.fate.push(Fate::Waiting);
                let (waiter, reply) = if wait {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                inner.outstanding.insert(
                    n,
                    Outstanding {
                        psid: psid.clone(),
                        sent_at: now,
                        state: State::InFlight,
                        waiter,
                    },
                );
                if self.flow == FlowKind::Thanks {
                    inner.queues.entry(psid.clone()).or_default().push_back(n);
                }
                Registered {
                    n,
                    psid: psid.clone(),
                    text: format!("{}{n}", self.prefix),
                    reply,
                }
            })
            .collect()
    }

    /// Records how the POST carrying messages `ns` was answered.
    pub fn ack(&self, ns: &[u64], ack: Ack) {
        let mut inner = self.lock();
        for &n in ns {
            match ack {
                Ack::Ok | Ack::Unknown => {
                    if let Some(o) = inner.outstanding.get_mut(&n) {
                        if ack == Ack::Ok {
                            o.state = State::Acked;
                        } else {
                            o.state = State::Unknown;
                            o.waiter = None;
                        }
                    }
                }
                Ack::Rejected => {
                    if let Some(o) = inner.outstanding.remove(&n) {
                        inner.fate[n as usize] = Fate::Refused;
                        if let Some(queue) = inner.queues.get_mut(&o.psid) {
                            queue.retain(|&m| m != n);
                        }
                    }
                }
            }
        }
    }

    /// A successful Send API call with a message to `recipient` arrived at `at`.
    pub fn on_reply(&self, recipient: &str, text: Option<&str>, message_id: &str, at: Instant) {
        let mut inner = self.lock();
        let n = match self.flow {
            FlowKind::Echo => {
                let n = text
                    .and_then(|t| t.strip_prefix(self.prefix.as_str()))
                    .and_then(|t| t.parse::<u64>().ok());
                match n {
                    Some(n) if (n as usize) < inner.fate.len() => n,
                    _ => {
                        return inner.unexpected(format!(
                            "reply to {recipient} with a text no message had: {text:?}"
                        ))
                    }
                }
            }
            FlowKind::Thanks => {
                if text != Some(THANKS_TEXT) {
                    return inner.unexpected(format!(
                        "reply to {recipient} is {text:?}, not {THANKS_TEXT:?}"
                    ));
                }
                let Some(queue) = inner.queues.get_mut(recipient) else {
                    return inner.unexpected(format!("reply to {recipient}, who sent nothing"));
                };
                match queue.pop_front() {
                    Some(n) => n,
                    None => {
                        return inner.duplicate(format!(
                            "reply to {recipient}: more replies than messages sent"
                        ))
                    }
                }
            }
        };
        match inner.fate[n as usize] {
            Fate::Replied => {
                return inner.duplicate(format!(
                    "second reply to message {n} ({recipient}: {text:?})"
                ))
            }
            Fate::Refused => {
                return inner.unexpected(format!(
                    "reply to message {n}, whose POST the server refused"
                ))
            }
            Fate::Waiting => {}
        }
        let Some(outstanding) = inner.outstanding.get(&n) else {
            return;
        };
        if *outstanding.psid != *recipient {
            let owner = outstanding.psid.clone();
            return inner.unexpected(format!(
                "reply to message {n} went to {recipient}, not to its sender {owner}"
            ));
        }
        let outstanding = inner.outstanding.remove(&n).expect("looked up just above");
        inner.fate[n as usize] = Fate::Replied;
        if outstanding.state == State::Unknown {
            inner.replies_to_unacked += 1;
        }
        if outstanding.sent_at >= self.warmup_end {
            let us = at
                .saturating_duration_since(outstanding.sent_at)
                .as_micros();
            inner.e2e_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
        let ms = at.saturating_duration_since(self.started).as_millis();
        inner
            .reply_at_ms
            .push(u32::try_from(ms).unwrap_or(u32::MAX));
        if self.keep_receipts {
            if inner.receipts.len() >= RECEIPTS_KEPT {
                inner.receipts.pop_front();
            }
            inner
                .receipts
                .push_back((outstanding.psid, message_id.to_string()));
        }
        drop(inner);
        self.replies.fetch_add(1, Ordering::Relaxed);
        if let Some(waiter) = outstanding.waiter {
            let _ = waiter.send(message_id.to_string());
        }
    }

    /// Up to `max` (sender id, reply message id) pairs to send receipts for.
    pub fn take_receipts(&self, max: usize) -> Vec<(Arc<str>, String)> {
        let mut inner = self.lock();
        let n = max.min(inner.receipts.len());
        inner.receipts.drain(..n).collect()
    }

    /// Messages acknowledged (or still in flight) whose reply has not arrived.
    pub fn awaited(&self) -> usize {
        self.lock()
            .outstanding
            .values()
            .filter(|o| o.state != State::Unknown)
            .count()
    }

    /// The final account; replies arriving later are not counted.
    pub fn verdict(&self) -> Verdict {
        let mut inner = self.lock();
        let mut missing_list: Vec<(u64, Arc<str>)> = inner
            .outstanding
            .iter()
            .filter(|(_, o)| o.state != State::Unknown)
            .map(|(n, o)| (*n, o.psid.clone()))
            .collect();
        missing_list.sort_unstable();
        let missing = missing_list.len() as u64;
        for (n, psid) in missing_list.into_iter().take(PROBLEMS_KEPT) {
            inner.problem(format!("no reply to message {n} from {psid}"));
        }
        let inner = &mut *inner;
        Verdict {
            replies: self.replies.load(Ordering::Relaxed),
            missing,
            duplicates: inner.duplicates,
            unexpected: inner.unexpected,
            replies_to_unacked: inner.replies_to_unacked,
            problems: std::mem::take(&mut inner.problems),
            problems_dropped: inner.problems_dropped,
            e2e_us: std::mem::take(&mut inner.e2e_us),
            reply_at_ms: std::mem::take(&mut inner.reply_at_ms),
        }
    }
}

impl Inner {
    fn problem(&mut self, what: String) {
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(what);
        } else {
            self.problems_dropped += 1;
        }
    }

    fn duplicate(&mut self, what: String) {
        self.duplicates += 1;
        self.problem(what);
    }

    fn unexpected(&mut self, what: String) {
        self.unexpected += 1;
        self.problem(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(flow: FlowKind) -> Tracker {
        let now = Instant::now();
        Tracker::new(flow, "r1", now, now, true)
    }

    fn psids(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn an_echo_reply_is_matched_by_its_text_and_a_second_one_is_a_duplicate() {
        let t = tracker(FlowKind::Echo);
        let regs = t.register(&psids(&["a", "b"]), false);
        t.ack(&[0, 1], Ack::Ok);
        t.on_reply("b", Some(&regs[1].text), "m1", Instant::now());
        t.on_reply("b", Some(&regs[1].text), "m2", Instant::now());
        let v = t.verdict();
        assert_eq!((v.replies, v.duplicates, v.missing), (1, 1, 1));
    }

    #[test]
    fn an_echo_reply_to_the_wrong_recipient_is_unexpected() {
        let t = tracker(FlowKind::Echo);
        let regs = t.register(&psids(&["a"]), false);
        t.ack(&[0], Ack::Ok);
        t.on_reply("z", Some(&regs[0].text), "m1", Instant::now());
        let v = t.verdict();
        assert_eq!((v.replies, v.unexpected, v.missing), (0, 1, 1));
    }

    #[test]
    fn thanks_replies_are_matched_per_recipient_in_order() {
        let t = tracker(FlowKind::Thanks);
        t.register(&psids(&["a", "a", "b"]), false);
        t.ack(&[0, 1, 2], Ack::Ok);
        for to in ["a", "b", "a", "a"] {
            t.on_reply(to, Some(THANKS_TEXT), "m", Instant::now());
        }
        let v = t.verdict();
        assert_eq!((v.replies, v.duplicates, v.missing), (3, 1, 0));
        assert_eq!(t.take_receipts(10).len(), 3);
    }

    #[test]
    fn refused_messages_are_not_missing_and_unknown_ones_are_not_awaited() {
        let t = tracker(FlowKind::Thanks);
        t.register(&psids(&["a", "b"]), true);
        t.ack(&[0], Ack::Rejected);
        t.ack(&[1], Ack::Unknown);
        assert_eq!(t.awaited(), 0);
        t.on_reply("b", Some(THANKS_TEXT), "m", Instant::now());
        let v = t.verdict();
        assert_eq!((v.replies, v.missing, v.replies_to_unacked), (1, 0, 1));
    }
}

//! Send API requests sent together: the Messenger replies that become ready together
//! (every turn of a commit cycle is durable at the same moment) go out as Graph batch
//! calls, one per page token and at most `COLLOQUY_SEND_BATCH` each, instead of one HTTP
//! call apiece. Each reply still gets its own outcome, retry and rate-limit token; none
//! waits for a batch to fill (a lone reply is one plain call).
//!
//! Must not: hold a reply for a timer or past the last look (`MAX_LOOKS` turns of the
//! thread's runtime), put two replies of one conversation in a batch (the sender keeps
//! one in flight per conversation, and Meta runs a batch's requests in no set order), or
//! batch Instagram replies (only Messenger sends have been batched against Meta's
//! answers as documented).

use actix::prelude::*;

use super::{attempt_of, GraphRequest, OutboundSender};
use crate::graph::PageAuth;
use crate::messenger::inbound::Channel;
use crate::messenger::outbound::SendRequest;
use crate::store::ConversationKey;

/// The requests held until the thread's ready tasks have run, by page token.
#[derive(Default)]
pub(super) struct Ready {
    groups: Vec<(PageAuth, Vec<(ConversationKey, SendRequest)>)>,
    /// A `send_ready` is due once the thread's ready tasks have run.
    scheduled: bool,
    /// How many requests were held at the last look.
    held_at_last_look: usize,
    /// Looks taken since the first request was held.
    looks: u32,
}

impl Ready {
    fn held(&self) -> usize {
        self.groups.iter().map(|(_, requests)| requests.len()).sum()
    }
}

/// Most times the sender looks again for more requests before it sends what it holds:
/// a commit cycle's turns complete one after another, and the sender looks again while
/// each look finds more (measured: 2 - 3 requests per batch when sending at the first
/// look, since the engine keeps up with the committer handing the turns back).
const MAX_LOOKS: u32 = 8;

/// Calls `send_ready` once the thread has run every task that was ready: the
/// conversations whose turns became durable in the same commit cycle are woken together,
/// and each hands its replies over in turn. `yield_now` defers the wake-up until the
/// runtime looks for new work, so the held requests wait for no timer.
fn look_again(ctx: &mut Context<OutboundSender>) {
    let yielded = actix::fut::wrap_future::<_, OutboundSender>(tokio::task::yield_now());
    ctx.spawn(yielded.map(|(), act, ctx| act.send_ready(ctx)));
}

impl OutboundSender {
    /// Sends what became ready since the last time: lone requests as plain calls, the
    /// others in batches of at most `COLLOQUY_SEND_BATCH` per page token.
    fn send_ready(&mut self, ctx: &mut Context<Self>) {
        let ready = &mut self.ready;
        let held = ready.held();
        if held > ready.held_at_last_look && ready.looks < MAX_LOOKS {
            // More came since the last look: the cycle's turns are still coming back.
            ready.held_at_last_look = held;
            ready.looks += 1;
            look_again(ctx);
            return;
        }
        ready.scheduled = false;
        ready.held_at_last_look = 0;
        ready.looks = 0;
        let groups = std::mem::take(&mut ready.groups);
        if self.draining.is_some() {
            // Shutting down: what is held stays in the outbox for the next start.
            return;
        }
        for (auth, requests) in groups {
            let mut requests = requests.into_iter().peekable();
            while requests.peek().is_some() {
                let batch: Vec<_> = requests.by_ref().take(self.settings.send_batch).collect();
                self.send_together(auth.clone(), batch, ctx);
            }
        }
    }

    /// Whether a reply on `channel` may go in a batch.
    pub(super) fn batches(&self, channel: Channel) -> bool {
        self.settings.send_batch > 1 && channel == Channel::Messenger
    }

    /// Holds a ready Send API request (its conversation in flight, its rate token taken)
    /// until the thread has run the tasks that were ready with it (`look_again`).
    pub(super) fn hold_for_batch(
        &mut self,
        key: ConversationKey,
        auth: PageAuth,
        request: SendRequest,
        ctx: &mut Context<Self>,
    ) {
        let same_token = |held: &PageAuth| held.node == auth.node && held.token == auth.token;
        match self
            .ready
            .groups
            .iter_mut()
            .find(|(held, _)| same_token(held))
        {
            Some((_, requests)) => requests.push((key, request)),
            None => self.ready.groups.push((auth, vec![(key, request)])),
        }
        if !self.ready.scheduled {
            self.ready.scheduled = true;
            self.ready.held_at_last_look = 1;
            look_again(ctx);
        }
    }

    /// One plain call for a lone request, else one batch call; each reply's outcome is
    /// recorded as a single call's would be.
    fn send_together(
        &mut self,
        auth: PageAuth,
        mut batch: Vec<(ConversationKey, SendRequest)>,
        ctx: &mut Context<Self>,
    ) {
        if batch.len() == 1 {
            let (key, request) = batch.remove(0);
            self.call_one(key, auth, GraphRequest::Send(request), ctx);
            return;
        }
        let (keys, requests): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let graph = self.graph.clone();
        let call = async move {
            match graph.send_batch(&auth, &requests).await {
                Ok(results) => results,
                // The batch call itself failed: so did each of its requests.
                Err(error) => vec![Err(error); requests.len()],
            }
        };
        self.calls_in_progress += 1;
        self.metrics.graph_batch(keys.len());
        self.run_apart(ctx, call, move |act, results, ctx| {
            for (key, result) in keys.into_iter().zip(results) {
                act.answered(key, attempt_of(result), ctx);
            }
            act.call_ended();
        });
    }
}

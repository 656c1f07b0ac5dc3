//! The outbound sender: delivers committed replies through the Send API with awc.
//!
//! Replies to one recipient leave strictly in order (one in flight per conversation);
//! different recipients proceed concurrently. Network errors, timeouts, 5xx, transient
//! and throttling Graph errors are retried with capped exponential backoff and jitter;
//! permanent Graph errors end the reply `failed` with code, subcode and message. Every
//! outcome is recorded on the transcript entry and removes the item from the outbox.
//! The page access token goes only into the request URL, never into a log line.

mod rate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;

use crate::clock::now_ms;
use crate::config::{Secret, SenderSettings};
use crate::engine::load::Load;
use crate::engine::metrics::Metrics;
use crate::messenger::outbound::{parse_graph_error, ErrorClass, SendRequest, SendResponse};
use crate::store::{ConversationKey, Failure, OutboxRecord, Outgoing, SendOutcome, Store};

/// Largest Send API answer we read; real ones are under 200 bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Graph API code for an invalid, expired or revoked access token.
const INVALID_TOKEN: i64 = 190;
/// The longest wait a throttling hint may impose (Meta's estimates are in minutes).
const MAX_HINTED_WAIT: Duration = Duration::from_secs(3600);
/// Throttled pages are given at least this long before the next attempt.
const THROTTLE_BACKOFF: Duration = Duration::from_secs(2);

/// Replies committed by a conversation, by outbox sequence number.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub items: Vec<(u64, OutboxRecord)>,
}

/// Stop sending; replies not yet completed stay in the outbox for the next start.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// How one Send API call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent {
        message_id: Option<String>,
    },
    Retry {
        reason: String,
        throttled: bool,
        /// When the Graph API said how long to wait (Business Use Case usage header).
        retry_after: Option<Duration>,
    },
    Permanent(Failure),
}

pub struct OutboundSender {
    store: Store,
    load: std::sync::Arc<Load>,
    metrics: std::sync::Arc<Metrics>,
    endpoint: String,
    access_token: Secret,
    settings: SenderSettings,
    client: Option<awc::Client>,
    queues: HashMap<ConversationKey, VecDeque<(u64, OutboxRecord)>>,
    in_flight: HashSet<ConversationKey>,
    /// Outbox items queued or in flight, so an item is never queued twice.
    known: HashSet<u64>,
    /// Pages throttled by the Graph API, with when sending may resume: every
    /// conversation of the page waits, since calling while throttled extends the penalty.
    paused_pages: HashMap<String, Instant>,
    /// Pages whose token the Graph API rejected (code 190): nothing more is sent for
    /// them until a restart with a valid token; their replies stay in the outbox.
    blocked_pages: HashSet<String>,
    /// Each page's Send API rate (`COLLOQUY_PAGE_SEND_RATE`).
    rates: rate::PageRates,
}

impl OutboundSender {
    pub fn new(
        store: Store,
        load: std::sync::Arc<Load>,
        metrics: std::sync::Arc<Metrics>,
        graph_url: &str,
        access_token: Secret,
        settings: SenderSettings,
    ) -> Self {
        let rates = rate::PageRates::new(settings.page_send_rate);
        OutboundSender {
            store,
            load,
            metrics,
            endpoint: format!("{graph_url}/me/messages"),
            access_token,
            settings,
            client: None,
            queues: HashMap::new(),
            in_flight: HashSet::new(),
            known: HashSet::new(),
            paused_pages: HashMap::new(),
            blocked_pages: HashSet::new(),
            rates,
        }
    }

    fn enqueue(&mut self, items: Vec<(u64, OutboxRecord)>, ctx: &mut Context<Self>) {
        let mut touched = Vec::new();
        for (seq, record) in items {
            if !self.known.insert(seq) {
                continue;
            }
            let key = record.conversation();
            self.load.replies_in(1);
            self.queues
                .entry(key.clone())
                .or_default()
                .push_back((seq, record));
            touched.push(key);
        }
        for key in touched {
            if !self.in_flight.contains(&key) {
                self.send_next(key, ctx);
            }
        }
    }

    /// Sends the head of a conversation's queue, if any.
    fn send_next(&mut self, key: ConversationKey, ctx: &mut Context<Self>) {
        let Some((_, record)) = self.queues.get(&key).and_then(|q| q.front()) else {
            self.queues.remove(&key);
            self.in_flight.remove(&key);
            return;
        };
        self.in_flight.insert(key.clone());
        let client = self
            .client
            .get_or_insert_with(|| build_client(&self.settings))
            .clone();
        let request = match &record.outgoing {
            Outgoing::Send(request) => request.clone(),
            Outgoing::Callback { url, body } => {
                let call = post_callback(client, url.clone(), body.clone());
                ctx.spawn(
                    call.into_actor(self)
                        .map(move |attempt, act, ctx| act.finish(key, attempt, ctx)),
                );
                return;
            }
        };
        if self.blocked_pages.contains(&key.page_id) {
            // Stays queued (and in the outbox) until a restart with a valid token.
            return;
        }
        if let Some(resume) = self.paused_pages.get(&key.page_id) {
            let wait = resume.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                ctx.run_later(wait, move |act, ctx| act.send_next(key, ctx));
                return;
            }
        }
        if let Err(wait) = self.rates.take(&key.page_id, Instant::now()) {
            ctx.run_later(wait, move |act, ctx| act.send_next(key, ctx));
            return;
        }
        let call = post(
            client,
            self.endpoint.clone(),
            self.access_token.clone(),
            request,
        );
        ctx.spawn(
            call.into_actor(self)
                .map(move |attempt, act, ctx| act.finish(key, attempt, ctx)),
        );
    }

    fn finish(&mut self, key: ConversationKey, attempt: Attempt, ctx: &mut Context<Self>) {
        let Some((seq, record)) = self.queues.get_mut(&key).and_then(|q| q.front_mut()) else {
            return;
        };
        let seq = *seq;
        record.attempts += 1;
        let outcome = match attempt {
            Attempt::Sent { message_id } => {
                self.metrics.reply("sent", None);
                SendOutcome::Sent {
                    message_id,
                    at: now_ms(),
                }
            }
            Attempt::Permanent(failure) => {
                self.metrics.reply("failed", failure.code);
                log::warn!("{key}: reply {seq} failed permanently: {}", failure.message);
                if failure.code == Some(INVALID_TOKEN) {
                    log::error!(
                        "page {}: the Graph API rejected the page access token (code 190); \
                         sending for this page is stopped until colloquy restarts with a valid \
                         MESSENGER_ACCESS_TOKEN. Unsent replies stay in the outbox.",
                        key.page_id
                    );
                    self.blocked_pages.insert(key.page_id.clone());
                }
                SendOutcome::Failed(failure)
            }
            Attempt::Retry {
                reason,
                throttled,
                retry_after,
            } => {
                let age = now_ms().saturating_sub(record.created_at);
                let too_old =
                    u128::try_from(age).unwrap_or_default() > self.settings.max_age.as_millis();
                if record.attempts < self.settings.max_attempts && !too_old {
                    let delay = retry_after
                        .unwrap_or_else(|| backoff(&self.settings, record.attempts, throttled));
                    if throttled {
                        log::warn!(
                            "page {}: throttled by the Graph API ({reason}); pausing its sends for {delay:?}",
                            key.page_id
                        );
                        self.paused_pages
                            .insert(key.page_id.clone(), Instant::now() + delay);
                    }
                    log::info!(
                        "{key}: reply {seq} attempt {} failed ({reason}); retrying in {delay:?}",
                        record.attempts
                    );
                    self.metrics.reply("retried", None);
                    // Queued at once; losing it only means more attempts after a crash.
                    drop(self.store.record_attempts(seq, record));
                    ctx.run_later(delay, move |act, ctx| act.send_next(key, ctx));
                    return;
                }
                let why = if too_old {
                    format!("gave up after {} s", age / 1000)
                } else {
                    format!("gave up after {} attempts", record.attempts)
                };
                log::warn!("{key}: reply {seq} failed: {why}: {reason}");
                self.metrics.reply("failed", None);
                SendOutcome::Failed(Failure::reason(format!("{why}: {reason}")))
            }
        };
        // The next reply of this conversation waits until this outcome is on disk, so a
        // crash can repeat at most the one send per conversation that was in flight.
        // (The flush is shared with every other writer of the same commit cycle.)
        let recorded = self.store.complete_send(seq, record, outcome);
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.pop_front();
        }
        self.known.remove(&seq);
        self.load.replies_out(1);
        let waiting = Instant::now();
        ctx.spawn(recorded.into_actor(self).map(move |recorded, act, ctx| {
            act.metrics.flush_waited("sender", waiting.elapsed());
            if let Err(error) = recorded {
                // The item stays in the outbox and is sent again after a restart.
                log::error!("{key}: cannot record the outcome of reply {seq}: {error}");
            }
            act.send_next(key, ctx);
        }));
    }
}

/// Capped exponential backoff with jitter (50-100% of the step), longer when throttled.
fn backoff(settings: &SenderSettings, attempts: u32, throttled: bool) -> Duration {
    let base = if throttled {
        settings.initial_backoff.max(THROTTLE_BACKOFF)
    } else {
        settings.initial_backoff
    };
    let step = base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(settings.max_backoff);
    step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

impl Actor for OutboundSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Replies committed before a crash or stop and never completed.
        match self.store.pending_outbox() {
            Ok(pending) if !pending.is_empty() => {
                log::info!(
                    "resuming {} unsent repl(ies) from the outbox",
                    pending.len()
                );
                self.enqueue(pending, ctx);
            }
            Ok(_) => {}
            Err(error) => log::error!("cannot read the outbox: {error}"),
        }
    }
}

impl Handler<Enqueue> for OutboundSender {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.enqueue(msg.items, ctx);
    }
}

impl Handler<Shutdown> for OutboundSender {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn build_client(settings: &SenderSettings) -> awc::Client {
    awc::Client::builder()
        .timeout(settings.request_timeout)
        .disable_redirects()
        .finish()
}

/// One callback POST, classified: 2xx sent; 5xx, 429 and network errors retried; other
/// answers fail it.
async fn post_callback(client: awc::Client, url: String, body: serde_json::Value) -> Attempt {
    let retry = |reason: String| Attempt::Retry {
        reason,
        throttled: false,
        retry_after: None,
    };
    match client.post(&url).send_json(&body).await {
        Err(error) => retry(format!("callback network: {error}")),
        Ok(response) => match response.status().as_u16() {
            200..=299 => Attempt::Sent { message_id: None },
            status @ (429 | 500..=599) => retry(format!("callback answered HTTP {status}")),
            status => {
                Attempt::Permanent(Failure::reason(format!("callback answered HTTP {status}")))
            }
        },
    }
}

/// One Send API call, classified.
async fn post(
    client: awc::Client,
    endpoint: String,
    access_token: Secret,
    request: SendRequest,
) -> Attempt {
    let sent = client
        .post(endpoint)
        .query(&[("access_token", access_token.expose())])
        .map_err(|e| Attempt::Permanent(Failure::reason(format!("bad request URL: {e}"))));
    let sent = match sent {
        Ok(sent) => sent.send_json(&request).await,
        Err(attempt) => return attempt,
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Retry {
                reason: format!("network: {error}"),
                throttled: false,
                retry_after: None,
            }
        }
    };
    let status = response.status();
    let hint = response
        .headers()
        .get("x-business-use-case-usage")
        .and_then(|v| v.to_str().ok())
        .and_then(regain_access_hint);
    let body = match response.body().limit(MAX_RESPONSE_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            return Attempt::Retry {
                reason: format!("reading the answer: {error}"),
                throttled: false,
                retry_after: None,
            }
        }
    };
    match classify(status.as_u16(), &body) {
        Attempt::Retry {
            reason,
            throttled: true,
            retry_after: None,
        } => Attempt::Retry {
            reason,
            throttled: true,
            retry_after: hint,
        },
        other => other,
    }
}

/// `estimated_time_to_regain_access` (minutes) from the `X-Business-Use-Case-Usage`
/// header: `{"<id>":[{"type":"messenger","estimated_time_to_regain_access":5,...}]}`.
pub fn regain_access_hint(header: &str) -> Option<Duration> {
    let usage: serde_json::Value = serde_json::from_str(header).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60).min(MAX_HINTED_WAIT))
}

/// Turns a Send API answer into an attempt outcome. Graph errors are judged by their
/// code and subcode, never by the HTTP status or message text.
pub fn classify(status: u16, body: &[u8]) -> Attempt {
    if (200..300).contains(&status) {
        let message_id = serde_json::from_slice::<SendResponse>(body)
            .ok()
            .and_then(|r| r.message_id);
        return Attempt::Sent { message_id };
    }
    if let Some(error) = parse_graph_error(body) {
        let reason = format!("Graph error {}", error.describe());
        return match error.class() {
            ErrorClass::Transient => Attempt::Retry {
                reason,
                throttled: false,
                retry_after: None,
            },
            ErrorClass::Throttled => Attempt::Retry {
                reason,
                throttled: true,
                retry_after: None,
            },
            ErrorClass::Permanent => Attempt::Permanent(Failure {
                code: Some(error.code),
                subcode: error.error_subcode,
                message: error.message,
            }),
        };
    }
    match status {
        429 => Attempt::Retry {
            reason: "HTTP 429".into(),
            throttled: true,
            retry_after: None,
        },
        500..=599 => Attempt::Retry {
            reason: format!("HTTP {status}"),
            throttled: false,
            retry_after: None,
        },
        _ => Attempt::Permanent(Failure::reason(format!(
            "HTTP {status} without a Graph error body"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2xx_answer_yields_the_message_id() {
        assert_eq!(
            classify(200, br#"{"recipient_id":"1","message_id":"m_9"}"#),
            Attempt::Sent {
                message_id: Some("m_9".into())
            }
        );
    }

    #[test]
    fn a_5xx_without_body_is_retried() {
        assert!(matches!(
            classify(502, b"bad gateway"),
            Attempt::Retry {
                throttled: false,
                ..
            }
        ));
    }

    #[test]
    fn rate_limit_613_is_retried_as_throttled() {
        let body = br#"{"error":{"message":"(#613) Calls to this api have exceeded the rate limit.","type":"OAuthException","code":613}}"#;
        assert!(matches!(
            classify(400, body),
            Attempt::Retry {
                throttled: true,
                ..
            }
        ));
    }

    #[test]
    fn a_permanent_graph_error_keeps_code_subcode_and_message() {
        let body = br#"{"error":{"message":"(#551) This person isn't available right now.","type":"OAuthException","code":551,"error_subcode":1545041,"fbtrace_id":"x"}}"#;
        assert_eq!(
            classify(400, body),
            Attempt::Permanent(Failure {
                code: Some(551),
                subcode: Some(1545041),
                message: "(#551) This person isn't available right now.".into()
            })
        );
    }

    #[test]
    fn a_transient_code_2_in_a_500_is_retried() {
        let body = br#"{"error":{"message":"An unexpected error has occurred.","code":2,"is_transient":true}}"#;
        assert!(matches!(
            classify(500, body),
            Attempt::Retry {
                throttled: false,
                ..
            }
        ));
    }

    #[test]
    fn the_business_use_case_header_gives_the_wait_in_minutes() {
        let header = r#"{"1234":[{"type":"messenger","call_count":100,"estimated_time_to_regain_access":3}]}"#;
        assert_eq!(regain_access_hint(header), Some(Duration::from_secs(180)));
        assert_eq!(
            regain_access_hint(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#),
            None
        );
        assert_eq!(regain_access_hint("not json"), None);
        let huge = r#"{"1":[{"estimated_time_to_regain_access":100000}]}"#;
        assert_eq!(regain_access_hint(huge), Some(MAX_HINTED_WAIT));
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let settings = SenderSettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..SenderSettings::default()
        };
        let first = backoff(&settings, 1, false);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = backoff(&settings, 30, false);
        assert!(late <= Duration::from_secs(1) && late >= Duration::from_millis(500));
        // Throttling starts from a 2 s step, capped here at 1 s, so never below half of that.
        assert!(backoff(&settings, 1, true) >= Duration::from_millis(500));
    }
}

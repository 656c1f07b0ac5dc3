//! When a webhook POST is answered: once each event's own turn has committed durably (one
//! write per message), or, past the acknowledgement deadline, once what is unfinished is
//! journalled; and never twice handled either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use colloquy::event::InboundEvent;
use colloquy::flow::{Flow, FlowError, FlowHandle, Turn};

use crate::helpers::*;

/// Answers every message, but holds the turn of a message saying "wait" until the gate
/// opens: a flow that is slow exactly when a test wants it.
struct Gated {
    open: Arc<AtomicBool>,
}

impl Flow for Gated {
    type State = ();

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<()>) -> Result<(), FlowError> {
        if event.text() == Some("wait") {
            while !self.open.load(Ordering::SeqCst) {
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
        }
        turn.say(format!("got {}", event.text().unwrap_or_default()))?;
        Ok(())
    }
}

fn gated(ack_deadline: Duration) -> (Options, Arc<AtomicBool>) {
    let open = Arc::new(AtomicBool::new(false));
    let options = Options {
        flow: FlowHandle::new(Gated { open: open.clone() }),
        ack_deadline: Some(ack_deadline),
        ..Options::default()
    };
    (options, open)
}

/// Posts `text` from `psid` in the background; the handle resolves to the HTTP status.
fn post_in_background(app: &TestApp, psid: &str, mid: &str, text: &str) -> JoinHandle {
    let body = text_message(psid, mid, text, 1_000);
    let url = format!("{}{}", app.base_url, app.webhook_path);
    actix_rt::spawn(async move {
        let signature = colloquy::test_support::sign_sha256(APP_SECRET.as_bytes(), body.as_bytes());
        let response = awc::Client::new()
            .post(url)
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Hub-Signature-256", signature))
            .send_body(body)
            .await
            .unwrap();
        response.status().as_u16()
    })
}

type JoinHandle = actix_rt::task::JoinHandle<u16>;

#[actix_web::test]
async fn a_post_is_answered_only_once_its_turn_is_committed() {
    let (options, open) = gated(Duration::from_secs(10));
    let app = spawn_app_with(options).await;

    let answer = post_in_background(&app, "14001", "m.ack1", "wait");
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !answer.is_finished(),
        "the POST was answered while its turn was still running"
    );

    open.store(true, Ordering::SeqCst);
    assert_eq!(answer.await.unwrap(), 200);
    // Answered means committed: the handled event and its queued reply are already there.
    let doc = app.conversation("14001").await;
    assert_eq!(doc["transcript"][0]["status"], "handled", "{doc}");
    assert_eq!(outbound(&doc).len(), 1, "{doc}");
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric_value(&metrics, "colloquy_events_journalled_late_total"),
        0.0
    );
}

#[actix_web::test]
async fn an_event_whose_turn_outlasts_the_deadline_is_journalled_answered_and_handled_once() {
    let (options, open) = gated(Duration::from_millis(200));
    let app = spawn_app_with(options).await;

    // The turn is held far past the deadline: the POST is answered anyway.
    let answer = post_in_background(&app, "14002", "m.late", "wait");
    assert_eq!(answer.await.unwrap(), 200);
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric_value(&metrics, "colloquy_events_journalled_late_total"),
        1.0
    );
    // A later message of the same user waits behind the held turn, in order.
    let next = post_in_background(&app, "14002", "m.after", "next");

    open.store(true, Ordering::SeqCst);
    assert_eq!(next.await.unwrap(), 200);
    let sends = app.graph.wait_for_sends(2).await;
    let texts: Vec<&str> = sends
        .iter()
        .map(|s| s.body["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["got wait", "got next"]);
    // The journalled copy of the held event was recognised as handled: no second reply.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.graph.sends().len(), 2);
    let doc = app.conversation("14002").await;
    let inbound = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "in")
        .count();
    assert_eq!(inbound, 2, "{doc}");
}

#[actix_web::test]
async fn with_a_zero_deadline_every_event_is_journalled_before_the_answer() {
    let (options, open) = gated(Duration::ZERO);
    let app = spawn_app_with(options).await;

    // Journalled first, so answered while the turn is still held.
    let answer = post_in_background(&app, "14003", "m.zero", "wait");
    assert_eq!(answer.await.unwrap(), 200);
    open.store(true, Ordering::SeqCst);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["message"]["text"], "got wait");
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric_value(&metrics, "colloquy_events_journalled_late_total"),
        0.0
    );
}

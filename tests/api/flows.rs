//! The Flow API end to end: timers (also across restarts), handover, routing helpers.

use std::time::Duration;

use colloquy::event::{InboundEvent, TimerFired};
use colloquy::flow::{Flow, FlowError, FlowHandle, Input, Turn};
use serde_json::json;

use crate::helpers::*;

/// Nudges 300 ms after "start" unless the user says "stop" first.
struct Nudger;

impl Flow for Nudger {
    type State = u32;

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<u32>) -> Result<(), FlowError> {
        match event.input() {
            Input::Text("start") => {
                turn.schedule("nudge", Duration::from_millis(300), json!({"attempt": 1}));
                turn.say("started")?;
            }
            Input::Text("stop") => {
                turn.cancel_timer("nudge");
                turn.say("stopped")?;
            }
            Input::Text(other) => turn.say(format!("you said {other}"))?,
            _ => {}
        }
        Ok(())
    }

    async fn on_timer(&self, timer: &TimerFired, turn: &mut Turn<u32>) -> Result<(), FlowError> {
        if timer.name == "nudge" {
            *turn.state_mut() += 1;
            turn.say(format!(
                "still there? (attempt {})",
                timer.payload["attempt"]
            ))?;
        }
        Ok(())
    }
}

fn nudger_app() -> Options {
    Options {
        flow: FlowHandle::new(Nudger),
        ..Options::default()
    }
}

fn texts(app: &TestApp, psid: &str) -> Vec<String> {
    app.graph
        .sends()
        .iter()
        .filter(|s| s.body["recipient"]["id"] == psid)
        .map(|s| {
            s.body["message"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[actix_web::test]
async fn a_scheduled_timer_fires_into_the_flow() {
    let app = spawn_app_with(nudger_app()).await;
    app.sends_text("15001", "m.t1", "start", 1_000).await;
    app.graph.wait_for_sends(2).await;
    assert_eq!(
        texts(&app, "15001"),
        vec!["started", "still there? (attempt 1)"]
    );
    let doc = app
        .wait_for_conversation("15001", |d| d["state"] == 1)
        .await;
    let kinds: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["text", "text", "timer", "text"]);
}

#[actix_web::test]
async fn a_cancelled_timer_never_fires() {
    let app = spawn_app_with(nudger_app()).await;
    app.sends_text("15002", "m.c1", "start", 1_000).await;
    app.sends_text("15002", "m.c2", "stop", 1_001).await;
    app.graph.wait_for_sends(2).await;
    // Well past the due time (300 ms) and a few timer ticks (100 ms).
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    app.sends_text("15002", "m.c3", "hello", 1_002).await;
    app.graph.wait_for_sends(3).await;
    assert_eq!(
        texts(&app, "15002"),
        vec!["started", "stopped", "you said hello"]
    );
}

#[test]
fn a_timer_survives_a_restart_and_fires_after_it() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    // This life ends (the engine stops) before the timer is due.
    one_life(&graph, &data_dir, nudger_app(), async |app| {
        app.sends_text("15003", "m.r1", "start", 1_000).await;
        app.graph.wait_for_sends(1).await;
    });
    assert_eq!(
        graph.sends().len(),
        1,
        "the timer had not fired before the stop"
    );
    one_life(&graph, &data_dir, nudger_app(), async |app| {
        let sends = app.graph.wait_for_sends(2).await;
        assert_eq!(sends[1].body["message"]["text"], "still there? (attempt 1)");
    });
}

#[actix_web::test]
async fn while_another_app_owns_the_thread_the_flow_is_silent() {
    let app = spawn_app_with(nudger_app()).await;
    let control = |kind: &str, ts: i64| {
        envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
            {"sender": {"id": "15004"}, "recipient": {"id": PAGE_ID}, "timestamp": ts,
             kind: {"previous_owner_app_id": "1", "new_owner_app_id": "2", "metadata": "agent"}}
        ]})])
    };
    assert_eq!(
        app.post_signed(&control("take_thread_control", 1_000))
            .await
            .status,
        200
    );
    app.sends_text("15004", "m.h1", "anyone?", 1_001).await;
    assert_eq!(
        app.post_signed(&control("pass_thread_control", 1_002))
            .await
            .status,
        200
    );
    app.sends_text("15004", "m.h2", "back", 1_003).await;
    app.graph.wait_for_sends(1).await;
    assert_eq!(texts(&app, "15004"), vec!["you said back"]);
    let doc = app
        .wait_for_conversation("15004", |d| outbound(d).len() == 1)
        .await;
    let inbound: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        inbound,
        vec!["take_thread_control", "text", "pass_thread_control", "text"]
    );
}

#[actix_web::test]
async fn standby_events_are_recorded_but_never_answered() {
    let app = spawn_app_with(nudger_app()).await;
    let standby = envelope(vec![json!({"id": PAGE_ID, "time": 1, "standby": [
        message_event("15005", "m.s1", "hello from standby", 1_000)
    ]})]);
    assert_eq!(app.post_signed(&standby).await.status, 200);
    let barrier = text_message("15005", "m.s2", "and now?", 1_001);
    assert_eq!(app.post_signed(&barrier).await.status, 200);
    app.graph.wait_for_sends(1).await;
    assert_eq!(texts(&app, "15005"), vec!["you said and now?"]);
}

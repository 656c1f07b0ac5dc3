//! Conversations end to end: replies, the seed's receipts, batching, dedup, order, failing
//! flows and idle actors. What survives a restart is in `restarts.rs`.

use colloquy::event::InboundEvent;
use colloquy::flow::{Flow, FlowError, FlowHandle, Turn};
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn a_signed_message_gets_exactly_one_thank_you_reply_to_its_sender() {
    a_signed_message_gets_one_reply(spawn_app().await).await;
}

/// The same through the webhook served on the engine's own thread (`COLLOQUY_WORKERS=0`).
#[actix_web::test]
async fn a_signed_message_served_on_the_engines_thread_gets_one_reply() {
    let app = spawn_app_with(Options {
        workers: Some(0),
        ..Options::default()
    })
    .await;
    a_signed_message_gets_one_reply(app).await;
}

async fn a_signed_message_gets_one_reply(app: TestApp) {
    let answer = app
        .post_signed(&text_message("2001", "m.one", "hello", 1_700_000_000_000))
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "EVENT_RECEIVED")
    );
    let sends = app.graph.wait_for_sends(1).await;
    let send = &sends[0];
    assert!(
        send.is_authorized_by(ACCESS_TOKEN, APP_SECRET),
        "token in the Authorization header, appsecret_proof in the query: {:?} {:?}",
        send.authorization,
        send.query
    );
    assert_eq!(send.body["recipient"]["id"], "2001");
    assert_eq!(send.body["messaging_type"], "RESPONSE");
    assert_eq!(send.body["message"]["text"], THANKS);
    let doc = app.wait_for_first_reply("2001", "sent").await;
    assert_eq!(outbound(&doc)[0]["mid"], "m_mock_1");
    assert_eq!(doc["transcript"][0]["direction"], "in");
    assert_eq!(doc["transcript"][0]["text"], "hello");
    assert_eq!(doc["state"]["messages"], 1);
    assert_eq!(app.graph.sends().len(), 1, "exactly one reply");
}

#[actix_web::test]
async fn the_seed_samples_in_sequence_end_with_the_reply_read() {
    let app = spawn_app().await;
    // The Send API answers with the mid that the seed's echo and delivery carry.
    app.graph.script([Scripted {
        status: 200,
        body: json!({"recipient_id": "969833033053167", "message_id": "mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN"}),
    }]);
    assert_eq!(app.post_signed(&sample("message.json")).await.status, 200);
    app.graph.wait_for_sends(1).await;
    app.wait_for_first_reply("969833033053167", "sent").await;

    assert_eq!(app.post_signed(&sample("echo.json")).await.status, 200);
    assert_eq!(app.post_signed(&sample("delivery.json")).await.status, 200);
    let delivered = app
        .wait_for_conversation("969833033053167", |d| {
            d["delivered_watermark"] == 1501316912643i64
        })
        .await;
    assert_eq!(outbound(&delivered)[0]["status"], "delivered");
    assert_eq!(outbound(&delivered)[0]["timestamp"], 1501316912643i64);

    assert_eq!(app.post_signed(&sample("read.json")).await.status, 200);
    let doc = app
        .wait_for_conversation("969833033053167", |d| {
            d["read_watermark"] == 1501316912643i64
        })
        .await;
    let replies = outbound(&doc);
    assert_eq!(
        replies.len(),
        1,
        "the echo links to the reply, it is not a new message"
    );
    assert_eq!(replies[0]["status"], "read");
    assert_eq!(replies[0]["text"], THANKS);
    assert_eq!(replies[0]["mid"], "mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN");
    assert_eq!(doc["page_id"], PAGE_ID);
    assert_eq!(
        app.graph.sends().len(),
        1,
        "receipts and echoes never run the flow"
    );
}

#[actix_web::test]
async fn a_batched_post_with_several_entries_and_senders_answers_every_sender() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..Options::default()
    })
    .await;
    let body = envelope(vec![
        json!({"id": PAGE_ID, "time": 1, "messaging": [
            message_event("3001", "m.b1", "one", 10),
            message_event("3002", "m.b2", "two", 11),
            message_event("3001", "m.b3", "three", 12),
        ]}),
        json!({"id": "999000", "time": 2, "messaging": [
            {"sender": {"id": "3003"}, "recipient": {"id": "999000"}, "timestamp": 13,
             "message": {"mid": "m.b4", "text": "four"}}
        ]}),
    ]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sends = app.graph.wait_for_sends(4).await;
    let to = |psid: &str| -> Vec<Value> {
        sends
            .iter()
            .filter(|s| s.body["recipient"]["id"] == psid)
            .map(|s| s.body["message"]["text"].clone())
            .collect()
    };
    assert_eq!(to("3001"), vec![json!("one"), json!("three")]);
    assert_eq!(to("3002"), vec![json!("two")]);
    assert_eq!(to("3003"), vec![json!("four")]);
    let pages: Vec<Value> = app
        .conversations()
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["page_id"].clone())
        .collect();
    assert!(pages.contains(&json!("999000")));
}

#[actix_web::test]
async fn a_redelivered_mid_gets_no_second_reply() {
    let app = spawn_app().await;
    let body = text_message("4001", "m.dup", "hello", 1_700_000_000_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    app.graph.wait_for_sends(1).await;
    // Facebook redelivers the same payload, and once more inside a batch.
    assert_eq!(app.post_signed(&body).await.status, 200);
    let batch = envelope(vec![json!({"id": PAGE_ID, "time": 2, "messaging": [
        message_event("4001", "m.dup", "hello", 1_700_000_000_000),
        message_event("4001", "m.after", "again", 1_700_000_000_500),
    ]})]);
    assert_eq!(app.post_signed(&batch).await.status, 200);
    // The later message is handled after the redeliveries (same conversation, in order).
    app.graph.wait_for_sends(2).await;
    let doc = app
        .wait_for_conversation("4001", |d| outbound(d).len() == 2)
        .await;
    assert_eq!(app.graph.sends().len(), 2);
    let inbound: Vec<&Value> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "in")
        .collect();
    assert_eq!(
        inbound.len(),
        2,
        "the duplicate is not in the transcript: {doc:#}"
    );
}

#[actix_web::test]
async fn replies_to_one_sender_leave_in_the_order_they_were_decided() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..Options::default()
    })
    .await;
    for i in 0..8 {
        let body = text_message("5001", &format!("m.o{i}"), &format!("n{i}"), 1_000 + i);
        assert_eq!(app.post_signed(&body).await.status, 200);
    }
    let sends = app.graph.wait_for_sends(8).await;
    let texts: Vec<String> = sends
        .iter()
        .map(|s| s.body["message"]["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    assert_eq!(texts, expected);
}

#[actix_web::test]
async fn an_echo_of_a_message_colloquy_did_not_send_is_recorded_as_a_page_message() {
    let app = spawn_app().await;
    let echo = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        {"sender": {"id": PAGE_ID}, "recipient": {"id": "6001"}, "timestamp": 2000,
         "message": {"is_echo": true, "app_id": 263902037430900u64, "mid": "m.human", "text": "Hi, a human here"}}
    ]})]);
    assert_eq!(app.post_signed(&echo).await.status, 200);
    let read = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        {"sender": {"id": "6001"}, "recipient": {"id": PAGE_ID}, "timestamp": 3000,
         "read": {"watermark": 2500}}
    ]})]);
    assert_eq!(app.post_signed(&read).await.status, 200);
    let doc = app
        .wait_for_conversation("6001", |d| d["read_watermark"] == 2500)
        .await;
    let out = outbound(&doc);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["kind"], "echo");
    assert_eq!(out[0]["text"], "Hi, a human here");
    assert_eq!(out[0]["status"], "read");
    assert!(app.graph.sends().is_empty(), "an echo never runs the flow");
}

#[actix_web::test]
async fn watermarks_only_move_forward() {
    let app = spawn_app().await;
    let read = |watermark: i64, ts: i64| {
        envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
            {"sender": {"id": "6101"}, "recipient": {"id": PAGE_ID}, "timestamp": ts,
             "read": {"watermark": watermark}}
        ]})])
    };
    assert_eq!(app.post_signed(&read(5000, 5001)).await.status, 200);
    assert_eq!(app.post_signed(&read(4000, 5002)).await.status, 200);
    // A message after both reads acts as a barrier: once it is handled, so are they.
    let barrier = text_message("6101", "m.wm", "hi", 6000);
    assert_eq!(app.post_signed(&barrier).await.status, 200);
    app.graph.wait_for_sends(1).await;
    let doc = app.conversation("6101").await;
    assert_eq!(doc["read_watermark"], 5000);
    assert_eq!(doc["delivered_watermark"], 5000);
}

#[actix_web::test]
async fn a_delivery_settles_the_messages_it_lists_and_a_read_settles_all_it_covers() {
    let app = spawn_app().await;
    let receipt = |kind: &str, body: Value| {
        envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
            {"sender": {"id": "6201"}, "recipient": {"id": PAGE_ID}, "timestamp": 1, kind: body}
        ]})])
    };
    for i in 1..=3 {
        let message = text_message("6201", &format!("m.r{i}"), "hi", i);
        assert_eq!(app.post_signed(&message).await.status, 200);
        app.graph.wait_for_sends(i as usize).await;
    }
    let doc = app
        .wait_for_conversation("6201", |d| {
            outbound(d).iter().all(|r| r["status"] == "sent") && outbound(d).len() == 3
        })
        .await;
    assert_eq!(outbound(&doc).len(), 3);

    // Only the second reply is listed: the first stays where delivery receipts look from.
    let delivery = receipt("delivery", json!({"mids": ["m_mock_2"], "watermark": 1}));
    assert_eq!(app.post_signed(&delivery).await.status, 200);
    let doc = app
        .wait_for_conversation("6201", |d| outbound(d)[1]["status"] == "delivered")
        .await;
    let statuses: Vec<Value> = outbound(&doc).iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, [json!("sent"), json!("delivered"), json!("sent")]);

    let far_ahead = 4_102_444_800_000i64; // 2100-01-01: covers every reply.
    let read = receipt("read", json!({"watermark": far_ahead}));
    assert_eq!(app.post_signed(&read).await.status, 200);
    let doc = app
        .wait_for_conversation("6201", |d| d["read_watermark"] == far_ahead)
        .await;
    assert!(
        outbound(&doc).iter().all(|r| r["status"] == "read"),
        "{doc}"
    );
}

/// A flow that fails on "boom" and panics on "panic", and thanks otherwise.
struct Fragile;

impl Flow for Fragile {
    type State = u32;

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<u32>) -> Result<(), FlowError> {
        match event.text() {
            Some("boom") => Err(FlowError::failed("the flow refused")),
            Some("panic") => panic!("flow bug"),
            _ => {
                *turn.state_mut() += 1;
                turn.say("ok")?;
                Ok(())
            }
        }
    }
}

#[actix_web::test]
async fn a_failing_or_panicking_flow_marks_the_event_failed_and_the_conversation_goes_on() {
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(Fragile),
        ..Options::default()
    })
    .await;
    for (i, text) in ["boom", "panic", "fine"].iter().enumerate() {
        let body = text_message("7001", &format!("m.f{i}"), text, 100 + i as i64);
        assert_eq!(app.post_signed(&body).await.status, 200);
    }
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["message"]["text"], "ok");
    let doc = app
        .wait_for_conversation("7001", |d| outbound(d).len() == 1)
        .await;
    let transcript = doc["transcript"].as_array().unwrap();
    assert_eq!(transcript[0]["status"], "failed");
    assert!(transcript[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the flow refused"));
    assert_eq!(transcript[1]["status"], "failed");
    assert!(transcript[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("flow bug"));
    assert_eq!(transcript[2]["status"], "handled");
    assert_eq!(doc["state"], 1, "failed turns do not change the state");
}

#[actix_web::test]
async fn an_idle_conversation_actor_stops_and_later_messages_still_get_replies() {
    let app = spawn_app_with(Options {
        idle_timeout_secs: Some(1),
        ..Options::default()
    })
    .await;
    let first = text_message("8001", "m.i1", "hello", 1_000);
    assert_eq!(app.post_signed(&first).await.status, 200);
    app.graph.wait_for_sends(1).await;
    assert_eq!(app.app.live_conversations().await, 1);
    let started = std::time::Instant::now();
    while app.app.live_conversations().await > 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "the idle actor never stopped"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = text_message("8001", "m.i2", "again", 2_000);
    assert_eq!(app.post_signed(&second).await.status, 200);
    app.graph.wait_for_sends(2).await;
    let doc = app
        .wait_for_conversation("8001", |d| outbound(d).len() == 2)
        .await;
    assert_eq!(
        doc["state"]["messages"], 2,
        "the new actor loaded the stored state"
    );
}

/// A flow that never finishes on "hang".
struct Hangs;

impl Flow for Hangs {
    type State = ();

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<()>) -> Result<(), FlowError> {
        if event.text() == Some("hang") {
            std::future::pending::<()>().await;
        }
        turn.say("done")?;
        Ok(())
    }
}

#[actix_web::test]
async fn a_flow_past_its_timeout_fails_that_event_and_the_next_one_is_handled() {
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(Hangs),
        flow_timeout: Some(std::time::Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    for (i, text) in ["hang", "next"].iter().enumerate() {
        let body = text_message("7101", &format!("m.h{i}"), text, 100 + i as i64);
        assert_eq!(app.post_signed(&body).await.status, 200);
    }
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["message"]["text"], "done");
    let doc = app
        .wait_for_conversation("7101", |d| outbound(d).len() == 1)
        .await;
    assert_eq!(doc["transcript"][0]["status"], "failed");
    let reason = doc["transcript"][0]["error"]["message"].as_str().unwrap();
    assert!(reason.contains("did not finish within"), "{reason}");
}

#[actix_web::test]
async fn a_batch_listing_a_senders_events_out_of_order_is_handled_in_timestamp_order() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..Options::default()
    })
    .await;
    let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        message_event("7201", "m.late", "second", 2_000),
        message_event("7201", "m.early", "first", 1_000),
    ]})]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sends = app.graph.wait_for_sends(2).await;
    let texts: Vec<&str> = sends
        .iter()
        .map(|s| s.body["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["first", "second"]);
}

#[actix_web::test]
async fn a_redelivered_postback_runs_the_flow_once() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..Options::default()
    })
    .await;
    let postback = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        {"sender": {"id": "9201"}, "recipient": {"id": PAGE_ID}, "timestamp": 1_000,
         "postback": {"mid": "m.pb", "title": "Start", "payload": "GET_STARTED"}}
    ]})]);
    assert_eq!(app.post_signed(&postback).await.status, 200);
    assert_eq!(app.post_signed(&postback).await.status, 200);
    let barrier = text_message("9201", "m.pb.barrier", "later", 2_000);
    assert_eq!(app.post_signed(&barrier).await.status, 200);
    let sends = app.graph.wait_for_sends(2).await;
    let texts: Vec<&str> = sends
        .iter()
        .map(|s| s.body["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["You pressed GET_STARTED.", "later"]);
    let doc = app
        .wait_for_conversation("9201", |d| outbound(d).len() == 2)
        .await;
    assert_eq!(doc["state"]["messages"], 2);
}

#[actix_web::test]
async fn beyond_the_live_actor_bound_the_least_recently_used_retire_and_nothing_is_lost() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        max_live_conversations: Some(4),
        ..Options::default()
    })
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("{}", 14000 + i)).collect();
    // Two rounds posted back to back: later events reach actors that are retiring.
    for round in 0..2 {
        let events: Vec<Value> = users
            .iter()
            .map(|u| {
                message_event(
                    u,
                    &format!("m.{u}.{round}"),
                    &format!("r{round}"),
                    1_000 + round,
                )
            })
            .collect();
        let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": events})]);
        assert_eq!(app.post_signed(&body).await.status, 200);
    }
    let sends = app.graph.wait_for_sends(40).await;
    for user in &users {
        let texts: Vec<&str> = sends
            .iter()
            .filter(|s| s.body["recipient"]["id"] == user.as_str())
            .map(|s| s.body["message"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, vec!["r0", "r1"], "user {user}");
    }
    assert!(app.app.live_conversations().await <= 4, "the bound holds");
    let doc = app
        .wait_for_conversation(&users[0], |d| d["state"]["messages"] == 2)
        .await;
    assert_eq!(outbound(&doc).len(), 2);
}

#[actix_web::test]
async fn an_event_arriving_after_a_later_stamped_one_is_handled_and_marked_late() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::builtin::by_name("echo").unwrap(),
        ..Options::default()
    })
    .await;
    app.sends_text("7301", "m.new", "second", 2_000).await;
    app.graph.wait_for_sends(1).await;
    // Redelivered late by Facebook, in a later request.
    app.sends_text("7301", "m.old", "first", 1_000).await;
    app.graph.wait_for_sends(2).await;
    let doc = app
        .wait_for_conversation("7301", |d| outbound(d).len() == 2)
        .await;
    let inbound: Vec<(&str, bool)> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| {
            (
                e["text"].as_str().unwrap(),
                e["late"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(inbound, vec![("second", false), ("first", true)]);
}

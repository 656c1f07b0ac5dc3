//! The admin API's actions on a conversation, through real HTTP: each is applied in order
//! with the user's events, durable when answered, recorded as the operator's, and refused
//! with a clear error when it cannot be applied.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use colloquy::event::InboundEvent;
use colloquy::flow::{Flow, FlowError, FlowHandle, Turn};
use serde_json::{json, Value};

use crate::helpers::*;

/// A conversation with one handled message and its reply sent.
async fn talked_to(app: &TestApp, psid: &str) {
    app.sends_text(psid, &format!("m.{psid}.0"), "hello", 1_000)
        .await;
    app.wait_for_first_reply(psid, "sent").await;
}

#[actix_web::test]
async fn a_paused_user_is_recorded_but_not_answered_until_resumed() {
    let app = spawn_app().await;
    talked_to(&app, "15001").await;

    let paused = app
        .admin("POST", "/admin/conversations/15001/pause", "")
        .await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let doc = paused.json();
    assert_eq!(doc["paused"], true);
    let last = doc["transcript"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["kind"].as_str(), last["by_operator"].as_bool()),
        (Some("operator_pause"), Some(true))
    );

    app.sends_text("15001", "m.15001.1", "anyone?", 2_000).await;
    let doc = app
        .wait_for_conversation("15001", |d| {
            d["transcript"]
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e["text"] == "anyone?"))
        })
        .await;
    assert_eq!(outbound(&doc).len(), 1, "a paused user got a reply: {doc}");

    let resumed = app
        .admin("POST", "/admin/conversations/15001/resume", "")
        .await;
    assert_eq!(resumed.json()["paused"], false);
    app.sends_text("15001", "m.15001.2", "back?", 3_000).await;
    let sends = app.graph.wait_for_sends(2).await;
    assert_eq!(sends.len(), 2);
}

#[actix_web::test]
async fn an_operator_message_goes_out_as_the_page_and_is_marked_as_the_operators() {
    let app = spawn_app().await;
    talked_to(&app, "15002").await;

    let sent = app
        .admin(
            "POST",
            "/admin/conversations/15002/send",
            r#"{"text": "Hi, this is Ana from support."}"#,
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let sends = app.graph.wait_for_sends(2).await;
    assert_eq!(sends[1].body["recipient"]["id"], "15002");
    assert_eq!(
        sends[1].body["message"]["text"],
        "Hi, this is Ana from support."
    );
    assert_eq!(sends[1].body["messaging_type"], "RESPONSE");
    let doc = app
        .wait_for_conversation("15002", |d| outbound(d).len() == 2)
        .await;
    assert_eq!(outbound(&doc)[1]["by_operator"], true, "{doc}");

    let empty = app
        .admin("POST", "/admin/conversations/15002/send", r#"{"text": ""}"#)
        .await;
    assert_eq!(empty.status, 400);
    assert!(empty.json()["error"].as_str().unwrap().contains("empty"));
    let garbage = app
        .admin("POST", "/admin/conversations/15002/send", "{not json")
        .await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.json()["error"].as_str().unwrap().contains("JSON"));
}

#[actix_web::test]
async fn the_state_is_set_only_to_what_fits_the_flow_and_reset_to_a_new_users() {
    let app = spawn_app().await;
    talked_to(&app, "15003").await;

    let set = app
        .admin(
            "PUT",
            "/admin/conversations/15003/state",
            r#"{"messages": 41}"#,
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["state"], json!({"messages": 41}));

    let refused = app
        .admin(
            "PUT",
            "/admin/conversations/15003/state",
            r#"{"messages": "many"}"#,
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("state type") && error.contains("invalid type"),
        "{error}"
    );
    assert_eq!(
        app.conversation("15003").await["state"],
        json!({"messages": 41})
    );

    // The flow goes on from the state the operator set.
    app.sends_text("15003", "m.15003.1", "again", 2_000).await;
    let doc = app
        .wait_for_conversation("15003", |d| d["state"] == json!({"messages": 42}))
        .await;
    assert_eq!(doc["state"], json!({"messages": 42}));

    let reset = app
        .admin("DELETE", "/admin/conversations/15003/state", "")
        .await;
    assert_eq!(reset.status, 200);
    assert_eq!(reset.json()["state"], json!(null));
}

#[actix_web::test]
async fn actions_need_the_token_and_a_known_conversation() {
    let app = spawn_app().await;
    talked_to(&app, "15004").await;

    let unknown = app
        .admin("POST", "/admin/conversations/99999/pause", "")
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.json()["error"].as_str().unwrap().contains("99999"));

    let anonymous = awc::Client::new()
        .post(format!("{}/admin/conversations/15004/pause", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(app.conversation("15004").await["paused"], false);
}

#[actix_web::test]
async fn a_failed_reply_is_retried_and_turns_sent_once_and_only_what_failed() {
    let app = spawn_app().await;
    app.graph.script([graph_error(
        400,
        551,
        Some(1545041),
        "(#551) This person isn't available right now.",
    )]);
    app.sends_text("15005", "m.15005.0", "hello", 1_000).await;
    let doc = app.wait_for_first_reply("15005", "failed").await;
    let failed_seq = outbound(&doc)[0]["seq"].as_u64().unwrap();

    let wrong = app
        .admin(
            "POST",
            "/admin/conversations/15005/retry",
            &format!(r#"{{"seq": {}}}"#, failed_seq + 100),
        )
        .await;
    assert_eq!(wrong.status, 409, "{}", wrong.body);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .contains("not a failed reply"));

    let retried = app
        .admin(
            "POST",
            "/admin/conversations/15005/retry",
            &format!(r#"{{"seq": {failed_seq}}}"#),
        )
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["recipient"]["id"], "15005");
    let doc = app.wait_for_first_reply("15005", "sent").await;
    let entry = &outbound(&doc)[0];
    assert_eq!(entry["seq"].as_u64(), Some(failed_seq));
    assert_eq!(entry["error"], Value::Null, "{doc}");

    // Nothing failed any more: a second retry has nothing to do.
    let again = app
        .admin("POST", "/admin/conversations/15005/retry", "{}")
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(app.graph.sends().len(), 1);
}

#[actix_web::test]
async fn a_forgotten_user_is_gone_and_their_old_events_do_not_bring_them_back() {
    let app = spawn_app().await;
    talked_to(&app, "15006").await;
    // An event from before the forgetting that Facebook delivers late (never handled, so
    // no dedup mark would stop it): only the tombstone keeps it out.
    let late = text_message("15006", "m.15006.late", "late one", 1_500);

    let forgotten = app.admin("DELETE", "/admin/conversations/15006", "").await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.body);
    assert_eq!(forgotten.json()["forgotten"]["psid"], "15006");
    assert_eq!(app.conversation("15006").await, Value::Null);
    let listed = app.conversations().await;
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["psid"] == "15006"),
        "{listed}"
    );
    let again = app.admin("DELETE", "/admin/conversations/15006", "").await;
    assert_eq!(again.status, 404);

    assert_eq!(app.post_signed(&late).await.status, 200);
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.conversation("15006").await, Value::Null);
    assert_eq!(app.graph.sends().len(), 1, "no second reply");

    // The user writes again: a new conversation, with nothing of the old one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    app.sends_text("15006", "m.15006.new", "hi again", now + 1_000)
        .await;
    let doc = app.wait_for_first_reply("15006", "sent").await;
    let texts: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        !texts.contains(&"hello") && !texts.contains(&"late one"),
        "{doc}"
    );
    assert!(texts.contains(&"hi again"), "{doc}");
}

/// Fails on every message while its switch is on (a bug later fixed), answers otherwise.
struct Switchable {
    broken: Arc<AtomicBool>,
}

impl Flow for Switchable {
    type State = Vec<String>;

    async fn handle(
        &self,
        event: &InboundEvent,
        turn: &mut Turn<Vec<String>>,
    ) -> Result<(), FlowError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(FlowError::failed("the menu service is down"));
        }
        let text = event.text().unwrap_or_default().to_string();
        turn.state_mut().push(text.clone());
        turn.say(format!("got {text}"))?;
        Ok(())
    }
}

#[actix_web::test]
async fn a_failed_event_is_replayed_as_it_arrived_or_skipped_and_only_once() {
    let broken = Arc::new(AtomicBool::new(true));
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(Switchable {
            broken: broken.clone(),
        }),
        ..Options::default()
    })
    .await;
    app.sends_text("15101", "m.15101.0", "order pizza", 1_000)
        .await;
    app.sends_text("15101", "m.15101.1", "with olives", 2_000)
        .await;
    let doc = app
        .wait_for_conversation("15101", |d| {
            d["transcript"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    assert_eq!(doc["failed_events"], json!([0, 1]), "{doc}");

    // Not a failed event: refused, nothing changes.
    let wrong = app
        .admin("POST", "/admin/conversations/15101/replay", r#"{"seq": 7}"#)
        .await;
    assert_eq!(wrong.status, 409, "{}", wrong.body);
    let bad = app
        .admin("POST", "/admin/conversations/15101/skip", "{}")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    broken.store(false, Ordering::SeqCst);
    let replayed = app
        .admin("POST", "/admin/conversations/15101/replay", r#"{"seq": 0}"#)
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    let doc = replayed.json();
    assert_eq!(
        doc["state"],
        json!(["order pizza"]),
        "run as it first arrived"
    );
    assert_eq!(doc["failed_events"], json!([1]));
    let kinds: Vec<&str> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["text", "text", "operator_replay", "text", "text"]);
    assert_eq!(
        app.graph.wait_for_sends(1).await[0].body["message"]["text"],
        "got order pizza"
    );

    let again = app
        .admin("POST", "/admin/conversations/15101/replay", r#"{"seq": 0}"#)
        .await;
    assert_eq!(again.status, 409, "a replayed event is not replayed twice");

    let skipped = app
        .admin("POST", "/admin/conversations/15101/skip", r#"{"seq": 1}"#)
        .await;
    assert_eq!(skipped.status, 200, "{}", skipped.body);
    let doc = skipped.json();
    assert_eq!(doc["failed_events"], json!([]));
    assert_eq!(
        doc["state"],
        json!(["order pizza"]),
        "a skipped event never runs"
    );
    let last = doc["transcript"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["kind"].as_str(), last["by_operator"].as_bool()),
        (Some("operator_skip"), Some(true))
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.graph.sends().len(), 1);
}

#[actix_web::test]
async fn an_operator_starts_an_interview_for_a_user_who_wrote_before_and_an_unknown_tree_is_refused(
) {
    let trees = format!("{}/data/flows", env!("CARGO_MANIFEST_DIR"));
    let flow = colloquy::flow::tree::TreeFlow::load(&trees)
        .unwrap()
        .into_handle();
    let app = spawn_app_with(Options {
        flow,
        ..Options::default()
    })
    .await;
    // They wrote before and were started on the default tree.
    app.sends_text("15201", "m.15201.0", "hi", 1_000).await;
    app.graph.wait_for_sends(2).await;

    let started = app
        .admin(
            "POST",
            "/admin/conversations/15201/start",
            r#"{"tree": "satisfaction"}"#,
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let doc = started.json();
    assert_eq!(doc["state"]["tree"], "satisfaction");
    assert_eq!(doc["state"]["stage"]["status"], "asking");
    let sends = app.graph.wait_for_sends(4).await;
    assert_eq!(
        sends[3].body["message"]["text"],
        "How would you rate our service, from 1 to 5?"
    );

    let unknown = app
        .admin(
            "POST",
            "/admin/conversations/15201/start",
            r#"{"tree": "nope"}"#,
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    assert!(unknown.json()["error"]
        .as_str()
        .unwrap()
        .contains("no interview tree named `nope`"));
    let doc = app.conversation("15201").await;
    assert_eq!(
        doc["state"]["tree"], "satisfaction",
        "a refused start changes nothing"
    );
    let bad = app
        .admin(
            "POST",
            "/admin/conversations/15201/start",
            r#"{"name": "x"}"#,
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let stranger = app
        .admin(
            "POST",
            "/admin/conversations/404404/start",
            r#"{"tree": "satisfaction"}"#,
        )
        .await;
    assert_eq!(stranger.status, 404, "only a user who has written before");
}

#[actix_web::test]
async fn with_handover_a_pause_passes_the_thread_to_the_inbox_and_a_resume_takes_it_back() {
    let app = spawn_app_with(Options {
        handover_app_id: Some("263902037430900".into()),
        ..Options::default()
    })
    .await;
    talked_to(&app, "15301").await;

    let paused = app
        .admin("POST", "/admin/conversations/15301/pause", "")
        .await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let handovers = |graph: &MockGraph| -> Vec<(String, serde_json::Value)> {
        graph
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("_thread_control"))
            .map(|r| (r.path.clone(), r.body.clone()))
            .collect()
    };
    let passed = wait_until("the pass_thread_control call", || {
        let found = handovers(&app.graph);
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert!(
        passed[0].0.ends_with("/me/pass_thread_control"),
        "{passed:?}"
    );
    assert_eq!(passed[0].1["recipient"]["id"], "15301");
    assert_eq!(passed[0].1["target_app_id"], "263902037430900");
    let doc = app
        .wait_for_conversation("15301", |d| {
            d["transcript"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|e| e["kind"] == "pass_thread_control" && e["status"] == "sent")
            })
        })
        .await;
    assert!(doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "pass_thread_control" && e["by_operator"] == true));

    // Pausing again changes nothing, so nothing is passed again.
    app.admin("POST", "/admin/conversations/15301/pause", "")
        .await;
    let resumed = app
        .admin("POST", "/admin/conversations/15301/resume", "")
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let both = wait_until("the take_thread_control call", || {
        let found = handovers(&app.graph);
        (found.len() >= 2).then_some(found)
    })
    .await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[1].0.ends_with("/me/take_thread_control"), "{both:?}");
    assert_eq!(both[1].1["recipient"]["id"], "15301");
}

#[actix_web::test]
async fn a_long_transcript_pages_back_from_the_newest_entry() {
    let app = spawn_app().await;
    for n in 0..6 {
        app.sends_text(
            "15401",
            &format!("m.15401.{n}"),
            &format!("message {n}"),
            1_000 + n,
        )
        .await;
    }
    // Six messages and six replies: entries 0..12.
    app.wait_for_conversation("15401", |d| {
        d["transcript"].as_array().is_some_and(|t| t.len() == 12)
    })
    .await;
    let seqs = |answer: &Answer| -> Vec<u64> {
        answer.json()["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let newest = app
        .admin("GET", "/admin/conversations/15401?last=4", "")
        .await;
    assert_eq!(seqs(&newest), [8, 9, 10, 11]);
    let before = app
        .admin("GET", "/admin/conversations/15401?last=4&before=8", "")
        .await;
    assert_eq!(seqs(&before), [4, 5, 6, 7]);
    let first = app
        .admin("GET", "/admin/conversations/15401?last=4&before=2", "")
        .await;
    assert_eq!(seqs(&first), [0, 1]);
    let bad = app
        .admin("GET", "/admin/conversations/15401?last=0&before=2", "")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[actix_web::test]
async fn a_conversation_shows_the_replies_its_outbox_still_owes() {
    let app = spawn_app().await;
    // The first send hangs, then fails with a 500: the reply stays owed and is retried.
    app.graph.stall(1, std::time::Duration::from_millis(1500));
    app.sends_text("15501", "m.15501.0", "hello", 1_000).await;
    let owing = app
        .wait_for_conversation("15501", |d| {
            d["owed"].as_array().is_some_and(|o| !o.is_empty())
        })
        .await;
    assert_eq!(owing["owed"][0]["entry"], 1, "{owing}");
    let sent = app
        .wait_for_conversation("15501", |d| {
            outbound(d).first().is_some_and(|e| e["status"] == "sent")
                && d["owed"].as_array().is_some_and(|o| o.is_empty())
        })
        .await;
    assert_eq!(sent["owed"], json!([]));
}

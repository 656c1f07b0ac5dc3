//! The admin list through real HTTP: pages newest activity first with an opaque cursor,
//! filters, and clear errors for a bad query.

use colloquy::test_support::{ConversationKey, ConversationRecord, Store, TurnCommit};
use serde_json::Value;

use crate::helpers::*;

/// Writes `count` conversations straight into a store, as turns do (with their index
/// entries), the i-th last active at second i + 1; every hundredth is paused.
fn stored_conversations(data_dir: &std::path::Path, count: usize) {
    let data_dir = data_dir.to_path_buf();
    actix_rt::System::new().block_on(async move {
        let store = Store::open(&data_dir).unwrap();
        let commits: Vec<_> = (0..count)
            .map(|i| {
                let key = ConversationKey::new(PAGE_ID, format!("u{i:05}"));
                let mut record = ConversationRecord::new(&key);
                record.last_activity = 1_000 * (i as i64 + 1);
                record.paused = i % 100 == 0;
                let commit = TurnCommit {
                    conversation: Some(record),
                    ..TurnCommit::default()
                };
                store.commit_turn(commit, false)
            })
            .collect();
        for written in futures_util::future::join_all(commits).await {
            written.unwrap();
        }
        store.flush().await.unwrap();
    });
}

async fn list(app: &TestApp, query: &str) -> Answer {
    app.admin("GET", &format!("/admin/conversations?{query}"), "")
        .await
}

#[test]
fn ten_thousand_conversations_page_through_newest_first_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    stored_conversations(&data_dir, 10_000);
    one_life(
        &MockGraph::start(),
        &data_dir,
        Options::default(),
        async |app| {
            let mut seen: Vec<String> = Vec::new();
            let mut query = "limit=700".to_string();
            loop {
                let answer = list(app, &query).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
                let page = answer.json();
                let rows = page["conversations"].as_array().unwrap();
                assert!(rows.len() <= 700);
                seen.extend(rows.iter().map(|r| r["psid"].as_str().unwrap().to_string()));
                match &page["next_cursor"] {
                    Value::String(cursor) => query = format!("limit=700&cursor={cursor}"),
                    _ => break,
                }
            }
            let expected: Vec<String> = (0..10_000).rev().map(|i| format!("u{i:05}")).collect();
            assert_eq!(seen.len(), expected.len());
            assert!(seen == expected, "not newest first, each once");

            let paused = list(app, "paused=true&limit=1000").await.json();
            assert_eq!(paused["conversations"].as_array().unwrap().len(), 100);
            let prefix = list(app, "psid_prefix=u0001&limit=1000").await.json();
            assert_eq!(prefix["conversations"].as_array().unwrap().len(), 10);
            let window = list(app, "active_since=2000&active_until=4000")
                .await
                .json();
            let psids: Vec<&str> = window["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["psid"].as_str().unwrap())
                .collect();
            assert_eq!(psids, ["u00002", "u00001"]);
        },
    );
}

#[actix_web::test]
async fn a_bad_list_query_is_refused_with_what_is_wrong() {
    let app = spawn_app().await;
    for (query, says) in [
        ("cursor=abcd", "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("paused=maybe", "paused"),
        ("colour=red", "colour"),
    ] {
        let answer = list(&app, query).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{query}: {error}");
    }
}

/// A flow that fails on "boom" and starts an interview-shaped state otherwise.
struct Interviewish;

impl colloquy::flow::Flow for Interviewish {
    type State = Value;

    async fn handle(
        &self,
        event: &colloquy::event::InboundEvent,
        turn: &mut colloquy::flow::Turn<Value>,
    ) -> Result<(), colloquy::flow::FlowError> {
        match event.text() {
            Some("boom") => Err(colloquy::flow::FlowError::failed("broken")),
            Some(text) => {
                let status = if text == "done" {
                    "completed"
                } else {
                    "asking"
                };
                *turn.state_mut() = serde_json::json!({
                    "tree": "intake", "stage": {"status": status, "question": "q"}
                });
                turn.say("ok")?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[actix_web::test]
async fn the_list_filters_failed_replies_stuck_events_and_interview_tree_and_status() {
    let app = spawn_app_with(Options {
        flow: colloquy::flow::FlowHandle::new(Interviewish),
        ..Options::default()
    })
    .await;
    app.sends_text("18001", "m.18001", "hello", 1_000).await;
    app.wait_for_first_reply("18001", "sent").await;
    app.sends_text("18002", "m.18002", "done", 1_000).await;
    app.wait_for_first_reply("18002", "sent").await;
    app.sends_text("18003", "m.18003", "boom", 1_000).await;
    app.wait_for_conversation("18003", |d| d["failed_events"] == serde_json::json!([0]))
        .await;
    app.graph
        .script([graph_error(400, 551, None, "(#551) unavailable")]);
    app.sends_text("18004", "m.18004", "hello", 1_000).await;
    app.wait_for_first_reply("18004", "failed").await;

    assert_eq!(psids(&list(&app, "failed=true").await), ["18004"]);
    assert_eq!(psids(&list(&app, "stuck=true").await), ["18003"]);
    assert_eq!(
        psids(&list(&app, "tree=intake").await),
        ["18001", "18002", "18004"]
    );
    assert_eq!(
        psids(&list(&app, "tree=intake&tree_status=in_progress").await),
        ["18001", "18004"]
    );
    assert_eq!(psids(&list(&app, "tree_status=completed").await), ["18002"]);
    assert_eq!(
        psids(&list(&app, "failed=false&stuck=false&tree=intake").await),
        ["18001", "18002"]
    );

    // Retried and sent: no longer listed as failed. Skipped: no longer stuck.
    let seq = outbound(&app.conversation("18004").await)[0]["seq"]
        .as_u64()
        .unwrap();
    let retried = app
        .admin(
            "POST",
            "/admin/conversations/18004/retry",
            &format!(r#"{{"seq": {seq}}}"#),
        )
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    app.wait_for_first_reply("18004", "sent").await;
    assert!(psids(&list(&app, "failed=true").await).is_empty());
    let skipped = app
        .admin("POST", "/admin/conversations/18003/skip", r#"{"seq": 0}"#)
        .await;
    assert_eq!(skipped.status, 200, "{}", skipped.body);
    assert!(psids(&list(&app, "stuck=true").await).is_empty());

    let bad = list(&app, "tree_status=stuck").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("tree_status"), "{}", bad.body);
}

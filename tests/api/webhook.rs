//! The webhook's contract: handshake, signatures, body validation, what gets stored.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn the_handshake_echoes_the_challenge_when_the_token_matches() {
    let app = spawn_app().await;
    let answer = app
        .get(&format!(
            "/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "1158201444");
    assert!(
        answer.content_type.starts_with("text/plain"),
        "{}",
        answer.content_type
    );
}

#[actix_web::test]
async fn the_handshake_echoes_an_odd_challenge_verbatim() {
    let app = spawn_app().await;
    let answer = app
        .get(&format!(
            "/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=a%20b%26c%3D%C3%A9"
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "a b&c=é");
}

#[actix_web::test]
async fn the_handshake_is_refused_with_a_wrong_token_or_mode() {
    let app = spawn_app().await;
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        &format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        &format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        &format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"),
        "",
    ] {
        let answer = app.get(&format!("/webhook?{query}")).await;
        assert_eq!(
            answer.status, 403,
            "query {query:?} answered {}",
            answer.body
        );
        assert_ne!(answer.body, "1", "the challenge must not be echoed");
    }
}

#[actix_web::test]
async fn a_wrong_or_missing_signature_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = text_message("1001", "m.sig", "hello", 1_700_000_000_000);
    let forged = colloquy::test_support::sign_sha256(b"not-the-secret", body.as_bytes());
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("X-Hub-Signature-256", forged)],
        vec![("X-Hub-Signature-256", "sha256=zz".to_string())],
        vec![("X-Hub-Signature-256", "garbage".to_string())],
    ];
    for headers in cases {
        let answer = app.post_webhook(body.clone().into_bytes(), &headers).await;
        assert_eq!(answer.status, 403, "{headers:?}");
        assert!(answer.json()["error"].is_string(), "{}", answer.body);
    }
    // A properly signed barrier message proves the engine was running meanwhile.
    let barrier = text_message("1002", "m.barrier", "hi", 1_700_000_000_001);
    assert_eq!(app.post_signed(&barrier).await.status, 200);
    app.graph.wait_for_sends(1).await;
    assert_eq!(app.conversation("1001").await, serde_json::Value::Null);
    assert_eq!(app.conversations().await.as_array().unwrap().len(), 1);
    assert_eq!(app.graph.sends().len(), 1);
}

#[actix_web::test]
async fn the_legacy_sha1_signature_is_accepted_without_the_sha256_header() {
    let app = spawn_app().await;
    let body = text_message("1003", "m.sha1", "hello", 1_700_000_000_000);
    let sha1 = colloquy::test_support::sign_sha1(APP_SECRET.as_bytes(), body.as_bytes());
    let answer = app
        .post_webhook(body.into_bytes(), &[("X-Hub-Signature", sha1)])
        .await;
    assert_eq!(answer.status, 200);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["recipient"]["id"], "1003");
}

#[actix_web::test]
async fn malformed_bodies_get_a_400_that_names_the_problem() {
    let app = spawn_app().await;
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (br#"{"object":"user","entry":[]}"#, "object"),
        (br#"{"object":"page"}"#, "entry"),
        (br#"{"object":"page","entry":{}}"#, "entry"),
        (
            br#"{"object":"page","entry":[{"id":"1","messaging":{}}]}"#,
            "messaging",
        ),
        (b"\xff\xfe\x00", "not valid JSON"),
    ];
    for (body, expected) in cases {
        let signature = colloquy::test_support::sign_sha256(APP_SECRET.as_bytes(), body);
        let answer = app
            .post_webhook(body.to_vec(), &[("X-Hub-Signature-256", signature)])
            .await;
        assert_eq!(answer.status, 400, "{:?}", String::from_utf8_lossy(body));
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains(expected),
            "error {error:?} should mention {expected:?}"
        );
    }
    assert_eq!(app.conversations().await, json!([]));
}

#[actix_web::test]
async fn a_body_over_the_limit_gets_413() {
    let app = spawn_app_with(Options {
        max_body_bytes: Some(1024),
        ..Options::default()
    })
    .await;
    let body = text_message("1004", "m.big", &"x".repeat(2000), 1_700_000_000_000);
    let answer = app.post_signed(&body).await;
    assert_eq!(answer.status, 413);
    assert!(answer.json()["error"].as_str().unwrap().contains("1024"));
    assert_eq!(app.conversations().await, json!([]));
}

#[actix_web::test]
async fn an_unknown_event_kind_is_acknowledged_and_recorded() {
    let app = spawn_app().await;
    let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        {"sender": {"id": "1005"}, "recipient": {"id": PAGE_ID}, "timestamp": 5,
         "brand_new_kind": {"x": 1}}
    ]})]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let doc = app
        .wait_for_conversation("1005", |d| {
            d["transcript"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(doc["transcript"][0]["kind"], "unknown");
    assert_eq!(doc["transcript"][0]["payload"]["brand_new_kind"]["x"], 1);
    assert!(app.graph.sends().is_empty());
}

#[actix_web::test]
async fn the_seed_callback_path_works_when_configured() {
    let app = spawn_app_with(Options {
        webhook_path: Some("/chat/webhook/".into()),
        ..Options::default()
    })
    .await;
    let handshake = app
        .get(&format!(
            "/chat/webhook/?hub.mode=subscribe&hub.challenge=762832905&hub.verify_token={VERIFY_TOKEN}"
        ))
        .await;
    assert_eq!(
        (handshake.status, handshake.body.as_str()),
        (200, "762832905")
    );
    assert_eq!(app.post_signed(&sample("message.json")).await.status, 200);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["message"]["text"], THANKS);
    assert_eq!(app.get("/webhook?hub.mode=subscribe").await.status, 404);
}

#[actix_web::test]
async fn the_admin_endpoint_requires_its_token() {
    let app = spawn_app().await;
    let unauthenticated = awc::Client::new()
        .get(format!("{}/admin/conversations", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    // The public listener does not serve the admin endpoints at all.
    assert_eq!(app.get("/admin/conversations").await.status, 404);
    let wrong = awc::Client::new()
        .get(format!("{}/admin/conversations", app.admin_url))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(app.conversations().await, json!([]));
}

/// A flow that holds every event until the test opens the gate.
pub struct Gate(pub std::sync::Arc<tokio::sync::Semaphore>);

impl colloquy::Flow for Gate {
    type State = ();

    async fn handle(
        &self,
        _: &colloquy::event::InboundEvent,
        turn: &mut colloquy::Turn<()>,
    ) -> Result<(), colloquy::FlowError> {
        let _permit = self
            .0
            .acquire()
            .await
            .map_err(|e| colloquy::FlowError::failed(e.to_string()))?;
        turn.say("through")?;
        Ok(())
    }
}

#[actix_web::test]
async fn an_overloaded_engine_answers_503_and_recovers_once_the_backlog_drains() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let app = spawn_app_with(Options {
        flow: colloquy::FlowHandle::new(Gate(gate.clone())),
        max_pending_events: Some(2),
        // Journalled first, so the held turns do not hold the answers either.
        ack_deadline: Some(std::time::Duration::ZERO),
        ..Options::default()
    })
    .await;
    for (psid, mid) in [("1101", "m.g1"), ("1102", "m.g2")] {
        let answer = app
            .post_signed(&text_message(psid, mid, "wait", 1_000))
            .await;
        assert_eq!(answer.status, 200);
    }
    let refused = app
        .post_signed(&text_message("1103", "m.g3", "wait", 1_000))
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("overloaded"));

    gate.add_permits(10);
    app.graph.wait_for_sends(2).await;
    // The backlog drained: the refused event, redelivered, is taken.
    let accepted = wait_until_accepted(&app, &text_message("1103", "m.g3", "wait", 1_000)).await;
    assert_eq!(accepted, 200);
    let sends = app.graph.wait_for_sends(3).await;
    assert_eq!(
        sends
            .iter()
            .filter(|s| s.body["recipient"]["id"] == "1103")
            .count(),
        1
    );
}

async fn wait_until_accepted(app: &TestApp, body: &str) -> u16 {
    for _ in 0..500 {
        let answer = app.post_signed(body).await;
        if answer.status != 503 {
            return answer.status;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the engine never recovered from overload");
}

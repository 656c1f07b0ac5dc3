//! The outbound sender against Graph API faults.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn a_graph_500_is_retried_until_the_reply_is_sent() {
    let app = spawn_app().await;
    app.graph.script([
        graph_error(
            500,
            2,
            None,
            "An unexpected error has occurred. Please retry your request later.",
        ),
        Scripted {
            status: 503,
            body: serde_json::json!("unavailable"),
        },
    ]);
    let body = text_message("10001", "m.retry", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let calls = app.graph.wait_for_message_calls(3).await;
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![500, 503, 200]
    );
    assert!(
        calls.iter().all(|c| c.body == calls[0].body),
        "every attempt sends the same reply"
    );
    let doc = app.wait_for_first_reply("10001", "sent").await;
    assert_eq!(outbound(&doc)[0]["mid"], "m_mock_1");
}

#[actix_web::test]
async fn a_rate_limited_reply_is_retried() {
    let app = spawn_app().await;
    app.graph.script([rate_limited()]);
    let body = text_message("10002", "m.613", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let calls = app.graph.wait_for_message_calls(2).await;
    assert_eq!(calls[1].status, 200);
}

#[actix_web::test]
async fn a_permanent_graph_error_ends_failed_with_its_code_and_is_not_retried() {
    let app = spawn_app().await;
    app.graph.script([graph_error(
        400,
        551,
        Some(1545041),
        "(#551) This person isn't available right now.",
    )]);
    let body = text_message("10003", "m.551", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let doc = app.wait_for_first_reply("10003", "failed").await;
    let error = &outbound(&doc)[0]["error"];
    assert_eq!(error["code"], 551);
    assert_eq!(error["subcode"], 1545041);
    assert_eq!(
        error["message"],
        "(#551) This person isn't available right now."
    );
    assert_eq!(error["fbtrace_id"], "Ab1", "Meta's trace id is kept");
    // A later message from another user goes through: the sender was not stuck.
    let other = text_message("10004", "m.next", "hi", 2_000);
    assert_eq!(app.post_signed(&other).await.status, 200);
    app.graph.wait_for_sends(1).await;
    let to_failed_user = app
        .graph
        .message_calls()
        .iter()
        .filter(|c| c.body["recipient"]["id"] == "10003")
        .count();
    assert_eq!(to_failed_user, 1, "a permanent error is not retried");
}

#[actix_web::test]
async fn a_reply_that_keeps_failing_is_recorded_failed_after_its_attempts() {
    let app = spawn_app().await;
    // The test config allows 4 attempts.
    app.graph
        .script((0..4).map(|_| graph_error(500, 1, None, "An unknown error occurred")));
    let body = text_message("10005", "m.exhaust", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let doc = app.wait_for_first_reply("10005", "failed").await;
    let message = outbound(&doc)[0]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("gave up after 4 attempts"), "{message}");
    assert_eq!(
        outbound(&doc)[0]["error"]["fbtrace_id"],
        "Ab1",
        "the last Graph error's trace id is kept"
    );
    assert_eq!(app.graph.message_calls().len(), 4);
}

#[actix_web::test]
async fn a_throttled_page_pauses_every_conversation_of_that_page() {
    let app = spawn_app().await;
    app.graph.script([rate_limited()]);
    let first = text_message("10101", "m.t1", "hello", 1_000);
    assert_eq!(app.post_signed(&first).await.status, 200);
    app.graph.wait_for_message_calls(1).await;
    let second = text_message("10102", "m.t2", "hello", 1_001);
    assert_eq!(app.post_signed(&second).await.status, 200);
    let calls = app.graph.wait_for_message_calls(3).await;
    assert_eq!(calls[0].status, 400);
    // The test config caps backoff at 200 ms with 50-100% jitter: no call for at least 100 ms.
    let quiet = calls[1].at.duration_since(calls[0].at);
    assert!(
        quiet >= std::time::Duration::from_millis(95),
        "called again after {quiet:?}"
    );
    let recipients: Vec<&str> = calls[1..]
        .iter()
        .map(|c| c.body["recipient"]["id"].as_str().unwrap())
        .collect();
    assert!(
        recipients.contains(&"10101") && recipients.contains(&"10102"),
        "{recipients:?}"
    );
}

#[actix_web::test]
async fn a_rejected_token_fails_the_reply_and_stops_sending_for_that_page_only() {
    let app = spawn_app().await;
    app.graph.script([graph_error(
        400,
        190,
        Some(460),
        "Error validating access token",
    )]);
    let first = text_message("10201", "m.tok1", "hello", 1_000);
    assert_eq!(app.post_signed(&first).await.status, 200);
    let doc = app.wait_for_first_reply("10201", "failed").await;
    assert_eq!(outbound(&doc)[0]["error"]["code"], 190);

    let same_page = text_message("10202", "m.tok2", "hello", 1_001);
    assert_eq!(app.post_signed(&same_page).await.status, 200);
    app.wait_for_first_reply("10202", "queued").await;
    // A message to another page, decided after the one above, is still sent.
    let other_page = envelope(vec![json!({"id": "555", "time": 1, "messaging": [
        {"sender": {"id": "10203"}, "recipient": {"id": "555"}, "timestamp": 1_002,
         "message": {"mid": "m.tok3", "text": "hi"}}
    ]})]);
    assert_eq!(app.post_signed(&other_page).await.status, 200);
    app.graph.wait_for_sends(1).await;
    let to_blocked = app
        .graph
        .message_calls()
        .iter()
        .filter(|c| c.body["recipient"]["id"] == "10202")
        .count();
    assert_eq!(
        to_blocked, 0,
        "nothing is sent for a page whose token was rejected"
    );
    let doc = app.conversation("10202").await;
    assert_eq!(
        outbound(&doc)[0]["status"],
        "queued",
        "the reply waits in the outbox"
    );
}

#[actix_web::test]
async fn one_page_is_held_to_its_send_rate() {
    let app = spawn_app_with(Options {
        page_send_rate: Some(10),
        ..Options::default()
    })
    .await;
    let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging":
        (0..16).map(|i| message_event(&format!("{}", 10300 + i), &format!("m.rate{i}"), "hi", 1_000 + i))
            .collect::<Vec<_>>()
    })]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sends = app.graph.wait_for_sends(16).await;
    // A full bucket lets 10 go at once; the other 6 need 6 refills at 10/s.
    let spread = sends[15].at.duration_since(sends[0].at);
    assert!(
        spread >= std::time::Duration::from_millis(500),
        "16 sends within {spread:?}"
    );
}

/// Posts the user's text to a callback URL instead of answering.
struct Notifier(String);

impl colloquy::Flow for Notifier {
    type State = ();

    async fn handle(
        &self,
        event: &colloquy::event::InboundEvent,
        turn: &mut colloquy::Turn<()>,
    ) -> Result<(), colloquy::FlowError> {
        let payload = json!({"psid": turn.psid(), "text": event.text()});
        turn.reply(colloquy::Reply::callback(self.0.clone(), payload)?);
        Ok(())
    }
}

#[actix_web::test]
async fn a_callback_is_posted_durably_with_retries_and_recorded() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("{}/hook", graph.url);
    let app = spawn_app_on(
        graph,
        &dir.path().join("db"),
        Options {
            flow: colloquy::FlowHandle::new(Notifier(hook)),
            ..Options::default()
        },
    )
    .await;
    app.graph.script([Scripted {
        status: 502,
        body: json!("bad gateway"),
    }]);
    let body = text_message("10401", "m.cb", "results please", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let doc = app.wait_for_first_reply("10401", "sent").await;
    assert_eq!(outbound(&doc)[0]["kind"], "callback");
    let posts: Vec<Recorded> = app
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/hook"))
        .collect();
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        vec![502, 200]
    );
    assert_eq!(
        posts[1].body,
        json!({"psid": "10401", "text": "results please"})
    );
    assert_eq!(
        (
            posts[1].query_value("access_token"),
            posts[1].authorization.as_deref()
        ),
        (None, None),
        "the page token never goes to a callback"
    );
}

#[actix_web::test]
async fn a_send_that_times_out_is_retried_and_delivered_once() {
    let app = spawn_app_with(Options {
        request_timeout: Some(std::time::Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    app.graph.stall(1, std::time::Duration::from_secs(2));
    let body = text_message("10501", "m.stall", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["recipient"]["id"], "10501");
    let doc = app.wait_for_first_reply("10501", "sent").await;
    assert_eq!(outbound(&doc).len(), 1);
}

#[actix_web::test]
async fn an_unreachable_graph_api_is_retried_then_recorded_failed() {
    // A port nothing listens on: every attempt is a connection error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let graph = MockGraph::start();
    let mut config = test_config(&graph, &dir.path().join("db"), &Options::default());
    config.graph_url = format!("http://127.0.0.1:{port}/v21.0");
    let app = colloquy::start(config, colloquy::flow::builtin::by_name("thanks").unwrap())
        .await
        .unwrap();
    let admin = format!("http://{}", app.admin_addr());
    let body = text_message("10502", "m.down", "hello", 1_000);
    let signature = colloquy::test_support::sign_sha256(APP_SECRET.as_bytes(), body.as_bytes());
    let response = awc::Client::new()
        .post(format!("http://{}/webhook", app.addr()))
        .insert_header(("X-Hub-Signature-256", signature))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let started = std::time::Instant::now();
    loop {
        let mut answer = awc::Client::new()
            .get(format!("{admin}/admin/conversations/10502"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let doc: serde_json::Value = answer.json().await.unwrap_or_default();
        if let Some(entry) = outbound(&doc).first().filter(|e| e["status"] == "failed") {
            let message = entry["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("gave up after 4 attempts: network"),
                "{message}"
            );
            break;
        }
        assert!(started.elapsed().as_secs() < 15, "never failed: {doc}");
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Replies to many users at once each leave once and are recorded sent. Beyond 32 calls
/// and outcome writes under way the sender runs each as a task of its own (actix would
/// otherwise poll every one at each wake-up); this holds 48 calls in flight, so both
/// ways are used, and the retries after the stalls go through them again. One call per
/// reply (`COLLOQUY_SEND_BATCH=1`): batched, the 48 would be one call.
#[actix_web::test]
async fn replies_to_many_users_at_once_are_each_sent_once_and_recorded() {
    const USERS: usize = 48;
    let app = spawn_app_with(Options {
        send_batch: Some(1),
        ..Options::default()
    })
    .await;
    // Every first call hangs a while, then fails: all are in flight together.
    app.graph
        .stall(USERS, std::time::Duration::from_millis(1500));
    let psids: Vec<String> = (0..USERS).map(|i| format!("{}", 20_000 + i)).collect();
    let events: Vec<serde_json::Value> = psids
        .iter()
        .enumerate()
        .map(|(i, psid)| message_event(psid, &format!("m.many.{i}"), "hello", 1_000))
        .collect();
    let body = envelope(vec![
        json!({"id": PAGE_ID, "time": 1_000, "messaging": events}),
    ]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sent = app.graph.wait_for_sends(USERS).await;
    for psid in &psids {
        let doc = app.wait_for_first_reply(psid, "sent").await;
        assert_eq!(outbound(&doc).len(), 1, "{psid}");
    }
    let mut recipients: Vec<String> = sent
        .iter()
        .map(|call| call.body["recipient"]["id"].as_str().unwrap().to_string())
        .collect();
    recipients.sort();
    let mut expected = psids.clone();
    expected.sort();
    assert_eq!(recipients, expected, "one successful send per user");
    let stalled = app
        .graph
        .requests()
        .iter()
        .filter(|r| r.status == STALLED)
        .count();
    assert_eq!(stalled, USERS, "every first call was in flight and failed");
}

/// Replies owed at a start (here: held back by a rejected token in the life before)
/// become ready together, and go out as one Graph batch call: each request authorized
/// like a single call (bearer token, `appsecret_proof`, no token in the URL), each with
/// its own outcome. A request the batch answers with a permanent error fails alone; one
/// answered with a transient error is retried alone; the others are sent, each with its
/// own message id. In the life before, the rejected token failed one reply only: the
/// replies answered 190 alongside it, or after it, wait in the outbox for a new token.
#[test]
fn replies_ready_together_go_out_as_one_batch_call_with_an_outcome_each() {
    let calls = owed_replies_sent_after_a_restart(None);
    let batch = calls[0]
        .batch
        .expect("the owed replies went out in a batch call");
    let in_batch: Vec<_> = calls.iter().filter(|c| c.batch == Some(batch)).collect();
    assert_eq!(
        in_batch.len(),
        5,
        "every owed reply in one batch call: {calls:#?}"
    );
    for call in &in_batch {
        assert!(call.is_message_send(), "{call:?}");
        assert!(call.is_authorized_by(ACCESS_TOKEN, APP_SECRET), "{call:?}");
        assert_eq!(call.body["message"]["text"], "Thank you for your time..!!");
        assert_eq!(call.body["messaging_type"], "RESPONSE");
    }
    let statuses: Vec<u16> = in_batch.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![400, 500, 200, 200, 200]);
    // The retry of the transient failure is a call of its own.
    let retried = &in_batch[1].body["recipient"]["id"];
    let after: Vec<_> = calls.iter().filter(|c| c.batch != Some(batch)).collect();
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(&after[0].body["recipient"]["id"], retried);
    assert_eq!(after[0].status, 200);
}

/// The same, with `COLLOQUY_SEND_BATCH=1`: every owed reply is a call of its own.
#[test]
fn with_batches_of_one_every_reply_is_a_call_of_its_own() {
    let calls = owed_replies_sent_after_a_restart(Some(1));
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert!(calls.iter().all(|c| c.batch.is_none()), "{calls:#?}");
}

/// Six users write in one request while the page's token is rejected: one reply fails
/// (190), five wait in the outbox. The next life has the token accepted again and
/// answers the first two requests it gets with a permanent and a transient error; it
/// checks every reply's outcome and hands back the Send API requests of that life.
fn owed_replies_sent_after_a_restart(send_batch: Option<usize>) -> Vec<Recorded> {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let options = || Options {
        send_batch,
        ..Options::default()
    };
    let psids: Vec<String> = (0..6).map(|i| format!("{}", 30_000 + i)).collect();
    graph.revoke(ACCESS_TOKEN);
    let rejected = one_life(&graph, &data_dir, options(), async |app| {
        let events: Vec<serde_json::Value> = psids
            .iter()
            .enumerate()
            .map(|(i, psid)| message_event(psid, &format!("m.owed.{i}"), "hello", 1_000))
            .collect();
        let body = envelope(vec![
            json!({"id": PAGE_ID, "time": 1_000, "messaging": events}),
        ]);
        assert_eq!(app.post_signed(&body).await.status, 200);
        let docs = docs_when(app, &psids, |statuses| {
            let count = |wanted: &str| statuses.iter().filter(|s| *s == wanted).count();
            count("failed") == 1 && count("queued") == 5
        })
        .await;
        let failed = docs
            .iter()
            .find(|d| outbound(d)[0]["status"] == "failed")
            .unwrap();
        assert_eq!(outbound(failed)[0]["error"]["code"], 190);
        failed["psid"].as_str().unwrap().to_string()
    });
    let calls_before = graph.requests().len();
    graph.restore(ACCESS_TOKEN);
    graph.script([
        graph_error(400, 100, None, "(#100) The parameter recipient is invalid"),
        graph_error(500, 2, None, "An unexpected error has occurred."),
    ]);
    let owed: Vec<String> = psids.into_iter().filter(|psid| *psid != rejected).collect();
    let (docs, metrics) = one_life(&graph, &data_dir, options(), async |app| {
        let docs = docs_when(app, &owed, |statuses| {
            statuses.iter().all(|s| s == "sent" || s == "failed")
        })
        .await;
        (docs, metrics_text(app).await)
    });
    let calls: Vec<Recorded> = graph.requests().split_off(calls_before);
    let failed: Vec<_> = docs
        .iter()
        .filter(|d| outbound(d)[0]["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{docs:#?}");
    assert_eq!(outbound(failed[0])[0]["error"]["code"], 100);
    assert_eq!(failed[0]["psid"], calls[0].body["recipient"]["id"]);
    let mut mids: Vec<String> = docs
        .iter()
        .filter(|d| outbound(d)[0]["status"] == "sent")
        .map(|d| {
            outbound(d)[0]["mid"]
                .as_str()
                .expect("a sent reply has its mid")
                .to_string()
        })
        .collect();
    mids.sort_unstable();
    mids.dedup();
    assert_eq!(
        mids.len(),
        4,
        "each sent reply has a message id of its own: {docs:#?}"
    );
    let batches = if send_batch == Some(1) { 0.0 } else { 1.0 };
    assert_eq!(
        metric_value(&metrics, "colloquy_graph_batch_calls_total"),
        batches
    );
    calls
}

/// The conversations of `psids`, once the statuses of their first page messages satisfy
/// `done`.
async fn docs_when(
    app: &TestApp,
    psids: &[String],
    done: impl Fn(&[String]) -> bool,
) -> Vec<serde_json::Value> {
    let started = std::time::Instant::now();
    loop {
        let mut docs = Vec::new();
        for psid in psids {
            docs.push(app.conversation(psid).await);
        }
        let statuses: Vec<String> = docs
            .iter()
            .map(|d| {
                outbound(d)
                    .first()
                    .map_or("none", |e| e["status"].as_str().unwrap_or("?"))
                    .to_string()
            })
            .collect();
        if done(&statuses) {
            return docs;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "timed out; statuses {statuses:?}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

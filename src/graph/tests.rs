//! The client against a real local HTTP server standing in for the Graph API: what goes
//! on the wire, and how each kind of answer (or its absence) comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use super::*;
use crate::messenger::outbound::{MessagingType, OutMessage, Recipient};

const TOKEN: &str = "page-token-s3cret";

/// What the stand-in answers, and how long it waits first.
#[derive(Clone)]
struct Script {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Script {
    /// A throttling answer (`code`) whose usage header says to wait `minutes`.
    fn throttled(code: i64, minutes: u64) -> Script {
        let mut script = Script::json(
            400,
            json!({"error": {"message": format!("(#{code}) limit"), "code": code, "fbtrace_id": "T1"}}),
        );
        let usage = json!({"128": [{"type": "messenger", "call_count": 100,
                                    "estimated_time_to_regain_access": minutes}]});
        script
            .headers
            .push(("x-business-use-case-usage", usage.to_string()));
        script
    }

    fn json(status: u16, body: Value) -> Script {
        Script {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct StandIn {
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn answer(req: HttpRequest, body: web::Bytes, stand_in: web::Data<StandIn>) -> HttpResponse {
    let script = stand_in.script.lock().unwrap().clone();
    stand_in.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: serde_urlencoded::from_str(req.query_string()).unwrap_or_default(),
        content_type: req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    });
    actix_rt::time::sleep(script.delay).await;
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(script.status).unwrap());
    for header in script.headers {
        response.insert_header(header);
    }
    response.body(script.body)
}

/// Starts the stand-in on `127.0.0.1:0` answering `script`; returns it and its base URL
/// (with a version, like the real one).
fn stand_in(script: Script) -> (StandIn, String) {
    let stand_in = StandIn {
        script: Arc::new(Mutex::new(script)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let data = web::Data::new(stand_in.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(answer))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    (stand_in, format!("http://{addr}/v21.0"))
}

fn auth() -> PageAuth {
    PageAuth::me(Secret::new(TOKEN), None)
}

fn hello(psid: &str) -> SendRequest {
    SendRequest {
        recipient: Recipient { id: psid.into() },
        messaging_type: MessagingType::Response,
        tag: None,
        message: Some(OutMessage {
            text: Some("hello".into()),
            ..OutMessage::default()
        }),
        sender_action: None,
    }
}

#[actix_web::test]
async fn a_message_is_posted_as_json_with_the_token_in_a_header_and_its_id_returned() {
    let (stand_in, url) = stand_in(Script::json(
        200,
        json!({"recipient_id": "42", "message_id": "m_1"}),
    ));
    let client = GraphClient::new(&format!("{url}/"), Duration::from_secs(5));

    let answer = client.send_message(&auth(), &hello("42")).await.unwrap();

    assert_eq!(answer.message_id.as_deref(), Some("m_1"));
    let seen = stand_in.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v21.0/me/messages")
    );
    assert!(
        seen.query.is_empty(),
        "no token in the URL: {:?}",
        seen.query
    );
    assert_eq!(seen.authorization, Some(format!("Bearer {TOKEN}")));
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    let body: SendRequest = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body, hello("42"));
}

#[actix_web::test]
async fn subscribing_sends_the_fields_before_the_token_and_status_is_a_get() {
    let (stand_in, url) = stand_in(Script::json(200, json!({"success": true})));
    let client = GraphClient::new(&url, Duration::from_secs(5));

    let subscribed = client
        .subscribe_app(&auth(), "messages,message_reads")
        .await;
    let status = client.subscribed_apps(&auth()).await;

    assert_eq!(subscribed, Ok(json!({"success": true})));
    assert!(status.is_ok());
    let seen = stand_in.seen.lock().unwrap().clone();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v21.0/me/subscribed_apps")
    );
    assert_eq!(
        seen[0].query,
        vec![(
            "subscribed_fields".to_string(),
            "messages,message_reads".to_string()
        )]
    );
    assert_eq!(seen[0].authorization, Some(format!("Bearer {TOKEN}")));
    assert_eq!((seen[1].method.as_str(), seen[1].query.len()), ("GET", 0));
}

#[actix_web::test]
async fn with_the_app_secret_every_call_carries_its_appsecret_proof() {
    let (stand_in, url) = stand_in(Script::json(200, json!({"success": true})));
    let client = GraphClient::new(&url, Duration::from_secs(5));
    let auth = PageAuth::of("1234", Secret::new(TOKEN), Some(Secret::new("app-secret")));

    client.subscribed_apps(&auth).await.unwrap();

    let seen = stand_in.seen.lock().unwrap()[0].clone();
    assert!(
        seen.path.ends_with("/1234/subscribed_apps"),
        "{}",
        seen.path
    );
    // HMAC-SHA256("app-secret", TOKEN), computed independently of `appsecret_proof`.
    let expected = crate::webhook::signature::sign_sha256(b"app-secret", TOKEN.as_bytes());
    assert_eq!(
        seen.query,
        vec![(
            "appsecret_proof".to_string(),
            expected.trim_start_matches("sha256=").to_string()
        )]
    );
}

#[actix_web::test]
async fn each_call_carries_the_proof_of_the_token_it_is_made_with_after_a_rotation_too() {
    let (stand_in, url) = stand_in(Script::json(200, json!({"success": true})));
    let client = GraphClient::new(&url, Duration::from_secs(5));
    let calls = [
        ("1234", TOKEN, "app-secret"),
        ("1234", TOKEN, "app-secret"),
        ("1234", "rotated-token", "app-secret"),
        ("1234", "rotated-token", "new-app-secret"),
        ("5678", TOKEN, "app-secret"),
        ("1234", TOKEN, "app-secret"),
    ];
    for (node, token, secret) in calls {
        let auth = PageAuth::of(node, Secret::new(token), Some(Secret::new(secret)));
        client.subscribed_apps(&auth).await.unwrap();
    }

    let seen = stand_in.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), calls.len());
    for ((node, token, secret), seen) in calls.iter().zip(&seen) {
        let expected = crate::webhook::signature::sign_sha256(secret.as_bytes(), token.as_bytes());
        let proof = expected.trim_start_matches("sha256=").to_string();
        assert_eq!(
            seen.query,
            vec![("appsecret_proof".to_string(), proof)],
            "{node} {token} {secret}"
        );
        assert_eq!(seen.authorization, Some(format!("Bearer {token}")));
    }
}

#[actix_web::test]
async fn a_throttled_answer_carries_the_wait_from_the_business_use_case_header() {
    let (_stand_in, url) = stand_in(Script::throttled(80006, 4));
    let client = GraphClient::new(&url, Duration::from_secs(5));

    let error = client
        .send_message(&auth(), &hello("42"))
        .await
        .unwrap_err();

    assert!(
        matches!(
            &error,
            CallError::Throttled { error: Some(ApiError { code: 80006, .. }), retry_after: Some(wait) }
                if *wait == Duration::from_secs(240)
        ),
        "{error:?}"
    );
}

#[actix_web::test]
async fn a_graph_error_comes_back_typed_with_its_trace_id() {
    let (_stand_in, url) = stand_in(Script::json(
        400,
        json!({"error": {"message": "Invalid OAuth access token.", "code": 190,
                         "error_subcode": 460, "fbtrace_id": "AbC"}}),
    ));
    let client = GraphClient::new(&url, Duration::from_secs(5));

    let error = client.subscribed_apps(&auth()).await.unwrap_err();

    assert!(matches!(&error, CallError::TokenRevoked(_)), "{error:?}");
    assert_eq!(
        error.api_error().and_then(|e| e.fbtrace_id.as_deref()),
        Some("AbC")
    );
}

#[actix_web::test]
async fn a_slow_answer_is_a_timeout() {
    let mut script = Script::json(200, json!({"message_id": "m_late"}));
    script.delay = Duration::from_secs(3);
    let (_stand_in, url) = stand_in(script);
    let client = GraphClient::new(&url, Duration::from_millis(200));

    let error = client
        .send_message(&auth(), &hello("42"))
        .await
        .unwrap_err();

    assert_eq!(error, CallError::Timeout(Duration::from_millis(200)));
    assert!(error.is_retryable());
}

#[actix_web::test]
async fn an_oversized_answer_is_unreadable_and_retried() {
    let mut script = Script::json(200, json!({}));
    script.body = vec![b' '; MAX_ANSWER_BYTES + 1];
    let (_stand_in, url) = stand_in(script);
    let client = GraphClient::new(&url, Duration::from_secs(5));

    let error = client
        .send_message(&auth(), &hello("42"))
        .await
        .unwrap_err();

    assert!(matches!(error, CallError::Unreadable(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[actix_web::test]
async fn an_unreachable_graph_api_is_a_network_error_that_never_shows_the_token() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = GraphClient::new(
        &format!("http://127.0.0.1:{port}/v21.0"),
        Duration::from_secs(5),
    );

    let error = client
        .send_message(&auth(), &hello("42"))
        .await
        .unwrap_err();

    assert!(matches!(error, CallError::Network(_)), "{error:?}");
    assert!(error.is_retryable());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
}

#[test]
fn the_token_is_masked_in_any_text_that_carries_it() {
    let text = format!("cannot reach http://x/me/messages?access_token={TOKEN}");
    assert_eq!(
        redacted(text, &Secret::new(TOKEN)),
        "cannot reach http://x/me/messages?access_token=***"
    );
    assert_eq!(
        redacted("no token here".into(), &Secret::new("")),
        "no token here"
    );
}

#[actix_web::test]
async fn a_batch_is_one_post_to_the_root_with_the_token_in_a_header_and_an_answer_per_request() {
    let answers = json!([
        {"code": 200, "body": "{\"recipient_id\":\"41\",\"message_id\":\"m_41\"}"},
        {"code": 400, "body": "{\"error\":{\"message\":\"No matching user found\",\"code\":100,\"error_subcode\":2018001}}"},
        null,
    ]);
    let (stand_in, url) = stand_in(Script::json(200, answers));
    let client = GraphClient::new(&url, Duration::from_secs(5));
    let auth = PageAuth::of("1234", Secret::new(TOKEN), Some(Secret::new("app-secret")));

    let results = client
        .send_batch(&auth, &[hello("41"), hello("42"), hello("43")])
        .await
        .unwrap();

    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0].as_ref().unwrap().message_id.as_deref(),
        Some("m_41")
    );
    assert!(matches!(&results[1], Err(CallError::Permanent(e)) if e.code == 100));
    assert_eq!(results[2], Err(CallError::NotAnswered));
    let seen = stand_in.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one HTTP call for the three requests");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v21.0/")
    );
    assert_eq!(seen[0].authorization, Some(format!("Bearer {TOKEN}")));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen[0].query.len(),
        1,
        "only the proof: {:?}",
        seen[0].query
    );
    assert_eq!(seen[0].query[0].0, "appsecret_proof");
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["include_headers"], false);
    let items = body["batch"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for (item, psid) in items.iter().zip(["41", "42", "43"]) {
        assert_eq!(item["method"], "POST");
        assert_eq!(item["relative_url"], "1234/messages");
        let form = item["body"].as_str().unwrap();
        assert!(
            !form.contains(TOKEN),
            "no token in a request's body: {form}"
        );
        let fields: Vec<(String, String)> = serde_urlencoded::from_str(form).unwrap();
        let recipient = &fields
            .iter()
            .find(|(name, _)| name == "recipient")
            .unwrap()
            .1;
        assert_eq!(
            serde_json::from_str::<Value>(recipient).unwrap(),
            json!({"id": psid})
        );
    }
}

#[actix_web::test]
async fn a_failed_batch_call_is_sorted_like_a_single_call() {
    let (_, url) = stand_in(Script::throttled(613, 2));
    let client = GraphClient::new(&url, Duration::from_secs(5));

    let error = client
        .send_batch(&auth(), &[hello("41"), hello("42")])
        .await
        .unwrap_err();

    match error {
        CallError::Throttled { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)));
        }
        other => panic!("expected a throttled batch, got {other:?}"),
    }
}

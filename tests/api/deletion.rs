//! Meta's data-deletion callback through real HTTP on the public listener: a request
//! signed with the app secret forgets the user on every page and answers a status URL
//! and code; a wrong signature forgets nothing; a malformed body is refused.

use colloquy::test_support::sign_deletion_request;
use serde_json::{json, Value};

use crate::helpers::*;

const OTHER_PAGE: &str = "999000111";

fn payload(user_id: &str) -> Value {
    json!({"algorithm": "HMAC-SHA256", "user_id": user_id, "issued_at": 1_700_000_000})
}

/// POSTs a form body to `/data-deletion`, as Meta does.
async fn post_form(app: &TestApp, body: &str) -> Answer {
    let mut response = awc::Client::new()
        .post(format!("{}/data-deletion", app.base_url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(body.to_string())
        .await
        .expect("server answers");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.body().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        content_type,
        retry_after: None,
    }
}

async fn request_deletion(app: &TestApp, secret: &str, user_id: &str) -> Answer {
    let signed = sign_deletion_request(secret.as_bytes(), &payload(user_id));
    post_form(app, &format!("signed_request={signed}")).await
}

/// A user with one handled message (and its reply sent) on the test page.
async fn talked_to(app: &TestApp, psid: &str) {
    app.sends_text(psid, &format!("m.{psid}.0"), "hello", 1_000)
        .await;
    app.wait_for_first_reply(psid, "sent").await;
}

async fn conversation_on(app: &TestApp, psid: &str, page: &str) -> Answer {
    app.admin(
        "GET",
        &format!("/admin/conversations/{psid}?page={page}"),
        "",
    )
    .await
}

#[actix_web::test]
async fn a_signed_request_forgets_the_user_on_every_page_and_answers_its_status() {
    let app = spawn_app().await;
    talked_to(&app, "18001").await;
    // The same id on a second page.
    let elsewhere = envelope(vec![json!({
        "id": OTHER_PAGE, "time": 1_000,
        "messaging": [{
            "sender": {"id": "18001"}, "recipient": {"id": OTHER_PAGE}, "timestamp": 1_000,
            "message": {"mid": "m.18001.other", "text": "hello there"}
        }]
    })]);
    assert_eq!(app.post_signed(&elsewhere).await.status, 200);
    let mut tries = 0;
    while conversation_on(&app, "18001", OTHER_PAGE).await.status != 200 {
        tries += 1;
        assert!(tries < 500, "the second conversation never appeared");
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    talked_to(&app, "18002").await;
    // Each of the three conversations got its reply.
    let replies = app.graph.wait_for_sends(3).await.len();

    let answer = request_deletion(&app, APP_SECRET, "18001").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    let code = answer["confirmation_code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 32);
    assert!(code.bytes().all(|b| b.is_ascii_hexdigit()), "{code}");
    // No COLLOQUY_PUBLIC_URL: the scheme and host the request came to.
    assert_eq!(
        answer["url"],
        format!("{}/data-deletion/status?code={code}", app.base_url)
    );

    for page in [PAGE_ID, OTHER_PAGE] {
        let gone = conversation_on(&app, "18001", page).await;
        assert_eq!(gone.status, 404, "{page}: {}", gone.body);
    }
    assert_eq!(app.conversation("18002").await["psid"], "18002");

    // Facebook delivers an old event late, and redelivers the first: neither brings the
    // user back.
    let late = text_message("18001", "m.18001.late", "late one", 1_500);
    assert_eq!(app.post_signed(&late).await.status, 200);
    let first = text_message("18001", "m.18001.0", "hello", 1_000);
    assert_eq!(app.post_signed(&first).await.status, 200);
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(conversation_on(&app, "18001", PAGE_ID).await.status, 404);
    assert_eq!(
        app.graph.sends().len(),
        replies,
        "no reply to a forgotten user"
    );

    let status = app.get(&format!("/data-deletion/status?code={code}")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    let status = status.json();
    assert_eq!(status["confirmation_code"], code.as_str());
    assert_eq!(status["status"], "completed");
    assert_eq!(status["conversations_forgotten"], 2);
    assert_eq!(
        status.get("user_id"),
        None,
        "the status page does not show who"
    );

    let unknown = app
        .get("/data-deletion/status?code=0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.json()["error"].is_string());
    assert_eq!(app.get("/data-deletion/status?code=zz").await.status, 404);
    assert_eq!(app.get("/data-deletion/status").await.status, 400);
    // Only the public listener has it.
    let admin = app
        .admin("GET", &format!("/data-deletion/status?code={code}"), "")
        .await;
    assert_eq!(admin.status, 404);
}

#[actix_web::test]
async fn a_request_for_someone_without_conversations_is_confirmed_as_no_data() {
    let app = spawn_app().await;
    let answer = request_deletion(&app, APP_SECRET, "18100").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let code = answer.json()["confirmation_code"]
        .as_str()
        .unwrap()
        .to_string();
    let status = app.get(&format!("/data-deletion/status?code={code}")).await;
    assert_eq!(status.json()["status"], "no_data", "{}", status.body);
    assert_eq!(status.json()["conversations_forgotten"], 0);
}

#[actix_web::test]
async fn a_wrong_or_missing_signature_is_refused_and_forgets_nobody() {
    let app = spawn_app().await;
    talked_to(&app, "18201").await;

    let wrong = request_deletion(&app, "not-the-app-secret", "18201").await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .contains("signature"));
    assert!(!wrong.body.contains(APP_SECRET));

    let signed = sign_deletion_request(APP_SECRET.as_bytes(), &payload("18201"));
    let (_, unsigned_payload) = signed.split_once('.').unwrap();
    for body in [
        format!("signed_request={unsigned_payload}"),
        format!("signed_request=.{unsigned_payload}"),
        "signed_request=".to_string(),
    ] {
        let refused = post_form(&app, &body).await;
        assert_eq!(refused.status, 403, "{body}: {}", refused.body);
    }
    assert_eq!(app.conversation("18201").await["psid"], "18201");
}

#[actix_web::test]
async fn a_malformed_request_is_refused_with_400() {
    let app = spawn_app().await;
    talked_to(&app, "18301").await;

    for body in ["", "user_id=18301", "%zz=%"] {
        let refused = post_form(&app, body).await;
        assert_eq!(refused.status, 400, "{body:?}: {}", refused.body);
        assert!(refused.json()["error"].is_string(), "{}", refused.body);
    }
    // Signed with the secret, but not what Meta sends.
    let not_json = sign_deletion_request(APP_SECRET.as_bytes(), &json!("just a string"));
    let no_user =
        sign_deletion_request(APP_SECRET.as_bytes(), &json!({"algorithm": "HMAC-SHA256"}));
    for signed in [not_json, no_user] {
        let refused = post_form(&app, &format!("signed_request={signed}")).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
    }
    assert_eq!(app.conversation("18301").await["psid"], "18301");
}

#[actix_web::test]
async fn the_status_url_starts_with_the_configured_public_url() {
    let app = spawn_app_with(Options {
        public_url: Some("https://bot.example.com/".into()),
        ..Options::default()
    })
    .await;
    let answer = request_deletion(&app, APP_SECRET, "18401").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(
        answer["url"],
        format!(
            "https://bot.example.com/data-deletion/status?code={}",
            answer["confirmation_code"].as_str().unwrap()
        )
    );
}

#[actix_web::test]
async fn operators_list_the_deletion_requests_newest_first() {
    let app = spawn_app().await;
    talked_to(&app, "18200").await;
    let first = request_deletion(&app, APP_SECRET, "18200").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = request_deletion(&app, APP_SECRET, "18201").await;
    assert_eq!(second.status, 200, "{}", second.body);

    let listed = app.admin("GET", "/admin/deletion-requests", "").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let requests = listed.json()["deletion_requests"]
        .as_array()
        .unwrap()
        .clone();
    let seen: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 2, "{requests:?}");
    assert!(seen.contains(&("18200", "completed")), "{seen:?}");
    assert!(seen.contains(&("18201", "no_data")), "{seen:?}");
    assert!(requests[0]["requested_at"].as_i64() >= requests[1]["requested_at"].as_i64());
    assert_eq!(
        requests.iter().find(|r| r["user_id"] == "18200").unwrap()["confirmation_code"],
        first.json()["confirmation_code"]
    );

    let anonymous = awc::Client::new()
        .get(format!("{}/admin/deletion-requests", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

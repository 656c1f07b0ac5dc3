//! The bad-input corpus: each hostile request, the status it must get, and proof that
//! the store did not change (no conversation, no transcript entry, no send). Then odd but
//! valid bodies, each recorded for what it is: a message the page itself sent is never
//! answered (however its echo flag is spelled), and an unreadable attachment costs a
//! message none of its text.

use serde_json::{json, Value};

use crate::helpers::*;

enum Signing {
    Right,
    None,
    Wrong,
}

struct Case {
    name: &'static str,
    body: Vec<u8>,
    signing: Signing,
    status: u16,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, signing: Signing, status: u16) -> Case {
    Case {
        name,
        body: body.into(),
        signing,
        status,
    }
}

fn corpus() -> Vec<Case> {
    let valid = text_message("12001", "m.hostile", "hi", 1_000);
    let deep = format!(
        r#"{{"object":"page","entry":[{{"id":"1","messaging":[{}{}]}}]}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    vec![
        case("unsigned", valid.clone(), Signing::None, 403),
        case(
            "signed with another secret",
            valid.clone(),
            Signing::Wrong,
            403,
        ),
        case("empty body", "", Signing::Right, 400),
        case(
            "truncated JSON",
            &valid.as_bytes()[..valid.len() / 2],
            Signing::Right,
            400,
        ),
        case(
            "invalid UTF-8",
            b"{\"object\":\"page\",\"entry\":[\xff\xfe]}".to_vec(),
            Signing::Right,
            400,
        ),
        case("a JSON string", "\"page\"", Signing::Right, 400),
        case(
            "object is a number",
            r#"{"object":1,"entry":[]}"#,
            Signing::Right,
            400,
        ),
        case(
            "object is not page",
            r#"{"object":"user","entry":[]}"#,
            Signing::Right,
            400,
        ),
        case(
            "entry is a string",
            r#"{"object":"page","entry":"x"}"#,
            Signing::Right,
            400,
        ),
        case(
            "entry item is a number",
            r#"{"object":"page","entry":[7]}"#,
            Signing::Right,
            400,
        ),
        case(
            "entry without id",
            r#"{"object":"page","entry":[{"messaging":[]}]}"#,
            Signing::Right,
            400,
        ),
        case(
            "entry id is an object",
            r#"{"object":"page","entry":[{"id":{},"messaging":[]}]}"#,
            Signing::Right,
            400,
        ),
        case(
            "messaging is an object",
            r#"{"object":"page","entry":[{"id":"1","messaging":{}}]}"#,
            Signing::Right,
            400,
        ),
        case("deeply nested JSON", deep, Signing::Right, 400),
        case(
            "duplicate trailing garbage",
            format!("{valid}{valid}"),
            Signing::Right,
            400,
        ),
    ]
}

#[actix_web::test]
async fn every_hostile_request_gets_its_4xx_and_leaves_the_store_unchanged() {
    let app = spawn_app().await;
    for case in corpus() {
        let headers = match case.signing {
            Signing::Right => vec![(
                "X-Hub-Signature-256",
                colloquy::test_support::sign_sha256(APP_SECRET.as_bytes(), &case.body),
            )],
            Signing::Wrong => vec![(
                "X-Hub-Signature-256",
                colloquy::test_support::sign_sha256(b"wrong", &case.body),
            )],
            Signing::None => vec![],
        };
        let answer = app.post_webhook(case.body.clone(), &headers).await;
        assert_eq!(answer.status, case.status, "{}: {}", case.name, answer.body);
        assert!(
            answer.json()["error"].is_string(),
            "{}: error body {}",
            case.name,
            answer.body
        );
        assert_eq!(
            app.conversations().await,
            json!([]),
            "{} stored something",
            case.name
        );
    }
    assert!(app.graph.requests().is_empty());
}

#[actix_web::test]
async fn odd_but_valid_input_is_accepted_and_recorded_without_harm() {
    let app = spawn_app().await;
    let huge_text = "é".repeat(100_000);
    let body = envelope(vec![
        json!({"id": 128922990987384u64, "time": "1", "messaging": [
            // Ids as numbers, a string timestamp, a huge text.
            {"sender": {"id": 12002u64}, "recipient": {"id": 128922990987384u64}, "timestamp": "5",
             "message": {"mid": "m.odd1", "text": huge_text}},
            // An id that is not a number, an unknown kind, a non-object item.
            {"sender": {"id": "not-a-number"}, "recipient": {"id": PAGE_ID}, "timestamp": 6,
             "surprise": {"nested": [1, [2, [3]]]}},
            "just a string",
            // A known kind with wrong types inside.
            {"sender": {"id": "12003"}, "recipient": {"id": PAGE_ID}, "timestamp": 7,
             "read": {"watermark": {"not": "a number"}}},
        ]}),
    ]);
    let answer = app.post_signed(&body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    app.graph.wait_for_sends(1).await;
    let doc = app
        .wait_for_conversation("12002", |d| outbound(d).len() == 1)
        .await;
    assert_eq!(
        doc["transcript"][0]["text"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        100_000
    );
    let odd = app
        .wait_for_conversation("not-a-number", |d| {
            d["transcript"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(odd["transcript"][0]["kind"], "unknown");
    let wrong = app
        .wait_for_conversation("12003", |d| {
            d["transcript"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(wrong["transcript"][0]["kind"], "unknown");
    assert_eq!(
        wrong["read_watermark"], 0,
        "a malformed receipt moves no watermark"
    );
    assert_eq!(
        app.graph.sends().len(),
        1,
        "only the real message was answered"
    );
}

#[actix_web::test]
async fn a_message_sent_by_the_page_itself_gets_no_reply_however_its_echo_flag_is_spelled() {
    let app = spawn_app().await;
    let spellings = [json!("true"), json!(1), json!(false), json!(null)];
    let mut messaging: Vec<Value> = spellings
        .iter()
        .enumerate()
        .map(|(i, flag)| {
            json!({"sender": {"id": PAGE_ID}, "recipient": {"id": "12101"}, "timestamp": 10 + i,
                   "message": {"mid": format!("m.page{i}"), "text": "from the page", "is_echo": flag}})
        })
        .collect();
    messaging.push(
        json!({"sender": {"id": PAGE_ID}, "recipient": {"id": "12101"}, "timestamp": 20,
                          "message": {"mid": "m.page.noflag", "text": "from the page"}}),
    );
    let body = envelope(vec![
        json!({"id": PAGE_ID, "time": 1, "messaging": messaging}),
    ]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    // Recorded as what they are: the page's messages in the user's conversation.
    let doc = app
        .wait_for_conversation("12101", |d| outbound(d).len() == 5)
        .await;
    assert!(
        outbound(&doc).iter().all(|e| e["kind"] == "echo"),
        "{doc:#}"
    );
    // The user's own message after them is the barrier: once it is answered, they were handled.
    app.sends_text("12101", "m.user", "hi", 30).await;
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["recipient"]["id"], "12101");
    app.wait_for_conversation("12101", |d| outbound(d).len() == 6)
        .await;
    assert_eq!(app.graph.sends().len(), 1, "only the user was answered");
    assert_eq!(
        app.conversation(PAGE_ID).await,
        Value::Null,
        "the page never became a user"
    );
}

#[actix_web::test]
async fn a_message_with_text_and_an_attachment_without_a_type_gets_its_reply() {
    let app = spawn_app().await;
    let body = envelope(vec![json!({"id": PAGE_ID, "time": 1, "messaging": [
        {"sender": {"id": "12102"}, "recipient": {"id": PAGE_ID}, "timestamp": 10,
         "message": {"mid": "m.untyped", "text": "see this",
                     "attachments": [{"payload": {"url": "https://example.com/a.png"}}]}}
    ]})]);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let sends = app.graph.wait_for_sends(1).await;
    assert_eq!(sends[0].body["message"]["text"], THANKS);
    let doc = app.wait_for_first_reply("12102", "sent").await;
    let received = &doc["transcript"][0];
    assert_eq!(received["kind"], "text");
    assert_eq!(received["text"], "see this");
    assert_eq!(
        received["payload"]["attachments"][0]["type"], "unknown",
        "the attachment is kept, as unknown: {received:#}"
    );
}

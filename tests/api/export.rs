//! The admin exports through real HTTP: every conversation as JSON Lines, streamed, with
//! forgotten users left out and the list's filters; one interview tree's answers as CSV,
//! quoted correctly and safe to open in a spreadsheet.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::*;

/// An export's answer, with what tells a streamed body from one built whole.
struct Export {
    status: u16,
    content_type: String,
    content_length: Option<String>,
    body: String,
}

async fn export(app: &TestApp, path_and_query: &str, token: bool) -> Export {
    let mut request = awc::Client::new().get(format!("{}{path_and_query}", app.admin_url));
    if token {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    let mut response = request.send().await.expect("server answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, content_length) = (header("content-type"), header("content-length"));
    let body = response.body().limit(64 * 1024 * 1024).await.unwrap();
    Export {
        status: response.status().as_u16(),
        content_type: content_type.unwrap_or_default(),
        content_length,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Each line of a JSON Lines body, parsed (failing on any line that is not JSON).
fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn psids(documents: &[Value]) -> BTreeSet<String> {
    documents
        .iter()
        .map(|d| d["psid"].as_str().unwrap().to_string())
        .collect()
}

const USERS: usize = 300;

fn user(i: usize) -> String {
    format!("17{i:03}")
}

#[actix_web::test]
async fn every_conversation_is_streamed_as_a_json_line_with_its_transcript() {
    let app = spawn_app().await;
    // 300 users, 50 to a POST.
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(50) {
        let entries = chunk
            .iter()
            .map(|&i| {
                let event =
                    message_event(&user(i), &format!("m.{i}"), &format!("hello {i}"), 1_000);
                json!({"id": PAGE_ID, "time": 1_000, "messaging": [event]})
            })
            .collect();
        let answer = app.post_signed(&envelope(entries)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let started = std::time::Instant::now();
    while app.conversations().await.as_array().unwrap().len() < USERS {
        assert!(started.elapsed().as_secs() < 30, "conversations missing");
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let forgotten = app
        .admin("DELETE", &format!("/admin/conversations/{}", user(7)), "")
        .await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.body);
    let paused = app
        .admin(
            "POST",
            &format!("/admin/conversations/{}/pause", user(10)),
            "",
        )
        .await;
    assert_eq!(paused.status, 200, "{}", paused.body);

    let all = export(&app, "/admin/export/conversations.jsonl", true).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.content_type, "application/x-ndjson");
    assert_eq!(all.content_length, None, "streamed, not built whole");
    let documents = lines(&all.body);
    assert_eq!(documents.len(), USERS - 1);
    let expected: BTreeSet<String> = (0..USERS).filter(|&i| i != 7).map(user).collect();
    assert_eq!(psids(&documents), expected);
    for document in &documents {
        let psid = document["psid"].as_str().unwrap();
        let i: usize = psid[2..].parse().unwrap();
        let hello = format!("hello {i}");
        assert!(
            document["transcript"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["direction"] == "in" && e["text"] == hello.as_str()),
            "{document}"
        );
        assert_eq!(document["page_id"], PAGE_ID);
    }
    // The same document as the admin API's.
    let one = documents.iter().find(|d| d["psid"] == user(42)).unwrap();
    let shown = app.conversation(&user(42)).await;
    assert_eq!(one["transcript"][0], shown["transcript"][0]);
    assert_eq!(one["state"], shown["state"]);

    let paused = export(&app, "/admin/export/conversations.jsonl?paused=true", true).await;
    assert_eq!(psids(&lines(&paused.body)), BTreeSet::from([user(10)]));
    let prefix = export(
        &app,
        "/admin/export/conversations.jsonl?psid_prefix=1702",
        true,
    )
    .await;
    let expected: BTreeSet<String> = (20..30).map(user).collect();
    assert_eq!(psids(&lines(&prefix.body)), expected);
    let other_page = export(&app, "/admin/export/conversations.jsonl?page=1", true).await;
    assert_eq!((other_page.status, other_page.body.as_str()), (200, ""));
    let future = export(
        &app,
        "/admin/export/conversations.jsonl?active_since=99999999999999",
        true,
    )
    .await;
    assert_eq!((future.status, future.body.as_str()), (200, ""));

    let bad = export(&app, "/admin/export/conversations.jsonl?paused=maybe", true).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("paused"), "{}", bad.body);
    let anonymous = export(&app, "/admin/export/conversations.jsonl", false).await;
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.body.contains("hello"));
}

fn pair(id: &str, answer: &str) -> Value {
    json!({"id": id, "question": format!("{id}?"), "answer": answer})
}

/// Serves both trees of `data/flows` (`interview` and `satisfaction`).
fn both_trees() -> Options {
    let trees = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/flows");
    let flow = colloquy::flow::tree::TreeFlow::load(trees).expect("the shipped trees load");
    Options {
        flow: flow.into_handle(),
        ..Options::default()
    }
}

/// A user who talked to the bot, whose interview state an operator then set.
async fn interviewed(app: &TestApp, psid: &str, state: Value) {
    app.sends_text(psid, &format!("m.{psid}"), "hi", 1_000)
        .await;
    app.wait_for_conversation(psid, |d| !d.is_null()).await;
    let set = app
        .admin(
            "PUT",
            &format!("/admin/conversations/{psid}/state"),
            &state.to_string(),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
}

fn csv_rows(body: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[actix_web::test]
async fn a_trees_answers_are_one_csv_row_per_user_quoted_and_safe_for_spreadsheets() {
    let app = spawn_app_with(both_trees()).await;
    let awkward = "Pune, \"West\"\nIndia";
    interviewed(
        &app,
        "16001",
        json!({
            "stage": {"status": "completed"}, "tree": "interview",
            "answers": [
                pair("current_salary", "=HYPERLINK(\"http://evil.example\")"),
                pair("city", awkward),
                pair("skills", "-rust"),
                pair("city", "Mumbai"),
            ],
            "values": {}
        }),
    )
    .await;
    interviewed(
        &app,
        "16002",
        json!({
            "stage": {"status": "asking", "question": "3", "tries": 0}, "tree": "satisfaction",
            "answers": [pair("1", "5"), pair("2", "@fast")],
            "values": {},
            "earlier": [
                {"tree": "interview", "status": "completed", "answers": [pair("current_salary", "10")], "values": {}},
                {"tree": "interview", "status": "canceled",
                 "answers": [pair("current_salary", "20"), pair("why_join", "+growth")], "values": {}}
            ]
        }),
    )
    .await;
    interviewed(
        &app,
        "16003",
        json!({
            "stage": {"status": "completed"}, "tree": "satisfaction",
            "answers": [pair("1", "4")], "values": {}
        }),
    )
    .await;
    interviewed(
        &app,
        "16004",
        json!({
            "stage": {"status": "completed"}, "tree": "interview",
            "answers": [pair("current_salary", "secret")], "values": {}
        }),
    )
    .await;
    let forgotten = app.admin("DELETE", "/admin/conversations/16004", "").await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.body);

    let interview = export(&app, "/admin/export/trees/interview.csv", true).await;
    assert_eq!(interview.status, 200, "{}", interview.body);
    assert!(
        interview.content_type.starts_with("text/csv"),
        "{}",
        interview.content_type
    );
    assert_eq!(interview.content_length, None, "streamed, not built whole");
    assert!(
        !interview.body.contains("secret"),
        "a forgotten user's answers"
    );
    assert_eq!(
        csv_rows(&interview.body),
        vec![
            vec![
                "page_id",
                "psid",
                "status",
                "current_salary",
                "city",
                "skills",
                "why_join"
            ],
            // A question answered twice keeps its last answer.
            vec![
                PAGE_ID,
                "16001",
                "completed",
                "'=HYPERLINK(\"http://evil.example\")",
                "Mumbai",
                "'-rust",
                ""
            ],
            // Not in this tree now: its latest earlier interview of it.
            vec![PAGE_ID, "16002", "canceled", "20", "", "", "'+growth"],
        ]
    );

    let satisfaction = export(&app, "/admin/export/trees/satisfaction.csv", true).await;
    assert_eq!(satisfaction.status, 200, "{}", satisfaction.body);
    assert_eq!(
        csv_rows(&satisfaction.body),
        vec![
            vec!["page_id", "psid", "status", "1", "2"],
            vec![PAGE_ID, "16002", "in_progress", "5", "'@fast"],
            vec![PAGE_ID, "16003", "completed", "4", ""],
        ]
    );

    let unknown = export(&app, "/admin/export/trees/nope.csv", true).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let error: Value = serde_json::from_str(&unknown.body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("\"nope\""),
        "{error}"
    );
    let anonymous = export(&app, "/admin/export/trees/interview.csv", false).await;
    assert_eq!(anonymous.status, 401);
    assert!(!anonymous.body.contains("16001"));
}

#[actix_web::test]
async fn an_answer_with_a_comma_a_quote_and_a_newline_comes_back_whole() {
    let app = spawn_app_with(both_trees()).await;
    let awkward = "Pune, \"West\"\nIndia";
    interviewed(
        &app,
        "16101",
        json!({
            "stage": {"status": "completed"}, "tree": "interview",
            "answers": [pair("city", awkward)], "values": {}
        }),
    )
    .await;
    let csv = export(&app, "/admin/export/trees/interview.csv", true).await;
    assert!(
        csv.body.contains("\"Pune, \"\"West\"\"\nIndia\""),
        "{}",
        csv.body
    );
    assert_eq!(csv_rows(&csv.body)[1][3], awkward);
}

//! The `colloquy` binary as an operator uses it: subscribe, inspect, serve's config errors.

use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::*;

fn colloquy(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colloquy"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

/// `colloquy` run off the async runtime (the test's own server must keep answering).
async fn colloquy_beside(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    actix_web::rt::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        colloquy(&args, &envs)
    })
    .await
    .expect("the CLI thread finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn subscribe_posts_the_handled_fields_with_the_page_token_and_reports_success() {
    let graph = MockGraph::start();
    let output = colloquy(
        &["subscribe"],
        &[
            ("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN),
            ("MESSENGER_APP_SECRET", APP_SECRET),
            ("MESSENGER_GRAPH_URL", &graph.url),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("subscribed the page to: messages,"));
    let requests = graph.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v21.0/me/subscribed_apps")
    );
    assert!(
        request.is_authorized_by(ACCESS_TOKEN, APP_SECRET),
        "{:?}",
        request.query
    );
    let fields = request.query_value("subscribed_fields").unwrap();
    for field in [
        "messages",
        "messaging_postbacks",
        "message_deliveries",
        "message_reads",
        "message_echoes",
    ] {
        assert!(
            fields.split(',').any(|f| f == field),
            "{field} missing from {fields}"
        );
    }
}

#[test]
fn subscribe_status_shows_the_subscribed_fields() {
    let graph = MockGraph::start();
    let output = colloquy(
        &["subscribe", "--status"],
        &[
            ("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN),
            ("MESSENGER_GRAPH_URL", &graph.url),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "app colloquy-test (1377689312323892): messages, message_reads\n"
    );
    assert_eq!(graph.requests()[0].method, "GET");
}

#[test]
fn subscribe_reports_a_graph_error_clearly_and_fails() {
    let graph = MockGraph::start();
    graph.script([graph_error(
        400,
        190,
        Some(460),
        "Error validating access token: session invalidated",
    )]);
    let output = colloquy(
        &["subscribe"],
        &[
            ("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN),
            ("MESSENGER_GRAPH_URL", &graph.url),
        ],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("Graph API error 190/460: Error validating access token"),
        "{err}"
    );
    assert!(!err.contains(ACCESS_TOKEN), "the token leaked: {err}");
}

#[test]
fn serve_without_a_required_setting_names_the_variable_in_one_line() {
    let output = colloquy(
        &["serve"],
        &[
            ("MESSENGER_VERIFY_TOKEN", "v"),
            ("MESSENGER_ACCESS_TOKEN", "t"),
        ],
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        lines,
        vec!["error: missing required setting MESSENGER_APP_SECRET (or the flag --app-secret)"]
    );
}

/// A port in use ends `serve` with an error naming the address, before anything starts:
/// no data directory is made and nothing panics on the way out (actors started before
/// the bind used to panic as the runtime went down).
#[test]
fn serve_on_a_port_in_use_names_the_address_and_starts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_addr = free.local_addr().unwrap().to_string();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let data = data.to_str().unwrap();
    let secrets = [
        ("MESSENGER_VERIFY_TOKEN", "v"),
        ("MESSENGER_APP_SECRET", "s"),
        ("MESSENGER_ACCESS_TOKEN", "t"),
        ("COLLOQUY_DATA", data),
        ("RUST_LOG", "warn"),
    ];
    for (webhook, admin) in [(&taken_addr, &free_addr), (&free_addr, &taken_addr)] {
        let mut envs = secrets.to_vec();
        envs.extend([
            ("COLLOQUY_BIND", webhook.as_str()),
            ("COLLOQUY_ADMIN_BIND", admin.as_str()),
        ]);
        let output = colloquy(&["serve", "--flow", "echo"], &envs);
        assert_eq!(output.status.code(), Some(1));
        let err = stderr(&output);
        assert!(
            err.starts_with(&format!("error: cannot listen on {taken_addr}: ")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dir.path().join("db").exists(), "no data directory is made");
    }
}

#[actix_web::test]
async fn inspect_works_through_the_admin_endpoint_while_the_server_runs_and_directly_after() {
    let app = spawn_app().await;
    let body = text_message("11001", "m.inspect", "hello there", 1_700_000_000_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    app.wait_for_first_reply("11001", "sent").await;
    let data = app.data_dir.to_string_lossy().into_owned();
    let envs = [
        ("COLLOQUY_DATA", data.as_str()),
        ("COLLOQUY_ADMIN_URL", app.admin_url.as_str()),
        ("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    // The server holds the sled directory, so the CLI must ask the server.
    let doc_output = colloquy_beside(&["inspect", "11001", "--json"], &envs).await;
    let list_output = colloquy_beside(&["inspect"], &envs).await;
    assert!(doc_output.status.success(), "{}", stderr(&doc_output));
    let doc: Value = serde_json::from_str(&stdout(&doc_output)).unwrap();
    assert_eq!(doc["psid"], "11001");
    assert_eq!(doc["page_id"], PAGE_ID);
    assert_eq!(doc["transcript"][1]["status"], "sent");
    assert_eq!(doc["transcript"][1]["text"], THANKS);
    for key in ["state", "delivered_watermark", "read_watermark"] {
        assert!(doc.get(key).is_some(), "{key}");
    }
    assert!(
        stdout(&list_output).contains("11001"),
        "{}",
        stdout(&list_output)
    );
    // `--page` narrows the list to one page's conversations.
    let own_page = colloquy_beside(&["inspect", "--page", PAGE_ID], &envs).await;
    assert!(stdout(&own_page).contains("11001"), "{}", stdout(&own_page));
    let other_page = colloquy_beside(&["inspect", "--page", "42", "--json"], &envs).await;
    assert_eq!(stdout(&other_page).trim(), "[]", "{}", stderr(&other_page));
    let tail_output = colloquy_beside(&["inspect", "11001", "--json", "--last", "1"], &envs).await;
    let tail: Value = serde_json::from_str(&stdout(&tail_output)).unwrap();
    assert_eq!(
        tail["transcript"].as_array().unwrap().len(),
        1,
        "only the last entry"
    );
    assert_eq!(tail["transcript"][0]["text"], THANKS);

    app.app.stop().await.unwrap();
    // Stopped: the CLI opens the sled directory itself.
    let data_dir = app.data_dir.clone();
    let data = data_dir.to_string_lossy().into_owned();
    let direct = colloquy_beside(&["inspect", "11001"], &[("COLLOQUY_DATA", data.as_str())]).await;
    assert!(direct.status.success(), "{}", stderr(&direct));
    let text = stdout(&direct);
    assert!(
        text.contains("hello there") && text.contains(THANKS),
        "{text}"
    );
    assert!(text.contains(" sent "), "{text}");
    let other_page = colloquy_beside(
        &["inspect", "--page", "42", "--json"],
        &[("COLLOQUY_DATA", data.as_str())],
    )
    .await;
    assert_eq!(stdout(&other_page).trim(), "[]");
}

#[actix_web::test]
async fn inspect_json_shows_the_graph_trace_id_of_a_reply_that_failed() {
    let app = spawn_app().await;
    app.graph.script([graph_error(
        400,
        551,
        Some(1545041),
        "(#551) This person isn't available right now.",
    )]);
    let body = text_message("11101", "m.trace", "hello", 1_700_000_000_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    app.wait_for_first_reply("11101", "failed").await;
    app.app.stop().await.unwrap();

    let data = app.data_dir.to_string_lossy().into_owned();
    let output = colloquy_beside(
        &["inspect", "11101", "--json"],
        &[("COLLOQUY_DATA", data.as_str())],
    )
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    let doc: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let error = &doc["transcript"][1]["error"];
    assert_eq!(
        (error["code"].as_i64(), error["subcode"].as_i64()),
        (Some(551), Some(1545041))
    );
    assert_eq!(error["fbtrace_id"], "Ab1");
}

#[test]
fn inspect_without_a_data_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let output = colloquy(
        &["inspect"],
        &[("COLLOQUY_DATA", missing.to_str().unwrap())],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no data directory at"),
        "{}",
        stderr(&output)
    );
}

#[actix_web::test]
async fn admin_commands_act_through_the_api_and_report_its_errors() {
    let app = spawn_app().await;
    app.sends_text("11101", "m.11101.0", "hello", 1_000).await;
    app.wait_for_first_reply("11101", "sent").await;
    let envs = [
        ("COLLOQUY_ADMIN_URL", app.admin_url.as_str()),
        ("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];

    let paused = colloquy_beside(&["admin", "pause", "11101"], &envs).await;
    assert!(paused.status.success(), "{}", stderr(&paused));
    assert!(
        stdout(&paused).contains("paused 11101"),
        "{}",
        stdout(&paused)
    );
    assert_eq!(app.conversation("11101").await["paused"], true);

    let listed = colloquy_beside(&["admin", "list", "--paused", "true", "--json"], &envs).await;
    let page: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(page["conversations"][0]["psid"], "11101");

    let sent = colloquy_beside(&["admin", "send", "11101", "A human here"], &envs).await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    let sends = app.graph.wait_for_sends(2).await;
    assert_eq!(sends[1].body["message"]["text"], "A human here");

    let set = colloquy_beside(
        &["admin", "reset", "11101", "--set", "{\"messages\": 7}"],
        &envs,
    )
    .await;
    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(app.conversation("11101").await["state"]["messages"], 7);
    let reset = colloquy_beside(&["admin", "reset", "11101", "--json"], &envs).await;
    let doc: Value = serde_json::from_str(&stdout(&reset)).unwrap();
    assert_eq!(doc["state"], Value::Null);

    // The API's refusals, as the API words them, with a failing exit.
    let nothing = colloquy_beside(&["admin", "retry", "11101"], &envs).await;
    assert!(!nothing.status.success());
    assert!(
        stderr(&nothing).contains("409") && stderr(&nothing).contains("nothing to retry"),
        "{}",
        stderr(&nothing)
    );
    let unknown = colloquy_beside(&["admin", "resume", "99999"], &envs).await;
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));
    let no_token = colloquy_beside(
        &["admin", "pause", "11101"],
        &[("COLLOQUY_ADMIN_URL", app.admin_url.as_str())],
    )
    .await;
    assert!(!no_token.status.success());
    assert!(
        stderr(&no_token).contains("COLLOQUY_ADMIN_TOKEN"),
        "{}",
        stderr(&no_token)
    );

    let forgotten = colloquy_beside(&["admin", "forget", "11101"], &envs).await;
    assert!(forgotten.status.success(), "{}", stderr(&forgotten));
    let gone = app.admin("GET", "/admin/conversations/11101", "").await;
    assert_eq!(gone.status, 404);
}

#[actix_web::test]
async fn admin_export_writes_the_conversations_and_names_a_bad_export() {
    let app = spawn_app().await;
    for psid in ["11201", "11202"] {
        app.sends_text(psid, &format!("m.{psid}"), "hello", 1_000)
            .await;
        app.wait_for_first_reply(psid, "sent").await;
    }
    let envs = [
        ("COLLOQUY_ADMIN_URL", app.admin_url.as_str()),
        ("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let written = colloquy_beside(
        &["admin", "export", "conversations", "--out", &out_arg],
        &envs,
    )
    .await;
    assert!(written.status.success(), "{}", stderr(&written));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut psids: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["psid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    psids.sort();
    assert_eq!(psids, ["11201", "11202"]);

    let unknown = colloquy_beside(&["admin", "export", "tree", "nope"], &envs).await;
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));
    let bad = colloquy_beside(&["admin", "export", "everything"], &envs).await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown export"), "{}", stderr(&bad));
}

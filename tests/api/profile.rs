//! `colloquy profile diff|apply` and `colloquy subscribe --pages` against the mock Graph
//! API: each page's calls made as that page (its token, its app's proof), Instagram's
//! platform and fields, one page's failure leaving the others done.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::*;

const MAIN_SECRET: &str = "profile-main-secret";
const OTHER_SECRET: &str = "profile-other-secret";

/// Three pages: A (main) and B (main) declare profiles, the Instagram account (other)
/// declares ice breakers; a fourth page (main) declares none.
fn pages_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("pages.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[apps.main]
secret = "{MAIN_SECRET}"
verify_token = "v"

[apps.other]
secret = "{OTHER_SECRET}"
verify_token = "v2"

[[pages]]
id = "2001"
app = "main"
access_token = "token-2001"
[pages.profile]
get_started = {{ payload = "START" }}
greeting = [{{ locale = "default", text = "Hello!" }}]

[[pages]]
id = "2002"
app = "main"
access_token = "token-2002"
[pages.profile]
greeting = [{{ locale = "default", text = "Welcome" }}]

[[pages]]
id = "2003"
app = "other"
access_token = "token-2003"
channel = "instagram"
[pages.profile]
ice_breakers = [{{ locale = "default", call_to_actions = [{{ question = "Hours?", payload = "HOURS" }}] }}]

[[pages]]
id = "2004"
app = "main"
access_token = "token-2004"
"#
        ),
    )
    .unwrap();
    path
}

fn colloquy(args: &[&str], graph: &MockGraph, pages: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MESSENGER_GRAPH_URL", &graph.url)
        .env("COLLOQUY_PAGES", pages)
        .output()
        .expect("the binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn diff_shows_what_differs_and_apply_makes_the_live_profiles_match() {
    let dir = tempfile::tempdir().unwrap();
    let pages = pages_file(dir.path());
    let graph = MockGraph::start();
    graph.preset_profile(
        "2001",
        json!({"get_started": {"payload": "START"}, "greeting": [{"locale": "default", "text": "Old"}],
               "persistent_menu": [{"locale": "default", "call_to_actions": []}]}),
    );
    graph.preset_profile(
        "2002",
        json!({"greeting": [{"locale": "default", "text": "Welcome"}]}),
    );

    let diff = colloquy(&["profile", "diff"], &graph, &pages);
    let (out, err) = text(&diff);
    assert!(diff.status.success(), "{err}");
    assert!(out.contains("page 2001 (differs):"), "{out}");
    assert!(
        out.contains(r#"set greeting = [{"locale":"default","text":"Hello!"}]"#),
        "{out}"
    );
    assert!(out.contains("delete persistent_menu"), "{out}");
    assert!(
        !out.contains("set get_started"),
        "the same is left alone: {out}"
    );
    assert!(out.contains("page 2002: in sync"), "{out}");
    assert!(
        out.contains("page 2003 (differs):\n  set ice_breakers"),
        "{out}"
    );
    assert!(out.contains("page 2004: no [pages.profile]"), "{out}");
    assert!(
        graph.requests().iter().all(|r| r.method == "GET"),
        "diff changes nothing"
    );

    let before = graph.requests().len();
    let apply = colloquy(&["profile", "apply"], &graph, &pages);
    let (out, err) = text(&apply);
    assert!(apply.status.success(), "{out}{err}");
    assert!(out.contains("page 2001 (applied):"), "{out}");
    assert_eq!(
        graph.profile("2001"),
        json!({"get_started": {"payload": "START"}, "greeting": [{"locale": "default", "text": "Hello!"}]})
    );
    let calls: Vec<Recorded> = graph.requests()[before..].to_vec();
    let changing = |page: &str| -> Vec<&str> {
        calls
            .iter()
            .filter(|c| c.path.contains(&format!("/{page}/")) && c.method != "GET")
            .map(|c| c.method.as_str())
            .collect()
    };
    assert_eq!(changing("2001"), ["POST", "DELETE"], "one call of each");
    assert!(changing("2002").is_empty(), "nothing for a page in sync");
    assert_eq!(changing("2003"), ["POST"]);
    assert!(!calls.iter().any(|c| c.path.contains("/2004/")));
    for call in &calls {
        let page = call.path.rsplit('/').nth(1).unwrap();
        let secret = if page == "2003" {
            OTHER_SECRET
        } else {
            MAIN_SECRET
        };
        assert!(
            call.is_authorized_by(&format!("token-{page}"), secret),
            "{call:?}"
        );
        let instagram = call.query_value("platform") == Some("instagram");
        assert_eq!(instagram, page == "2003", "{call:?}");
        if instagram && call.method == "GET" {
            // Instagram is asked only for the properties it has.
            assert_eq!(
                call.query_value("fields"),
                Some("ice_breakers,persistent_menu")
            );
        }
    }

    let again = colloquy(&["profile", "diff"], &graph, &pages);
    let (out, _) = text(&again);
    for page in ["2001", "2002", "2003"] {
        assert!(out.contains(&format!("page {page}: in sync")), "{out}");
    }
}

#[test]
fn a_graph_error_on_one_page_of_three_leaves_the_others_applied_and_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = pages_file(dir.path());
    let graph = MockGraph::start();
    graph.revoke("token-2002");

    let apply = colloquy(&["profile", "apply"], &graph, &pages);
    let (out, err) = text(&apply);
    assert!(!apply.status.success(), "{out}");
    assert!(err.contains("failed for page(s) 2002"), "{err}");
    assert!(out.contains("page 2002: failed:"), "{out}");
    assert!(out.contains("190"), "Meta's error is shown: {out}");
    assert!(out.contains("page 2001 (applied):") && out.contains("page 2003 (applied):"));
    assert_eq!(graph.profile("2001")["get_started"]["payload"], "START");
    assert!(graph.profile("2003")["ice_breakers"].is_array());
    assert!(
        !out.contains("token-") && !err.contains("token-"),
        "no token shown"
    );

    let unknown = colloquy(&["profile", "diff", "--page", "9999"], &graph, &pages);
    assert!(!unknown.status.success());
    assert!(text(&unknown)
        .1
        .contains("page 9999 is not in the pages file"));
}

#[test]
fn subscribe_with_a_pages_file_subscribes_each_page_as_itself_to_its_channels_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pages = pages_file(dir.path());
    let graph = MockGraph::start();

    let output = colloquy(&["subscribe"], &graph, &pages);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{err}");
    let posts = graph.requests();
    assert_eq!(posts.len(), 4, "one call per page");
    for post in &posts {
        let page = post.path.rsplit('/').nth(1).unwrap();
        assert_eq!(post.method, "POST");
        assert!(post.path.ends_with(&format!("/{page}/subscribed_apps")));
        let secret = if page == "2003" {
            OTHER_SECRET
        } else {
            MAIN_SECRET
        };
        assert!(post.is_authorized_by(&format!("token-{page}"), secret));
        let fields = post.query_value("subscribed_fields").unwrap();
        if page == "2003" {
            assert!(fields.contains("messaging_seen"), "{fields}");
            assert!(!fields.contains("message_echoes"), "{fields}");
        } else {
            assert!(fields.contains("message_echoes") && fields.contains("message_reads"));
        }
    }
    assert!(
        out.contains("page 2003 (instagram):\nsubscribed the page to: messages,"),
        "{out}"
    );

    let status = colloquy(&["subscribe", "--status", "--page", "2001"], &graph, &pages);
    let (out, err) = text(&status);
    assert!(status.status.success(), "{err}");
    assert!(
        out.starts_with("page 2001 (messenger):\napp colloquy-test"),
        "{out}"
    );
    let last = graph.requests().pop().unwrap();
    assert_eq!(last.method, "GET");
    assert!(last.path.ends_with("/2001/subscribed_apps"));
}

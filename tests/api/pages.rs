//! Many pages and two channels from one pages file (`COLLOQUY_PAGES`): signatures by app,
//! replies to each page's own endpoint with its own token and proof, unknown pages, the
//! 190 stop per page, reloads (and a rotation under load), Instagram's rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use colloquy::test_support::sign_sha256;
use serde_json::{json, Value};

use crate::helpers::*;

const MAIN_SECRET: &str = "main-app-secret";
const OTHER_SECRET: &str = "other-app-secret";
const PAGE_A: &str = "1001";
const PAGE_B: &str = "1002";
const INSTAGRAM: &str = "17841400000000001";

/// Two apps and three pages: two Messenger pages of `main` (A echoes, B thanks), one
/// Instagram account of `other` (echoes).
fn pages_toml(token_a: &str) -> String {
    format!(
        r#"
[apps.main]
secret = "{MAIN_SECRET}"
verify_token = "verify-main"

[apps.other]
secret = "file:other.secret"
verify_token = "verify-other"

[[pages]]
id = "{PAGE_A}"
app = "main"
access_token = "{token_a}"
flow = "echo"

[[pages]]
id = "{PAGE_B}"
app = "main"
access_token = "token-b"

[[pages]]
id = "{INSTAGRAM}"
app = "other"
access_token = "token-ig"
channel = "instagram"
flow = "echo"
send_rate = 50
"#
    )
}

/// A data directory and a pages file beside it.
struct Setup {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    pages: PathBuf,
}

fn setup(token_a: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other.secret"), format!("{OTHER_SECRET}\n")).unwrap();
    let pages = dir.path().join("pages.toml");
    std::fs::write(&pages, pages_toml(token_a)).unwrap();
    Setup {
        data_dir: dir.path().join("db"),
        pages,
        _dir: dir,
    }
}

async fn spawn(setup: &Setup) -> TestApp {
    spawn_app_on(
        MockGraph::start(),
        &setup.data_dir,
        Options {
            pages_file: Some(setup.pages.clone()),
            ..Options::default()
        },
    )
    .await
}

fn message_to(object: &str, page: &str, psid: &str, mid: &str, text: &str, at: i64) -> String {
    json!({"object": object, "entry": [{"id": page, "time": at, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": page}, "timestamp": at,
        "message": {"mid": mid, "text": text}
    }]}]})
    .to_string()
}

async fn post_signed_by(app: &TestApp, secret: &str, body: &str) -> Answer {
    let signature = sign_sha256(secret.as_bytes(), body.as_bytes());
    app.post_webhook(
        body.as_bytes().to_vec(),
        &[("X-Hub-Signature-256", signature)],
    )
    .await
}

/// Every Send API call made for `page`, whatever its answer.
fn sends_to(app: &TestApp, page: &str) -> Vec<Recorded> {
    let path = format!("/{page}/messages");
    app.graph
        .message_calls()
        .into_iter()
        .filter(|send| send.path.ends_with(&path))
        .collect()
}

async fn wait_for_sends_to(app: &TestApp, page: &str, count: usize) -> Vec<Recorded> {
    wait_until(&format!("{count} send(s) to page {page}"), || {
        let sends = sends_to(app, page);
        (sends.len() >= count).then_some(sends)
    })
    .await
}

#[actix_web::test]
async fn each_reply_goes_to_its_own_pages_endpoint_with_its_token_and_proof() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;

    let to_a = message_to("page", PAGE_A, "u-a", "m.a1", "hello A", 1_000);
    let to_b = message_to("page", PAGE_B, "u-b", "m.b1", "hello B", 1_000);
    let to_ig = message_to("instagram", INSTAGRAM, "ig-u", "m.ig1", "hello IG", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &to_a).await.status, 200);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &to_b).await.status, 200);
    assert_eq!(post_signed_by(&app, OTHER_SECRET, &to_ig).await.status, 200);

    let a = wait_for_sends_to(&app, PAGE_A, 1).await;
    let b = wait_for_sends_to(&app, PAGE_B, 1).await;
    let ig = wait_for_sends_to(&app, INSTAGRAM, 1).await;
    assert!(a[0].is_authorized_by("token-a", MAIN_SECRET), "{:?}", a[0]);
    assert!(b[0].is_authorized_by("token-b", MAIN_SECRET), "{:?}", b[0]);
    assert!(
        ig[0].is_authorized_by("token-ig", OTHER_SECRET),
        "{:?}",
        ig[0]
    );
    // Each page's own flow: A and the Instagram account echo, B thanks.
    assert_eq!(a[0].body["message"]["text"], "hello A");
    assert_eq!(b[0].body["message"]["text"], THANKS);
    assert_eq!(ig[0].body["message"]["text"], "hello IG");
    assert_eq!(ig[0].body["recipient"]["id"], "ig-u");
    assert!(app.graph.sends().iter().all(|s| !s.path.contains("/me/")));

    let doc = app.conversation("ig-u").await;
    assert_eq!(doc["channel"], "instagram", "{doc}");
    let doc = app.conversation("u-a").await;
    assert_eq!(doc["channel"], "messenger", "{doc}");

    // The list filters by channel, and by page.
    let psids = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.body);
        psids(&answer)
    };
    let list = |query: &'static str| app.admin("GET", query, "");
    assert_eq!(
        psids(list("/admin/conversations?channel=instagram").await),
        ["ig-u"]
    );
    assert_eq!(
        psids(list("/admin/conversations?channel=messenger").await),
        ["u-a", "u-b"]
    );
    assert_eq!(psids(list("/admin/conversations?page=1002").await), ["u-b"]);
    let refused = list("/admin/conversations?channel=fax").await;
    assert_eq!(refused.status, 400);
    assert!(refused
        .body
        .contains("channel must be messenger or instagram"));
}

#[actix_web::test]
async fn a_post_signed_by_one_app_for_a_page_of_another_is_refused_and_stores_nothing() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;

    // The Instagram account belongs to `other`, but `main` signed.
    let foreign = message_to("instagram", INSTAGRAM, "ig-x", "m.x1", "hi", 1_000);
    let answer = post_signed_by(&app, MAIN_SECRET, &foreign).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains(&format!("page {INSTAGRAM} belongs to another app")));
    // A body mixing a page of the signing app with one of another is refused whole.
    let mixed = json!({"object": "page", "entry": [
        {"id": PAGE_A, "time": 1, "messaging": [{"sender": {"id": "u-m"}, "recipient": {"id": PAGE_A},
            "timestamp": 1, "message": {"mid": "m.m1", "text": "hi"}}]},
        {"id": INSTAGRAM, "time": 1, "messaging": [{"sender": {"id": "u-m"}, "recipient": {"id": INSTAGRAM},
            "timestamp": 1, "message": {"mid": "m.m2", "text": "hi"}}]}
    ]})
    .to_string();
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &mixed).await.status, 403);
    // A secret of no configured app.
    let to_a = message_to("page", PAGE_A, "u-y", "m.y1", "hi", 1_000);
    assert_eq!(
        post_signed_by(&app, "not-a-secret", &to_a).await.status,
        403
    );

    // A correctly signed message afterwards is the only thing stored or answered.
    let good = message_to("page", PAGE_B, "u-good", "m.g1", "hi", 2_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &good).await.status, 200);
    wait_for_sends_to(&app, PAGE_B, 1).await;
    let listed = app.conversations().await;
    let psids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["psid"].as_str())
        .collect();
    assert_eq!(psids, vec!["u-good"]);
    assert_eq!(app.graph.sends().len(), 1);
}

#[actix_web::test]
async fn a_page_missing_from_the_file_gets_200_no_reply_and_is_counted() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;

    let unknown = message_to("page", "999", "u-lost", "m.l1", "anyone?", 1_000);
    let answer = post_signed_by(&app, MAIN_SECRET, &unknown).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A message to a known page, sent after, is answered: the unknown one never is.
    let known = message_to("page", PAGE_A, "u-here", "m.h1", "hello", 2_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &known).await.status, 200);
    wait_for_sends_to(&app, PAGE_A, 1).await;
    assert_eq!(app.graph.sends().len(), 1);
    assert_eq!(app.conversation("u-lost").await, Value::Null);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"colloquy_events_unknown_page_total{page="999"} 1"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn the_handshake_accepts_the_verify_token_of_any_configured_app() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    for (token, status) in [
        ("verify-main", 200),
        ("verify-other", 200),
        (VERIFY_TOKEN, 403),
    ] {
        let answer = app
            .get(&format!(
                "/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=c42"
            ))
            .await;
        assert_eq!(answer.status, status, "{token}");
    }
}

#[actix_web::test]
async fn a_broken_pages_file_stops_the_start_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages.toml");
    std::fs::write(
        &pages,
        r#"
[apps.main]
secret = "env:COLLOQUY_TEST_NO_SUCH_SECRET_VARIABLE"
verify_token = "v"

[[pages]]
id = "1"
app = "main"
access_token = "t"
channel = "fax"

[[pages]]
id = "1"
app = "ghost"
access_token = "t"
flow = "nope"
"#,
    )
    .unwrap();
    let options = Options {
        pages_file: Some(pages.clone()),
        ..Options::default()
    };
    let error = start_error(
        &dir.path().join("db"),
        options,
        "a broken pages file stops the start",
    )
    .await;
    for expected in [
        "apps.main.secret: environment variable COLLOQUY_TEST_NO_SUCH_SECRET_VARIABLE is not set",
        "pages[0] (id 1).channel: `fax` is not a channel",
        "pages[1] (id 1): duplicate id",
        "pages[1] (id 1).app: unknown app `ghost`",
        "pages[1] (id 1).flow: unknown flow `nope`",
    ] {
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
    assert!(!dir.path().join("db").exists(), "nothing was opened");
}

fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[actix_web::test]
async fn a_reload_puts_a_new_token_in_force_and_a_broken_file_keeps_the_running_one() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    let first = message_to("page", PAGE_A, "u-r", "m.r1", "one", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &first).await.status, 200);
    wait_for_sends_to(&app, PAGE_A, 1).await;

    rewrite(&setup.pages, "[apps.main]\nsecret = 3\n");
    let refused = app.admin("POST", "/admin/pages/reload", "").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let problems = refused.json()["problems"].to_string();
    assert!(
        problems.contains("apps.main.secret: must be a string"),
        "{problems}"
    );
    assert!(problems.contains("pages: missing"), "{problems}");
    let second = message_to("page", PAGE_A, "u-r", "m.r2", "two", 2_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &second).await.status, 200);
    let sends = wait_for_sends_to(&app, PAGE_A, 2).await;
    assert!(
        sends[1].is_authorized_by("token-a", MAIN_SECRET),
        "old config kept"
    );

    rewrite(&setup.pages, &pages_toml("token-a2"));
    let reloaded = app.admin("POST", "/admin/pages/reload", "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(reloaded.json()["reloaded"]["changed"], json!([PAGE_A]));
    let third = message_to("page", PAGE_A, "u-r", "m.r3", "three", 3_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &third).await.status, 200);
    let sends = wait_for_sends_to(&app, PAGE_A, 3).await;
    assert!(
        sends[2].is_authorized_by("token-a2", MAIN_SECRET),
        "{:?}",
        sends[2]
    );

    let listed = app.admin("GET", "/admin/pages", "").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["pages"][2]["channel"], "instagram");
    for secret in ["token-a2", "token-b", "token-ig", MAIN_SECRET, OTHER_SECRET] {
        assert!(
            !listed.body.contains(secret),
            "{secret} shown: {}",
            listed.body
        );
    }
}

#[actix_web::test]
async fn a_revoked_token_stops_only_its_page_until_a_reload_gives_it_a_new_one() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    app.graph.revoke("token-a");

    let to_a = message_to("page", PAGE_A, "u-190", "m.190a", "first", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &to_a).await.status, 200);
    let doc = app.wait_for_first_reply("u-190", "failed").await;
    assert_eq!(outbound(&doc)[0]["error"]["code"], 190);
    // The other pages keep sending.
    let to_b = message_to("page", PAGE_B, "u-b190", "m.190b", "hi", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &to_b).await.status, 200);
    assert_eq!(
        wait_for_sends_to(&app, PAGE_B, 1).await[0].status,
        200,
        "page B is not stopped"
    );
    // Page A is stopped: its next reply waits, no call is made with the revoked token.
    let again = message_to("page", PAGE_A, "u-190", "m.190c", "second", 2_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &again).await.status, 200);
    app.wait_for_conversation("u-190", |doc| outbound(doc).len() == 2)
        .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sends_to(&app, PAGE_A).len(), 1, "no call while stopped");

    rewrite(&setup.pages, &pages_toml("token-a-new"));
    assert_eq!(
        app.admin("POST", "/admin/pages/reload", "").await.status,
        200
    );
    let sends = wait_for_sends_to(&app, PAGE_A, 2).await;
    assert!(sends[1].is_authorized_by("token-a-new", MAIN_SECRET));
    assert_eq!(sends[1].body["message"]["text"], "second");
    app.wait_for_conversation("u-190", |doc| outbound(doc)[1]["status"] == "sent")
        .await;
}

/// A user forgotten while their reply waits for the page's new token gets nothing once
/// the token comes: the forget drops the reply the sender was holding back.
#[actix_web::test]
async fn a_user_forgotten_while_their_page_is_stopped_gets_nothing_after_the_new_token() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    app.graph.revoke("token-a");
    let first = message_to("page", PAGE_A, "u-f1", "m.f1", "first", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &first).await.status, 200);
    app.wait_for_first_reply("u-f1", "failed").await;
    let held = message_to("page", PAGE_A, "u-f2", "m.f2", "held", 1_001);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &held).await.status, 200);
    app.wait_for_first_reply("u-f2", "queued").await;
    // The sender has it in hand, held back while the page is stopped.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let forgotten = app.admin("DELETE", "/admin/conversations/u-f2", "").await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.body);

    rewrite(&setup.pages, &pages_toml("token-a-new"));
    assert_eq!(
        app.admin("POST", "/admin/pages/reload", "").await.status,
        200
    );
    // A later user of the page is answered with the new token: the page resumed.
    let later = message_to("page", PAGE_A, "u-f3", "m.f3", "later", 1_002);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &later).await.status, 200);
    app.wait_for_first_reply("u-f3", "sent").await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let recipients: Vec<String> = sends_to(&app, PAGE_A)
        .iter()
        .map(|call| {
            call.body["recipient"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        recipients,
        vec!["u-f1", "u-f3"],
        "the rejected call, the later user's reply, and nothing for the forgotten user"
    );
}

#[actix_web::test]
async fn a_rotation_under_load_loses_no_reply_and_later_sends_use_the_new_token() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    let users = 40;
    let post_round = |round: i64| {
        let app = &app;
        async move {
            let posts = (0..users).map(|user| async move {
                let body = message_to(
                    "page",
                    PAGE_A,
                    &format!("load-{user}"),
                    &format!("m.load.{round}.{user}"),
                    &format!("r{round}"),
                    round * 1_000 + user,
                );
                post_signed_by(app, MAIN_SECRET, &body).await.status
            });
            futures_util::future::join_all(posts).await
        }
    };
    let rotate = async {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        rewrite(&setup.pages, &pages_toml("token-a-rotated"));
        app.admin("POST", "/admin/pages/reload", "").await.status
    };
    let (statuses, reloaded) = tokio::join!(post_round(1), rotate);
    assert_eq!(reloaded, 200);
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let after = post_round(2).await;
    assert!(after.iter().all(|status| *status == 200));

    let sends = wait_for_sends_to(&app, PAGE_A, 2 * users as usize).await;
    assert_eq!(
        sends.len(),
        2 * users as usize,
        "each message answered once"
    );
    assert!(sends.iter().all(|send| send.status == 200));
    for send in sends
        .iter()
        .filter(|send| send.body["message"]["text"] == "r2")
    {
        assert!(
            send.is_authorized_by("token-a-rotated", MAIN_SECRET),
            "{send:?}"
        );
    }
    assert!(sends
        .iter()
        .all(|send| send.is_authorized_by("token-a", MAIN_SECRET)
            || send.is_authorized_by("token-a-rotated", MAIN_SECRET)));
}

#[actix_web::test]
async fn instagram_takes_no_text_over_1000_characters_and_its_seen_moves_the_read_watermark() {
    let setup = setup("token-a");
    let app = spawn(&setup).await;
    let long = "x".repeat(1_500);
    let to_ig = message_to("instagram", INSTAGRAM, "ig-long", "m.igl", &long, 1_000);
    assert_eq!(post_signed_by(&app, OTHER_SECRET, &to_ig).await.status, 200);
    // The turn knows its channel: the echo flow's reply is refused as it is built.
    let doc = app
        .wait_for_conversation("ig-long", |doc| doc["transcript"][0]["status"] == "failed")
        .await;
    let error = doc["transcript"][0]["error"]["message"].to_string();
    assert!(error.contains("Instagram allows at most 1000"), "{error}");
    assert!(outbound(&doc).is_empty());
    // The same text on Messenger is within its 2,000 characters and goes out.
    let to_a = message_to("page", PAGE_A, "fb-long", "m.fbl", &long, 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &to_a).await.status, 200);
    app.wait_for_first_reply("fb-long", "sent").await;
    assert!(sends_to(&app, INSTAGRAM).is_empty());

    let hello = message_to("instagram", INSTAGRAM, "ig-seen", "m.igs", "hi", 2_000);
    assert_eq!(post_signed_by(&app, OTHER_SECRET, &hello).await.status, 200);
    app.wait_for_first_reply("ig-seen", "sent").await;
    // Instagram folds echoes into `messages`: the echo links to its reply by metadata.
    let sent = &sends_to(&app, INSTAGRAM)[0];
    let echo =
        json!({"object": "instagram", "entry": [{"id": INSTAGRAM, "time": 3_000, "messaging": [{
            "sender": {"id": INSTAGRAM}, "recipient": {"id": "ig-seen"}, "timestamp": 3_000,
            "message": {"mid": "ig_echo_1", "is_echo": true, "text": "hi",
                        "metadata": sent.body["message"]["metadata"]}
        }]}]})
        .to_string();
    assert_eq!(post_signed_by(&app, OTHER_SECRET, &echo).await.status, 200);
    let doc = app
        .wait_for_conversation("ig-seen", |doc| outbound(doc)[0]["timestamp"] == 3_000)
        .await;
    assert_eq!(
        outbound(&doc).len(),
        1,
        "the echo is its reply, not a new message"
    );
    let seen_at = now_ms() + 5_000;
    let seen =
        json!({"object": "instagram", "entry": [{"id": INSTAGRAM, "time": seen_at, "messaging": [{
            "sender": {"id": "ig-seen"}, "recipient": {"id": INSTAGRAM}, "timestamp": seen_at,
            "read": {"mid": "m_mock_1"}
        }]}]})
        .to_string();
    assert_eq!(post_signed_by(&app, OTHER_SECRET, &seen).await.status, 200);
    let doc = app
        .wait_for_conversation("ig-seen", |doc| outbound(doc)[0]["status"] == "read")
        .await;
    assert_eq!(doc["read_watermark"], seen_at);
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// Replies with a text too long for Instagram through `Turn::reply`, which does not check
/// the channel: the engine records it failed instead of sending it.
struct LongWinded;

impl colloquy::Flow for LongWinded {
    type State = ();

    async fn handle(
        &self,
        _: &colloquy::event::InboundEvent,
        turn: &mut colloquy::Turn<()>,
    ) -> Result<(), colloquy::FlowError> {
        turn.reply(colloquy::Reply::text("z".repeat(1_200)).unwrap());
        turn.reply(colloquy::Reply::text("short").unwrap());
        Ok(())
    }
}

#[actix_web::test]
async fn a_reply_queued_without_the_channel_check_is_recorded_failed_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages.toml");
    std::fs::write(
        &pages,
        format!(
            "[apps.main]\nsecret = \"{MAIN_SECRET}\"\nverify_token = \"v\"\n\n\
             [[pages]]\nid = \"{INSTAGRAM}\"\napp = \"main\"\naccess_token = \"t\"\n\
             channel = \"instagram\"\n"
        ),
    )
    .unwrap();
    let app = spawn_app_on(
        MockGraph::start(),
        &dir.path().join("db"),
        Options {
            pages_file: Some(pages),
            flow: colloquy::FlowHandle::new(LongWinded),
            ..Options::default()
        },
    )
    .await;
    let hello = message_to("instagram", INSTAGRAM, "ig-lw", "m.lw", "hi", 1_000);
    assert_eq!(post_signed_by(&app, MAIN_SECRET, &hello).await.status, 200);
    let doc = app
        .wait_for_conversation("ig-lw", |doc| {
            outbound(doc).len() == 2 && outbound(doc)[1]["status"] == "sent"
        })
        .await;
    let replies = outbound(&doc);
    assert_eq!(replies[0]["status"], "failed");
    let error = replies[0]["error"]["message"].to_string();
    assert!(error.contains("Instagram allows at most 1000"), "{error}");
    let sends = sends_to(&app, INSTAGRAM);
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body["message"]["text"], "short");
}

/// `SIGHUP` to a running `colloquy serve` re-reads its pages file: a page added to the
/// file is served without a restart, and a broken file afterwards changes nothing.
#[test]
fn sighup_reloads_the_pages_file_of_a_running_server() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let setup = setup("token-a");
    let one_page = format!(
        "[apps.main]\nsecret = \"{MAIN_SECRET}\"\nverify_token = \"v\"\n\n\
         [[pages]]\nid = \"{PAGE_A}\"\napp = \"main\"\naccess_token = \"token-a\"\n"
    );
    rewrite(&setup.pages, &one_page);
    let mut server = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COLLOQUY_PAGES", &setup.pages)
        .env("COLLOQUY_DATA", &setup.data_dir)
        .env("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut log = BufReader::new(server.stderr.take().unwrap()).lines();
    let admin = loop {
        let line = log
            .next()
            .expect("the server logs where it listens")
            .unwrap();
        if let Some((_, rest)) = line.split_once("(admin on ") {
            break rest.split(',').next().unwrap().to_string();
        }
    };
    let lines = std::thread::spawn(move || log.map_while(Result::ok).collect::<Vec<_>>());
    let pages_served = || -> usize {
        use std::io::{Read, Write};
        let address = admin.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /admin/pages HTTP/1.0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let listed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        listed["pages"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(pages_served(), 1);
    // The shell's own `kill`: no procps needed.
    let signal = |name: &str, pid: u32| {
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -{name} {pid}")])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let hangup = |pid: u32| signal("HUP", pid);

    rewrite(&setup.pages, &pages_toml("token-a"));
    hangup(server.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pages_served() != 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        pages_served(),
        3,
        "the three pages of the new file are served"
    );

    rewrite(&setup.pages, "not = [toml");
    hangup(server.id());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pages_served(),
        3,
        "a broken file keeps the running configuration"
    );

    signal("TERM", server.id());
    assert!(server.wait().unwrap().success());
    let log = lines.join().unwrap().join("\n");
    assert!(
        log.contains("SIGHUP: pages file reloaded: 3 page(s)"),
        "{log}"
    );
    assert!(log.contains("SIGHUP: pages file not reloaded"), "{log}");
    for secret in [MAIN_SECRET, OTHER_SECRET, "token-a", "token-b", "token-ig"] {
        assert!(!log.contains(secret), "{secret} logged");
    }
}

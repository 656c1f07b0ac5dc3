//! `GET /admin/events`, the Server-Sent Events stream of conversation changes, through
//! real HTTP: filtered by user, resumed from `Last-Event-ID` without losing or repeating
//! a change, and a resync for an id it can no longer serve.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

/// An open event stream and what it has sent so far.
struct Stream {
    response: futures_util::stream::LocalBoxStream<
        'static,
        Result<actix_web::web::Bytes, awc::error::PayloadError>,
    >,
    text: String,
}

async fn open(app: &TestApp, query: &str, last_event_id: Option<&str>) -> Stream {
    let mut request = awc::Client::new()
        .get(format!("{}/admin/events{query}", app.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(60));
    if let Some(id) = last_event_id {
        request = request.insert_header(("Last-Event-ID", id));
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut stream = Stream {
        response: response.boxed_local(),
        text: String::new(),
    };
    stream.read_until(|text| text.contains(": connected")).await;
    stream
}

/// One parsed event: its id, type and data.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    kind: String,
    data: Value,
}

impl Stream {
    async fn read_until(&mut self, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !done(&self.text) {
            let chunk = tokio::time::timeout_at(deadline, self.response.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; the stream so far:\n{}", self.text))
                .expect("the stream stays open")
                .expect("a chunk");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    fn events(&self) -> Vec<Event> {
        parse(&self.text)
    }

    /// Reads until a change event for `psid` whose entries include `entry`.
    async fn wait_for_entry(&mut self, psid: &str, entry: u64) -> String {
        let wanted = |text: &str| {
            parse(text).iter().any(|e| {
                e.data["psid"] == psid
                    && e.data["entries"]
                        .as_array()
                        .is_some_and(|entries| entries.contains(&entry.into()))
            })
        };
        self.read_until(wanted).await;
        self.events()
            .into_iter()
            .rfind(|e| e.data["psid"] == psid)
            .and_then(|e| e.id)
            .expect("change events have ids")
    }
}

/// The events of a stream's text (comments and the `retry` line are no events).
fn parse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .map(str::to_string)
            };
            Some(Event {
                kind: field("event")?,
                id: field("id"),
                data: serde_json::from_str(&field("data")?).ok()?,
            })
        })
        .collect()
}

#[actix_web::test]
async fn the_stream_sends_a_users_changes_and_resumes_from_the_last_event_id() {
    let app = spawn_app().await;
    let mut stream = open(&app, "?psid=17001", None).await;

    app.sends_text("17002", "m.17002.0", "someone else", 1_000)
        .await;
    app.sends_text("17001", "m.17001.0", "hello", 1_000).await;
    // The user's message (entry 0) and the flow's reply (entry 1), then its status.
    let last_seen = stream.wait_for_entry("17001", 1).await;
    app.wait_for_first_reply("17001", "sent").await;
    assert!(
        stream.events().iter().all(|e| e.data["psid"] == "17001"),
        "the filter lets only 17001's changes through: {}",
        stream.text
    );
    drop(stream);

    // Away: the user writes again, and the reply goes out.
    app.sends_text("17001", "m.17001.1", "still there?", 2_000)
        .await;
    app.wait_for_conversation("17001", |doc| {
        outbound(doc).len() == 2 && outbound(doc)[1]["status"] == "sent"
    })
    .await;

    let mut resumed = open(&app, "?psid=17001", Some(&last_seen)).await;
    resumed.wait_for_entry("17001", 3).await;
    let events = resumed.events();
    let last: u64 = last_seen.parse().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.kind == "change" && e.id.as_ref().unwrap().parse::<u64>().unwrap() > last),
        "only what came after {last_seen}: {}",
        resumed.text
    );
    let entries: Vec<u64> = events
        .iter()
        .flat_map(|e| e.data["entries"].as_array().unwrap().clone())
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(entries.contains(&2) && entries.contains(&3), "{entries:?}");
    assert!(
        !entries.contains(&0),
        "nothing before the last id is repeated"
    );
}

#[actix_web::test]
async fn an_id_the_server_no_longer_has_asks_the_client_to_resync() {
    let app = spawn_app().await;
    // An id from before this server started.
    let mut stream = open(&app, "", Some("42")).await;
    stream
        .read_until(|text| text.contains("event: resync"))
        .await;
    app.sends_text("17003", "m.17003.0", "hello", 1_000).await;
    stream.wait_for_entry("17003", 0).await;

    let refused = awc::Client::new()
        .get(format!("{}/admin/events", app.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .insert_header(("Last-Event-ID", "yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let anonymous = awc::Client::new()
        .get(format!("{}/admin/events", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[actix_web::test]
async fn a_shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let graph = MockGraph::start();
    let data_dir = dir.path().join("db");
    init_logging();
    let mut config = test_config(&graph, &data_dir, &Options::default());
    // A graceful stop would wait this long for a stream nobody ends.
    config.shutdown_timeout = Duration::from_secs(600);
    let running = colloquy::start(config, Options::default().flow)
        .await
        .unwrap();
    let admin_url = format!("http://{}", running.admin_addr());
    let mut request = awc::Client::new()
        .get(format!("{admin_url}/admin/events"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    let first = request.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(": connected"));

    tokio::time::timeout(Duration::from_secs(120), running.stop())
        .await
        .expect("the stop does not wait out the 600 s graceful timeout for the stream")
        .unwrap();
    assert!(request.next().await.is_none(), "the stream ended");
}

//! The webhook steered between the engine's own thread and the HTTP workers
//! (`COLLOQUY_WORKERS` unset): new connections go to the side that takes them now, a
//! response on the other side ends its connection, and the engine's thread moves the side
//! by measuring itself.

use std::time::Duration;

use colloquy::config::SteeringSettings;
use colloquy::test_support::WebhookSide;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Steering that never moves by itself: the test moves the side.
fn held_still() -> SteeringSettings {
    SteeringSettings {
        busy_at: f64::INFINITY,
        behind_at: Duration::MAX,
        calm_below: f64::NEG_INFINITY,
        ..SteeringSettings::default()
    }
}

/// A server whose webhook is steered, by the test alone.
async fn spawn_held_still() -> TestApp {
    spawn_app_with(Options {
        steering: Some(held_still()),
        ..Options::default()
    })
    .await
}

/// A response read off a raw kept-alive connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The server said `Connection: close`.
    closes: bool,
}

/// `GET /healthz` on `stream`, reading the whole response (so the connection can carry
/// the next request).
async fn get_healthz(stream: &mut TcpStream) -> Answer {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: colloquy\r\n\r\n")
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the server closed before answering");
        read.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while read.len() < head_end + length {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the server closed in the middle of the body");
        read.extend_from_slice(&buffer[..n]);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    Answer {
        status,
        closes: head.contains("connection: close"),
    }
}

/// The server ends `stream` (after a response that said it would).
async fn ends(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = actix_rt::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the server ends the connection");
    assert!(read.is_ok_and(|n| n == 0), "nothing more after the answer");
}

/// A new connection served by the side that takes connections now: it is answered and
/// kept alive. Right after a move, the side handing over may still take a connection or
/// two until its accept loop has seen the move (it then answers with `Connection: close`),
/// so a few are tried.
async fn connection_kept_by_the_side_in_charge(app: &TestApp) -> TcpStream {
    let address = app.base_url.trim_start_matches("http://").to_string();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let answer = get_healthz(&mut stream).await;
        assert_eq!(answer.status, 200);
        if !answer.closes {
            return stream;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("every new connection was told to close: no side takes connections");
}

/// Once the side has settled, every new connection goes to `thread` and none to `other`.
async fn more_connections_all_kept_by(app: &TestApp, thread: &str, other: &str) {
    let address = app.base_url.trim_start_matches("http://").to_string();
    let (before, other_before) = (
        connections_of(app, thread).await,
        connections_of(app, other).await,
    );
    let mut kept = Vec::new();
    for n in 0..10 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let answer = get_healthz(&mut stream).await;
        assert!(!answer.closes, "connection {n} went to the {other}");
        kept.push(stream);
    }
    assert_eq!(connections_of(app, thread).await, before + 10.0);
    assert_eq!(connections_of(app, other).await, other_before);
}

/// `colloquy_webhook_moves_total{to}` in `/metrics` text.
fn moves(text: &str, to: &str) -> f64 {
    metric_value(
        text,
        &format!("colloquy_webhook_moves_total{{to=\"{to}\"}}"),
    )
}

async fn connections_of(app: &TestApp, thread: &str) -> f64 {
    let name = format!("colloquy_webhook_connections_total{{thread=\"{thread}\"}}");
    metric_value(&metrics_text(app).await, &name)
}

/// The engine's thread takes the connections first; moved to the workers, its kept-alive
/// connection is ended after its next response and a new connection is served (and kept)
/// by a worker; moved back, the same the other way round. `/metrics` says where new
/// connections go and who accepted each.
#[actix_rt::test]
async fn connections_follow_the_side_and_the_side_left_ends_its_own_after_a_response() {
    let app = spawn_held_still().await;
    let on_engine = |text: &str| metric_value(text, "colloquy_webhook_on_engine_thread");

    let mut first = connection_kept_by_the_side_in_charge(&app).await;
    assert_eq!(on_engine(&metrics_text(&app).await), 1.0);
    assert!(connections_of(&app, "engine").await >= 1.0);
    assert!(!get_healthz(&mut first).await.closes, "kept alive");

    assert!(app.app.move_webhook(WebhookSide::Workers).await);
    let text = metrics_text(&app).await;
    assert_eq!(on_engine(&text), 0.0);
    assert_eq!(moves(&text, "workers"), 1.0);
    let answer = get_healthz(&mut first).await;
    assert_eq!(answer.status, 200, "answered though the side moved");
    assert!(answer.closes, "the engine's connection ends: {answer:?}");
    ends(&mut first).await;
    let engine_before = connections_of(&app, "engine").await;
    let mut second = connection_kept_by_the_side_in_charge(&app).await;
    assert!(connections_of(&app, "workers").await >= 1.0);
    assert_eq!(
        connections_of(&app, "engine").await,
        engine_before,
        "the engine's thread accepts nothing while the workers take connections"
    );
    assert!(!get_healthz(&mut second).await.closes, "kept alive");
    more_connections_all_kept_by(&app, "workers", "engine").await;

    assert!(app.app.move_webhook(WebhookSide::Engine).await);
    let answer = get_healthz(&mut second).await;
    assert!(answer.closes, "the worker's connection ends: {answer:?}");
    ends(&mut second).await;
    let workers_before = connections_of(&app, "workers").await;
    let mut third = connection_kept_by_the_side_in_charge(&app).await;
    assert!(connections_of(&app, "engine").await > engine_before);
    assert!(!get_healthz(&mut third).await.closes);
    more_connections_all_kept_by(&app, "engine", "workers").await;
    // The workers may have taken the tries that closed, never the kept one.
    assert!(connections_of(&app, "workers").await >= workers_before);
    let text = metrics_text(&app).await;
    assert_eq!(on_engine(&text), 1.0);
    assert_eq!(moves(&text, "engine"), 1.0);
    app.app.stop().await.unwrap();
}

/// Steering by the engine thread's own measurements, with thresholds every sample
/// crosses: busy at once (to the workers), then calm at once (back), again and again.
/// Messages posted all the while are each acknowledged and answered once, whichever side
/// took them.
#[actix_rt::test]
async fn the_engines_thread_moves_the_webhook_by_its_own_measure_and_no_message_is_lost() {
    let app = spawn_app_with(Options {
        steering: Some(SteeringSettings {
            every: Duration::from_millis(20),
            busy_at: 0.0,
            busy_samples: 1,
            calm_below: f64::INFINITY,
            calm_for: Duration::from_millis(40),
            ..SteeringSettings::default()
        }),
        ..Options::default()
    })
    .await;
    let messages = 30;
    for n in 0..messages {
        let psid = format!("{}", 7000 + n);
        let answer = app
            .post_signed(&text_message(
                &psid,
                &format!("m.steer{n}"),
                "hi",
                1_700_000_000_000 + n,
            ))
            .await;
        assert_eq!(answer.status, 200, "message {n}: {}", answer.body);
        actix_rt::time::sleep(Duration::from_millis(15)).await;
    }
    let sends = app.graph.wait_for_sends(messages as usize).await;
    let mut recipients: Vec<String> = sends
        .iter()
        .map(|send| send.body["recipient"]["id"].as_str().unwrap().to_string())
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), messages as usize, "one reply per message");
    let text = metrics_text(&app).await;
    assert!(
        moves(&text, "workers") >= 2.0,
        "moved to the workers: {text}"
    );
    assert!(moves(&text, "engine") >= 1.0, "moved back to the engine");
    app.app.stop().await.unwrap();
}

/// A stop while the workers take the connections (and the engine's thread keeps one it
/// accepted before the move): both sides stop, each kept-alive connection is closed, and
/// the app's stop completes.
#[actix_rt::test]
async fn a_stop_with_connections_on_both_sides_closes_them_all_and_completes() {
    let app = spawn_held_still().await;
    let mut on_engine = connection_kept_by_the_side_in_charge(&app).await;
    assert!(app.app.move_webhook(WebhookSide::Workers).await);
    let mut on_workers = connection_kept_by_the_side_in_charge(&app).await;
    assert!(connections_of(&app, "workers").await >= 1.0);
    actix_rt::time::timeout(Duration::from_secs(60), app.app.stop())
        .await
        .expect("the stop completes")
        .unwrap();
    ends(&mut on_engine).await;
    ends(&mut on_workers).await;
}

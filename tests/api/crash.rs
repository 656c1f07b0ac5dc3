//! Durability under SIGKILL: the real binary is killed at random moments while many
//! senders post to it, restarted on the same data directory, and finally checked against
//! the mock Graph API and the store itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colloquy::test_support::sign_sha256;
use colloquy::test_support::{Direction, Store};
use rand::Rng;

use crate::helpers::*;

const SENDERS: usize = 12;
const KILLS: usize = 4;
/// Odd senders post for a partner user too (see `drive`).
const CONVERSATIONS: usize = SENDERS + SENDERS / 2;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server process of the test, and where its log goes.
struct Server {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
}

/// Starts the server on ports picked free and waits until it answers the handshake. A
/// port can be taken between the pick and the server's bind (another test's connection
/// gets it as its local port), and then the server exits at once, saying so: it is
/// started again on other ports, up to three times. A server that exits before it is
/// ready for any other reason fails the test. Its warnings go to a file beside the
/// data, quoted when it fails.
async fn start_ready(data: &Path, graph: &MockGraph) -> Server {
    let log = data.with_extension("log");
    for _ in 0..3 {
        let (port, admin_port) = (free_port(), free_port());
        let mut child = start_server(port, admin_port, data, graph, &log);
        if wait_ready(port, &mut child, &log).await {
            return Server {
                child,
                port,
                admin_port,
                log,
            };
        }
        let said = log_of(&log);
        assert!(
            said.contains("Address already in use"),
            "the server exited before it was ready:\n{said}"
        );
    }
    panic!("no free ports in three tries:\n{}", log_of(&log));
}

fn log_of(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"))
}

fn start_server(port: u16, admin_port: u16, data: &Path, graph: &MockGraph, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the server's log file");
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["serve", "--flow", "echo"])
        .env("MESSENGER_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("MESSENGER_APP_SECRET", APP_SECRET)
        .env("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN)
        .env("MESSENGER_GRAPH_URL", &graph.url)
        .env("COLLOQUY_BIND", format!("127.0.0.1:{port}"))
        .env("COLLOQUY_ADMIN_BIND", format!("127.0.0.1:{admin_port}"))
        .env("COLLOQUY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("COLLOQUY_DATA", data)
        .env("COLLOQUY_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the server starts")
}

/// Polls the admin listener's `/metrics` until no reply is pending.
async fn wait_until_nothing_is_owed(admin_port: u16) {
    let started = Instant::now();
    loop {
        let response = awc::Client::new()
            .get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .send()
            .await;
        if let Ok(mut response) = response {
            let body = response.body().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let pending = text
                .lines()
                .find_map(|line| line.strip_prefix("colloquy_pending_replies "))
                .and_then(|value| value.trim().parse::<f64>().ok());
            if pending == Some(0.0) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replies still pending after 30 s"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server answered the handshake; `false` when it exited first.
async fn wait_ready(port: u16, server: &mut Child, log: &Path) -> bool {
    let url = format!(
        "http://127.0.0.1:{port}/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"
    );
    let started = Instant::now();
    loop {
        if let Ok(response) = awc::Client::new().get(&url).send().await {
            if response.status() == 200 {
                return true;
            }
        }
        if server.try_wait().expect("the server's status").is_some() {
            return false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server never became ready:\n{}",
            log_of(log)
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts messages from one sender until the server goes away; records the acked ones.
/// Odd senders put a message from a partner user in each POST too, so those POSTs are
/// journalled as one item shared by two conversations.
async fn drive(port: u16, sender: usize, round: usize, acked: Arc<Mutex<Vec<(String, String)>>>) {
    let psid = format!("{}", 20_000 + sender);
    let partner = (sender % 2 == 1).then(|| format!("{}", 30_000 + sender));
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    for n in 0.. {
        let text = format!("s{sender}-r{round}-n{n}");
        let timestamp = 1_700_000_000_000i64 + (round * 1_000_000 + n) as i64;
        let mut messages = vec![(psid.clone(), text)];
        if let Some(partner) = &partner {
            messages.push((partner.clone(), format!("s{sender}-r{round}-n{n}-p")));
        }
        let events: Vec<serde_json::Value> = messages
            .iter()
            .map(|(from, text)| message_event(from, &format!("m.{text}"), text, timestamp))
            .collect();
        let body = envelope(vec![
            serde_json::json!({"id": PAGE_ID, "time": timestamp, "messaging": events}),
        ]);
        let signature = sign_sha256(APP_SECRET.as_bytes(), body.as_bytes());
        let sent = client
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .insert_header(("X-Hub-Signature-256", signature))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await;
        match sent {
            Ok(response) if response.status() == 200 => {
                acked.lock().unwrap().extend(messages);
            }
            Ok(_) => actix_rt::time::sleep(Duration::from_millis(5)).await,
            Err(_) => return,
        }
    }
}

fn sends_by_message(graph: &MockGraph) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    for send in graph.sends() {
        let key = (
            send.body["recipient"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            send.body["message"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[test]
fn acknowledged_messages_survive_repeated_sigkill_and_get_exactly_their_replies() {
    init_logging();
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::thread_rng();

    actix_rt::System::new().block_on(async {
        for round in 0..KILLS {
            let mut server = start_ready(&data, &graph).await;
            let port = server.port;
            let drivers: Vec<_> = (0..SENDERS)
                .map(|sender| actix_rt::spawn(drive(port, sender, round, acked.clone())))
                .collect();
            actix_rt::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
            server.child.kill().expect("SIGKILL");
            server.child.wait().unwrap();
            for driver in drivers {
                driver.await.unwrap();
            }
        }

        // A last start recovers everything; then a graceful stop.
        let mut server = start_ready(&data, &graph).await;
        let admin_port = server.admin_port;
        let acked: Vec<(String, String)> = acked.lock().unwrap().clone();
        assert!(acked.len() > SENDERS * KILLS, "the load was too light to mean anything: {}", acked.len());
        wait_until("a reply to every acknowledged message", || {
            let sends = sends_by_message(&graph);
            acked.iter().all(|key| sends.contains_key(key)).then_some(())
        })
        .await;
        // A reply sent before a kill may still be owed in the outbox (its outcome was not
        // recorded), to be sent again: wait until the server owes nothing.
        wait_until_nothing_is_owed(admin_port).await;
        let status = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = server.child.wait().unwrap();
        assert!(
            exit.success(),
            "graceful shutdown must exit 0, got {exit:?}:\n{}",
            log_of(&server.log)
        );

        let sends = sends_by_message(&graph);
        let duplicates: usize = sends.values().map(|n| n - 1).sum();
        // Only a send in flight at a kill can be repeated: at most one per conversation
        // per kill.
        assert!(
            duplicates <= CONVERSATIONS * KILLS,
            "{duplicates} duplicate replies for {} acknowledged messages",
            acked.len()
        );
        eprintln!(
            "crash test: {} acked, {} replies, {duplicates} duplicates (sends in flight at {KILLS} kills)",
            acked.len(),
            sends.values().sum::<usize>()
        );
    });

    // The store agrees: nothing pending, every inbound message handled once and answered.
    let store = Store::open(&data).expect("the stopped server released the store");
    assert!(
        store.pending_journal().unwrap().is_empty(),
        "unhandled journal items"
    );
    assert!(store.pending_outbox().unwrap().is_empty(), "unsent replies");
    let acked = acked.lock().unwrap().clone();
    for record in store.conversations().unwrap() {
        let transcript = store.transcript(&record.key()).unwrap();
        let inbound: Vec<&str> = transcript
            .iter()
            .filter(|(_, e)| e.direction == Direction::In)
            .filter_map(|(_, e)| e.text.as_deref())
            .collect();
        let outbound: Vec<&str> = transcript
            .iter()
            .filter(|(_, e)| e.direction == Direction::Out)
            .filter_map(|(_, e)| e.text.as_deref())
            .collect();
        let mut unique = inbound.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            inbound.len(),
            "{}: a message was handled twice",
            record.psid
        );
        assert_eq!(
            inbound, outbound,
            "{}: each message has its one echo reply, in order",
            record.psid
        );
        for (psid, text) in acked.iter().filter(|(psid, _)| *psid == record.psid) {
            assert!(
                inbound.contains(&text.as_str()),
                "{psid}: acknowledged {text} is missing"
            );
        }
    }
}

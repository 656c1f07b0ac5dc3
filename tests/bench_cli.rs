//! `colloquy-bench` against a real `colloquy serve`, both run as the built binaries:
//! a short closed-loop run checks every reply, and the bench notices wrong replies.
//! Asserts correctness only, never a speed.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;

const APP_SECRET: &str = "bench-test-secret";
const VERIFY_TOKEN: &str = "bench-test-verify";
/// Bound of every wait: the server starting, the bench finishing.
const PATIENCE: Duration = Duration::from_secs(60);

/// `colloquy serve` on free ports, its replies going to a mock at `graph_port`.
struct Server {
    child: Child,
    port: u16,
    graph_port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(flow: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, graph_port) = (free_port(), free_port());
        let log = File::create(dir.path().join("server.log")).expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .args(["serve", "--flow", flow])
            .env("MESSENGER_VERIFY_TOKEN", VERIFY_TOKEN)
            .env("MESSENGER_APP_SECRET", APP_SECRET)
            .env("MESSENGER_ACCESS_TOKEN", "bench-test-page-token")
            .env(
                "MESSENGER_GRAPH_URL",
                format!("http://127.0.0.1:{graph_port}/v21.0"),
            )
            .env("COLLOQUY_BIND", format!("127.0.0.1:{port}"))
            // The operator listener (where the server has one) must not collide either.
            .env("COLLOQUY_ADMIN_BIND", format!("127.0.0.1:{}", free_port()))
            .env("COLLOQUY_DATA", dir.path().join("db"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("colloquy starts");
        let mut server = Server {
            child,
            port,
            graph_port,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    /// Polls the subscription handshake until it answers with the challenge.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("server status") {
                panic!("colloquy serve exited with {status}: {}", self.log());
            }
            if handshake(self.port).is_some_and(|body| body.ends_with("\r\n\r\n4711")) {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "colloquy serve never answered the handshake: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `colloquy-bench` against this server; returns its exit status, stdout, stderr.
    fn bench(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let dir = self._dir.path();
        let (out, err) = (dir.join("bench.out"), dir.join("bench.err"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy-bench"))
            .args([
                "--target",
                &format!("http://127.0.0.1:{}/webhook", self.port),
                "--graph-bind",
                &format!("127.0.0.1:{}", self.graph_port),
                "--pid",
                &self.child.id().to_string(),
            ])
            .args(args)
            .env("MESSENGER_APP_SECRET", APP_SECRET)
            .stdout(File::create(&out).expect("bench stdout"))
            .stderr(File::create(&err).expect("bench stderr"))
            .spawn()
            .expect("colloquy-bench starts");
        let status = wait_bounded(&mut child, "colloquy-bench");
        (status, read(&out), read(&err))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn handshake(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4711 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.1 200").then_some(answer)
}

fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The one JSON line the bench prints with `--json`.
fn summary(stdout: &str, stderr: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {stdout:?}; stderr: {stderr}"));
    serde_json::from_str(line).expect("the summary is JSON")
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing from {summary}"))
}

#[test]
fn a_short_bench_against_the_echo_flow_gets_every_reply_exactly_once() {
    let server = Server::start("echo");

    let (status, stdout, stderr) = server.bench(&[
        "--duration",
        "2",
        "--warmup",
        "0",
        "--senders",
        "4",
        "--json",
    ]);

    let summary = summary(&stdout, &stderr);
    assert!(status.success(), "bench failed ({status}): {stderr}");
    assert!(count(&summary, "events") > 0, "{summary}");
    assert_eq!(
        count(&summary, "replies"),
        count(&summary, "events"),
        "{summary}"
    );
    assert_eq!(count(&summary, "missing"), 0, "{summary}");
    assert_eq!(count(&summary, "duplicates"), 0, "{summary}");
    assert_eq!(count(&summary, "unexpected"), 0, "{summary}");
    assert_eq!(summary["ok"], Value::Bool(true), "{summary}");
    assert!(
        summary["server"]["rss_peak_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
}

#[test]
fn replies_that_do_not_match_what_was_sent_fail_the_run_loudly() {
    // The bench expects the thanks text; the echo flow answers with the message itself.
    let server = Server::start("echo");

    let (status, stdout, stderr) = server.bench(&[
        "--duration",
        "1",
        "--warmup",
        "0",
        "--senders",
        "2",
        "--grace",
        "1",
        "--flow",
        "thanks",
        "--json",
    ]);

    let summary = summary(&stdout, &stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(count(&summary, "unexpected") > 0, "{summary}");
    assert_eq!(
        count(&summary, "missing"),
        count(&summary, "messages"),
        "{summary}"
    );
    assert!(stderr.contains("REPLIES WRONG"), "{stderr}");
}

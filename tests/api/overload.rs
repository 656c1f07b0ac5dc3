//! Overload: the live-actor bound holds when more senders than it write at once, and
//! admission refuses (503 + `Retry-After`) while the engine is too far behind, then takes
//! the redelivery once it caught up. Every test waits for outcomes; none asserts a speed.

use std::collections::HashMap;
use std::sync::Arc;

use colloquy::{Flow, FlowError, FlowHandle, Turn};
use futures_util::future::join_all;
use tokio::sync::Semaphore;

use crate::helpers::*;

/// Echoes each message's text once the test lets it through the gate, so the test decides
/// how long actors stay busy.
struct GatedEcho(Arc<Semaphore>);

impl Flow for GatedEcho {
    type State = ();

    async fn handle(
        &self,
        event: &colloquy::event::InboundEvent,
        turn: &mut Turn<()>,
    ) -> Result<(), FlowError> {
        let _permit = self
            .0
            .acquire()
            .await
            .map_err(|e| FlowError::failed(e.to_string()))?;
        turn.say(event.text().unwrap_or("?"))?;
        Ok(())
    }
}

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Twelve senders, two messages each, against a bound of three live actors that are all
/// busy (the flow is gated): the other conversations wait for a slot instead of getting
/// actors of their own. Opening the gate one event at a time, neither the supervisor's
/// count nor the `colloquy_live_conversations` gauge ever exceeds three, every message is
/// answered exactly once, and each sender's replies leave in the order it wrote.
#[actix_web::test]
async fn more_senders_than_the_live_bound_all_get_their_replies_in_order_and_the_bound_holds() {
    const BOUND: usize = 3;
    const SENDERS: usize = 12;
    let gate = Arc::new(Semaphore::new(0));
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(GatedEcho(gate.clone())),
        max_live_conversations: Some(BOUND),
        // The gate holds every event; admission by queue delay is another test's subject,
        // and on a loaded machine posting the 24 messages alone can take seconds.
        max_queue_delay_ms: Some(120_000),
        ..Options::default()
    })
    .await;

    let writes = (0..SENDERS).map(|s| {
        let app = &app;
        async move {
            let psid = format!("42{s:02}");
            app.sends_text(&psid, &format!("m.{s}.1"), &format!("{psid} first"), 1_000)
                .await;
            app.sends_text(&psid, &format!("m.{s}.2"), &format!("{psid} second"), 1_001)
                .await;
        }
    });
    join_all(writes).await;

    let mut most_live = 0;
    let mut most_gauge = 0;
    for released in 1..=SENDERS * 2 {
        gate.add_permits(1);
        // Wait until that event is answered, watching the bound all the while.
        wait_until(&format!("{released} replies"), || {
            (app.graph.sends().len() >= released).then_some(())
        })
        .await;
        most_live = most_live.max(app.app.live_conversations().await);
        let live = gauge(&app.metrics().await, "colloquy_live_conversations").unwrap_or(-1);
        assert!(live >= 0, "the live-conversation gauge is missing");
        most_gauge = most_gauge.max(live as usize);
        assert!(
            most_live <= BOUND && most_gauge <= BOUND,
            "live actors {most_live} / gauge {most_gauge} over the bound {BOUND}"
        );
    }

    let sends = app.graph.wait_for_sends(SENDERS * 2).await;
    let mut by_sender: HashMap<String, Vec<String>> = HashMap::new();
    for send in &sends {
        let to = send.body["recipient"]["id"].as_str().unwrap().to_string();
        let text = send.body["message"]["text"].as_str().unwrap().to_string();
        by_sender.entry(to).or_default().push(text);
    }
    assert_eq!(by_sender.len(), SENDERS);
    for (psid, texts) in &by_sender {
        assert_eq!(
            texts,
            &vec![format!("{psid} first"), format!("{psid} second")],
            "{psid}'s replies"
        );
    }
    assert!((1..=BOUND).contains(&most_live));
    assert!(app.app.live_conversations().await <= BOUND);
}

/// With the only conversation's event held, the oldest waiting event soon exceeds the
/// queue-delay bound: the webhook then answers 503 with `Retry-After`, stores nothing,
/// and every POST it did take is still answered. Once the held event is let through the
/// engine has caught up, so the refused message, redelivered, is taken and answered once.
#[actix_web::test]
async fn a_backlog_older_than_the_queue_delay_bound_is_refused_with_retry_after_then_taken_again() {
    let gate = Arc::new(Semaphore::new(0));
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(GatedEcho(gate.clone())),
        max_queue_delay_ms: Some(100),
        ..Options::default()
    })
    .await;
    app.sends_text("5000", "m.held", "held", 1_000).await;

    // Keep writing (each from a new sender) until the engine says it is too far behind.
    let mut taken = vec!["5000".to_string()];
    let mut n = 0;
    let (refused_psid, refused) = loop {
        n += 1;
        let psid = format!("50{n:02}");
        let body = text_message(&psid, &format!("m.{n}"), &psid, 1_000 + n);
        let answer = app.post_signed(&body).await;
        if answer.status == 503 {
            break (psid, answer);
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        taken.push(psid);
        assert!(
            n < 1_000,
            "the webhook never refused while the backlog grew old"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let retry_after: u64 = refused
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a 503 carries Retry-After in seconds");
    assert!(retry_after >= 1);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("overloaded"));
    assert!(
        app.conversation(&refused_psid).await.is_null(),
        "a refused POST stored nothing"
    );

    gate.add_permits(10_000);
    app.graph.wait_for_sends(taken.len()).await;
    let body = text_message(&refused_psid, &format!("m.{n}"), &refused_psid, 1_000 + n);
    let mut status = 503;
    for _ in 0..500 {
        status = app.post_signed(&body).await.status;
        if status != 503 {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "the engine never took the redelivery");

    let sends = app.graph.wait_for_sends(taken.len() + 1).await;
    taken.push(refused_psid);
    for psid in &taken {
        let replies = sends
            .iter()
            .filter(|s| s.body["recipient"]["id"] == psid.as_str())
            .count();
        assert_eq!(replies, 1, "{psid} got {replies} replies");
    }
}

/// A raw connection to the webhook that waits up to 20 s for what it reads.
fn connect(address: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads one HTTP answer's status line from a raw connection (its read timeout applies).
fn status_line(stream: &mut std::net::TcpStream) -> std::io::Result<String> {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// At most `COLLOQUY_MAX_CONNECTIONS` webhook connections per thread serving the webhook
/// are served at once (a flood of connections would otherwise each hold buffers in
/// memory); one more waits to be accepted. At its bound a thread ends each connection
/// after its response, so a waiting connection gets the slot even though the client keeps
/// its connections alive (kept-alive idle connections used to hold every slot until they
/// timed out). Served on the engine's own thread: one slot.
#[actix_rt::test]
async fn connections_beyond_the_bound_wait_and_get_the_slot_of_the_next_response() {
    connections_beyond_the_bound_wait_for_a_slot(0, 1).await;
}

/// The same with two HTTP workers of their own, one slot each.
#[actix_rt::test]
async fn connections_beyond_the_workers_bound_wait_and_get_the_slot_of_the_next_response() {
    connections_beyond_the_bound_wait_for_a_slot(2, 2).await;
}

async fn connections_beyond_the_bound_wait_for_a_slot(workers: usize, slots: usize) {
    use std::time::Duration;
    let app = spawn_app_with(Options {
        workers: Some(workers),
        max_connections: Some(1),
        ..Options::default()
    })
    .await;
    let address = app.base_url.trim_start_matches("http://").to_string();
    // Raw sockets block: on a thread of their own, so this test's runtime (which drives
    // the server's own tasks) keeps running.
    let probe = std::thread::spawn(move || probe_the_connection_bound(&address, slots));
    while !probe.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    probe.join().expect("the probe's assertions hold");
    app.app.stop().await.unwrap();
}

/// `slots` connections in the middle of a request fill every slot; one more is not
/// served. One request completes: its answer ends its connection (the client keeps it
/// open), and the waiting connection is served.
fn probe_the_connection_bound(address: &str, slots: usize) {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    let head = b"GET /healthz HTTP/1.1\r\nHost: colloquy\r\n";
    // Connections, each with a request not yet complete: every slot taken.
    let mut served: Vec<TcpStream> = (0..slots).map(|_| connect(address)).collect();
    for stream in served.iter_mut() {
        stream.write_all(head).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    // One more connection is only in the kernel's accept queue: its request gets no answer.
    let mut waiting = connect(address);
    waiting.write_all(head).unwrap();
    waiting.write_all(b"\r\n").unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let early = status_line(&mut waiting);
    assert!(
        early.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "a connection beyond the bound was served: {early:?}"
    );
    // One request completes. Its worker is at its bound: the answer says so and the
    // server ends the connection, though this client would have kept it.
    let mut finished = served.pop().unwrap();
    finished.write_all(b"\r\n").unwrap();
    let answer = response_head_then_end(&mut finished);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // The waiting connection gets the slot.
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(status_line(&mut waiting).unwrap(), "HTTP/1.1 200 OK");
    drop(served);
}

/// Everything the server sends on `stream` until it closes the connection (fails the
/// test if it keeps the connection open).
fn response_head_then_end(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server ends the connection after its answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A stop of the webhook served on the engine's thread finishes the request in flight
/// (answered, then its connection closed), closes an idle kept-alive connection, and
/// takes no new connection; then the app's stop completes.
#[actix_rt::test]
async fn a_stop_finishes_the_request_in_flight_closes_idle_connections_and_takes_no_more() {
    use std::time::Duration;
    let app = spawn_app_with(Options {
        workers: Some(0),
        ..Options::default()
    })
    .await;
    let address = app.base_url.trim_start_matches("http://").to_string();
    let (stop_now, stop_asked) = std::sync::mpsc::channel();
    let probe = std::thread::spawn(move || probe_a_stop(&address, stop_now));
    while stop_asked.try_recv().is_err() {
        assert!(
            !probe.is_finished(),
            "the probe ended before asking for the stop"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = actix_rt::spawn(app.app.stop());
    while !probe.is_finished() {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    probe.join().expect("the probe's assertions hold");
    stopping.await.unwrap().expect("the app stops cleanly");
}

/// Opens an idle kept-alive connection and one in the middle of a POST, asks for the
/// stop, and checks what each connection and a new one get.
fn probe_a_stop(address: &str, stop_now: std::sync::mpsc::Sender<()>) {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    let head = b"GET /healthz HTTP/1.1\r\nHost: colloquy\r\n";
    let mut idle = connect(address);
    idle.write_all(head).unwrap();
    idle.write_all(b"\r\n").unwrap();
    assert_eq!(status_line(&mut idle).unwrap(), "HTTP/1.1 200 OK");
    // A request being read: its head is in, half its body is not.
    let mut busy = connect(address);
    busy.write_all(b"POST /webhook HTTP/1.1\r\nHost: colloquy\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop_now.send(()).unwrap();
    // The idle connection is closed by the server (what is left of the first answer, if
    // any, then the end), though the client would keep it: at the stop, not when its
    // keep-alive (5 s) runs out.
    idle.set_read_timeout(Some(Duration::from_millis(2500)))
        .unwrap();
    let _ = response_head_then_end(&mut idle);
    // No new connection is taken once the listener stopped.
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect(address).is_err()
    });
    assert!(refused, "the stopped listener still takes connections");
    // The request in flight completes and gets its answer, then its connection ends.
    busy.write_all(b"}").unwrap();
    let answer = response_head_then_end(&mut busy);
    assert!(answer.starts_with("HTTP/1.1 "), "no answer: {answer:?}");
}

//! `/healthz`, `/readyz` and `/metrics` as an operator and Prometheus see them.

use crate::helpers::*;

async fn metrics(app: &TestApp) -> String {
    let mut response = awc::Client::new()
        .get(format!("{}/metrics", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
}

#[actix_web::test]
async fn health_and_readiness_answer_on_the_public_listener() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let ready = app.get("/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));
}

#[actix_web::test]
async fn metrics_count_requests_events_replies_and_latencies() {
    let app = spawn_app().await;
    let body = text_message("13001", "m.metrics", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    assert_eq!(
        app.post_webhook(body.clone().into_bytes(), &[])
            .await
            .status,
        403
    );
    app.wait_for_first_reply("13001", "sent").await;
    let text = metrics(&app).await;
    for expected in [
        r#"colloquy_webhook_requests_total{method="POST",status="200"} 1"#,
        r#"colloquy_webhook_requests_total{method="POST",status="403"} 1"#,
        "colloquy_events_acked_total 1",
        r#"colloquy_events_total{kind="text",outcome="handled"} 1"#,
        r#"colloquy_flow_runs_total{outcome="ok"} 1"#,
        r#"colloquy_replies_total{code="none",outcome="sent",page="128922990987384"} 1"#,
        "colloquy_live_conversations 1",
        "colloquy_webhook_ack_seconds_count 1",
        // The POST waited for the turn's durable commit, not for a journal item.
        r#"colloquy_store_flush_wait_seconds_count{writer="conversation"} 1"#,
        "colloquy_events_journalled_late_total 0",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains(r#"writer="webhook""#), "{text}");
    // The turn and the send outcome each went through a commit cycle.
    let operations = sample_value(&text, "colloquy_store_commit_operations_total");
    assert!(operations >= 2.0, "{text}");
    let cycles = sample_value(&text, "colloquy_store_commit_cycles_total");
    assert!((1.0..=operations).contains(&cycles), "{text}");
    // The turn asked for durability; every cycle with writes applied a batch.
    let flushes = sample_value(&text, "colloquy_store_commit_flushes_total");
    assert!((1.0..=cycles).contains(&flushes), "{text}");
    let batches = sample_value(&text, "colloquy_store_commit_batches_total");
    assert!((1.0..=cycles).contains(&batches), "{text}");
    assert!(
        sample_value(
            &text,
            r#"colloquy_store_commit_seconds_total{phase="flush"}"#
        ) > 0.0
    );
    assert!(
        sample_value(&text, "colloquy_store_disk_bytes") > 0.0,
        "{text}"
    );
    // sled's page cache starts at its floor (6 MiB by default); one conversation fits.
    assert_eq!(
        sample_value(&text, "colloquy_store_cache_bytes"),
        6.0 * 1024.0 * 1024.0,
        "{text}"
    );
    assert!(
        sample_value(&text, "process_resident_memory_bytes") > 0.0,
        "{text}"
    );
    assert!(!text.contains(ACCESS_TOKEN) && !text.contains(APP_SECRET));
}

#[actix_web::test]
async fn a_permanent_graph_error_is_counted_by_its_code() {
    let app = spawn_app().await;
    app.graph
        .script([graph_error(400, 551, Some(1545041), "unavailable")]);
    let body = text_message("13002", "m.metrics2", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    app.wait_for_first_reply("13002", "failed").await;
    assert!(metrics(&app).await.contains(
        r#"colloquy_replies_total{code="551",outcome="failed",page="128922990987384"} 1"#
    ));
}

#[actix_web::test]
async fn readiness_fails_while_overloaded() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let app = spawn_app_with(Options {
        flow: colloquy::FlowHandle::new(crate::webhook::Gate(gate.clone())),
        max_pending_events: Some(1),
        ..Options::default()
    })
    .await;
    let body = text_message("13003", "m.ready", "wait", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["error"]
        .as_str()
        .unwrap()
        .contains("overloaded"));
    gate.add_permits(1);
    app.graph.wait_for_sends(1).await;
    for _ in 0..200 {
        if app.get("/readyz").await.status == 200 {
            return;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never ready again");
}

/// The value of one sample (`name` with its labels) in a Prometheus exposition.
fn sample_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample `{name}` in:\n{text}"))
}

/// sled stops a store after an I/O error; here the file of a large message cannot be
/// written (its directory is gone). The webhook then refuses what it cannot record,
/// readiness says why, the failure is counted, and the engine still stops (sled 0.34 hung
/// every later flush instead, and with it the thread dropping the store:
/// vendor/README.md, change 5). The engine runs in a thread of its own so that a hang
/// fails this test instead of hanging the suite.
#[test]
fn a_store_stopped_by_a_write_error_fails_readiness_and_refuses_events() {
    let (stopped, stopping) = std::sync::mpsc::channel();
    let engine = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = spawn_app().await;
            std::fs::remove_dir_all(app.data_dir.join("blobs")).unwrap();
            let body = text_message("13004", "m.large", &"a".repeat(200_000), 1_000);
            let answer = app.post_signed(&body).await;
            assert_eq!(answer.status, 500, "{}", answer.body);

            let ready = app.get("/readyz").await;
            assert_eq!(ready.status, 503);
            let reason = ready.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(reason.contains("latest commit failed"), "{reason}");
            let metrics = app.metrics().await;
            assert!(
                metric_value(&metrics, "colloquy_store_commit_failures_total") >= 1.0,
                "{metrics}"
            );
            let _ = app.app.stop().await;
        });
        let _ = stopped.send(());
    });
    match stopping.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => {}
        // The thread ended without reporting: an assertion failed; show it.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = engine.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the engine never finished stopping after its store failed")
        }
    }
}

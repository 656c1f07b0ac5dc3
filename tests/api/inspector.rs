//! The web inspector in a real headless Chromium (through chromedriver): logging in,
//! the list and its filters, a conversation page that follows the webhook live, the
//! action buttons, escaping of what users wrote, and the login and CSRF defences.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;

use crate::browser::Browser;
use crate::helpers::*;

/// A conversation with one handled message and its reply sent.
async fn talked_to(app: &TestApp, psid: &str, text: &str) {
    app.sends_text(psid, &format!("m.{psid}.0"), text, 1_000)
        .await;
    app.wait_for_first_reply(psid, "sent").await;
}

/// Opens the page of `psid` from the list (the row's link), as an operator would.
async fn open_from_list(browser: &Browser, psid: &str) {
    let rows = browser.all_by_testid("conversation-row").await;
    let mut link = None;
    for row in rows {
        if row.attr("data-psid").await.unwrap().as_deref() == Some(psid) {
            link = Some(row.find(Locator::Css("a")).await.unwrap());
        }
    }
    link.unwrap_or_else(|| panic!("no row for {psid}"))
        .click()
        .await
        .unwrap();
    browser.by_testid("transcript").await;
    browser.wait_until_live().await;
}

/// The statuses shown on the page's transcript entries, in order.
async fn shown_statuses(browser: &Browser) -> Vec<String> {
    browser.texts("entry-status").await
}

#[actix_web::test]
async fn an_operator_logs_in_filters_the_list_and_opens_a_conversation() {
    let app = spawn_app().await;
    talked_to(&app, "16001", "I need help with billing").await;
    talked_to(&app, "26002", "hello there").await;
    let browser = Browser::start().await;

    browser.log_in_as_admin(&app).await;
    let rows = browser.all_by_testid("conversation-row").await;
    assert_eq!(rows.len(), 2);
    browser.screenshot("inspector-list").await;

    browser
        .by_testid("filter-psid")
        .await
        .send_keys("160")
        .await
        .unwrap();
    browser.click("filter-submit").await;
    browser
        .wait_for("the filtered list", || async {
            let url = browser.client.current_url().await.ok()?;
            (url.query()?.contains("psid_prefix=160")).then_some(())
        })
        .await;
    let rows = browser.all_by_testid("conversation-row").await;
    assert_eq!(rows.len(), 1, "the filter is kept in the URL and applied");
    assert_eq!(
        rows[0].attr("data-psid").await.unwrap().as_deref(),
        Some("16001")
    );

    open_from_list(&browser, "16001").await;
    let entries = browser.texts("transcript-entry").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].contains("I need help with billing"));
    assert_eq!(shown_statuses(&browser).await, ["handled", "sent"]);
    let state = browser.texts("state").await.concat();
    assert!(state.contains("\"messages\": 1"), "{state}");
    browser.screenshot("inspector-conversation").await;

    // At phone width nothing runs off the side of the page.
    browser.client.set_window_size(390, 844).await.unwrap();
    let widths = browser
        .client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(inner < 600, "the window did not shrink: {inner}");
    assert!(
        scroll <= inner,
        "the page is {scroll} px wide in a {inner} px window"
    );
    browser.screenshot("inspector-phone").await;
    browser.close().await;
}

#[actix_web::test]
async fn a_message_posted_to_the_webhook_appears_on_the_open_page_without_a_reload() {
    let app = spawn_app().await;
    talked_to(&app, "16003", "first").await;
    let browser = Browser::start().await;
    browser.log_in_as_admin(&app).await;
    open_from_list(&browser, "16003").await;
    // Marks this document: a reload would lose the mark.
    browser
        .client
        .execute("window.__sameDocument = true", vec![])
        .await
        .unwrap();

    app.sends_text("16003", "m.16003.1", "are you still there?", 2_000)
        .await;
    browser
        .wait_for("the new message and its reply", || async {
            let texts = browser.texts("transcript-entry").await;
            (texts.len() == 4 && texts[2].contains("are you still there?")).then_some(())
        })
        .await;
    browser
        .wait_for("the reply's status to be shown as sent", || async {
            (shown_statuses(&browser).await.last()? == "sent").then_some(())
        })
        .await;
    let same = browser
        .client
        .execute("return window.__sameDocument === true", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page was reloaded");
    browser.close().await;
}

#[actix_web::test]
async fn a_failed_reply_is_retried_from_its_button_and_turns_sent() {
    let app = spawn_app().await;
    app.graph.script([graph_error(
        400,
        551,
        Some(1545041),
        "(#551) This person isn't available right now.",
    )]);
    app.sends_text("16004", "m.16004.0", "hello", 1_000).await;
    app.wait_for_first_reply("16004", "failed").await;
    let browser = Browser::start().await;
    browser.log_in_as_admin(&app).await;
    let badges = browser.texts("badge").await;
    assert_eq!(badges, ["failed reply"]);
    open_from_list(&browser, "16004").await;
    assert_eq!(shown_statuses(&browser).await, ["handled", "failed"]);
    let error = browser.texts("entry-error").await.concat();
    assert!(error.contains("isn't available"), "{error}");

    browser.click("action-retry").await;
    browser
        .wait_for("the retried reply to turn sent", || async {
            // The operator's retry is an entry of its own, after the reply.
            (shown_statuses(&browser).await == ["handled", "sent", "handled"]).then_some(())
        })
        .await;
    assert!(browser.all_by_testid("action-retry").await.is_empty());
    assert_eq!(app.graph.wait_for_sends(1).await.len(), 1);
    browser.close().await;
}

#[actix_web::test]
async fn a_paused_user_goes_unanswered_until_resumed_from_the_page() {
    let app = spawn_app().await;
    talked_to(&app, "16005", "hi").await;
    let browser = Browser::start().await;
    browser.log_in_as_admin(&app).await;
    open_from_list(&browser, "16005").await;

    browser.click("action-pause").await;
    browser
        .wait_for("the pause to show", || async {
            let badge = browser.by_testid("paused-badge").await.text().await.ok()?;
            badge.contains("paused").then_some(())
        })
        .await;
    app.sends_text("16005", "m.16005.1", "hello? anyone?", 2_000)
        .await;
    browser
        .wait_for("the unanswered message", || async {
            let texts = browser.texts("transcript-entry").await;
            texts.last()?.contains("hello? anyone?").then_some(())
        })
        .await;
    // The flow would have answered within this time; it must not have.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let doc = app.conversation("16005").await;
    assert_eq!(outbound(&doc).len(), 1, "a paused user was answered: {doc}");

    browser
        .by_testid("send-text")
        .await
        .send_keys("A human here, how can I help?")
        .await
        .unwrap();
    browser.click("action-send").await;
    let sends = app.graph.wait_for_sends(2).await;
    assert_eq!(
        sends[1].body["message"]["text"],
        "A human here, how can I help?"
    );

    browser.click("action-resume").await;
    browser
        .wait_for("the resume to show", || async {
            let badge = browser.by_testid("paused-badge").await.text().await.ok()?;
            badge.contains("bot answers").then_some(())
        })
        .await;
    app.sends_text("16005", "m.16005.2", "thanks", 3_000).await;
    assert_eq!(app.graph.wait_for_sends(3).await.len(), 3);
    browser.close().await;
}

#[actix_web::test]
async fn markup_a_user_wrote_shows_as_text_and_runs_nothing() {
    let app = spawn_app().await;
    let hostile =
        r#"<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = 'img'">"#;
    talked_to(&app, "16006", hostile).await;
    let browser = Browser::start().await;
    browser.log_in_as_admin(&app).await;
    open_from_list(&browser, "16006").await;

    let first = browser.texts("transcript-entry").await;
    assert!(first[0].contains(hostile), "shown as typed: {first:?}");
    let injected = browser
        .client
        .execute(
            "return [window.__pwned === undefined, \
                     document.querySelectorAll('#live img, #live script').length]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!([true, 0]));
    browser.close().await;
}

#[actix_web::test]
async fn a_wrong_token_is_refused_and_an_action_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    talked_to(&app, "16007", "hi").await;
    let browser = Browser::start().await;

    browser.log_in(&app, "not-the-token").await;
    let problem = browser
        .by_testid("login-problem")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(problem, "wrong admin token");
    assert!(browser.all_by_testid("conversation-row").await.is_empty());
    let cookies = browser.client.get_all_cookies().await.unwrap();
    assert!(cookies.is_empty(), "a refused login set {cookies:?}");

    browser.log_in_as_admin(&app).await;
    let cookie = browser
        .client
        .get_named_cookie("colloquy_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    open_from_list(&browser, "16007").await;
    // The page's own script carries the token; a forged request without it is refused.
    let forged = browser
        .run_async(
            "const done = arguments[arguments.length - 1];
             fetch('/admin/conversations/16007/pause', {method: 'POST', credentials: 'same-origin'})
               .then(r => done(r.status));",
        )
        .await;
    assert_eq!(forged, json!(403));
    let wrong = browser
        .run_async(
            "const done = arguments[arguments.length - 1];
             fetch('/admin/conversations/16007/pause', {method: 'POST', credentials: 'same-origin',
                    headers: {'X-CSRF-Token': 'guessed'}}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(wrong, json!(403));
    let doc = app.conversation("16007").await;
    assert_eq!(doc["paused"], false, "a refused action changed nothing");
    browser.close().await;
}

/// The flash line's text once it says something about `action`.
async fn flash_about(browser: &Browser, action: &str) -> String {
    browser
        .wait_for(&format!("the outcome of {action}"), || async {
            let flash = browser.texts("flash").await.concat();
            flash.starts_with(action).then_some(flash)
        })
        .await
}

#[actix_web::test]
async fn state_start_and_forget_work_from_the_page_and_refusals_are_shown() {
    let app = spawn_app().await;
    talked_to(&app, "16008", "hi").await;
    let browser = Browser::start().await;
    browser.log_in_as_admin(&app).await;
    open_from_list(&browser, "16008").await;

    let editor = browser.by_testid("state-editor").await;
    editor.clear().await.unwrap();
    editor.send_keys(r#"{"messages": "many"}"#).await.unwrap();
    browser.click("action-set-state").await;
    let refused = flash_about(&browser, "set-state failed").await;
    assert!(refused.contains("does not fit"), "{refused}");
    assert_eq!(app.conversation("16008").await["state"]["messages"], 1);

    editor.clear().await.unwrap();
    editor.send_keys(r#"{"messages": 41}"#).await.unwrap();
    browser.click("action-set-state").await;
    flash_about(&browser, "set-state: done").await;
    browser
        .wait_for("the new state on the page", || async {
            browser
                .texts("state")
                .await
                .concat()
                .contains("41")
                .then_some(())
        })
        .await;

    browser.click("action-reset").await;
    flash_about(&browser, "reset: done").await;
    assert_eq!(
        app.conversation("16008").await["state"],
        serde_json::Value::Null
    );

    // The built-in thanks flow has no trees: the flow's refusal reaches the operator.
    browser
        .by_testid("start-tree")
        .await
        .send_keys("intake")
        .await
        .unwrap();
    browser.click("action-start").await;
    let not_started = flash_about(&browser, "start failed").await;
    assert!(not_started.contains("nothing to start"), "{not_started}");

    browser.click("action-forget").await;
    browser.client.accept_alert().await.unwrap();
    browser
        .wait_for("the list after forgetting", || async {
            let url = browser.client.current_url().await.ok()?;
            (url.path() == "/admin/").then_some(())
        })
        .await;
    assert!(browser.all_by_testid("conversation-row").await.is_empty());
    assert_eq!(
        app.admin("GET", "/admin/conversations/16008", "")
            .await
            .status,
        404
    );
    browser.close().await;
}

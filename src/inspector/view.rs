//! The web inspector's HTML: the login form, the conversation list and one conversation,
//! rendered on the server with maud.
//!
//! maud escapes every value it splices in, so what a user wrote (text, payloads, state)
//! shows as text, never as markup. The `data-testid` attributes are a contract with the
//! browser tests and operators' scripts: keep them. Must not: read the store or decide
//! anything; it renders what it is given.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use crate::inspect::{format_ms, ConversationDocument, ConversationSummary, TranscriptLine};
use crate::store::{Direction, Status};

/// Transcript entries a conversation page shows, newest last: a page (and each live
/// refresh) stays small however long the conversation; older entries are in the API.
pub const SHOWN_ENTRIES: usize = 200;

/// The list's filters as the form shows them (and the URL keeps them).
#[derive(Default)]
pub struct ListForm {
    pub page: String,
    pub psid_prefix: String,
    /// "", "true" or "false" (so are `failed` and `stuck`).
    pub paused: String,
    pub failed: String,
    pub stuck: String,
    pub tree: String,
    pub tree_status: String,
    /// "", "messenger" or "instagram".
    pub channel: String,
}

/// A select of any / yes / no for a flag filter.
fn yes_no_select(name: &str, testid: &str, current: &str, yes: &str, no: &str) -> Markup {
    html! {
        select name=(name) data-testid=(testid) {
            option value="" selected[current.is_empty()] { "any" }
            option value="true" selected[current == "true"] { (yes) }
            option value="false" selected[current == "false"] { (no) }
        }
    }
}

fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(csrf) = csrf {
                    meta name="csrf-token" content=(csrf);
                }
                title { (title) " · colloquy" }
                link rel="stylesheet" href="/admin/assets/inspector.css";
                script src="/admin/assets/inspector.js" defer {}
            }
            body {
                header.bar {
                    a.brand href="/admin/" { "colloquy inspector" }
                    @if let Some(csrf) = csrf {
                        form.logout method="post" action="/admin/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn login(problem: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            form.login method="post" action="/admin/login" {
                h1 { "Log in" }
                p { "Enter the admin token (" code { "COLLOQUY_ADMIN_TOKEN" } ")." }
                @if let Some(problem) = problem {
                    p.problem role="alert" data-testid="login-problem" { (problem) }
                }
                input type="password" name="token" autocomplete="current-password"
                    required autofocus data-testid="login-token" aria-label="Admin token";
                button type="submit" data-testid="login-submit" { "Log in" }
            }
        },
    )
}

/// Where one conversation's page is.
pub fn conversation_href(page_id: &str, psid: &str) -> String {
    let query =
        serde_urlencoded::to_string([("page", page_id), ("psid", psid)]).unwrap_or_default();
    format!("/admin/conversation?{query}")
}

pub fn list(
    csrf: &str,
    form: &ListForm,
    rows: &[ConversationSummary],
    next: Option<String>,
) -> Markup {
    layout(
        "Conversations",
        Some(csrf),
        html! {
            h1 { "Conversations" }
            form.filters method="get" action="/admin/" data-testid="list-filters" {
                label { "Page " input name="page" value=(form.page) data-testid="filter-page"; }
                label { "Channel "
                    select name="channel" data-testid="filter-channel" {
                        @for (value, shown) in [("", "any"), ("messenger", "Messenger"), ("instagram", "Instagram")] {
                            option value=(value) selected[form.channel == value] { (shown) }
                        }
                    }
                }
                label { "PSID starts with " input name="psid_prefix" value=(form.psid_prefix) data-testid="filter-psid"; }
                label { "Paused " (yes_no_select("paused", "filter-paused", &form.paused, "paused", "not paused")) }
                label { "Failed replies " (yes_no_select("failed", "filter-failed", &form.failed, "some", "none")) }
                label { "Stuck events " (yes_no_select("stuck", "filter-stuck", &form.stuck, "some", "none")) }
                label { "Tree " input name="tree" value=(form.tree) data-testid="filter-tree"; }
                label { "Tree status "
                    select name="tree_status" data-testid="filter-tree-status" {
                        @for (value, shown) in [("", "any"), ("in_progress", "in progress"), ("completed", "completed"), ("cancelled", "cancelled"), ("not_started", "not started")] {
                            option value=(value) selected[form.tree_status == value] { (shown) }
                        }
                    }
                }
                button type="submit" data-testid="filter-submit" { "Filter" }
            }
            @if rows.is_empty() {
                p.empty data-testid="no-conversations" { "No conversation matches." }
            } @else {
                table.conversations {
                    thead { tr { th { "User" } th { "Page" } th { "Last activity" } th { "In / out" } th { "Status" } } }
                    tbody {
                        @for row in rows { (list_row(row)) }
                    }
                }
            }
            @if let Some(next) = next {
                a.next href=(next) data-testid="next-page" { "Older conversations →" }
            }
        },
    )
}

fn list_row(c: &ConversationSummary) -> Markup {
    html! {
        tr data-testid="conversation-row" data-psid=(c.psid) data-page=(c.page_id) {
            td { a href=(conversation_href(&c.page_id, &c.psid)) { (c.psid) } }
            td {
                (c.page_id)
                @if !c.channel.is_messenger() { " " span.badge.channel data-testid="channel" { (c.channel.name()) } }
            }
            td { (format_ms(c.last_activity)) }
            td { (c.inbound_count) " / " (c.outbound_count) }
            td {
                @if c.paused { span.badge.paused data-testid="badge" { "paused" } }
                @if c.failed_replies { span.badge.failed data-testid="badge" { "failed reply" } }
                @if !c.paused && !c.failed_replies { span.badge.ok data-testid="badge" { "bot" } }
            }
        }
    }
}

/// The conversation page: the live part (re-rendered on each change) and the send form.
pub fn conversation(csrf: &str, doc: &ConversationDocument) -> Markup {
    let events = serde_urlencoded::to_string([("page", &doc.page_id), ("psid", &doc.psid)])
        .unwrap_or_default();
    layout(
        &doc.psid,
        Some(csrf),
        html! {
            p.crumbs { a href="/admin/" { "← Conversations" } }
            h1 { "User " (doc.psid) span.page { " on " (doc.channel.name()) " page " (doc.page_id) } }
            p.flash role="status" data-testid="flash" {}
            section #live
                data-live-url=(format!("/admin/conversation/live?{events}"))
                data-events-url=(format!("/admin/events?{events}"))
                data-psid=(doc.psid) data-page=(doc.page_id) {
                (live(doc))
            }
            form.send data-action="send" {
                label for="send-text" { "Send as the page" }
                textarea #send-text name="text" rows="2" required data-testid="send-text" {}
                button type="submit" data-testid="action-send" { "Send" }
            }
            section.operator {
                h2 { "Operator" }
                form.inline data-action="start" {
                    label for="start-tree" { "Start interview tree " }
                    input #start-tree name="tree" required data-testid="start-tree";
                    button type="submit" data-testid="action-start" { "Start" }
                }
                form.send data-action="set-state" {
                    label for="state-editor" { "Set the state (JSON; it must fit the flow's state type)" }
                    textarea #state-editor name="state" rows="4" required data-testid="state-editor" { (pretty(&doc.state)) }
                    div.buttons {
                        button type="submit" data-testid="action-set-state" { "Set state" }
                        button type="button" data-action="reset" data-testid="action-reset" { "Reset to a new user's state" }
                    }
                }
                button.danger type="button" data-action="forget" data-testid="action-forget"
                    data-confirm="Forget this user? Their transcript, state, timers and owed replies are deleted." {
                    "Forget this user"
                }
            }
        },
    )
}

/// The part of a conversation page that changes: actions, watermarks, transcript,
/// state, answers and timers.
pub fn live(doc: &ConversationDocument) -> Markup {
    html! {
        div.actions {
            span.badge.(if doc.paused { "paused" } else { "ok" }) data-testid="paused-badge" {
                @if doc.paused { "paused: a human answers" } @else { "the bot answers" }
            }
            button type="button" data-action="pause" data-testid="action-pause" disabled[doc.paused] { "Pause bot" }
            button type="button" data-action="resume" data-testid="action-resume" disabled[!doc.paused] { "Resume bot" }
        }
        dl.watermarks {
            dt { "Delivered up to" } dd data-testid="delivered-watermark" { (format_ms(doc.delivered_watermark)) }
            dt { "Read up to" } dd data-testid="read-watermark" { (format_ms(doc.read_watermark)) }
            dt { "Last user message" } dd { (format_ms(doc.last_user_message)) }
        }
        div.columns {
            @if let Some(oldest) = doc.transcript.first().filter(|line| line.seq > 0) {
                p.older data-testid="older-entries" {
                    "Showing the newest " (doc.transcript.len()) " entries; older ones: "
                    code { "GET /admin/conversations/" (doc.psid) "?page=" (doc.page_id) "&last=200&before=" (oldest.seq) }
                }
            }
            ol.transcript data-testid="transcript" {
                @for line in &doc.transcript { (entry(line, doc.failed_events.contains(&line.seq))) }
            }
            aside {
                h2 { "State" }
                pre data-testid="state" { (pretty(&doc.state)) }
                (answers(&doc.state))
                h2 { "Pending timers" }
                @if doc.timers.is_empty() {
                    p.empty { "none" }
                } @else {
                    ul data-testid="timers" {
                        @for timer in &doc.timers { li { (timer.name) " at " (format_ms(timer.due)) } }
                    }
                }
            }
        }
    }
}

/// One transcript bubble; `replayable` when it is a failed event still kept.
fn entry(line: &TranscriptLine, replayable: bool) -> Markup {
    let side = match line.direction {
        Direction::In => "in",
        Direction::Out => "out",
    };
    let status = status_name(line.status);
    html! {
        li.bubble.(side) data-testid="transcript-entry" data-seq=(line.seq) {
            div.meta {
                span.who { @if line.by_operator { "operator" } @else if side == "in" { "user" } @else { "bot" } }
                " · " (line.kind) " · " (format_ms(line.timestamp))
            }
            @if let Some(text) = &line.text {
                p.text { (text) }
            } @else if let Some(payload) = &line.payload {
                pre.payload { (compact(payload)) }
            }
            div.status-line {
                span.status.(status) data-testid="entry-status" { (status) }
                @if let Some(error) = &line.error {
                    span.error data-testid="entry-error" {
                        (error.message)
                        @if let Some(code) = error.code { " (code " (code) ")" }
                    }
                }
                @if line.direction == Direction::Out && line.status == Status::Failed {
                    button type="button" data-action="retry" data-seq=(line.seq) data-testid="action-retry" { "Retry" }
                }
                @if replayable {
                    button type="button" data-action="replay" data-seq=(line.seq) data-testid="action-replay" { "Replay" }
                    button type="button" data-action="skip" data-seq=(line.seq) data-testid="action-skip" { "Skip" }
                }
            }
        }
    }
}

/// The answers of an interview tree's state (`{"answers": [{question, answer}, ...]}`).
fn answers(state: &Value) -> Markup {
    let Some(answers) = state.get("answers").and_then(Value::as_array) else {
        return html! {};
    };
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default()
    };
    html! {
        h2 { "Interview answers" }
        @if let Some(tree) = state.get("tree").and_then(Value::as_str) { p { "Tree " code { (tree) } } }
        table.answers data-testid="answers" {
            @for pair in answers {
                tr { th { (text(pair, "question")) } td { (text(pair, "answer")) } }
            }
        }
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Sent => "sent",
        Status::Delivered => "delivered",
        Status::Read => "read",
        Status::Failed => "failed",
        Status::Handled => "handled",
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A page for a conversation that is not there (any more).
pub fn missing(csrf: &str, problem: &str) -> Markup {
    layout(
        "Not found",
        Some(csrf),
        html! {
            p.crumbs { a href="/admin/" { "← Conversations" } }
            p.problem { (problem) }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::TranscriptLine;

    fn doc_with_text(text: &str) -> ConversationDocument {
        ConversationDocument {
            psid: "<b>psid</b>".into(),
            page_id: "p".into(),
            channel: Default::default(),
            state: serde_json::json!({"note": "<script>alert(1)</script>"}),
            delivered_watermark: 0,
            read_watermark: 0,
            last_activity: 0,
            last_user_message: 0,
            paused: false,
            transcript: vec![TranscriptLine {
                seq: 0,
                direction: Direction::In,
                mid: None,
                timestamp: 1,
                kind: "text".into(),
                text: Some(text.into()),
                status: Status::Handled,
                error: None,
                payload: None,
                late: false,
                by_operator: false,
            }],
            timers: Vec::new(),
            failed_events: Vec::new(),
            owed: Vec::new(),
        }
    }

    #[test]
    fn what_a_user_wrote_is_escaped_everywhere_it_shows() {
        let page =
            conversation("csrf", &doc_with_text("<img src=x onerror=alert(1)>")).into_string();
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<b>psid</b>"));
    }

    #[test]
    fn a_page_that_does_not_start_at_the_first_entry_says_where_older_ones_are() {
        let mut doc = doc_with_text("hello");
        assert!(!live(&doc).into_string().contains("older-entries"));
        doc.transcript[0].seq = 1200;
        let page = live(&doc).into_string();
        assert!(page.contains("data-testid=\"older-entries\""), "{page}");
        assert!(page.contains("&amp;last=200&amp;before=1200"), "{page}");
    }
}

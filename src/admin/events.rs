//! `GET /admin/events`: the change feed as Server-Sent Events.
//!
//! Each event is `event: change`, `id: N` and the change as JSON (`page_id`, `psid`, the
//! transcript `entries` added or changed, whether the `record` changed, `forgotten`).
//! `?page=ID` and `?psid=P` keep only one page's or one user's changes. A client that
//! reconnects with `Last-Event-ID` (or `?last_event_id=N`) gets what it missed; when some
//! of that is no longer kept (or the server restarted) it first gets `event: resync`, so
//! it re-reads what it shows. A comment every `KEEP_ALIVE` keeps proxies from closing an
//! idle stream. Must not: write anything, or hold the feed's lock while sending.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use serde::Deserialize;

use super::{authorize, AdminError, AdminState};
use crate::store::changes::{Change, ChangeFeed, Since};

/// How long a stream stays silent before it sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting (the SSE `retry` field), in ms.
const RECONNECT_MS: u64 = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    page: Option<String>,
    psid: Option<String>,
    last_event_id: Option<String>,
}

/// Which changes one stream sends.
struct Filter {
    page: Option<String>,
    psid: Option<String>,
}

impl Filter {
    fn wants(&self, change: &Change) -> bool {
        self.page
            .as_ref()
            .is_none_or(|page| *page == change.page_id)
            && self.psid.as_ref().is_none_or(|psid| *psid == change.psid)
    }
}

/// Where one stream is: the last id it has passed (sent or filtered out).
struct Cursor {
    feed: ChangeFeed,
    filter: Filter,
    seen: u64,
    /// What to send before the next wait: the opening lines, a resync, kept changes.
    ready: Option<String>,
}

pub(super) async fn stream(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let query: EventsQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|error| AdminError::BadQuery(error.to_string()))?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(query.last_event_id);
    let last_event_id = last_event_id
        .map(|raw| {
            raw.trim().parse::<u64>().map_err(|_| {
                AdminError::BadQuery(format!("Last-Event-ID must be an event id, got {raw:?}"))
            })
        })
        .transpose()?;
    let feed = state.store.changes();
    let filter = Filter {
        page: query.page,
        psid: query.psid,
    };
    let mut opening = format!("retry: {RECONNECT_MS}\n: connected\n\n");
    let seen = match last_event_id {
        None => feed.latest_id(),
        Some(after) => {
            let (caught_up, seen) = catch_up(&feed, &filter, after);
            opening.push_str(&caught_up);
            seen
        }
    };
    let cursor = Cursor {
        feed,
        filter,
        seen,
        ready: Some(opening),
    };
    let body = stream::unfold(cursor, |mut cursor| async move {
        let chunk = next_chunk(&mut cursor).await?;
        Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), cursor))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells a buffering proxy (nginx) to pass events on at once.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// What the stream sends next: what is ready, else the changes after the cursor, else a
/// keep-alive once `KEEP_ALIVE` passes with nothing new; `None` ends the stream (the
/// server is shutting down; the browser reconnects to the next one).
async fn next_chunk(cursor: &mut Cursor) -> Option<String> {
    if let Some(ready) = cursor.ready.take() {
        return Some(ready);
    }
    loop {
        let (chunk, seen) = catch_up(&cursor.feed, &cursor.filter, cursor.seen);
        cursor.seen = seen;
        if !chunk.is_empty() {
            return Some(chunk);
        }
        if cursor.feed.is_closed() {
            return None;
        }
        let woken = tokio::time::timeout(KEEP_ALIVE, cursor.feed.changed_after(seen)).await;
        if woken.is_err() {
            return Some(": keep-alive\n\n".into());
        }
    }
}

/// The events after `after` that the filter wants, and the last id passed.
fn catch_up(feed: &ChangeFeed, filter: &Filter, after: u64) -> (String, u64) {
    let (changes, mut text) = match feed.since(Some(after)) {
        Since::Changes(changes) => (changes, String::new()),
        Since::Gap(changes) => (changes, "event: resync\ndata: {}\n\n".to_string()),
    };
    let mut seen = after;
    for change in changes {
        seen = seen.max(change.id);
        if filter.wants(&change) {
            text.push_str(&event_text(&change));
        }
    }
    // A resync with nothing kept after it still moves the reader to now.
    if !text.is_empty() && seen == after {
        seen = seen.max(feed.latest_id());
    }
    (text, seen)
}

fn event_text(change: &Change) -> String {
    let data = serde_json::to_string(change).unwrap_or_else(|_| "{}".into());
    format!("id: {}\nevent: change\ndata: {data}\n\n", change.id)
}

//! Exports on the admin listener: every conversation with its transcript as JSON Lines,
//! and the answers of one interview tree as CSV.
//!
//! `GET /admin/export/conversations.jsonl[?page=ID&paused=..&psid_prefix=P&active_since=MS&active_until=MS]`
//! streams one conversation document per line (the JSON of `GET /admin/conversations/{psid}`),
//! forgotten users left out. `GET /admin/export/trees/{name}.csv` streams one row per
//! conversation that answered the interview tree `name` (its current interview, else its
//! latest earlier one), one column per question id in first-seen order; 404 when no
//! conversation has that tree. Both need the admin token (`authorize`).
//!
//! Both walk the conversation records in key order (page, then psid), a batch at a time on
//! the blocking pool, as the response is consumed: keys never move, so a conversation that
//! exists throughout an export is in it exactly once, and memory holds one batch, never the
//! whole export. A cell of the CSV that a spreadsheet would run as a formula (starting with
//! `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'`. Must not: write to
//! the store, build an export in memory, or show a forgotten user.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use super::{authorize, record_filter, AdminError, AdminState};
use crate::flow::tree::{InterviewState, Outcome, Stage};
use crate::inspect::{self, is_tombstone};
use crate::store::{ConversationKey, ConversationRecord, ListFilter, Store, StoreError};

/// Conversation records read per step of an export.
const BATCH: usize = 64;

pub const JSONL_CONTENT_TYPE: &str = "application/x-ndjson";
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("no conversation has answers of the interview tree {name:?}")]
    UnknownTree { name: String },
    #[error("the export could not read the store: {0}")]
    Store(#[from] StoreError),
    #[error("the export's reader stopped: {0}")]
    Reader(String),
    #[error("the export could not encode a record: {0}")]
    Encode(String),
}

impl ResponseError for ExportError {
    fn status_code(&self) -> StatusCode {
        match self {
            ExportError::Admin(error) => error.status_code(),
            ExportError::UnknownTree { .. } => StatusCode::NOT_FOUND,
            ExportError::Store(_) | ExportError::Reader(_) | ExportError::Encode(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/export/conversations.jsonl",
        web::get().to(conversations),
    )
    .route("/admin/export/trees/{name}.csv", web::get().to(tree));
}

/// The list's filters, all optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    page: Option<String>,
    paused: Option<String>,
    psid_prefix: Option<String>,
    active_since: Option<String>,
    active_until: Option<String>,
}

/// Turns a batch of records into the bytes of the export (empty when none is exported).
type Chunker<T> = fn(&Store, &T, Vec<ConversationRecord>) -> Result<Vec<u8>, ExportError>;

/// Where a walk of the conversation records stands.
struct Walk<T> {
    store: Store,
    /// What each step needs besides the store (the filter, the CSV's columns).
    with: Arc<T>,
    page_id: Option<String>,
    /// The last record read; `None` before the first step.
    after: Option<ConversationKey>,
    finished: bool,
}

impl<T: Send + Sync + 'static> Walk<T> {
    fn new(store: Store, with: T, page_id: Option<String>) -> Self {
        Walk {
            store,
            with: Arc::new(with),
            page_id,
            after: None,
            finished: false,
        }
    }

    /// The next non-empty chunk: each step reads a batch of records on the blocking pool
    /// and `chunk` turns the batch into bytes. `None` once every record was read.
    async fn next_chunk(mut self, chunk: Chunker<T>) -> Result<Option<(Bytes, Self)>, ExportError> {
        while !self.finished {
            let (store, with) = (self.store.clone(), self.with.clone());
            let (page_id, after) = (self.page_id.clone(), self.after.clone());
            let (bytes, last) = web::block(move || {
                let batch = store.conversations_after(page_id.as_deref(), after.as_ref(), BATCH)?;
                let last = (batch.len() >= BATCH)
                    .then(|| batch.last().map(ConversationRecord::key))
                    .flatten();
                Ok::<_, ExportError>((chunk(&store, &with, batch)?, last))
            })
            .await
            .map_err(|error| ExportError::Reader(error.to_string()))??;
            self.finished = last.is_none();
            self.after = last;
            if !bytes.is_empty() {
                return Ok(Some((Bytes::from(bytes), self)));
            }
        }
        Ok(None)
    }
}

/// `GET /admin/export/conversations.jsonl`: every conversation document, one per line.
async fn conversations(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ExportError> {
    authorize(&req, &state)?;
    let query: ExportQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|error| AdminError::BadQuery(error.to_string()))?;
    let filter = record_filter(
        query.page,
        query.psid_prefix,
        query.paused,
        query.active_since,
        query.active_until,
    )?;
    let page_id = filter.page_id.clone();
    let walk = Walk::new(state.store.clone(), filter, page_id);
    let lines = stream::try_unfold(walk, |walk| walk.next_chunk(jsonl_lines));
    Ok(HttpResponse::Ok()
        .content_type(JSONL_CONTENT_TYPE)
        .streaming(lines))
}

/// The documents of a batch's conversations that pass the filter, one JSON line each.
fn jsonl_lines(
    store: &Store,
    filter: &ListFilter,
    batch: Vec<ConversationRecord>,
) -> Result<Vec<u8>, ExportError> {
    let mut lines = Vec::new();
    for record in batch {
        if is_tombstone(&record) || !filter.matches(&record) {
            continue;
        }
        let document = inspect::document_of(store, record, None)?;
        serde_json::to_writer(&mut lines, &document)
            .map_err(|error| ExportError::Encode(error.to_string()))?;
        lines.push(b'\n');
    }
    Ok(lines)
}

/// What a CSV step needs: the tree, and the question ids of the header in column order.
struct Columns {
    tree: String,
    ids: Vec<String>,
}

/// `GET /admin/export/trees/{name}.csv`: one row per conversation that answered the tree.
async fn tree(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ExportError> {
    authorize(&req, &state)?;
    let tree = path.into_inner();
    // First pass: the header's columns, and whether anyone answered the tree at all
    // (decided before the answer's status is sent).
    let store = state.store.clone();
    let name = tree.clone();
    let ids = web::block(move || question_ids(&store, &name))
        .await
        .map_err(|error| ExportError::Reader(error.to_string()))??
        .ok_or_else(|| ExportError::UnknownTree { name: tree.clone() })?;
    let mut header = csv_writer();
    let fixed = ["page_id", "psid", "status"].map(String::from);
    write_row(&mut header, fixed.iter().chain(ids.iter()))?;
    let header = header
        .into_inner()
        .map_err(|error| ExportError::Encode(error.to_string()))?;
    // Second pass: the rows, streamed.
    let walk = Walk::new(state.store.clone(), Columns { tree, ids }, None);
    let rows = stream::try_unfold(walk, |walk| walk.next_chunk(csv_rows));
    let body = stream::StreamExt::chain(
        stream::once(async move { Ok::<_, ExportError>(Bytes::from(header)) }),
        rows,
    );
    Ok(HttpResponse::Ok()
        .content_type(CSV_CONTENT_TYPE)
        .streaming(body))
}

/// The question ids of every answer to `tree`, in first-seen order; `None` when no
/// conversation answered it.
fn question_ids(store: &Store, tree: &str) -> Result<Option<Vec<String>>, ExportError> {
    let mut ids: Vec<String> = Vec::new();
    let mut found = false;
    let mut after: Option<ConversationKey> = None;
    loop {
        let batch = store.conversations_after(None, after.as_ref(), BATCH)?;
        let Some(last) = batch.last() else { break };
        after = Some(last.key());
        for record in &batch {
            if is_tombstone(record) {
                continue;
            }
            let Some(answers) = TreeAnswers::of(&record.state, tree) else {
                continue;
            };
            found = true;
            for (id, _) in answers.answers {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if batch.len() < BATCH {
            break;
        }
    }
    Ok(found.then_some(ids))
}

/// The CSV rows of a batch's conversations that answered the tree.
fn csv_rows(
    _store: &Store,
    columns: &Columns,
    batch: Vec<ConversationRecord>,
) -> Result<Vec<u8>, ExportError> {
    let mut writer = csv_writer();
    for record in batch {
        if is_tombstone(&record) {
            continue;
        }
        let Some(answers) = TreeAnswers::of(&record.state, &columns.tree) else {
            continue;
        };
        // A question asked twice (a loop in the tree) keeps its last answer.
        let by_id: HashMap<&str, &str> = answers
            .answers
            .iter()
            .map(|(id, answer)| (id.as_str(), answer.as_str()))
            .collect();
        let fixed = [
            record.page_id.as_str(),
            record.psid.as_str(),
            answers.status,
        ];
        let cells = fixed.into_iter().chain(
            columns
                .ids
                .iter()
                .map(|id| by_id.get(id.as_str()).copied().unwrap_or_default()),
        );
        write_row(&mut writer, cells)?;
    }
    writer
        .into_inner()
        .map_err(|error| ExportError::Encode(error.to_string()))
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().from_writer(Vec::new())
}

fn write_row<S: AsRef<str>>(
    writer: &mut csv::Writer<Vec<u8>>,
    cells: impl Iterator<Item = S>,
) -> Result<(), ExportError> {
    writer
        .write_record(cells.map(|cell| neutralized(cell.as_ref())))
        .map_err(|error| ExportError::Encode(error.to_string()))
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return before one) gets a leading `'`, so it is shown as text (CSV injection).
fn neutralized(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

/// One conversation's answers to one tree: its current interview when it is of that tree,
/// else its latest earlier interview of it.
struct TreeAnswers {
    status: &'static str,
    /// (question id, answer as the user wrote it), in the order asked.
    answers: Vec<(String, String)>,
}

impl TreeAnswers {
    /// `None` when the state is not an interview's, or has no interview of `tree`.
    fn of(state: &Value, tree: &str) -> Option<TreeAnswers> {
        // Read from the stored JSON in place; a state of another flow does not fit.
        let state = InterviewState::deserialize(state).ok()?;
        let pairs = |answers: Vec<crate::flow::tree::AnswerPair>| {
            answers
                .into_iter()
                .map(|pair| (pair.id, pair.answer))
                .collect()
        };
        let current = match &state.stage {
            _ if state.tree.as_deref() != Some(tree) => None,
            Stage::NotStarted => None,
            Stage::Asking { .. } => Some("in_progress"),
            Stage::Completed => Some("completed"),
            Stage::Canceled { .. } => Some("canceled"),
        };
        if let Some(status) = current {
            return Some(TreeAnswers {
                status,
                answers: pairs(state.answers),
            });
        }
        let latest = state.earlier.into_iter().rev().find(|r| r.tree == tree)?;
        Some(TreeAnswers {
            status: match latest.status {
                Outcome::Completed => "completed",
                Outcome::Canceled => "canceled",
            },
            answers: pairs(latest.answers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralized_and_others_left_alone() {
        for formula in ["=1+1", "+1", "-2", "@SUM(A1)", "\t=x", "\r=x"] {
            assert_eq!(neutralized(formula), format!("'{formula}"));
        }
        for plain in ["", "a=b", "1-2", "hello", "'quoted"] {
            assert_eq!(neutralized(plain), plain);
        }
    }

    #[test]
    fn the_current_interview_wins_over_earlier_ones_and_the_latest_earlier_is_used() {
        let pair = |id: &str, answer: &str| json!({"id": id, "question": "?", "answer": answer});
        let earlier = |tree: &str, answer: &str| json!({"tree": tree, "status": "completed", "answers": [pair("q", answer)], "values": {}});
        let state = json!({
            "stage": {"status": "asking", "question": "r", "tries": 0},
            "tree": "jobs",
            "answers": [pair("q", "now")],
            "earlier": [earlier("jobs", "first"), earlier("poll", "p1"), earlier("poll", "p2")]
        });
        let jobs = TreeAnswers::of(&state, "jobs").unwrap();
        assert_eq!(jobs.status, "in_progress");
        assert_eq!(jobs.answers, [("q".to_string(), "now".to_string())]);
        let poll = TreeAnswers::of(&state, "poll").unwrap();
        assert_eq!(
            (poll.status, poll.answers[0].1.as_str()),
            ("completed", "p2")
        );
        assert!(TreeAnswers::of(&state, "other").is_none());
        assert!(TreeAnswers::of(&json!({"messages": 3}), "jobs").is_none());
    }
}

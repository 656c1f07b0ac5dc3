//! The admin API's actions on one conversation: pause and resume it (hand the user to a
//! human and back), send a text as the page, retry failed replies, set or reset the
//! flow's state.
//!
//! `POST /admin/conversations/{psid}/pause`, `/resume`, `/send` (`{"text": "..."}`),
//! `/retry` (`{"seq": N}` for one failed reply, `{}` for all), `/skip` and `/replay`
//! (`{"seq": N}`: an event the flow failed on), `/start` (`{"tree": "name"}`),
//! `PUT /admin/conversations/{psid}/state` (the state as the body) and `DELETE` of the
//! same. `?page=ID` picks the conversation when the psid talks to several pages. Each
//! action is checked here (who asks, which conversation, whether a state fits the flow),
//! then routed as an [`EngineEvent::Operator`] to the conversation's actor, which handles
//! it in order with the user's own events; the answer waits until that turn is committed
//! on disk and is the conversation's new document. `route_action` is that routing on its
//! own, which Meta's data-deletion callback (`webhook/deletion.rs`) uses to forget a user.
//! Must not: change a conversation itself, or answer before the action is durable.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use crate::admin::{authorize, AdminError, AdminState};
use crate::engine::event::{EngineEvent, OperatorAction, OperatorEvent};
use crate::engine::load::Load;
use crate::engine::supervisor::{Route, Supervisor};
use crate::flow::{FlowHandle, Reply};
use crate::inspect;
use crate::pages::Pages;
use crate::store::journal::AwaitedPost;
use crate::store::{ConversationKey, ConversationRecord, Store};

/// How long an action waits for its conversation's turn before it is given up.
const ACTION_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct ActionState {
    pub admin: AdminState,
    pub supervisor: Addr<Supervisor>,
    /// The pages served: the flow of each (a state is checked against its page's flow).
    pub pages: Pages,
    pub load: Arc<Load>,
    /// On a cluster node: says which conversations this node serves now.
    pub replicator: Option<Arc<dyn crate::store::Replicator>>,
}

#[derive(Debug, Error)]
pub enum ActionError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("the body must be JSON: {0}")]
    BadJson(String),
    #[error("the state does not fit the flow's state type: {0}")]
    StateDoesNotFit(String),
    #[error("the text cannot be sent: {0}")]
    BadText(String),
    #[error("nothing to retry: {0}")]
    NothingToRetry(String),
    #[error("no failed event there: {0}")]
    NoFailedEvent(String),
    #[error("the flow did not start it: {0}")]
    NotStarted(String),
    #[error(transparent)]
    NotApplied(#[from] NotApplied),
}

/// Why a routed action was not applied (`route_action`).
#[derive(Debug, Error)]
pub enum NotApplied {
    #[error("the conversation is busy; the action was not applied, try again")]
    Busy,
    #[error("the action could not be committed; the server log says why")]
    NotCommitted,
    /// A cluster node that does not serve the conversation now (its partition is moving
    /// between nodes): not applied, and the admin layer sends it on once its holder is
    /// known (`admin::forward`).
    #[error("the conversation is moving between cluster nodes; try again")]
    NotServedHere,
}

impl ResponseError for ActionError {
    fn status_code(&self) -> StatusCode {
        match self {
            ActionError::Admin(error) => error.status_code(),
            ActionError::BadJson(_) | ActionError::StateDoesNotFit(_) | ActionError::BadText(_) => {
                StatusCode::BAD_REQUEST
            }
            ActionError::NothingToRetry(_) | ActionError::NoFailedEvent(_) => StatusCode::CONFLICT,
            ActionError::NotStarted(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ActionError::NotApplied(NotApplied::Busy | NotApplied::NotServedHere) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ActionError::NotApplied(NotApplied::NotCommitted) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, ActionError::NotApplied(NotApplied::NotServedHere)) {
            return crate::admin::forward::moving_between_nodes();
        }
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/conversations/{psid}/pause",
        web::post().to(|req, path, query, state| {
            act(req, path, query, state, |_| Ok(OperatorAction::Pause))
        }),
    )
    .route(
        "/admin/conversations/{psid}/resume",
        web::post().to(|req, path, query, state| {
            act(req, path, query, state, |_| Ok(OperatorAction::Resume))
        }),
    )
    .route("/admin/conversations/{psid}/send", web::post().to(send))
    .route("/admin/conversations/{psid}/start", web::post().to(start))
    .route("/admin/conversations/{psid}/retry", web::post().to(retry))
    .route(
        "/admin/conversations/{psid}/skip",
        web::post().to(|req, path, query, state, body| {
            on_failed_event(req, path, query, state, body, |entry| {
                OperatorAction::Skip { entry }
            })
        }),
    )
    .route(
        "/admin/conversations/{psid}/replay",
        web::post().to(|req, path, query, state, body| {
            on_failed_event(req, path, query, state, body, |entry| {
                OperatorAction::Replay { entry }
            })
        }),
    )
    .route(
        "/admin/conversations/{psid}/state",
        web::put().to(set_state),
    )
    .route("/admin/conversations/{psid}", web::delete().to(forget))
    .route(
        "/admin/conversations/{psid}/state",
        web::delete().to(|req, path, query, state| {
            act(req, path, query, state, |_| Ok(OperatorAction::ResetState))
        }),
    );
}

/// What an action is checked against before it is routed.
struct Target<'a> {
    flow: &'a FlowHandle,
    store: &'a Store,
    record: &'a ConversationRecord,
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<String>,
}

#[derive(Deserialize)]
struct SendBody {
    text: String,
}

/// `{"seq": N}` retries the reply of transcript entry N; `{}` every failed reply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    seq: Option<u64>,
}

async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    body: web::Bytes,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, move |target| {
        let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
            RetryBody { seq: None }
        } else {
            serde_json::from_slice(&body).map_err(|e| ActionError::BadJson(e.to_string()))?
        };
        let failed = target
            .store
            .failed_replies(&target.record.key())
            .map_err(|e| AdminError::from(inspect::InspectError::from(e)))?;
        let retried = failed
            .iter()
            .any(|(entry, _)| body.seq.is_none_or(|seq| seq == *entry));
        if !retried {
            return Err(ActionError::NothingToRetry(match body.seq {
                Some(seq) => format!("transcript entry {seq} is not a failed reply"),
                None => "no reply of this conversation failed".into(),
            }));
        }
        Ok(OperatorAction::Retry { entry: body.seq })
    })
    .await
}

/// `{"seq": N}`: the transcript entry of a failed event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedEventBody {
    seq: u64,
}

/// `POST .../skip` and `.../replay`: an action on one event the flow failed on, refused
/// (409) unless that entry is a failed event still kept.
async fn on_failed_event(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    body: web::Bytes,
    action: fn(u64) -> OperatorAction,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, move |target| {
        let body: FailedEventBody =
            serde_json::from_slice(&body).map_err(|e| ActionError::BadJson(e.to_string()))?;
        let kept = target
            .store
            .failed_events(&target.record.key())
            .map_err(|e| AdminError::from(inspect::InspectError::from(e)))?;
        if !kept.iter().any(|(entry, _)| *entry == body.seq) {
            return Err(ActionError::NoFailedEvent(format!(
                "transcript entry {} is not an event the flow failed on (or it was replayed \
                 or skipped already)",
                body.seq
            )));
        }
        Ok(action(body.seq))
    })
    .await
}

/// `{"tree": "name"}`: what the flow should start (an interview tree's name).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    tree: String,
}

/// `POST .../start`: the flow starts (or restarts) the named interview tree for a user
/// who has written before; 422 with the flow's reason when it could not.
async fn start(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    body: web::Bytes,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, move |_| {
        let body: StartBody =
            serde_json::from_slice(&body).map_err(|e| ActionError::BadJson(e.to_string()))?;
        if body.tree.trim().is_empty() {
            return Err(ActionError::BadJson("tree must name a tree".into()));
        }
        Ok(OperatorAction::Start { tree: body.tree })
    })
    .await
}

async fn send(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    body: web::Bytes,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, move |_| {
        let body: SendBody =
            serde_json::from_slice(&body).map_err(|e| ActionError::BadJson(e.to_string()))?;
        Reply::text(&body.text).map_err(|e| ActionError::BadText(e.to_string()))?;
        Ok(OperatorAction::Send { text: body.text })
    })
    .await
}

async fn set_state(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    body: web::Bytes,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, move |target| {
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| ActionError::BadJson(e.to_string()))?;
        target
            .flow
            .0
            .check_state(&value)
            .map_err(ActionError::StateDoesNotFit)?;
        Ok(OperatorAction::SetState(value))
    })
    .await
}

/// `DELETE /admin/conversations/{psid}`: forgets the user; answers what was forgotten.
async fn forget(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
) -> Result<HttpResponse, ActionError> {
    act(req, path, query, state, |_| Ok(OperatorAction::Forget)).await
}

/// Authorizes, finds the conversation, builds the action, routes it and waits for its
/// turn to be durable; answers the conversation's new document (or, for a forgotten
/// user, what was forgotten).
async fn act(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<ActionState>,
    action: impl FnOnce(&Target) -> Result<OperatorAction, ActionError>,
) -> Result<HttpResponse, ActionError> {
    authorize(&req, &state.admin)?;
    let psid = path.into_inner();
    let store = &state.admin.store;
    let record = inspect::find(store, &psid, query.page.as_deref()).map_err(AdminError::from)?;
    let flow = state.pages.current().flow_for(&record.page_id).clone();
    let target = Target {
        flow: &flow,
        store,
        record: &record,
    };
    let action = action(&target)?;
    let forgetting = action == OperatorAction::Forget;
    let key = record.key();
    let served_here = || {
        state
            .replicator
            .as_ref()
            .is_none_or(|replicator| replicator.owns(record.channel, &key))
    };
    if !served_here() {
        return Err(NotApplied::NotServedHere.into());
    }
    match route_action(&state.supervisor, &state.load, &key, action.clone()).await {
        // Refused because its partition left this node meanwhile.
        Err(NotApplied::NotCommitted) if !served_here() => Err(NotApplied::NotServedHere),
        routed => routed,
    }?;
    if forgetting {
        return Ok(HttpResponse::Ok().json(json!({
            "forgotten": {"psid": key.psid, "page_id": key.page_id}
        })));
    }
    let doc =
        inspect::document(store, &key.psid, Some(&key.page_id), None).map_err(AdminError::from)?;
    if let Some(failure) = failed_start(&action, &doc) {
        return Err(ActionError::NotStarted(failure));
    }
    Ok(HttpResponse::Ok().json(doc))
}

/// Routes `action` to the conversation of `key` as an operator's event, in order with the
/// user's own events, and waits until its turn is durable (at most `ACTION_DEADLINE`):
/// how the admin API and Meta's data-deletion callback act on a conversation.
pub(crate) async fn route_action(
    supervisor: &Addr<Supervisor>,
    load: &Load,
    key: &ConversationKey,
    action: OperatorAction,
) -> Result<(), NotApplied> {
    let kind = action.kind_name();
    let post = AwaitedPost::new(1);
    let events = post
        .refs()
        .into_iter()
        .map(|journal| {
            (
                journal,
                EngineEvent::Operator(OperatorEvent {
                    key: key.clone(),
                    action: action.clone(),
                }),
            )
        })
        .collect();
    load.events_in(1);
    supervisor.do_send(Route { events });
    post.wait(tokio::time::Instant::now() + ACTION_DEADLINE)
        .await;
    if !post.all_committed() {
        post.take_unfinished();
        log::warn!("{key}: operator action {kind} not committed");
        // Given up before its turn began, it never will be applied: safe to try again.
        return Err(if post.is_moved(0) {
            NotApplied::Busy
        } else {
            NotApplied::NotCommitted
        });
    }
    log::info!("{key}: operator action {kind} applied");
    Ok(())
}

/// Why the flow refused a `start` just applied (its entry is the newest `operator_start`:
/// a conversation's turns run one at a time).
fn failed_start(action: &OperatorAction, doc: &inspect::ConversationDocument) -> Option<String> {
    if !matches!(action, OperatorAction::Start { .. }) {
        return None;
    }
    let entry = doc
        .transcript
        .iter()
        .rev()
        .find(|line| line.kind == action.kind_name())?;
    (entry.status == crate::store::Status::Failed).then(|| {
        entry
            .error
            .as_ref()
            .map_or_else(|| "no reason recorded".into(), |e| e.message.clone())
    })
}

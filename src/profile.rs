//! Messenger Profile as code: what differs between the profile a page declares in the
//! pages file (`[pages.profile]`) and its live one, and making the live one match
//! (`colloquy profile diff|apply`).
//!
//! Owns the comparison (a declared property whose live value differs, or is unset, is
//! set; a property the file no longer declares is deleted) and the calls that apply it:
//! at most one `POST` and one `DELETE` per page, none for a page already in sync. A page
//! without a `profile` table is not managed. Must not: touch a page the command was not
//! asked about, stop at one page's failure, or show a token.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::graph::{CallError, GraphClient, PageAuth};
use crate::messenger::inbound::Channel;
use crate::pages::file::profile_fields;
use crate::pages::{Page, PageTable};

/// One property to change on the live profile.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Declared, and unset or different live.
    Set { field: String, value: Value },
    /// Set live, no longer declared.
    Delete { field: String },
}

/// What the file declares against what is live: the changes that make them equal, in
/// the order of `fields` (the properties the page's channel has).
pub fn diff(
    fields: &[&str],
    declared: &Map<String, Value>,
    live: &Map<String, Value>,
) -> Vec<Change> {
    fields
        .iter()
        .filter_map(|field| match (declared.get(*field), live.get(*field)) {
            (Some(wanted), current) if current != Some(wanted) => Some(Change::Set {
                field: field.to_string(),
                value: wanted.clone(),
            }),
            (None, Some(_)) => Some(Change::Delete {
                field: field.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// Why one page's profile could not be read or applied.
#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("page {page} is not in the pages file")]
    UnknownPage { page: String },
    #[error("{error}")]
    Graph {
        page: String,
        #[source]
        error: Box<CallError>,
    },
}

/// What one page's run came to.
#[derive(Debug)]
pub enum Outcome {
    /// The page declares no profile.
    NotManaged,
    /// The changes found (and, when applying, made).
    Changes(Vec<Change>),
}

/// The pages a command works on: `only` (an error when it is not in the file), or all.
pub fn pages_of<'t>(
    table: &'t PageTable,
    only: Option<&str>,
) -> Result<Vec<&'t Page>, ProfileError> {
    match only {
        Some(id) => {
            table
                .page(id)
                .map(|page| vec![page])
                .ok_or_else(|| ProfileError::UnknownPage {
                    page: id.to_string(),
                })
        }
        None => Ok(table.pages()),
    }
}

/// The changes `page` needs; made too when `apply`.
pub async fn run(
    graph: &GraphClient,
    table: &PageTable,
    page: &Page,
    apply: bool,
) -> Result<Outcome, ProfileError> {
    let Some(declared) = page.profile.as_ref().and_then(Value::as_object) else {
        return Ok(Outcome::NotManaged);
    };
    let graph_error = |error| ProfileError::Graph {
        page: page.id.clone(),
        error: Box::new(error),
    };
    let auth = PageAuth::of(
        &page.id,
        page.access_token.clone(),
        table.app(&page.app).map(|app| app.secret.clone()),
    );
    let platform = (page.channel == Channel::Instagram).then_some("instagram");
    let fields = profile_fields(page.channel);
    let live = graph
        .messenger_profile(&auth, fields, platform)
        .await
        .map_err(graph_error)?;
    let changes = diff(fields, declared, live.as_object().unwrap_or(&Map::new()));
    if apply {
        apply_changes(graph, &auth, platform, &changes)
            .await
            .map_err(graph_error)?;
    }
    Ok(Outcome::Changes(changes))
}

/// One `POST` with every property to set, one `DELETE` with every one to remove.
async fn apply_changes(
    graph: &GraphClient,
    auth: &PageAuth,
    platform: Option<&str>,
    changes: &[Change],
) -> Result<(), CallError> {
    let mut set = Map::new();
    let mut delete = Vec::new();
    for change in changes {
        match change {
            Change::Set { field, value } => {
                set.insert(field.clone(), value.clone());
            }
            Change::Delete { field } => delete.push(field.as_str()),
        }
    }
    if !set.is_empty() {
        graph
            .set_messenger_profile(auth, &Value::Object(set), platform)
            .await?;
    }
    if !delete.is_empty() {
        graph
            .delete_messenger_profile(auth, &delete, platform)
            .await?;
    }
    Ok(())
}

/// A page's outcome as the command prints it.
pub fn describe(page: &Page, outcome: &Outcome, applied: bool) -> String {
    let changes = match outcome {
        Outcome::NotManaged => {
            return format!(
                "page {}: no [pages.profile] in the file; not managed\n",
                page.id
            )
        }
        Outcome::Changes(changes) if changes.is_empty() => {
            return format!("page {}: in sync\n", page.id)
        }
        Outcome::Changes(changes) => changes,
    };
    let verb = if applied { "applied" } else { "differs" };
    let mut out = format!("page {} ({verb}):\n", page.id);
    for change in changes {
        match change {
            Change::Set { field, value } => out.push_str(&format!("  set {field} = {value}\n")),
            Change::Delete { field } => out.push_str(&format!("  delete {field}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn what_differs_is_set_what_is_gone_is_deleted_and_the_same_is_left() {
        let declared = object(json!({
            "get_started": {"payload": "START"},
            "greeting": [{"locale": "default", "text": "Hello"}],
        }));
        let live = object(json!({
            "get_started": {"payload": "START"},
            "greeting": [{"locale": "default", "text": "Hi"}],
            "ice_breakers": [],
        }));
        assert_eq!(
            diff(&crate::pages::file::PROFILE_FIELDS, &declared, &live),
            vec![
                Change::Set {
                    field: "greeting".into(),
                    value: json!([{"locale": "default", "text": "Hello"}]),
                },
                Change::Delete {
                    field: "ice_breakers".into()
                },
            ]
        );
        assert!(diff(&crate::pages::file::PROFILE_FIELDS, &declared, &declared).is_empty());
    }

    #[test]
    fn an_unset_live_property_is_set() {
        let declared = object(json!({"ice_breakers": [{"locale": "default"}]}));
        assert_eq!(
            diff(&crate::pages::file::PROFILE_FIELDS, &declared, &Map::new()),
            vec![Change::Set {
                field: "ice_breakers".into(),
                value: json!([{"locale": "default"}]),
            }]
        );
    }
}

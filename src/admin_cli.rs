//! `colloquy admin ...`: the admin API of a running server, from the terminal.
//!
//! Every subcommand is one call (or, for `list --all` and the exports, a paged or
//! streamed series of calls) to the admin listener with the admin token as a bearer
//! token, and reports what the server answered: the same errors as the API (a 409's
//! reason, a 400 naming the bad input), with a non-zero exit. Part of the binary's edge,
//! so it uses `anyhow`. Must not: open the store, or act on a conversation any other way
//! than through the API.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::config::DEFAULT_ADMIN_BIND;
use crate::inspect::{self, ConversationDocument, ConversationListPage};

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
    /// Base URL of the running server's admin listener.
    #[arg(long, env = "COLLOQUY_ADMIN_URL", global = true)]
    pub admin_url: Option<String>,
    /// Admin address of the running server (to derive the admin URL).
    #[arg(long, env = "COLLOQUY_ADMIN_BIND", default_value = DEFAULT_ADMIN_BIND, global = true)]
    pub admin_bind: String,
    /// The server's admin token.
    #[arg(
        long,
        env = "COLLOQUY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which conversation an action is for.
#[derive(Debug, Args)]
pub struct Target {
    /// The user's page-scoped id.
    pub psid: String,
    /// The page, when the psid talks to several pages.
    #[arg(long)]
    pub page: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List conversations, newest activity first.
    List {
        #[arg(long)]
        page: Option<String>,
        /// Only paused (true) or only not paused (false) conversations.
        #[arg(long)]
        paused: Option<bool>,
        #[arg(long)]
        psid_prefix: Option<String>,
        /// Only conversations with (true) or without (false) failed replies.
        #[arg(long)]
        failed: Option<bool>,
        /// Only conversations with (true) or without (false) events the flow failed on.
        #[arg(long)]
        stuck: Option<bool>,
        /// Only conversations in this interview tree.
        #[arg(long)]
        tree: Option<String>,
        /// in_progress, completed, cancelled or not_started.
        #[arg(long)]
        tree_status: Option<String>,
        /// Conversations per page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Where to start: the `next` cursor a previous list printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow the cursor to the end.
        #[arg(long)]
        all: bool,
    },
    /// Send failed replies again: the one of transcript entry --seq, or all of them.
    Retry {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        seq: Option<u64>,
    },
    /// Leave an event the flow failed on as it is (no longer kept for a replay).
    Skip {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        seq: u64,
    },
    /// Run the flow again on an event it failed on, as it first arrived.
    Replay {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        seq: u64,
    },
    /// Reset the flow's state to a new user's, or set it (--set JSON).
    Reset {
        #[command(flatten)]
        target: Target,
        /// The state to set, as JSON (must fit the flow's state type).
        #[arg(long, value_name = "JSON")]
        set: Option<String>,
    },
    /// Hand the user to a human: the flow stops answering them.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Give the user back to the flow.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Message the user as the page.
    Send {
        #[command(flatten)]
        target: Target,
        /// The text to send.
        text: String,
    },
    /// Start (or restart) an interview tree for a user who has written before.
    Start {
        #[command(flatten)]
        target: Target,
        /// The tree's name.
        tree: String,
    },
    /// Write an export: `conversations` (JSON Lines) or `tree NAME` (CSV of answers).
    Export {
        /// `conversations` or `tree`.
        what: String,
        /// The interview tree's name, for `tree`.
        name: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Forget the user: transcript, state, timers and owed replies go.
    Forget {
        #[command(flatten)]
        target: Target,
    },
}

/// The admin API of one server.
pub struct AdminClient {
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn from_args(args: &AdminArgs) -> anyhow::Result<AdminClient> {
        let base = args
            .admin_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.admin_bind));
        let token = args
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("missing required setting COLLOQUY_ADMIN_TOKEN (or the flag --admin-token)")
            })?;
        Ok(AdminClient::new(&base, token))
    }

    /// One call with a JSON answer; the server's error as the error otherwise.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let client = awc::Client::new();
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            "PUT" => client.put(url),
            "DELETE" => client.delete(url),
            other => bail!("no such method: {other}"),
        }
        .bearer_auth(&self.token);
        let sent = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let mut response =
            sent.map_err(|e| anyhow!("cannot reach the server at {}: {e}", self.base))?;
        let status = response.status();
        let bytes = response
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| anyhow!("unreadable answer from {}: {e}", self.base))?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("server answered {status}: {message}");
        }
        Ok(answer)
    }

    /// Streams a GET's body into `out` as it arrives.
    async fn download(&self, path: &str, out: &mut dyn Write) -> anyhow::Result<u64> {
        let mut response = awc::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(std::time::Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the server at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"].as_str().unwrap_or("no error message");
            bail!("server answered {status}: {message}");
        }
        let mut written = 0u64;
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| anyhow!("the export broke off: {e}"))?;
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        out.flush()?;
        Ok(written)
    }
}

/// `?key=value&...` of the given pairs (absent values left out), or "".
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let present: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    if present.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(present).unwrap_or_default()
    )
}

/// One path component, percent-encoded (a space as `%20`: `+` is a plus in a path).
pub fn url_component(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').replace('+', "%20"))
        .unwrap_or_default()
}

fn conversation_path(target: &Target, action: &str) -> String {
    let mut path = format!("/admin/conversations/{}", url_component(&target.psid));
    if !action.is_empty() {
        path.push('/');
        path.push_str(action);
    }
    path + &query(&[("page", target.page.clone())])
}

/// Runs one `colloquy admin` command and returns what it prints.
pub async fn run(args: AdminArgs) -> anyhow::Result<String> {
    let client = AdminClient::from_args(&args)?;
    let (done, answer) = match &args.command {
        AdminCommand::List {
            page,
            paused,
            psid_prefix,
            failed,
            stuck,
            tree,
            tree_status,
            limit,
            cursor,
            all,
        } => {
            let filters = [
                ("limit", Some(limit.to_string())),
                ("page", page.clone()),
                ("paused", paused.map(|p| p.to_string())),
                ("psid_prefix", psid_prefix.clone()),
                ("failed", failed.map(|p| p.to_string())),
                ("stuck", stuck.map(|p| p.to_string())),
                ("tree", tree.clone()),
                ("tree_status", tree_status.clone()),
            ];
            return list(&client, &filters, cursor.clone(), *all, args.json).await;
        }
        AdminCommand::Retry { target, seq } => (
            format!("retried failed replies of {}", target.psid),
            client
                .call(
                    "POST",
                    &conversation_path(target, "retry"),
                    Some(json!({ "seq": seq })),
                )
                .await?,
        ),
        AdminCommand::Skip { target, seq } => (
            format!("skipped entry {seq} of {}", target.psid),
            client
                .call(
                    "POST",
                    &conversation_path(target, "skip"),
                    Some(json!({ "seq": seq })),
                )
                .await?,
        ),
        AdminCommand::Replay { target, seq } => (
            format!("replayed entry {seq} of {}", target.psid),
            client
                .call(
                    "POST",
                    &conversation_path(target, "replay"),
                    Some(json!({ "seq": seq })),
                )
                .await?,
        ),
        AdminCommand::Reset { target, set: None } => (
            format!("reset the state of {}", target.psid),
            client
                .call("DELETE", &conversation_path(target, "state"), None)
                .await?,
        ),
        AdminCommand::Reset {
            target,
            set: Some(state),
        } => {
            let state: Value = serde_json::from_str(state).context("--set must be JSON")?;
            (
                format!("set the state of {}", target.psid),
                client
                    .call("PUT", &conversation_path(target, "state"), Some(state))
                    .await?,
            )
        }
        AdminCommand::Pause { target } => (
            format!("paused {}: a human answers them now", target.psid),
            client
                .call("POST", &conversation_path(target, "pause"), None)
                .await?,
        ),
        AdminCommand::Resume { target } => (
            format!("resumed {}: the flow answers them again", target.psid),
            client
                .call("POST", &conversation_path(target, "resume"), None)
                .await?,
        ),
        AdminCommand::Send { target, text } => (
            format!("queued a message to {}", target.psid),
            client
                .call(
                    "POST",
                    &conversation_path(target, "send"),
                    Some(json!({ "text": text })),
                )
                .await?,
        ),
        AdminCommand::Start { target, tree } => (
            format!("started `{tree}` for {}", target.psid),
            client
                .call(
                    "POST",
                    &conversation_path(target, "start"),
                    Some(json!({ "tree": tree })),
                )
                .await?,
        ),
        AdminCommand::Forget { target } => (
            format!("forgot {}", target.psid),
            client
                .call("DELETE", &conversation_path(target, ""), None)
                .await?,
        ),
        AdminCommand::Export { what, name, out } => {
            return export(&client, what, name.as_deref(), out.as_ref()).await;
        }
    };
    if args.json {
        return Ok(serde_json::to_string_pretty(&answer)? + "\n");
    }
    Ok(
        match serde_json::from_value::<ConversationDocument>(answer) {
            Ok(doc) => format!("{done}\n{}", summary(&doc)),
            Err(_) => format!("{done}\n"),
        },
    )
}

/// A line about a conversation after an action: its state of play and last entry.
fn summary(doc: &ConversationDocument) -> String {
    let last = doc
        .transcript
        .last()
        .map(|line| format!("{} #{} ({:?})", line.kind, line.seq, line.status).to_lowercase())
        .unwrap_or_else(|| "no entries".into());
    format!(
        "{} on page {}: {}, {} transcript entries, last {last}\n",
        doc.psid,
        doc.page_id,
        if doc.paused {
            "paused"
        } else {
            "the flow answers"
        },
        doc.transcript.len()
    )
}

async fn list(
    client: &AdminClient,
    filters: &[(&str, Option<String>)],
    mut cursor: Option<String>,
    all: bool,
    as_json: bool,
) -> anyhow::Result<String> {
    let mut conversations = Vec::new();
    let next = loop {
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", cursor.clone()));
        let page: ConversationListPage = serde_json::from_value(
            client
                .call(
                    "GET",
                    &format!("/admin/conversations{}", query(&pairs)),
                    None,
                )
                .await?,
        )?;
        conversations.extend(page.conversations);
        match (all, page.next_cursor) {
            (true, Some(next)) => cursor = Some(next),
            (_, next) => break next,
        }
    };
    if as_json {
        let page = ConversationListPage {
            conversations,
            next_cursor: next,
        };
        return Ok(serde_json::to_string_pretty(&page)? + "\n");
    }
    let mut text = inspect::render_list(&conversations);
    if let Some(next) = next {
        text.push_str(&format!("more: --cursor {next}\n"));
    }
    Ok(text)
}

async fn export(
    client: &AdminClient,
    what: &str,
    name: Option<&str>,
    out: Option<&PathBuf>,
) -> anyhow::Result<String> {
    let path = match (what, name) {
        ("conversations", None) => "/admin/export/conversations.jsonl".to_string(),
        ("tree", Some(name)) => format!("/admin/export/trees/{}.csv", url_component(name)),
        ("tree", None) => {
            bail!("export tree needs the tree's name: colloquy admin export tree NAME")
        }
        ("conversations", Some(_)) => bail!("export conversations takes no name"),
        (other, _) => bail!("unknown export {other:?}: conversations or tree NAME"),
    };
    match out {
        Some(file) => {
            let mut writer = std::io::BufWriter::new(
                std::fs::File::create(file)
                    .with_context(|| format!("cannot create {}", file.display()))?,
            );
            let bytes = client.download(&path, &mut writer).await?;
            Ok(format!("wrote {bytes} bytes to {}\n", file.display()))
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            client.download(&path, &mut lock).await?;
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_the_psid_and_page() {
        let target = Target {
            psid: "a/b c".into(),
            page: Some("p&1".into()),
        };
        assert_eq!(
            conversation_path(&target, "pause"),
            "/admin/conversations/a%2Fb%20c/pause?page=p%261"
        );
    }

    #[test]
    fn absent_filters_are_left_out_of_the_query() {
        assert_eq!(
            query(&[("page", None), ("limit", Some("5".into()))]),
            "?limit=5"
        );
        assert_eq!(query(&[("page", None)]), "");
    }
}

//! The pages this process serves: which app signs each page's webhooks, the page's token,
//! channel, flow and send rate.
//!
//! A [`PageTable`] is one consistent configuration: either the pages file's (`file.rs`),
//! or the single page of the `MESSENGER_*` variables (any page id, sent through `/me`).
//! [`Pages`] is the live handle the webhook, the sender and the conversations read; a
//! reload (`POST /admin/pages/reload`, `SIGHUP`) swaps the whole table at once or, when the
//! file is broken, keeps the running one. Must not: log a secret, do network IO, or know
//! the actors (the sender learns of a reload through [`Pages::watch`]).

pub mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::config::Secret;
use crate::flow::FlowHandle;
pub use crate::messenger::inbound::Channel;
pub use file::PagesError;

/// A Facebook app whose webhooks come here.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// Key of `X-Hub-Signature-256` and of every `appsecret_proof`.
    pub secret: Secret,
    pub verify_token: Secret,
}

/// One page (or Instagram account) of the pages file.
#[derive(Clone)]
pub struct Page {
    pub id: String,
    /// The name of its app in the file.
    pub app: String,
    pub access_token: Secret,
    pub channel: Channel,
    pub flow: FlowHandle,
    /// The `flow` as written; `None` serves the default flow.
    pub flow_spec: Option<String>,
    /// Send API calls per second; `None` takes `COLLOQUY_PAGE_SEND_RATE`.
    pub send_rate: Option<u32>,
    /// The declared Messenger Profile (`[pages.profile]`), as the API's JSON.
    pub profile: Option<Value>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("access_token", &self.access_token)
            .field("channel", &self.channel)
            .field("flow_spec", &self.flow_spec)
            .field("send_rate", &self.send_rate)
            .finish_non_exhaustive()
    }
}

/// How a POST's page relates to the app that signed the POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Served.
    Serve,
    /// A configured page of another app: the whole POST is refused.
    OtherApp,
    /// Not in the pages file: its events are acknowledged, counted and dropped.
    Unknown,
}

/// Where and how one page's Graph calls go.
#[derive(Debug, Clone)]
pub struct SendTarget {
    /// The node of `/{node}/messages`: the page id, or `me` for the single page.
    pub node: String,
    pub token: Secret,
    /// For `appsecret_proof`.
    pub app_secret: Secret,
    /// `None`: the default rate.
    pub send_rate: Option<u32>,
}

/// One consistent configuration of apps and pages.
#[derive(Debug, Clone)]
pub struct PageTable {
    apps: Vec<App>,
    pages: HashMap<String, Page>,
    /// Without a pages file: the one page token, for any page id.
    single_token: Option<Secret>,
    default_flow: FlowHandle,
}

/// The name the single page's app has where apps are named.
pub const SINGLE_APP: &str = "default";

impl PageTable {
    /// The configuration of the `MESSENGER_*` variables: one app, any page, `/me`.
    pub fn single(
        app_secret: Secret,
        verify_token: Secret,
        access_token: Secret,
        flow: FlowHandle,
    ) -> PageTable {
        PageTable {
            apps: vec![App {
                name: SINGLE_APP.to_string(),
                secret: app_secret,
                verify_token,
            }],
            pages: HashMap::new(),
            single_token: Some(access_token),
            default_flow: flow,
        }
    }

    fn from_file(apps: Vec<App>, pages: Vec<Page>, default_flow: FlowHandle) -> PageTable {
        PageTable {
            apps,
            pages: pages
                .into_iter()
                .map(|page| (page.id.clone(), page))
                .collect(),
            single_token: None,
            default_flow,
        }
    }

    /// True when the table came from a pages file.
    pub fn has_pages_file(&self) -> bool {
        self.single_token.is_none()
    }

    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// The pages of the file, by id order.
    pub fn pages(&self) -> Vec<&Page> {
        let mut pages: Vec<&Page> = self.pages.values().collect();
        pages.sort_by(|a, b| a.id.cmp(&b.id));
        pages
    }

    pub fn page(&self, id: &str) -> Option<&Page> {
        self.pages.get(id)
    }

    /// True when `token` is the verify token of any configured app.
    pub fn verify_token_matches(&self, token: &str) -> bool {
        self.apps
            .iter()
            .fold(false, |any, app| app.verify_token.matches(token) | any)
    }

    /// Whether `page_id`'s events, in a body signed by `app`, are served.
    pub fn admission(&self, app: &App, page_id: &str) -> Admission {
        if !self.has_pages_file() {
            return Admission::Serve;
        }
        match self.pages.get(page_id) {
            Some(page) if page.app == app.name => Admission::Serve,
            Some(_) => Admission::OtherApp,
            None => Admission::Unknown,
        }
    }

    /// Where a reply of `page_id` goes, with which token; `None` when the page is no longer
    /// configured.
    pub fn send_target(&self, page_id: &str) -> Option<SendTarget> {
        if let Some(token) = &self.single_token {
            return Some(SendTarget {
                node: "me".to_string(),
                token: token.clone(),
                app_secret: self.apps.first()?.secret.clone(),
                send_rate: None,
            });
        }
        let page = self.pages.get(page_id)?;
        Some(SendTarget {
            node: page.id.clone(),
            token: page.access_token.clone(),
            app_secret: self.app(&page.app)?.secret.clone(),
            send_rate: page.send_rate,
        })
    }

    /// The flow that serves `page_id`'s conversations.
    pub fn flow_for(&self, page_id: &str) -> &FlowHandle {
        self.pages
            .get(page_id)
            .map_or(&self.default_flow, |page| &page.flow)
    }

    /// The channel of a configured page; `None` for a page the table does not list.
    pub fn channel_of(&self, page_id: &str) -> Option<Channel> {
        self.pages.get(page_id).map(|page| page.channel)
    }
}

/// The live configuration: read by everyone, swapped whole by a reload.
#[derive(Clone)]
pub struct Pages {
    current: Arc<RwLock<Arc<PageTable>>>,
    /// The pages file, when there is one.
    file: Option<PathBuf>,
    default_flow: FlowHandle,
    reloaded: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a reload changed, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    pub pages: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Pages whose token, app, flow, rate or channel changed.
    pub changed: Vec<String>,
}

/// Why a reload did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("colloquy runs without a pages file (COLLOQUY_PAGES); there is nothing to reload")]
    NoFile,
    #[error(transparent)]
    Broken(#[from] PagesError),
}

impl Pages {
    /// The pages file at `path`, checked; a broken file is an error listing its problems.
    pub fn load(path: &Path, default_flow: FlowHandle) -> Result<Pages, PagesError> {
        let table = file::load(path, &default_flow)?;
        Ok(Pages::with(table, Some(path.to_path_buf()), default_flow))
    }

    /// A fixed table (the single page of the `MESSENGER_*` variables).
    pub fn fixed(table: PageTable) -> Pages {
        let default_flow = table.default_flow.clone();
        Pages::with(table, None, default_flow)
    }

    fn with(table: PageTable, file: Option<PathBuf>, default_flow: FlowHandle) -> Pages {
        Pages {
            current: Arc::new(RwLock::new(Arc::new(table))),
            file,
            default_flow,
            reloaded: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// The table in force now. Hold it for the whole of one request or send, so that a
    /// reload in between never mixes two configurations.
    pub fn current(&self) -> Arc<PageTable> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes each time a reload took effect.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// Reads the pages file again and, when it is sound, puts it in force for every next
    /// request and send. A broken file changes nothing.
    pub fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let path = self.file.as_ref().ok_or(ReloadError::NoFile)?;
        let table = file::load(path, &self.default_flow)?;
        let summary = summarize(&self.current(), &table);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
        self.reloaded.send_modify(|generation| *generation += 1);
        Ok(summary)
    }
}

fn summarize(old: &PageTable, new: &PageTable) -> ReloadSummary {
    let differs = |a: &Page, b: &Page| {
        a.access_token != b.access_token
            || a.app != b.app
            || a.flow_spec != b.flow_spec
            || a.send_rate != b.send_rate
            || a.channel != b.channel
            || a.profile != b.profile
            || old.app(&a.app).map(|app| &app.secret) != new.app(&b.app).map(|app| &app.secret)
    };
    let mut summary = ReloadSummary {
        pages: new.pages().iter().map(|page| page.id.clone()).collect(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
    };
    for page in new.pages() {
        match old.page(&page.id) {
            None => summary.added.push(page.id.clone()),
            Some(before) if differs(before, page) => summary.changed.push(page.id.clone()),
            Some(_) => {}
        }
    }
    for page in old.pages() {
        if new.page(&page.id).is_none() {
            summary.removed.push(page.id.clone());
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::builtin::by_name;

    fn table(text: &str) -> PageTable {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.toml");
        std::fs::write(&path, text).unwrap();
        file::load(&path, &by_name("thanks").unwrap()).unwrap()
    }

    const TWO_APPS: &str = r#"
[apps.a]
secret = "sa"
verify_token = "va"
[apps.b]
secret = "sb"
verify_token = "vb"
[[pages]]
id = "1"
app = "a"
access_token = "t1"
[[pages]]
id = "2"
app = "b"
access_token = "t2"
"#;

    #[test]
    fn a_page_is_served_only_for_its_own_apps_signature() {
        let table = table(TWO_APPS);
        let (a, b) = (table.app("a").unwrap(), table.app("b").unwrap());
        assert_eq!(table.admission(a, "1"), Admission::Serve);
        assert_eq!(table.admission(b, "1"), Admission::OtherApp);
        assert_eq!(table.admission(a, "3"), Admission::Unknown);
        assert!(table.verify_token_matches("vb"));
        assert!(!table.verify_token_matches("sa"));
    }

    #[test]
    fn the_single_page_serves_any_page_through_me() {
        let flow = by_name("thanks").unwrap();
        let single = PageTable::single(Secret::new("s"), Secret::new("v"), Secret::new("t"), flow);
        let app = &single.apps()[0];
        assert_eq!(single.admission(app, "anything"), Admission::Serve);
        let target = single.send_target("anything").unwrap();
        assert_eq!(target.node, "me");
        assert_eq!(target.token.expose(), "t");
        assert_eq!(target.app_secret.expose(), "s");
    }

    #[test]
    fn a_reload_summary_names_what_was_added_removed_and_changed() {
        let before = table(TWO_APPS);
        let after = table(
            &TWO_APPS
                .replace("access_token = \"t2\"", "access_token = \"t2-new\"")
                .replace("id = \"1\"", "id = \"3\""),
        );
        let summary = summarize(&before, &after);
        assert_eq!(summary.added, ["3"]);
        assert_eq!(summary.removed, ["1"]);
        assert_eq!(summary.changed, ["2"]);
        assert_eq!(summary.pages, ["2", "3"]);
        // A new app secret changes its pages too (their proofs change).
        let resecret = table(&TWO_APPS.replace("secret = \"sb\"", "secret = \"sb2\""));
        assert_eq!(summarize(&before, &resecret).changed, ["2"]);
        assert!(summarize(&before, &before).changed.is_empty());
    }
}

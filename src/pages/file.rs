//! Reads a pages file (`COLLOQUY_PAGES`, TOML) into a [`PageTable`], collecting every
//! problem with its place (`pages[2] (id 123).app`) instead of stopping at the first, so an
//! operator fixes a broken file in one go.
//!
//! Owns the file's format: `[apps.NAME]` with `secret` and `verify_token`, `[[pages]]` with
//! `id`, `app`, `access_token`, `channel`, `flow`, `send_rate` and an optional `profile`;
//! secrets written as a literal, `env:VAR` or `file:PATH` (a relative path is read from
//! the pages file's directory). Must not: put a secret's value in a problem or a log line,
//! keep anything of a broken file, or touch the network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use toml::Table;

use super::{App, Channel, Page, PageTable};
use crate::config::Secret;
use crate::flow::builtin::resolve_flow;
use crate::flow::FlowHandle;

/// The Messenger Profile properties a page's `profile` may declare (the Messenger Profile
/// API's own field names).
pub const PROFILE_FIELDS: [&str; 7] = [
    "get_started",
    "greeting",
    "ice_breakers",
    "persistent_menu",
    "whitelisted_domains",
    "account_linking_url",
    "commands",
];

/// What an Instagram account's profile may declare (Messenger API support for
/// Instagram, `platform=instagram`): no Get Started, greeting or other properties.
pub const INSTAGRAM_PROFILE_FIELDS: [&str; 2] = ["ice_breakers", "persistent_menu"];

/// The profile properties a page of `channel` may declare.
pub fn profile_fields(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Messenger => &PROFILE_FIELDS,
        Channel::Instagram => &INSTAGRAM_PROFILE_FIELDS,
    }
}

/// One thing wrong with a pages file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// A pages file that cannot be served, with every problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the pages file {} cannot be used:\n{}", path.display(), list(problems))]
pub struct PagesError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  - {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and checks the pages file at `path`; `default_flow` serves pages without `flow`.
pub fn load(path: &Path, default_flow: &FlowHandle) -> Result<PageTable, PagesError> {
    let fail = |problems| PagesError {
        path: path.to_path_buf(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        fail(vec![Problem {
            place: path.display().to_string(),
            message: format!("cannot read the file: {error}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut reader = Reader {
        base,
        problems: Vec::new(),
        flows: HashMap::new(),
    };
    let table = reader.table(&text, default_flow);
    match table {
        Some(table) if reader.problems.is_empty() => Ok(table),
        _ => Err(fail(reader.problems)),
    }
}

/// Walks one file, noting problems as it goes.
struct Reader<'a> {
    base: &'a Path,
    problems: Vec<Problem>,
    /// Flows already resolved, by spec: pages that share a flow share one instance.
    flows: HashMap<String, Option<FlowHandle>>,
}

impl Reader<'_> {
    fn problem(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            place: place.into(),
            message: message.into(),
        });
    }

    fn table(&mut self, text: &str, default_flow: &FlowHandle) -> Option<PageTable> {
        let root: Table = match text.parse() {
            Ok(root) => root,
            Err(error) => {
                self.problem("TOML", error.to_string().trim_end().to_string());
                return None;
            }
        };
        for key in root.keys() {
            if key != "apps" && key != "pages" {
                self.problem(
                    key.clone(),
                    "unknown key (expected [apps.NAME] and [[pages]])",
                );
            }
        }
        let apps = self.apps(root.get("apps"));
        let declared: BTreeSet<String> = root
            .get("apps")
            .and_then(toml::Value::as_table)
            .map(|apps| apps.keys().cloned().collect())
            .unwrap_or_default();
        let pages = self.pages(root.get("pages"), &declared, default_flow);
        Some(PageTable::from_file(
            apps.into_values().collect(),
            pages,
            default_flow.clone(),
        ))
    }

    fn apps(&mut self, value: Option<&toml::Value>) -> BTreeMap<String, App> {
        let mut apps = BTreeMap::new();
        let Some(value) = value else {
            self.problem("apps", "missing: declare at least one [apps.NAME]");
            return apps;
        };
        let Some(table) = value.as_table() else {
            self.problem("apps", "must be a table of apps ([apps.NAME])");
            return apps;
        };
        for (name, app) in table {
            let place = format!("apps.{name}");
            let Some(app) = app.as_table() else {
                self.problem(place, "must be a table with secret and verify_token");
                continue;
            };
            self.unknown_keys(&place, app, &["secret", "verify_token"]);
            let secret = self.secret(&place, app, "secret");
            let verify_token = self.secret(&place, app, "verify_token");
            if let (Some(secret), Some(verify_token)) = (secret, verify_token) {
                apps.insert(
                    name.clone(),
                    App {
                        name: name.clone(),
                        secret,
                        verify_token,
                    },
                );
            }
        }
        if table.is_empty() {
            self.problem("apps", "declare at least one [apps.NAME]");
        }
        apps
    }

    fn pages(
        &mut self,
        value: Option<&toml::Value>,
        apps: &BTreeSet<String>,
        default_flow: &FlowHandle,
    ) -> Vec<Page> {
        let Some(value) = value else {
            self.problem("pages", "missing: declare at least one [[pages]]");
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.problem("pages", "must be an array of tables ([[pages]])");
            return Vec::new();
        };
        if items.is_empty() {
            self.problem("pages", "declare at least one [[pages]]");
        }
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut pages = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(item) = item.as_table() else {
                self.problem(format!("pages[{index}]"), "must be a table");
                continue;
            };
            let id = self.page_id(index, item);
            let place = match &id {
                Some(id) => format!("pages[{index}] (id {id})"),
                None => format!("pages[{index}]"),
            };
            if let Some(id) = &id {
                if let Some(first) = seen.insert(id.clone(), place.clone()) {
                    self.problem(&place, format!("duplicate id: {first} has it too"));
                }
            }
            if let Some(page) = self.page(&place, id, item, apps, default_flow) {
                pages.push(page);
            }
        }
        pages
    }

    fn page_id(&mut self, index: usize, item: &Table) -> Option<String> {
        let place = format!("pages[{index}].id");
        let id = match item.get("id") {
            None => {
                self.problem(place, "missing: the page id (entry[].id of its webhooks)");
                return None;
            }
            Some(toml::Value::String(id)) => id.trim().to_string(),
            Some(toml::Value::Integer(id)) => id.to_string(),
            Some(_) => {
                self.problem(place, "must be a string of digits");
                return None;
            }
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            self.problem(place, format!("`{id}` is not a page id (digits)"));
            return None;
        }
        Some(id)
    }

    fn page(
        &mut self,
        place: &str,
        id: Option<String>,
        item: &Table,
        apps: &BTreeSet<String>,
        default_flow: &FlowHandle,
    ) -> Option<Page> {
        self.unknown_keys(
            place,
            item,
            &[
                "id",
                "app",
                "access_token",
                "channel",
                "flow",
                "send_rate",
                "profile",
            ],
        );
        let app = self.page_app(place, item, apps);
        let access_token = self.secret(place, item, "access_token");
        let channel = self.channel(place, item);
        let (flow, flow_spec) = self.flow(place, item, default_flow);
        let send_rate = self.send_rate(place, item);
        let profile = self.profile(place, item, channel.unwrap_or_default());
        Some(Page {
            id: id?,
            app: app?,
            access_token: access_token?,
            channel: channel?,
            flow: flow?,
            flow_spec,
            send_rate: send_rate?,
            profile: profile?,
        })
    }

    fn page_app(&mut self, place: &str, item: &Table, apps: &BTreeSet<String>) -> Option<String> {
        match item.get("app") {
            None => self.problem(format!("{place}.app"), "missing: the app of [apps.NAME]"),
            Some(toml::Value::String(name)) if apps.contains(name) => return Some(name.clone()),
            Some(toml::Value::String(name)) => {
                let known: Vec<&str> = apps.iter().map(String::as_str).collect();
                self.problem(
                    format!("{place}.app"),
                    format!("unknown app `{name}` (apps: {})", known.join(", ")),
                );
            }
            Some(_) => self.problem(format!("{place}.app"), "must be a string"),
        }
        None
    }

    fn channel(&mut self, place: &str, item: &Table) -> Option<Channel> {
        match item.get("channel") {
            None => Some(Channel::Messenger),
            Some(toml::Value::String(name)) => match Channel::from_name(name) {
                Some(channel) => Some(channel),
                None => {
                    self.problem(
                        format!("{place}.channel"),
                        format!("`{name}` is not a channel (messenger or instagram)"),
                    );
                    None
                }
            },
            Some(_) => {
                self.problem(format!("{place}.channel"), "must be a string");
                None
            }
        }
    }

    fn flow(
        &mut self,
        place: &str,
        item: &Table,
        default_flow: &FlowHandle,
    ) -> (Option<FlowHandle>, Option<String>) {
        let spec = match item.get("flow") {
            None => return (Some(default_flow.clone()), None),
            Some(toml::Value::String(spec)) => spec.clone(),
            Some(_) => {
                self.problem(format!("{place}.flow"), "must be a string like any --flow");
                return (None, None);
            }
        };
        if !self.flows.contains_key(&spec) {
            let resolved = resolve_flow(&spec);
            if let Err(error) = &resolved {
                self.problem(format!("{place}.flow"), error.to_string());
            }
            self.flows.insert(spec.clone(), resolved.ok());
        }
        (self.flows[&spec].clone(), Some(spec))
    }

    fn send_rate(&mut self, place: &str, item: &Table) -> Option<Option<u32>> {
        match item.get("send_rate") {
            None => Some(None),
            Some(toml::Value::Integer(rate)) => match u32::try_from(*rate) {
                Ok(rate) => Some(Some(rate)),
                Err(_) => {
                    self.problem(
                        format!("{place}.send_rate"),
                        "must be a whole number of calls per second, 0 or more",
                    );
                    None
                }
            },
            Some(_) => {
                self.problem(format!("{place}.send_rate"), "must be a whole number");
                None
            }
        }
    }

    fn profile(&mut self, place: &str, item: &Table, channel: Channel) -> Option<Option<Value>> {
        let Some(profile) = item.get("profile") else {
            return Some(None);
        };
        let place = format!("{place}.profile");
        let Some(table) = profile.as_table() else {
            self.problem(place, "must be a table ([pages.profile])");
            return None;
        };
        let before = self.problems.len();
        self.unknown_keys(&place, table, &PROFILE_FIELDS);
        if self.problems.len() == before && channel == Channel::Instagram {
            for key in table.keys() {
                if !INSTAGRAM_PROFILE_FIELDS.contains(&key.as_str()) {
                    self.problem(
                        format!("{place}.{key}"),
                        "an Instagram account's profile takes only ice_breakers and persistent_menu",
                    );
                }
            }
        }
        if self.problems.len() > before {
            return None;
        }
        match serde_json::to_value(table) {
            Ok(value) => Some(Some(value)),
            Err(error) => {
                self.problem(place, format!("cannot be read as JSON: {error}"));
                None
            }
        }
    }

    /// `key` of `table` read as a secret reference: `env:VAR`, `file:PATH` or a literal.
    fn secret(&mut self, place: &str, table: &Table, key: &str) -> Option<Secret> {
        let place = format!("{place}.{key}");
        let written = match table.get(key) {
            None => {
                self.problem(place, "missing");
                return None;
            }
            Some(toml::Value::String(written)) => written,
            Some(_) => {
                self.problem(place, "must be a string (a literal, env:VAR or file:PATH)");
                return None;
            }
        };
        match resolve_secret(self.base, written) {
            Ok(secret) if !secret.expose().is_empty() => Some(secret),
            Ok(_) => {
                self.problem(place, "is empty");
                None
            }
            Err(message) => {
                self.problem(place, message);
                None
            }
        }
    }

    fn unknown_keys(&mut self, place: &str, table: &Table, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(
                    format!("{place}.{key}"),
                    format!("unknown key (known: {})", known.join(", ")),
                );
            }
        }
    }
}

/// A secret as written in the file: `env:VAR` reads the variable, `file:PATH` the file
/// (trailing newline dropped; relative to `base`), anything else is the secret itself.
/// Errors name the variable or file, never a value.
fn resolve_secret(base: &Path, written: &str) -> Result<Secret, String> {
    if let Some(variable) = written.strip_prefix("env:") {
        return match std::env::var(variable) {
            Ok(value) => Ok(Secret::new(value)),
            Err(_) => Err(format!("environment variable {variable} is not set")),
        };
    }
    if let Some(file) = written.strip_prefix("file:") {
        let path = base.join(file);
        return std::fs::read_to_string(&path)
            .map(|value| Secret::new(value.trim_end_matches(['\r', '\n'])))
            .map_err(|error| format!("cannot read secret file {}: {error}", path.display()));
    }
    Ok(Secret::new(written))
}

#[cfg(test)]
mod tests;

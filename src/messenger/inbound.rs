//! Inbound webhook wire types: turns a Messenger Platform webhook POST body
//! (`{"object":"page","entry":[…]}`) into typed [`InboundEvent`]s.
//!
//! Owns: envelope validation, walking every `entry[].messaging[]` and
//! `entry[].standby[]` item in order, dispatch on the key present in each item,
//! and lenient decoding (ids as string or integer, timestamps and watermarks as
//! integer or numeric string, an attachment without a usable `type` kept as `unknown`).
//! An event the page itself sent (`sender.id` is the entry's id) is never user input,
//! and its `message` is an echo whatever `is_echo` says: a bot must never answer its
//! own page.
//!
//! Must not: do IO, verify signatures (that happens earlier, on the raw bytes),
//! log anything, decide what the engine does with an event, or panic on any
//! input. Only a malformed envelope is an error; a malformed or unrecognised
//! messaging item becomes [`EventKind::Unknown`] with its raw JSON kept.
//! `entry[].changes[]` (non-messaging Page webhooks) is ignored.
//! The lenient decoders are in `inbound/lenient.rs`, the unit tests in `inbound/tests.rs`.

mod lenient;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use lenient::{
    de_attachments, de_id, de_id_vec, de_int, de_lossy_opt, de_opt_id, id_string, lenient_int,
};

/// Why a webhook body was rejected as a whole. Messages name the JSON path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not parseable as JSON: syntax error, truncation, invalid UTF-8 or
    /// nesting deeper than serde_json's recursion limit (128).
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but the top level is not an object.
    #[error("body must be a JSON object")]
    NotAnObject,
    /// `object` is a string other than `page`/`instagram` (kept, truncated).
    #[error("field `object` must be \"page\" or \"instagram\", got {0:?}")]
    WrongObject(String),
    /// A required field is absent; holds its JSON path, e.g. `entry[0].id`.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field has the wrong JSON type.
    #[error("field `{path}` must be {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
}

/// The Meta messaging product an event came through: the envelope's `object` (`page` for
/// Messenger, `instagram` for Instagram Direct).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Messenger,
    Instagram,
}

impl Channel {
    /// `messenger` or `instagram`, as configuration files, metrics and the admin API say it.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Messenger => "messenger",
            Channel::Instagram => "instagram",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        match name {
            "messenger" => Some(Channel::Messenger),
            "instagram" => Some(Channel::Instagram),
            _ => None,
        }
    }

    pub fn is_messenger(&self) -> bool {
        *self == Channel::Messenger
    }
}

/// One messaging item from the webhook, with the envelope context it came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// `entry[].id`: the Page (or Instagram professional account) id.
    pub page_id: String,
    /// Messenger or Instagram, from the envelope's `object`.
    #[serde(default, skip_serializing_if = "Channel::is_messenger")]
    pub channel: Channel,
    /// `sender.id` (string or number in JSON).
    pub sender_id: Option<String>,
    /// `recipient.id`.
    pub recipient_id: Option<String>,
    /// `sender.user_ref`, or `optin.user_ref` when there is no sender id.
    pub user_ref: Option<String>,
    /// Event time in epoch ms; number or numeric string in JSON; 0 when
    /// absent or unparsable. Kept as sent (no seconds→ms guessing).
    pub timestamp: i64,
    /// True when the item came from `entry[].standby[]` (another app owns the thread).
    pub standby: bool,
    pub kind: EventKind,
    /// The messaging item exactly as received.
    pub raw: Value,
}

impl InboundEvent {
    /// Rebuilds an event from its raw messaging item (journal recovery). Never fails.
    pub fn from_raw(page_id: &str, raw: Value, standby: bool) -> InboundEvent {
        let sender = raw.get("sender");
        let sender_id = sender.and_then(|s| s.get("id")).and_then(id_string);
        let recipient_id = raw
            .get("recipient")
            .and_then(|r| r.get("id"))
            .and_then(id_string);
        let user_ref = sender
            .and_then(|s| s.get("user_ref"))
            .and_then(id_string)
            .or_else(|| {
                if sender_id.is_none() {
                    raw.get("optin")
                        .and_then(|o| o.get("user_ref"))
                        .and_then(id_string)
                } else {
                    None
                }
            });
        let timestamp = raw.get("timestamp").and_then(lenient_int).unwrap_or(0);
        let kind = match classify(&raw) {
            EventKind::Unknown => seen_on_instagram(&raw, timestamp).unwrap_or(EventKind::Unknown),
            kind => kind,
        };
        let kind = if sender_id.as_deref() == Some(page_id) {
            as_sent_by_page(kind, &raw)
        } else {
            kind
        };
        InboundEvent {
            page_id: page_id.to_owned(),
            channel: Channel::Messenger,
            sender_id,
            recipient_id,
            user_ref,
            timestamp,
            standby,
            kind,
            raw,
        }
    }

    /// The same event, as having come through `channel`.
    pub fn on(mut self, channel: Channel) -> InboundEvent {
        self.channel = channel;
        self
    }

    /// The non-page party: recipient_id for echoes, else sender_id, else user_ref, else "".
    ///
    /// For an echo without `recipient.id` this falls back to `user_ref`, never
    /// to `sender.id` (which is the page itself).
    pub fn party_id(&self) -> &str {
        let id = match self.kind {
            EventKind::Echo(_) => self.recipient_id.as_deref(),
            _ => self.sender_id.as_deref(),
        };
        id.or(self.user_ref.as_deref()).unwrap_or("")
    }

    /// The conversation the event belongs to: (page id, [`Self::party_id`]).
    pub fn conversation(&self) -> (&str, &str) {
        (&self.page_id, self.party_id())
    }

    /// mid of a message, echo, postback (if any), edit; None otherwise.
    pub fn mid(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Message(m) => Some(&m.mid),
            EventKind::Echo(e) => Some(&e.mid),
            EventKind::Postback(p) => p.mid.as_deref(),
            EventKind::Edit(e) => Some(&e.mid),
            _ => None,
        }
    }

    /// Stable short names: "text","attachments","quick_reply","echo","delivery","read","postback","referral","optin","reaction","edit","pass_thread_control","take_thread_control","request_thread_control","app_roles","policy_enforcement","account_linking","game_play","unknown". A message with a quick_reply is "quick_reply"; with attachments and no text "attachments"; otherwise "text".
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Message(m) if m.quick_reply.is_some() => "quick_reply",
            EventKind::Message(m) if m.text.is_none() && !m.attachments.is_empty() => "attachments",
            EventKind::Message(_) => "text",
            EventKind::Echo(_) => "echo",
            EventKind::Delivery(_) => "delivery",
            EventKind::Read(_) => "read",
            EventKind::Postback(_) => "postback",
            EventKind::Referral(_) => "referral",
            EventKind::Optin(_) => "optin",
            EventKind::Reaction(_) => "reaction",
            EventKind::Edit(_) => "edit",
            EventKind::PassThreadControl(_) => "pass_thread_control",
            EventKind::TakeThreadControl(_) => "take_thread_control",
            EventKind::RequestThreadControl(_) => "request_thread_control",
            EventKind::AppRoles(_) => "app_roles",
            EventKind::PolicyEnforcement(_) => "policy_enforcement",
            EventKind::AccountLinking(_) => "account_linking",
            EventKind::GamePlay(_) => "game_play",
            EventKind::Unknown => "unknown",
        }
    }

    /// True for what a user did: messages (not echoes), quick replies, postbacks and
    /// referrals (an m.me link or ad opened the thread). These run the flow and open the
    /// 24-hour messaging window. Never true for what the page itself sent.
    ///
    /// Does not look at [`InboundEvent::standby`]: callers must
    /// not run a flow for standby events (another app owns the thread).
    pub fn is_user_input(&self) -> bool {
        let by_a_user = matches!(
            self.kind,
            EventKind::Message(_) | EventKind::Postback(_) | EventKind::Referral(_)
        );
        by_a_user && !self.sent_by_page()
    }

    /// True when the page itself sent it: `sender.id` is the entry's page id.
    fn sent_by_page(&self) -> bool {
        self.sender_id.as_deref() == Some(self.page_id.as_str())
    }

    /// Text of a message, echo or edit; title of a postback.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Message(m) => m.text.as_deref(),
            EventKind::Echo(e) => e.text.as_deref(),
            EventKind::Edit(e) => e.text.as_deref(),
            EventKind::Postback(p) => p.title.as_deref(),
            _ => None,
        }
    }
}

/// What a messaging item is, decided by which key it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// `message` without `is_echo: true`, from a user (not the page): a user wrote (text,
    /// attachments, quick reply).
    Message(Message),
    /// `message` with `is_echo: true`, or any `message` whose sender is the page (however
    /// its `is_echo` is spelled, or when it is absent): something the Page sent.
    Echo(Echo),
    Delivery(Delivery),
    Read(Read),
    Postback(Postback),
    Referral(Referral),
    Optin(Optin),
    Reaction(Reaction),
    /// `message_edit`: same `mid` as the original message.
    Edit(MessageEdit),
    PassThreadControl(ThreadControl),
    TakeThreadControl(ThreadControl),
    RequestThreadControl(ThreadControl),
    /// `app_roles`: `{"<app_id>": ["primary_receiver", …]}`, kept as JSON.
    AppRoles(Value),
    /// `policy_enforcement` (or `policy-enforcement`).
    PolicyEnforcement(PolicyEnforcement),
    AccountLinking(AccountLinking),
    /// `game_play`, kept as JSON.
    GamePlay(Value),
    /// Not an object, no known key, or a known key whose value has wrong types.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(deserialize_with = "de_id")]
    pub mid: String,
    pub text: Option<String>,
    pub quick_reply: Option<QuickReplyAnswer>,
    #[serde(default, deserialize_with = "de_attachments")]
    pub attachments: Vec<Attachment>,
    /// `None` also when `reply_to` has no `mid` (e.g. Instagram story replies).
    #[serde(default, deserialize_with = "de_lossy_opt")]
    pub reply_to: Option<ReplyTo>,
    pub referral: Option<Referral>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickReplyAnswer {
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// `image`, `video`, `file`, …; `unknown` when the item had no usable `type` (or was
    /// not an object), so that one odd attachment does not cost the message its text.
    #[serde(rename = "type")]
    pub kind: String,
    /// May be null (e.g. `fallback` shared links).
    pub payload: Option<Value>,
}

/// The `kind` of an attachment that says nothing usable about itself.
const UNKNOWN_ATTACHMENT: &str = "unknown";

impl Attachment {
    /// One item of `attachments`, never failing: what cannot be read is `unknown`, with
    /// its `payload` kept when there is one.
    fn from_item(item: &Value) -> Attachment {
        Attachment::deserialize(item).unwrap_or_else(|_| Attachment {
            kind: UNKNOWN_ATTACHMENT.to_string(),
            payload: item.get("payload").filter(|p| !p.is_null()).cloned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    #[serde(deserialize_with = "de_id")]
    pub mid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    #[serde(deserialize_with = "de_id")]
    pub mid: String,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub app_id: Option<String>,
    /// What was passed as `message.metadata` to the Send API.
    pub metadata: Option<String>,
    pub text: Option<String>,
    #[serde(default, deserialize_with = "de_attachments")]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Optional in JSON; empty when absent.
    #[serde(default, deserialize_with = "de_id_vec")]
    pub mids: Vec<String>,
    /// Everything the Page sent before this epoch-ms watermark is delivered.
    #[serde(deserialize_with = "de_int")]
    pub watermark: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Read {
    /// Everything the Page sent at or before this epoch-ms watermark is read. Instagram's
    /// `messaging_seen` names the message seen instead: its watermark is the time it was
    /// seen (the item's `timestamp`), which covers that message and everything before it.
    #[serde(deserialize_with = "de_int")]
    pub watermark: i64,
    /// The message Instagram says was seen (`messaging_seen`).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub mid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Postback {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub mid: Option<String>,
    pub title: Option<String>,
    /// Absent on standby copies.
    pub payload: Option<String>,
    pub referral: Option<Referral>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    #[serde(rename = "ref", default, deserialize_with = "de_opt_id")]
    pub ref_: Option<String>,
    /// Opaque (`SHORTLINK`, `ADS`, …).
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub ad_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optin {
    #[serde(rename = "ref", default, deserialize_with = "de_opt_id")]
    pub ref_: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub user_ref: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub payload: Option<String>,
    pub notification_messages_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    /// The reacted-to message.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub mid: Option<String>,
    pub reaction: Option<String>,
    pub emoji: Option<String>,
    /// `react` or `unreact`.
    pub action: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEdit {
    #[serde(deserialize_with = "de_id")]
    pub mid: String,
    pub text: Option<String>,
    pub num_edit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadControl {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub previous_owner_app_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub new_owner_app_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub requested_owner_app_id: Option<String>,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyEnforcement {
    /// `warning`, `block` or `unblock`.
    pub action: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountLinking {
    /// `linked` or `unlinked`.
    pub status: Option<String>,
    pub authorization_code: Option<String>,
}

/// Parses a webhook POST body into events, in order: every entry, its
/// `messaging` items (standby = false) then its `standby` items (standby = true).
pub fn parse_envelope(body: &[u8]) -> Result<Vec<InboundEvent>, ParseError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
    let mut root = match root {
        Value::Object(map) => map,
        _ => return Err(ParseError::NotAnObject),
    };
    match root.get("object") {
        None => return Err(ParseError::MissingField("object".to_owned())),
        Some(Value::String(s)) if s == "page" || s == "instagram" => {}
        Some(Value::String(s)) => return Err(ParseError::WrongObject(truncate(s, 64))),
        Some(_) => return Err(wrong_type("object".to_owned(), "a string")),
    }
    let channel = match root.get("object").and_then(Value::as_str) {
        Some("instagram") => Channel::Instagram,
        _ => Channel::Messenger,
    };
    let entries = match root.remove("entry") {
        None => return Err(ParseError::MissingField("entry".to_owned())),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(wrong_type("entry".to_owned(), "an array")),
    };

    let mut events = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let mut entry = match entry {
            Value::Object(map) => map,
            _ => return Err(wrong_type(format!("entry[{i}]"), "an object")),
        };
        let page_id = match entry.get("id") {
            None => return Err(ParseError::MissingField(format!("entry[{i}].id"))),
            Some(v) => match id_string(v) {
                Some(id) => id,
                None => return Err(wrong_type(format!("entry[{i}].id"), "a string or integer")),
            },
        };
        let messaging = take_items(&mut entry, i, "messaging")?;
        let standby = take_items(&mut entry, i, "standby")?;
        events.reserve(messaging.len() + standby.len());
        events.extend(
            messaging
                .into_iter()
                .map(|raw| InboundEvent::from_raw(&page_id, raw, false).on(channel)),
        );
        events.extend(
            standby
                .into_iter()
                .map(|raw| InboundEvent::from_raw(&page_id, raw, true).on(channel)),
        );
    }
    Ok(events)
}

/// Removes `entry[i].<key>`; absent or null → empty, array → its items, else WrongType.
fn take_items(
    entry: &mut Map<String, Value>,
    i: usize,
    key: &'static str,
) -> Result<Vec<Value>, ParseError> {
    match entry.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(wrong_type(format!("entry[{i}].{key}"), "an array")),
    }
}

fn wrong_type(path: String, expected: &'static str) -> ParseError {
    ParseError::WrongType { path, expected }
}

fn truncate(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// Decides the kind from the first known key present; wrong types → Unknown.
fn classify(raw: &Value) -> EventKind {
    fn de<T: DeserializeOwned>(v: &Value) -> Option<T> {
        T::deserialize(v).ok()
    }
    type Decode = fn(&Value) -> Option<EventKind>;
    const DISPATCH: [(&str, Decode); 16] = [
        ("message", |v| {
            if v.get("is_echo") == Some(&Value::Bool(true)) {
                de(v).map(EventKind::Echo)
            } else {
                de(v).map(EventKind::Message)
            }
        }),
        ("delivery", |v| de(v).map(EventKind::Delivery)),
        ("read", |v| de(v).map(EventKind::Read)),
        ("postback", |v| de(v).map(EventKind::Postback)),
        ("referral", |v| de(v).map(EventKind::Referral)),
        ("optin", |v| de(v).map(EventKind::Optin)),
        ("reaction", |v| de(v).map(EventKind::Reaction)),
        ("message_edit", |v| de(v).map(EventKind::Edit)),
        ("pass_thread_control", |v| {
            de(v).map(EventKind::PassThreadControl)
        }),
        ("take_thread_control", |v| {
            de(v).map(EventKind::TakeThreadControl)
        }),
        ("request_thread_control", |v| {
            de(v).map(EventKind::RequestThreadControl)
        }),
        ("app_roles", |v| Some(EventKind::AppRoles(v.clone()))),
        ("policy_enforcement", |v| {
            de(v).map(EventKind::PolicyEnforcement)
        }),
        ("policy-enforcement", |v| {
            de(v).map(EventKind::PolicyEnforcement)
        }),
        ("account_linking", |v| de(v).map(EventKind::AccountLinking)),
        ("game_play", |v| Some(EventKind::GamePlay(v.clone()))),
    ];
    let Some(obj) = raw.as_object() else {
        return EventKind::Unknown;
    };
    DISPATCH
        .iter()
        .find_map(|(key, decode)| obj.get(*key).map(*decode))
        .flatten()
        .unwrap_or(EventKind::Unknown)
}

/// Instagram's `messaging_seen` item: `"read": {"mid": …}` without a watermark. The
/// item's own time is when the user saw the thread, so it is the read watermark.
fn seen_on_instagram(raw: &Value, timestamp: i64) -> Option<EventKind> {
    let read = raw.get("read")?;
    let mid = read.get("mid").and_then(id_string)?;
    (read.get("watermark").is_none() && timestamp > 0).then_some(EventKind::Read(Read {
        watermark: timestamp,
        mid: Some(mid),
    }))
}

/// What the page itself sent is never a user's message: a `message` from it is an echo
/// whether `is_echo` is `true`, `"true"`, `1` or absent (`Unknown` if it is not even a
/// readable echo). Other kinds keep their kind; [`InboundEvent::is_user_input`] is false
/// for all of them.
fn as_sent_by_page(kind: EventKind, raw: &Value) -> EventKind {
    match kind {
        EventKind::Message(_) => raw
            .get("message")
            .and_then(|message| Echo::deserialize(message).ok())
            .map_or(EventKind::Unknown, EventKind::Echo),
        other => other,
    }
}

#[cfg(test)]
mod tests;

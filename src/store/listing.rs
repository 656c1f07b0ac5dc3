//! What the activity index says of a conversation, so the admin list filters without
//! reading records: paused, has failed replies, has failed events (stuck), Instagram or
//! Messenger, and the interview it is in (tree name and status).
//!
//! The value is `[flags, tree status, tree name...]`; a one-byte value (earlier builds)
//! is just the paused flag. The tree comes from two conventional fields of the flow's
//! state, `tree` and `stage.status`, the shape the interview tree flow writes; any flow
//! writing them is listed by them. Must not: know a flow's types, or write anything.

use serde_json::Value;

use super::committer::Overlay;
use super::{keys, ConversationRecord, StoreError};
use crate::messenger::inbound::Channel;

const PAUSED: u8 = 1;
const FAILED_REPLY: u8 = 2;
const FAILED_EVENT: u8 = 4;
/// An Instagram conversation (unset: Messenger, as every conversation before channels).
const INSTAGRAM: u8 = 8;

/// Where an interview stands, as the list filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeStatus {
    NotStarted,
    InProgress,
    Completed,
    Cancelled,
}

impl TreeStatus {
    /// `in_progress`, `completed`, `cancelled` or `not_started`.
    pub fn parse(text: &str) -> Option<TreeStatus> {
        match text {
            "not_started" => Some(TreeStatus::NotStarted),
            "in_progress" | "asking" => Some(TreeStatus::InProgress),
            "completed" => Some(TreeStatus::Completed),
            "cancelled" | "canceled" => Some(TreeStatus::Cancelled),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            TreeStatus::NotStarted => 1,
            TreeStatus::InProgress => 2,
            TreeStatus::Completed => 3,
            TreeStatus::Cancelled => 4,
        }
    }

    fn from_code(code: u8) -> Option<TreeStatus> {
        [
            TreeStatus::NotStarted,
            TreeStatus::InProgress,
            TreeStatus::Completed,
            TreeStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.code() == code)
    }
}

/// One conversation's index entry, decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Listing {
    pub paused: bool,
    pub failed_reply: bool,
    pub failed_event: bool,
    pub instagram: bool,
    pub tree: Option<String>,
    pub tree_status: Option<TreeStatus>,
}

impl Listing {
    /// What the index says of `record`, given whether it keeps failed replies and events.
    pub(super) fn of(record: &ConversationRecord, failed_reply: bool, failed_event: bool) -> Self {
        let tree = record.state.get("tree").and_then(Value::as_str);
        let status = record
            .state
            .get("stage")
            .and_then(|stage| stage.get("status"))
            .and_then(Value::as_str)
            .and_then(TreeStatus::parse);
        Listing {
            paused: record.paused,
            failed_reply,
            failed_event,
            instagram: record.channel == Channel::Instagram,
            tree: tree.map(str::to_string),
            tree_status: tree.and(status),
        }
    }

    /// Reads the failed replies and events of `record` from the overlay (after this
    /// cycle's writes) to make its listing.
    pub(super) fn read(
        overlay: &Overlay<'_>,
        record: &ConversationRecord,
    ) -> Result<Listing, StoreError> {
        let (page, psid) = (&record.page_id, &record.psid);
        let failed_reply = overlay.any_with_prefix(&keys::failed_replies(page, psid))?;
        let failed_event = overlay.any_with_prefix(&keys::failed_events(page, psid))?;
        Ok(Listing::of(record, failed_reply, failed_event))
    }

    pub fn encode(&self) -> Vec<u8> {
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(self.paused, PAUSED)
            | flag(self.failed_reply, FAILED_REPLY)
            | flag(self.failed_event, FAILED_EVENT)
            | flag(self.instagram, INSTAGRAM);
        let mut value = vec![flags];
        if let Some(tree) = &self.tree {
            value.push(self.tree_status.map_or(0, TreeStatus::code));
            value.extend_from_slice(tree.as_bytes());
        }
        value
    }

    pub fn decode(value: &[u8]) -> Listing {
        let flags = value.first().copied().unwrap_or_default();
        let tree = value
            .get(2..)
            .filter(|_| value.len() >= 2)
            .map(|name| String::from_utf8_lossy(name).into_owned());
        Listing {
            paused: flags & PAUSED != 0,
            failed_reply: flags & FAILED_REPLY != 0,
            failed_event: flags & FAILED_EVENT != 0,
            instagram: flags & INSTAGRAM != 0,
            tree_status: tree.as_ref().and_then(|_| TreeStatus::from_code(value[1])),
            tree,
        }
    }
}

/// Whether any key under `prefix` exists in the tree (for the build at open).
pub(super) fn tree_has_any(tree: &sled::Tree, prefix: Vec<u8>) -> Result<bool, StoreError> {
    Ok(tree.scan_prefix(prefix).next().transpose()?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConversationKey;

    #[test]
    fn a_listing_reads_back_as_written() {
        let listing = Listing {
            paused: true,
            failed_reply: false,
            failed_event: true,
            instagram: true,
            tree: Some("satisfaction".into()),
            tree_status: Some(TreeStatus::Completed),
        };
        assert_eq!(Listing::decode(&listing.encode()), listing);
        assert_eq!(
            Listing::decode(&Listing::default().encode()),
            Listing::default()
        );
    }

    #[test]
    fn an_earlier_builds_one_byte_value_is_the_paused_flag() {
        assert!(Listing::decode(&[1]).paused);
        assert_eq!(Listing::decode(&[0]), Listing::default());
    }

    #[test]
    fn the_tree_comes_from_an_interview_shaped_state() {
        let mut record = ConversationRecord::new(&ConversationKey::new("p", "u"));
        record.state =
            serde_json::json!({"tree": "intake", "stage": {"status": "asking", "question": "q1"}});
        let listing = Listing::of(&record, false, false);
        assert_eq!(listing.tree.as_deref(), Some("intake"));
        assert_eq!(listing.tree_status, Some(TreeStatus::InProgress));
        record.state = serde_json::json!({"messages": 3});
        assert_eq!(Listing::of(&record, false, false).tree, None);
    }
}

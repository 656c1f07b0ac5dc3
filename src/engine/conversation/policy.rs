//! Messenger's sending rules, checked before a reply reaches the outbox: the 24-hour
//! window after the user's last action (7 days with the HUMAN_AGENT tag, none with other
//! tags) and handover (nothing is sent while another app owns the thread). Pure
//! functions of the conversation record and the reply; no IO.

use crate::flow::{MessageTag, Reply};
use crate::store::ConversationRecord;

/// Messenger's standard messaging window after the user's last action.
const MESSAGING_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The HUMAN_AGENT tag's window.
const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Why Messenger policy forbids sending this reply now, if it does.
pub(super) fn policy_refusal(
    record: &ConversationRecord,
    reply: &Reply,
    now: i64,
) -> Option<String> {
    if !reply.is_message() && reply.kind_name() == "callback" {
        return None;
    }
    if record.thread_elsewhere {
        return Some("another app owns the thread (handover protocol)".into());
    }
    let elapsed = now.saturating_sub(record.window_opened_at);
    let allowed = match reply.tag() {
        None => MESSAGING_WINDOW_MS,
        Some(MessageTag::HumanAgent) => HUMAN_AGENT_WINDOW_MS,
        Some(_) => return None,
    };
    (elapsed > allowed).then(|| {
        format!(
            "outside the messaging window: the user's last message was {} h ago; \
             send with a message tag (Reply::with_tag) to reach them",
            elapsed / 3_600_000
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConversationKey;

    fn record_with_window_opened(hours_ago: i64, now: i64) -> ConversationRecord {
        let mut record = ConversationRecord::new(&ConversationKey::new("p", "u"));
        record.window_opened_at = now - hours_ago * 3_600_000;
        record
    }

    #[test]
    fn a_reply_inside_the_24_hour_window_is_allowed() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(23, now);
        assert_eq!(
            policy_refusal(&record, &Reply::text("hi").unwrap(), now),
            None
        );
    }

    #[test]
    fn an_untagged_reply_outside_the_window_is_refused_with_a_reason() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(25, now);
        let refusal = policy_refusal(&record, &Reply::text("hi").unwrap(), now).unwrap();
        assert!(
            refusal.contains("outside the messaging window"),
            "{refusal}"
        );
        assert!(refusal.contains("25 h ago"), "{refusal}");
    }

    #[test]
    fn tags_open_the_way_outside_the_window_within_their_own_limits() {
        let now = 10_000_000_000;
        let late = record_with_window_opened(48, now);
        let tagged = Reply::text("Your order shipped")
            .unwrap()
            .with_tag(MessageTag::PostPurchaseUpdate);
        assert_eq!(policy_refusal(&late, &tagged, now), None);
        let agent = Reply::text("An agent here")
            .unwrap()
            .with_tag(MessageTag::HumanAgent);
        assert_eq!(policy_refusal(&late, &agent, now), None);
        let too_late = record_with_window_opened(8 * 24, now);
        assert!(policy_refusal(&too_late, &agent, now).is_some());
    }

    #[test]
    fn callbacks_are_not_messages_and_need_no_window() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(100, now);
        let callback = Reply::callback("https://x/hook", serde_json::json!({})).unwrap();
        assert_eq!(policy_refusal(&record, &callback, now), None);
    }
}

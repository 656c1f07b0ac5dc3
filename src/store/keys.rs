//! Key encoding for the one sled tree colloquy keeps everything in.
//!
//! Every key starts with a one-byte namespace; ids from the network are written with a
//! length prefix so no id (even one holding `\0` or the namespace bytes) can collide with
//! another key, and sequence numbers are big-endian so sled's byte order is their order.
//! This module only builds and splits keys; it never touches sled.

/// Inbound events acknowledged to Facebook and not yet handled: `j` + seq.
pub const JOURNAL: u8 = b'j';
/// Conversation records (flow state, watermarks, counters): `c` + page + psid.
pub const CONVERSATION: u8 = b'c';
/// Transcript entries: `t` + page + psid + entry seq.
pub const TRANSCRIPT: u8 = b't';
/// Dedup marks of handled inbound events, ordered by the event's own time: `h` + page +
/// event time + event id. A redelivery is the same event, with the same time, so it finds
/// its mark; new marks land at the end of their page's range, in leaves that are in
/// memory, where marks keyed by Facebook's random message ids landed anywhere in the tree.
pub const HANDLED_AT: u8 = b'h';
/// Dedup marks as builds before `HANDLED_AT` wrote them: `m` + page + event id. Still read
/// (while any is left) and pruned by retention; never written.
pub const HANDLED: u8 = b'm';
/// Replies decided by a flow and not yet sent or failed: `o` + seq.
pub const OUTBOX: u8 = b'o';
/// Sent message id → its transcript entry: `x` + page + message id. Written by earlier
/// builds only (the id now lives on the entry); kept so retention prunes what they left.
pub const SENT: u8 = b'x';
/// Pending timers in due order: `k` + due + page + psid + name.
pub const TIMER: u8 = b'k';
/// Conversations by last activity, newest first: `a` + inverted second + page + psid;
/// the value says whether the conversation is paused. See `store::activity`.
pub const ACTIVITY: u8 = b'a';
/// Replies that failed, kept so an operator can retry them: `f` + page + psid + entry seq.
pub const FAILED_REPLY: u8 = b'f';
/// Events a flow failed on, kept whole so an operator can replay or skip them:
/// `e` + page + psid + entry seq.
pub const FAILED_EVENT: u8 = b'e';
/// Data-deletion requests from Meta: `d` + confirmation code.
pub const DELETION_REQUEST: u8 = b'd';
/// Facts about the store itself: `~` + name.
pub const META: u8 = b'~';

fn push_component(key: &mut Vec<u8>, component: &str) {
    // Ids longer than u16::MAX are cut by the webhook's body limit long before this;
    // saturate rather than wrap so a pathological id can never alias a shorter one's key.
    let len = u16::try_from(component.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&component.as_bytes()[..usize::from(len)]);
}

fn with_namespace(namespace: u8, components: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + components.iter().map(|c| c.len() + 2).sum::<usize>() + 8);
    key.push(namespace);
    for component in components {
        push_component(&mut key, component);
    }
    key
}

pub fn journal(seq: u64) -> Vec<u8> {
    let mut key = vec![JOURNAL];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn outbox(seq: u64) -> Vec<u8> {
    let mut key = vec![OUTBOX];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn conversation(page_id: &str, psid: &str) -> Vec<u8> {
    with_namespace(CONVERSATION, &[page_id, psid])
}

/// The prefix of every conversation record of one page.
pub fn conversations_of_page(page_id: &str) -> Vec<u8> {
    with_namespace(CONVERSATION, &[page_id])
}

/// How every conversation key of `psid` ends (whatever the page).
pub fn conversation_suffix(psid: &str) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(psid.len() + 2);
    push_component(&mut suffix, psid);
    suffix
}

/// The prefix under which all of one conversation's transcript entries sit, in order.
pub fn transcript_prefix(page_id: &str, psid: &str) -> Vec<u8> {
    with_namespace(TRANSCRIPT, &[page_id, psid])
}

pub fn transcript_entry(page_id: &str, psid: &str, seq: u64) -> Vec<u8> {
    let mut key = transcript_prefix(page_id, psid);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The activity-index key of a conversation last active at `second` (epoch seconds):
/// later seconds sort first.
pub fn activity(second: u64, page_id: &str, psid: &str) -> Vec<u8> {
    let mut key = activity_from(second);
    push_component(&mut key, page_id);
    push_component(&mut key, psid);
    key
}

/// Where the activity index's entries of `second` and earlier begin.
pub fn activity_from(second: u64) -> Vec<u8> {
    let mut key = vec![ACTIVITY];
    key.extend_from_slice(&(u64::MAX - second).to_be_bytes());
    key
}

/// The second, page id and psid of an activity-index key.
pub fn activity_parts(key: &[u8]) -> Option<(u64, String, String)> {
    let rest = key.strip_prefix(&[ACTIVITY])?;
    let inverted = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let (page_id, rest) = split_component(&rest[8..])?;
    let (psid, rest) = split_component(rest)?;
    rest.is_empty()
        .then_some((u64::MAX - inverted, page_id, psid))
}

/// The failed reply of a conversation's transcript entry `entry`.
pub fn failed_reply(page_id: &str, psid: &str, entry: u64) -> Vec<u8> {
    let mut key = failed_replies(page_id, psid);
    key.extend_from_slice(&entry.to_be_bytes());
    key
}

/// The prefix of every failed reply of one conversation, in entry order.
pub fn failed_replies(page_id: &str, psid: &str) -> Vec<u8> {
    with_namespace(FAILED_REPLY, &[page_id, psid])
}

/// The failed event of a conversation's transcript entry `entry`.
pub fn failed_event(page_id: &str, psid: &str, entry: u64) -> Vec<u8> {
    let mut key = failed_events(page_id, psid);
    key.extend_from_slice(&entry.to_be_bytes());
    key
}

/// The prefix of every failed event of one conversation, in entry order.
pub fn failed_events(page_id: &str, psid: &str) -> Vec<u8> {
    with_namespace(FAILED_EVENT, &[page_id, psid])
}

/// A data-deletion request by its confirmation code.
pub fn deletion_request(code: &str) -> Vec<u8> {
    with_namespace(DELETION_REQUEST, &[code])
}

/// A fact about the store (`~` + name).
pub fn meta(name: &str) -> Vec<u8> {
    with_namespace(META, &[name])
}

/// The dedup mark of an event of `page_id` stamped `event_time` (Facebook's epoch ms;
/// a negative time counts as 0).
pub fn handled_at(page_id: &str, event_time: i64, event_id: &str) -> Vec<u8> {
    let mut key = with_namespace(HANDLED_AT, &[page_id]);
    key.extend_from_slice(&handled_time(event_time).to_be_bytes());
    push_component(&mut key, event_id);
    key
}

/// An event's time as its dedup mark's key orders it.
pub fn handled_time(event_time: i64) -> u64 {
    u64::try_from(event_time).unwrap_or(0)
}

/// The prefix every dedup mark of the same page as `key` shares (`None`: not a mark).
pub fn handled_at_page_prefix(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(&[HANDLED_AT])?;
    let page_len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
    key.get(..1 + 2 + page_len)
}

/// The time of a dedup mark's key (`None`: not a mark).
pub fn handled_at_time(key: &[u8]) -> Option<u64> {
    let prefix_len = handled_at_page_prefix(key)?.len();
    let time = key.get(prefix_len..prefix_len + 8)?;
    Some(u64::from_be_bytes(time.try_into().ok()?))
}

/// The legacy dedup mark of an event (`HANDLED`).
pub fn handled(page_id: &str, event_id: &str) -> Vec<u8> {
    with_namespace(HANDLED, &[page_id, event_id])
}

#[cfg(test)]
pub fn sent(page_id: &str, message_id: &str) -> Vec<u8> {
    with_namespace(SENT, &[page_id, message_id])
}

/// A timer's key; due times before 1970 sort first (clamped to 0).
pub fn timer(due: i64, page_id: &str, psid: &str, name: &str) -> Vec<u8> {
    let mut key = vec![TIMER];
    key.extend_from_slice(&u64::try_from(due).unwrap_or(0).to_be_bytes());
    for component in [page_id, psid, name] {
        push_component(&mut key, component);
    }
    key
}

/// The first key after every timer due at or before `now`.
pub fn timers_due_by(now: i64) -> Vec<u8> {
    let mut key = vec![TIMER];
    let next = u64::try_from(now).unwrap_or(0).saturating_add(1);
    key.extend_from_slice(&next.to_be_bytes());
    key
}

/// The page id and psid of a conversation key (`None` for any other key).
pub fn conversation_parts(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(&[CONVERSATION])?;
    let (page_id, rest) = split_component(rest)?;
    let (psid, rest) = split_component(rest)?;
    rest.is_empty().then_some((page_id, psid))
}

fn split_component(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let component = bytes.get(2..2 + len)?;
    let text = std::str::from_utf8(component).ok()?.to_string();
    Some((text, &bytes[2 + len..]))
}

/// The trailing big-endian sequence number of a journal, outbox or transcript key.
pub fn trailing_seq(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let bytes: [u8; 8] = key[start..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activity_index_puts_later_seconds_first_and_splits_back() {
        assert!(activity(20, "p", "u") < activity(10, "a", "a"));
        assert!(activity_from(20) < activity(19, "p", "u"));
        assert_eq!(
            activity_parts(&activity(7, "page", "user")),
            Some((7, "page".to_string(), "user".to_string()))
        );
        assert_eq!(activity_parts(&conversation("page", "user")), None);
    }

    #[test]
    fn sequence_keys_sort_in_numeric_order() {
        assert!(journal(2) < journal(10));
        assert!(journal(255) < journal(256));
        assert!(transcript_entry("p", "u", 9) < transcript_entry("p", "u", 10));
    }

    #[test]
    fn ids_cannot_alias_each_other_through_their_bytes() {
        // Without length prefixes "ab"+"c" and "a"+"bc" would give the same key.
        assert_ne!(conversation("ab", "c"), conversation("a", "bc"));
        assert_ne!(handled("1", "\u{0}2"), handled("1\u{0}", "2"));
        assert_ne!(handled_at("1", 5, "\u{0}2"), handled_at("1\u{0}", 5, "2"));
    }

    #[test]
    fn a_pages_dedup_marks_sort_by_event_time_whatever_the_id() {
        assert!(handled_at("p", 9, "zzz") < handled_at("p", 10, "aaa"));
        assert!(handled_at("p", 255, "m") < handled_at("p", 256, "m"));
        assert_ne!(handled_at("p", 10, "m"), handled_at("p", 11, "m"));
        assert_eq!(handled_at("p", -5, "m"), handled_at("p", 0, "m"));
    }

    #[test]
    fn a_conversations_entries_share_its_prefix_and_no_other_does() {
        let prefix = transcript_prefix("page", "42");
        assert!(transcript_entry("page", "42", 7).starts_with(&prefix));
        assert!(!transcript_entry("page", "421", 7).starts_with(&prefix));
        assert!(!transcript_entry("page2", "42", 7).starts_with(&prefix));
    }

    #[test]
    fn a_pages_conversations_share_its_prefix_and_no_other_pages_do() {
        let prefix = conversations_of_page("page");
        assert!(conversation("page", "42").starts_with(&prefix));
        assert!(!conversation("page2", "42").starts_with(&prefix));
        assert!(!conversation("pag", "e42").starts_with(&prefix));
    }

    #[test]
    fn a_conversation_key_ends_with_its_psid_suffix() {
        assert!(conversation("page", "42").ends_with(&conversation_suffix("42")));
        assert!(!conversation("page", "142").ends_with(&conversation_suffix("42")));
    }

    #[test]
    fn a_conversation_key_gives_back_its_page_and_psid() {
        let parts = |page: &str, psid: &str| conversation_parts(&conversation(page, psid));
        assert_eq!(parts("page", "42"), Some(("page".into(), "42".into())));
        assert_eq!(parts("", "\u{0}x"), Some((String::new(), "\u{0}x".into())));
        assert_eq!(conversation_parts(&transcript_entry("page", "42", 1)), None);
        assert_eq!(conversation_parts(&conversation("page", "42")[..6]), None);
    }

    #[test]
    fn deletion_requests_have_a_namespace_of_their_own() {
        let key = deletion_request("00ff");
        assert_eq!(key[0], DELETION_REQUEST);
        let others = [
            JOURNAL,
            CONVERSATION,
            TRANSCRIPT,
            HANDLED,
            HANDLED_AT,
            OUTBOX,
            SENT,
            TIMER,
            ACTIVITY,
            FAILED_REPLY,
            META,
        ];
        assert!(!others.contains(&DELETION_REQUEST));
        assert_ne!(deletion_request("00ff"), deletion_request("00fe"));
    }

    #[test]
    fn the_trailing_sequence_is_read_back() {
        assert_eq!(trailing_seq(&outbox(77)), Some(77));
        assert_eq!(trailing_seq(&transcript_entry("p", "u", 5)), Some(5));
        assert_eq!(trailing_seq(b"short"), None);
    }
}

//! How records become bytes and back, and how a stored key-value pair becomes a record.
//!
//! Every record is JSON (serde); a value that does not decode is reported as
//! `StoreError::Corrupt` naming its key, never a panic. This module does no IO and holds
//! no rule about which record lives under which key (that is `keys`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use super::{ConversationRecord, StoreError};

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs of strings, numbers and JSON values: serialising
    // them cannot fail, and an empty value would be caught as corrupt on read.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(super) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// A conversation record; its page id and psid come from its key (they are not stored
/// twice).
pub(super) fn decode_conversation(
    key: &[u8],
    bytes: &[u8],
) -> Result<ConversationRecord, StoreError> {
    let mut record: ConversationRecord = decode(key, bytes)?;
    let (page_id, psid) = keys::conversation_parts(key).ok_or_else(|| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "not a conversation key".into(),
    })?;
    record.page_id = page_id;
    record.psid = psid;
    Ok(record)
}

/// A record stored under a key that ends in its sequence number, with that number.
pub(super) fn sequenced<T: DeserializeOwned>(
    item: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(u64, T), StoreError> {
    let (key, value) = item?;
    let seq = keys::trailing_seq(&key).unwrap_or_default();
    Ok((seq, decode(&key, &value)?))
}

//! The lenient decoding Facebook's webhook payloads need, used by the parent's serde
//! attributes: ids as string or integer, numbers as numbers or numeric strings, id lists
//! that may be null, attachments that may be unusable, sub-objects that may be malformed.
//!
//! Each decoder either accepts what Facebook has been seen to send or says why not; it
//! never panics, and what it cannot read degrades (to `None`, `unknown`) where the parent
//! asks for that instead of failing the whole item.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::Attachment;

/// A string as is, or an integer rendered in decimal; anything else is not an id.
pub(super) fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An integer, an integral float in range, or a string holding a decimal integer.
pub(super) fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0)
                .filter(|f| *f >= i64::MIN as f64 && *f < i64::MAX as f64)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    id_string(&v).ok_or_else(|| D::Error::custom("expected a string or integer id"))
}

pub(super) fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => id_string(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom("expected a string or integer id")),
    }
}

pub(super) fn de_id_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| id_string(v).ok_or_else(|| D::Error::custom("expected string or integer ids")))
            .collect(),
        _ => Err(D::Error::custom("expected an array of ids")),
    }
}

pub(super) fn de_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    lenient_int(&v).ok_or_else(|| D::Error::custom("expected an integer or numeric string"))
}

/// `attachments`: absent or null is none, an array is its items, and a lone object is one
/// attachment; each item is kept, as `unknown` when it cannot be read.
pub(super) fn de_attachments<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Attachment>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(Attachment::from_item).collect(),
        lone => vec![Attachment::from_item(&lone)],
    })
}

/// An optional sub-object that degrades to `None` instead of failing its parent.
pub(super) fn de_lossy_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(&v).ok())
}

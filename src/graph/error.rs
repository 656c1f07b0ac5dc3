//! How a Graph API call fails: the error body Meta sends ([`ApiError`]), and
//! [`CallError`], which sorts every failed call into what its caller should do about it
//! (retry, pause the page, give up, or stop the page because its token was revoked).
//!
//! Owns the classification rules: Graph errors are judged by `code` (and
//! `is_transient`), never by the HTTP status or the message text; only an answer without
//! a Graph error body is judged by its HTTP status. Must not do IO, retry, or sleep
//! (callers decide from the variant), must not put a token or a request URL into any
//! error text, and must not panic on any answer.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use thiserror::Error;

/// Graph API code for an invalid, expired or revoked access token.
const TOKEN_REVOKED: i64 = 190;
/// The longest wait a throttling hint may impose (Meta's estimates are in minutes).
const MAX_HINTED_WAIT: Duration = Duration::from_secs(3600);

/// The `error` object of a Graph API answer. Decoding is lenient: a field of the wrong
/// type takes its default instead of failing, and `code`/`error_subcode` accept numeric
/// strings. Dispatch on `code` + `error_subcode`, never on the message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "de_lossy_string")]
    pub message: String,
    #[serde(rename = "type", default, deserialize_with = "de_lossy_opt_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_lossy_int")]
    pub code: i64,
    #[serde(default, deserialize_with = "de_lossy_opt_int")]
    pub error_subcode: Option<i64>,
    #[serde(default, deserialize_with = "de_lossy_opt_bool")]
    pub is_transient: Option<bool>,
    /// Meta support asks for it: it is kept with a failed reply.
    #[serde(default, deserialize_with = "de_lossy_opt_string")]
    pub fbtrace_id: Option<String>,
}

/// `code/subcode: message`, the way operators search Meta's error tables.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_subcode {
            Some(subcode) => write!(f, "{}/{subcode}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

/// Why a Graph API call did not succeed, sorted by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// A temporary failure on Meta's side (codes 1, 2, -1, 1200, or `is_transient:
    /// true`): the same call may succeed after a backoff. Code 2 can also hide a user who
    /// blocked the page, so retries must be capped.
    #[error("Graph error {0}")]
    Transient(ApiError),
    /// Rate limited or temporarily blocked (codes 4, 17, 32, 368, 613, 80001-80014, or
    /// HTTP 429 without a Graph error body, then `error` is `None`): pause every call
    /// for the page, since calling while throttled extends the penalty.
    #[error("{}", throttled_reason(.error.as_ref()))]
    Throttled {
        error: Option<ApiError>,
        /// How long Meta said to wait (`X-Business-Use-Case-Usage`'s
        /// `estimated_time_to_regain_access`, at most an hour), when it said so.
        retry_after: Option<Duration>,
    },
    /// Code 190: the access token is invalid, expired or revoked. Nothing more should be
    /// sent with it; every call would fail the same way.
    #[error("Graph error {0}")]
    TokenRevoked(ApiError),
    /// Any other Graph error (10, 100, 200-299, 551, unknown codes...): it fails again
    /// unchanged, so it is never retried.
    #[error("Graph error {0}")]
    Permanent(ApiError),
    /// An HTTP error status other than 429 without a Graph error body: a 5xx may pass
    /// later, anything else will not.
    #[error("HTTP {status} without a Graph error body")]
    Status { status: u16 },
    /// The request did not reach the Graph API, or its answer did not come back
    /// (connection refused, DNS, TLS, reset). Worth retrying.
    #[error("network: {0}")]
    Network(String),
    /// No answer within the client's timeout. Worth retrying; the call may have been
    /// carried out all the same.
    #[error("network: no answer within {0:?}")]
    Timeout(Duration),
    /// A batch call was answered, but with no result for this request (`null`: Meta did
    /// not complete it, or the answer listed fewer results than requests). Worth
    /// retrying; the request may have been carried out all the same, as after a timeout.
    #[error("the Graph batch answer had no result for this request")]
    NotAnswered,
    /// The answer's status came, but its body could not be read (cut off, too large).
    /// Worth retrying.
    #[error("reading the answer: {0}")]
    Unreadable(String),
    /// The request could not be built (a query that does not encode). Never retried.
    #[error("bad request URL: {0}")]
    InvalidRequest(String),
}

fn throttled_reason(error: Option<&ApiError>) -> String {
    match error {
        Some(error) => format!("Graph error {error}"),
        None => "HTTP 429 without a Graph error body".into(),
    }
}

impl CallError {
    /// Whether the same call may succeed later. Throttling is retryable too, but only
    /// after the page's pause ([`CallError::Throttled`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Transient(_)
            | CallError::Throttled { .. }
            | CallError::Network(_)
            | CallError::Timeout(_)
            | CallError::NotAnswered
            | CallError::Unreadable(_) => true,
            CallError::Status { status } => (500..=599).contains(status),
            CallError::TokenRevoked(_) | CallError::Permanent(_) | CallError::InvalidRequest(_) => {
                false
            }
        }
    }

    /// The Graph error Meta sent, when the failure came with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            CallError::Transient(error)
            | CallError::TokenRevoked(error)
            | CallError::Permanent(error) => Some(error),
            CallError::Throttled { error, .. } => error.as_ref(),
            CallError::Status { .. }
            | CallError::Network(_)
            | CallError::Timeout(_)
            | CallError::NotAnswered
            | CallError::Unreadable(_)
            | CallError::InvalidRequest(_) => None,
        }
    }
}

/// Sorts a non-2xx answer: by its Graph error when it carries one, else by its status.
/// `usage` is the `X-Business-Use-Case-Usage` header, which says how long a throttled
/// page must wait.
pub(crate) fn classify_failure(status: u16, body: &[u8], usage: Option<&str>) -> CallError {
    let retry_after = || usage.and_then(regain_access_hint);
    let Some(error) = parse_api_error(body) else {
        return match status {
            429 => CallError::Throttled {
                error: None,
                retry_after: retry_after(),
            },
            status => CallError::Status { status },
        };
    };
    // Throttling codes win over `is_transient: true`, because retrying a throttled scope
    // prolongs it; a transient-flagged 190 is retried like any transient error.
    match error.code {
        4 | 17 | 32 | 368 | 613 | 80001..=80014 => CallError::Throttled {
            error: Some(error),
            retry_after: retry_after(),
        },
        1 | 2 | -1 | 1200 => CallError::Transient(error),
        _ if error.is_transient == Some(true) => CallError::Transient(error),
        TOKEN_REVOKED => CallError::TokenRevoked(error),
        _ => CallError::Permanent(error),
    }
}

/// Parses a Graph error body leniently; `None` if the body is not a Graph error.
///
/// A Graph error is a JSON object whose `error` member is an object carrying at least a
/// `code` or a `message`.
pub(crate) fn parse_api_error(body: &[u8]) -> Option<ApiError> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let error = root.get("error")?;
    let fields = error.as_object()?;
    if !fields.contains_key("code") && !fields.contains_key("message") {
        return None;
    }
    ApiError::deserialize(error).ok()
}

/// `estimated_time_to_regain_access` (minutes) from the `X-Business-Use-Case-Usage`
/// header: `{"<id>":[{"type":"messenger","estimated_time_to_regain_access":5,...}]}`.
pub(crate) fn regain_access_hint(header: &str) -> Option<Duration> {
    let usage: Value = serde_json::from_str(header).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60).min(MAX_HINTED_WAIT))
}

fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn de_lossy_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_lossy_opt_string(d)?.unwrap_or_default())
}

fn de_lossy_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(Some(s)),
        _ => Ok(None),
    }
}

fn de_lossy_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(de_lossy_opt_int(d)?.unwrap_or_default())
}

fn de_lossy_opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(lenient_int(&Value::deserialize(d)?))
}

fn de_lossy_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Graph error body with this code and `is_transient` flag.
    fn body_with(code: i64, is_transient: Option<bool>) -> Vec<u8> {
        let mut error = serde_json::json!({"message": "m", "type": "OAuthException", "code": code});
        if let Some(flag) = is_transient {
            error["is_transient"] = flag.into();
        }
        serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap()
    }

    /// How a 400 answer with this Graph error is sorted, by variant name.
    fn class_of(code: i64, is_transient: Option<bool>) -> &'static str {
        match classify_failure(400, &body_with(code, is_transient), None) {
            CallError::Transient(_) => "transient",
            CallError::Throttled { .. } => "throttled",
            CallError::TokenRevoked(_) => "token revoked",
            CallError::Permanent(_) => "permanent",
            other => panic!("a Graph error body was sorted as {other:?}"),
        }
    }

    #[test]
    fn a_5xx_without_body_is_retried() {
        let error = classify_failure(502, b"bad gateway", None);
        assert_eq!(error, CallError::Status { status: 502 });
        assert!(error.is_retryable());
    }

    #[test]
    fn a_4xx_without_a_graph_body_is_permanent() {
        let error = classify_failure(404, b"<html>not found</html>", None);
        assert_eq!(error, CallError::Status { status: 404 });
        assert!(!error.is_retryable());
        assert_eq!(error.to_string(), "HTTP 404 without a Graph error body");
    }

    #[test]
    fn a_429_without_a_graph_body_is_throttled_with_the_usage_hint() {
        let usage = r#"{"1":[{"estimated_time_to_regain_access":2}]}"#;
        assert_eq!(
            classify_failure(429, b"", Some(usage)),
            CallError::Throttled {
                error: None,
                retry_after: Some(Duration::from_secs(120))
            }
        );
    }

    #[test]
    fn rate_limit_613_is_retried_as_throttled() {
        let body = br#"{"error":{"message":"(#613) Calls to this api have exceeded the rate limit.","type":"OAuthException","code":613}}"#;
        let error = classify_failure(400, body, None);
        assert!(matches!(
            error,
            CallError::Throttled {
                error: Some(ApiError { code: 613, .. }),
                retry_after: None
            }
        ));
        assert!(error.is_retryable());
    }

    #[test]
    fn a_throttled_graph_error_takes_the_wait_from_the_usage_header() {
        let usage = r#"{"1234":[{"type":"messenger","estimated_time_to_regain_access":3}]}"#;
        let error = classify_failure(400, &body_with(80006, None), Some(usage));
        assert!(matches!(
            error,
            CallError::Throttled { retry_after: Some(wait), .. } if wait == Duration::from_secs(180)
        ));
    }

    #[test]
    fn the_usage_header_is_ignored_when_the_answer_is_not_throttling() {
        let usage = r#"{"1":[{"estimated_time_to_regain_access":3}]}"#;
        assert!(matches!(
            classify_failure(500, &body_with(2, None), Some(usage)),
            CallError::Transient(_)
        ));
    }

    #[test]
    fn a_permanent_graph_error_keeps_code_subcode_message_and_trace() {
        let body = br#"{"error":{"message":"(#551) This person isn't available right now.","type":"OAuthException","code":551,"error_subcode":1545041,"fbtrace_id":"x"}}"#;
        let error = classify_failure(400, body, None);
        assert_eq!(
            error,
            CallError::Permanent(ApiError {
                message: "(#551) This person isn't available right now.".into(),
                kind: Some("OAuthException".into()),
                code: 551,
                error_subcode: Some(1545041),
                is_transient: None,
                fbtrace_id: Some("x".into()),
            })
        );
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "Graph error 551/1545041: (#551) This person isn't available right now."
        );
    }

    #[test]
    fn a_transient_code_2_in_a_500_is_retried() {
        let body = br#"{"error":{"message":"An unexpected error has occurred.","code":2,"is_transient":true}}"#;
        let error = classify_failure(500, body, None);
        assert!(matches!(
            error,
            CallError::Transient(ApiError { code: 2, .. })
        ));
        assert!(error.is_retryable());
    }

    #[test]
    fn a_rejected_token_is_its_own_kind_and_never_retried() {
        let body = br#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190,"error_subcode":460,"fbtrace_id":"X"}}"#;
        let error = classify_failure(400, body, None);
        assert!(matches!(
            &error,
            CallError::TokenRevoked(ApiError {
                code: 190,
                error_subcode: Some(460),
                ..
            })
        ));
        assert!(!error.is_retryable());
        assert_eq!(
            error.api_error().and_then(|e| e.fbtrace_id.as_deref()),
            Some("X")
        );
    }

    #[test]
    fn a_graph_error_wins_over_the_http_status() {
        // A throttling code in a 500 is still throttling; a permanent code in a 503 is
        // still permanent.
        assert_eq!(class_of(613, None), "throttled");
        assert!(matches!(
            classify_failure(503, &body_with(100, None), None),
            CallError::Permanent(_)
        ));
        assert!(matches!(
            classify_failure(500, &body_with(4, None), None),
            CallError::Throttled { .. }
        ));
    }

    #[test]
    fn the_business_use_case_header_gives_the_wait_in_minutes() {
        let header = r#"{"1234":[{"type":"messenger","call_count":100,"estimated_time_to_regain_access":3}]}"#;
        assert_eq!(regain_access_hint(header), Some(Duration::from_secs(180)));
        assert_eq!(
            regain_access_hint(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#),
            None
        );
        assert_eq!(regain_access_hint("not json"), None);
        let huge = r#"{"1":[{"estimated_time_to_regain_access":100000}]}"#;
        assert_eq!(regain_access_hint(huge), Some(MAX_HINTED_WAIT));
    }

    #[test]
    fn real_graph_error_body_is_parsed_and_permanent() {
        let body = br#"{"error":{"message":"(#551) This person isn't available right now.","type":"OAuthException",
            "code":551,"error_subcode":1545041,"error_user_title":"Message Not Sent","error_user_msg":"...",
            "is_transient":false,"fbtrace_id":"AbC123xyz"}}"#;
        let e = parse_api_error(body).expect("a graph error");
        assert_eq!(
            e,
            ApiError {
                message: "(#551) This person isn't available right now.".into(),
                kind: Some("OAuthException".into()),
                code: 551,
                error_subcode: Some(1545041),
                is_transient: Some(false),
                fbtrace_id: Some("AbC123xyz".into()),
            }
        );
        assert!(matches!(
            classify_failure(400, body, None),
            CallError::Permanent(_)
        ));
    }

    #[test]
    fn transient_internal_error_is_parsed_from_a_500_body() {
        let body = br#"{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"A1"}}"#;
        let e = parse_api_error(body).expect("a graph error");
        assert_eq!(e.code, 2);
        assert_eq!(e.is_transient, Some(true));
        assert!(matches!(
            classify_failure(500, body, None),
            CallError::Transient(_)
        ));
    }

    #[test]
    fn graph_error_parsing_is_lenient_about_field_types() {
        let body = br#"{"error":{"message":null,"type":7,"code":"613","error_subcode":"x","is_transient":"yes"}}"#;
        let e = parse_api_error(body).expect("still a graph error");
        assert_eq!(e.message, "");
        assert_eq!(e.kind, None);
        assert_eq!(e.code, 613);
        assert_eq!(e.error_subcode, None);
        assert_eq!(e.is_transient, None);
        assert!(matches!(
            classify_failure(400, body, None),
            CallError::Throttled { .. }
        ));
        let only_message = br#"{"error":{"message":"boom"}}"#;
        assert_eq!(parse_api_error(only_message).map(|e| e.code), Some(0));
        assert!(matches!(
            classify_failure(400, only_message, None),
            CallError::Permanent(_)
        ));
    }

    #[test]
    fn garbage_and_non_graph_bodies_are_not_graph_errors() {
        let bodies: [&[u8]; 9] = [
            b"",
            b"<html>502 Bad Gateway</html>",
            b"\xff\xfe",
            b"{\"error\":",
            b"[]",
            br#"{"recipient_id":"1","message_id":"m_1"}"#,
            br#"{"error":"rate limited"}"#,
            br#"{"error":{}}"#,
            br#"{"error":{"fbtrace_id":"X"}}"#,
        ];
        for body in bodies {
            assert_eq!(
                parse_api_error(body),
                None,
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = "[".repeat(10_000);
        assert_eq!(parse_api_error(deep.as_bytes()), None);
    }

    #[test]
    fn transient_codes_are_transient() {
        for code in [1, 2, -1, 1200] {
            assert_eq!(class_of(code, None), "transient", "code {code}");
            assert_eq!(class_of(code, Some(false)), "transient", "code {code}");
        }
    }

    #[test]
    fn is_transient_flag_makes_an_otherwise_permanent_code_transient() {
        assert_eq!(class_of(100, Some(true)), "transient");
        assert_eq!(class_of(100, Some(false)), "permanent");
        assert_eq!(class_of(100, None), "permanent");
        // A rejected token flagged transient is retried, as it always was.
        assert_eq!(class_of(190, Some(true)), "transient");
    }

    #[test]
    fn throttling_codes_are_throttled_even_if_flagged_transient() {
        for code in [4, 17, 32, 613, 368, 80001, 80006, 80014] {
            assert_eq!(class_of(code, None), "throttled", "code {code}");
            assert_eq!(class_of(code, Some(true)), "throttled", "code {code}");
        }
        assert_eq!(class_of(80000, None), "permanent");
        assert_eq!(class_of(80015, None), "permanent");
    }

    #[test]
    fn permission_parameter_and_unknown_codes_are_permanent_and_190_revokes_the_token() {
        for code in [10, 100, 200, 230, 299, 551, 0, 12345, i64::MIN, i64::MAX] {
            assert_eq!(class_of(code, None), "permanent", "code {code}");
        }
        assert_eq!(class_of(190, None), "token revoked");
        assert_eq!(class_of(190, Some(false)), "token revoked");
    }
}

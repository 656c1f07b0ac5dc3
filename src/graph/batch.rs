//! The Graph batch format, for Send API requests: how one request becomes an item of a
//! batch call (`{"method", "relative_url", "body"}`, the body form-encoded with each
//! field's JSON as its value), and how the batch's answer (a list with one
//! `{"code", "body"}` or `null` per request, in order) becomes one result per request.
//!
//! Must not: do IO, retry, or panic on any answer (a malformed one is every request's
//! retryable failure).

use serde_json::Value;

use super::error::{classify_failure, CallError};
use crate::messenger::outbound::{SendRequest, SendResponse};

/// One request of a batch: `POST {relative_url}` with `request` as its form body.
pub(super) fn item(relative_url: &str, request: &SendRequest) -> Result<Value, CallError> {
    let fields = match serde_json::to_value(request) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return Err(CallError::InvalidRequest(
                "a send request is not an object".into(),
            ))
        }
        Err(error) => return Err(CallError::InvalidRequest(error.to_string())),
    };
    let pairs: Vec<(String, String)> = fields
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => (name, text),
            other => (name, other.to_string()),
        })
        .collect();
    let body = serde_urlencoded::to_string(&pairs)
        .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
    Ok(serde_json::json!({
        "method": "POST",
        "relative_url": relative_url,
        "body": body,
    }))
}

/// A batch item's form body back as the request's JSON fields, as Meta reads it: a
/// value that is a JSON object or list is that JSON, any other is text. The inverse of
/// [`item`]'s body, for stand-ins of the Graph API; `None` if the form does not decode.
#[cfg(any(test, feature = "test-support"))]
pub fn request_fields(form: &str) -> Option<Value> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(form).ok()?;
    let fields = pairs.into_iter().map(|(name, value)| {
        let json = if value.starts_with(['{', '[']) {
            serde_json::from_str(&value).ok()
        } else {
            None
        };
        (name, json.unwrap_or(Value::String(value)))
    });
    Some(Value::Object(fields.collect()))
}

/// Each request's result from a batch call's 2xx answer `body`, for `count` requests.
/// `usage` is the batch call's `X-Business-Use-Case-Usage` header (a throttled request's
/// wait).
pub(super) fn answers(
    body: &[u8],
    count: usize,
    usage: Option<&str>,
) -> Vec<Result<SendResponse, CallError>> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        let unreadable = CallError::Unreadable("the batch answer is not a list".into());
        return vec![Err(unreadable); count];
    };
    (0..count)
        .map(|index| answer(items.get(index), usage))
        .collect()
}

/// One request's result from its item of the batch answer.
fn answer(item: Option<&Value>, usage: Option<&str>) -> Result<SendResponse, CallError> {
    let item = match item {
        None | Some(Value::Null) => return Err(CallError::NotAnswered),
        Some(item) => item,
    };
    let Some(code) = item["code"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
    else {
        return Err(CallError::Unreadable(
            "a batch answer item without a status code".into(),
        ));
    };
    let body = item["body"].as_str().unwrap_or_default();
    if (200..300).contains(&code) {
        // As for a single call: a success whose body does not parse still counts as sent.
        return Ok(serde_json::from_str(body).unwrap_or_default());
    }
    Err(classify_failure(code, body.as_bytes(), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_to(psid: &str, text: &str) -> SendRequest {
        serde_json::from_value(json!({
            "recipient": {"id": psid},
            "messaging_type": "RESPONSE",
            "message": {"text": text},
        }))
        .expect("a send request")
    }

    #[test]
    fn an_item_carries_the_request_form_encoded_with_json_fields() {
        let request = text_to("u-1", "a & b = c? 100% «ok»");
        let item = item("me/messages", &request).unwrap();
        assert_eq!(item["method"], "POST");
        assert_eq!(item["relative_url"], "me/messages");
        let body = item["body"].as_str().unwrap();
        assert!(!body.contains(' ') && !body.contains('«'), "{body}");
        assert_eq!(
            request_fields(body),
            Some(serde_json::to_value(&request).unwrap())
        );
        assert!(
            body.contains("messaging_type=RESPONSE&") || body.ends_with("messaging_type=RESPONSE")
        );
    }

    #[test]
    fn each_request_gets_its_own_result_in_order() {
        let body = json!([
            {"code": 200, "body": "{\"recipient_id\":\"u-1\",\"message_id\":\"m_1\"}"},
            {"code": 400, "body": "{\"error\":{\"message\":\"No matching user\",\"code\":100,\"error_subcode\":2018001,\"fbtrace_id\":\"T1\"}}"},
            null,
            {"code": 500, "body": "{\"error\":{\"message\":\"Temporary\",\"code\":2,\"is_transient\":true}}"},
            {"code": 400, "body": "{\"error\":{\"message\":\"Calls exceeded\",\"code\":613}}"},
            {"code": 200, "body": "not json"},
        ]);
        let results = answers(body.to_string().as_bytes(), 7, None);
        assert_eq!(results.len(), 7);
        assert_eq!(
            results[0].as_ref().unwrap().message_id.as_deref(),
            Some("m_1")
        );
        match &results[1] {
            Err(CallError::Permanent(error)) => {
                assert_eq!((error.code, error.error_subcode), (100, Some(2018001)));
                assert_eq!(error.fbtrace_id.as_deref(), Some("T1"));
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
        assert_eq!(results[2], Err(CallError::NotAnswered));
        assert!(matches!(results[3], Err(CallError::Transient(_))));
        assert!(matches!(results[4], Err(CallError::Throttled { .. })));
        assert_eq!(results[5], Ok(SendResponse::default()));
        // The answer listed six: the seventh request was not answered.
        assert_eq!(results[6], Err(CallError::NotAnswered));
        assert!(results[2].as_ref().unwrap_err().is_retryable());
    }

    #[test]
    fn an_answer_that_is_not_a_list_fails_every_request_retryably() {
        for body in [&b"{\"error\":1}"[..], b"", b"[1,"] {
            let results = answers(body, 3, None);
            assert_eq!(results.len(), 3);
            for result in results {
                let error = result.unwrap_err();
                assert!(matches!(error, CallError::Unreadable(_)), "{error:?}");
                assert!(error.is_retryable());
            }
        }
        let results = answers(br#"[{"body":"{}"}, {"code":"x"}]"#, 2, None);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(CallError::Unreadable(_)))));
    }
}

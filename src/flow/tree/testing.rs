//! Test helpers shared by the tree modules' unit tests: a small valid tree and a way to
//! list the problems of a variant of it. Compiled for tests only.

use serde_json::{json, Value};

use super::format::QuickReplySpec;
use super::load::parse_tree;

/// The quick replies Yes (`YES`) and No (`NO`).
pub fn yes_no_replies() -> Vec<QuickReplySpec> {
    [("Yes", "YES"), ("No", "NO")]
        .into_iter()
        .map(|(title, payload)| QuickReplySpec {
            title: title.into(),
            payload: payload.into(),
        })
        .collect()
}

/// Each problem of `tree`, as displayed; empty when it loads.
pub fn problems_of(tree: Value) -> Vec<String> {
    match parse_tree(&tree.to_string(), None) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

/// Two questions: `city` (place) then `rating` (rating), then the end.
pub fn small_tree() -> Value {
    json!({
        "name": "small",
        "greeting_text": "Hi!",
        "completion_text": "Thanks!",
        "start": "city",
        "questions": [
            {"id": "city", "text": "Which city?", "validation": "place", "next": "rating"},
            {"id": "rating", "text": "Rate us", "validation": "rating", "next": null}
        ]
    })
}

/// Fails unless `expected` is one of `problems`.
pub fn assert_has(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p == expected),
        "expected `{expected}` in {problems:#?}"
    );
}

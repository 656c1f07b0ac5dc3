//! Property tests over the webhook's parsing and signature path: arbitrary bytes,
//! mutated real envelopes and arbitrary JSON items never panic, and every answer is the
//! one documented. Bounded (a fixed number of cases) so CI time stays predictable.
//! Failing inputs proptest finds are kept in `proptest-regressions/` and replayed first.

use colloquy::event::{parse_envelope, EventKind};
use colloquy::test_support::{sign_sha1, sign_sha256, verify};
use proptest::prelude::*;
use serde_json::{json, Value};

const SAMPLE: &str = include_str!("../data/samples/message.json");

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("message"),
            Just("delivery"),
            Just("read"),
            Just("postback"),
            Just("mid"),
            Just("is_echo")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("sender".to_string()),
                        Just("recipient".to_string()),
                        Just("id".to_string()),
                        Just("timestamp".to_string()),
                        Just("message".to_string()),
                        Just("delivery".to_string()),
                        Just("read".to_string()),
                        Just("postback".to_string()),
                        Just("watermark".to_string()),
                        Just("mids".to_string()),
                        Just("text".to_string()),
                        Just("mid".to_string()),
                        Just("is_echo".to_string()),
                        ".{0,6}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Failing inputs are kept beside this file and replayed first on every run.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_envelope(&body);
    }

    #[test]
    fn a_mutated_real_envelope_never_panics_the_parser(
        cut in 0usize..SAMPLE.len(),
        flips in prop::collection::vec((0usize..SAMPLE.len(), any::<u8>()), 0..4),
    ) {
        let mut body = SAMPLE.as_bytes().to_vec();
        for (at, byte) in flips {
            body[at] = byte;
        }
        let _ = parse_envelope(&body[..cut]);
        let _ = parse_envelope(&body);
    }

    #[test]
    fn every_item_of_a_valid_envelope_becomes_exactly_one_event(
        messaging in prop::collection::vec(arbitrary_json(), 0..8),
        standby in prop::collection::vec(arbitrary_json(), 0..4),
    ) {
        let body = json!({"object": "page", "entry": [
            {"id": "42", "time": 1, "messaging": messaging, "standby": standby}
        ]});
        let events = parse_envelope(body.to_string().as_bytes()).expect("a valid envelope parses");
        prop_assert_eq!(events.len(), messaging.len() + standby.len());
        for (event, raw) in events.iter().zip(messaging.iter().chain(standby.iter())) {
            prop_assert_eq!(&event.raw, raw);
            prop_assert_eq!(event.page_id.as_str(), "42");
            // Whatever the item, the helpers answer without panicking.
            let _ = (event.party_id(), event.mid(), event.kind_name(), event.text());
            if !raw.is_object() {
                prop_assert!(matches!(event.kind, EventKind::Unknown));
            }
        }
    }

    #[test]
    fn only_the_right_signature_verifies(
        secret in prop::collection::vec(any::<u8>(), 0..64),
        body in prop::collection::vec(any::<u8>(), 0..256),
        header in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let right256 = sign_sha256(&secret, &body);
        let right1 = sign_sha1(&secret, &body);
        prop_assert!(verify(&secret, &body, Some(right256.as_bytes()), None).is_ok());
        prop_assert!(verify(&secret, &body, None, Some(right1.as_bytes())).is_ok());
        if header != right256.as_bytes() {
            prop_assert!(verify(&secret, &body, Some(&header), None).is_err());
        }
        if header != right1.as_bytes() {
            prop_assert!(verify(&secret, &body, None, Some(&header)).is_err());
        }
    }
}

#[test]
fn nesting_far_beyond_the_recursion_limit_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "{{\"object\":\"page\",\"entry\":[{{\"id\":\"1\",\"messaging\":[{}{}]}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse_envelope(deep.as_bytes()).is_err());
}

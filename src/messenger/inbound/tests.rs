//! Unit tests of the webhook parser: the seed payloads, every event kind, the lenient
//! decoding of ids and numbers, and hostile bodies (each rejected with its JSON path, or
//! kept as an unknown event, never a panic).
//!
//! One long file on purpose: it is flat, one short test per payload shape in sections,
//! all built on the same `parse`/`single` helpers; split, the sections would only repeat
//! them.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Vec<InboundEvent> {
    parse_envelope(v.to_string().as_bytes()).expect("envelope should parse")
}

fn single(item: Value) -> InboundEvent {
    let mut events =
        parse(json!({"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [item]}]}));
    assert_eq!(events.len(), 1, "one messaging item gives one event");
    events.remove(0)
}

fn err(body: &str) -> ParseError {
    parse_envelope(body.as_bytes()).expect_err("envelope should be rejected")
}

// --- seed payloads (webhook.md, Python reprs converted to JSON) ---

#[test]
fn seed_message_parses_to_a_text_message_from_the_user() {
    let events = parse(json!({"entry": [{"id": "128922990987384",
        "messaging": [{"message": {"mid": "mid.$cAAAvslv3zhdjvrtYAldjXYO771AA", "seq": 153783, "text": "hi there."},
                       "recipient": {"id": "128922990987384"}, "sender": {"id": "969833033053167"},
                       "timestamp": 1501316911106_i64}],
        "time": 1501316911147_i64}], "object": "page"}));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.page_id, "128922990987384");
    assert_eq!(e.party_id(), "969833033053167");
    assert_eq!(e.mid(), Some("mid.$cAAAvslv3zhdjvrtYAldjXYO771AA"));
    assert_eq!(e.text(), Some("hi there."));
    assert_eq!(e.timestamp, 1501316911106);
    assert_eq!(e.kind_name(), "text");
    assert!(e.is_user_input());
    assert!(!e.standby);
    assert!(matches!(e.kind, EventKind::Message(_)));
}

#[test]
fn seed_echo_parses_to_an_echo_whose_party_is_the_recipient() {
    let events = parse(json!({"entry": [{"id": "128922990987384",
        "messaging": [{"message": {"app_id": 1377689312323892_i64, "is_echo": true,
                                   "mid": "mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN", "seq": 153785,
                                   "text": "Thank you for your time..!!"},
                       "recipient": {"id": "969833033053167"}, "sender": {"id": "128922990987384"},
                       "timestamp": 1501316912643_i64}],
        "time": 1501316912679_i64}], "object": "page"}));
    let e = &events[0];
    assert_eq!(e.page_id, "128922990987384");
    assert_eq!(e.party_id(), "969833033053167");
    assert_eq!(e.mid(), Some("mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN"));
    assert_eq!(e.kind_name(), "echo");
    assert!(!e.is_user_input(), "echoes must never run a flow");
    match &e.kind {
        EventKind::Echo(echo) => {
            assert_eq!(echo.app_id.as_deref(), Some("1377689312323892"));
            assert_eq!(echo.text.as_deref(), Some("Thank you for your time..!!"));
        }
        other => panic!("expected Echo, got {other:?}"),
    }
}

#[test]
fn seed_delivery_parses_with_mids_and_watermark() {
    let events = parse(json!({"entry": [{"id": "128922990987384",
        "messaging": [{"delivery": {"mids": ["mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN"], "seq": 0,
                                    "watermark": 1501316912643_i64},
                       "recipient": {"id": "128922990987384"}, "sender": {"id": "969833033053167"},
                       "timestamp": 1501316913034_i64}],
        "time": 1501316913037_i64}], "object": "page"}));
    let e = &events[0];
    assert_eq!(e.page_id, "128922990987384");
    assert_eq!(e.party_id(), "969833033053167");
    assert_eq!(e.mid(), None, "deliveries carry no mid of their own");
    assert_eq!(e.kind_name(), "delivery");
    assert_eq!(
        e.kind,
        EventKind::Delivery(Delivery {
            mids: vec!["mid.$cAAAvslv3zhdjvrteA1djXYVnmSlN".into()],
            watermark: 1501316912643,
        })
    );
}

#[test]
fn seed_read_parses_with_watermark() {
    let events = parse(json!({"entry": [{"id": "128922990987384",
        "messaging": [{"read": {"seq": 0, "watermark": 1501316912643_i64},
                       "recipient": {"id": "128922990987384"}, "sender": {"id": "969833033053167"},
                       "timestamp": 1501316914630_i64}],
        "time": 1501316914633_i64}], "object": "page"}));
    let e = &events[0];
    assert_eq!(e.page_id, "128922990987384");
    assert_eq!(e.party_id(), "969833033053167");
    assert_eq!(
        e.kind,
        EventKind::Read(Read {
            watermark: 1501316912643,
            mid: None,
        })
    );
    assert_eq!(e.kind_name(), "read");
    assert!(!e.is_user_input());
}

// --- batching and ordering ---

#[test]
fn batch_of_two_entries_with_standby_yields_five_events_in_order() {
    let msg = |psid: &str, mid: &str| json!({"sender": {"id": psid}, "recipient": {"id": "P"}, "timestamp": 1, "message": {"mid": mid, "text": "x"}});
    let events = parse(json!({"object": "page", "entry": [
        {"id": "P1", "time": 10, "messaging": [msg("u1", "m1"), msg("u2", "m2")]},
        {"id": "P2", "time": 11, "messaging": [msg("u3", "m3"), msg("u4", "m4")],
         "standby": [msg("u5", "m5")]}
    ]}));
    let got: Vec<(&str, Option<&str>, bool)> = events
        .iter()
        .map(|e| (e.page_id.as_str(), e.mid(), e.standby))
        .collect();
    assert_eq!(
        got,
        vec![
            ("P1", Some("m1"), false),
            ("P1", Some("m2"), false),
            ("P2", Some("m3"), false),
            ("P2", Some("m4"), false),
            ("P2", Some("m5"), true),
        ]
    );
}

#[test]
fn standby_items_come_after_messaging_items_of_the_same_entry() {
    let events = parse(json!({"object": "page", "entry": [{"id": "P",
        "standby": [{"read": {"watermark": 2}}],
        "messaging": [{"read": {"watermark": 1}}]}]}));
    let flags: Vec<bool> = events.iter().map(|e| e.standby).collect();
    assert_eq!(flags, vec![false, true]);
}

#[test]
fn empty_entry_array_yields_no_events() {
    assert_eq!(
        parse_envelope(br#"{"object":"page","entry":[]}"#),
        Ok(vec![])
    );
}

#[test]
fn entry_without_messaging_or_standby_yields_no_events() {
    let events = parse(
        json!({"object": "page", "entry": [{"id": "P", "changes": [{"field": "feed", "value": {}}]}]}),
    );
    assert!(events.is_empty());
}

#[test]
fn instagram_object_is_accepted() {
    let events = parse(
        json!({"object": "instagram", "entry": [{"id": "IG1", "messaging": [{"sender": {"id": "igsid"}, "message": {"mid": "aWdfZAG", "text": "hey"}}]}]}),
    );
    assert_eq!(events[0].page_id, "IG1");
    assert_eq!(events[0].text(), Some("hey"));
}

// --- every event kind ---

#[test]
fn quick_reply_message_is_named_quick_reply_and_keeps_payload() {
    let e = single(
        json!({"sender": {"id": "PSID"}, "recipient": {"id": "PAGE"}, "timestamp": 1767000000001_i64,
        "message": {"mid": "m_123", "text": "Blue", "quick_reply": {"payload": "COLOR_BLUE"},
                    "reply_to": {"mid": "m_099", "is_self_reply": false}}}),
    );
    assert_eq!(e.kind_name(), "quick_reply");
    assert!(e.is_user_input());
    match &e.kind {
        EventKind::Message(m) => {
            assert_eq!(
                m.quick_reply,
                Some(QuickReplyAnswer {
                    payload: "COLOR_BLUE".into()
                })
            );
            assert_eq!(
                m.reply_to,
                Some(ReplyTo {
                    mid: "m_099".into()
                })
            );
            assert_eq!(m.text.as_deref(), Some("Blue"));
        }
        other => panic!("expected Message, got {other:?}"),
    }
}

#[test]
fn attachment_only_message_is_named_attachments_and_allows_null_payload() {
    let e = single(
        json!({"sender": {"id": "PSID"}, "recipient": {"id": "PAGE"}, "timestamp": 5,
        "message": {"mid": "m_att", "attachments": [
            {"type": "image", "payload": {"url": "https://x/img.png"}},
            {"type": "fallback", "payload": null, "title": "link"}]}}),
    );
    assert_eq!(e.kind_name(), "attachments");
    assert_eq!(e.text(), None);
    match &e.kind {
        EventKind::Message(m) => {
            assert_eq!(m.attachments.len(), 2);
            assert_eq!(m.attachments[0].kind, "image");
            assert_eq!(
                m.attachments[0].payload,
                Some(json!({"url": "https://x/img.png"}))
            );
            assert_eq!(m.attachments[1].kind, "fallback");
            assert_eq!(m.attachments[1].payload, None);
        }
        other => panic!("expected Message, got {other:?}"),
    }
}

#[test]
fn message_with_text_and_attachments_is_named_text() {
    let e = single(
        json!({"sender": {"id": "u"}, "message": {"mid": "m", "text": "look", "attachments": [{"type": "image", "payload": {"url": "u"}}]}}),
    );
    assert_eq!(e.kind_name(), "text");
}

#[test]
fn message_referral_from_an_ad_is_kept() {
    let e = single(
        json!({"sender": {"id": "u"}, "message": {"mid": "m", "text": "hi",
        "referral": {"ref": "promo", "source": "ADS", "type": "OPEN_THREAD", "ad_id": 6045246247433_i64}}}),
    );
    match &e.kind {
        EventKind::Message(m) => assert_eq!(
            m.referral,
            Some(Referral {
                ref_: Some("promo".into()),
                source: Some("ADS".into()),
                kind: Some("OPEN_THREAD".into()),
                ad_id: Some("6045246247433".into())
            })
        ),
        other => panic!("expected Message, got {other:?}"),
    }
}

#[test]
fn instagram_story_reply_without_mid_keeps_the_message() {
    let e = single(
        json!({"sender": {"id": "u"}, "message": {"mid": "m", "text": "nice",
        "reply_to": {"story": {"url": "https://x", "id": "123"}}}}),
    );
    assert_eq!(e.kind_name(), "text");
    match &e.kind {
        EventKind::Message(m) => assert_eq!(m.reply_to, None),
        other => panic!("expected Message, got {other:?}"),
    }
}

#[test]
fn postback_exposes_title_as_text_payload_and_mid() {
    let e = single(
        json!({"sender": {"id": "PSID"}, "recipient": {"id": "PAGE"}, "timestamp": 1767000000002_i64,
        "postback": {"title": "Get Started", "payload": "GET_STARTED", "mid": "m_pb",
                     "referral": {"ref": "landing", "source": "SHORTLINK", "type": "OPEN_THREAD"}}}),
    );
    assert_eq!(e.kind_name(), "postback");
    assert!(e.is_user_input());
    assert_eq!(e.text(), Some("Get Started"));
    assert_eq!(e.mid(), Some("m_pb"));
    match &e.kind {
        EventKind::Postback(p) => {
            assert_eq!(p.payload.as_deref(), Some("GET_STARTED"));
            assert_eq!(
                p.referral.as_ref().and_then(|r| r.ref_.as_deref()),
                Some("landing")
            );
        }
        other => panic!("expected Postback, got {other:?}"),
    }
}

#[test]
fn standby_postback_without_payload_or_mid_still_parses() {
    let events = parse(json!({"object": "page", "entry": [{"id": "P", "standby": [
        {"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 3, "postback": {"title": "Yes"}}]}]}));
    let e = &events[0];
    assert!(e.standby);
    assert_eq!(e.mid(), None);
    assert_eq!(
        e.kind,
        EventKind::Postback(Postback {
            mid: None,
            title: Some("Yes".into()),
            payload: None,
            referral: None
        })
    );
}

#[test]
fn postback_from_chat_plugin_guest_uses_user_ref_and_string_timestamp() {
    let e = single(
        json!({"sender": {"user_ref": "guest-42"}, "recipient": {"id": "PAGE"}, "timestamp": "1527459824",
        "postback": {"title": "Hi", "payload": "P"}}),
    );
    assert_eq!(e.sender_id, None);
    assert_eq!(e.user_ref.as_deref(), Some("guest-42"));
    assert_eq!(e.party_id(), "guest-42");
    assert_eq!(
        e.timestamp, 1527459824,
        "numeric strings are accepted as is"
    );
}

#[test]
fn referral_event_in_existing_thread() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 9,
        "referral": {"ref": "summer", "source": "SHORTLINK", "type": "OPEN_THREAD",
                     "ads_context_data": {"ad_title": "t"}}}),
    );
    assert_eq!(e.kind_name(), "referral");
    assert_eq!(
        e.kind,
        EventKind::Referral(Referral {
            ref_: Some("summer".into()),
            source: Some("SHORTLINK".into()),
            kind: Some("OPEN_THREAD".into()),
            ad_id: None
        })
    );
    assert_eq!(e.party_id(), "u");
}

#[test]
fn marketing_optin_keeps_token_and_payload() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 9,
        "optin": {"type": "notification_messages", "payload": "DEALS", "notification_messages_token": "tok",
                  "notification_messages_frequency": "WEEKLY", "token_expiry_timestamp": 1}}),
    );
    assert_eq!(e.kind_name(), "optin");
    match &e.kind {
        EventKind::Optin(o) => {
            assert_eq!(o.kind.as_deref(), Some("notification_messages"));
            assert_eq!(o.payload.as_deref(), Some("DEALS"));
            assert_eq!(o.notification_messages_token.as_deref(), Some("tok"));
        }
        other => panic!("expected Optin, got {other:?}"),
    }
    assert_eq!(e.user_ref, None, "a sender id means no user_ref fallback");
}

#[test]
fn checkbox_optin_without_sender_uses_optin_user_ref_as_party() {
    let e = single(json!({"recipient": {"id": "P"}, "timestamp": 9,
        "optin": {"ref": "checkout", "user_ref": "ur-77"}}));
    assert_eq!(e.sender_id, None);
    assert_eq!(e.user_ref.as_deref(), Some("ur-77"));
    assert_eq!(e.party_id(), "ur-77");
}

#[test]
fn reaction_points_at_the_reacted_message_but_has_no_mid_of_its_own() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 9,
        "reaction": {"reaction": "love", "emoji": "\u{2764}", "action": "react", "mid": "m_1"}}),
    );
    assert_eq!(e.kind_name(), "reaction");
    assert_eq!(e.mid(), None);
    assert_eq!(
        e.kind,
        EventKind::Reaction(Reaction {
            mid: Some("m_1".into()),
            reaction: Some("love".into()),
            emoji: Some("\u{2764}".into()),
            action: Some("react".into())
        })
    );
}

#[test]
fn message_edit_reuses_the_original_mid_and_exposes_new_text() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 9,
        "message_edit": {"mid": "m_orig", "text": "fixed typo", "num_edit": 2}}),
    );
    assert_eq!(e.kind_name(), "edit");
    assert_eq!(e.mid(), Some("m_orig"));
    assert_eq!(e.text(), Some("fixed typo"));
    assert!(!e.is_user_input());
    assert_eq!(
        e.kind,
        EventKind::Edit(MessageEdit {
            mid: "m_orig".into(),
            text: Some("fixed typo".into()),
            num_edit: Some(2)
        })
    );
}

#[test]
fn handover_events_accept_numeric_app_ids_and_null_previous_owner() {
    let pass = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1,
        "pass_thread_control": {"previous_owner_app_id": null, "new_owner_app_id": 123456789012345_i64, "metadata": "to bot"}}),
    );
    assert_eq!(pass.kind_name(), "pass_thread_control");
    assert_eq!(
        pass.kind,
        EventKind::PassThreadControl(ThreadControl {
            previous_owner_app_id: None,
            new_owner_app_id: Some("123456789012345".into()),
            requested_owner_app_id: None,
            metadata: Some("to bot".into())
        })
    );

    let take = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1,
        "take_thread_control": {"previous_owner_app_id": "111", "new_owner_app_id": "263902037430900", "metadata": "agent"}}),
    );
    assert_eq!(take.kind_name(), "take_thread_control");
    match &take.kind {
        EventKind::TakeThreadControl(t) => {
            assert_eq!(t.previous_owner_app_id.as_deref(), Some("111"));
            assert_eq!(t.new_owner_app_id.as_deref(), Some("263902037430900"));
        }
        other => panic!("expected TakeThreadControl, got {other:?}"),
    }

    let request = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1,
        "request_thread_control": {"requested_owner_app_id": 222, "metadata": "please"}}),
    );
    assert_eq!(request.kind_name(), "request_thread_control");
    match &request.kind {
        EventKind::RequestThreadControl(t) => {
            assert_eq!(t.requested_owner_app_id.as_deref(), Some("222"))
        }
        other => panic!("expected RequestThreadControl, got {other:?}"),
    }
}

#[test]
fn app_roles_without_sender_keeps_the_role_map() {
    let e = single(json!({"recipient": {"id": "P"}, "timestamp": 1,
        "app_roles": {"123456789": ["primary_receiver"]}}));
    assert_eq!(e.kind_name(), "app_roles");
    assert_eq!(
        e.kind,
        EventKind::AppRoles(json!({"123456789": ["primary_receiver"]}))
    );
    assert_eq!(e.party_id(), "", "no sender, no user_ref: empty party");
}

#[test]
fn policy_enforcement_is_recognised_with_underscore_or_hyphen() {
    for key in ["policy_enforcement", "policy-enforcement"] {
        let mut item = json!({"recipient": {"id": "P"}, "timestamp": 1});
        item[key] = json!({"action": "block", "reason": "spam"});
        let e = single(item);
        assert_eq!(e.kind_name(), "policy_enforcement", "key {key}");
        assert_eq!(
            e.kind,
            EventKind::PolicyEnforcement(PolicyEnforcement {
                action: Some("block".into()),
                reason: Some("spam".into())
            })
        );
    }
}

#[test]
fn account_linking_linked_and_unlinked() {
    let linked = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1,
        "account_linking": {"status": "linked", "authorization_code": "code-1"}}),
    );
    assert_eq!(linked.kind_name(), "account_linking");
    assert_eq!(
        linked.kind,
        EventKind::AccountLinking(AccountLinking {
            status: Some("linked".into()),
            authorization_code: Some("code-1".into())
        })
    );
    let unlinked =
        single(json!({"sender": {"id": "u"}, "account_linking": {"status": "unlinked"}}));
    assert_eq!(
        unlinked.kind,
        EventKind::AccountLinking(AccountLinking {
            status: Some("unlinked".into()),
            authorization_code: None
        })
    );
}

#[test]
fn game_play_keeps_its_json() {
    let gp = json!({"game_id": "g1", "player_id": "pl", "context_type": "SOLO", "score": 99, "payload": "{}"});
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1, "game_play": gp.clone()}),
    );
    assert_eq!(e.kind_name(), "game_play");
    assert_eq!(e.kind, EventKind::GamePlay(gp));
}

// --- unknown and malformed items ---

#[test]
fn unknown_key_becomes_unknown_with_raw_kept() {
    let item = json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1, "messaging_feedback": {"x": 1}});
    let e = single(item.clone());
    assert_eq!(e.kind, EventKind::Unknown);
    assert_eq!(e.kind_name(), "unknown");
    assert_eq!(e.raw, item);
    assert_eq!(
        e.sender_id.as_deref(),
        Some("u"),
        "envelope fields still extracted"
    );
}

#[test]
fn non_object_messaging_item_becomes_unknown_with_raw_kept() {
    let events =
        parse(json!({"object": "page", "entry": [{"id": "P", "messaging": ["oops", 7, null]}]}));
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Unknown && e.timestamp == 0 && e.party_id().is_empty()));
    assert_eq!(events[0].raw, json!("oops"));
    assert_eq!(events[1].raw, json!(7));
    assert_eq!(events[2].raw, Value::Null);
}

#[test]
fn wrong_typed_known_kind_becomes_unknown_not_an_error() {
    let cases = [
        json!({"sender": {"id": "u"}, "message": {"mid": "m", "text": 42}}),
        json!({"sender": {"id": "u"}, "message": "hello"}),
        json!({"sender": {"id": "u"}, "message": {"text": "no mid"}}),
        json!({"sender": {"id": "u"}, "delivery": {"watermark": "soon"}}),
        json!({"sender": {"id": "u"}, "read": {"watermark": [1]}}),
        json!({"sender": {"id": "u"}, "postback": {"title": {"a": 1}}}),
        json!({"sender": {"id": "u"}, "message_edit": {"mid": "m", "num_edit": -1}}),
        json!({"sender": {"id": "u"}, "pass_thread_control": {"new_owner_app_id": 1.5}}),
    ];
    for item in cases {
        let e = single(item.clone());
        assert_eq!(e.kind, EventKind::Unknown, "item {item}");
        assert_eq!(e.raw, item);
    }
}

#[test]
fn echo_with_is_echo_false_is_a_plain_message() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "message": {"mid": "m", "text": "t", "is_echo": false}}),
    );
    assert_eq!(e.kind_name(), "text");
    assert_eq!(e.party_id(), "u");
}

// --- what the page sent, and attachments that are not usable ---

#[test]
fn a_message_sent_by_the_page_is_an_echo_however_its_echo_flag_is_spelled() {
    let spellings = [
        json!("true"),
        json!(1),
        json!(false),
        json!(null),
        json!("yes"),
    ];
    let absent = json!({"mid": "m", "text": "from the page"});
    let messages = spellings
        .iter()
        .map(|flag| json!({"mid": "m", "text": "from the page", "is_echo": flag}))
        .chain([absent]);
    for message in messages {
        let e = single(
            json!({"sender": {"id": "PAGE"}, "recipient": {"id": "u"}, "timestamp": 1, "message": message}),
        );
        let EventKind::Echo(echo) = &e.kind else {
            panic!("{message} sent by the page is not an echo: {:?}", e.kind);
        };
        assert_eq!(echo.text.as_deref(), Some("from the page"));
        assert_eq!(e.party_id(), "u", "{message}: the echo belongs to the user");
        assert!(!e.is_user_input(), "{message} is user input");
    }
}

#[test]
fn nothing_the_page_sent_is_user_input_even_when_it_is_no_echo() {
    let from_page = |kind: &str, body: Value| {
        single(
            json!({"sender": {"id": "PAGE"}, "recipient": {"id": "u"}, "timestamp": 1, kind: body}),
        )
    };
    let postback = from_page("postback", json!({"title": "Start", "payload": "GO"}));
    assert!(matches!(postback.kind, EventKind::Postback(_)));
    assert!(!postback.is_user_input());
    let referral = from_page("referral", json!({"ref": "ad", "source": "ADS"}));
    assert!(!referral.is_user_input());
    let no_mid = from_page("message", json!({"text": "no mid", "is_echo": "true"}));
    assert_eq!(no_mid.kind, EventKind::Unknown);
    assert!(!no_mid.is_user_input());
}

#[test]
fn a_users_message_is_the_users_whatever_its_echo_flag_says_unless_it_is_true() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "PAGE"}, "message": {"mid": "m", "text": "t", "is_echo": "true"}}),
    );
    assert!(matches!(e.kind, EventKind::Message(_)));
    assert!(e.is_user_input());
}

#[test]
fn an_attachment_without_a_usable_type_is_kept_as_unknown_and_the_text_still_arrives() {
    let e = single(
        json!({"sender": {"id": "u"}, "message": {"mid": "m", "text": "look",
        "attachments": [{"payload": {"url": "https://x"}}, {"type": "image", "payload": null},
                        {"type": 7}, "not an object"]}}),
    );
    let EventKind::Message(message) = &e.kind else {
        panic!("the message was lost: {:?}", e.kind);
    };
    assert_eq!(e.text(), Some("look"));
    assert!(e.is_user_input());
    let kinds: Vec<&str> = message
        .attachments
        .iter()
        .map(|a| a.kind.as_str())
        .collect();
    assert_eq!(kinds, ["unknown", "image", "unknown", "unknown"]);
    assert_eq!(
        message.attachments[0].payload,
        Some(json!({"url": "https://x"})),
        "what there is of it is kept"
    );
}

#[test]
fn a_lone_attachment_object_or_an_echos_unusable_attachment_is_kept_too() {
    let e = single(json!({"sender": {"id": "u"}, "message": {"mid": "m",
        "attachments": {"type": "file", "payload": {"url": "https://x"}}}}));
    let EventKind::Message(message) = &e.kind else {
        panic!("the message was lost: {:?}", e.kind);
    };
    assert_eq!(message.attachments[0].kind, "file");
    assert_eq!(e.kind_name(), "attachments");
    let e = single(json!({"sender": {"id": "PAGE"}, "recipient": {"id": "u"},
        "message": {"mid": "m", "is_echo": true, "attachments": [{"payload": {}}]}}));
    let EventKind::Echo(echo) = &e.kind else {
        panic!("the echo was lost: {:?}", e.kind);
    };
    assert_eq!(echo.attachments[0].kind, "unknown");
}

// --- lenient ids and timestamps ---

#[test]
fn numeric_ids_are_kept_as_decimal_strings() {
    let events = parse(
        json!({"object": "page", "entry": [{"id": 128922990987384_i64, "messaging": [
        {"sender": {"id": 969833033053167_i64}, "recipient": {"id": 128922990987384_i64}, "timestamp": 1,
         "message": {"mid": 12345, "text": "x"}}]}]}),
    );
    let e = &events[0];
    assert_eq!(e.page_id, "128922990987384");
    assert_eq!(e.sender_id.as_deref(), Some("969833033053167"));
    assert_eq!(e.recipient_id.as_deref(), Some("128922990987384"));
    assert_eq!(e.mid(), Some("12345"));
}

#[test]
fn string_timestamps_and_watermarks_are_parsed() {
    let e = single(
        json!({"sender": {"id": "u"}, "timestamp": "1767000000001", "read": {"watermark": "1767000000500"}}),
    );
    assert_eq!(e.timestamp, 1767000000001);
    assert_eq!(
        e.kind,
        EventKind::Read(Read {
            watermark: 1767000000500,
            mid: None,
        })
    );
}

#[test]
fn absent_or_unparsable_timestamp_is_zero() {
    assert_eq!(single(json!({"read": {"watermark": 1}})).timestamp, 0);
    assert_eq!(
        single(json!({"timestamp": "yesterday", "read": {"watermark": 1}})).timestamp,
        0
    );
    assert_eq!(
        single(json!({"timestamp": true, "read": {"watermark": 1}})).timestamp,
        0
    );
    assert_eq!(
        single(json!({"timestamp": 1.7e12, "read": {"watermark": 1}})).timestamp,
        1_700_000_000_000
    );
}

#[test]
fn delivery_without_mids_has_empty_mids() {
    let e = single(json!({"sender": {"id": "u"}, "delivery": {"watermark": 1767000000500_i64}}));
    assert_eq!(
        e.kind,
        EventKind::Delivery(Delivery {
            mids: vec![],
            watermark: 1767000000500,
        })
    );
}

// --- from_raw and serde round trip ---

#[test]
fn from_raw_rebuilds_the_same_event_as_parse() {
    let item = json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 7, "message": {"mid": "m", "text": "t"}});
    let parsed =
        parse(json!({"object": "page", "entry": [{"id": "P", "standby": [item.clone()]}]}));
    assert_eq!(InboundEvent::from_raw("P", item, true), parsed[0]);
}

#[test]
fn from_raw_never_fails_on_garbage() {
    let e = InboundEvent::from_raw("P", json!([1, {"sender": 3}]), false);
    assert_eq!(e.kind, EventKind::Unknown);
    assert_eq!(e.page_id, "P");
    assert_eq!(e.party_id(), "");
    let e = InboundEvent::from_raw(
        "P",
        json!({"sender": "u", "recipient": [1], "timestamp": {}}),
        false,
    );
    assert_eq!((e.sender_id, e.recipient_id, e.timestamp), (None, None, 0));
}

#[test]
fn event_survives_a_serde_round_trip() {
    let e = single(
        json!({"sender": {"id": "u"}, "recipient": {"id": "P"}, "timestamp": 1,
        "message": {"mid": "m", "text": "t", "quick_reply": {"payload": "Q"},
                    "attachments": [{"type": "image", "payload": null}],
                    "referral": {"ref": "r", "source": "ADS", "type": "OPEN_THREAD", "ad_id": "9"}}}),
    );
    let json = serde_json::to_string(&e).expect("serialize");
    let back: InboundEvent = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, e);
}

// --- envelope errors ---

#[test]
fn invalid_json_is_reported_with_the_serde_message() {
    let e = err(r#"{"object":"page","entry":["#);
    match &e {
        ParseError::InvalidJson(msg) => assert!(msg.contains("EOF"), "{msg}"),
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert!(e.to_string().starts_with("body is not valid JSON: "));
    assert!(matches!(err(""), ParseError::InvalidJson(_)));
}

#[test]
fn invalid_utf8_is_invalid_json() {
    let body = b"{\"object\":\"page\",\"entry\":[{\"id\":\"\xff\xfe\"}]}";
    assert!(matches!(
        parse_envelope(body),
        Err(ParseError::InvalidJson(_))
    ));
    assert!(matches!(
        parse_envelope(&[0xC3, 0x28]),
        Err(ParseError::InvalidJson(_))
    ));
}

#[test]
fn deeply_nested_json_is_invalid_json_without_stack_overflow() {
    let body = "[".repeat(10_000);
    match parse_envelope(body.as_bytes()) {
        Err(ParseError::InvalidJson(msg)) => assert!(msg.contains("recursion limit"), "{msg}"),
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    let nested = format!(
        r#"{{"object":"page","entry":[{{"id":"P","messaging":[{}{}]}}]}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(
        parse_envelope(nested.as_bytes()),
        Err(ParseError::InvalidJson(_))
    ));
}

#[test]
fn truncated_or_corrupted_bodies_never_panic() {
    let body = json!({"object": "page", "entry": [{"id": 1, "time": 2,
        "messaging": [{"sender": {"id": "u"}, "timestamp": "3", "message": {"mid": "m", "text": "h\u{e4}"}}],
        "standby": [{"read": {"watermark": 4}}]}]})
    .to_string()
    .into_bytes();
    for cut in 0..body.len() {
        let result = parse_envelope(&body[..cut]);
        assert!(
            matches!(result, Err(ParseError::InvalidJson(_))),
            "cut at {cut}: {result:?}"
        );
    }
    for i in 0..body.len() {
        for byte in [b'"', b'{', b'0', 0xff] {
            let mut corrupted = body.clone();
            corrupted[i] = byte;
            let _ = parse_envelope(&corrupted);
        }
    }
    assert_eq!(parse_envelope(&body).map(|events| events.len()), Ok(2));
}

#[test]
fn non_object_body_is_not_an_object() {
    assert_eq!(err("[]"), ParseError::NotAnObject);
    assert_eq!(err("\"page\""), ParseError::NotAnObject);
    assert_eq!(
        ParseError::NotAnObject.to_string(),
        "body must be a JSON object"
    );
}

#[test]
fn wrong_object_names_the_value_received() {
    let e = err(r#"{"object":"user","entry":[]}"#);
    assert_eq!(e, ParseError::WrongObject("user".into()));
    assert_eq!(
        e.to_string(),
        r#"field `object` must be "page" or "instagram", got "user""#
    );
}

#[test]
fn wrong_object_value_is_truncated() {
    let long = "x".repeat(1000);
    match err(&format!(r#"{{"object":"{long}","entry":[]}}"#)) {
        ParseError::WrongObject(s) => assert_eq!(s.chars().count(), 65),
        other => panic!("expected WrongObject, got {other:?}"),
    }
}

#[test]
fn missing_fields_are_named_with_their_path() {
    let e = err(r#"{"entry":[]}"#);
    assert_eq!(e, ParseError::MissingField("object".into()));
    assert_eq!(e.to_string(), "missing field `object`");
    let e = err(r#"{"object":"page"}"#);
    assert_eq!(e, ParseError::MissingField("entry".into()));
    assert_eq!(e.to_string(), "missing field `entry`");
    let e = err(r#"{"object":"page","entry":[{"id":"P"},{"time":1}]}"#);
    assert_eq!(e, ParseError::MissingField("entry[1].id".into()));
    assert_eq!(e.to_string(), "missing field `entry[1].id`");
}

#[test]
fn wrong_types_are_named_with_their_path_and_expectation() {
    let cases: [(&str, &str, &str); 6] = [
        (r#"{"object":5,"entry":[]}"#, "object", "a string"),
        (r#"{"object":"page","entry":{}}"#, "entry", "an array"),
        (
            r#"{"object":"page","entry":[{"id":"a"},{"id":"b"},"x"]}"#,
            "entry[2]",
            "an object",
        ),
        (
            r#"{"object":"page","entry":[{"id":1.5}]}"#,
            "entry[0].id",
            "a string or integer",
        ),
        (
            r#"{"object":"page","entry":[{"id":"a"},{"id":"b"},{"id":"c","messaging":{}}]}"#,
            "entry[2].messaging",
            "an array",
        ),
        (
            r#"{"object":"page","entry":[{"id":"a","standby":"no"}]}"#,
            "entry[0].standby",
            "an array",
        ),
    ];
    for (body, path, expected) in cases {
        assert_eq!(
            err(body),
            ParseError::WrongType {
                path: path.into(),
                expected
            },
            "body {body}"
        );
    }
    assert_eq!(
        err(r#"{"object":"page","entry":[{"id":"a"},{"id":"b"},{"id":"c","messaging":{}}]}"#)
            .to_string(),
        "field `entry[2].messaging` must be an array"
    );
}

#[test]
fn an_instagram_envelope_marks_its_events_instagram_and_a_page_envelope_messenger() {
    let item = json!({"sender": {"id": "IGSID"}, "recipient": {"id": "17841"},
                      "timestamp": 1767000000000_i64, "message": {"mid": "ig_m1", "text": "hi"}});
    let instagram = parse(
        json!({"object": "instagram", "entry": [{"id": "17841", "messaging": [item.clone()]}]}),
    );
    assert_eq!(instagram[0].channel, Channel::Instagram);
    assert!(instagram[0].is_user_input());
    let page = parse(json!({"object": "page", "entry": [{"id": "17841", "messaging": [item]}]}));
    assert_eq!(page[0].channel, Channel::Messenger);
}

#[test]
fn instagram_messaging_seen_is_a_read_at_the_time_it_was_seen() {
    let seen = json!({"sender": {"id": "IGSID"}, "recipient": {"id": "17841"},
                      "timestamp": 1767000000900_i64, "read": {"mid": "ig_sent_1"}});
    let events =
        parse(json!({"object": "instagram", "entry": [{"id": "17841", "messaging": [seen]}]}));
    assert_eq!(
        events[0].kind,
        EventKind::Read(Read {
            watermark: 1767000000900,
            mid: Some("ig_sent_1".into()),
        })
    );
    assert_eq!(events[0].kind_name(), "read");
    // Without a time there is no watermark to move: the item stays unknown.
    let timeless = json!({"sender": {"id": "IGSID"}, "read": {"mid": "ig_sent_1"}});
    let events =
        parse(json!({"object": "instagram", "entry": [{"id": "17841", "messaging": [timeless]}]}));
    assert_eq!(events[0].kind, EventKind::Unknown);
}

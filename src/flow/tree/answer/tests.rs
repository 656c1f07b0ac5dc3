//! Unit tests of answer validation: what each `Validation` accepts, rejects and stores.

use super::*;
use serde_json::json;

fn accepts(validation: Validation, cases: &[(&str, Value)]) {
    for (input, expected) in cases {
        assert_eq!(
            validation.parse(input).as_ref(),
            Some(expected),
            "{} should accept {input:?}",
            validation.name()
        );
    }
}

fn refuses(validation: Validation, inputs: &[&str]) {
    for input in inputs {
        assert_eq!(
            validation.parse(input),
            None,
            "{} should refuse {input:?}",
            validation.name()
        );
    }
}

#[test]
fn free_text_keeps_any_trimmed_text_and_refuses_blank() {
    accepts(
        Validation::FreeText,
        &[
            ("  Rust, SQL ", json!("Rust, SQL")),
            ("stop?", json!("stop?")),
        ],
    );
    refuses(Validation::FreeText, &["", "   \n"]);
}

#[test]
fn yes_no_reads_the_usual_variants_as_a_bool() {
    accepts(
        Validation::YesNo,
        &[
            ("Yes", json!(true)),
            ("yeah!", json!(true)),
            ("  Y ", json!(true)),
            ("NO.", json!(false)),
            ("nope", json!(false)),
            ("not   really", json!(false)),
        ],
    );
    refuses(Validation::YesNo, &["maybe", "", "yes and no", "1"]);
}

#[test]
fn number_takes_the_one_number_among_words() {
    accepts(
        Validation::Number,
        &[
            ("5", json!(5)),
            ("3.5 years", json!(3.5)),
            ("about 7+ yrs", json!(7)),
            ("1,200", json!(1200)),
        ],
    );
    refuses(
        Validation::Number,
        &["five", "", "2 years 6 months", "-3", "1.2.3", "5-6"],
    );
}

#[test]
fn amount_understands_lakhs_thousands_grouping_and_currencies() {
    accepts(
        Validation::Amount,
        &[
            ("12 LPA", json!(1_200_000)),
            ("12LPA", json!(1_200_000)),
            ("1,20,000", json!(120_000)),
            ("15k", json!(15_000)),
            ("$3000", json!(3000)),
            ("Rs. 4.5 lakhs per annum", json!(450_000)),
            ("₹ 1.2 cr", json!(12_000_000)),
            ("2.5L", json!(250_000)),
            ("0", json!(0)),
        ],
    );
    refuses(
        Validation::Amount,
        &[
            "a lot",
            "",
            "12 15",
            "15k lakh",
            "-5000",
            "12 apples",
            "LPA",
        ],
    );
}

#[test]
fn duration_is_kept_in_days() {
    accepts(
        Validation::Duration,
        &[
            ("2 months", json!(60)),
            ("30 days", json!(30)),
            ("30", json!(30)),
            ("immediate", json!(0)),
            ("Immediately", json!(0)),
            ("a month", json!(30)),
            ("two weeks", json!(14)),
            ("1 month and 15 days", json!(45)),
            ("1.5 months", json!(45)),
            ("about 20 days left", json!(20)),
            ("3 mths", json!(90)),
        ],
    );
    refuses(
        Validation::Duration,
        &[
            "soon",
            "",
            "months",
            "30-60 days",
            "immediate 30 days",
            "20 years",
            "30 45",
        ],
    );
}

#[test]
fn place_is_letters_spaces_and_hyphens_of_sensible_length() {
    accepts(
        Validation::Place,
        &[
            ("Pune", json!("Pune")),
            ("  New   Delhi ", json!("New Delhi")),
            ("Navi-Mumbai", json!("Navi-Mumbai")),
            ("St. John's", json!("St. John's")),
            ("São Paulo", json!("São Paulo")),
        ],
    );
    refuses(
        Validation::Place,
        &["P", "12345", "Pune 411001", "", &"x".repeat(61), "--"],
    );
}

#[test]
fn rating_is_an_integer_from_one_to_five() {
    accepts(
        Validation::Rating,
        &[
            ("4", json!(4)),
            ("4/5", json!(4)),
            ("5 stars", json!(5)),
            ("3 out of 5", json!(3)),
            ("★★", json!(2)),
        ],
    );
    refuses(
        Validation::Rating,
        &["0", "6", "4.5", "great", "", "4/10", "★★★★★★"],
    );
}

#[test]
fn email_needs_a_local_part_and_a_dotted_domain() {
    accepts(
        Validation::Email,
        &[
            ("asha@Example.COM", json!("asha@example.com")),
            (" a.b+c@mail.co.in ", json!("a.b+c@mail.co.in")),
        ],
    );
    refuses(
        Validation::Email,
        &[
            "asha",
            "asha@",
            "@x.com",
            "a@b",
            "a b@x.com",
            "a@x..com",
            "a@x.c0",
        ],
    );
}

#[test]
fn phone_keeps_digits_and_a_leading_plus() {
    accepts(
        Validation::Phone,
        &[
            ("+91 98765 43210", json!("+919876543210")),
            ("(020) 555-0199", json!("0205550199")),
        ],
    );
    refuses(
        Validation::Phone,
        &["12345", "call me", "+1 234 567 890 123 456", "98765x43210"],
    );
}

#[test]
fn match_keys_compare_bools_as_yes_no_and_text_without_case() {
    assert_eq!(match_key(&json!(true)), "yes");
    assert_eq!(match_key(&json!(false)), "no");
    assert_eq!(match_key(&json!("Pune")), "pune");
    assert_eq!(match_key(&json!(30)), "30");
}

#[test]
fn validation_types_are_written_in_snake_case() {
    let parsed: Validation = serde_json::from_value(json!("yes_no")).unwrap();
    assert_eq!(parsed, Validation::YesNo);
    assert_eq!(parsed.name(), "yes_no");
    assert!(serde_json::from_value::<Validation>(json!("salary")).is_err());
}

//! Answer checking for interview trees: turns what a user typed (or the payload of the
//! quick reply they tapped) into a normalized JSON value for one [`Validation`] type, or
//! says it does not fit.
//!
//! Owns the validation types, their parsers and the sentence that explains each one to a
//! user. Must not know about trees, turns or replies, and never panics on any input:
//! every parser is a plain function from `&str` to `Option<Value>`.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// How an answer is checked and what value it is kept as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Any non-empty text, kept trimmed.
    #[default]
    FreeText,
    /// yes/no and their usual variants, kept as a bool.
    YesNo,
    /// One number among optional words (`5`, `3.5 years`), kept as that number.
    Number,
    /// Money (`12 LPA`, `1,20,000`, `15k`, `$3000`), kept as a plain number.
    Amount,
    /// A period such as a notice period (`2 months`, `30 days`, `immediate`), kept in days.
    Duration,
    /// A city or place name: letters, spaces, hyphens, apostrophes, dots; 2-60 characters.
    Place,
    /// An integer from 1 to 5 (`4`, `4/5`, `4 stars`, `★★★★`).
    Rating,
    /// An email address, kept with its domain lowercased.
    Email,
    /// A phone number of 7 to 15 digits, kept as digits with a leading `+` if one was given.
    Phone,
}

/// Days in the units a duration may use; a month counts 30 days, a year 365.
const DAYS_PER_WEEK: f64 = 7.0;
const DAYS_PER_MONTH: f64 = 30.0;
const DAYS_PER_YEAR: f64 = 365.0;
/// Longest duration accepted (ten years): beyond it the answer is surely a typo.
const MAX_DURATION_DAYS: f64 = 3650.0;
/// E.164 numbers have at most 15 digits; 7 is the shortest local number we accept.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
const PLACE_CHARS: std::ops::RangeInclusive<usize> = 2..=60;
const RATING_RANGE: std::ops::RangeInclusive<i64> = 1..=5;

impl Validation {
    /// The type's name as written in a tree.
    pub fn name(self) -> &'static str {
        match self {
            Validation::FreeText => "free_text",
            Validation::YesNo => "yes_no",
            Validation::Number => "number",
            Validation::Amount => "amount",
            Validation::Duration => "duration",
            Validation::Place => "place",
            Validation::Rating => "rating",
            Validation::Email => "email",
            Validation::Phone => "phone",
        }
    }

    /// The normalized value of `input`, or `None` when it does not fit this type.
    pub fn parse(self, input: &str) -> Option<Value> {
        let input = input.trim();
        match self {
            Validation::FreeText => parse_free_text(input),
            Validation::YesNo => parse_yes_no(input).map(Value::Bool),
            Validation::Number => parse_number(input).and_then(number_value),
            Validation::Amount => parse_amount(input).and_then(number_value),
            Validation::Duration => parse_duration_days(input).map(Value::from),
            Validation::Place => parse_place(input).map(Value::String),
            Validation::Rating => parse_rating(input).map(Value::from),
            Validation::Email => parse_email(input).map(Value::String),
            Validation::Phone => parse_phone(input).map(Value::String),
        }
    }

    /// What to tell a user whose answer did not fit.
    pub fn expectation(self) -> &'static str {
        match self {
            Validation::FreeText => "Please answer with a few words.",
            Validation::YesNo => "Please answer yes or no.",
            Validation::Number => "Please answer with a number, like 5 or 3.5.",
            Validation::Amount => {
                "Please answer with an amount, like 12 LPA, 1,20,000, 15k or $3000."
            }
            Validation::Duration => "Please answer with a number of days, like 30 or 2 months.",
            Validation::Place => {
                "Please answer with the name of a city or place, like Pune or New Delhi."
            }
            Validation::Rating => "Please answer with a rating from 1 to 5.",
            Validation::Email => "Please answer with an email address, like name@example.com.",
            Validation::Phone => "Please answer with a phone number, like +91 98765 43210.",
        }
    }
}

/// The text two answers are compared by when choosing a branch: `yes`/`no` for bools,
/// the number for numbers, the lowercased text for strings.
pub fn match_key(value: &Value) -> String {
    match value {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(text) => text.to_lowercase(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A JSON number, integral when the value is whole (`120000`, not `120000.0`).
fn number_value(number: f64) -> Option<Value> {
    let whole = number.fract() == 0.0 && number.abs() < 9.0e15;
    if whole {
        // Exact: `number` is whole and well inside i64's range.
        Some(Value::from(number as i64))
    } else {
        Number::from_f64(number).map(Value::Number)
    }
}

fn parse_free_text(input: &str) -> Option<Value> {
    (!input.is_empty()).then(|| Value::String(input.to_string()))
}

const YES: &[&str] = &[
    "yes",
    "y",
    "yeah",
    "yea",
    "yep",
    "yup",
    "sure",
    "ok",
    "okay",
    "true",
    "of course",
    "haan",
    "han",
    "ha",
];
const NO: &[&str] = &[
    "no",
    "n",
    "nope",
    "nah",
    "false",
    "not really",
    "nahi",
    "na",
];

fn parse_yes_no(input: &str) -> Option<bool> {
    let words = input
        .trim_end_matches(['.', '!'])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if YES.contains(&words.as_str()) {
        Some(true)
    } else if NO.contains(&words.as_str()) {
        Some(false)
    } else {
        None
    }
}

/// A piece of an answer, as the numeric parsers see it.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// Digits with `,` grouping (any style, so `1,20,000` too) and an optional decimal point.
    Number(f64),
    /// Letters, lowercased, with dots dropped (`p.a.` → `pa`, `Rs.` → `rs`).
    Word(String),
    /// Any other visible character.
    Symbol(char),
}

/// Splits an answer into tokens; `None` when a run of digits is not a number (`1.2.3`).
fn tokenize(input: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_digit() {
            let mut digits = String::new();
            while let Some(&d) = chars.peek() {
                match d {
                    '0'..='9' | '.' => digits.push(d),
                    ',' => {}
                    _ => break,
                }
                chars.next();
            }
            tokens.push(Token::Number(digits.parse().ok()?));
        } else if c.is_alphabetic() {
            let mut word = String::new();
            while let Some(&l) = chars.peek() {
                match l {
                    '.' => {}
                    _ if l.is_alphabetic() => word.extend(l.to_lowercase()),
                    _ => break,
                }
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            tokens.push(Token::Symbol(c));
            chars.next();
        }
    }
    Some(tokens)
}

fn numbers(tokens: &[Token]) -> Vec<f64> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Number(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Exactly one number among any words; `+` and `~` allowed, a minus sign is not.
fn parse_number(input: &str) -> Option<f64> {
    let tokens = tokenize(input)?;
    let only_plain_symbols = tokens
        .iter()
        .all(|t| !matches!(t, Token::Symbol(s) if !matches!(s, '+' | '~' | '.' | ',')));
    match numbers(&tokens)[..] {
        [number] if only_plain_symbols => Some(number),
        _ => None,
    }
}

/// Multiplier words of an amount: thousand, lakh (100,000), million, crore (10,000,000).
fn amount_multiplier(word: &str) -> Option<f64> {
    match word {
        "k" | "thousand" | "thousands" => Some(1e3),
        "l" | "lac" | "lacs" | "lakh" | "lakhs" | "lpa" => Some(1e5),
        "m" | "mn" | "million" | "millions" => Some(1e6),
        "cr" | "crore" | "crores" => Some(1e7),
        _ => None,
    }
}

/// Words an amount may carry that do not change its value.
const AMOUNT_WORDS: &[&str] = &[
    "rs", "inr", "usd", "eur", "gbp", "rupee", "rupees", "dollar", "dollars", "euro", "euros",
    "pound", "pounds", "per", "annum", "pa", "a", "year", "yr", "yearly", "annual", "annually",
    "ctc", "approx", "about", "around", "salary", "fixed", "gross",
];

fn parse_amount(input: &str) -> Option<f64> {
    let tokens = tokenize(input)?;
    let mut amount = None;
    let mut multiplier = None;
    for token in tokens {
        match token {
            Token::Number(n) if amount.is_none() => amount = Some(n),
            Token::Word(word) => match amount_multiplier(&word) {
                Some(factor) if multiplier.is_none() => multiplier = Some(factor),
                None if AMOUNT_WORDS.contains(&word.as_str()) => {}
                _ => return None,
            },
            Token::Symbol('$' | '₹' | '€' | '£' | '/' | '~') => {}
            _ => return None,
        }
    }
    let amount = amount? * multiplier.unwrap_or(1.0);
    // Cents (or paise) at most: `1.2 cr` must not come out as 11999999.999999998.
    Some((amount * 100.0).round() / 100.0)
}

/// Days in one unit of a duration word.
fn duration_unit_days(word: &str) -> Option<f64> {
    match word {
        "d" | "day" | "days" => Some(1.0),
        "w" | "wk" | "wks" | "week" | "weeks" => Some(DAYS_PER_WEEK),
        "mo" | "mos" | "mon" | "mth" | "mths" | "month" | "months" => Some(DAYS_PER_MONTH),
        "y" | "yr" | "yrs" | "year" | "years" => Some(DAYS_PER_YEAR),
        _ => None,
    }
}

fn count_word(word: &str) -> Option<f64> {
    const COUNTS: &[&str] = &[
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
    ];
    match word {
        "a" | "an" => Some(1.0),
        _ => COUNTS
            .iter()
            .position(|c| *c == word)
            .map(|i| (i + 1) as f64),
    }
}

/// Words meaning "no notice period left".
const IMMEDIATE_WORDS: &[&str] = &["immediate", "immediately", "none", "nil", "zero"];
/// Words a duration may carry that do not change its value.
const DURATION_WORDS: &[&str] = &[
    "left",
    "remaining",
    "more",
    "about",
    "around",
    "approx",
    "approximately",
    "nearly",
    "almost",
    "only",
    "and",
    "notice",
    "period",
    "joiner",
    "joining",
    "available",
    "can",
    "join",
];

/// A duration in whole days: a sum of `<count> <unit>` parts; a count without a unit is days.
fn parse_duration_days(input: &str) -> Option<i64> {
    let tokens = tokenize(input)?;
    let mut total = 0.0;
    let mut pending: Option<f64> = None;
    let mut saw_quantity = false;
    let mut immediate = false;
    for token in tokens {
        match token {
            Token::Number(n) if pending.is_none() => pending = Some(n),
            Token::Word(word) => {
                if let Some(unit) = duration_unit_days(&word) {
                    total += pending.take()? * unit;
                    saw_quantity = true;
                } else if let Some(count) = count_word(&word).filter(|_| pending.is_none()) {
                    pending = Some(count);
                } else if IMMEDIATE_WORDS.contains(&word.as_str()) {
                    immediate = true;
                } else if !DURATION_WORDS.contains(&word.as_str()) {
                    return None;
                }
            }
            Token::Symbol(',' | '~' | '.') => {}
            _ => return None,
        }
    }
    if let Some(days) = pending {
        total += days;
        saw_quantity = true;
    }
    if immediate == saw_quantity || total > MAX_DURATION_DAYS {
        return None;
    }
    Some(total.round() as i64)
}

fn parse_place(input: &str) -> Option<String> {
    let place = input.split_whitespace().collect::<Vec<_>>().join(" ");
    let allowed = place
        .chars()
        .all(|c| c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.'));
    let letters = place.chars().filter(|c| c.is_alphabetic()).count();
    let fits = PLACE_CHARS.contains(&place.chars().count()) && letters >= 2;
    (allowed && fits).then_some(place)
}

fn parse_rating(input: &str) -> Option<i64> {
    let stars = input.chars().filter(|c| matches!(c, '★' | '⭐')).count();
    if stars > 0
        && input
            .chars()
            .all(|c| matches!(c, '★' | '⭐') || c.is_whitespace())
    {
        let stars = i64::try_from(stars).ok()?;
        return RATING_RANGE.contains(&stars).then_some(stars);
    }
    let tokens = tokenize(input)?;
    let extras_fit = tokens.iter().all(|t| match t {
        Token::Number(_) | Token::Symbol('/') => true,
        Token::Word(word) => matches!(word.as_str(), "star" | "stars" | "out" | "of"),
        Token::Symbol(_) => false,
    });
    let rating = match numbers(&tokens)[..] {
        [rating] => rating,
        [rating, 5.0] => rating,
        _ => return None,
    };
    let whole = rating.fract() == 0.0 && RATING_RANGE.contains(&(rating as i64));
    (extras_fit && whole).then_some(rating as i64)
}

fn parse_email(input: &str) -> Option<String> {
    let (local, domain) = input.split_once('@')?;
    let local_fits = !local.is_empty()
        && local.len() <= 64
        && !local.chars().any(|c| c.is_whitespace() || c == '@');
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_fit = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    let tld_fits = labels
        .last()
        .is_some_and(|tld| tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic));
    (local_fits && labels_fit && tld_fits && input.len() <= 254)
        .then(|| format!("{local}@{}", domain.to_lowercase()))
}

fn parse_phone(input: &str) -> Option<String> {
    let (plus, rest) = match input.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", input),
    };
    let allowed = rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    (allowed && PHONE_DIGITS.contains(&digits.len())).then(|| format!("{plus}{digits}"))
}

#[cfg(test)]
mod tests;

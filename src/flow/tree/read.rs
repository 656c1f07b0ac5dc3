//! Reads one interview tree from parsed JSON field by field, recording a [`Problem`]
//! with its JSON path for each field that does not fit and carrying on, so one load
//! reports everything (`questions[3].validation: unknown variant `salary``).
//!
//! Owns the per-field rules: required fields, unknown fields, ids, texts within the Send
//! API's limits, quick replies, branches, `max_tries`, and answers that can never match.
//! The link checks are `graph`'s. Must not touch files or the engine.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::answer::Validation;
use super::format::{Branch, Question, QuickReplySpec, Tree, DEFAULT_MAX_TRIES};
use super::graph;
use super::problem::{Located, Problem};
use crate::flow::{quick_reply, Reply};

/// The tree in `root`, or every problem found in it.
pub(super) fn read_tree(root: &Value, default_name: Option<&str>) -> Result<Tree, Vec<Problem>> {
    let mut reader = Reader::default();
    match reader.tree(root, default_name) {
        Some(tree) if reader.problems.is_empty() => Ok(tree),
        _ => Err(reader.problems),
    }
}

const TREE_FIELDS: &[&str] = &[
    "name",
    "greeting_text",
    "completion_text",
    "start",
    "questions",
    "callback_url",
];
const QUESTION_FIELDS: &[&str] = &[
    "id",
    "text",
    "quick_replies",
    "validation",
    "next",
    "branches",
    "follow_up",
    "max_tries",
];
const BRANCH_FIELDS: &[&str] = &["answer", "next"];
const QUICK_REPLY_FIELDS: &[&str] = &["title", "payload"];

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Collects problems while reading.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.problem(path, "must be a JSON object");
        }
        object
    }

    fn reject_unknown(&mut self, object: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            let expected = known.join(", ");
            self.problem(
                join(path, key),
                format!("unknown field; expected one of: {expected}"),
            );
        }
    }

    /// An optional field; absent and `null` are `None`, a wrong type is a problem.
    fn optional<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<T> {
        let value = object.get(key).filter(|v| !v.is_null())?;
        serde_json::from_value(value.clone())
            .map_err(|e| self.problem(join(path, key), e.to_string()))
            .ok()
    }

    fn required<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<T> {
        if object.get(key).is_none_or(Value::is_null) {
            self.problem(join(path, key), "missing");
            return None;
        }
        self.optional(object, path, key)
    }

    /// Text a user will read: not blank, within the Send API's limits.
    fn text(&mut self, object: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        let text: String = self.required(object, path, key)?;
        let problem = if text.trim().is_empty() {
            Some("must not be empty".to_string())
        } else {
            Reply::text(text.clone()).err().map(|e| e.to_string())
        };
        match problem {
            Some(message) => {
                self.problem(join(path, key), message);
                None
            }
            None => Some(text),
        }
    }

    /// A question id: a non-empty string or a whole number (numbered questions).
    fn id(&mut self, value: &Value, path: &str) -> Option<String> {
        let id = match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            _ => None,
        };
        if id.is_none() {
            self.problem(
                path,
                format!(
                    "must be a question id (a non-empty string or a whole number), not {value}"
                ),
            );
        }
        id
    }

    /// A link to another question; absent or `null` ends the interview.
    fn target(&mut self, object: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        let value = object.get(key).filter(|v| !v.is_null())?;
        self.id(value, &join(path, key))
    }

    fn tree(&mut self, root: &Value, default_name: Option<&str>) -> Option<Tree> {
        let object = self.object(root, "")?;
        self.reject_unknown(object, "", TREE_FIELDS);
        let name = self.tree_name(object, default_name);
        let greeting_text = self.text(object, "", "greeting_text");
        let completion_text = self.text(object, "", "completion_text");
        let start = match object.get("start") {
            Some(value) => self.id(value, "start"),
            None => {
                self.problem("start", "missing");
                None
            }
        };
        let callback_url = self.callback_url(object);
        let questions = self.questions(object);
        self.check_ids(&questions, start.as_deref());
        self.problems
            .extend(graph::check_links(start.as_deref(), &questions));
        Some(Tree {
            name: name?,
            greeting_text: greeting_text?,
            completion_text: completion_text?,
            start: start?,
            questions: questions.into_iter().map(|q| q.question).collect(),
            callback_url,
        })
    }

    fn tree_name(
        &mut self,
        object: &Map<String, Value>,
        default_name: Option<&str>,
    ) -> Option<String> {
        let name = match object.get("name").filter(|v| !v.is_null()) {
            None => match default_name {
                Some(name) => name.to_string(),
                None => {
                    self.problem("name", "missing");
                    return None;
                }
            },
            Some(_) => self.optional::<String>(object, "", "name")?,
        };
        if name.trim().is_empty() {
            self.problem("name", "must not be empty");
            return None;
        }
        Some(name.trim().to_string())
    }

    fn callback_url(&mut self, object: &Map<String, Value>) -> Option<String> {
        let url: String = self.optional(object, "", "callback_url")?;
        match Reply::callback(url.clone(), Value::Null) {
            Ok(_) => Some(url),
            Err(error) => {
                self.problem("callback_url", error.to_string());
                None
            }
        }
    }

    /// `questions` as a list of questions with ids, or a map from id to question.
    fn questions(&mut self, object: &Map<String, Value>) -> Vec<Located> {
        let items: Vec<(String, Option<&str>, &Value)> = match object.get("questions") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, q)| (format!("questions[{i}]"), None, q))
                .collect(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(id, q)| (format!("questions.{id}"), Some(id.as_str()), q))
                .collect(),
            Some(_) => {
                self.problem(
                    "questions",
                    "must be a list of questions or a map from id to question",
                );
                return Vec::new();
            }
            None => {
                self.problem("questions", "missing");
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.problem("questions", "a tree needs at least one question");
        }
        items
            .into_iter()
            .filter_map(|(path, key, value)| {
                let question = self.question(value, &path, key)?;
                Some(Located { path, question })
            })
            .collect()
    }

    fn question(&mut self, value: &Value, path: &str, key: Option<&str>) -> Option<Question> {
        let object = self.object(value, path)?;
        self.reject_unknown(object, path, QUESTION_FIELDS);
        let id = self.question_id(object, path, key);
        let text = self.text(object, path, "text");
        let quick_replies = self.quick_replies(object, path);
        let validation: Validation = self
            .optional(object, path, "validation")
            .unwrap_or_default();
        let next = self.target(object, path, "next");
        let branches = self.branches(object, path);
        let follow_up = self.optional(object, path, "follow_up").unwrap_or(false);
        let max_tries = self.max_tries(object, path);
        let question = Question {
            id: id?,
            text: text?,
            quick_replies,
            validation,
            next,
            branches,
            follow_up,
            max_tries,
        };
        self.check_answers(&question, path);
        Some(question)
    }

    /// The `id` field; in a map the key is the id, and an `id` field must agree with it.
    fn question_id(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: Option<&str>,
    ) -> Option<String> {
        let id_path = join(path, "id");
        match (object.get("id"), key) {
            (None, Some(key)) => Some(key.to_string()),
            (None, None) => {
                self.problem(id_path, "missing");
                None
            }
            (Some(value), key) => {
                let id = self.id(value, &id_path)?;
                if key.is_some_and(|key| key != id) {
                    self.problem(
                        id_path,
                        format!("`{id}` differs from its key in `questions`"),
                    );
                }
                Some(id)
            }
        }
    }

    fn quick_replies(&mut self, object: &Map<String, Value>, path: &str) -> Vec<QuickReplySpec> {
        let path = join(path, "quick_replies");
        let items: Vec<Value> = match object.get("quick_replies") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                self.problem(path, "must be a list of titles or {title, payload} objects");
                return Vec::new();
            }
        };
        let specs: Vec<QuickReplySpec> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.quick_reply(item, &format!("{path}[{i}]")))
            .collect();
        let built = specs
            .iter()
            .filter_map(|qr| quick_reply(qr.title.clone(), qr.payload.clone()).ok());
        if let Err(error) = Reply::text("?").and_then(|r| r.with_quick_replies(built)) {
            self.problem(path, error.to_string());
        }
        specs
    }

    fn quick_reply(&mut self, item: &Value, path: &str) -> Option<QuickReplySpec> {
        let spec = match item {
            Value::String(title) => QuickReplySpec {
                title: title.clone(),
                payload: title.clone(),
            },
            Value::Object(object) => {
                self.reject_unknown(object, path, QUICK_REPLY_FIELDS);
                let title: String = self.required(object, path, "title")?;
                let payload = self.optional(object, path, "payload");
                QuickReplySpec {
                    payload: payload.unwrap_or_else(|| title.clone()),
                    title,
                }
            }
            _ => {
                self.problem(path, "must be a title or a {title, payload} object");
                return None;
            }
        };
        match quick_reply(spec.title.clone(), spec.payload.clone()) {
            Ok(_) => Some(spec),
            Err(error) => {
                self.problem(path, error.to_string());
                None
            }
        }
    }

    fn branches(&mut self, object: &Map<String, Value>, path: &str) -> Vec<Branch> {
        let path = join(path, "branches");
        match object.get("branches") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.branch(item, &format!("{path}[{i}]")))
                .collect(),
            Some(_) => {
                self.problem(path, "must be a list of {answer, next} objects");
                Vec::new()
            }
        }
    }

    fn branch(&mut self, item: &Value, path: &str) -> Option<Branch> {
        let object = self.object(item, path)?;
        self.reject_unknown(object, path, BRANCH_FIELDS);
        let answer = match object.get("answer") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(value @ (Value::Bool(_) | Value::Number(_))) => Some(value.to_string()),
            _ => {
                self.problem(join(path, "answer"), "must be a non-empty answer");
                None
            }
        };
        if !object.contains_key("next") {
            self.problem(
                join(path, "next"),
                "missing (use null to end the interview)",
            );
        }
        let next = self.target(object, path, "next");
        Some(Branch {
            answer: answer?,
            next,
        })
    }

    fn max_tries(&mut self, object: &Map<String, Value>, path: &str) -> u32 {
        match self.optional::<u32>(object, path, "max_tries") {
            Some(0) => {
                self.problem(join(path, "max_tries"), "must be at least 1");
                DEFAULT_MAX_TRIES
            }
            Some(tries) => tries,
            None => DEFAULT_MAX_TRIES,
        }
    }

    /// Quick-reply payloads must be valid answers, and branch answers must be possible.
    fn check_answers(&mut self, question: &Question, path: &str) {
        let validation = question.validation;
        for (i, qr) in question.quick_replies.iter().enumerate() {
            if validation.parse(&qr.payload).is_none() {
                self.problem(
                    format!("{path}.quick_replies[{i}]"),
                    format!(
                        "payload `{}` is not a valid {} answer",
                        qr.payload,
                        validation.name()
                    ),
                );
            }
        }
        for (i, branch) in question.branches.iter().enumerate() {
            if !question.can_match(&branch.answer) {
                self.problem(
                    format!("{path}.branches[{i}].answer"),
                    format!(
                        "`{}` can never match: it is neither a valid {} answer nor a quick reply",
                        branch.answer,
                        validation.name()
                    ),
                );
            }
        }
    }

    /// Ids are unique, and the interview does not start with a follow-up question.
    fn check_ids(&mut self, questions: &[Located], start: Option<&str>) {
        for (i, located) in questions.iter().enumerate() {
            let id = &located.question.id;
            if let Some(first) = questions[..i].iter().find(|q| &q.question.id == id) {
                self.problem(
                    join(&located.path, "id"),
                    format!("duplicate id `{id}` (first used at {})", first.path),
                );
            }
            if start == Some(id.as_str()) && located.question.follow_up {
                self.problem(
                    "start",
                    format!("`{id}` is a follow-up question; an interview cannot start with one"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tree::testing::{assert_has, problems_of, small_tree};
    use serde_json::json;

    #[test]
    fn a_correct_tree_loads_with_its_defaults() {
        let tree = crate::flow::tree::parse_tree(&small_tree().to_string(), None).unwrap();
        assert_eq!(tree.name, "small");
        assert_eq!(tree.questions.len(), 2);
        assert_eq!(tree.questions[1].max_tries, DEFAULT_MAX_TRIES);
        assert_eq!(tree.questions[1].next, None);
    }

    #[test]
    fn questions_may_be_a_map_of_numbered_questions() {
        let tree = json!({
            "name": "numbered", "greeting_text": "Hi", "completion_text": "Bye", "start": 1,
            "questions": {
                "1": {"text": "First?", "next": 2},
                "2": {"id": 2, "text": "Second?"}
            }
        });
        let tree = crate::flow::tree::parse_tree(&tree.to_string(), None).unwrap();
        assert_eq!(tree.start, "1");
        assert_eq!(tree.question("1").unwrap().next.as_deref(), Some("2"));
    }

    #[test]
    fn a_bad_validation_type_names_its_path() {
        let mut tree = small_tree();
        tree["questions"][0]["validation"] = json!("salary");
        let problems = problems_of(tree);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("questions[0].validation: unknown variant `salary`"),
            "{problems:?}"
        );
    }

    #[test]
    fn duplicate_ids_name_both_places() {
        let mut tree = small_tree();
        tree["questions"][1]["id"] = json!("city");
        assert_has(
            &problems_of(tree),
            "questions[1].id: duplicate id `city` (first used at questions[0])",
        );
    }

    #[test]
    fn empty_texts_are_reported() {
        let mut tree = small_tree();
        tree["questions"][0]["text"] = json!("  ");
        tree["completion_text"] = json!("");
        let problems = problems_of(tree);
        assert_has(&problems, "questions[0].text: must not be empty");
        assert_has(&problems, "completion_text: must not be empty");
    }

    #[test]
    fn quick_reply_limits_are_checked_when_loading() {
        let mut tree = small_tree();
        tree["questions"][0]["validation"] = json!("free_text");
        tree["questions"][0]["quick_replies"] =
            json!((0..14).map(|i| format!("c{i}")).collect::<Vec<_>>());
        tree["questions"][1]["quick_replies"] =
            json!(["1", {"title": "A very very long title indeed", "payload": "5"}]);
        let problems = problems_of(tree);
        assert_has(
            &problems,
            "questions[0].quick_replies: 14 quick replies; the Send API allows at most 13",
        );
        assert_has(
            &problems,
            "questions[1].quick_replies[1]: quick reply title `A very very long title indeed` must have 1 to 20 characters",
        );
    }

    #[test]
    fn quick_reply_payloads_and_branch_answers_must_fit_the_validation() {
        let mut tree = small_tree();
        tree["questions"][1]["validation"] = json!("yes_no");
        tree["questions"][1]["quick_replies"] = json!(["Yes", "Maybe"]);
        tree["questions"][1]["branches"] = json!([{"answer": "perhaps", "next": null}]);
        let problems = problems_of(tree);
        assert_has(
            &problems,
            "questions[1].quick_replies[1]: payload `Maybe` is not a valid yes_no answer",
        );
        assert_has(
            &problems,
            "questions[1].branches[0].answer: `perhaps` can never match: it is neither a valid yes_no answer nor a quick reply",
        );
    }

    #[test]
    fn every_problem_is_reported_in_one_load() {
        let tree = json!({
            "greeting_text": "Hi", "completion_text": "Bye", "start": "a", "colour": "red",
            "questions": [
                {"id": "a", "text": "A?", "next": "zz", "max_tries": 0},
                {"id": "b", "text": "", "validation": "telepathy"}
            ]
        });
        let problems = problems_of(tree);
        assert_has(&problems, "name: missing");
        assert_has(&problems, "colour: unknown field; expected one of: name, greeting_text, completion_text, start, questions, callback_url");
        assert_has(&problems, "questions[0].next: unknown question `zz`");
        assert_has(&problems, "questions[0].max_tries: must be at least 1");
        assert_has(&problems, "questions[1].text: must not be empty");
        assert!(problems
            .iter()
            .any(|p| p.starts_with("questions[1].validation: unknown variant `telepathy`")));
    }

    #[test]
    fn a_bad_callback_url_is_reported() {
        let mut tree = small_tree();
        tree["callback_url"] = json!("ftp://crm.example/hook");
        assert_has(
            &problems_of(tree),
            "callback_url: callback url `ftp://crm.example/hook` must be an http(s) URL",
        );
    }
}

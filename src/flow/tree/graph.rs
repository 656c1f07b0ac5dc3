//! The link checks of an interview tree: every `start`, `next` and branch target names a
//! question, every question can be reached from `start`, and every question has a path
//! to an end (so no answer can trap a user in a loop).
//!
//! Works on the questions `load` has read, with their JSON paths, and returns problems;
//! must not read JSON or report anything about single fields.

use std::collections::{HashMap, VecDeque};

use super::problem::{Located, Problem};

/// Questions by id (the first of duplicates: duplicates are reported by `load`).
type Index<'a> = HashMap<&'a str, usize>;

/// All link problems of a tree whose `start` is `start` (`None` when it was unreadable).
pub(super) fn check_links(start: Option<&str>, questions: &[Located]) -> Vec<Problem> {
    let mut index = Index::new();
    for (i, located) in questions.iter().enumerate() {
        index.entry(located.question.id.as_str()).or_insert(i);
    }
    let mut problems = unknown_targets(start, questions, &index);
    if let Some(start) = start.and_then(|s| index.get(s)) {
        problems.extend(unreachable(*start, questions, &index));
    }
    problems.extend(trapped(questions, &index));
    problems
}

fn unknown_targets(start: Option<&str>, questions: &[Located], index: &Index) -> Vec<Problem> {
    let unknown = |id: &str| format!("unknown question `{id}`");
    let mut problems = Vec::new();
    if let Some(start) = start.filter(|s| !index.contains_key(s)) {
        problems.push(Problem::new("start", unknown(start)));
    }
    for Located { path, question } in questions {
        if let Some(next) = question.next.as_deref().filter(|n| !index.contains_key(n)) {
            problems.push(Problem::new(format!("{path}.next"), unknown(next)));
        }
        for (i, branch) in question.branches.iter().enumerate() {
            if let Some(next) = branch.next.as_deref().filter(|n| !index.contains_key(n)) {
                problems.push(Problem::new(
                    format!("{path}.branches[{i}].next"),
                    unknown(next),
                ));
            }
        }
    }
    problems
}

/// Indexes of the known questions `questions[from]` leads to.
fn successors<'a>(
    from: usize,
    questions: &'a [Located],
    index: &'a Index,
) -> impl Iterator<Item = usize> + 'a {
    questions[from]
        .question
        .targets()
        .flatten()
        .filter_map(|id| index.get(id).copied())
}

/// Every question reachable from `from` (itself included), by breadth-first search.
fn reachable_from(
    from: usize,
    questions: &[Located],
    index: &Index,
    allowed: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut seen = vec![false; questions.len()];
    let mut queue = VecDeque::from([from]);
    seen[from] = true;
    while let Some(current) = queue.pop_front() {
        for next in successors(current, questions, index) {
            if !seen[next] && allowed(next) {
                seen[next] = true;
                queue.push_back(next);
            }
        }
    }
    seen
}

fn unreachable(start: usize, questions: &[Located], index: &Index) -> Vec<Problem> {
    let reached = reachable_from(start, questions, index, |_| true);
    questions
        .iter()
        .zip(reached)
        .filter(|(_, reached)| !reached)
        .map(|(located, _)| {
            Problem::new(
                located.path.clone(),
                format!(
                    "question `{}` is never asked: nothing leads to it from `start`",
                    located.question.id
                ),
            )
        })
        .collect()
}

/// Whether each question has a path to an end. A link to an unknown question counts as
/// an exit, so a typo is reported once (as unknown) rather than again as a loop.
fn can_end(questions: &[Located], index: &Index) -> Vec<bool> {
    let mut ends = vec![false; questions.len()];
    let mut changed = true;
    while changed {
        changed = false;
        for (i, located) in questions.iter().enumerate() {
            if ends[i] {
                continue;
            }
            let exits = located.question.targets().any(|target| match target {
                None => true,
                Some(id) => index.get(id).is_none_or(|&next| ends[next]),
            });
            if exits {
                ends[i] = true;
                changed = true;
            }
        }
    }
    ends
}

fn trapped(questions: &[Located], index: &Index) -> Vec<Problem> {
    let ends = can_end(questions, index);
    let mut problems = Vec::new();
    for (i, located) in questions.iter().enumerate().filter(|(i, _)| !ends[*i]) {
        let loop_members = reachable_from(i, questions, index, |j| !ends[j]);
        let ids: Vec<String> = questions
            .iter()
            .zip(loop_members)
            .filter(|(_, member)| *member)
            .map(|(q, _)| format!("`{}`", q.question.id))
            .collect();
        problems.push(Problem::new(
            located.path.clone(),
            format!(
                "question `{}` never reaches an end: every path from it loops through {}",
                located.question.id,
                ids.join(", ")
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::flow::tree::testing::{assert_has, problems_of, small_tree};
    use serde_json::json;

    #[test]
    fn an_unknown_next_is_named_with_its_path() {
        let mut tree = small_tree();
        tree["questions"][0]["next"] = json!("ratng");
        let problems = problems_of(tree);
        assert_has(&problems, "questions[0].next: unknown question `ratng`");
        assert_has(
            &problems,
            "questions[1]: question `rating` is never asked: nothing leads to it from `start`",
        );
    }

    #[test]
    fn an_unknown_branch_target_is_named_with_its_path() {
        let mut tree = small_tree();
        tree["questions"][1]["branches"] = json!([{"answer": "5", "next": "bonus"}]);
        assert_has(
            &problems_of(tree),
            "questions[1].branches[0].next: unknown question `bonus`",
        );
    }

    #[test]
    fn an_unknown_start_is_reported() {
        let mut tree = small_tree();
        tree["start"] = json!("intro");
        assert_has(&problems_of(tree), "start: unknown question `intro`");
    }

    #[test]
    fn an_unreachable_question_is_reported() {
        let mut tree = small_tree();
        tree["questions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "orphan", "text": "Never asked?"}));
        assert_eq!(
            problems_of(tree),
            ["questions[2]: question `orphan` is never asked: nothing leads to it from `start`"]
        );
    }

    #[test]
    fn a_cycle_without_an_exit_is_reported_for_each_question_in_it() {
        let mut tree = small_tree();
        tree["questions"][1]["next"] = json!("city");
        let problems = problems_of(tree);
        assert_has(
            &problems,
            "questions[0]: question `city` never reaches an end: every path from it loops through `city`, `rating`",
        );
        assert_has(
            &problems,
            "questions[1]: question `rating` never reaches an end: every path from it loops through `city`, `rating`",
        );
    }

    #[test]
    fn a_cycle_with_a_branch_out_is_fine() {
        let mut tree = small_tree();
        tree["questions"][1]["next"] = json!("city");
        tree["questions"][1]["branches"] = json!([{"answer": "5", "next": null}]);
        assert_eq!(problems_of(tree), Vec::<String>::new());
    }
}

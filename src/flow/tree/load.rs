//! Loading interview trees from JSON: reads a file, a directory of files or a string,
//! checks the whole tree and reports every problem at once, each with its JSON path
//! (`questions[3].next: unknown question `salry``).
//!
//! Owns files and directories and [`TreeError`]; the field checks live in `read`, the link
//! checks in `graph`, and the [`Problem`]s they all report in `problem`. Must not run
//! interviews or touch the engine; a tree that comes out of here is complete and safe to
//! serve.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

use super::format::Tree;
use super::problem::Problem;
use super::read;

/// Why interview trees could not be loaded.
#[derive(Debug, Error)]
pub enum TreeError {
    /// The file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory without any `*.json` file.
    #[error("no flow trees (*.json files) in {}", dir.display())]
    NoTrees { dir: PathBuf },
    /// The trees were read but break rules; every problem found, in file order.
    #[error("{}", list_problems(problems))]
    Invalid { problems: Vec<Problem> },
}

fn list_problems(problems: &[Problem]) -> String {
    let count = problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    let mut text = format!("invalid flow tree ({count} {noun}):");
    for problem in problems {
        text.push_str(&format!("\n  {problem}"));
    }
    text
}

/// Loads the trees at `path`: one JSON file, or every `*.json` file of a directory in
/// file-name order. In a directory each file's stem names its tree, so a `name` field
/// there must equal the stem; a single file's `name` defaults to its stem.
pub fn load_trees(path: &Path) -> Result<Vec<Tree>, TreeError> {
    let metadata = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    if !metadata.is_dir() {
        return load_file(path, false)
            .map(|tree| vec![tree])
            .map_err(invalid);
    }
    let files = json_files(path)?;
    if files.is_empty() {
        return Err(TreeError::NoTrees {
            dir: path.to_path_buf(),
        });
    }
    let mut trees = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match load_file(&file, true) {
            Ok(tree) => trees.push(tree),
            Err(FileError::Io(error)) => return Err(error),
            Err(FileError::Invalid(found)) => problems.extend(found),
        }
    }
    if problems.is_empty() {
        Ok(trees)
    } else {
        Err(TreeError::Invalid { problems })
    }
}

/// Parses one tree from JSON text. `default_name` is used when the tree has no `name`.
pub fn parse_tree(json: &str, default_name: Option<&str>) -> Result<Tree, Vec<Problem>> {
    let root: Value = serde_json::from_str(json)
        .map_err(|e| vec![Problem::new("", format!("not valid JSON: {e}"))])?;
    read::read_tree(&root, default_name)
}

enum FileError {
    Io(TreeError),
    Invalid(Vec<Problem>),
}

fn invalid(error: FileError) -> TreeError {
    match error {
        FileError::Io(error) => error,
        FileError::Invalid(problems) => TreeError::Invalid { problems },
    }
}

fn load_file(path: &Path, stem_is_name: bool) -> Result<Tree, FileError> {
    let json = std::fs::read_to_string(path).map_err(|e| FileError::Io(io_error(path, e)))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let in_file = |problems: Vec<Problem>| problems.into_iter().map(|p| p.in_file(path)).collect();
    let tree = parse_tree(&json, stem.as_deref()).map_err(|p| FileError::Invalid(in_file(p)))?;
    match stem {
        Some(stem) if stem_is_name && tree.name != stem => {
            let message = format!(
                "`{}` differs from the file name; in a directory the file stem `{stem}` names the tree",
                tree.name
            );
            Err(FileError::Invalid(in_file(vec![Problem::new(
                "name", message,
            )])))
        }
        _ => Ok(tree),
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, TreeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| io_error(dir, source))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| io_error(dir, source))?.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn io_error(path: &Path, source: std::io::Error) -> TreeError {
    TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tree::testing::small_tree;
    use serde_json::json;

    #[test]
    fn the_error_lists_one_problem_per_line() {
        let mut tree = small_tree();
        tree["start"] = json!("nope");
        tree["questions"][0]["next"] = json!("gone");
        tree["greeting_text"] = json!(" ");
        let problems = parse_tree(&tree.to_string(), None).unwrap_err();
        let shown = TreeError::Invalid { problems }.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "invalid flow tree (3 problems):");
        assert_eq!(lines.len(), 4, "{shown}");
        assert!(lines[1..].iter().all(|l| l.starts_with("  ")));
    }

    #[test]
    fn json_syntax_errors_and_non_objects_are_problems_too() {
        assert!(parse_tree("{", None).unwrap_err()[0]
            .message
            .starts_with("not valid JSON"));
        assert_eq!(
            parse_tree("[]", None).unwrap_err(),
            vec![Problem::new("", "must be a JSON object")]
        );
    }

    #[test]
    fn a_directory_names_trees_by_file_stem() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = small_tree();
        tree.as_object_mut().unwrap().remove("name");
        std::fs::write(dir.path().join("b_second.json"), tree.to_string()).unwrap();
        tree["name"] = json!("other");
        std::fs::write(dir.path().join("a_first.json"), tree.to_string()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let error = load_trees(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("a_first.json: name: `other` differs from the file name"),
            "{error}"
        );
        std::fs::write(dir.path().join("a_first.json"), small_tree().to_string()).unwrap();
        std::fs::rename(
            dir.path().join("a_first.json"),
            dir.path().join("small.json"),
        )
        .unwrap();
        let names: Vec<String> = load_trees(dir.path())
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["b_second", "small"]);
    }

    #[test]
    fn a_missing_path_or_an_empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_trees(dir.path()),
            Err(TreeError::NoTrees { .. })
        ));
        assert!(matches!(
            load_trees(&dir.path().join("none.json")),
            Err(TreeError::Io { .. })
        ));
    }
}

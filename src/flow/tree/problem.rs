//! What is wrong with a tree, and where: [`Problem`] (a message with its file and JSON
//! path) and [`Located`] (a question with the JSON path it was read from).
//!
//! Shared by the three loading steps, which report problems without knowing each other's
//! insides: `read` checks fields, `graph` checks links, `load` reads files and adds their
//! names. Must not import any of them, so that they can all import it.

use std::fmt;
use std::path::Path;

use super::format::Question;

/// One thing wrong with a tree, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it was read from, when loaded from disk.
    pub file: Option<String>,
    /// JSON path inside the tree (`questions[2].branches[0].next`); empty for the whole file.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub(super) fn in_file(mut self, file: &Path) -> Problem {
        self.file = Some(file.display().to_string());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A question with the JSON path it was read from, for the link checks.
pub(super) struct Located {
    pub path: String,
    pub question: Question,
}

//! The console's output: the prompt, the bot's lines and the console's own notes, each
//! flushed as soon as it is written so a person (or a test reading the pipe) sees it at once.
//!
//! Bot lines start with `bot> `, the prompt is `you> `; console notes have no prefix.
//! Asides (typing, seen) are dimmed only when the output is a terminal, so piped output
//! stays plain text.

use std::io::{self, Write};

pub const PROMPT: &str = "you> ";
pub const BOT_PREFIX: &str = "bot> ";

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Where a chat session writes.
pub struct Terminal {
    out: Box<dyn Write>,
    /// Whether asides may be dimmed with ANSI escapes.
    colours: bool,
}

impl Terminal {
    /// Writes to `out`; `colours` only when `out` is a terminal that understands ANSI.
    pub fn new(out: Box<dyn Write>, colours: bool) -> Terminal {
        Terminal { out, colours }
    }

    pub(super) fn prompt(&mut self) -> io::Result<()> {
        self.write(PROMPT)
    }

    /// A line of a bot message.
    pub(super) fn bot(&mut self, line: &str) -> io::Result<()> {
        self.write(&format!("{BOT_PREFIX}{line}\n"))
    }

    /// A bot line that is not a message (typing indicator, seen).
    pub(super) fn bot_aside(&mut self, line: &str) -> io::Result<()> {
        if self.colours {
            self.write(&format!("{BOT_PREFIX}{DIM}{line}{RESET}\n"))
        } else {
            self.bot(line)
        }
    }

    /// The console's own words (help, state, hints); may span several lines.
    pub(super) fn note(&mut self, text: &str) -> io::Result<()> {
        if text.ends_with('\n') {
            self.write(text)
        } else {
            self.write(&format!("{text}\n"))
        }
    }

    fn write(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }
}

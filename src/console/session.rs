//! One chat session: reads what the person types, turns it into what a Messenger user
//! does, and shows the bot's answers before giving the prompt back.
//!
//! Numbers pick from the choices shown since the person's last message (quick replies
//! vanish once you answer in Messenger, so the console forgets them too). Replies that
//! arrive while the person is idle (a timer firing) are shown at once, with a new prompt.

use std::io;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::{turn_progress, EngineError, EngineLink, TurnProgress};
use super::events::UserAction;
use super::render::{render, Choice};
use super::standin::Delivered;
use super::terminal::Terminal;
use crate::inspect;

/// How often the transcript is read while waiting for the bot's answer.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait for one answer: above the engine's default 30 s flow timeout, so a slow
/// flow is reported as failed rather than abandoned.
const TURN_PATIENCE: Duration = Duration::from_secs(60);

pub const HELP: &str = "\
Type a message and press Enter to send it to the bot.
  1, 2, ...          pick a numbered choice shown since your last message
  /say TEXT          send TEXT as it is (e.g. a number while choices are shown)
  /postback PAYLOAD  press a button with this payload (a postback event)
  /state             show this conversation as stored: state, watermarks, transcript
  /help              show this help
  /quit              stop (so does end of input, Ctrl-D)";

/// What one typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Nothing,
    Quit,
    Help,
    State,
    Say(String),
    Postback(String),
    /// A choice by its number, 1-based.
    Pick(usize),
    /// A command that needs an argument it did not get.
    Usage(&'static str),
    Unknown(String),
}

/// Reads one line; `choices_shown` bounds which numbers are picks (others are text).
pub fn parse_input(line: &str, choices_shown: usize) -> Input {
    let line = line.trim();
    if line.is_empty() {
        return Input::Nothing;
    }
    if line.starts_with('/') {
        return parse_command(line);
    }
    match line.parse::<usize>() {
        Ok(n) if (1..=choices_shown).contains(&n) => Input::Pick(n),
        _ => Input::Say(line.to_string()),
    }
}

fn parse_command(line: &str) -> Input {
    let (command, argument) = match line.split_once(char::is_whitespace) {
        Some((command, rest)) => (command, rest.trim()),
        None => (line, ""),
    };
    match (command, argument.is_empty()) {
        ("/quit" | "/exit", _) => Input::Quit,
        ("/help", _) => Input::Help,
        ("/state", _) => Input::State,
        ("/say", false) => Input::Say(argument.to_string()),
        ("/say", true) => Input::Usage("usage: /say TEXT"),
        ("/postback", false) => Input::Postback(argument.to_string()),
        ("/postback", true) => Input::Usage("usage: /postback PAYLOAD"),
        _ => Input::Unknown(command.to_string()),
    }
}

pub struct Session {
    terminal: Terminal,
    engine: EngineLink,
    from_standin: UnboundedReceiver<Delivered>,
    /// Choices shown since the person's last message; `[1]` is the first.
    choices: Vec<Choice>,
}

impl Session {
    pub fn new(
        terminal: Terminal,
        engine: EngineLink,
        from_standin: UnboundedReceiver<Delivered>,
    ) -> Session {
        Session {
            terminal,
            engine,
            from_standin,
            choices: Vec::new(),
        }
    }

    /// Runs until `/quit`, end of input or Ctrl-C. Only a terminal that cannot be
    /// written to ends it with an error; the engine's troubles are shown and survived.
    pub async fn run(mut self, mut lines: UnboundedReceiver<String>) -> io::Result<()> {
        loop {
            self.terminal.prompt()?;
            let Some(line) = self.next_line(&mut lines).await? else {
                // End the prompt's line so the shell's prompt starts on its own.
                return self.terminal.note("");
            };
            match parse_input(&line, self.choices.len()) {
                Input::Quit => return Ok(()),
                Input::Nothing => {}
                Input::Help => self.terminal.note(HELP)?,
                Input::State => self.show_state().await?,
                Input::Say(text) => self.exchange(UserAction::Text(text)).await?,
                Input::Postback(payload) => {
                    let title = payload.clone();
                    self.exchange(UserAction::Postback { title, payload })
                        .await?
                }
                Input::Pick(number) => self.pick(number).await?,
                Input::Usage(usage) => self.terminal.note(usage)?,
                Input::Unknown(command) => self.terminal.note(&format!(
                    "unknown command {command}; /help lists the commands"
                ))?,
            }
        }
    }

    /// The next typed line, showing whatever the bot sends meanwhile; `None` at the end.
    async fn next_line(
        &mut self,
        lines: &mut UnboundedReceiver<String>,
    ) -> io::Result<Option<String>> {
        loop {
            tokio::select! {
                line = lines.recv() => return Ok(line),
                Some(delivered) = self.from_standin.recv() => {
                    self.terminal.note("")?;
                    self.show(delivered).await?;
                    self.terminal.prompt()?;
                }
                _ = actix_rt::signal::ctrl_c() => return Ok(None),
            }
        }
    }

    async fn pick(&mut self, number: usize) -> io::Result<()> {
        let Some(choice) = number
            .checked_sub(1)
            .and_then(|index| self.choices.get(index))
            .cloned()
        else {
            return self.terminal.note(&format!("there is no choice {number}"));
        };
        match choice {
            Choice::QuickReply { text, payload } => {
                self.exchange(UserAction::QuickReply { text, payload })
                    .await
            }
            Choice::Postback { title, payload } => {
                self.exchange(UserAction::Postback { title, payload }).await
            }
            Choice::OpenUrl { url, .. } => self
                .terminal
                .note(&format!("(opens {url} in a browser; the bot is not told)")),
            Choice::Unsupported { kind, .. } => self
                .terminal
                .note(&format!("(a {kind} button does nothing in the console)")),
        }
    }

    /// Sends what the person did and shows the bot's answer to it.
    async fn exchange(&mut self, action: UserAction) -> io::Result<()> {
        self.choices.clear();
        match self.engine.send_user_action(&action).await {
            Ok(mid) => self.await_answer(&mid).await,
            Err(error) => self.terminal.note(&format!("(not delivered: {error})")),
        }
    }

    /// Shows replies as the stand-in receives them until the transcript says the engine
    /// is done with message `mid` (see [`turn_progress`]), then what went wrong, if anything.
    async fn await_answer(&mut self, mid: &str) -> io::Result<()> {
        let deadline = Instant::now() + TURN_PATIENCE;
        loop {
            tokio::select! {
                biased;
                Some(delivered) = self.from_standin.recv() => self.show(delivered).await?,
                _ = actix_rt::time::sleep(POLL_INTERVAL) => {
                    match self.progress(mid).await {
                        Ok(TurnProgress::Settled { problems }) => return self.finish_turn(problems).await,
                        Ok(TurnProgress::Pending) if Instant::now() < deadline => {}
                        Ok(TurnProgress::Pending) => {
                            return self.terminal.note(&format!(
                                "(no complete answer after {} s; later replies still show up)",
                                TURN_PATIENCE.as_secs()
                            ))
                        }
                        Err(error) => {
                            return self.terminal.note(&format!("(cannot follow the answer: {error})"))
                        }
                    }
                }
            }
        }
    }

    async fn progress(&self, mid: &str) -> Result<TurnProgress, EngineError> {
        Ok(match self.engine.conversation().await? {
            Some(doc) => turn_progress(&doc, mid),
            None => TurnProgress::Pending,
        })
    }

    /// Shows any reply still in the channel (a sender action needs no receipt, so the
    /// transcript can settle before it is shown), then the problems of the turn.
    async fn finish_turn(&mut self, problems: Vec<String>) -> io::Result<()> {
        while let Ok(delivered) = self.from_standin.try_recv() {
            self.show(delivered).await?;
        }
        for problem in problems {
            self.terminal.bot_aside(&format!("({problem})"))?;
        }
        Ok(())
    }

    /// Prints one message as the user sees it, then tells the engine what Facebook
    /// would: echo, delivered, read.
    async fn show(&mut self, delivered: Delivered) -> io::Result<()> {
        let shown = render(&delivered.request, self.choices.len() + 1);
        for line in &shown.lines {
            if shown.is_aside {
                self.terminal.bot_aside(line)?;
            } else {
                self.terminal.bot(line)?;
            }
        }
        self.choices.extend(shown.choices);
        let Some(mid) = &delivered.message_id else {
            return Ok(());
        };
        match self.engine.acknowledge(&delivered.request, mid).await {
            Ok(()) => Ok(()),
            Err(error) => self
                .terminal
                .note(&format!("(could not acknowledge the message: {error})")),
        }
    }

    async fn show_state(&mut self) -> io::Result<()> {
        match self.engine.conversation().await {
            Ok(Some(doc)) => self.terminal.note(&inspect::render_document(&doc)),
            Ok(None) => self
                .terminal
                .note("nothing stored yet: the conversation starts with your first message"),
            Err(error) => self
                .terminal
                .note(&format!("cannot read the conversation: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_within_the_choices_shown_is_a_pick() {
        assert_eq!(parse_input("2", 3), Input::Pick(2));
        assert_eq!(parse_input(" 1 ", 1), Input::Pick(1));
    }

    #[test]
    fn a_number_outside_the_choices_shown_is_text() {
        assert_eq!(parse_input("4", 3), Input::Say("4".into()));
        assert_eq!(parse_input("0", 3), Input::Say("0".into()));
        assert_eq!(parse_input("42", 0), Input::Say("42".into()));
    }

    #[test]
    fn say_sends_a_number_as_text_even_while_choices_are_shown() {
        assert_eq!(parse_input("/say 2", 3), Input::Say("2".into()));
    }

    #[test]
    fn commands_are_recognised_and_unknown_ones_named() {
        assert_eq!(parse_input("/quit", 0), Input::Quit);
        assert_eq!(parse_input("/exit", 0), Input::Quit);
        assert_eq!(parse_input("/help", 0), Input::Help);
        assert_eq!(parse_input("/state", 0), Input::State);
        assert_eq!(
            parse_input("/postback  GET_STARTED ", 0),
            Input::Postback("GET_STARTED".into())
        );
        assert_eq!(
            parse_input("/postback", 0),
            Input::Usage("usage: /postback PAYLOAD")
        );
        assert_eq!(parse_input("/shrug", 0), Input::Unknown("/shrug".into()));
    }

    #[test]
    fn blank_lines_do_nothing() {
        assert_eq!(parse_input("   \r", 0), Input::Nothing);
    }
}

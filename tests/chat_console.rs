//! `colloquy chat` used as a person uses it: the real binary in a child process, lines
//! typed into its stdin, and its stdout read back; and, for choices the built-in flows
//! never offer, the same session run in-process with a small Rust flow. Every wait is
//! bounded.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use colloquy::event::{EventKind, InboundEvent, TimerFired};
use colloquy::flow::{quick_reply, Button, Flow, FlowError, FlowHandle, Reply, Turn};
use colloquy::test_support::{chat, ChatArgs, ChatError, Terminal};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

/// How long any one expectation waits before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);
const THANKS: &str = "Thank you for your time..!!";

/// A running `colloquy chat` and everything it printed so far.
struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    output: String,
    /// Where the next expectation starts looking: each one consumes what it matched.
    cursor: usize,
}

impl Console {
    fn start(data_dir: &Path, flow: &str) -> Console {
        Console::start_with(data_dir, &["--flow", flow])
    }

    fn start_with(data_dir: &Path, args: &[&str]) -> Console {
        let mut child = Command::new(env!("CARGO_BIN_EXE_colloquy"))
            .arg("chat")
            .args(args)
            .arg("--data")
            .arg(data_dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (sender, chunks) = channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = stdout.read(&mut buffer) {
                if sender.send(buffer[..read].to_vec()).is_err() {
                    break;
                }
            }
        });
        Console {
            child,
            stdin,
            chunks,
            output: String::new(),
            cursor: 0,
        }
    }

    /// Waits until `text` is printed after what earlier expectations matched.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.output[self.cursor..].find(text) {
                self.cursor += found + text.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.output.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "timed out waiting for {text:?}; output so far:\n{}",
                        self.output
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the console ended before printing {text:?}; output:\n{}",
                        self.output
                    )
                }
            }
        }
    }

    /// Types one line, as a person pressing Enter.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("the console reads its input");
        stdin.flush().expect("the console reads its input");
    }

    /// Types a line and waits for the bot's line and the prompt after it.
    fn say(&mut self, line: &str, expected_reply: &str) {
        self.type_line(line);
        self.expect(&format!("bot> {expected_reply}\n"));
        self.expect("you> ");
    }

    /// Waits for the process to exit; returns its status and everything on stderr.
    fn exit(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child can be polled") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the console did not exit; output:\n{}", self.output);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

fn inspect_json(data_dir: &Path, psid: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args(["inspect", "--json", psid, "--data"])
        .arg(data_dir)
        .env_clear()
        .output()
        .expect("inspect runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspect prints JSON")
}

fn texts(doc: &Value, direction: &str) -> Vec<String> {
    doc["transcript"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|line| line["direction"] == direction)
        .filter_map(|line| line["text"].as_str().map(str::to_string))
        .collect()
}

/// A typed line reaches the echo flow through the webhook and comes back as a bot line;
/// `/quit` stops the engine and exits 0, with no log line on stderr by default.
#[test]
fn the_echo_flow_answers_what_is_typed_and_quit_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut console = Console::start(&dir.path().join("chat"), "echo");
    console.expect("you> ");

    console.say("hello there", "hello there");
    console.type_line("/quit");

    let (status, stderr) = console.exit();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert_eq!(stderr, "", "engine logs stay off without RUST_LOG");
}

/// `--page` talks to that page of the pages file: its own flow (echo here, where the
/// default flow thanks), on its channel (Instagram's 1,000-character text limit).
#[test]
fn chat_page_runs_that_pages_flow_on_its_channel() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages.toml");
    std::fs::write(
        &pages,
        r#"
[apps.main]
secret = "s"
verify_token = "v"

[[pages]]
id = "1001"
app = "main"
access_token = "t1"

[[pages]]
id = "1784"
app = "main"
access_token = "t2"
channel = "instagram"
flow = "echo"
"#,
    )
    .unwrap();
    let pages = pages.to_str().unwrap();
    let mut console = Console::start_with(
        &dir.path().join("chat"),
        &["--pages", pages, "--page", "1784"],
    );
    console.expect("flow `echo` on instagram page 1784");
    console.expect("you> ");
    console.say("hello instagram", "hello instagram");
    console.type_line(&"y".repeat(1_200));
    console.expect("Instagram allows at most 1000");
    console.type_line("/quit");
    assert!(console.exit().0.success());

    let mut console = Console::start_with(
        &dir.path().join("chat2"),
        &["--pages", pages, "--page", "1001"],
    );
    console.expect("you> ");
    console.say("hello page", THANKS);
    console.type_line("/quit");
    assert!(console.exit().0.success());
}

/// The seed's flow answers a message with its one sentence.
#[test]
fn the_thanks_flow_answers_with_the_seed_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut console = Console::start(&dir.path().join("chat"), "thanks");
    console.expect("you> ");

    console.say("I am interested in the job", THANKS);

    console.type_line("/quit");
    assert!(console.exit().0.success());
}

/// A postback reaches the flow as a postback event, and a number with no choices shown
/// is an ordinary message (a person answering "how many years?").
#[test]
fn postbacks_and_plain_numbers_reach_the_flow_as_a_user_would_send_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut console = Console::start(&dir.path().join("chat"), "echo");
    console.expect("you> ");

    console.say("/postback GET_STARTED", "You pressed GET_STARTED.");
    console.say("7", "7");

    console.type_line("/quit");
    assert!(console.exit().0.success());
}

/// Closing stdin (Ctrl-D) ends the session like `/quit`.
#[test]
fn end_of_input_stops_the_console_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut console = Console::start(&dir.path().join("chat"), "echo");
    console.expect("you> ");

    let (status, stderr) = console.exit();

    assert!(status.success(), "{status}; stderr:\n{stderr}");
}

/// Two sessions on one data directory are one conversation: `/state` in the second
/// shows the first session's messages, and after exit `colloquy inspect` finds both,
/// every reply `read` thanks to the receipts the console posts as Facebook would.
#[test]
fn a_second_session_continues_the_conversation_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("chat");
    let mut first = Console::start(&data_dir, "echo");
    first.expect("you> ");
    first.say("first session", "first session");
    first.type_line("/quit");
    assert!(first.exit().0.success());

    let mut second = Console::start(&data_dir, "echo");
    second.expect("you> ");
    second.say("second session", "second session");
    second.type_line("/state");
    second.expect("state         {\"messages\":2}");
    second.expect("first session");
    second.expect("second session");
    second.expect("you> ");
    second.type_line("/quit");
    assert!(second.exit().0.success());

    let doc = inspect_json(&data_dir, "console-user");
    assert_eq!(texts(&doc, "in"), ["first session", "second session"]);
    assert_eq!(texts(&doc, "out"), ["first session", "second session"]);
    let statuses: Vec<&Value> = doc["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["direction"] == "out")
        .map(|line| &line["status"])
        .collect();
    assert_eq!(statuses, ["read", "read"]);
}

/// The interview tree shipped in `data/flows` run from the console: free answers are
/// typed (a bare number is an answer while no choices are shown), and the yes/no
/// question's quick replies are picked by number, which follows the `yes` branch.
#[test]
fn an_interview_tree_quick_reply_is_picked_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/flows/interview.json");
    let flow = format!("tree:{}", tree.display());
    let mut console = Console::start(&dir.path().join("chat"), &flow);
    console.expect("you> ");

    console.say(
        "hi",
        "What is your current salary (CTC)? For example 12 LPA or 1,20,000.",
    );
    console.say("12 LPA", "What salary do you expect?");
    console.say(
        "15 LPA",
        "How many years of total work experience do you have?",
    );
    console.say("5", "Which city do you currently live in?");
    console.type_line("Pune");
    console.expect("bot> Are you serving a notice period?\nbot> [1] Yes  [2] No\nyou> ");
    console.say("1", "How many days are left?");

    console.type_line("/quit");
    assert!(console.exit().0.success());
}

/// `/help` lists the commands, and an unknown command is named rather than sent.
#[test]
fn help_lists_the_commands_and_unknown_commands_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut console = Console::start(&dir.path().join("chat"), "echo");
    console.expect("you> ");

    console.type_line("/help");
    console.expect("/postback PAYLOAD");
    console.expect("you> ");
    console.type_line("/shrug");
    console.expect("unknown command /shrug");
    console.expect("you> ");
    console.type_line("/state");
    console.expect("nothing stored yet");

    console.type_line("/quit");
    assert!(console.exit().0.success());
}

/// A small menu flow for the in-process tests: a message gets quick replies and a
/// button template; a pick is answered with what reached the flow.
struct Menu;

impl Flow for Menu {
    type State = ();

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<()>) -> Result<(), FlowError> {
        match &event.kind {
            EventKind::Message(message) => match &message.quick_reply {
                Some(picked) => turn.say(format!("quick reply {}", picked.payload))?,
                None => {
                    turn.reply(Reply::typing_on());
                    turn.reply(Reply::text("What is it about?")?.with_quick_replies([
                        quick_reply("Billing", "TOPIC_BILLING")?,
                        quick_reply("Tech", "TOPIC_TECH")?,
                    ])?);
                    turn.reply(Reply::buttons(
                        "Or pick one:",
                        vec![
                            Button::postback("Order", "ORDER")?,
                            Button::url("Menu", "https://example.com/menu")?,
                        ],
                    )?);
                }
            },
            EventKind::Postback(postback) => turn.say(format!(
                "postback {}",
                postback.payload.as_deref().unwrap_or_default()
            ))?,
            _ => {}
        }
        Ok(())
    }
}

/// Answers a message and, a moment later, nudges by a timer: a reply nobody typed for.
/// Its timer keeps checking every 100 ms, silently, until the test lets it speak: the
/// idle reply then comes after the prompt whatever the machine's load (a fixed delay
/// raced the console settling on a loaded CI machine).
struct Nudge {
    may_speak: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Flow for Nudge {
    type State = ();

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<()>) -> Result<(), FlowError> {
        if let EventKind::Message(_) = &event.kind {
            turn.say("noted")?;
            turn.schedule("nudge", Duration::from_millis(100), Value::Null);
        }
        Ok(())
    }

    async fn on_timer(&self, _: &TimerFired, turn: &mut Turn<()>) -> Result<(), FlowError> {
        if self.may_speak.load(std::sync::atomic::Ordering::SeqCst) {
            turn.say("Still there?")?;
        } else {
            turn.schedule("nudge", Duration::from_millis(100), Value::Null);
        }
        Ok(())
    }
}

/// Fails on every message, as a buggy flow would.
struct Broken;

impl Flow for Broken {
    type State = ();

    async fn handle(&self, _: &InboundEvent, _: &mut Turn<()>) -> Result<(), FlowError> {
        Err(FlowError::failed("the menu file is missing"))
    }
}

/// What an in-process session printed, shared with the test.
#[derive(Clone, Default)]
struct Printed(Rc<RefCell<Vec<u8>>>);

impl Write for Printed {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A session with a Rust flow inside this test process, typed into through a channel.
struct InProcess {
    typed: Option<UnboundedSender<String>>,
    printed: Printed,
    cursor: usize,
    session: actix_rt::task::JoinHandle<Result<(), ChatError>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start(flow: FlowHandle) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let args = ChatArgs {
            flow: "menu".into(),
            data_dir: dir.path().join("chat"),
            psid: "console-user".into(),
            ..ChatArgs::default()
        };
        let (typed, lines) = unbounded_channel();
        let printed = Printed::default();
        let terminal = Terminal::new(Box::new(printed.clone()), false);
        let session = actix_rt::spawn(async move { chat(flow, &args, lines, terminal).await });
        InProcess {
            typed: Some(typed),
            printed,
            cursor: 0,
            session,
            _dir: dir,
        }
    }

    fn type_line(&self, line: &str) {
        if let Some(typed) = &self.typed {
            typed
                .send(line.to_string())
                .expect("the session reads its input");
        }
    }

    /// Waits until `text` is printed after what earlier expectations matched.
    async fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = String::from_utf8_lossy(&self.printed.0.borrow()).into_owned();
            if let Some(found) = output[self.cursor..].find(text) {
                self.cursor += found + text.len();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?}; output so far:\n{output}"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the input, as Ctrl-D does, and waits for the session to stop the engine.
    async fn finish(mut self) -> Result<(), ChatError> {
        drop(self.typed.take());
        actix_rt::time::timeout(PATIENCE, self.session)
            .await
            .expect("the session ends at the end of input")
            .expect("the session task does not panic")
    }
}

/// Quick replies and template buttons are numbered across one answer, and typing a
/// number does what tapping does in Messenger: a quick reply sends its payload, a
/// postback button sends a postback, a link button only shows its URL.
#[actix_web::test]
async fn typing_a_number_picks_the_quick_reply_or_button_shown_with_it() {
    let mut console = InProcess::start(FlowHandle::new(Menu));
    console.expect("you> ").await;
    let menu = "bot> (typing…)\n\
                bot> What is it about?\n\
                bot> [1] Billing  [2] Tech\n\
                bot> Or pick one:\n\
                bot> [3] Order  [4] Menu <https://example.com/menu>\n\
                you> ";

    console.type_line("help me");
    console.expect(menu).await;
    console.type_line("2");
    console.expect("bot> quick reply TOPIC_TECH\nyou> ").await;

    console.type_line("again");
    console.expect(menu).await;
    console.type_line("3");
    console.expect("bot> postback ORDER\nyou> ").await;

    console.type_line("once more");
    console.expect(menu).await;
    console.type_line("4");
    console
        .expect("(opens https://example.com/menu in a browser; the bot is not told)\nyou> ")
        .await;
    console.type_line("2");
    console.expect("bot> quick reply TOPIC_TECH\nyou> ").await;

    console.finish().await.expect("the session ends cleanly");
}

/// A reply that arrives while the person is idle (a flow timer firing) is shown at
/// once, on its own line after the prompt, and the prompt is given again.
#[actix_web::test]
async fn a_reply_sent_while_the_person_is_idle_is_shown_with_a_new_prompt() {
    let may_speak = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut console = InProcess::start(FlowHandle::new(Nudge {
        may_speak: may_speak.clone(),
    }));
    console.expect("you> ").await;

    console.type_line("hello");
    console.expect("bot> noted\nyou> ").await;
    may_speak.store(true, std::sync::atomic::Ordering::SeqCst);

    console.expect("\nbot> Still there?\nyou> ").await;
    console.finish().await.expect("the session ends cleanly");
}

/// A flow that fails shows as a note in the chat, with the reason the engine recorded,
/// and the session goes on.
#[actix_web::test]
async fn a_failing_flow_is_reported_in_the_chat_and_the_session_goes_on() {
    let mut console = InProcess::start(FlowHandle::new(Broken));
    console.expect("you> ").await;

    console.type_line("hello");
    console
        .expect("bot> (your message was not handled: flow failed: the menu file is missing)\nyou> ")
        .await;
    console.type_line("/help");
    console.expect("/state").await;

    console.finish().await.expect("the session ends cleanly");
}

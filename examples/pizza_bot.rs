//! Run with: MESSENGER_VERIFY_TOKEN=... MESSENGER_APP_SECRET=... MESSENGER_ACCESS_TOKEN=... cargo run --example pizza_bot
//!
//! Ordering a pizza: a conversation written in Rust as a state enum with one handler per
//! state. It shows the pieces most bots need:
//! - a menu as a generic template (a carousel of cards) whose postback buttons pick the
//!   pizza;
//! - quick replies for the size;
//! - a button template to place the order or cancel it;
//! - timers: a reminder when the user does not answer "Shall I place the order?"
//!   (cancelled as soon as they answer), and a "your pizza is on its way" message some
//!   time after the order. Timers are kept with the conversation and fire after a
//!   restart of the process too.
//!
//! The conversation, one state per box:
//!
//! ```text
//!  Start ──any message──▶ ChoosingPizza ──taps a card──▶ ChoosingSize ──taps a size──▶ Confirming
//!    ▲                                                                                   │
//!    └────────────────────────────── Cancel ◀────────────────────────────────────────────┤
//!                                                                    Order it ──▶ Ordered
//! ```
//!
//! Typing `menu` at any step shows the menu again.
//!
//! No Facebook app yet? Order in this terminal instead, through the same engine and a
//! stand-in for Facebook: `PIZZA_REMINDER_SECS=10 cargo run --example pizza_bot -- chat`.
//!
//! Settings of its own, both optional: `PIZZA_REMINDER_SECS` (default 600), the wait for
//! an answer before the reminder, and `PIZZA_DELIVERY_SECS` (default 1200), the time from
//! the order to "on its way". Every other setting comes from the same environment variables as `colloquy serve`
//! (`colloquy::launch::serve_or_chat`); the data directory defaults to
//! `data/pizza_bot.sled`.
//!
//! Test with: cargo test --example pizza_bot

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use colloquy::event::{InboundEvent, TimerFired};
use colloquy::flow::{
    quick_reply, Button, Element, Flow, FlowError, FlowHandle, Input, Reply, ReplyError, Turn,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Ten minutes: long enough to decide, short enough that they still want the pizza.
const DEFAULT_REMINDER_SECS: u64 = 600;
/// Twenty minutes from the order to "on its way".
const DEFAULT_DELIVERY_SECS: u64 = 1200;

/// The word that shows the menu again at any step.
const MENU: &str = "menu";
/// Payloads of the two buttons under "Shall I place the order?".
const CONFIRM: &str = "CONFIRM";
const CANCEL: &str = "CANCEL";
/// The timer that nudges a user who did not answer "Shall I place the order?".
const REMINDER: &str = "reminder";
/// Delivery timers are named `delivery-<time of the order>`: scheduling a name again
/// replaces that timer, so each order needs a name of its own, or a second order would
/// silence the first one's "on its way".
const DELIVERY_PREFIX: &str = "delivery-";

/// The pizzas on the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pizza {
    Margherita,
    Pepperoni,
    Funghi,
}

impl Pizza {
    const ALL: [Pizza; 3] = [Pizza::Margherita, Pizza::Pepperoni, Pizza::Funghi];

    fn name(self) -> &'static str {
        match self {
            Pizza::Margherita => "Margherita",
            Pizza::Pepperoni => "Pepperoni",
            Pizza::Funghi => "Funghi",
        }
    }

    fn toppings(self) -> &'static str {
        match self {
            Pizza::Margherita => "Tomato, mozzarella, basil",
            Pizza::Pepperoni => "Tomato, mozzarella, pepperoni",
            Pizza::Funghi => "Tomato, mozzarella, mushrooms",
        }
    }

    /// What comes back in the `postback` event when the pizza's card button is tapped.
    fn payload(self) -> &'static str {
        match self {
            Pizza::Margherita => "PIZZA_MARGHERITA",
            Pizza::Pepperoni => "PIZZA_PEPPERONI",
            Pizza::Funghi => "PIZZA_FUNGHI",
        }
    }

    /// A tapped card button's payload, or the pizza's name typed by hand.
    fn parse(words: &str) -> Option<Pizza> {
        let words = words.trim();
        Pizza::ALL
            .into_iter()
            .find(|p| words == p.payload() || words.eq_ignore_ascii_case(p.name()))
    }
}

/// The sizes, offered as quick replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    fn title(self) -> &'static str {
        match self {
            Size::Small => "Small",
            Size::Medium => "Medium",
            Size::Large => "Large",
        }
    }

    /// What comes back in `message.quick_reply.payload` when the size is tapped.
    fn payload(self) -> &'static str {
        match self {
            Size::Small => "SIZE_SMALL",
            Size::Medium => "SIZE_MEDIUM",
            Size::Large => "SIZE_LARGE",
        }
    }

    /// A tapped quick reply's payload, or the size typed by hand.
    fn parse(words: &str) -> Option<Size> {
        let words = words.trim();
        Size::ALL
            .into_iter()
            .find(|s| words == s.payload() || words.eq_ignore_ascii_case(s.title()))
    }
}

/// One pizza of a given size: what is being ordered, and what a delivery timer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub pizza: Pizza,
    pub size: Size,
}

impl Order {
    /// "large Margherita".
    fn describe(self) -> String {
        format!("{} {}", self.size.title().to_lowercase(), self.pizza.name())
    }
}

/// Where one user's conversation stands. colloquy stores it (as JSON, tagged by `step`)
/// after every event; the default is the state of a user never seen before.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Never talked to us, or cancelled their last order.
    #[default]
    Start,
    /// Was shown the menu.
    ChoosingPizza,
    /// Picked `pizza`; was asked for the size.
    ChoosingSize { pizza: Pizza },
    /// Was asked to place `order`; the reminder timer is pending.
    Confirming { order: Order },
    /// Placed `order`; its delivery timer is pending. `menu` starts another order.
    Ordered { order: Order },
}

/// The pizza place. One value serves every user; what each user chose is in [`Step`].
pub struct PizzaBot {
    /// How long "Shall I place the order?" waits for an answer before the reminder.
    reminder_after: Duration,
    /// How long after the order "on its way" is sent.
    delivery_after: Duration,
}

impl PizzaBot {
    pub fn new(reminder_after: Duration, delivery_after: Duration) -> PizzaBot {
        PizzaBot {
            reminder_after,
            delivery_after,
        }
    }
}

impl Flow for PizzaBot {
    type State = Step;

    async fn on_timer(&self, timer: &TimerFired, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        self.timer_fired(timer, turn)
    }

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        let input = event.input();
        if matches!(input, Input::Text(text) if text.trim().eq_ignore_ascii_case(MENU)) {
            // Starting over: the order being confirmed, if any, is dropped.
            turn.cancel_timer(REMINDER);
            turn.reply(menu()?);
            turn.set_state(Step::ChoosingPizza);
            return Ok(());
        }
        // One handler per state.
        match turn.state().clone() {
            Step::Start => self.start(turn),
            Step::ChoosingPizza => self.choosing_pizza(input, turn),
            Step::ChoosingSize { pizza } => self.choosing_size(pizza, input, turn),
            Step::Confirming { order } => self.confirming(order, event, turn),
            Step::Ordered { order } => self.ordered(order, turn),
        }
    }
}

impl PizzaBot {
    /// Whatever a new user sends, they get a greeting and the menu.
    fn start(&self, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        turn.say("Hi! I take pizza orders. Which one would you like?")?;
        turn.reply(menu()?);
        turn.set_state(Step::ChoosingPizza);
        Ok(())
    }

    fn choosing_pizza(&self, input: Input<'_>, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        let picked = match input {
            Input::Postback { payload, .. } => Pizza::parse(payload),
            Input::Text(text) => Pizza::parse(text),
            _ => None,
        };
        match picked {
            Some(pizza) => {
                let question = format!("{}, good choice. Which size?", pizza.name());
                turn.reply(size_question(&question)?);
                turn.set_state(Step::ChoosingSize { pizza });
            }
            None => {
                turn.say("Please pick a pizza from the menu.")?;
                turn.reply(menu()?);
            }
        }
        Ok(())
    }

    fn choosing_size(
        &self,
        pizza: Pizza,
        input: Input<'_>,
        turn: &mut Turn<Step>,
    ) -> Result<(), FlowError> {
        let picked = match input {
            Input::QuickReply { payload, .. } => Size::parse(payload),
            Input::Text(text) => Size::parse(text),
            _ => None,
        };
        match picked {
            Some(size) => {
                let order = Order { pizza, size };
                let question = format!("One {}. Shall I place the order?", order.describe());
                self.ask_to_confirm(order, &question, turn)?;
            }
            None => turn.reply(size_question("Please pick a size:")?),
        }
        Ok(())
    }

    fn confirming(
        &self,
        order: Order,
        event: &InboundEvent,
        turn: &mut Turn<Step>,
    ) -> Result<(), FlowError> {
        // The user answered, so no reminder is needed any more (asking again below
        // schedules a new one).
        turn.cancel_timer(REMINDER);
        match event.input() {
            Input::Postback {
                payload: CONFIRM, ..
            } => {
                turn.say(format!(
                    "Thank you! Your {} is in the oven. I will tell you when it leaves.",
                    order.describe()
                ))?;
                let delivery = format!("{DELIVERY_PREFIX}{}", event.timestamp);
                turn.schedule(delivery, self.delivery_after, timer_payload(order)?);
                turn.set_state(Step::Ordered { order });
            }
            Input::Postback {
                payload: CANCEL, ..
            } => {
                turn.say(format!(
                    "No problem, I cancelled the {}. Type {MENU} whenever you are hungry.",
                    order.describe()
                ))?;
                turn.set_state(Step::Start);
            }
            _ => {
                let question = format!(
                    "Please tap a button: shall I order the {}?",
                    order.describe()
                );
                self.ask_to_confirm(order, &question, turn)?;
            }
        }
        Ok(())
    }

    fn ordered(&self, order: Order, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        turn.say(format!(
            "Your {} is ordered. Type {MENU} to order another pizza.",
            order.describe()
        ))?;
        Ok(())
    }

    /// Asks to place `order` with two buttons, and sets the reminder for no answer.
    fn ask_to_confirm(
        &self,
        order: Order,
        question: &str,
        turn: &mut Turn<Step>,
    ) -> Result<(), FlowError> {
        turn.reply(confirm_buttons(question)?);
        // No payload: when it fires, the order to remind of is in the state.
        turn.schedule(REMINDER, self.reminder_after, Value::Null);
        turn.set_state(Step::Confirming { order });
        Ok(())
    }

    /// A timer this flow scheduled has fired: it is the bot's own event, not something
    /// the user did.
    fn timer_fired(&self, timer: &TimerFired, turn: &mut Turn<Step>) -> Result<(), FlowError> {
        let (name, payload) = (timer.name.as_str(), &timer.payload);
        if name.starts_with(DELIVERY_PREFIX) {
            // The order was placed earlier; the user may be ordering another by now, so
            // the pizza comes from the timer's payload, not from the current state.
            let order: Order = serde_json::from_value(payload.clone())
                .map_err(|error| FlowError::failed(format!("delivery timer payload: {error}")))?;
            turn.say(format!(
                "Your {} is on its way! Enjoy your meal.",
                order.describe()
            ))?;
            return Ok(());
        }
        // The reminder is cancelled whenever the user answers, so it only fires while
        // they are still `Confirming`. Any other timer (left by an older version of
        // this bot, say) is ignored.
        if name == REMINDER {
            if let Step::Confirming { order } = turn.state().clone() {
                // One nudge only: it asks again, and schedules no further reminder.
                let nudge = format!(
                    "Still there? Your {} is waiting. Shall I place the order?",
                    order.describe()
                );
                turn.reply(confirm_buttons(&nudge)?);
            }
        }
        Ok(())
    }
}

/// The menu: one card per pizza, each with a button whose postback picks it.
fn menu() -> Result<Reply, ReplyError> {
    let cards = Pizza::ALL
        .into_iter()
        .map(|pizza| {
            Element::new(pizza.name())?
                .subtitle(pizza.toppings())?
                .buttons(vec![Button::postback("Choose", pizza.payload())?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    Reply::generic(cards)
}

/// `text` with the three sizes as quick replies under it.
fn size_question(text: &str) -> Result<Reply, ReplyError> {
    let sizes = Size::ALL
        .into_iter()
        .map(|size| quick_reply(size.title(), size.payload()))
        .collect::<Result<Vec<_>, _>>()?;
    Reply::text(text)?.with_quick_replies(sizes)
}

/// `question` with the two buttons that place or cancel the order.
fn confirm_buttons(question: &str) -> Result<Reply, ReplyError> {
    Reply::buttons(
        question,
        vec![
            Button::postback("Order it", CONFIRM)?,
            Button::postback("Cancel", CANCEL)?,
        ],
    )
}

/// What a delivery timer carries, so its message can name the pizza.
fn timer_payload(order: Order) -> Result<Value, FlowError> {
    serde_json::to_value(order).map_err(|error| FlowError::failed(error.to_string()))
}

/// Serves the bot to Facebook (configured like `colloquy serve`, from the environment),
/// or chats with it in this terminal with `-- chat`.
#[actix_web::main]
async fn main() -> ExitCode {
    let bot = match pizza_bot_from_env() {
        Ok(bot) => bot,
        Err(error) => {
            eprintln!("pizza_bot: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match colloquy::launch::serve_or_chat(FlowHandle::new(bot), "pizza_bot").await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pizza_bot: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The bot with its timer durations from `PIZZA_REMINDER_SECS` / `PIZZA_DELIVERY_SECS`.
fn pizza_bot_from_env() -> anyhow::Result<PizzaBot> {
    Ok(PizzaBot::new(
        seconds_from_env("PIZZA_REMINDER_SECS", DEFAULT_REMINDER_SECS)?,
        seconds_from_env("PIZZA_DELIVERY_SECS", DEFAULT_DELIVERY_SECS)?,
    ))
}

/// A setting from the environment; unset and empty both count as missing.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// A duration setting in whole seconds, or `default` when unset.
fn seconds_from_env(name: &str, default: u64) -> anyhow::Result<Duration> {
    let Some(value) = env(name) else {
        return Ok(Duration::from_secs(default));
    };
    let seconds: u64 = value
        .parse()
        .with_context(|| format!("{name} must be a whole number of seconds, not `{value}`"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy::event::parse_envelope;
    use futures_util::FutureExt;
    use serde_json::json;

    const LARGE_FUNGHI: Order = Order {
        pizza: Pizza::Funghi,
        size: Size::Large,
    };

    /// One messaging item from user 42 to page 1, parsed as colloquy would.
    fn event(item: &str) -> InboundEvent {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{{"sender":{{"id":"42"}},"recipient":{{"id":"1"}},"timestamp":5,{item}}}]}}]}}"#
        );
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    fn text(words: &str) -> InboundEvent {
        event(&format!(r#""message":{{"mid":"m","text":"{words}"}}"#))
    }

    fn pressed(payload: &str) -> InboundEvent {
        event(&format!(
            r#""postback":{{"title":"Button","payload":"{payload}"}}"#
        ))
    }

    fn tapped(title: &str, payload: &str) -> InboundEvent {
        event(&format!(
            r#""message":{{"mid":"m","text":"{title}","quick_reply":{{"payload":"{payload}"}}}}"#
        ))
    }

    /// A timer firing, as the engine delivers it to the flow.
    fn fired(name: &str, payload: Value) -> TimerFired {
        TimerFired {
            name: name.into(),
            due: 5,
            payload,
        }
    }

    /// Runs the bot's timer handler once from `state`.
    fn run_timer(state: Step, timer: &TimerFired) -> Turn<Step> {
        let mut turn = Turn::for_test("42", state);
        PizzaBot::new(Duration::from_secs(600), Duration::from_secs(1200))
            .on_timer(timer, &mut turn)
            .now_or_never()
            .expect("the pizza bot never waits")
            .expect("the pizza bot handles every timer");
        turn
    }

    /// Runs the bot once from `state`; returns the turn with the new state and replies.
    fn run(state: Step, event: &InboundEvent) -> Turn<Step> {
        let mut turn = Turn::for_test("42", state);
        PizzaBot::new(Duration::from_secs(600), Duration::from_secs(1200))
            .handle(event, &mut turn)
            .now_or_never()
            .expect("the pizza bot never waits")
            .expect("the pizza bot handles every event");
        turn
    }

    #[test]
    fn a_new_user_is_greeted_and_shown_the_menu() {
        let turn = run(Step::Start, &text("hello"));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Hi! I take pizza orders. Which one would you like?")
        );
        assert_eq!(turn.replies()[1], menu().unwrap());
        assert_eq!(turn.replies()[1].kind_name(), "template");
        assert_eq!(*turn.state(), Step::ChoosingPizza);
    }

    #[test]
    fn a_card_button_picks_the_pizza_and_the_sizes_are_offered() {
        let turn = run(Step::ChoosingPizza, &pressed("PIZZA_PEPPERONI"));
        assert_eq!(
            turn.replies(),
            [size_question("Pepperoni, good choice. Which size?").unwrap()]
        );
        assert_eq!(turn.replies()[0].kind_name(), "quick_replies");
        assert_eq!(
            *turn.state(),
            Step::ChoosingSize {
                pizza: Pizza::Pepperoni
            }
        );
    }

    #[test]
    fn a_pizza_typed_by_hand_works_like_its_button() {
        let turn = run(Step::ChoosingPizza, &text("funghi"));
        assert_eq!(
            *turn.state(),
            Step::ChoosingSize {
                pizza: Pizza::Funghi
            }
        );
    }

    #[test]
    fn something_not_on_the_menu_shows_the_menu_again() {
        let turn = run(Step::ChoosingPizza, &text("hawaii"));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Please pick a pizza from the menu.")
        );
        assert_eq!(turn.replies()[1], menu().unwrap());
        assert_eq!(*turn.state(), Step::ChoosingPizza);
    }

    #[test]
    fn a_size_quick_reply_asks_to_confirm_with_two_buttons() {
        let choosing = Step::ChoosingSize {
            pizza: Pizza::Funghi,
        };
        let turn = run(choosing, &tapped("Large", "SIZE_LARGE"));
        assert_eq!(
            turn.replies(),
            [confirm_buttons("One large Funghi. Shall I place the order?").unwrap()]
        );
        assert_eq!(
            *turn.state(),
            Step::Confirming {
                order: LARGE_FUNGHI
            }
        );
    }

    #[test]
    fn an_unknown_size_offers_the_sizes_again() {
        let choosing = Step::ChoosingSize {
            pizza: Pizza::Funghi,
        };
        let turn = run(choosing.clone(), &text("huge"));
        assert_eq!(
            turn.replies(),
            [size_question("Please pick a size:").unwrap()]
        );
        assert_eq!(*turn.state(), choosing);
    }

    #[test]
    fn order_it_places_the_order() {
        let confirming = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let turn = run(confirming, &pressed(CONFIRM));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Thank you! Your large Funghi is in the oven. I will tell you when it leaves.")
        );
        assert_eq!(
            *turn.state(),
            Step::Ordered {
                order: LARGE_FUNGHI
            }
        );
    }

    #[test]
    fn cancel_drops_the_order_and_starts_over() {
        let confirming = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let turn = run(confirming, &pressed(CANCEL));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("No problem, I cancelled the large Funghi. Type menu whenever you are hungry.")
        );
        assert_eq!(*turn.state(), Step::Start);
    }

    #[test]
    fn text_while_confirming_asks_again_with_the_buttons() {
        let confirming = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let turn = run(confirming.clone(), &text("hmm"));
        assert_eq!(
            turn.replies(),
            [confirm_buttons("Please tap a button: shall I order the large Funghi?").unwrap()]
        );
        assert_eq!(*turn.state(), confirming);
    }

    #[test]
    fn the_reminder_nudges_a_user_who_has_not_confirmed() {
        let confirming = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let turn = run_timer(confirming.clone(), &fired(REMINDER, json!({})));
        assert_eq!(
            turn.replies(),
            [confirm_buttons(
                "Still there? Your large Funghi is waiting. Shall I place the order?"
            )
            .unwrap()]
        );
        assert_eq!(*turn.state(), confirming);
    }

    #[test]
    fn a_reminder_outside_confirming_says_nothing() {
        let turn = run_timer(Step::ChoosingPizza, &fired(REMINDER, json!({})));
        assert!(turn.replies().is_empty());
        assert_eq!(*turn.state(), Step::ChoosingPizza);
    }

    #[test]
    fn the_delivery_timer_names_its_own_pizza_whatever_the_step() {
        let payload = json!({"pizza": "margherita", "size": "small"});
        let turn = run_timer(Step::ChoosingPizza, &fired("delivery-17", payload));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Your small Margherita is on its way! Enjoy your meal.")
        );
        assert_eq!(*turn.state(), Step::ChoosingPizza, "the new order goes on");
    }

    #[test]
    fn an_ordered_user_is_told_the_order_stands() {
        let ordered = Step::Ordered {
            order: LARGE_FUNGHI,
        };
        let turn = run(ordered.clone(), &text("where is it?"));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Your large Funghi is ordered. Type menu to order another pizza.")
        );
        assert_eq!(*turn.state(), ordered);
    }

    #[test]
    fn menu_starts_over_from_any_step() {
        let confirming = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let turn = run(confirming, &text(" Menu "));
        assert_eq!(turn.replies(), [menu().unwrap()]);
        assert_eq!(*turn.state(), Step::ChoosingPizza);
    }

    #[test]
    fn the_state_is_stored_as_tagged_json_and_reads_back() {
        let state = Step::Confirming {
            order: LARGE_FUNGHI,
        };
        let stored = serde_json::to_value(&state).unwrap();
        assert_eq!(
            stored,
            json!({"step": "confirming", "order": {"pizza": "funghi", "size": "large"}})
        );
        assert_eq!(serde_json::from_value::<Step>(stored).unwrap(), state);
    }
}

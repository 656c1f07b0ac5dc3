//! The timer wheel: turns due flow timers into journalled events for their conversations.
//!
//! Flows schedule timers through `Turn::schedule`; the conversation stores them in sled,
//! ordered by due time. Every tick this actor moves the timers that are due into the
//! journal (one atomic batch), waits for the flush, and routes them through the
//! supervisor like webhook events, so a timer fires exactly once, also across restarts
//! (a timer due while the server was down fires at the first tick after start). It owns
//! no timer state of its own and never runs flows.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::clock::now_ms;
use crate::engine::event::EngineEvent;
use crate::engine::load::Load;
use crate::engine::supervisor::{Route, Supervisor};
use crate::store::journal::JournalRef;
use crate::store::{Store, TimerFilter};

/// How often due timers are looked for: the lateness a timer may have.
pub const TICK: Duration = Duration::from_millis(100);

/// Stops the wheel (at shutdown); unfired timers stay in sled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

pub struct TimerWheel {
    store: Store,
    supervisor: Addr<Supervisor>,
    load: Arc<Load>,
    /// A cluster node fires only the timers of the partitions it holds; `None`: all.
    fires: Option<TimerFilter>,
    /// A tick's flush is still pending: skip ticks rather than pile them up.
    busy: bool,
}

impl TimerWheel {
    pub fn new(store: Store, supervisor: Addr<Supervisor>, load: Arc<Load>) -> Self {
        TimerWheel {
            store,
            supervisor,
            load,
            fires: None,
            busy: false,
        }
    }

    /// The same wheel, firing only the timers `fires` accepts.
    pub fn firing_only(mut self, fires: Option<TimerFilter>) -> Self {
        self.fires = fires;
        self
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let now = now_ms();
        let due = match &self.fires {
            None => self.store.has_due_timers(now),
            Some(fires) => self.store.has_due_timers_where(now, fires),
        };
        match due {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                log::error!("cannot read the timer index: {error}");
                return;
            }
        }
        self.busy = true;
        let fires = self
            .fires
            .clone()
            .unwrap_or_else(|| Arc::new(|_: &crate::store::TimerRecord| true));
        let fired = self.store.fire_due_timers_where(now, fires);
        ctx.spawn(fired.into_actor(self).map(move |fired, act, _| {
            act.busy = false;
            let fired = match fired {
                Ok(fired) => fired,
                Err(error) => {
                    // Nothing was moved, or it is in the journal and replayed at start.
                    log::error!("cannot fire due timers: {error}");
                    return;
                }
            };
            let events: Vec<(JournalRef, EngineEvent)> = fired
                .into_iter()
                .map(|(seq, timer)| (JournalRef::Own(seq), EngineEvent::from_timer(timer)))
                .collect();
            log::debug!("{} timer(s) fired", events.len());
            act.load.events_in(events.len());
            act.supervisor.do_send(Route { events });
        }));
    }
}

impl Actor for TimerWheel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, Self::tick);
    }
}

impl Handler<Stop> for TimerWheel {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

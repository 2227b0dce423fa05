//! Hand-off of finished requests' records from the HTTP workers to the [`AnalyticsActor`].
//!
//! A message per record would wake the actor's thread once per request, and on a busy
//! machine that wake-up costs more than the record itself. Workers push into a shared
//! queue instead, and only the push into an empty queue sends the actor a [`Drain`]. The
//! actor takes the whole queue [`DRAIN_DELAY`] later, so under load it wakes at most once
//! per delay, and an idle daemon not at all.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;

use super::{AnalyticsActor, RequestRecord};

/// Time a record may wait in the queue before the actor takes it. Queries, metrics and
/// shutdown take the queue at once, so they never miss a record.
pub const DRAIN_DELAY: Duration = Duration::from_millis(10);

/// Records pushed by the workers and not yet taken by the actor.
#[derive(Debug, Default)]
pub struct Queue(Mutex<Vec<RequestRecord>>);

impl Queue {
    /// Appends `record` and returns the queue's length after it.
    fn push(&self, record: RequestRecord) -> usize {
        let mut records = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        records.push(record);
        records.len()
    }

    /// Moves every queued record into `into`, which keeps its capacity across calls.
    pub(super) fn take_into(&self, into: &mut Vec<RequestRecord>) {
        let mut records = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *records, into);
    }
}

/// Handle the workers record finished requests with. Cloning it is cheap.
#[derive(Clone)]
pub struct Recorder {
    queue: Arc<Queue>,
    actor: Addr<AnalyticsActor>,
}

impl Recorder {
    /// Connects the queue of `actor`, taken with [`AnalyticsActor::queue`] before it
    /// started, to its address.
    pub fn new(queue: Arc<Queue>, actor: Addr<AnalyticsActor>) -> Self {
        Self { queue, actor }
    }

    /// Queues `record` for the actor. The queue's lock is held only for a push or a swap,
    /// and nothing here waits for the actor or for disk.
    pub fn submit(&self, record: RequestRecord) {
        if self.queue.push(record) == 1 {
            self.actor.do_send(Drain);
        }
    }
}

/// Tells the actor that the queue has records; it takes them after [`DRAIN_DELAY`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

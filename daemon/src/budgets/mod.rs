//! USD budgets per UTC day and month, for all clients together and per credential, that
//! concurrent requests cannot take past their amount.
//!
//! Before a request that can cost money goes upstream, the proxy reserves its worst-case
//! cost (see [`estimate`]) in every budget that applies to it. The reservation succeeds
//! only if, for each of those budgets, the cost recorded in the period plus every
//! outstanding reservation plus this estimate stays within the limit. When the response
//! ends, the [`Reservation`] is settled: the estimate is released and the real cost is
//! added. A reservation that is dropped unsettled, because the upstream could not be
//! reached or the handler was cancelled, is released with no cost, so each one is
//! released exactly once.
//!
//! Requests whose cost has no bound follow two rules:
//! - An unpriced model is recorded without a cost, so it never adds to a budget. Such a
//!   request reserves nothing and is rejected only once a budget is used up.
//! - A request that sets no output limit reserves its input estimate, and only one such
//!   request per budget is in flight at a time. A budget is then overshot by at most the
//!   output of one request.
//!
//! The ledger is a `Mutex` shared by the HTTP workers rather than an actor, like the rate
//! limiter in [`crate::limits`]. A check must add its reservation in the same step, and a
//! settlement runs inside the synchronous drop of the response body, where an actor could
//! only be sent a message that it handles later. Under the lock each call does a few
//! integer operations on at most two budgets. On a 2-core x86-64 machine, a release build
//! took about 0.15 µs per reserve and release pair, on one thread or two, and about 5 µs
//! per actor round trip to another arbiter (the ignored `*_timing` tests in `tests.rs`).

pub mod calendar;
pub mod estimate;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use cco_proto::{BudgetPeriod, BudgetStatus};

use calendar::Month;
pub use estimate::{Api, Bound, Estimate};

/// Nano-US-dollars in one US dollar.
pub const NANO_USD_PER_USD: u64 = 1_000_000_000;

/// Limits of one budget scope, in nano-USD; `None` sets no limit for that period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub daily_nano_usd: Option<u64>,
    pub monthly_nano_usd: Option<u64>,
}

impl Limits {
    fn get(&self, period: BudgetPeriod) -> Option<u64> {
        match period {
            BudgetPeriod::Daily => self.daily_nano_usd,
            BudgetPeriod::Monthly => self.monthly_nano_usd,
        }
    }

    fn is_empty(&self) -> bool {
        self.daily_nano_usd.is_none() && self.monthly_nano_usd.is_none()
    }
}

/// Settings of `[budgets]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Limits of all clients together.
    pub global: Limits,
    /// Limits per credential hash prefix (12 lowercase hex digits), in file order.
    pub credentials: Vec<(String, Limits)>,
}

impl BudgetConfig {
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.credentials.iter().all(|(_, limits)| limits.is_empty())
    }
}

/// Cost recorded on one UTC day for one credential, read from the analytics at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySpend {
    pub day: u32,
    /// Hash prefix of the credential, or `None` for requests that carried none.
    pub credential: Option<String>,
    pub cost_nano_usd: u64,
}

/// The budgets, their spend in the current periods and the outstanding reservations.
pub struct Budgets {
    ledger: Mutex<Ledger>,
    /// Index in [`Ledger::scopes`] of the budget of all clients, if it has a limit.
    global: Option<usize>,
    /// Index in [`Ledger::scopes`] of each credential's budget.
    by_credential: HashMap<String, usize>,
}

struct Ledger {
    /// UTC day of the latest instant seen; spend of earlier days no longer counts.
    day: u32,
    month: Month,
    scopes: Vec<Scope>,
}

/// One budget: all clients, or one credential.
struct Scope {
    credential: Option<String>,
    limits: Limits,
    spent_day: u64,
    spent_month: u64,
    reserved: u64,
    /// Requests in flight that set no output limit, at most one.
    unbounded_in_flight: u32,
}

impl Scope {
    fn spent(&self, period: BudgetPeriod) -> u64 {
        match period {
            BudgetPeriod::Daily => self.spent_day,
            BudgetPeriod::Monthly => self.spent_month,
        }
    }
}

impl Ledger {
    /// Moves to the day of `now_unix_ms` if it is later, starting the new day's spend at
    /// zero and, in a new month, the month's too. A clock that steps back changes nothing.
    fn roll(&mut self, now_unix_ms: u64) {
        let day = calendar::day_of(now_unix_ms);
        if day <= self.day {
            return;
        }
        self.day = day;
        let month = Month::of_day(day);
        let new_month = month != self.month;
        self.month = month;
        for scope in &mut self.scopes {
            scope.spent_day = 0;
            if new_month {
                scope.spent_month = 0;
            }
        }
    }

    fn resets_unix_ms(&self, period: BudgetPeriod) -> u64 {
        match period {
            BudgetPeriod::Daily => calendar::start_of_day(self.day.saturating_add(1)),
            BudgetPeriod::Monthly => calendar::start_of_day(self.month.next().first_day()),
        }
    }
}

/// Why a request was rejected: the budget that it could have overrun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Hash prefix of the credential of the budget, or `None` for all clients.
    pub credential: Option<String>,
    pub period: BudgetPeriod,
    pub limit_nano_usd: u64,
    pub spent_nano_usd: u64,
    pub reserved_nano_usd: u64,
    pub estimate: Estimate,
    pub reason: Reason,
    pub resets_unix_ms: u64,
    /// Whole seconds until the budget resets, when only the reset can admit the request.
    pub retry_after_secs: Option<u64>,
}

/// Rule that rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Spend, reservations and this estimate together exceed the limit.
    Exceeded,
    /// This estimate alone exceeds the limit, so no period can admit the request.
    EstimateAboveLimit,
    /// A request without an output limit while another one is in flight.
    UnboundedInFlight,
}

impl Rejection {
    /// Returns the message sent to the client: the budget, its spend and reservations, and
    /// what to do next.
    pub fn message(&self) -> String {
        let period = self.period.as_str();
        let limit = format_usd(self.limit_nano_usd);
        let scope = match &self.credential {
            Some(credential) => format!("credential {credential}"),
            None => "all clients".to_owned(),
        };
        let key = match &self.credential {
            Some(_) => format!("{period}_usd of this [[budgets.credentials]] entry"),
            None => format!("[budgets] {period}_usd"),
        };
        let reset = calendar::format_unix_ms(self.resets_unix_ms);
        let estimate = format_usd(self.estimate.cost_nano_usd);
        match self.reason {
            Reason::EstimateAboveLimit => format!(
                "this request may cost up to {estimate}, more than the whole {period} budget of \
                 {limit} for {scope}; lower max_tokens or raise {key}"
            ),
            Reason::UnboundedInFlight => format!(
                "{period} budget of {limit} for {scope}: a request without max_tokens (or \
                 max_completion_tokens, max_output_tokens) has no cost limit, so only one runs \
                 at a time and another is in flight; set max_tokens or retry when it ends"
            ),
            Reason::Exceeded => {
                let mut used = format!("spent {}", format_usd(self.spent_nano_usd));
                if self.reserved_nano_usd > 0 {
                    used.push_str(&format!(
                        " and {} reserved by requests in flight",
                        format_usd(self.reserved_nano_usd)
                    ));
                }
                let request = match self.estimate.bound {
                    Bound::Unpriced => {
                        "this request's model has no price, so it waits for room".to_owned()
                    }
                    Bound::InputOnly => format!("this request's input may cost up to {estimate}"),
                    Bound::WorstCase => format!("this request may cost up to {estimate}"),
                };
                format!(
                    "{period} budget of {limit} for {scope} reached: {used}, {request}; it resets \
                     at {reset}, or raise {key}"
                )
            }
        }
    }
}

/// A failed check of one budget and period, before the binding one is picked.
struct Failure {
    scope: usize,
    period: BudgetPeriod,
    reason: Reason,
}

impl Budgets {
    /// Builds the budgets of `config` at `now_unix_ms`, counting the spend in `history`
    /// that falls in the current day and month.
    pub fn new(config: &BudgetConfig, now_unix_ms: u64, history: &[DaySpend]) -> Budgets {
        let day = calendar::day_of(now_unix_ms);
        let month = Month::of_day(day);
        let mut scopes = Vec::new();
        let mut global = None;
        if !config.global.is_empty() {
            global = Some(scopes.len());
            scopes.push(new_scope(None, config.global));
        }
        let mut by_credential = HashMap::new();
        for (credential, limits) in &config.credentials {
            if !limits.is_empty() {
                by_credential.insert(credential.clone(), scopes.len());
                scopes.push(new_scope(Some(credential.clone()), *limits));
            }
        }
        for spend in history {
            if spend.day > day || Month::of_day(spend.day) != month {
                continue;
            }
            let credential_scope = spend
                .credential
                .as_ref()
                .and_then(|credential| by_credential.get(credential));
            for &index in global.iter().chain(credential_scope) {
                let scope = &mut scopes[index];
                scope.spent_month = scope.spent_month.saturating_add(spend.cost_nano_usd);
                if spend.day == day {
                    scope.spent_day = scope.spent_day.saturating_add(spend.cost_nano_usd);
                }
            }
        }
        Budgets {
            ledger: Mutex::new(Ledger { day, month, scopes }),
            global,
            by_credential,
        }
    }

    /// Returns the first day whose spend [`Budgets::new`] counts at `now_unix_ms`: the
    /// first day of the current month.
    pub fn history_start_day(now_unix_ms: u64) -> u32 {
        Month::of_day(calendar::day_of(now_unix_ms)).first_day()
    }

    /// Reserves `estimate` for a request with `credential` (its hash prefix) at
    /// `now_unix_ms` in every budget that applies, or returns the budget that rejects it.
    /// Returns `Ok(None)` when no budget applies.
    pub fn reserve(
        self: &Arc<Self>,
        credential: Option<&str>,
        estimate: Estimate,
        now_unix_ms: u64,
    ) -> Result<Option<Reservation>, Rejection> {
        let credential_scope = credential.and_then(|credential| self.by_credential.get(credential));
        let scopes: Vec<usize> = self
            .global
            .iter()
            .chain(credential_scope)
            .copied()
            .collect();
        if scopes.is_empty() {
            return Ok(None);
        }
        let mut ledger = self.lock();
        ledger.roll(now_unix_ms);
        let failures: Vec<Failure> = scopes
            .iter()
            .flat_map(|&index| check(&ledger.scopes[index], index, estimate))
            .collect();
        if let Some(binding) = binding_failure(&ledger, failures) {
            return Err(rejection(&ledger, binding, estimate, now_unix_ms));
        }
        let unbounded = estimate.bound == Bound::InputOnly;
        for &index in &scopes {
            let scope = &mut ledger.scopes[index];
            scope.reserved = scope.reserved.saturating_add(estimate.cost_nano_usd);
            scope.unbounded_in_flight += u32::from(unbounded);
        }
        Ok(Some(Reservation {
            budgets: self.clone(),
            scopes,
            amount_nano_usd: estimate.cost_nano_usd,
            unbounded,
            day: ledger.day,
            month: ledger.month,
            released: false,
        }))
    }

    /// Returns the state of every budget at `now_unix_ms`, all clients first.
    pub fn status(&self, now_unix_ms: u64) -> Vec<BudgetStatus> {
        let mut ledger = self.lock();
        ledger.roll(now_unix_ms);
        let mut statuses = Vec::new();
        for scope in &ledger.scopes {
            for period in [BudgetPeriod::Daily, BudgetPeriod::Monthly] {
                if let Some(limit) = scope.limits.get(period) {
                    statuses.push(BudgetStatus {
                        credential: scope.credential.clone(),
                        period,
                        limit_nano_usd: limit,
                        spent_nano_usd: scope.spent(period),
                        reserved_nano_usd: scope.reserved,
                        resets_unix_ms: ledger.resets_unix_ms(period),
                    });
                }
            }
        }
        statuses
    }

    /// Locks the ledger. A panic while it was held leaves integers that are still
    /// consistent, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Budgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgets")
            .field("global", &self.global.is_some())
            .field("credentials", &self.by_credential.len())
            .finish_non_exhaustive()
    }
}

fn new_scope(credential: Option<String>, limits: Limits) -> Scope {
    Scope {
        credential,
        limits,
        spent_day: 0,
        spent_month: 0,
        reserved: 0,
        unbounded_in_flight: 0,
    }
}

/// Checks `estimate` against each period of one budget.
fn check(scope: &Scope, index: usize, estimate: Estimate) -> Vec<Failure> {
    let mut failures = Vec::new();
    for period in [BudgetPeriod::Daily, BudgetPeriod::Monthly] {
        let Some(limit) = scope.limits.get(period) else {
            continue;
        };
        let used = scope.spent(period).saturating_add(scope.reserved);
        let reason = if estimate.cost_nano_usd > limit {
            Some(Reason::EstimateAboveLimit)
        } else if estimate.bound == Bound::Unpriced && used >= limit {
            // An unpriced request adds nothing, so it is stopped only by a used-up budget.
            Some(Reason::Exceeded)
        } else if used.saturating_add(estimate.cost_nano_usd) > limit {
            Some(Reason::Exceeded)
        } else if estimate.bound == Bound::InputOnly && scope.unbounded_in_flight > 0 {
            Some(Reason::UnboundedInFlight)
        } else {
            None
        };
        if let Some(reason) = reason {
            failures.push(Failure {
                scope: index,
                period,
                reason,
            });
        }
    }
    failures
}

/// Picks the failure to report: an estimate that no period can admit, else the budget
/// that resets last, so that waiting for its reset is enough, and of two such, the
/// credential's.
fn binding_failure(ledger: &Ledger, failures: Vec<Failure>) -> Option<Failure> {
    failures.into_iter().max_by_key(|failure| {
        (
            failure.reason == Reason::EstimateAboveLimit,
            ledger.resets_unix_ms(failure.period),
            ledger.scopes[failure.scope].credential.is_some(),
        )
    })
}

fn rejection(ledger: &Ledger, failure: Failure, estimate: Estimate, now_unix_ms: u64) -> Rejection {
    let scope = &ledger.scopes[failure.scope];
    let limit = scope.limits.get(failure.period).unwrap_or(0);
    let spent = scope.spent(failure.period);
    let resets_unix_ms = ledger.resets_unix_ms(failure.period);
    // Spend only grows within a period, so when it alone leaves no room, only the reset
    // helps. Otherwise requests in flight may free their reservations sooner.
    let blocked_until_reset = failure.reason == Reason::Exceeded
        && match estimate.bound {
            Bound::Unpriced => spent >= limit,
            Bound::WorstCase | Bound::InputOnly => {
                spent.saturating_add(estimate.cost_nano_usd) > limit
            }
        };
    let retry_after_secs = blocked_until_reset.then(|| {
        resets_unix_ms
            .saturating_sub(now_unix_ms)
            .div_ceil(1000)
            .max(1)
    });
    Rejection {
        credential: scope.credential.clone(),
        period: failure.period,
        limit_nano_usd: limit,
        spent_nano_usd: spent,
        reserved_nano_usd: scope.reserved,
        estimate,
        reason: failure.reason,
        resets_unix_ms,
        retry_after_secs,
    }
}

/// An estimate held in the budgets of one request until the request ends. Dropping it
/// unsettled releases it with no cost.
pub struct Reservation {
    budgets: Arc<Budgets>,
    scopes: Vec<usize>,
    amount_nano_usd: u64,
    unbounded: bool,
    /// Period of the request's start, which its cost is counted in, as the analytics
    /// record's time is.
    day: u32,
    month: Month,
    released: bool,
}

impl Reservation {
    /// Returns the reserved estimate.
    pub fn amount_nano_usd(&self) -> u64 {
        self.amount_nano_usd
    }

    /// Releases the estimate and adds the real cost of the request.
    pub fn settle(mut self, cost_nano_usd: u64) {
        self.release(cost_nano_usd, now_unix_ms());
    }

    fn release(&mut self, cost_nano_usd: u64, now_unix_ms: u64) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let mut ledger = self.budgets.lock();
        ledger.roll(now_unix_ms);
        // A request that started before midnight counts in the day it started, so once
        // that day is over its cost no longer counts against the daily budget.
        let same_day = ledger.day == self.day;
        let same_month = ledger.month == self.month;
        for &index in &self.scopes {
            let scope = &mut ledger.scopes[index];
            scope.reserved = scope.reserved.saturating_sub(self.amount_nano_usd);
            if self.unbounded {
                scope.unbounded_in_flight = scope.unbounded_in_flight.saturating_sub(1);
            }
            if same_day {
                scope.spent_day = scope.spent_day.saturating_add(cost_nano_usd);
            }
            if same_month {
                scope.spent_month = scope.spent_month.saturating_add(cost_nano_usd);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(0, now_unix_ms());
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("amount_nano_usd", &self.amount_nano_usd)
            .field("unbounded", &self.unbounded)
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}

/// Returns the current time in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Formats nano-USD as dollars without rounding, with trailing zeros of the fraction
/// trimmed down to two decimals: `$5.00`, `$0.0036`.
pub fn format_usd(nano_usd: u64) -> String {
    let mut fraction = format!("{:09}", nano_usd % NANO_USD_PER_USD);
    while fraction.len() > 2 && fraction.ends_with('0') {
        fraction.pop();
    }
    format!("${}.{fraction}", nano_usd / NANO_USD_PER_USD)
}

/// Parses a USD amount, such as `5`, `0.25` or `"12.50"`, into nano-USD, exactly. Accepts
/// at most 9 decimals, the resolution of nano-USD, and no sign.
pub fn parse_usd(text: &str) -> Result<u64, &'static str> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let is_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) || text.ends_with('.') {
        return Err("expected a decimal amount of US dollars such as 5 or 12.50");
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 9 {
        return Err("it has more than 9 decimal places, finer than 1 nano-USD");
    }
    let whole: u64 = whole.parse().map_err(|_| "the amount is too large")?;
    let nanos: u64 = format!("{fraction:0<9}")
        .parse()
        .expect("nine ASCII digits parse as u64");
    whole
        .checked_mul(NANO_USD_PER_USD)
        .and_then(|amount| amount.checked_add(nanos))
        .ok_or("the amount is too large")
}

#[cfg(test)]
mod tests;

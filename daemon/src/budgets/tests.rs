use super::calendar::DAY_MS;
use super::*;

/// 2025-12-03T12:00:00Z, in the middle of day 20,425.
const NOON: u64 = 20_425 * DAY_MS + DAY_MS / 2;
const DOLLAR: u64 = NANO_USD_PER_USD;
const CREDENTIAL: &str = "0123456789ab";
const OTHER: &str = "ba9876543210";

fn worst_case(cost_nano_usd: u64) -> Estimate {
    Estimate {
        cost_nano_usd,
        bound: Bound::WorstCase,
    }
}

fn daily(limit: u64) -> Limits {
    Limits {
        daily_nano_usd: Some(limit),
        monthly_nano_usd: None,
    }
}

fn budgets(config: BudgetConfig, history: &[DaySpend]) -> Arc<Budgets> {
    Arc::new(Budgets::new(&config, NOON, history))
}

fn global_daily(limit: u64) -> Arc<Budgets> {
    budgets(
        BudgetConfig {
            global: daily(limit),
            credentials: Vec::new(),
        },
        &[],
    )
}

/// Settles `reservation` at [`NOON`], as the proxy settles at the time the request ends.
fn settle_at_noon(mut reservation: Reservation, cost_nano_usd: u64) {
    reservation.release(cost_nano_usd, NOON);
}

fn status_of(budgets: &Budgets, credential: Option<&str>, period: BudgetPeriod) -> BudgetStatus {
    budgets
        .status(NOON)
        .into_iter()
        .find(|status| status.credential.as_deref() == credential && status.period == period)
        .unwrap_or_else(|| panic!("no {period:?} budget for {credential:?}"))
}

#[test]
fn reservations_add_up_to_limit() {
    let budgets = global_daily(DOLLAR);
    let first = budgets
        .reserve(None, worst_case(600_000_000), NOON)
        .unwrap();
    let second = budgets
        .reserve(None, worst_case(400_000_000), NOON)
        .unwrap();
    assert!(first.is_some());
    assert!(second.is_some());
    // 0.6 + 0.4 fills the $1 budget exactly; one more nano-USD does not fit.
    let rejection = budgets.reserve(None, worst_case(1), NOON).unwrap_err();
    assert_eq!(rejection.reason, Reason::Exceeded);
    assert_eq!(rejection.reserved_nano_usd, DOLLAR);
    assert_eq!(rejection.spent_nano_usd, 0);
    assert_eq!(
        rejection.retry_after_secs, None,
        "reservations may free up before the reset"
    );
}

#[test]
fn settle_replaces_estimate_with_cost() {
    let budgets = global_daily(DOLLAR);
    let reservation = budgets
        .reserve(None, worst_case(900_000_000), NOON)
        .unwrap()
        .unwrap();
    assert!(budgets
        .reserve(None, worst_case(200_000_000), NOON)
        .is_err());
    settle_at_noon(reservation, 100_000_000);
    let status = status_of(&budgets, None, BudgetPeriod::Daily);
    assert_eq!(status.spent_nano_usd, 100_000_000);
    assert_eq!(status.reserved_nano_usd, 0);
    // 0.1 spent + 0.9 estimate fits the $1 budget again.
    assert!(budgets.reserve(None, worst_case(900_000_000), NOON).is_ok());
}

#[test]
fn drop_releases_without_cost() {
    let budgets = global_daily(DOLLAR);
    let reservation = budgets.reserve(None, worst_case(DOLLAR), NOON).unwrap();
    drop(reservation);
    let status = status_of(&budgets, None, BudgetPeriod::Daily);
    assert_eq!(status.reserved_nano_usd, 0);
    assert_eq!(status.spent_nano_usd, 0);
}

#[test]
fn settle_releases_once() {
    let budgets = global_daily(DOLLAR);
    let first = budgets
        .reserve(None, worst_case(300_000_000), NOON)
        .unwrap()
        .unwrap();
    let _second = budgets
        .reserve(None, worst_case(200_000_000), NOON)
        .unwrap();
    // settle consumes the reservation, so its drop must not release it a second time.
    settle_at_noon(first, 50_000_000);
    let status = status_of(&budgets, None, BudgetPeriod::Daily);
    assert_eq!(status.reserved_nano_usd, 200_000_000);
    assert_eq!(status.spent_nano_usd, 50_000_000);
}

#[test]
fn estimate_above_limit_never_passes() {
    let budgets = global_daily(DOLLAR);
    let rejection = budgets
        .reserve(None, worst_case(DOLLAR + 1), NOON)
        .unwrap_err();
    assert_eq!(rejection.reason, Reason::EstimateAboveLimit);
    assert_eq!(rejection.retry_after_secs, None);
    assert!(
        rejection
            .message()
            .contains("more than the whole daily budget of $1.00"),
        "{}",
        rejection.message()
    );
}

#[test]
fn spent_budget_rejects_until_reset() {
    let history = [DaySpend {
        day: 20_425,
        credential: None,
        cost_nano_usd: 4_980_000_000,
    }];
    let budgets = budgets(
        BudgetConfig {
            global: daily(5 * DOLLAR),
            credentials: Vec::new(),
        },
        &history,
    );
    let rejection = budgets
        .reserve(None, worst_case(100_000_000), NOON)
        .unwrap_err();
    assert_eq!(rejection.reason, Reason::Exceeded);
    // Noon to midnight is 43,200 seconds.
    assert_eq!(rejection.retry_after_secs, Some(43_200));
    assert_eq!(
        rejection.message(),
        "daily budget of $5.00 for all clients reached: spent $4.98, this request may cost up \
         to $0.10; it resets at 2025-12-04T00:00:00Z, or raise [budgets] daily_usd"
    );
    // The next day starts from zero.
    let tomorrow = NOON + DAY_MS;
    assert!(budgets
        .reserve(None, worst_case(100_000_000), tomorrow)
        .is_ok());
}

#[test]
fn history_counts_current_month_only() {
    let config = BudgetConfig {
        global: Limits {
            daily_nano_usd: Some(10 * DOLLAR),
            monthly_nano_usd: Some(100 * DOLLAR),
        },
        credentials: vec![(CREDENTIAL.to_owned(), daily(DOLLAR))],
    };
    let spend = |day, credential: Option<&str>, cost| DaySpend {
        day,
        credential: credential.map(str::to_owned),
        cost_nano_usd: cost,
    };
    let history = [
        // 2025-11-30, the month before.
        spend(20_422, None, 7),
        // 2025-12-01 and 2025-12-02.
        spend(20_423, Some(CREDENTIAL), 11),
        spend(20_424, Some(OTHER), 13),
        // Today, 2025-12-03.
        spend(20_425, Some(CREDENTIAL), 17),
        spend(20_425, None, 19),
    ];

    let budgets = budgets(config, &history);

    assert_eq!(Budgets::history_start_day(NOON), 20_423);
    let global_day = status_of(&budgets, None, BudgetPeriod::Daily);
    let global_month = status_of(&budgets, None, BudgetPeriod::Monthly);
    let credential_day = status_of(&budgets, Some(CREDENTIAL), BudgetPeriod::Daily);
    assert_eq!(global_day.spent_nano_usd, 17 + 19);
    assert_eq!(global_month.spent_nano_usd, 11 + 13 + 17 + 19);
    assert_eq!(credential_day.spent_nano_usd, 17);
    assert_eq!(global_day.resets_unix_ms, 20_426 * DAY_MS);
    // December 2025 ends as 2026-01-01 (day 20,454) begins.
    assert_eq!(global_month.resets_unix_ms, 20_454 * DAY_MS);
    assert_eq!(budgets.status(NOON).len(), 3);
}

#[test]
fn credential_budget_isolates_credentials() {
    let budgets = budgets(
        BudgetConfig {
            global: Limits::default(),
            credentials: vec![(CREDENTIAL.to_owned(), daily(DOLLAR))],
        },
        &[],
    );
    let held = budgets
        .reserve(Some(CREDENTIAL), worst_case(DOLLAR), NOON)
        .unwrap();
    assert!(held.is_some());
    let rejection = budgets
        .reserve(Some(CREDENTIAL), worst_case(1), NOON)
        .unwrap_err();
    assert_eq!(rejection.credential.as_deref(), Some(CREDENTIAL));
    assert!(
        rejection
            .message()
            .starts_with("daily budget of $1.00 for credential 0123456789ab"),
        "{}",
        rejection.message()
    );
    // Another credential, or none, has no budget at all.
    assert!(budgets
        .reserve(Some(OTHER), worst_case(10 * DOLLAR), NOON)
        .unwrap()
        .is_none());
    assert!(budgets
        .reserve(None, worst_case(10 * DOLLAR), NOON)
        .unwrap()
        .is_none());
}

#[test]
fn monthly_limit_binds_over_daily() {
    let history = [DaySpend {
        day: 20_424,
        credential: Some(CREDENTIAL.to_owned()),
        cost_nano_usd: 20 * DOLLAR,
    }];
    let budgets = budgets(
        BudgetConfig {
            global: daily(DOLLAR),
            credentials: vec![(
                CREDENTIAL.to_owned(),
                Limits {
                    daily_nano_usd: Some(DOLLAR),
                    monthly_nano_usd: Some(20 * DOLLAR),
                },
            )],
        },
        &history,
    );
    // Both daily budgets are empty today, but the credential's month is used up.
    let rejection = budgets
        .reserve(Some(CREDENTIAL), worst_case(DOLLAR / 2), NOON)
        .unwrap_err();
    assert_eq!(rejection.period, BudgetPeriod::Monthly);
    assert_eq!(rejection.credential.as_deref(), Some(CREDENTIAL));
    // From noon on 2025-12-03 to 2026-01-01: 28 days and 12 hours.
    assert_eq!(rejection.retry_after_secs, Some(28 * 86_400 + 43_200));
}

#[test]
fn unpriced_admitted_until_used_up() {
    let budgets = global_daily(DOLLAR);
    let unpriced = Estimate {
        cost_nano_usd: 0,
        bound: Bound::Unpriced,
    };
    let first = budgets.reserve(None, worst_case(DOLLAR), NOON).unwrap();
    // The reservation fills the budget, which an unpriced request cannot pass.
    let rejection = budgets.reserve(None, unpriced, NOON).unwrap_err();
    assert_eq!(rejection.reason, Reason::Exceeded);
    assert_eq!(rejection.retry_after_secs, None);
    assert_eq!(
        rejection.message(),
        "daily budget of $1.00 for all clients reached: spent $0.00 and $1.00 reserved by \
         requests in flight, this request's model has no price, so it waits for room; it \
         resets at 2025-12-04T00:00:00Z, or raise [budgets] daily_usd"
    );
    settle_at_noon(first.unwrap(), DOLLAR - 1);
    assert!(budgets.reserve(None, unpriced, NOON).is_ok());
    assert!(budgets.reserve(None, unpriced, NOON).is_ok());
}

#[test]
fn one_unbounded_request_at_a_time() {
    let budgets = global_daily(DOLLAR);
    let input_only = Estimate {
        cost_nano_usd: 1000,
        bound: Bound::InputOnly,
    };
    let first = budgets.reserve(None, input_only, NOON).unwrap().unwrap();
    let rejection = budgets.reserve(None, input_only, NOON).unwrap_err();
    assert_eq!(rejection.reason, Reason::UnboundedInFlight);
    assert!(
        rejection.message().contains("only one runs at a time"),
        "{}",
        rejection.message()
    );
    assert_eq!(rejection.retry_after_secs, None);
    // Bounded requests still pass beside it.
    assert!(budgets.reserve(None, worst_case(1000), NOON).is_ok());
    settle_at_noon(first, 5000);
    assert!(budgets.reserve(None, input_only, NOON).is_ok());
}

#[test]
fn cost_counts_in_start_day() {
    let budgets = global_daily(DOLLAR);
    let mut reservation = budgets
        .reserve(None, worst_case(500_000_000), NOON)
        .unwrap()
        .unwrap();
    // The request ends after midnight: its cost belongs to the day it started.
    let tomorrow = NOON + DAY_MS;
    reservation.release(400_000_000, tomorrow);
    let status = budgets.status(tomorrow);
    assert_eq!(status[0].spent_nano_usd, 0);
    assert_eq!(status[0].reserved_nano_usd, 0);
}

#[test]
fn month_rollover_resets_monthly_spend() {
    let budgets = budgets(
        BudgetConfig {
            global: Limits {
                daily_nano_usd: None,
                monthly_nano_usd: Some(DOLLAR),
            },
            credentials: Vec::new(),
        },
        &[],
    );
    let reservation = budgets.reserve(None, worst_case(DOLLAR), NOON).unwrap();
    settle_at_noon(reservation.unwrap(), DOLLAR);
    let next_week = NOON + 7 * DAY_MS;
    assert!(budgets.reserve(None, worst_case(1), next_week).is_err());
    // 2026-01-01 starts a new month.
    let january = 20_454 * DAY_MS;
    assert!(budgets.reserve(None, worst_case(DOLLAR), january).is_ok());
}

#[test]
fn concurrent_reservations_never_overshoot() {
    let budgets = global_daily(DOLLAR);
    let admitted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|threads| {
        for _ in 0..8 {
            threads.spawn(|| {
                for _ in 0..1000 {
                    if let Ok(Some(reservation)) =
                        budgets.reserve(None, worst_case(3_000_000), NOON)
                    {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Each request costs its whole estimate and is never released.
                        std::mem::forget(reservation);
                    }
                }
            });
        }
    });
    // $1 has room for 333 estimates of $0.003 and no more.
    assert_eq!(admitted.into_inner(), 333);
}

#[test]
fn usd_amounts_parse_exactly() {
    let cases = [
        ("5", Ok(5 * DOLLAR)),
        ("0.25", Ok(250_000_000)),
        ("12.50", Ok(12_500_000_000)),
        ("0.000000001", Ok(1)),
        ("1.0000000000", Ok(DOLLAR)),
        ("0", Ok(0)),
        ("0.0000000001", Err(())),
        ("-1", Err(())),
        ("1e3", Err(())),
        (".5", Err(())),
        ("5.", Err(())),
        ("", Err(())),
        ("$5", Err(())),
        ("99999999999999999999", Err(())),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_usd(text).map_err(|_| ()), expected, "{text:?}");
    }
}

#[test]
fn usd_formats_without_rounding() {
    assert_eq!(format_usd(5 * DOLLAR), "$5.00");
    assert_eq!(format_usd(4_980_000_000), "$4.98");
    assert_eq!(format_usd(3_600_000), "$0.0036");
    assert_eq!(format_usd(1), "$0.000000001");
}

/// Times a reserve and release pair, the ledger's cost per request, on one and on two
/// threads. Run with `cargo test --release -p ccod --lib timing -- --ignored --nocapture`.
#[test]
#[ignore = "a timing to read, not a check"]
fn reserve_release_timing() {
    const ROUNDS: u32 = 1_000_000;
    let budgets = global_daily(u64::MAX / 2);
    for thread_count in [1, 2] {
        let started = std::time::Instant::now();
        std::thread::scope(|threads| {
            for _ in 0..thread_count {
                threads.spawn(|| {
                    for _ in 0..ROUNDS {
                        drop(budgets.reserve(None, worst_case(3), NOON));
                    }
                });
            }
        });
        let per_pair = started.elapsed() / (ROUNDS * thread_count);
        eprintln!("{thread_count} threads: {per_pair:?} per reserve and release");
    }
}

/// An actor that returns its message plus one, for [`actor_round_trip_timing`].
struct Echo;

impl actix::Actor for Echo {
    type Context = actix::Context<Self>;
}

#[derive(actix::Message)]
#[rtype(result = "u64")]
struct Ping(u64);

impl actix::Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, Ping(value): Ping, _: &mut Self::Context) -> u64 {
        value + 1
    }
}

/// Times the round trip that an actor in place of the ledger would add to each request:
/// a message to an actor on another arbiter and its reply.
#[actix::test]
#[ignore = "a timing to read, not a check"]
async fn actor_round_trip_timing() {
    use actix::Actor as _;
    const ROUNDS: u32 = 100_000;
    let arbiter = actix::Arbiter::new();
    let echo = Echo::start_in_arbiter(&arbiter.handle(), |_| Echo);
    let started = std::time::Instant::now();
    for value in 0..ROUNDS {
        echo.send(Ping(u64::from(value))).await.unwrap();
    }
    eprintln!("{:?} per actor round trip", started.elapsed() / ROUNDS);
    arbiter.stop();
}

//! The `--since` and `--until` values: a duration before now, a UTC date or an RFC 3339
//! timestamp, resolved to milliseconds since the Unix epoch as the stats request carries
//! them.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The accepted forms, appended to every parse error.
const ACCEPTED_FORMS: &str = "use a duration before now (90s, 30m, 24h, 7d, 2w, or combined \
     as 1h30m), a date (2025-06-01, meaning UTC midnight at its start) or an RFC 3339 \
     timestamp (2025-06-01T12:00:00Z, 2025-06-01T14:00:00+02:00)";

const MS_PER_SEC: u64 = 1000;
const SECS_PER_DAY: u64 = 86_400;

/// One end of a time range as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// That many milliseconds before now.
    Ago(u64),
    /// Milliseconds since the Unix epoch.
    At(u64),
}

impl TimeBound {
    /// Returns the bound in milliseconds since the Unix epoch. A duration reaching back past
    /// the epoch resolves to the epoch.
    pub fn resolve(self, now_unix_ms: u64) -> u64 {
        match self {
            TimeBound::Ago(ms) => now_unix_ms.saturating_sub(ms),
            TimeBound::At(unix_ms) => unix_ms,
        }
    }
}

impl FromStr for TimeBound {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let looks_like_date = text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-');
        let parsed = if looks_like_date {
            parse_timestamp(text).map(TimeBound::At)
        } else {
            parse_duration_ms(text).map(TimeBound::Ago)
        };
        parsed.map_err(|reason| format!("{reason}: {ACCEPTED_FORMS}"))
    }
}

/// Milliseconds since the Unix epoch by the system clock, 0 for a clock set before 1970.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses one or more `<number><unit>` parts, units `s`, `m`, `h`, `d` and `w`, into
/// milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("empty time".to_owned());
    }
    let mut total_secs: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!("expected a number at '{rest}'"));
        }
        let (digits, after_digits) = rest.split_at(digits_end);
        let unit_end = after_digits
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_end);
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => SECS_PER_DAY,
            "w" => 7 * SECS_PER_DAY,
            "" => return Err(format!("missing unit after '{digits}'")),
            other => return Err(format!("unknown unit '{other}'")),
        };
        let too_long = || format!("duration '{text}' is too long");
        let count: u64 = digits.parse().map_err(|_| too_long())?;
        total_secs = count
            .checked_mul(unit_secs)
            .and_then(|secs| total_secs.checked_add(secs))
            .ok_or_else(too_long)?;
        rest = after_unit;
    }
    total_secs
        .checked_mul(MS_PER_SEC)
        .ok_or_else(|| format!("duration '{text}' is too long"))
}

/// Parses `YYYY-MM-DD` as UTC midnight, or an RFC 3339 date-time, into milliseconds since
/// the Unix epoch.
fn parse_timestamp(text: &str) -> Result<u64, String> {
    let bytes = text.as_bytes();
    let days = parse_date(&bytes[..10])?;
    let mut secs = i128::from(days) * i128::from(SECS_PER_DAY);
    let mut millis: i128 = 0;

    if bytes.len() > 10 {
        if !matches!(bytes[10], b'T' | b't' | b' ') {
            return Err(format!(
                "expected 'T' between date and time in '{text}', found '{}'",
                char::from(bytes[10])
            ));
        }
        let time = &bytes[11..];
        if time.len() < 8 || time[2] != b':' || time[5] != b':' {
            return Err(format!(
                "expected a time HH:MM:SS after the date in '{text}'"
            ));
        }
        let hour = parse_field(&time[0..2], "hour", 0..=23)?;
        let minute = parse_field(&time[3..5], "minute", 0..=59)?;
        // RFC 3339 allows a leap second 60, which Unix time has no room for, so it lands on
        // the first second of the next minute.
        let second = parse_field(&time[6..8], "second", 0..=60)?;
        secs += i128::from(hour * 3_600 + minute * 60 + second);

        let mut rest = &time[8..];
        if let Some(fraction) = rest.strip_prefix(b".") {
            let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return Err(format!("expected digits after '.' in '{text}'"));
            }
            // Millisecond precision is all the request carries, so further digits are cut.
            for (position, digit) in fraction[..digits.min(3)].iter().enumerate() {
                millis += i128::from(digit - b'0') * [100, 10, 1][position];
            }
            rest = &fraction[digits..];
        }
        secs -= parse_offset_secs(rest, text)?;
    }

    let unix_ms = secs * i128::from(MS_PER_SEC) + millis;
    if unix_ms < 0 {
        return Err(format!("'{text}' is before 1970-01-01T00:00:00Z"));
    }
    u64::try_from(unix_ms).map_err(|_| format!("'{text}' is too far in the future"))
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
fn parse_date(bytes: &[u8]) -> Result<i64, String> {
    let text = String::from_utf8_lossy(bytes);
    if bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(format!("expected a date YYYY-MM-DD, found '{text}'"));
    }
    let year = parse_field(&bytes[0..4], "year", 0..=9999)?;
    let month = parse_field(&bytes[5..7], "month", 1..=12)?;
    let day = parse_field(&bytes[8..10], "day", 1..=31)?;
    if day > days_in_month(year, month) {
        return Err(format!("day {day} does not exist in {year:04}-{month:02}"));
    }
    Ok(cco_proto::calendar::days_from_civil(
        i64::from(year),
        month,
        day,
    ))
}

/// Parses `Z` or `+HH:MM`/`-HH:MM` into the offset from UTC in seconds, east positive.
fn parse_offset_secs(bytes: &[u8], text: &str) -> Result<i128, String> {
    match bytes {
        [b'Z' | b'z'] => Ok(0),
        [sign @ (b'+' | b'-'), hour @ .., b':', m1, m2] if hour.len() == 2 => {
            let hours = parse_field(hour, "offset hour", 0..=23)?;
            let minutes = parse_field(&[*m1, *m2], "offset minute", 0..=59)?;
            let offset = i128::from(hours * 3_600 + minutes * 60);
            Ok(if *sign == b'-' { -offset } else { offset })
        }
        [] => Err(format!(
            "missing UTC offset in '{text}': end it with Z or an offset such as +02:00"
        )),
        _ => Err(format!(
            "invalid UTC offset '{}' in '{text}': use Z or an offset such as +02:00",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// Parses a fixed-width run of ASCII digits and checks its range.
fn parse_field(
    digits: &[u8],
    name: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "{name} '{}' is not a number",
            String::from_utf8_lossy(digits)
        ));
    }
    let value = digits
        .iter()
        .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
    if !range.contains(&value) {
        return Err(format!(
            "{name} {value} is out of range {}..={}",
            range.start(),
            range.end()
        ));
    }
    Ok(value)
}

fn is_leap_year(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;
    const DAY_MS: u64 = 24 * HOUR_MS;

    fn parse(text: &str) -> Result<TimeBound, String> {
        text.parse()
    }

    #[test]
    fn durations_parse_each_unit() {
        let cases = [
            ("90s", 90_000),
            ("30m", 30 * 60_000),
            ("24h", 24 * HOUR_MS),
            ("7d", 7 * DAY_MS),
            ("2w", 14 * DAY_MS),
            ("0s", 0),
            ("1h30m", HOUR_MS + 30 * 60_000),
            ("1d12h", DAY_MS + 12 * HOUR_MS),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(TimeBound::Ago(ms)), "for '{text}'");
        }
    }

    #[test]
    fn durations_reject_bad_input() {
        let cases = [
            ("", "empty time"),
            ("24", "missing unit after '24'"),
            ("h", "expected a number at 'h'"),
            ("5y", "unknown unit 'y'"),
            ("5 h", "unknown unit ' h'"),
            ("-5h", "expected a number at '-5h'"),
            ("99999999999999999999s", "too long"),
            ("9999999999999999w", "too long"),
        ];
        for (text, reason) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(reason), "for '{text}': {error}");
            assert!(error.contains("RFC 3339"), "for '{text}': {error}");
        }
    }

    #[test]
    fn dates_parse_as_utc_midnight() {
        let cases = [
            ("1970-01-01", 0),
            ("2024-06-01", 1_717_200_000_000),
            ("2000-02-29", 951_782_400_000),
            ("2024-12-31", 1_735_603_200_000),
        ];
        for (text, unix_ms) in cases {
            assert_eq!(parse(text), Ok(TimeBound::At(unix_ms)), "for '{text}'");
        }
    }

    #[test]
    fn dates_reject_impossible_days() {
        let cases = [
            ("2023-02-29", "day 29 does not exist in 2023-02"),
            ("1900-02-29", "day 29 does not exist in 1900-02"),
            ("2024-04-31", "day 31 does not exist in 2024-04"),
            ("2024-13-01", "month 13 is out of range 1..=12"),
            ("2024-00-01", "month 0 is out of range"),
            ("2024-01-00", "day 0 is out of range"),
            ("2024-1a-01", "month '1a' is not a number"),
            ("1969-12-31", "before 1970"),
            ("2024-06-01x", "expected 'T'"),
        ];
        for (text, reason) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(reason), "for '{text}': {error}");
        }
    }

    #[test]
    fn timestamps_parse_with_offsets() {
        let noon = 1_717_200_000_000 + 12 * HOUR_MS;
        let cases = [
            ("2024-06-01T12:00:00Z", noon),
            ("2024-06-01t12:00:00z", noon),
            ("2024-06-01 12:00:00Z", noon),
            ("2024-06-01T14:00:00+02:00", noon),
            ("2024-06-01T07:30:00-04:30", noon),
            ("2024-06-01T12:00:00.5Z", noon + 500),
            ("2024-06-01T12:00:00.123456Z", noon + 123),
            ("2024-06-01T23:59:60Z", 1_717_200_000_000 + DAY_MS),
            ("1970-01-01T01:00:00+01:00", 0),
        ];
        for (text, unix_ms) in cases {
            assert_eq!(parse(text), Ok(TimeBound::At(unix_ms)), "for '{text}'");
        }
    }

    #[test]
    fn timestamps_reject_bad_input() {
        let cases = [
            ("2024-06-01T12:00:00", "missing UTC offset"),
            ("2024-06-01T12:00Z", "expected a time HH:MM:SS"),
            ("2024-06-01T24:00:00Z", "hour 24 is out of range"),
            ("2024-06-01T12:60:00Z", "minute 60 is out of range"),
            ("2024-06-01T12:00:00+2:00", "invalid UTC offset '+2:00'"),
            (
                "2024-06-01T12:00:00+02:60",
                "offset minute 60 is out of range",
            ),
            ("2024-06-01T12:00:00.Z", "expected digits after '.'"),
            ("1970-01-01T00:30:00+01:00", "before 1970"),
        ];
        for (text, reason) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(reason), "for '{text}': {error}");
        }
    }

    #[test]
    fn resolve_counts_back_from_now() {
        let now = 10 * DAY_MS;
        assert_eq!(TimeBound::Ago(DAY_MS).resolve(now), 9 * DAY_MS);
        assert_eq!(TimeBound::Ago(20 * DAY_MS).resolve(now), 0);
        assert_eq!(TimeBound::At(5).resolve(now), 5);
    }

    #[test]
    fn civil_round_trips_every_day() {
        // 1970-01-01 through 2199-12-31, which crosses the 2000 and 2100 century rules.
        for days in 0..84_006u64 {
            let (year, month, day) = cco_proto::calendar::civil_from_days(days as i64);
            let back = cco_proto::calendar::days_from_civil(year, month, day);
            assert_eq!(back, days as i64, "for {year}-{month}-{day}");
            assert!(day <= days_in_month(year as u32, month));
        }
        assert_eq!(cco_proto::calendar::civil_from_days(84_005), (2199, 12, 31));
    }
}

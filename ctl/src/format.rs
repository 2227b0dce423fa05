//! Text rendering shared by the commands: money, counts, sizes, durations, instants and
//! tables.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// Nano-US-dollars in one US dollar, the unit of every amount on the wire.
pub const NANO_USD_PER_USD: u64 = 1_000_000_000;

/// Formats an amount of nano-USD exactly, as dollars with thousands separators and with
/// trailing zeros of the fraction trimmed down to two decimals.
///
/// Nothing is rounded, so a nonzero amount never prints as `$0.00`: `1_500_000_000` is
/// `$1.50`, `3_600_000` is `$0.0036` and `1` is `$0.000000001`.
pub fn format_usd(nano_usd: u64) -> String {
    let dollars = nano_usd / NANO_USD_PER_USD;
    let fraction = nano_usd % NANO_USD_PER_USD;
    let mut fraction_digits = format!("{fraction:09}");
    while fraction_digits.len() > 2 && fraction_digits.ends_with('0') {
        fraction_digits.pop();
    }
    format!("${}.{fraction_digits}", format_count(dollars))
}

/// Formats an integer with `,` between groups of three digits.
pub fn format_count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Formats a share from 0 to 1 as a percentage with one decimal.
pub fn format_percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Formats a byte count in binary units with one decimal, such as `1.5 MiB`. Counts below
/// 1 KiB print exactly.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats a number of seconds from the largest nonzero unit down to seconds, such as
/// `2d 0h 5m 1s` or `45s`.
pub fn format_duration_secs(total_secs: u64) -> String {
    let units = [
        (total_secs / 86_400, "d"),
        (total_secs % 86_400 / 3_600, "h"),
        (total_secs % 3_600 / 60, "m"),
        (total_secs % 60, "s"),
    ];
    let first = units
        .iter()
        .position(|(value, _)| *value > 0)
        .unwrap_or(units.len() - 1);
    units[first..]
        .iter()
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Formats milliseconds since the Unix epoch as an RFC 3339 UTC timestamp, with
/// milliseconds only when they are nonzero.
pub fn format_unix_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = cco_proto::calendar::civil_from_days(days as i64);
    let time = format!(
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    );
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{time}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{time}.{millis:03}Z")
    }
}

/// Renders `(label, value)` pairs as lines with the values aligned in one column.
pub fn format_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in fields {
        let label = format!("{label}:");
        text.push_str(&format!("{label:<pad$} {value}\n", pad = width + 1));
    }
    text
}

/// Builds a table with ASCII borders, so it survives any terminal and log file. Columns
/// listed in `numeric_columns` are right-aligned. Cells wrap to the terminal width when
/// stdout is a terminal and never wrap otherwise.
pub fn new_table(header: &[&str], numeric_columns: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for &index in numeric_columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_is_exact_with_two_decimals_minimum() {
        let cases = [
            (0, "$0.00"),
            (1, "$0.000000001"),
            (3_600_000, "$0.0036"),
            (12_345_000, "$0.012345"),
            (10_000_000, "$0.01"),
            (1_500_000_000, "$1.50"),
            (1_000_000_000, "$1.00"),
            (1_234_567_890_123, "$1,234.567890123"),
            (u64::MAX, "$18,446,744,073.709551615"),
        ];
        for (nano_usd, expected) in cases {
            assert_eq!(format_usd(nano_usd), expected, "for {nano_usd} nano-USD");
        }
    }

    #[test]
    fn count_groups_thousands() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_count(value), expected);
        }
    }

    #[test]
    fn percent_has_one_decimal() {
        assert_eq!(format_percent(0.0), "0.0%");
        assert_eq!(format_percent(0.25), "25.0%");
        assert_eq!(format_percent(1.0 / 3.0), "33.3%");
        assert_eq!(format_percent(1.0), "100.0%");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn duration_starts_at_largest_unit() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m 0s"),
            (3_601, "1h 0m 1s"),
            (86_400, "1d 0h 0m 0s"),
            (2 * 86_400 + 5 * 60 + 1, "2d 0h 5m 1s"),
        ];
        for (secs, expected) in cases {
            assert_eq!(format_duration_secs(secs), expected, "for {secs} s");
        }
    }

    #[test]
    fn unix_ms_formats_as_rfc3339() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(1_717_200_000_000), "2024-06-01T00:00:00Z");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_unix_ms(1_717_245_296_789),
            "2024-06-01T12:34:56.789Z"
        );
    }

    #[test]
    fn fields_align_values() {
        let text = format_fields(&[("pid", "7".to_owned()), ("uptime", "5s".to_owned())]);
        assert_eq!(text, "pid:    7\nuptime: 5s\n");
    }

    #[test]
    fn table_right_aligns_numeric_columns() {
        let mut table = new_table(&["Model", "Requests"], &[1]);
        table.force_no_tty();
        table.add_row(vec!["a", "5"]);
        table.add_row(vec!["longer-model", "12345"]);
        let text = table.to_string();
        assert!(text.contains("| a            |        5 |"), "{text}");
        assert!(text.contains("| longer-model |    12345 |"), "{text}");
    }
}

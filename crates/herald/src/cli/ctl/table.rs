//! What `herald ctl` shows people: aligned tables, `name  value` lists, and numbers in
//! human units (bytes in KiB and MiB, counts with thousands separators, rates per second,
//! durations in seconds, minutes and hours).

use serde_json::Value;

/// A table: a header row, then rows; numeric columns are right-aligned.
#[derive(Debug)]
pub(super) struct Table {
    /// Column titles, upper case.
    headers: Vec<&'static str>,
    /// Which columns hold numbers (right-aligned).
    numeric: Vec<bool>,
    /// The cells, as shown.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a title ending in `>` is right-aligned (the `>` is not
    /// shown).
    pub(super) fn new(columns: &[&'static str]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.trim_end_matches('>')).collect(),
            numeric: columns.iter().map(|c| c.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as columns).
    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns two spaces apart, no trailing spaces.
    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                let pad = " ".repeat(widths[i] - width(cell));
                if i > 0 {
                    line.push_str("  ");
                }
                match self.numeric[i] {
                    true => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    false => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A `name  value` list, names aligned.
pub(super) fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(n, _)| width(n)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(name, value)| format!("{name:<w$}  {value}\n"))
        .collect()
}

/// JSON for scripts: the API's answer as it is, pretty, with a final newline.
pub(super) fn pretty(v: &Value) -> String {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    text.push('\n');
    text
}

/// Display width, counting each character as one column.
fn width(text: &str) -> usize {
    text.chars().count()
}

/// A JSON value as a cell: strings as they are, null as `-`.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => printable(s, 60),
        Value::Bool(b) => yes_no(*b).into(),
        other => other.to_string(),
    }
}

/// `yes` or `no`.
pub(super) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A tenant's name for people: the default tenant (named "") as `(default)`.
pub(super) fn tenant_name(name: &str) -> String {
    match name.is_empty() {
        true => "(default)".into(),
        false => printable(name, 64),
    }
}

/// Text safe for a terminal: control characters escaped, cut at `max` characters with `…`.
pub(super) fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A count with thousands separators: `1,234,567`.
pub(super) fn count(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => separated(n),
        None => cell(v),
    }
}

fn separated(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub(super) fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return cell(v);
    };
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate per second: `0/s`, `12.5/s`, `1.2k/s`.
pub(super) fn rate(v: &Value) -> String {
    let Some(r) = v.as_f64() else {
        return cell(v);
    };
    if r == 0.0 {
        "0/s".into()
    } else if r >= 10_000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else if r.fract() == 0.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// Bytes a second: `0 B/s`, `1.5 KiB/s`.
pub(super) fn byte_rate(v: &Value) -> String {
    match v.as_f64() {
        Some(r) => format!("{}/s", bytes(&Value::from(r.round() as u64))),
        None => cell(v),
    }
}

/// A duration in seconds: `45 s`, `2 min 5 s`, `3 h 2 min`, `2 d 1 h`.
pub(super) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// The non-zero counters of an object, largest first: `client_disconnect 3, io_error 1`;
/// `none` when all are zero.
pub(super) fn nonzero(v: &Value) -> String {
    let mut set: Vec<(&String, u64)> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, n)| n.as_u64().filter(|n| *n > 0).map(|n| (k, n)))
        .collect();
    if set.is_empty() {
        return "none".into();
    }
    set.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    set.iter()
        .map(|(k, n)| format!("{k} {}", separated(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_text_left_and_numbers_right() {
        let mut t = Table::new(&["CLIENT ID", "SUBS>", "USER"]);
        t.row(vec!["a".into(), "1".into(), "-".into()]);
        t.row(vec!["sensor-17".into(), "1,024".into(), "alice".into()]);
        assert_eq!(
            t.render(),
            "CLIENT ID   SUBS  USER\n\
             a              1  -\n\
             sensor-17  1,024  alice\n"
        );
    }

    #[test]
    fn fields_align_their_names() {
        assert_eq!(
            fields(&[("health", "ok".into()), ("connections", "3".into())]),
            "health       ok\nconnections  3\n"
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(count(&json!(0)), "0");
        assert_eq!(count(&json!(999)), "999");
        assert_eq!(count(&json!(1234567)), "1,234,567");
        assert_eq!(bytes(&json!(0)), "0 B");
        assert_eq!(bytes(&json!(1023)), "1023 B");
        assert_eq!(bytes(&json!(1536)), "1.5 KiB");
        assert_eq!(bytes(&json!(3 * 1024 * 1024)), "3.0 MiB");
        assert_eq!(rate(&json!(0.0)), "0/s");
        assert_eq!(rate(&json!(12.5)), "12.5/s");
        assert_eq!(rate(&json!(40.0)), "40/s");
        assert_eq!(rate(&json!(25000.0)), "25.0k/s");
        assert_eq!(byte_rate(&json!(2048.0)), "2.0 KiB/s");
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(120), "2 min");
        assert_eq!(duration(125), "2 min 5 s");
        assert_eq!(duration(3600), "1 h");
        assert_eq!(duration(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(duration(2 * 86_400 + 3600), "2 d 1 h");
    }

    #[test]
    fn cells_are_safe_for_a_terminal() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(true)), "yes");
        assert_eq!(cell(&json!("")), "\"\"");
        assert_eq!(cell(&json!("a\nb\u{1b}[31m")), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(tenant_name(""), "(default)");
    }

    #[test]
    fn only_nonzero_counters_largest_first() {
        assert_eq!(nonzero(&json!({"a": 0, "b": 0})), "none");
        assert_eq!(
            nonzero(&json!({"io_error": 1, "client_disconnect": 1234, "x": 0})),
            "client_disconnect 1,234, io_error 1"
        );
    }
}

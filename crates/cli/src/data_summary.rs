//! Numbers and data summaries in words, as `data stats` and `train` print
//! them: "1,234,567", the rows of each event type, a time range.

use sasrec_data::FilterReport;

/// The rows of each event type read: "view 12,601, cart 2,962, purchase 1,806".
pub fn event_counts(report: &FilterReport) -> String {
    let counts: Vec<String> = report
        .events_read
        .iter()
        .map(|(name, rows)| format!("{name} {}", thousands(*rows)))
        .collect();
    counts.join(", ")
}

/// A time range in words: "2023-01-01 00:00:00 UTC to 2023-03-01 ... (59 days)".
pub fn time_range((first, last): (i64, i64)) -> String {
    const DAY: f64 = 86_400e6;
    let days = (last - first) as f64 / DAY;
    let span = if days >= 2.0 {
        format!("{} days", thousands(days.round() as usize))
    } else {
        format!("{:.1} hours", days * 24.0)
    };
    format!(
        "{} to {} ({span})",
        sasrec_data::format_micros(first),
        sasrec_data::format_micros(last)
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

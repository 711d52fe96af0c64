//! Text from files and users, made safe to put in an error message.

/// Seconds as `42s`, `3m 05s` or `1h 02m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `text` cut to at most `max_chars` characters, the middle giving way to an
/// ellipsis (the end of a message often says what was expected), with
/// control characters escaped: an error message quoting a value stays one
/// short line, whatever the value holds.
pub fn bounded(text: &str, max_chars: usize) -> String {
    let escape = |chars: &mut dyn Iterator<Item = char>| -> String {
        chars
            .map(|c| {
                if c.is_control() {
                    c.escape_default().collect()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    if text.chars().nth(max_chars).is_none() {
        return escape(&mut text.chars());
    }
    let tail = max_chars / 3;
    let head = max_chars - tail;
    let mut end: Vec<char> = text.chars().rev().take(tail).collect();
    end.reverse();
    format!(
        "{}…{}",
        escape(&mut text.chars().take(head)),
        escape(&mut end.into_iter())
    )
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn cuts_long_text_and_escapes_control_characters() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdefghij", 6), "abcd…ij");
        assert_eq!(bounded("a\nb\u{0}c", 10), "a\\nb\\u{0}c");
        assert_eq!(bounded(&"x".repeat(1 << 20), 40).chars().count(), 41);
        let message = format!(
            "invalid type: string \"{}\", expected usize",
            "x".repeat(5000)
        );
        assert!(bounded(&message, 90).ends_with("xxx\", expected usize"));
    }
}

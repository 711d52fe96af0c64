//! Text from files and users, made safe to put in an error message.

/// `text` cut to at most `max_chars` characters (an ellipsis marks the cut),
/// with control characters escaped: an error message quoting a value stays
/// one short line, whatever the value holds.
pub fn bounded(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
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

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn cuts_long_text_and_escapes_control_characters() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdefghij", 4), "abcd…");
        assert_eq!(bounded("a\nb\u{0}c", 10), "a\\nb\\u{0}c");
        assert_eq!(bounded(&"x".repeat(1 << 20), 40).chars().count(), 41);
    }
}

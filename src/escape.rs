//! The one way user-controlled text (ids, field values, header names, line samples, `CURRENT`,
//! paths from a manifest) is shown in a message or the report: control characters escaped
//! (`\t`, `\r`, `\u{1b}`), so a hostile input cannot drive the terminal or garble a line.

/// `s` with every control character escaped as Rust's `escape_debug` writes it.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Bytes as text (invalid UTF-8 shown as U+FFFD), escaped like [`escape`].
pub fn escape_bytes(b: &[u8]) -> String {
    escape(&String::from_utf8_lossy(b))
}

/// Up to 200 bytes of an input line for a message, trailing spaces dropped, escaped.
pub fn sample(line: &[u8]) -> String {
    escape(String::from_utf8_lossy(&line[..line.len().min(200)]).trim_end())
}

/// A whole message for the terminal: [`escape`] except line breaks, which messages use for
/// their hint lines. The last line of defence, applied where recflow prints an error.
pub fn for_terminal(msg: &str) -> String {
    msg.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain é"), "plain é");
        assert_eq!(escape("a\x1b[2Jb\r\t\0"), "a\\u{1b}[2Jb\\r\\t\\0");
        assert_eq!(escape_bytes(b"1\r65\xff"), "1\\r65\u{fffd}");
        assert_eq!(sample(b"x\x07  "), "x\\u{7}");
        assert_eq!(for_terminal("a\x1b\nb\r"), "a\\u{1b}\nb\\r");
        let long = vec![b'a'; 300];
        assert_eq!(sample(&long).len(), 200);
    }
}

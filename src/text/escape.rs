//! Text that others wrote, made safe to print on an operator's terminal. A worker's `STATUS=`
//! line, an error a server sent, an event's fields: any of them may hold escape sequences that set
//! the window title, move the cursor over earlier rows, or hide what follows. `controls` writes
//! every control character (C0, DEL, C1) and every bidirectional override or isolate as a visible
//! escape (`\x1b`, `\u{202e}`), so the text shows what was sent and does nothing to the terminal;
//! `json` does the same for a JSON value, keeping it valid JSON. Both leave other text (accents,
//! CJK, emoji, backslashes) as it is, and escaping twice changes nothing more.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// Whether `c` would act on a terminal instead of showing: a control character, or one that
/// reorders what follows it (the "Trojan Source" overrides and isolates).
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that `acts_on_terminal` written as an escape: `\n`, `\r`, `\t`,
/// `\xHH` below U+0100, `\u{HHHH}` above.
pub fn controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts_on_terminal(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `value` as one line of JSON that holds no character acting on a terminal: serde_json already
/// escapes C0 controls inside strings; DEL, C1 and the bidi controls (valid raw in JSON) become
/// `\uHHHH` too. Parsing the line gives `value` back.
pub fn json(value: &Value) -> String {
    let line = value.to_string();
    if !line.chars().any(acts_on_terminal) {
        return line;
    }
    // Outside strings the compact form has no character but ASCII punctuation, digits and
    // letters: every one found is inside a string, where `\uHHHH` stands for it.
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if acts_on_terminal(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(controls("serving 12 req/s"), "serving 12 req/s");
        assert!(matches!(controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            controls("\u{1b}]0;owned\u{7}\u{1b}[2K\rok"),
            "\\x1b]0;owned\\x07\\x1b[2K\\rok"
        );
        assert_eq!(controls("a\nb\tc\u{0}"), "a\\nb\\tc\\x00");
        assert_eq!(controls("del\u{7f} csi\u{9b}"), "del\\x7f csi\\x9b");
        assert_eq!(controls("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(controls("é 漢字 🦀 C:\\x"), "é 漢字 🦀 C:\\x");
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = controls("\u{1b}[31mred\u{9b}\u{2066}");
        assert_eq!(controls(&once), once);
        assert!(!once.chars().any(acts_on_terminal));
    }

    #[test]
    fn json_stays_json_and_loses_what_acts_on_a_terminal() {
        let value = json!({"status": "\u{1b}]0;x\u{7}\u{7f}\u{85}\u{202e}é", "n": 1});
        let line = json(&value);
        assert!(!line.chars().any(acts_on_terminal), "{line}");
        assert!(line.contains("\\u001b") && line.contains("\\u007f") && line.contains("\\u202e"));
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
        assert_eq!(json(&json!({"a": "b"})), r#"{"a":"b"}"#);
    }
}

//! How rohrpost messages look as text: the one place that writes them.
//!
//! Replies are compact JSON with keys in the order `id`, `type`, `error`,
//! `data`, each left out when absent. Ids are carried as raw JSON so that they
//! go back exactly as the client sent them (big integers, `"123"` as a string,
//! `1.50` as written). The host uses these functions for its own error
//! replies, so every frame on the wire comes from the same code.

use std::borrow::Cow;

/// Writes a rohrpost message. `id` and `data` are raw JSON text (already
/// valid); `kind` and `error` are plain strings, escaped here.
pub fn write_message(
    id: Option<&str>,
    kind: Option<&str>,
    error: Option<&str>,
    data: Option<&str>,
) -> String {
    // Room for the keys and punctuation of all four parts, so that an
    // answer without escapes is written without growing.
    let mut out = String::with_capacity(
        40 + id.map_or(0, str::len)
            + kind.map_or(0, str::len)
            + error.map_or(0, str::len)
            + data.map_or(0, str::len),
    );
    out.push('{');
    let mut first = true;
    let mut key = |out: &mut String, name: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if let Some(id) = id {
        key(&mut out, "id");
        out.push_str(&compact_json(id));
    }
    if let Some(kind) = kind {
        key(&mut out, "type");
        push_json_string(&mut out, kind);
    }
    if let Some(error) = error {
        key(&mut out, "error");
        push_json_string(&mut out, error);
    }
    if let Some(data) = data {
        key(&mut out, "data");
        out.push_str(&compact_json(data));
    }
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Removes insignificant whitespace from valid JSON text without touching
/// anything else (numbers stay exactly as written). Borrows when there is
/// nothing to remove, which is the common case.
pub fn compact_json(raw: &str) -> Cow<'_, str> {
    let needs_work = {
        let mut in_string = false;
        let mut escaped = false;
        raw.bytes().any(|b| {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                false
            } else if b == b'"' {
                in_string = true;
                false
            } else {
                matches!(b, b' ' | b'\n' | b'\r' | b'\t')
            }
        })
    };
    if !needs_work {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            out.push(c);
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_protocol_order_and_absent_parts_left_out() {
        assert_eq!(
            write_message(Some("1"), Some("pong"), None, Some("{\"a\":1}")),
            r#"{"id":1,"type":"pong","data":{"a":1}}"#
        );
        assert_eq!(
            write_message(None, None, Some("bad \"x\"\n"), None),
            r#"{"error":"bad \"x\"\n"}"#
        );
        assert_eq!(
            write_message(Some("\"a\""), Some("t"), Some("e"), None),
            r#"{"id":"a","type":"t","error":"e"}"#
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\u{1}b\u{7f}é");
        assert_eq!(s, "\"a\\u0001b\u{7f}é\"");
    }

    #[test]
    fn compaction_keeps_strings_and_numbers() {
        assert_eq!(compact_json("[1, \"a b\" ,\n 1.50]"), "[1,\"a b\",1.50]");
        assert_eq!(compact_json(r#"{ "k\" ": 2 }"#), r#"{"k\" ":2}"#);
        assert!(matches!(compact_json("123"), Cow::Borrowed(_)));
    }
}

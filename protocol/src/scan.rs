//! An ordinary frame's `id`, `type` and `data` read in one pass, without
//! serde_json; and a plugin's message checked to be a JSON object the same
//! way.
//!
//! Why: read through serde_json (a raw value per field, then the second
//! pass that checks nesting, containers and escapes) the envelope was the
//! largest part of the server's own work per ping: about 260 ns of its
//! 1.3 µs of user time on the 2-core machine (docs/benchmarks.md). Most
//! frames are small objects of plain strings, numbers and nested data.
//! This reads those and gives up on anything else: a `\u` escape, a
//! number with an exponent, a bound reached, anything that is not JSON.
//! A frame it gives up on is read by the full parse, which has the exact
//! error texts. It accepts nothing the full parse rejects, and where it
//! accepts, it finds the same parts (tested against the full parse).

/// The raw text of the top-level fields the host looks at, read here or
/// by serde_json; the last of duplicate keys wins, in both.
#[derive(Debug, Default)]
pub(crate) struct Parts<'a> {
    pub id: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub data: Option<&'a str>,
}

/// Levels of nesting read here; deeper frames go to the full parse (whose
/// limit is higher).
const MAX_DEPTH: usize = 32;

/// Bytes a number may take here; longer ones go to the full parse.
const MAX_NUMBER: usize = 40;

/// The parts of `frame`, a JSON object, when it is one this reader knows
/// to be valid and holds at most `max_containers` arrays and objects;
/// `None` for the full parse to decide.
pub(crate) fn parts(frame: &str, max_containers: usize) -> Option<Parts<'_>> {
    let mut scan = Scan::new(frame, max_containers);
    let mut parts = Parts::default();
    scan.enter(b'{')?;
    scan.space();
    if scan.peek()? == b'}' {
        // No fields: the full parse says which one is missing.
        return None;
    }
    scan.items(b'}', |scan| {
        let (key, start) = scan.member()?;
        let raw = frame.get(start..scan.at)?;
        match key {
            b"\"id\"" => parts.id = Some(raw),
            b"\"type\"" => parts.kind = Some(raw),
            b"\"data\"" => parts.data = Some(raw),
            _ => {}
        }
        Some(())
    })?;
    scan.at_end().then_some(parts)
}

/// Whether `text` is one JSON object this reader knows to be valid (as
/// deep and with as many containers as this reader reads); `None` for the
/// full parse to decide.
pub(crate) fn object(text: &str) -> Option<()> {
    let mut scan = Scan::new(text, usize::MAX);
    scan.object()?;
    scan.at_end().then_some(())
}

/// Where the reader is in the frame, and how deep and how many containers
/// it has entered.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
    containers: usize,
    max_containers: usize,
}

impl<'a> Scan<'a> {
    /// A reader at the first thing in `text` that is not whitespace.
    fn new(text: &'a str, max_containers: usize) -> Self {
        let mut scan = Scan {
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
            containers: 0,
            max_containers,
        };
        scan.space();
        scan
    }

    /// Whether nothing but whitespace is left.
    fn at_end(&mut self) -> bool {
        self.space();
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// Skips JSON's whitespace.
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Takes `open`, an array's or an object's, within the bounds.
    fn enter(&mut self, open: u8) -> Option<()> {
        self.expect(open)?;
        self.depth += 1;
        self.containers += 1;
        (self.depth <= MAX_DEPTH && self.containers <= self.max_containers).then_some(())
    }

    /// One value, whatever its kind; its text is what the reader passed.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(),
            b'[' => self.array(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A string without `\u` escapes and control characters, quotes
    /// included.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        self.expect(b'"')?;
        loop {
            match self.next()? {
                b'"' => return self.bytes.get(start..self.at),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// An object's key and where its value starts; the value read.
    fn member(&mut self) -> Option<(&'a [u8], usize)> {
        let key = self.string()?;
        self.space();
        self.expect(b':')?;
        self.space();
        let start = self.at;
        self.value()?;
        Some((key, start))
    }

    /// The items of an array or an object, each read by `item`, up to
    /// and with its `close`.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.space();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.space();
            match self.next()? {
                b',' => self.space(),
                b if b == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn object(&mut self) -> Option<()> {
        self.enter(b'{')?;
        self.items(b'}', |scan| scan.member().map(|_| ()))?;
        self.depth -= 1;
        Some(())
    }

    fn array(&mut self) -> Option<()> {
        self.enter(b'[')?;
        self.items(b']', Self::value)?;
        self.depth -= 1;
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not followed by an exponent.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        let ends_well = !matches!(self.peek(), Some(b'e' | b'E' | b'0'..=b'9'));
        (ends_well && self.at - start <= MAX_NUMBER).then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_bounded, parse_full, MAX_CONTAINERS};

    use super::{object, parts};

    /// Whatever the frame, reading it here first answers exactly as the
    /// full parse does.
    fn same(frame: &str, max_containers: usize) {
        assert_eq!(
            parse_bounded(frame, max_containers),
            parse_full(frame, max_containers),
            "{frame:?}"
        );
    }

    #[test]
    fn ordinary_frames_are_read_here_as_the_full_parse_reads_them() {
        for frame in [
            r#"{"id":1,"type":"ping","data":{"p":"xxxxxxxxxxxxxxxx"}}"#,
            r#" { "type" : "ping" , "id" : "a\"b" , "data" : [1, -2.5, true, false, null, {}, []] } "#,
            r#"{"id":9007199254740993,"type":"t","data":"x\\y\/z\n","other":{"a":[{"b":0}]}}"#,
            r#"{"id":1,"type":"ping","id":2,"data":1,"data":"é"}"#,
            r#"{"id":-0.0,"type":"p\"ing"}"#,
        ] {
            assert!(parts(frame, MAX_CONTAINERS).is_some(), "{frame:?}");
            same(frame, MAX_CONTAINERS);
        }
    }

    #[test]
    fn what_this_reader_does_not_know_goes_to_the_full_parse() {
        for frame in [
            "",
            "   ",
            "{}",
            "42",
            "[1]",
            r#"{"id":1,"type":"\u0070ing"}"#,
            r#"{"id":1e3,"type":"ping"}"#,
            r#"{"id":01,"type":"ping"}"#,
            r#"{"id":1,"type":"ping",}"#,
            r#"{"id":1,"type":"ping"} x"#,
            "{\"id\":1,\"type\":\"pi\u{1}ng\"}",
            r#"{"id":1,"type":"ping","data":"\x"}"#,
            r#"{"id":tru,"type":"ping"}"#,
            r#"{"id":1 "type":"ping"}"#,
            r#"{"id":1,"type":"ping","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        ] {
            assert!(parts(frame, MAX_CONTAINERS).is_none(), "{frame:?}");
            same(frame, MAX_CONTAINERS);
        }
        let nested = r#"{"id":1,"type":"t","data":[[1],[2]]}"#;
        assert!(parts(nested, 3).is_none());
        same(nested, 3);
        assert!(parts(nested, 4).is_some());
        same(nested, 4);
    }

    #[test]
    fn objects_are_told_as_serde_json_tells_them() {
        let mut frames = Frames(0x2545_f491_4f6c_dd1d);
        let mut read_here = 0;
        for _ in 0..20_000 {
            let text = frames.frame();
            let full = text.starts_with('{')
                && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            assert_eq!(crate::is_json_object(&text), full, "{text:?}");
            read_here += usize::from(object(&text).is_some());
        }
        assert!(read_here > 2_000, "{read_here}");
    }

    /// A small generator of frames: valid envelopes with random values, and
    /// random runs of JSON's tokens and of the bytes that break it.
    struct Frames(u64);

    impl Frames {
        fn below(&mut self, n: usize) -> usize {
            // xorshift64
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// The next frame: an object, now and then cut short or with a
        /// byte that does not belong.
        fn frame(&mut self) -> String {
            let mut frame = String::new();
            self.object(&mut frame, 0);
            let at = self.below(frame.len() + 1);
            if frame.is_char_boundary(at) {
                match self.below(8) {
                    0 => frame.truncate(at),
                    1 => frame.insert(at, [',', ':', '}', ']', '"', '\\'][self.below(6)]),
                    _ => {}
                }
            }
            frame
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            const LEAVES: &[&str] = &[
                "0",
                "-1",
                "12.5",
                "-0.25",
                "true",
                "false",
                "null",
                r#""""#,
                r#""x""#,
                r#""a\"b""#,
                r#""\n\t\/""#,
                r#""é""#,
            ];
            // Rarer: what this reader leaves to the full parse, valid or not.
            const ODD: &[&str] = &[
                "1e5",
                "01",
                "-",
                "1.",
                "nul",
                r#""\u0041""#,
                r#""\ud800""#,
                r#""\q""#,
                "\"\u{7}\"",
                "\"",
                "x",
            ];
            match self.below(if depth > 3 { 1 } else { 4 }) {
                0 if self.below(16) == 0 => out.push_str(ODD[self.below(ODD.len())]),
                0 => out.push_str(LEAVES[self.below(LEAVES.len())]),
                1 => {
                    out.push('[');
                    for i in 0..self.below(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(out, depth + 1);
                    }
                    out.push(']');
                }
                _ => self.object(out, depth + 1),
            }
        }

        fn object(&mut self, out: &mut String, depth: usize) {
            const KEYS: &[&str] = &[r#""id""#, r#""type""#, r#""data""#, r#""x""#, r#""i\"d""#];
            const SPACE: &[&str] = &["", "", " ", "\n\t\r", "", "", " ", "\u{a0}"];
            out.push('{');
            for i in 0..self.below(5) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(SPACE[self.below(SPACE.len())]);
                out.push_str(KEYS[self.below(KEYS.len())]);
                out.push(':');
                out.push_str(SPACE[self.below(SPACE.len())]);
                self.value(out, depth);
            }
            out.push('}');
        }
    }

    #[test]
    fn generated_frames_are_answered_as_the_full_parse_answers_them() {
        let mut frames = Frames(0x9e37_79b9_7f4a_7c15);
        let mut read_here = 0;
        for _ in 0..50_000 {
            let frame = frames.frame();
            for max in [MAX_CONTAINERS, 2] {
                read_here += usize::from(parts(&frame, max).is_some());
                same(&frame, max);
            }
        }
        // The generator does make frames this reader knows.
        assert!(read_here > 5_000, "{read_here}");
    }
}

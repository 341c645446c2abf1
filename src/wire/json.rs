//! Where one JSON value ends, for the metadata of a hub's offers.
//!
//! A peer of a hub is offered ten thousand feeds, each with a small metadata object such as
//! `{"length":100,"byte_length":102400,"name":"p3-f2"}`, and keeps each one's text as it
//! came. Finding where each value ends through serde_json (a raw value per entry) was a
//! tenth of the instructions of reading a manifest. This scanner checks the same grammar in
//! one pass over the bytes and allocates nothing; what it does not accept (including
//! nesting deeper than [`MAX_DEPTH`]) the caller hands to serde_json, which decides and says
//! what is wrong.
//!
//! It does not check UTF-8: the caller checks the text it keeps, and everything else in a
//! manifest is ASCII that is checked byte by byte.

/// Nesting deeper than this is left to serde_json (which allows 128).
pub(crate) const MAX_DEPTH: usize = 32;

/// One JSON value at the start of some text, as [`value`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its length in bytes.
    pub len: usize,
    /// Whether whitespace inside it breaks the line (`\n` or `\r`; a string cannot hold
    /// either unescaped).
    pub multiline: bool,
}

/// The JSON value at the start of `text` (no whitespace before it), or `None` if there is
/// none there or it nests deeper than [`MAX_DEPTH`]. Whatever follows the value is not
/// looked at: `1,` and `1}` are both a value of length 1.
pub(crate) fn value(text: &[u8]) -> Option<Found> {
    let mut scan = Scan {
        text,
        at: 0,
        multiline: false,
    };
    scan.value(0)?;
    Some(Found {
        len: scan.at,
        multiline: scan.multiline,
    })
}

struct Scan<'a> {
    text: &'a [u8],
    at: usize,
    multiline: bool,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        self.at += usize::from(found);
        found
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.text.get(self.at..)?.starts_with(word).then(|| {
            self.at += word.len();
        })
    }

    fn space(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.multiline = true,
                _ => return,
            }
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.members(depth, b'}', true),
            b'[' => self.members(depth, b']', false),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object (`named`: each member is `"name": value`) or an array, up to `close`.
    fn members(&mut self, depth: usize, close: u8, named: bool) -> Option<()> {
        if depth == MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.space();
        if self.eat(close) {
            return Some(());
        }
        loop {
            if named {
                self.string()?;
                self.space();
                if !self.eat(b':') {
                    return None;
                }
                self.space();
            }
            self.value(depth + 1)?;
            self.space();
            if self.eat(close) {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.space();
        }
    }

    fn string(&mut self) -> Option<()> {
        if !self.eat(b'"') {
            return None;
        }
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some(()),
                b'\\' => match self.peek()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                    b'u' => {
                        let hex = self.text.get(self.at + 1..self.at + 5)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.at += 5;
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            // A leading zero stands alone; a digit after it is not read, and the caller,
            // finding no `,` or `}` there, hands the text to serde_json.
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let from = self.at;
        self.digits();
        (self.at > from).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json reads as one raw value from the start of `text`, and its length.
    fn serde_len(text: &[u8]) -> Option<usize> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let raw =
            <&serde_json::value::RawValue as serde::Deserialize>::deserialize(&mut de).ok()?;
        Some(raw.get().len())
    }

    #[test]
    fn reads_what_a_hub_writes() {
        let meta = br#"{"length":100,"byte_length":102400,"name":"p3-f2"},"#;
        let found = value(meta).unwrap();
        assert_eq!(found.len, meta.len() - 1);
        assert!(!found.multiline);
    }

    #[test]
    fn every_kind_of_value() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12",
            "-3.25e+10",
            "1E5",
            "0.5",
            r#""""#,
            r#""a\"b\\c\/\b\f\n\r\t\u00e9\uD83D""#,
            "\"caf\u{e9} \u{1f600}\"",
            "[]",
            "{}",
            "[1, [2 ,{\"a\" : [ ]}], \"x\"]",
            "{\"a\":{\"b\":{\"c\":[null]}}}",
        ] {
            let found = value(text.as_bytes()).unwrap_or_else(|| panic!("{text} is JSON"));
            assert_eq!(found.len, text.len(), "{text}");
            assert_eq!(serde_len(text.as_bytes()), Some(text.len()), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            "nul",
            "True",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "\"open",
            "\"tab\there\"",
            r#""\x""#,
            r#""\u12G4""#,
            r#""\u12""#,
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{1:2}",
            "{'a':1}",
            "[",
            "}",
        ] {
            assert_eq!(value(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn a_line_break_inside_a_value_is_told() {
        let found = value(b"{\"a\":\n1}").unwrap();
        assert_eq!(found.len, 8);
        assert!(found.multiline);
        assert!(value(b"[1,\r2]").unwrap().multiline);
        assert!(!value(b"[1,\t2]").unwrap().multiline);
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(value(ok.as_bytes()).map(|f| f.len), Some(ok.len()));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(value(deep.as_bytes()), None);
        let deeper = "[".repeat(100_000);
        assert_eq!(value(deeper.as_bytes()), None);
    }

    /// JSON values as serde_json writes them, compact or pretty.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every value serde_json writes is read whole, with what follows it left alone.
        #[test]
        fn reads_every_value_serde_json_writes(v in json_value(), pretty in any::<bool>()) {
            let mut text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let len = text.len();
            text.push_str(",\"next\"");
            let found = value(text.as_bytes()).expect("serde_json's own output");
            prop_assert_eq!(found.len, len);
            prop_assert_eq!(found.multiline, text[..len].contains('\n'));
        }

        /// Whatever the scanner accepts, serde_json reads as one value of the same length:
        /// text a manifest's reader keeps as metadata is always JSON.
        #[test]
        fn accepts_only_what_serde_json_reads(
            text in prop::collection::vec(
                prop::sample::select(b"{}[]\":,0123456789-+.eEtrufalsn \n\\u/abcdef\t\x01".to_vec()),
                0..40,
            )
        ) {
            if let Some(found) = value(&text) {
                if std::str::from_utf8(&text[..found.len]).is_ok() {
                    prop_assert_eq!(serde_len(&text[..found.len]), Some(found.len));
                }
            }
        }

        /// A value serde_json reads is found with the same length, unless it nests deeper
        /// than the scanner goes.
        #[test]
        fn finds_what_serde_json_finds(
            text in prop::collection::vec(
                prop::sample::select(b"{}[]\":,019-.etrufalsn \\u".to_vec()),
                0..24,
            )
        ) {
            // serde_json skips space before a value; a manifest's reader asks for none.
            let spaced = text.first().is_some_and(|b| b" \n".contains(b));
            if let Some(len) = serde_len(&text).filter(|_| !spaced) {
                let found = value(&text);
                prop_assert_eq!(found.map(|f| f.len), Some(len));
            }
        }
    }
}

//! Reading `{"orders":[...]}`, the format of the Azure sample's `orders.json`, block by
//! block: the frame (`{"orders":[`, the commas, `]}`) is matched by hand a token at a time,
//! each element's extent found by its brackets and quotes, and the element handed over as
//! it is written (whoever takes it checks that it is JSON). Memory holds a block and at
//! most one element, however much whitespace is around them; an element over
//! [`MAX_ORDER_BYTES`] stops the read. Anything else — a file that is not JSON, another
//! frame, an element that is not JSON — is read once more from its start by serde_json
//! ([`Elements::failure`]), so that every error is serde_json's own, with its line and
//! column in the file.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::source::{Digest, Input, MAX_ORDER_BYTES};

/// The key of the one field of the file's object, as it must be written.
const KEY: &[u8] = b"\"orders\"";

/// What comes next in the file, whitespace apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// `{`.
    Open,
    /// [`KEY`].
    Key,
    /// `:`.
    Colon,
    /// `[`.
    Array,
    /// The first element, or `]`.
    First,
    /// An element (after a comma).
    Element,
    /// `,` or `]`.
    More,
    /// `}`, then only whitespace.
    Close,
    /// Only whitespace.
    Rest,
    /// Nothing: the file was read whole.
    Done,
}

/// The elements of a file's `orders` array, a block at a time.
pub struct Elements {
    input: Box<dyn Input>,
    path: PathBuf,
    /// Bytes read at once.
    block: usize,
    /// The bytes read and not handed over yet, from `buf[pos]` on.
    buf: Vec<u8>,
    pos: usize,
    /// Bytes of the file before `buf`.
    behind: u64,
    next: Next,
    eof: bool,
    hasher: Option<Sha256>,
    count: u64,
}

impl Elements {
    /// Reads `input` (the file at `path`) from its start, hashing what it reads when
    /// `digest` says so.
    pub fn new(input: Box<dyn Input>, path: PathBuf, block: usize, digest: bool) -> Self {
        Self {
            input,
            path,
            block,
            buf: Vec::new(),
            pos: 0,
            behind: 0,
            next: Next::Open,
            eof: false,
            hasher: digest.then(Sha256::new),
            count: 0,
        }
    }

    /// Reads the next block, calling `on_element` with each complete element (its
    /// position from 0 and its bytes), which answers whether it is JSON. Returns whether
    /// more of the file remains.
    pub fn next_block(
        &mut self,
        mut on_element: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<bool, Error> {
        self.fill()?;
        while self.next != Next::Done {
            // Whitespace is passed over wherever it is, never kept.
            let blank = self.buf[self.pos..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace());
            self.pos += blank.count();
            let rest = &self.buf[self.pos..];
            let (step, next) = match (self.next, rest.first()) {
                (Next::Rest, None) if self.eof => (0, Next::Done),
                (_, None) if !self.eof => break,
                (Next::Open, None) => return Err(Error::Empty(self.path.clone())),
                (Next::Open, Some(b'{')) => (1, Next::Key),
                (Next::Key, _) if rest.starts_with(KEY) => (KEY.len(), Next::Colon),
                (Next::Key, _) if KEY.starts_with(rest) && !self.eof => break,
                (Next::Colon, Some(b':')) => (1, Next::Array),
                (Next::Array, Some(b'[')) => (1, Next::First),
                (Next::First | Next::More, Some(b']')) => (1, Next::Close),
                (Next::More, Some(b',')) => (1, Next::Element),
                (Next::First | Next::Element, Some(_)) => {
                    match value_len(rest).or(self.eof.then_some(rest.len())) {
                        None if rest.len() <= MAX_ORDER_BYTES => break,
                        Some(len) if len <= MAX_ORDER_BYTES => {
                            if !on_element(self.count, &rest[..len]) {
                                return Err(self.failure());
                            }
                            self.count += 1;
                            (len, Next::More)
                        }
                        _ => return Err(self.too_large()),
                    }
                }
                (Next::Close, Some(b'}')) => (1, Next::Rest),
                _ => return Err(self.failure()),
            };
            (self.pos, self.next) = (self.pos + step, next);
        }
        self.behind += self.pos as u64;
        self.buf.drain(..self.pos);
        self.pos = 0;
        Ok(self.next != Next::Done)
    }

    /// Goes back to the start of the file, for another pass (not hashed).
    pub fn rewind(&mut self) -> Result<(), Error> {
        self.input
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.io_error(e))?;
        let input = std::mem::replace(&mut self.input, Box::new(std::io::empty()));
        *self = Self::new(input, self.path.clone(), self.block, false);
        Ok(())
    }

    /// How many elements were handed over.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of every byte read, once the file is read whole (zeros when not hashed).
    pub fn digest(&self) -> Digest {
        self.hasher
            .clone()
            .map_or_else(Digest::default, |hasher| hasher.finalize().into())
    }

    /// Reads another block, or up to the end of the file.
    fn fill(&mut self) -> Result<(), Error> {
        let old = self.buf.len();
        self.buf.reserve(self.block);
        let mut block = (&mut self.input).take(self.block as u64);
        let read = block.read_to_end(&mut self.buf);
        self.eof = read.map_err(|e| self.io_error(e))? < self.block;
        let new = &self.buf[old..];
        if let Some(hasher) = &mut self.hasher {
            hasher.update(new);
        }
        Ok(())
    }

    /// Why the file is not what it should be, as serde_json says it reading the file from
    /// its start up to a little past where this reader stopped.
    fn failure(&mut self) -> Error {
        let upto = self.behind + self.buf.len() as u64 + MAX_ORDER_BYTES as u64;
        if let Err(error) = self.input.seek(SeekFrom::Start(0)) {
            return self.io_error(error);
        }
        let reader = BufReader::new((&mut self.input).take(upto));
        let mut deserializer = serde_json::Deserializer::from_reader(reader);
        let read = (&mut deserializer)
            .deserialize_map(Top)
            .and_then(|Frame { orders: Each }| deserializer.end());
        let message = match read {
            Err(error) if error.is_io() => return self.io_error(std::io::Error::other(error)),
            Err(error) => error.to_string(),
            Ok(()) => r#"the file must be {"orders": [...]}, its key written plainly"#.to_owned(),
        };
        Error::Malformed(self.path.clone(), message)
    }

    fn too_large(&self) -> Error {
        Error::OrderTooLarge(self.path.clone(), self.count, MAX_ORDER_BYTES)
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io(self.path.clone(), source)
    }
}

/// The length of the JSON value at the start of `bytes` as far as its brackets and quotes
/// tell, or `None` when `bytes` ends before it does (a number may go on in the next block).
fn value_len(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut at) = (0usize, 0);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                // To the closing quote, skipping escaped characters, a run at a time.
                at += 1;
                loop {
                    at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
                    if bytes[at] == b'"' {
                        break;
                    }
                    at += 2;
                }
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(at),
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b',' if depth == 0 => return Some(at),
            _ if depth == 0 && byte.is_ascii_whitespace() => return Some(at),
            _ => {}
        }
        at += 1;
    }
    None
}

/// The frame as serde_json reads it, for its errors: `{"orders": [...]}`, the key once,
/// every element JSON (a value, not ignored, so that its strings are checked as UTF-8).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    orders: Each,
}

/// Every element of `orders` read as a value, and dropped: one at a time in memory.
struct Each;

impl<'de> Deserialize<'de> for Each {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(Each)
    }
}

impl<'de> Visitor<'de> for Each {
    type Value = Each;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("`orders` to be an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Each, A::Error> {
        while seq.next_element::<serde_json::Value>()?.is_some() {}
        Ok(Each)
    }
}

/// Reads a [`Frame`] from an object only (a derived struct would take an array too).
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Frame;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"an object of the form {"orders": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Frame, A::Error> {
        Frame::deserialize(MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;

    /// Every element's text, or the error, parsing `content` in blocks of `block` bytes.
    fn parse(content: &[u8], block: usize) -> Result<Vec<String>, String> {
        let input = Box::new(std::io::Cursor::new(content.to_vec()));
        let mut elements = Elements::new(input, "orders.json".into(), block, true);
        let mut out = Vec::new();
        let result = loop {
            let more = elements.next_block(|i, json| {
                assert_eq!(i, out.len() as u64);
                let Ok(raw) = serde_json::from_slice::<&RawValue>(json) else {
                    return false;
                };
                out.push(raw.get().to_owned());
                true
            });
            match more {
                Ok(true) => {}
                Ok(false) => break Ok(out),
                Err(error) => break Err(error.to_string()),
            }
        };
        if let Ok(read) = &result {
            let digest: Digest = Sha256::digest(content).into();
            assert_eq!(elements.digest(), digest);
            assert_eq!(elements.count(), read.len() as u64);
        }
        result
    }

    fn whole(content: &[u8]) -> Result<Vec<String>, String> {
        parse(content, 1 << 20)
    }

    #[test]
    fn whitespace_is_not_kept_in_memory_wherever_it_is() {
        let spaces = " ".repeat(1 << 20);
        let content =
            format!("{spaces}{{{spaces}\"orders\":[1,{spaces}2{spaces}]{spaces}}}{spaces}");
        let input = Box::new(std::io::Cursor::new(content.into_bytes()));
        let mut elements = Elements::new(input, "orders.json".into(), 1024, false);
        let mut seen = 0;
        while elements
            .next_block(|_, _| {
                seen += 1;
                true
            })
            .unwrap()
        {
            assert!(
                elements.buf.len() <= 1024,
                "{} bytes kept",
                elements.buf.len()
            );
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn elements_are_handed_over_as_written() {
        let content = br#" {"orders" : [ {"orderid":1}, 2 ,"x",[3,{"y":"]}"}]] } "#;
        let expected = vec![r#"{"orderid":1}"#, "2", r#""x""#, r#"[3,{"y":"]}"}]"#];
        for block in [1, 2, 3, 5, 8, 13, 1 << 20] {
            assert_eq!(parse(content, block).unwrap(), expected, "block {block}");
        }
        let numbers = br#"{"orders":[123456,1.5e3,-7]}"#;
        for block in 1..numbers.len() {
            assert_eq!(
                parse(numbers, block).unwrap(),
                vec!["123456", "1.5e3", "-7"]
            );
        }
    }

    #[test]
    fn errors_are_serde_jsons_with_their_place_in_the_file() {
        let cases: [(&[u8], &str); 12] = [
            (b"orders", "expected value at line 1 column 1"),
            (br#"[{"orderid":1}]"#, r#"{"orders": [...]}"#),
            (
                br#"{"order":[]}"#,
                "unknown field `order`, expected `orders`",
            ),
            (br#"{}"#, "missing field `orders`"),
            (br#"{"orders":{}}"#, "expected `orders` to be an array"),
            (
                br#"{"orders":[1,2,],"x":1}"#,
                "trailing comma at line 1 column 16",
            ),
            (
                b"{\"orders\":[1,\n2,\n3]}\n{",
                "trailing characters at line 4 column 1",
            ),
            (
                b"{\"orders\":[1,\n22,\n3]]}",
                "expected `,` or `}` at line 3 column 3",
            ),
            (
                b"{\"orders\":[1,2],\"orders\":[]}",
                "duplicate field `orders` at line 1 column",
            ),
            (b"{\"orders\":[1,\"\xff\"]}", "invalid unicode code point"),
            (
                br#"{"orders":[{"orderid":1,"customer":"A","price":1},"#,
                "EOF while parsing",
            ),
            (br#"{"ord\u0065rs":[1]}"#, "its key written plainly"),
        ];
        for (content, expected) in cases {
            for block in [1, 3, 7, 1 << 20] {
                let error = parse(content, block).unwrap_err();
                assert!(
                    error.contains(expected),
                    "{content:?} in blocks of {block}: {error}"
                );
            }
        }
        for (content, block) in [(&b""[..], 1 << 20), (b"  \n", 1), (b"  \n", 1 << 20)] {
            assert_eq!(parse(content, block).unwrap_err(), "orders.json is empty");
        }
    }

    #[test]
    fn an_element_larger_than_the_limit_stops_the_read_early() {
        let huge = "x".repeat(1 << 20);
        let content = format!(r#"{{"orders":[1,{{"customer":"{huge}"}}]}}"#);
        for block in [1024, 1 << 20, 4 << 20] {
            let error = parse(content.as_bytes(), block).unwrap_err();
            assert_eq!(
                error,
                "orders.json: the order at index 1 is larger than 65536 bytes"
            );
        }
        let orders: Vec<String> = (1..=5000)
            .map(|id| format!(r#"{{"orderid":{id},"customer":"C","price":1}}"#))
            .collect();
        let content = format!(r#"{{"orders":[{}]}}"#, orders.join(","));
        assert_eq!(parse(content.as_bytes(), 4096).unwrap().len(), 5000);
    }

    /// A JSON text of an orders file, in pieces that are likely to be cut in odd places.
    fn document() -> impl Strategy<Value = Vec<u8>> {
        let element = prop_oneof![
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?(e-?[0-9])?",
            "\"[a-zé\\\\\"\\],]{0,4}\"",
            Just(r#"{"orderid":12,"customer":"A\"B","price":"1.50"}"#.to_owned()),
            Just("[1,[2,{}]]".to_owned()),
            Just("true".to_owned()),
        ];
        let space = "[ \n\t]{0,2}";
        (
            prop::collection::vec((element, space), 0..8),
            space,
            any::<u8>(),
            any::<u16>(),
        )
            .prop_map(|(elements, tail, damage, at)| {
                let parts: Vec<String> =
                    elements.iter().map(|(e, s)| format!("{s}{e}{s}")).collect();
                let mut text = format!("{{\"orders\":[{}]}}{tail}", parts.join(",")).into_bytes();
                // Now and then a byte is changed, to make the file invalid somewhere.
                if damage < 64 {
                    let at = usize::from(at) % text.len();
                    let bytes = b"{}[],:\"x1 \xff\\";
                    text[at] = bytes[usize::from(damage) % bytes.len()];
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the file holds, reading it in blocks of any size gives the same
        /// elements or the same error as reading it at once, and what serde_json gives.
        #[test]
        fn blocks_of_any_size_read_like_the_whole_and_like_serde_json(content in document(), block in 1usize..24) {
            let read = parse(&content, block);
            prop_assert_eq!(&read, &whole(&content));
            let serde = serde_json::from_slice::<std::collections::HashMap<String, Vec<Box<RawValue>>>>(&content);
            if let Ok(map) = &serde
                && map.len() == 1
                && let Some(orders) = map.get("orders")
            {
                let texts: Vec<String> = orders.iter().map(|raw| raw.get().to_owned()).collect();
                prop_assert_eq!(read, Ok(texts));
            } else {
                prop_assert!(read.is_err(), "{:?}", String::from_utf8_lossy(&content));
            }
        }

        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            prefix in any::<bool>(),
            block in 1usize..24,
        ) {
            let mut content = if prefix { b"{\"orders\":[".to_vec() } else { Vec::new() };
            content.extend(bytes);
            prop_assert_eq!(parse(&content, block), whole(&content));
        }
    }
}

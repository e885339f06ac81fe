//! Parsing `{"orders":[...]}`, the format of the Azure sample's `orders.json`, block by
//! block from memory with serde_json's slice reader, which scans runs of bytes at a time
//! (its `io::Read` path takes one byte per call). Each block is parsed as a JSON document
//! and every complete element of `orders` is handed over as raw JSON. Where a block ends
//! inside the array, the next one continues after the last complete element behind a
//! synthetic `{"orders":[0 ` (its `0` skipped), so that serde_json still checks the whole
//! file's grammar and every error is serde_json's own, with the line and column in the
//! file. Memory holds a block and at most one element; an element over
//! [`MAX_ORDER_BYTES`] stops the read.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::source::{BLOCK_BYTES, Digest, Input, MAX_ORDER_BYTES, read_some};

/// What continues a document after its last complete element. The space keeps the `0`
/// from running into what follows (`0e…` would be read as a number).
const RESUME: &[u8] = br#"{"orders":[0 "#;

/// How much is read at once, and the largest element accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLimits {
    /// Bytes read at once (at least this many are parsed at a time, but for the last).
    pub block: usize,
    /// The most bytes one element may take.
    pub max_element: usize,
}

impl Default for BlockLimits {
    fn default() -> Self {
        Self {
            block: BLOCK_BYTES,
            max_element: MAX_ORDER_BYTES,
        }
    }
}

/// A position in the file, as serde_json counts it.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Bytes from the start.
    offset: u64,
    /// Line number, from 1.
    line: u64,
    /// Offset of the start of that line.
    line_start: u64,
}

impl Position {
    const START: Self = Self {
        offset: 0,
        line: 1,
        line_start: 0,
    };

    fn advance(&mut self, bytes: &[u8]) {
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        if lines > 0 {
            self.line += lines as u64;
            let last = bytes.iter().rposition(|&b| b == b'\n').unwrap_or_default();
            self.line_start = self.offset + last as u64 + 1;
        }
        self.offset += bytes.len() as u64;
    }
}

/// The elements of a file's `orders` array, a block at a time.
pub struct Elements {
    input: Box<dyn Input>,
    path: PathBuf,
    limits: BlockLimits,
    /// `RESUME` (after the first block) and the file's bytes from `at` on.
    buf: Vec<u8>,
    /// How many bytes at the start of `buf` are `RESUME`.
    prefix: usize,
    /// Where `buf[prefix]` is in the file.
    at: Position,
    eof: bool,
    hasher: Sha256,
    content: bool,
    count: u64,
    done: bool,
}

impl Elements {
    /// Reads `input` (the file at `path`) from its start.
    pub fn new(input: Box<dyn Input>, path: PathBuf, limits: BlockLimits) -> Self {
        Self {
            input,
            path,
            limits,
            buf: Vec::new(),
            prefix: 0,
            at: Position::START,
            eof: false,
            hasher: Sha256::new(),
            content: false,
            count: 0,
            done: false,
        }
    }

    /// Reads and parses the next block, calling `on_element` with each complete element
    /// and its position from 0. Returns whether more of the file remains.
    pub fn next_block(
        &mut self,
        mut on_element: impl FnMut(u64, &RawValue),
    ) -> Result<bool, Error> {
        if self.done {
            return Ok(false);
        }
        let mut wanted = self.limits.block;
        loop {
            self.fill(wanted)?;
            let mut walk = Walk {
                on_element: &mut on_element,
                start: self.buf.as_ptr() as usize,
                len: self.buf.len(),
                complete: self.eof,
                skip_first: self.prefix > 0,
                max_element: self.limits.max_element,
                count: self.count,
                last_end: 0,
                delivered: 0,
                need_more: false,
                too_large: false,
            };
            let result = {
                let mut de = serde_json::Deserializer::from_slice(&self.buf);
                (&mut walk).deserialize(&mut de).and_then(|()| de.end())
            };
            let (last_end, delivered, need_more) = (walk.last_end, walk.delivered, walk.need_more);
            self.count += delivered;
            let error = match result {
                Ok(()) => {
                    self.done = true;
                    self.rest_is_whitespace()?;
                    return Ok(false);
                }
                Err(_) if walk.too_large => return Err(self.too_large()),
                Err(error) => error,
            };
            // Where the data ends, serde_json cannot tell an incomplete file from one that
            // is read only in part (`1.` may be the start of `1.5`): read on and see.
            let cut_short = !self.eof
                && (need_more || error.is_eof() || self.offset_of(&error) + 1 >= self.buf.len());
            if !cut_short {
                return Err(self.failure(&error));
            }
            if delivered > 0 {
                self.resume_after(last_end);
                return Ok(true);
            }
            if self.buf.len() - self.prefix > self.limits.block + self.limits.max_element {
                return Err(self.too_large());
            }
            wanted = self.buf.len() - self.prefix + self.limits.block;
        }
    }

    /// The handle it reads, for another pass.
    pub fn into_input(self) -> Box<dyn Input> {
        self.input
    }

    /// How many elements were handed over.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of every byte read, once the last block is parsed.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finalize().into()
    }

    /// Reads until `buf` holds `wanted` bytes of the file or the file ends.
    fn fill(&mut self, wanted: usize) -> Result<(), Error> {
        while !self.eof && self.buf.len() - self.prefix < wanted {
            let old = self.buf.len();
            self.buf.resize(self.prefix + wanted, 0);
            let n =
                read_some(&mut self.input, &mut self.buf[old..]).map_err(|source| Error::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.buf.truncate(old + n);
            let new = &self.buf[old..];
            self.hasher.update(new);
            self.content = self.content || new.iter().any(|b| !b.is_ascii_whitespace());
            self.eof = n == 0;
        }
        Ok(())
    }

    /// Drops what was parsed up to `end` and continues the document behind `RESUME`.
    fn resume_after(&mut self, end: usize) {
        self.at.advance(&self.buf[self.prefix..end]);
        self.buf.splice(..end, RESUME.iter().copied());
        self.prefix = RESUME.len();
    }

    /// After the document: the rest of the file must be whitespace.
    fn rest_is_whitespace(&mut self) -> Result<(), Error> {
        loop {
            self.at.advance(&self.buf[self.prefix..]);
            self.buf.clear();
            self.prefix = 0;
            if self.eof {
                return Ok(());
            }
            self.fill(self.limits.block)?;
            if let Some(i) = self.buf.iter().position(|b| !b.is_ascii_whitespace()) {
                let mut at = self.at;
                at.advance(&self.buf[..i]);
                // serde_json points just past the first trailing character.
                let column = at.offset + 1 - at.line_start;
                return Err(self.malformed(format!(
                    "trailing characters at line {} column {column}",
                    at.line
                )));
            }
        }
    }

    /// Where in `buf` serde_json's `error` points.
    fn offset_of(&self, error: &serde_json::Error) -> usize {
        let line_start = match error.line() {
            0 | 1 => 0,
            line => self
                .buf
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .nth(line - 2)
                .map_or(self.buf.len(), |(i, _)| i + 1),
        };
        line_start + error.column()
    }

    fn failure(&self, error: &serde_json::Error) -> Error {
        if !self.content {
            return Error::Empty(self.path.clone());
        }
        let text = error.to_string();
        if error.line() == 0 {
            return self.malformed(text);
        }
        // serde_json counts in `buf`; say where that is in the file.
        let offset = self.offset_of(error).clamp(self.prefix, self.buf.len());
        let mut at = self.at;
        at.advance(&self.buf[self.prefix..offset]);
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let what = text.strip_suffix(&suffix).unwrap_or(&text);
        self.malformed(format!(
            "{what} at line {} column {}",
            at.line,
            at.offset - at.line_start
        ))
    }

    fn malformed(&self, message: String) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            message,
        }
    }

    fn too_large(&self) -> Error {
        Error::OrderTooLarge {
            path: self.path.clone(),
            index: self.count,
            limit: self.limits.max_element,
        }
    }
}

/// Visits `{"orders": [...]}` in one block, handing each complete element over.
struct Walk<'f, F> {
    on_element: &'f mut F,
    /// Address and length of the block, to tell where an element ends in it.
    start: usize,
    len: usize,
    /// Whether the block holds the rest of the file.
    complete: bool,
    /// Whether the first element is `RESUME`'s.
    skip_first: bool,
    max_element: usize,
    /// Elements handed over before this block.
    count: u64,
    /// Where the last element taken ended, in the block.
    last_end: usize,
    delivered: u64,
    need_more: bool,
    too_large: bool,
}

impl<'de, F: FnMut(u64, &RawValue)> DeserializeSeed<'de> for &mut Walk<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(u64, &RawValue)> Visitor<'de> for &mut Walk<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object of the form {"orders": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "orders" {
                return Err(de::Error::custom(format!(
                    r#"unknown top-level field `{key}`: the file must be {{"orders": [...]}}"#
                )));
            }
            if seen {
                return Err(de::Error::custom(
                    "the field `orders` appears more than once",
                ));
            }
            seen = true;
            map.next_value_seed(OrdersArray(&mut *self))?;
        }
        if !seen {
            return Err(de::Error::custom(
                r#"the field `orders` is missing: the file must be {"orders": [...]}"#,
            ));
        }
        Ok(())
    }
}

struct OrdersArray<'a, 'f, F>(&'a mut Walk<'f, F>);

impl<'de, F: FnMut(u64, &RawValue)> DeserializeSeed<'de> for OrdersArray<'_, '_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(u64, &RawValue)> Visitor<'de> for OrdersArray<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`orders` to be an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let walk = self.0;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let text = raw.get();
            let end = text.as_ptr() as usize - walk.start + text.len();
            // An element that ends where the block does may go on in the next one.
            if !walk.complete && end >= walk.len {
                walk.need_more = true;
                return Err(de::Error::custom("the block ends here"));
            }
            walk.last_end = end;
            if walk.skip_first {
                walk.skip_first = false;
                continue;
            }
            if text.len() > walk.max_element {
                walk.too_large = true;
                return Err(de::Error::custom("element too large"));
            }
            (walk.on_element)(walk.count + walk.delivered, raw);
            walk.delivered += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every element's text, or the error, parsing `content` in blocks of `block` bytes.
    fn parse(content: &[u8], block: usize) -> Result<Vec<String>, String> {
        let limits = BlockLimits {
            block,
            max_element: MAX_ORDER_BYTES,
        };
        let mut elements = Elements::new(
            Box::new(std::io::Cursor::new(content.to_vec())),
            "orders.json".into(),
            limits,
        );
        let mut out = Vec::new();
        let result = loop {
            match elements.next_block(|i, raw| {
                assert_eq!(i, out.len() as u64);
                out.push(raw.get().to_owned());
            }) {
                Ok(true) => {}
                Ok(false) => break Ok(out),
                Err(error) => break Err(error.to_string()),
            }
        };
        if result.is_ok() {
            let digest: Digest = Sha256::digest(content).into();
            assert_eq!(elements.digest(), digest);
            assert_eq!(
                elements.count(),
                result.as_ref().map_or(0, |v| v.len() as u64)
            );
        }
        result
    }

    fn whole(content: &[u8]) -> Result<Vec<String>, String> {
        parse(content, 1 << 20)
    }

    #[test]
    fn elements_are_handed_over_as_written() {
        let content = br#" {"orders" : [ {"orderid":1}, 2 ,"x",[3,{"y":[]}] ] } "#;
        let expected = vec![r#"{"orderid":1}"#, "2", r#""x""#, r#"[3,{"y":[]}]"#];
        for block in [1, 2, 3, 5, 8, 13, 1 << 20] {
            assert_eq!(parse(content, block).unwrap(), expected, "block {block}");
        }
    }

    #[test]
    fn a_number_cut_by_the_end_of_a_block_is_read_whole() {
        let content = br#"{"orders":[123456,1.5e3,-7]}"#;
        for block in 1..content.len() {
            assert_eq!(
                parse(content, block).unwrap(),
                vec!["123456", "1.5e3", "-7"]
            );
        }
    }

    #[test]
    fn errors_are_serde_jsons_with_their_place_in_the_file() {
        let cases: [(&[u8], &str); 10] = [
            (b"orders", "expected value at line 1 column 1"),
            (br#"[{"orderid":1}]"#, r#"{"orders": [...]}"#),
            (br#"{"order":[]}"#, "unknown top-level field `order`"),
            (br#"{}"#, "the field `orders` is missing"),
            (br#"{"orders":{}}"#, "`orders` to be an array"),
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
                "appears more than once at line 1 column",
            ),
            (b"{\"orders\":[1,\"\xff\"]}", "invalid unicode code point"),
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
    }

    #[test]
    fn a_file_cut_off_is_refused_at_its_end() {
        let error = whole(br#"{"orders":[{"orderid":1,"customer":"A","price":1},"#).unwrap_err();
        assert!(
            error.contains("is not a valid orders file: EOF while parsing"),
            "{error}"
        );
    }

    #[test]
    fn empty_and_blank_files_are_called_empty() {
        for content in [&b""[..], b"  \n"] {
            assert_eq!(whole(content).unwrap_err(), "orders.json is empty");
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
    }

    #[test]
    fn many_elements_of_normal_size_are_not_too_large() {
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
            "\"[a-zé\\\\\"]{0,4}\"",
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
                    let bytes = b"{}[],:\"x1 \xff";
                    text[at] = bytes[usize::from(damage) % bytes.len()];
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the file holds, reading it in blocks of any size gives the same elements
        /// or the same error, position included, as reading it at once.
        #[test]
        fn blocks_of_any_size_read_like_the_whole(content in document(), block in 1usize..24) {
            prop_assert_eq!(parse(&content, block), whole(&content));
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

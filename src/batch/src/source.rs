//! Reading the orders file: `{"orders":[...]}`, the format of the Azure sample's
//! `orders.json`. The file is streamed, never held in memory: a first pass checks that it
//! is well-formed, hashes it and finds repeated order ids; a second pass yields validated
//! chunks. A file that is not valid JSON sends nothing at all.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::order::{Order, OrderError, parse_order};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// The orders bundled into the binary: the default data file.
pub const BUNDLED: &[u8] = include_bytes!("../orders.json");

/// The most bytes one order may take in the file. A valid order is a few hundred bytes;
/// the limit keeps memory bounded whatever a file holds (one element is parsed at a time).
pub const MAX_ORDER_BYTES: u64 = 64 * 1024;

/// A SHA-256 digest of a file or of a chunk's request body.
pub type Digest = [u8; 32];

/// Where orders are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrdersSource {
    /// `orders.json`, compiled into the binary.
    Bundled,
    /// A file on disk.
    File(PathBuf),
}

impl fmt::Display for OrdersSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundled => f.write_str("bundled orders.json"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl OrdersSource {
    fn open(&self) -> Result<Box<dyn Read + Send>, FileError> {
        match self {
            Self::Bundled => Ok(Box::new(BUNDLED)),
            Self::File(path) => File::open(path)
                .map(|file| Box::new(file) as Box<dyn Read + Send>)
                .map_err(|source| FileError::Io {
                    path: path.clone(),
                    source,
                }),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Bundled => Path::new("orders.json"),
            Self::File(path) => path,
        }
    }
}

/// Why the file as a whole cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// It is empty.
    #[error("{0} is empty")]
    Empty(PathBuf),
    /// It is not `{"orders":[...]}` in valid JSON.
    #[error("{path} is not a valid orders file: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (line and column).
        message: String,
    },
    /// One of its orders is larger than [`MAX_ORDER_BYTES`].
    #[error("{path}: the order at index {index} is larger than {limit} bytes")]
    OrderTooLarge {
        /// The file.
        path: PathBuf,
        /// Position of the order, from 0.
        index: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// It changed between the two passes over it.
    #[error("{0} changed while it was being read")]
    Changed(PathBuf),
    /// The run was cancelled while reading.
    #[error("reading stopped: the run was cancelled")]
    Stopped,
}

/// What the first pass learns about a file.
#[derive(Debug, Clone)]
pub struct Scan {
    /// SHA-256 of its bytes.
    pub digest: Digest,
    /// How many orders it holds.
    pub orders: u64,
    /// Order ids that appear more than once.
    pub repeated_ids: HashSet<i64>,
}

/// A run of consecutive orders from the file, sent in one request when all are valid.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position of the chunk in the file, from 0.
    pub index: usize,
    /// Position of its first order in the file, from 0.
    pub first: usize,
    /// Its valid orders.
    pub orders: Vec<Order>,
    /// Problems with its other orders, positions counted in the file.
    pub errors: Vec<OrderError>,
    /// How many orders it holds, valid or not.
    pub len: usize,
}

/// First pass: reads the whole file once, checking its shape and hashing it. `keep_going`
/// is asked before each order; answering `false` stops with [`FileError::Stopped`].
pub fn scan(source: &OrdersSource, keep_going: impl Fn() -> bool) -> Result<Scan, FileError> {
    #[derive(Deserialize)]
    struct Id {
        orderid: Option<serde_json::Value>,
    }
    let mut ids: Vec<i64> = Vec::new();
    let (orders, digest) = stream(source, |raw| {
        if !keep_going() {
            return false;
        }
        if let Ok(Id { orderid: Some(id) }) = serde_json::from_str::<Id>(raw.get())
            && let Some(id) = id.as_i64()
        {
            ids.push(id);
        }
        true
    })?;
    ids.sort_unstable();
    let repeated_ids = ids
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect();
    Ok(Scan {
        digest,
        orders,
        repeated_ids,
    })
}

/// Second pass: validates the orders and hands them to `emit` in chunks of `chunk_size`.
/// Orders whose id is in `repeated_ids` are invalid. `emit` returning `false` stops the
/// reading with [`FileError::Stopped`]. Fails with [`FileError::Changed`] when the file's
/// digest is no longer `expected`.
pub fn read_chunks(
    source: &OrdersSource,
    chunk_size: usize,
    expected: &Digest,
    repeated_ids: &HashSet<i64>,
    mut emit: impl FnMut(Chunk) -> bool,
) -> Result<(), FileError> {
    let mut chunk = Chunk::empty(0, 0, chunk_size);
    let mut position = 0usize;
    let mut stopped = false;
    let (_, digest) = stream(source, |raw| {
        match parse_order(position, raw) {
            Ok(order) if repeated_ids.contains(&order.orderid()) => {
                chunk.errors.push(OrderError::new(
                    position,
                    Some(order.orderid()),
                    "orderid",
                    "appears more than once in the file",
                ));
            }
            Ok(order) => chunk.orders.push(order),
            Err(mut errors) => chunk.errors.append(&mut errors),
        }
        chunk.len += 1;
        position += 1;
        if chunk.len == chunk_size {
            let next = Chunk::empty(chunk.index + 1, position, chunk_size);
            if !emit(std::mem::replace(&mut chunk, next)) {
                stopped = true;
                return false;
            }
        }
        true
    })?;
    if stopped {
        return Err(FileError::Stopped);
    }
    if &digest != expected {
        return Err(FileError::Changed(source.path().to_owned()));
    }
    if chunk.len > 0 && !emit(chunk) {
        return Err(FileError::Stopped);
    }
    Ok(())
}

impl Chunk {
    fn empty(index: usize, first: usize, capacity: usize) -> Self {
        Self {
            index,
            first,
            orders: Vec::with_capacity(capacity.min(1024)),
            errors: Vec::new(),
            len: 0,
        }
    }
}

/// Parses the file, calling `on_order` with each element of `orders` until it answers
/// `false`. Returns the number of orders and the digest of the bytes read.
fn stream(
    source: &OrdersSource,
    on_order: impl FnMut(&RawValue) -> bool,
) -> Result<(u64, Digest), FileError> {
    let path = source.path().to_owned();
    let since_last_order = Rc::new(Cell::new(0));
    let mut hashing = HashingReader {
        inner: source.open()?,
        hasher: Sha256::new(),
        content: false,
        since_last_order: Rc::clone(&since_last_order),
        too_large: false,
    };
    let mut visitor = OrdersVisitor {
        on_order,
        count: 0,
        stopped: false,
        since_last_order,
    };
    let result = {
        let mut de = serde_json::Deserializer::from_reader(BufReader::new(&mut hashing));
        (&mut visitor).deserialize(&mut de).and_then(|()| de.end())
    };
    if visitor.stopped {
        return Err(FileError::Stopped);
    }
    if let Err(error) = result {
        if hashing.too_large {
            return Err(FileError::OrderTooLarge {
                path,
                index: visitor.count,
                limit: MAX_ORDER_BYTES,
            });
        }
        if error.is_io() {
            return Err(FileError::Io {
                path,
                source: io::Error::other(error),
            });
        }
        if !hashing.content {
            return Err(FileError::Empty(path));
        }
        return Err(FileError::Malformed {
            path,
            message: error.to_string(),
        });
    }
    Ok((visitor.count, hashing.hasher.finalize().into()))
}

/// Hashes what passes through, notes whether anything but whitespace did, and fails once
/// more than [`MAX_ORDER_BYTES`] (plus a read-ahead buffer) pass without an order ending.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    content: bool,
    since_last_order: Rc<Cell<u64>>,
    too_large: bool,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let pending = self.since_last_order.get() + n as u64;
        self.since_last_order.set(pending);
        if pending > MAX_ORDER_BYTES + READ_AHEAD {
            self.too_large = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "order too large",
            ));
        }
        self.hasher.update(&buf[..n]);
        if !self.content {
            self.content = buf[..n].iter().any(|b| !b.is_ascii_whitespace());
        }
        Ok(n)
    }
}

/// What the buffered reader may have read beyond the order being parsed.
const READ_AHEAD: u64 = 8 * 1024;

/// Visits `{"orders": [...]}`, handing each order over as raw JSON.
struct OrdersVisitor<F> {
    on_order: F,
    count: u64,
    stopped: bool,
    since_last_order: Rc<Cell<u64>>,
}

impl<'de, F: FnMut(&RawValue) -> bool> DeserializeSeed<'de> for &mut OrdersVisitor<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(&RawValue) -> bool> Visitor<'de> for &mut OrdersVisitor<F> {
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

struct OrdersArray<'a, F>(&'a mut OrdersVisitor<F>);

impl<'de, F: FnMut(&RawValue) -> bool> DeserializeSeed<'de> for OrdersArray<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&RawValue) -> bool> Visitor<'de> for OrdersArray<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`orders` to be an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            self.0.since_last_order.set(0);
            if !(self.0.on_order)(&raw) {
                self.0.stopped = true;
                return Err(de::Error::custom("stopped"));
            }
            self.0.count += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(content: &[u8]) -> (tempfile::NamedTempFile, OrdersSource) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        let source = OrdersSource::File(file.path().to_owned());
        (file, source)
    }

    fn chunks(source: &OrdersSource, size: usize) -> Result<Vec<Chunk>, FileError> {
        let scan = scan(source, || true)?;
        let mut out = Vec::new();
        read_chunks(source, size, &scan.digest, &scan.repeated_ids, |c| {
            out.push(c);
            true
        })?;
        Ok(out)
    }

    #[test]
    fn bundled_orders_are_all_valid() {
        let scan = scan(&OrdersSource::Bundled, || true).unwrap();
        assert_eq!(scan.orders, 10);
        assert!(scan.repeated_ids.is_empty());
        let all = chunks(&OrdersSource::Bundled, 4).unwrap();
        assert_eq!(all.iter().map(|c| c.len).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert!(all.iter().all(|c| c.errors.is_empty()));
        assert_eq!(all[2].first, 8);
    }

    #[test]
    fn chunks_keep_bad_orders_with_their_position_in_the_file() {
        let (_f, source) = file(
            br#"{"orders":[{"orderid":1,"customer":"A","price":1},
                           {"orderid":2,"customer":"B","price":-2},
                           {"orderid":3,"customer":"C","price":3}]}"#,
        );
        let all = chunks(&source, 2).unwrap();
        assert_eq!(all[0].orders.len(), 1);
        assert_eq!(all[0].errors[0].index, 1);
        assert_eq!(all[0].errors[0].field, "price");
        assert!(all[1].errors.is_empty());
    }

    #[test]
    fn every_occurrence_of_a_repeated_id_is_invalid() {
        let (_f, source) = file(
            br#"{"orders":[{"orderid":1,"customer":"A","price":1},
                           {"orderid":2,"customer":"B","price":2},
                           {"orderid":1,"customer":"A","price":1}]}"#,
        );
        let all = chunks(&source, 1).unwrap();
        let invalid: Vec<usize> = all
            .iter()
            .filter(|c| !c.errors.is_empty())
            .map(|c| c.index)
            .collect();
        assert_eq!(invalid, vec![0, 2]);
        assert_eq!(
            all[2].errors[0].reason,
            "appears more than once in the file"
        );
    }

    #[test]
    fn truncated_json_is_refused_with_its_position() {
        let (_f, source) = file(br#"{"orders":[{"orderid":1,"customer":"A","price":1},"#);
        let error = scan(&source, || true).unwrap_err();
        assert!(matches!(error, FileError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains("line 1 column"), "{error}");
    }

    #[test]
    fn empty_and_blank_files_are_called_empty() {
        for content in [&b""[..], b"  \n"] {
            let (_f, source) = file(content);
            assert!(matches!(scan(&source, || true), Err(FileError::Empty(_))));
        }
    }

    #[test]
    fn wrong_shapes_are_explained() {
        let cases: [(&[u8], &str); 5] = [
            (b"orders", "expected value"),
            (br#"[{"orderid":1}]"#, r#"{"orders": [...]}"#),
            (br#"{"order":[]}"#, "unknown top-level field `order`"),
            (br#"{}"#, "the field `orders` is missing"),
            (br#"{"orders":{}}"#, "`orders` to be an array"),
        ];
        for (content, expected) in cases {
            let (_f, source) = file(content);
            let error = scan(&source, || true).unwrap_err().to_string();
            assert!(error.contains(expected), "{content:?}: {error}");
        }
    }

    #[test]
    fn an_order_larger_than_the_limit_stops_the_read_early() {
        let huge = "x".repeat(1 << 20);
        let content = format!(
            r#"{{"orders":[{{"orderid":1,"customer":"A","price":1}},{{"orderid":2,"customer":"{huge}","price":1}}]}}"#
        );
        let (_f, source) = file(content.as_bytes());
        let error = scan(&source, || true).unwrap_err();
        assert!(
            matches!(error, FileError::OrderTooLarge { index: 1, .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("the order at index 1 is larger than 65536 bytes")
        );
    }

    #[test]
    fn many_orders_of_normal_size_are_not_too_large() {
        let orders: Vec<String> = (1..=5000)
            .map(|id| format!(r#"{{"orderid":{id},"customer":"C","price":1}}"#))
            .collect();
        let (_f, source) = file(format!(r#"{{"orders":[{}]}}"#, orders.join(",")).as_bytes());
        assert_eq!(scan(&source, || true).unwrap().orders, 5000);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let (_f, source) =
            file(b"{\"orders\":[{\"orderid\":1,\"customer\":\"\xff\xfe\",\"price\":1}]}");
        let error = scan(&source, || true).unwrap_err();
        assert!(matches!(error, FileError::Malformed { .. }), "{error}");
    }

    #[test]
    fn trailing_content_after_the_object_is_refused() {
        let (_f, source) = file(br#"{"orders":[]} {"orders":[]}"#);
        assert!(matches!(
            scan(&source, || true),
            Err(FileError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let source = OrdersSource::File("/nonexistent/orders.json".into());
        let error = scan(&source, || true).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read /nonexistent/orders.json"),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_changes_between_passes_is_detected() {
        let (_f, source) = file(br#"{"orders":[]}"#);
        let error = read_chunks(&source, 10, &[0; 32], &HashSet::new(), |_| true).unwrap_err();
        assert!(matches!(error, FileError::Changed(_)));
    }

    #[test]
    fn stopping_early_is_reported_as_stopped() {
        let error = scan(&OrdersSource::Bundled, || false).unwrap_err();
        assert!(matches!(error, FileError::Stopped));
        let digest = scan(&OrdersSource::Bundled, || true).unwrap().digest;
        let error = read_chunks(&OrdersSource::Bundled, 1, &digest, &HashSet::new(), |_| {
            false
        })
        .unwrap_err();
        assert!(matches!(error, FileError::Stopped));
    }

    #[test]
    fn the_digest_depends_on_the_content() {
        let (_a, first) = file(br#"{"orders":[]}"#);
        let (_b, second) = file(br#"{"orders": []}"#);
        assert_ne!(
            scan(&first, || true).unwrap().digest,
            scan(&second, || true).unwrap().digest
        );
    }
}

#[cfg(test)]
mod properties {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever bytes a file holds, reading it ends with orders or a file error,
        /// never a panic, and every order read is counted in exactly one chunk.
        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..400), prefix in any::<bool>()) {
            let mut content = if prefix { b"{\"orders\":[".to_vec() } else { Vec::new() };
            content.extend(bytes);
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(&content).unwrap();
            let source = OrdersSource::File(file.path().to_owned());
            if let Ok(scan) = scan(&source, || true) {
                let mut total = 0u64;
                read_chunks(&source, 3, &scan.digest, &scan.repeated_ids, |chunk| {
                    total += chunk.len as u64;
                    true
                }).unwrap();
                prop_assert_eq!(total, scan.orders);
            }
        }
    }
}

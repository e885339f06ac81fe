//! Reading a file into chunks: every order is validated and checked for an id that
//! appears anywhere else in the file before any chunk is handed on, in one pass over a
//! small file and in two over a larger one (see [`prepare`] for what each costs in
//! memory). The file's digest is taken from the bytes parsed; a file that changes between
//! two passes fails the run with [`Error::Changed`]. The work is blocking, done on
//! blocking threads.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::Stream;
use futures_util::stream;
use tokio_util::bytes::BytesMut;

use crate::Error;
use crate::budget::Limits;
use crate::chunks::{Chunk, Chunker, Repeated, repeated};
use crate::decode::{decode, id_of};
use crate::parse::{BlockLimits, Elements};
use crate::source::{Digest, OrdersSource};

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Block size and the largest order.
    pub blocks: BlockLimits,
    /// Files up to this size are parsed once.
    pub one_pass_bytes: u64,
    /// When the chunks of a file parsed once hold more request bodies than this (prices
    /// written with an exponent can grow many times once written out), it is read in two
    /// passes instead.
    pub held_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            blocks: BlockLimits::default(),
            one_pass_bytes: 8 << 20,
            held_bytes: 12 << 20,
        }
    }
}

/// A file ready to be sent.
pub struct Prepared {
    /// The SHA-256 of its bytes.
    pub digest: Digest,
    /// How many orders it holds.
    pub orders: u64,
    /// Its chunks.
    pub feed: Feed,
    /// Room for request bodies to read the next file into, once these chunks are gone.
    pub spare: BytesMut,
}

/// Where the chunks come from.
pub enum Feed {
    /// All made already (a file parsed once).
    Held(VecDeque<Chunk>),
    /// Made one by one on demand (a file parsed twice).
    Streamed(Box<Reader>),
}

/// Validates the file, of about `bytes` bytes, and prepares its chunks within `limits`,
/// writing their request bodies into `spare` when it is large enough (memory that need not
/// be mapped and cleared again). `keep_going` is asked before each block; answering
/// `false` stops with [`Error::Stopped`]. Repeated ids need the whole file before any chunk is sent, so:
/// a small file (at most [`ReadLimits::one_pass_bytes`]) is parsed once, and its chunks,
/// request bodies included, are kept until its end, then marked where ids repeat: about as
/// much memory as the file, plus 8 bytes an order. A larger file is parsed twice: first
/// for its ids (8 bytes an order, up to 16 while the list grows: 16 MB for a million
/// orders), then chunk by chunk as the sender asks for them, holding a block of the file
/// and the chunks on their way.
pub fn prepare(
    source: &OrdersSource,
    bytes: u64,
    limits: &Arc<Limits>,
    read: ReadLimits,
    keep_going: &dyn Fn() -> bool,
    spare: BytesMut,
) -> Result<Prepared, Error> {
    let spare = if bytes <= read.one_pass_bytes {
        match one_pass(source, bytes, limits, read, keep_going, spare)? {
            Ok(prepared) => return Ok(prepared),
            Err(spare) => spare,
        }
    } else {
        spare
    };
    two_passes(source, limits, read, keep_going, spare)
}

/// The file read in one pass, or the room for bodies back when it took too much of it.
fn one_pass(
    source: &OrdersSource,
    bytes: u64,
    limits: &Arc<Limits>,
    read: ReadLimits,
    keep_going: &dyn Fn() -> bool,
    mut spare: BytesMut,
) -> Result<Result<Prepared, BytesMut>, Error> {
    let mut elements = Elements::new(source.open()?, source.path().to_owned(), read.blocks);
    // Room for all the request bodies at once: about the size of the file. A power of two,
    // so that a file of about the same size fits the room the last one had.
    let room = usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(read.held_bytes);
    let room = (room + 64 * 1024).next_power_of_two();
    spare.clear();
    if !spare.try_reclaim(room) {
        spare = BytesMut::with_capacity(room);
    }
    let mut chunker = Chunker::new(Arc::clone(limits), Repeated::FoundAtTheEnd, spare);
    loop {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let more = elements.next_block(|position, raw| {
            chunker.push(decode(position as usize, raw));
        })?;
        if chunker.held_bytes() > read.held_bytes {
            return Ok(Err(chunker.into_chunks().1));
        }
        if !more {
            break;
        }
    }
    chunker.finish();
    let (chunks, spare) = chunker.into_chunks();
    Ok(Ok(Prepared {
        digest: elements.digest(),
        orders: elements.count(),
        feed: Feed::Held(chunks),
        spare,
    }))
}

fn two_passes(
    source: &OrdersSource,
    limits: &Arc<Limits>,
    read: ReadLimits,
    keep_going: &dyn Fn() -> bool,
    spare: BytesMut,
) -> Result<Prepared, Error> {
    let mut elements = Elements::new(source.open()?, source.path().to_owned(), read.blocks);
    let mut ids = Vec::new();
    loop {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let more = elements.next_block(|position, raw| {
            ids.extend(id_of(&decode(position as usize, raw)));
        })?;
        if !more {
            break;
        }
    }
    let digest = elements.digest();
    let reader = Reader {
        source: source.clone(),
        expected: digest,
        elements: Elements::new(source.open()?, source.path().to_owned(), read.blocks),
        chunker: Chunker::new(
            Arc::clone(limits),
            Repeated::Known(repeated(ids)),
            BytesMut::new(),
        ),
        finished: false,
    };
    Ok(Prepared {
        digest,
        orders: elements.count(),
        feed: Feed::Streamed(Box::new(reader)),
        spare,
    })
}

/// The second pass over a large file: chunks on demand.
pub struct Reader {
    source: OrdersSource,
    /// The digest of the first pass: the second must read the same bytes.
    expected: Digest,
    elements: Elements,
    chunker: Chunker,
    finished: bool,
}

impl Reader {
    /// The next chunk, or `None` after the last. Blocks while it parses.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, Error> {
        loop {
            if let Some(chunk) = self.chunker.pop() {
                return Ok(Some(chunk));
            }
            if self.finished {
                return Ok(None);
            }
            let chunker = &mut self.chunker;
            let more = self.elements.next_block(|position, raw| {
                chunker.push(decode(position as usize, raw));
            })?;
            if !more {
                self.chunker.finish();
                verify(&self.source, &self.elements, self.expected)?;
                self.finished = true;
            }
        }
    }
}

impl Feed {
    /// The chunks as a stream; a file error ends it. Parsing happens on blocking threads.
    pub fn into_stream(self) -> impl Stream<Item = Result<Chunk, Error>> + Send {
        stream::unfold(Some(self), |feed| async move {
            match feed? {
                Self::Held(mut chunks) => {
                    let chunk = chunks.pop_front()?;
                    Some((Ok(chunk), Some(Self::Held(chunks))))
                }
                Self::Streamed(mut reader) => {
                    let next = crate::blocking(move || {
                        let next = reader.next_chunk();
                        (next, reader)
                    })
                    .await;
                    match next {
                        Ok((Ok(Some(chunk)), reader)) => {
                            Some((Ok(chunk), Some(Self::Streamed(reader))))
                        }
                        Ok((Ok(None), _)) => None,
                        Ok((Err(error), _)) | Err(error) => Some((Err(error), None)),
                    }
                }
            }
        })
    }
}

fn verify(source: &OrdersSource, elements: &Elements, expected: Digest) -> Result<(), Error> {
    if elements.digest() == expected {
        Ok(())
    } else {
        Err(Error::Changed(source.path().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::mem::take;

    use super::*;
    use crate::budget::DEFAULT_CHUNK_BYTES;
    use crate::chunks::Content;
    use crate::source::{BUNDLED, fingerprint};

    const BUNDLED_BYTES: u64 = BUNDLED.len() as u64;

    fn chunks(read: ReadLimits) -> (u64, Vec<Chunk>) {
        let source = OrdersSource::Bundled;
        let print = fingerprint(&source, &|| true).unwrap();
        let limits = Arc::new(Limits::new(4, DEFAULT_CHUNK_BYTES));
        let prepared = prepare(
            &source,
            print.bytes,
            &limits,
            read,
            &|| true,
            BytesMut::new(),
        )
        .unwrap();
        assert_eq!(
            prepared.digest, print.digest,
            "the digest is of the bytes read"
        );
        let chunks = match prepared.feed {
            Feed::Held(chunks) => chunks.into(),
            Feed::Streamed(mut reader) => {
                std::iter::from_fn(|| reader.next_chunk().unwrap()).collect()
            }
        };
        (prepared.orders, chunks)
    }

    #[test]
    fn the_bundled_orders_are_all_valid_read_in_one_pass_or_two() {
        let two_passes = ReadLimits {
            one_pass_bytes: 0,
            ..ReadLimits::default()
        };
        for read in [ReadLimits::default(), two_passes] {
            let (orders, chunks) = chunks(read);
            assert_eq!(orders, 10);
            let sizes: Vec<usize> = chunks.iter().map(|c| c.len).collect();
            assert_eq!(sizes, vec![4, 4, 2]);
            assert!(
                chunks
                    .iter()
                    .all(|c| matches!(c.content, Content::Sendable(_)))
            );
            assert_eq!(chunks[2].first, 8);
        }
    }

    #[test]
    fn the_room_for_bodies_is_used_again_by_the_next_file() {
        let source = OrdersSource::Bundled;
        let limits = Arc::new(Limits::new(4, DEFAULT_CHUNK_BYTES));
        let first_body = |prepared: &Prepared| match &prepared.feed {
            Feed::Held(chunks) => match &chunks[0].content {
                Content::Sendable(piece) => piece.body.as_ptr(),
                Content::Invalid(_) => panic!("invalid"),
            },
            Feed::Streamed(_) => panic!("read in two passes"),
        };
        let bytes = BUNDLED_BYTES;
        let read = ReadLimits::default();
        let mut first = prepare(&source, bytes, &limits, read, &|| true, BytesMut::new()).unwrap();
        let (at, spare) = (first_body(&first), take(&mut first.spare));
        drop(first);
        let second = prepare(&source, bytes, &limits, read, &|| true, spare).unwrap();
        assert_eq!(first_body(&second), at);
    }

    #[test]
    fn reading_stops_when_told_to() {
        let limits = Arc::new(Limits::new(4, DEFAULT_CHUNK_BYTES));
        let read = prepare(
            &OrdersSource::Bundled,
            0,
            &limits,
            ReadLimits::default(),
            &|| false,
            BytesMut::new(),
        );
        assert!(matches!(read, Err(Error::Stopped)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a file holds, it is read into chunks or refused, never a panic, and
        /// every order read is in exactly one chunk, in one pass or in two.
        #[test]
        fn every_order_read_is_in_exactly_one_chunk(
            orders in proptest::collection::vec(
                "\\{\"orderid\":[0-9]{1,2},\"customer\":\"[a-z]{0,2}\",\"price\":[0-9]\\}|[0-9]|null",
                0..30,
            ),
            size in 1usize..6,
            damage in proptest::option::of(0usize..400),
        ) {
            let mut content = format!(r#"{{"orders":[{}]}}"#, orders.join(",")).into_bytes();
            if let Some(at) = damage.filter(|at| *at < content.len()) {
                content[at] = b'x';
            }
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &content).unwrap();
            let source = OrdersSource::File(file.path().to_owned());
            let bytes = content.len() as u64;
            let two_passes = ReadLimits { one_pass_bytes: 0, ..ReadLimits::default() };
            for read in [ReadLimits::default(), two_passes] {
                let limits = Arc::new(Limits::new(size, DEFAULT_CHUNK_BYTES));
                let spare = BytesMut::new();
                if let Ok(prepared) = prepare(&source, bytes, &limits, read, &|| true, spare) {
                    let chunks: Vec<Chunk> = match prepared.feed {
                        Feed::Held(chunks) => chunks.into(),
                        Feed::Streamed(mut reader) => {
                            std::iter::from_fn(|| reader.next_chunk().unwrap()).collect()
                        }
                    };
                    let mut next = 0;
                    for chunk in &chunks {
                        proptest::prop_assert_eq!(chunk.first, next);
                        next += chunk.len;
                    }
                    proptest::prop_assert_eq!(next as u64, prepared.orders);
                }
            }
        }
    }
}

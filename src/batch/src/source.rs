//! Where the orders come from: the bundled `orders.json` or a file, opened once per run and
//! read through that one handle, rewound between passes, so a file replaced meanwhile
//! cannot mix into the run. Its SHA-256 ([`Digest`]) says whether it changed. Reading is
//! blocking work, done on a blocking thread.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// The orders bundled into the binary: the default data file.
pub const BUNDLED: &[u8] = include_bytes!("../orders.json");

/// The most bytes one order may take in the file. A valid order takes under a kilobyte
/// (`common::wire::largest_order`); the limit bounds what one order can cost to read.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// How much of the file is read at once.
pub const BLOCK_BYTES: usize = 256 * 1024;

/// A SHA-256 digest of a file.
pub type Digest = [u8; 32];

/// What a run reads from: a file, or the bundled bytes.
pub trait Input: Read + Seek + Send {}

impl<T: Read + Seek + Send> Input for T {}

/// Where orders are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrdersSource {
    /// `orders.json`, compiled into the binary.
    Bundled,
    /// A file on disk.
    File(PathBuf),
}

impl OrdersSource {
    /// Opens the source from its start, with its size in bytes.
    pub fn open(&self) -> Result<(Box<dyn Input>, u64), Error> {
        match self {
            Self::Bundled => Ok((Box::new(Cursor::new(BUNDLED)), BUNDLED.len() as u64)),
            Self::File(path) => {
                let file = File::open(path).map_err(|e| self.io_error(e))?;
                let bytes = file.metadata().map_err(|e| self.io_error(e))?.len();
                Ok((Box::new(file), bytes))
            }
        }
    }

    /// The path to name in messages and logs.
    pub fn path(&self) -> &Path {
        match self {
            Self::Bundled => Path::new("bundled orders.json"),
            Self::File(path) => path,
        }
    }

    /// An I/O failure while reading this source.
    pub fn io_error(&self, source: io::Error) -> Error {
        Error::Io(self.path().to_owned(), source)
    }

    /// The SHA-256 of everything `input` holds from where it is, read in blocks without
    /// parsing; `input` is rewound after. `keep_going` is asked before each block:
    /// `false` stops with [`Error::Stopped`].
    pub fn digest(
        &self,
        input: &mut dyn Input,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Digest, Error> {
        let mut hasher = Sha256::new();
        loop {
            if !keep_going() {
                return Err(Error::Stopped);
            }
            let block = &mut (&mut *input).take(BLOCK_BYTES as u64);
            if io::copy(block, &mut hasher).map_err(|e| self.io_error(e))? == 0 {
                break;
            }
        }
        input
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.io_error(e))?;
        Ok(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn digest_of(content: &[u8]) -> Digest {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        let source = OrdersSource::File(file.path().to_owned());
        let (mut input, bytes) = source.open().unwrap();
        assert_eq!(bytes, content.len() as u64);
        source.digest(&mut input, &|| true).unwrap()
    }

    #[test]
    fn the_digest_depends_on_the_content_only() {
        assert_eq!(
            digest_of(br#"{"orders":[]}"#),
            digest_of(br#"{"orders":[]}"#)
        );
        assert_ne!(
            digest_of(br#"{"orders":[]}"#),
            digest_of(br#"{"orders": []}"#)
        );
    }

    #[test]
    fn a_replaced_file_does_not_reach_a_run_that_opened_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.json");
        std::fs::write(&path, "old").unwrap();
        let source = OrdersSource::File(path.clone());
        let (mut input, _) = source.open().unwrap();
        let before = source.digest(&mut input, &|| true).unwrap();
        let replacement = dir.path().join("new.json");
        std::fs::write(&replacement, "new content").unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        assert_eq!(source.digest(&mut input, &|| true).unwrap(), before);
    }

    #[test]
    fn a_missing_file_names_its_path_and_stopping_is_stopped() {
        let source = OrdersSource::File("/nonexistent/orders.json".into());
        let error = source.open().err().unwrap().to_string();
        assert!(
            error.starts_with("cannot read /nonexistent/orders.json"),
            "{error}"
        );
        let (mut input, _) = OrdersSource::Bundled.open().unwrap();
        let stopped = OrdersSource::Bundled.digest(&mut input, &|| false);
        assert!(matches!(stopped, Err(Error::Stopped)));
    }
}

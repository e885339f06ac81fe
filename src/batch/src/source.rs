//! Where the orders come from (the bundled `orders.json` or a file), and a look at them
//! that costs less than reading them: the file's size and time of change ([`Stamp`]), and
//! a SHA-256 fingerprint of its bytes read in blocks without parsing, which tells whether
//! a file whose stamp has not changed is the one last stored completely. Reading is
//! blocking work, done on a blocking thread.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// The orders bundled into the binary: the default data file.
pub const BUNDLED: &[u8] = include_bytes!("../orders.json");

/// The most bytes one order may take in the file. A valid order takes at most about a
/// kilobyte (see [`crate::budget`]); the limit bounds what one order can cost to read.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// How much of the file is read at once.
pub const BLOCK_BYTES: usize = 256 * 1024;

/// A SHA-256 digest of a file.
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
    /// Opens the source for reading from its start.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, Error> {
        match self {
            Self::Bundled => Ok(Box::new(BUNDLED)),
            Self::File(path) => File::open(path)
                .map(|file| Box::new(file) as Box<dyn Read + Send>)
                .map_err(|source| self.io_error(source)),
        }
    }

    /// The path to name in messages.
    pub fn path(&self) -> &Path {
        match self {
            Self::Bundled => Path::new("orders.json"),
            Self::File(path) => path,
        }
    }

    /// An I/O failure while reading this source.
    pub fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.path().to_owned(),
            source,
        }
    }
}

/// A file's size and time of last change: a hint of whether it changed, which decides how
/// a run looks at it first (the file is always judged by its digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was last written, where the file system says.
    pub modified: Option<SystemTime>,
}

impl OrdersSource {
    /// The source's size and time of last change.
    pub fn stamp(&self) -> Result<Stamp, Error> {
        match self {
            Self::Bundled => Ok(Stamp {
                bytes: BUNDLED.len() as u64,
                modified: None,
            }),
            Self::File(path) => {
                let metadata = std::fs::metadata(path).map_err(|e| self.io_error(e))?;
                Ok(Stamp {
                    bytes: metadata.len(),
                    modified: metadata.modified().ok(),
                })
            }
        }
    }
}

/// What the first look at a file finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 of its bytes.
    pub digest: Digest,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Reads the whole source once, hashing it. `keep_going` is asked before each block;
/// answering `false` stops with [`Error::Stopped`].
pub fn fingerprint(
    source: &OrdersSource,
    keep_going: &dyn Fn() -> bool,
) -> Result<Fingerprint, Error> {
    let mut input = source.open()?;
    let mut hasher = Sha256::new();
    let mut block = vec![0; BLOCK_BYTES];
    let mut bytes = 0u64;
    loop {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let n = read_some(&mut input, &mut block).map_err(|e| source.io_error(e))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        bytes += n as u64;
    }
    Ok(Fingerprint {
        digest: hasher.finalize().into(),
        bytes,
    })
}

/// Reads what is available into `buf`, retrying interrupted reads; 0 at the end.
pub fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_fingerprint_depends_on_the_content_only() {
        let write = |content: &[u8]| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(content).unwrap();
            file
        };
        let (a, b, c) = (
            write(br#"{"orders":[]}"#),
            write(br#"{"orders":[]}"#),
            write(br#"{"orders": []}"#),
        );
        let print = |f: &tempfile::NamedTempFile| {
            fingerprint(&OrdersSource::File(f.path().to_owned()), &|| true).unwrap()
        };
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a).digest, print(&c).digest);
        assert_eq!(print(&c).bytes, 14);
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let source = OrdersSource::File("/nonexistent/orders.json".into());
        let error = fingerprint(&source, &|| true).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read /nonexistent/orders.json"),
            "{error}"
        );
    }

    #[test]
    fn stopping_is_reported_as_stopped() {
        let error = fingerprint(&OrdersSource::Bundled, &|| false).unwrap_err();
        assert!(matches!(error, Error::Stopped));
    }
}

//! Why a recording could not be written or read.
use std::{io, path::PathBuf};

/// A result with the recording crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writing or reading a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// The operation, naming the file.
        what: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A file is not a recording this version reads.
    #[error("cannot read recording {}: {reason}", path.display())]
    BadRecording {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the operation that failed.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

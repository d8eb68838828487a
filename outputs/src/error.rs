//! Why an output could not be made.
use std::io;

/// A result with the outputs crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Making an output failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or input is not usable (a bad `--pattern`, a path that is neither a recording
    /// nor a log file).
    #[error("{0}")]
    InvalidArgument(String),

    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The operation, naming the file.
        what: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A recording could not be read back.
    #[error(transparent)]
    Recording(#[from] modelprobe_recording::Error),
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

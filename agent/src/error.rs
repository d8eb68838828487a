//! The library's error type, and the process exit code each failure maps to.
//!
//! Messages are written for the person at the terminal: one line saying what failed and what to
//! do about it. The codes are documented in the README and in `modelprobe --help`.
use std::{io, path::PathBuf};

/// A result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, stable across releases.
pub mod exit_code {
    /// An unexpected failure (a bug, or an error not classified below).
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// Not enough privilege: needs root, or CAP_BPF and CAP_PERFMON.
    pub const PERMISSION: i32 = 3;
    /// The target process does not exist (or is already gone).
    pub const NO_SUCH_PROCESS: i32 = 4;
    /// The kernel lacks something modelprobe needs (BPF, BTF, perf events, tracepoints).
    pub const UNSUPPORTED_KERNEL: i32 = 5;
    /// The output directory cannot be created or written.
    pub const OUTPUT: i32 = 6;
    /// The command given to `run` could not be found or executed (as in shells).
    pub const COMMAND_NOT_FOUND: i32 = 127;
}

/// Everything that can go wrong while recording or reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),

    /// The caller lacks the privileges to load BPF programs and open perf events.
    #[error("needs root or CAP_BPF+CAP_PERFMON (and CAP_SYS_PTRACE to read other processes): run with sudo")]
    Permission,

    /// Loading the GPU library into a running process failed (`attach --gpu`).
    #[error("{0}")]
    LiveLoad(#[from] crate::live_load::LiveLoadError),

    /// This build has no CUPTI injection library embedded.
    #[error("this modelprobe was built without its GPU library: run `cargo xtask build-inject`, then rebuild")]
    MissingGpuLibrary,

    /// No process with this pid exists.
    #[error("pid {0} not found: no such process")]
    NoSuchProcess(u32),

    /// The process exists but has already exited (a zombie awaiting its parent).
    #[error("pid {0} has already exited")]
    ProcessExited(u32),

    /// The kernel is missing a feature modelprobe relies on.
    #[error("unsupported kernel: {0}")]
    UnsupportedKernel(String),

    /// The output directory cannot be created or written.
    #[error("cannot write output directory {}: {source}", path.display())]
    Output {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The command given to `run` cannot be found or started.
    #[error("cannot run {command}: {reason}")]
    CommandNotFound {
        /// The program name as given.
        command: String,
        /// Why not.
        reason: String,
    },

    /// This binary was built without its BPF object.
    #[error("this modelprobe was built without its BPF programs: run `cargo xtask build-ebpf`, then rebuild")]
    MissingBpfObject,

    /// Loading or attaching a BPF program failed.
    #[error("BPF {what} failed: {source}")]
    Bpf {
        /// What was being done.
        what: String,
        /// The loader's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A recording could not be read back.
    #[error("cannot read recording {}: {reason}", path.display())]
    BadRecording {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// A config file has an unknown key or a bad value (or cannot be read).
    #[error("config {}:{line}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the whole file is at fault).
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },

    /// An environment variable has a bad value.
    #[error("environment variable {name}: {message}")]
    BadEnv {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },

    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation, naming the file.
        what: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl From<modelprobe_recording::Error> for Error {
    fn from(e: modelprobe_recording::Error) -> Self {
        match e {
            modelprobe_recording::Error::Io { what, source } => Error::Io { what, source },
            modelprobe_recording::Error::BadRecording { path, reason } => {
                Error::BadRecording { path, reason }
            }
        }
    }
}

impl From<modelprobe_outputs::Error> for Error {
    fn from(e: modelprobe_outputs::Error) -> Self {
        match e {
            modelprobe_outputs::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            modelprobe_outputs::Error::Io { what, source } => Error::Io { what, source },
            modelprobe_outputs::Error::Recording(e) => e.into(),
        }
    }
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) | Error::Config { .. } | Error::BadEnv { .. } => {
                exit_code::USAGE
            }
            Error::Permission => exit_code::PERMISSION,
            Error::NoSuchProcess(_) | Error::ProcessExited(_) => exit_code::NO_SUCH_PROCESS,
            Error::UnsupportedKernel(_) => exit_code::UNSUPPORTED_KERNEL,
            Error::Output { .. } => exit_code::OUTPUT,
            Error::CommandNotFound { .. } => exit_code::COMMAND_NOT_FOUND,
            Error::MissingBpfObject
            | Error::MissingGpuLibrary
            | Error::LiveLoad(_)
            | Error::Bpf { .. }
            | Error::BadRecording { .. }
            | Error::Io { .. } => exit_code::FAILURE,
        }
    }

    /// Wraps an I/O error with the operation that failed.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a loader error with what was being loaded or attached.
    pub fn bpf(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Bpf {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

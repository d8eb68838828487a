//! The CUPTI injection library (`agent/inject/`), embedded in the agent at build time and
//! written out where a CUDA process can load it.
//!
//! The file name carries a hash of the contents, so a process that still has an older copy
//! loaded keeps it intact, and writing is skipped when the same library is already there.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// The library built by `cargo xtask build-inject` (empty when it was missing at build time).
static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libmodelprobe_inject.so"));

/// The environment variable through which the CUDA driver loads an injection library.
pub const ENV: &str = "CUDA_INJECTION64_PATH";

/// The environment variable through which NVTX loads its injection library at the first NVTX
/// call: the library forwards to CUPTI's, so NVTX ranges become CUPTI marker records. Read
/// once per process, at its first NVTX call: `attach` comes too late for it.
pub const NVTX_ENV: &str = "NVTX_INJECTION64_PATH";

/// The embedded library's bytes.
pub fn bytes() -> Result<&'static [u8]> {
    if LIBRARY.is_empty() {
        return Err(Error::MissingGpuLibrary);
    }
    Ok(LIBRARY)
}

/// FNV-1a, enough to tell builds apart in a file name.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The folder the library goes to by default: `/var/lib/modelprobe` for root (not `/tmp` or
/// `/run`, which are often mounted `noexec`), else `~/.cache/modelprobe`.
pub fn default_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/modelprobe");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("modelprobe")
}

/// The file name the embedded library is written under.
pub fn file_name(bytes: &[u8]) -> String {
    format!(
        "libmodelprobe_inject-{}-{:016x}.so",
        env!("CARGO_PKG_VERSION"),
        fingerprint(bytes)
    )
}

/// Writes the embedded library into `dir` (created if needed) unless an identical copy is
/// there, and returns its path. Readable by everyone: the target may run as another user.
pub fn write_to(dir: &Path) -> Result<PathBuf> {
    write_bytes(bytes()?, dir)
}

fn write_bytes(bytes: &[u8], dir: &Path) -> Result<PathBuf> {
    let path = dir.join(file_name(bytes));
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(path);
    }
    let output = |source| Error::Output {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(output)?;
    let tmp = dir.join(format!(".{}.{}", file_name(bytes), std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(output(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_under_a_content_name() {
        let dir = std::env::temp_dir().join(format!("mp-lib-test-{}", std::process::id()));
        let a = write_bytes(b"first build", &dir).unwrap();
        let again = write_bytes(b"first build", &dir).unwrap();
        assert_eq!(a, again);
        let b = write_bytes(b"second build", &dir).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"first build");
        assert_eq!(std::fs::read(&b).unwrap(), b"second build");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_folder_is_an_output_error() {
        let err = write_bytes(b"x", Path::new("/proc/modelprobe-nope")).unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err}");
    }
}

//! Model files a target opens or holds: told apart from other files by name and content, and
//! reported once per load.
//!
//! A name alone is not enough: `.pth` is PyTorch's checkpoint extension, and also the
//! extension of the text files of paths that Python's `site` module reads from every
//! `site-packages` at start-up (`distutils-precedence.pth`). So a file whose name says "model"
//! is also checked by its first bytes, read through the target's view while it lives.
use std::{collections::HashMap, io::Read};

use crate::recording::{Event, EventKind};

/// File name endings of model weights and engines.
const MODEL_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".gguf",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".engine",
    ".ckpt",
    ".h5",
    ".plan",
];

/// Endings PyTorch's `torch.save` writes: a zip archive (1.6+) or a pickle (before).
const TORCH_EXTENSIONS: &[&str] = &[".pt", ".pth", ".ckpt"];

/// How many leading bytes the content check reads.
const HEAD: usize = 512;

/// True for a path whose name says model weights (the content is not looked at).
pub fn has_model_name(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    MODEL_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// True when a file named like a model (`path`) with these leading bytes holds weights:
/// PyTorch's endings must start as a zip archive or a pickle; no model file is empty or
/// plain text. `None` (the file could not be read) trusts the name.
pub fn is_model_content(path: &str, head: Option<&[u8]>) -> bool {
    if !has_model_name(path) {
        return false;
    }
    let Some(head) = head else {
        return true;
    };
    if head.is_empty() || looks_like_text(head) {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if TORCH_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
        // Zip local file header, or the PROTO opcode every pickle of protocol 2+ starts with.
        return head.starts_with(b"PK\x03\x04") || head[0] == 0x80;
    }
    true
}

/// True for bytes that are printable UTF-8 text (tabs and line ends allowed).
fn looks_like_text(bytes: &[u8]) -> bool {
    // A multi-byte character may be cut at the end of the head.
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| matches!(c, '\t' | '\n' | '\r') || !c.is_control())
}

/// The first bytes of a file, or `None` when it cannot be read.
fn read_head(path: &str) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(path)
        .ok()?
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// Where the agent reads a file `pid` opened by `path` (absolute, or relative to its working
/// directory), through the process's own view of the file system.
fn seen_from(pid: u32, path: &str) -> String {
    if path.starts_with('/') {
        format!("/proc/{pid}/root{path}")
    } else {
        format!("/proc/{pid}/cwd/{path}")
    }
}

/// True for `open(2)` flags that write, create or truncate the file.
fn opens_to_write(flags: u64) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE == libc::O_WRONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Turns file opens into model-load events.
#[derive(Debug, Default)]
pub struct ModelFiles {
    /// The last model file each thread opened, so opening it again right away (a loader that
    /// checks a header, then reads) is one load.
    last_by_thread: HashMap<u32, String>,
    events: Vec<Event>,
    repeats: u64,
}

impl ModelFiles {
    /// A file `tid` of `pid` opened at `time_ns` with `open(2)` `flags`: becomes a
    /// [`EventKind::ModelLoad`] if it is opened for reading, holds a model, and is not the same
    /// file this thread opened just before. (An open to write or create one is a save.)
    pub fn opened(&mut self, time_ns: u64, pid: u32, tid: u32, path: &str, flags: u64) {
        if !has_model_name(path) || opens_to_write(flags) {
            return;
        }
        // Sized and checked now, while the process (and its view of the file) is there; the
        // plain path after.
        let view = seen_from(pid, path);
        let head = read_head(&view).or_else(|| read_head(path));
        if !is_model_content(path, head.as_deref()) {
            return;
        }
        if self.last_by_thread.get(&tid).map(String::as_str) == Some(path) {
            self.repeats += 1;
            return;
        }
        self.last_by_thread.insert(tid, path.to_string());
        let size = std::fs::metadata(&view)
            .or_else(|_| std::fs::metadata(path))
            .ok()
            .map(|m| m.len() as i64);
        let message = match size {
            Some(n) => format!("opened model file {path} ({})", mib(n)),
            None => format!("opened model file {path}"),
        };
        self.events.push(Event {
            time_ns,
            pid,
            tid,
            kind: EventKind::ModelLoad,
            message,
            value: size,
            stack: None,
        });
    }

    /// The model files `pid` already has open or mapped (for `attach`: they were loaded
    /// before recording began, so no open will be seen), as events at `now_ns`.
    pub fn already_loaded(&mut self, pid: u32, now_ns: u64) {
        let mut paths: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        paths.extend(
            std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string)),
        );
        paths.retain(|p| p.starts_with('/') && has_model_name(p));
        paths.sort();
        paths.dedup();
        for path in paths {
            let view = seen_from(pid, &path);
            if !is_model_content(&path, read_head(&view).as_deref()) {
                continue;
            }
            let size = std::fs::metadata(&view).ok().map(|m| m.len() as i64);
            self.events.push(Event {
                time_ns: now_ns,
                pid,
                tid: pid,
                kind: EventKind::ModelLoad,
                message: format!(
                    "model file {path} already loaded at attach{}",
                    size.map(|n| format!(" ({})", mib(n))).unwrap_or_default()
                ),
                value: size,
                stack: None,
            });
        }
    }

    /// Number of load events so far.
    pub fn count(&self) -> usize {
        self.events.len()
    }

    /// Drops the model-load events before `t` (a flight recorder's history).
    pub fn evict_before(&mut self, t: u64) {
        self.events.retain(|e| e.time_ns >= t);
    }

    /// The load events, and how many repeated opens were folded into them.
    pub fn finish(self) -> (Vec<Event>, u64) {
        (self.events, self.repeats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_packages_path_file_is_not_a_checkpoint() {
        let paths = b"import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n";
        assert!(!is_model_content(
            "/venv/lib/python3.12/site-packages/distutils-precedence.pth",
            Some(paths)
        ));
        assert!(!is_model_content("/x/easy-install.pth", Some(b"./pkg\n")));
        assert!(!is_model_content("/x/empty.pth", Some(b"")));
    }

    #[test]
    fn torch_checkpoints_are_zip_or_pickle() {
        assert!(is_model_content(
            "/m/model.pth",
            Some(b"PK\x03\x04\x00\x00\x08\x08")
        ));
        assert!(is_model_content(
            "/m/old.pt",
            Some(b"\x80\x02\x8a\x0al\xfc\x9cF")
        ));
        assert!(!is_model_content("/m/odd.pt", Some(b"\x01\x02\x03\x00")));
    }

    #[test]
    fn other_formats_need_only_be_binary() {
        let mut gguf = b"GGUF\x03\x00\x00\x00".to_vec();
        gguf.extend([0u8; 8]);
        assert!(is_model_content("/m/llama.GGUF", Some(&gguf)));
        assert!(is_model_content("/m/w.safetensors", Some(&[7u8; 64])));
        assert!(!is_model_content(
            "/m/readme.bin",
            Some("notes — ünïcode\n".as_bytes())
        ));
        // Unreadable: the name decides.
        assert!(is_model_content("/gone/w.onnx", None));
        assert!(!is_model_content("/m/notes.txt", Some(&[0u8; 4])));
    }

    #[test]
    fn text_check_allows_a_character_cut_at_the_end() {
        let cut = &"aé".as_bytes()[..2];
        assert!(looks_like_text(cut));
        assert!(!looks_like_text(b"a\x00b"));
        assert!(!looks_like_text(b"\xff\xfe"));
    }

    #[test]
    fn a_file_opened_again_by_the_same_thread_is_one_load() {
        let dir = std::env::temp_dir().join(format!("mp-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("w.safetensors");
        std::fs::write(&model, [0xa5u8; 100]).unwrap();
        let other = dir.join("v.gguf");
        std::fs::write(&other, [0xa5u8; 10]).unwrap();
        let (model, other) = (model.to_str().unwrap(), other.to_str().unwrap());
        let me = std::process::id();
        let mut m = ModelFiles::default();
        let read = libc::O_RDONLY as u64;
        m.opened(1, me, 5, model, read);
        m.opened(2, me, 5, model, read); // again, right away: the same load
        m.opened(3, me, 6, model, read); // another thread: another load
        m.opened(4, me, 5, other, read);
        m.opened(5, me, 5, model, read); // after another file: a new load
        let save = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u64;
        m.opened(6, me, 7, model, save); // torch.save: not a load
        let (events, repeats) = m.finish();
        let times: Vec<u64> = events.iter().map(|e| e.time_ns).collect();
        assert_eq!(times, [1, 3, 4, 5]);
        assert_eq!(repeats, 1);
        assert_eq!(events[0].value, Some(100));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

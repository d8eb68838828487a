//! Finding the file a probe spec names, and the functions in it, as the target sees them.
//!
//! Paths are the target's (its mount namespace): the agent reads them through
//! `/proc/PID/root`, so containers work. A library named but not mapped yet is looked up in the
//! target's library path, and probed on the file: uprobes live on the file, so a later `dlopen`
//! is covered from its first call.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{elf::function_symbols, spec::glob_match, ProbeSpec, MAX_GLOB_MATCHES};
use crate::{Error, Result};

/// Standard library directories searched after `LD_LIBRARY_PATH` and the mapped ones.
const STD_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/local/cuda/lib64",
];

/// What is known of a target for resolving specs.
#[derive(Debug, Clone)]
pub struct SearchContext {
    /// Prefix under which the target's paths are readable here (`/proc/PID/root`, or `/`).
    pub root: PathBuf,
    /// The main executable, as the target sees it.
    pub exe: Option<PathBuf>,
    /// Files the target maps now.
    pub mapped: Vec<PathBuf>,
    /// Directories searched for libraries not mapped yet, in order.
    pub lib_dirs: Vec<PathBuf>,
    /// How to describe the target in errors (`pid 42`, `./app`).
    pub label: String,
}

fn ld_library_path(environ: &[u8]) -> Vec<PathBuf> {
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"LD_LIBRARY_PATH="))
        .flat_map(|v| {
            v.split(|&b| b == b':')
                .map(|d| PathBuf::from(String::from_utf8_lossy(d).into_owned()))
        })
        .filter(|d| !d.as_os_str().is_empty())
        .collect()
}

impl SearchContext {
    /// For a running process.
    pub fn for_process(pid: u32) -> SearchContext {
        let mut mapped: Vec<PathBuf> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        mapped.dedup();
        let mut lib_dirs =
            ld_library_path(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
        for m in &mapped {
            if let Some(d) = m.parent() {
                if !lib_dirs.iter().any(|x| x == d) {
                    lib_dirs.push(d.to_path_buf());
                }
            }
        }
        lib_dirs.extend(STD_LIB_DIRS.iter().map(PathBuf::from));
        SearchContext {
            root: root_of(pid),
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            mapped,
            lib_dirs,
            label: format!("pid {pid}"),
        }
    }

    /// For a command about to be launched with this process's environment.
    pub fn for_command(program: &Path) -> SearchContext {
        let env: Vec<u8> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| {
                let mut kv = b"LD_LIBRARY_PATH=".to_vec();
                kv.extend_from_slice(v.as_encoded_bytes());
                kv
            })
            .unwrap_or_default();
        let mut lib_dirs = ld_library_path(&env);
        if let Some(d) = program.parent() {
            lib_dirs.push(d.to_path_buf());
        }
        lib_dirs.extend(STD_LIB_DIRS.iter().map(PathBuf::from));
        SearchContext {
            root: PathBuf::from("/"),
            exe: std::fs::canonicalize(program).ok(),
            mapped: Vec::new(),
            lib_dirs,
            label: program.display().to_string(),
        }
    }

    /// Where the agent reads a target path.
    pub fn host_path(&self, target_path: &Path) -> PathBuf {
        let rel = target_path.strip_prefix("/").unwrap_or(target_path);
        self.root.join(rel)
    }
}

/// Where `pid`'s paths are read: `/` when it shares the agent's mount namespace (so listings
/// cached for one process serve its siblings), else `/proc/PID/root`.
fn root_of(pid: u32) -> PathBuf {
    let ns = |p: String| std::fs::read_link(p).ok();
    match (
        ns(format!("/proc/{pid}/ns/mnt")),
        ns("/proc/self/ns/mnt".into()),
    ) {
        (Some(a), Some(b)) if a == b => PathBuf::from("/"),
        _ => PathBuf::from(format!("/proc/{pid}/root")),
    }
}

/// How long a directory lookup is reused: a process that forks and execs hundreds of children
/// a second has each library directory searched once, not once per exec.
const LOOKUP_TTL: Duration = Duration::from_secs(2);

/// The best file named like `wanted` in each directory (by host path), with when it was looked
/// up.
type Lookups = HashMap<(PathBuf, String), (Instant, Option<String>)>;

static LOOKUPS: Mutex<Option<Lookups>> = Mutex::new(None);

/// The file in `dir` that `wanted` names: the exact name first, then the shortest versioned
/// one (libx.so.12 before libx.so.12.1). Answered from a lookup at most [`LOOKUP_TTL`] old.
fn best_in_dir(dir: &Path, wanted: &str) -> Option<String> {
    let mut cache = LOOKUPS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    let key = (dir.to_path_buf(), wanted.to_string());
    if let Some((at, found)) = cache.get(&key) {
        if at.elapsed() < LOOKUP_TTL {
            return found.clone();
        }
    }
    let found = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| name_matches(n, wanted))
            .min_by_key(|n| (n != wanted, n.len()))
    });
    cache.insert(key, (Instant::now(), found.clone()));
    found
}

/// `name` is `wanted` or a versioned `wanted.N...`.
fn name_matches(name: &str, wanted: &str) -> bool {
    name == wanted || (name.starts_with(wanted) && name.as_bytes().get(wanted.len()) == Some(&b'.'))
}

fn file_name_matches(path: &Path, wanted: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| name_matches(n, wanted))
}

/// The file (target's path) a spec's TARGET names.
pub fn resolve_target(spec: &ProbeSpec, ctx: &SearchContext) -> Result<PathBuf> {
    if spec.target.contains('/') {
        let p = PathBuf::from(&spec.target);
        if ctx.host_path(&p).is_file() {
            return Ok(p);
        }
        return Err(Error::InvalidArgument(format!(
            "--probe {}: no such file {} in {}'s view",
            spec.text, spec.target, ctx.label
        )));
    }
    if let Some(exe) = ctx
        .exe
        .as_ref()
        .filter(|e| file_name_matches(e, &spec.target))
    {
        return Ok(exe.clone());
    }
    if let Some(m) = ctx
        .mapped
        .iter()
        .find(|m| file_name_matches(m, &spec.target))
    {
        return Ok(m.clone());
    }
    for dir in &ctx.lib_dirs {
        if let Some(n) = best_in_dir(&ctx.host_path(dir), &spec.target) {
            return Ok(dir.join(n));
        }
    }
    let known: Vec<String> = ctx
        .exe
        .iter()
        .chain(&ctx.mapped)
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    Err(Error::InvalidArgument(format!(
        "--probe {}: {} maps no file named {} and none is in its library path{}",
        spec.text,
        ctx.label,
        spec.target,
        close_matches(&spec.target, &known)
    )))
}

/// `; did you mean a, b, c?`, or nothing.
fn close_matches(wanted: &str, candidates: &[String]) -> String {
    let mut scored: Vec<(f64, &String)> = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(wanted, c), c))
        .filter(|(score, _)| *score > 0.75)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    if scored.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = scored.iter().take(3).map(|(_, n)| n.as_str()).collect();
    format!("; close matches: {}", names.join(", "))
}

/// One function to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProbe {
    /// The file, as the target sees it.
    pub target_path: PathBuf,
    /// The file, as the agent reads it (for attaching).
    pub host_path: PathBuf,
    /// Function name.
    pub symbol: String,
    /// Offset of the function in the file.
    pub file_offset: u64,
}

/// Every function a spec names in its target.
pub fn resolve(spec: &ProbeSpec, ctx: &SearchContext) -> Result<Vec<ResolvedProbe>> {
    let target_path = resolve_target(spec, ctx)?;
    let host_path = ctx.host_path(&target_path);
    let symbols = function_symbols(&host_path)?;
    let matched: Vec<_> = symbols
        .iter()
        .filter(|s| {
            if spec.is_glob() {
                glob_match(&spec.symbol, &s.name)
            } else {
                s.name == spec.symbol
            }
        })
        .collect();
    if matched.is_empty() {
        let names: Vec<String> = symbols.iter().map(|s| s.name.clone()).collect();
        return Err(Error::InvalidArgument(format!(
            "--probe {}: no function {} in {}{}",
            spec.text,
            spec.symbol,
            target_path.display(),
            close_matches(&spec.symbol, &names)
        )));
    }
    if matched.len() > MAX_GLOB_MATCHES {
        return Err(Error::InvalidArgument(format!(
            "--probe {}: {} functions match (more than {MAX_GLOB_MATCHES}); narrow the pattern",
            spec.text,
            matched.len()
        )));
    }
    Ok(matched
        .into_iter()
        .map(|s| ResolvedProbe {
            target_path: target_path.clone(),
            host_path: host_path.clone(),
            symbol: s.name.clone(),
            file_offset: s.file_offset,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_own_binary_and_libc_with_errors_that_help() {
        let ctx = SearchContext::for_process(std::process::id());
        let exe = ctx.exe.clone().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_string();
        let spec = ProbeSpec::parse(&format!("{name}:main")).unwrap();
        let found = resolve(&spec, &ctx).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].target_path, exe);

        let libc = ProbeSpec::parse("libc.so:getpid").unwrap();
        assert!(resolve_target(&libc, &ctx)
            .unwrap()
            .to_string_lossy()
            .contains("libc.so"));

        let typo = ProbeSpec::parse("libc.so:getpdi").unwrap();
        let err = resolve(&typo, &ctx).unwrap_err().to_string();
        assert!(
            err.contains("no function getpdi") && err.contains("getpid"),
            "{err}"
        );

        let missing = ProbeSpec::parse("libnothere.so:f").unwrap();
        let err = resolve(&missing, &ctx).unwrap_err().to_string();
        assert!(err.contains("maps no file named libnothere.so"), "{err}");

        let wide = ProbeSpec::parse("libc.so:*").unwrap();
        let err = resolve(&wide, &ctx).unwrap_err().to_string();
        assert!(err.contains("narrow the pattern"), "{err}");
    }
}

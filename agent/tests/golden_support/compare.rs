//! Comparing outputs with the golden files in `tests/golden/`, or rewriting them when blessing
//! (`MODELPROBE_BLESS=1`); a mismatch is shown as a short unified-style diff.
//!
//! Part of the `golden` test (`tests/golden.rs`).
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// Setting this to `1` rewrites the golden files instead of comparing with them.
pub const BLESS_VAR: &str = "MODELPROBE_BLESS";

/// The golden files: `agent/tests/golden/`.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// True when rewriting the golden files (`MODELPROBE_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1")
}

/// Lines of context before the first difference, and most differing lines shown per side.
const CONTEXT: usize = 3;
const MAX_SHOWN: usize = 8;
/// Most characters shown of a line: SVG and JSON put much on one line, so differing lines are
/// shown from a little before the first differing column.
const MAX_LINE: usize = 200;
const LEAD: usize = 60;

/// Up to [`MAX_LINE`] characters of `line` from character `from`, with `…` where cut.
fn excerpt(line: &str, from: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    let from = from.min(chars.len());
    let to = (from + MAX_LINE).min(chars.len());
    let mut s: String = chars[from..to].iter().collect();
    if from > 0 {
        s.insert(0, '…');
    }
    if to < chars.len() {
        s.push('…');
    }
    s
}

/// A unified-style hunk around the first differing lines of `expected` and `actual`.
fn diff(name: &str, expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.split_inclusive('\n').collect();
    let new: Vec<&str> = actual.split_inclusive('\n').collect();
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_diff, new_diff) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );
    // Column (in characters) where the first differing lines part.
    let column = match (old_diff.first(), new_diff.first()) {
        (Some(a), Some(b)) => a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count(),
        _ => 0,
    };
    let start = prefix.saturating_sub(CONTEXT);
    let mut out = format!("--- tests/golden/{name} (expected)\n+++ {name} (actual)\n");
    out += &format!(
        "@@ -{},{} +{},{} @@\n",
        start + 1,
        prefix - start + old_diff.len(),
        start + 1,
        prefix - start + new_diff.len()
    );
    let show = |out: &mut String, mark: char, lines: &[&str], from: usize| {
        for l in lines.iter().take(MAX_SHOWN) {
            match l.strip_suffix('\n') {
                Some(l) => *out += &format!("{mark}{}\n", excerpt(l, from)),
                None => {
                    *out += &format!("{mark}{}\n\\ No newline at end of file\n", excerpt(l, from))
                }
            }
        }
        if lines.len() > MAX_SHOWN {
            *out += &format!("{mark}... {} more lines\n", lines.len() - MAX_SHOWN);
        }
    };
    show(&mut out, ' ', &old[start..prefix], 0);
    let from = column.saturating_sub(LEAD);
    show(&mut out, '-', old_diff, from);
    show(&mut out, '+', new_diff, from);
    if !old_diff.is_empty() && !new_diff.is_empty() {
        out += &format!(
            "(line {} first differs at column {})\n",
            prefix + 1,
            column + 1
        );
    }
    out
}

/// Compares `actual` with `tests/golden/NAME` (or rewrites it when blessing); a mismatch is
/// returned as a diff.
pub fn check(name: &str, actual: &str) -> anyhow::Result<Option<String>> {
    let path = golden_dir().join(name);
    if blessing() {
        fs::create_dir_all(golden_dir()).context("creating tests/golden")?;
        fs::write(&path, actual).with_context(|| format!("writing {}", path.display()))?;
        return Ok(None);
    }
    let expected = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!("tests/golden/{name} is missing\n")));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok((expected != actual).then(|| diff(name, &expected, actual)))
}

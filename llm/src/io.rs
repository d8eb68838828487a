//! Payload text kept with `--capture-io`: request bodies and completions, redacted and
//! capped.
//!
//! String values of JSON keys that name a credential (`api_key`, `apiKey`, `authorization`,
//! `password`, `secret`, `token`...) are replaced by `[REDACTED]`, then the user's patterns
//! are; only then is the text cut to the cap, so no part of a secret survives a cut.

use std::sync::LazyLock;

use modelprobe_recording::llm::LlmIo;
use regex::{Captures, Regex};

/// What replaces redacted text.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// A text that keeps at most a cap of bytes, counting the rest.
#[derive(Debug, Default)]
pub(crate) struct Capped {
    text: String,
    cap: usize,
    cut: u64,
}

impl Capped {
    /// An empty text keeping up to `cap` bytes. The cap is applied again after redaction,
    /// which can lengthen the text; so that a secret that straddles the cap is still
    /// recognised, a little more is kept until then.
    pub fn new(cap: usize) -> Capped {
        Capped {
            text: String::new(),
            cap,
            cut: 0,
        }
    }

    /// The first bytes of a body of `total` bytes.
    pub fn of_bytes(bytes: &[u8], total: u64, cap: usize) -> Capped {
        let keep = bytes.len().min(cap + SLACK);
        let mut capped = Capped::new(cap);
        capped.push(&String::from_utf8_lossy(&bytes[..keep]));
        capped.cut += total.saturating_sub(keep as u64);
        capped
    }

    /// Appends text, keeping what fits.
    pub fn push(&mut self, text: &str) {
        let room = (self.cap + SLACK).saturating_sub(self.text.len());
        let keep = floor_char_boundary(text, room);
        self.text.push_str(&text[..keep]);
        self.cut += (text.len() - keep) as u64;
    }
}

/// Extra bytes kept past a cap until redaction is done.
const SLACK: usize = 1024;

/// The largest index at most `at` that is a char boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Replaces credential-like JSON string values and the user's patterns.
pub(crate) fn redact(text: &str, patterns: &[Regex]) -> String {
    static SECRET_VALUE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#""((?:[^"\\]|\\.)*)"(\s*:\s*)"(?:[^"\\]|\\.)*""#).unwrap());
    let mut out = SECRET_VALUE
        .replace_all(text, |c: &Captures| {
            if is_secret_key(&c[1]) {
                format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
            } else {
                c[0].to_owned()
            }
        })
        .into_owned();
    for pattern in patterns {
        out = pattern.replace_all(&out, REDACTED).into_owned();
    }
    out
}

/// Whether a JSON key names a credential.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    [
        "api_key",
        "apikey",
        "authorization",
        "password",
        "passwd",
        "secret",
    ]
    .iter()
    .any(|word| key.contains(word))
        || key == "token"
        || key.ends_with("_token")
        || key.ends_with("token") && !key.ends_with("tokens")
}

/// The captured text of a call, redacted and capped.
pub(crate) fn capture(request: Capped, completion: Capped, patterns: &[Regex]) -> LlmIo {
    let mut truncated = request.cut + completion.cut;
    let mut finish = |capped: Capped| {
        let mut text = redact(&capped.text, patterns);
        let keep = floor_char_boundary(&text, capped.cap);
        truncated += (text.len() - keep) as u64;
        text.truncate(keep);
        text
    };
    let request = finish(request);
    let completion = finish(completion);
    LlmIo {
        request,
        completion,
        truncated_bytes: truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_are_redacted_and_other_values_kept() {
        let body = r#"{"model":"gpt-4o","api_key":"sk-1","nested":{"apiKey": "sk-2","Authorization":"Bearer x","client_secret":"s","access_token":"t","password":"p"},"max_tokens":5,"prompt_tokens":"keep","content":"say \"token\": \"hi\""}"#;
        let out = redact(body, &[]);
        for secret in ["sk-1", "sk-2", "Bearer x", "\"s\"", "\"t\"", "\"p\""] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains(r#""apiKey": "[REDACTED]""#), "{out}");
        assert!(out.contains(r#""prompt_tokens":"keep""#), "{out}");
        assert!(out.contains(r#""model":"gpt-4o""#), "{out}");
        assert!(out.contains(r#""max_tokens":5"#), "{out}");
    }

    #[test]
    fn user_patterns_apply_before_the_cap() {
        let patterns = [Regex::new(r"\d{3}-\d{2}-\d{4}").unwrap()];
        let mut completion = Capped::new(12);
        completion.push("SSN 123-45-6789 is ");
        completion.push("private");
        let request = br#"{"a":"123-45-6789"}"#;
        let io = capture(Capped::of_bytes(request, 30, 12), completion, &patterns);
        assert_eq!(io.completion, "SSN [REDACTE");
        assert_eq!(io.request, r#"{"a":"[REDAC"#);
        // 13 bytes of the completion, 6 of the request and the 11 never buffered.
        assert_eq!(io.truncated_bytes, 13 + 6 + 11);
    }

    #[test]
    fn caps_cut_on_char_boundaries() {
        let mut c = Capped::new(0);
        c.push("ééé");
        let io = capture(Capped::new(3), Capped { cap: 3, ..c }, &[]);
        assert_eq!(io.completion, "é");
        assert_eq!(io.truncated_bytes, 4);
    }
}

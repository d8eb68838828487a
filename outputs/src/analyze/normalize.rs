//! Error messages with what varies between occurrences masked, so that they group: numbers
//! become `<N>` (`timeout after 31ms` and `timeout after 45ms` are both `timeout after <N>ms`,
//! `gpu0` is `gpu<N>`), `0x` numbers `<hex>`, and UUIDs, hex ids of six characters or more and
//! words mixing letters with several runs of digits (temporary names, hashes) `<id>`.

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// `8-4-4-4-12` hex digits at the start of `b`.
fn is_uuid(b: &[u8]) -> bool {
    b.len() >= 36
        && b[..36].iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => is_hex(c),
        })
        && !b.get(36).is_some_and(u8::is_ascii_alphanumeric)
}

fn normalize_word(w: &str, out: &mut String) {
    let b = w.as_bytes();
    let digit_runs = b
        .iter()
        .enumerate()
        .filter(|&(i, c)| c.is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
        .count();
    if digit_runs == 0 {
        out.push_str(w);
    } else if b.iter().all(u8::is_ascii_digit) {
        out.push_str("<N>");
    } else if b.len() > 2
        && (b.starts_with(b"0x") || b.starts_with(b"0X"))
        && b[2..].iter().all(|&c| is_hex(c))
    {
        out.push_str("<hex>");
    } else if digit_runs >= 2 || (b.len() >= 6 && b.iter().all(|&c| is_hex(c))) {
        out.push_str("<id>");
    } else {
        // One number inside a word: `31ms`, `gpu0`, `sm_80`.
        let mut in_digits = false;
        for c in w.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push_str("<N>");
                }
                in_digits = true;
            } else {
                in_digits = false;
                out.push(c);
            }
        }
    }
}

/// An error message with what varies between occurrences masked, so that they group.
pub fn normalize(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i].is_ascii_alphanumeric() {
            if is_uuid(&b[i..]) {
                out.push_str("<id>");
                i += 36;
                continue;
            }
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            normalize_word(&s[start..i], &mut out);
        } else {
            while i < b.len() && !b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push_str(&s[start..i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varying_parts_are_masked() {
        let cases = [
            ("timeout after 31ms", "timeout after <N>ms"),
            ("timeout after 45ms", "timeout after <N>ms"),
            (
                "CUDA out of memory on gpu0: tried 2.50 GiB",
                "CUDA out of memory on gpu<N>: tried <N>.<N> GiB",
            ),
            (
                "cudaMemcpy returned 1 (cudaErrorInvalidValue)",
                "cudaMemcpy returned <N> (cudaErrorInvalidValue)",
            ),
            (
                "bad pointer 0x7f3a00c0 in sm_80",
                "bad pointer <hex> in sm_<N>",
            ),
            (
                "request 550e8400-e29b-41d4-a716-446655440000 failed",
                "request <id> failed",
            ),
            (
                "request 9c1f2e3d-aaaa-bbbb-cccc-ddddeeeeffff failed",
                "request <id> failed",
            ),
            (
                "open /tmp/tmpa8x9z2/model.bin: denied",
                "open /tmp/<id>/model.bin: denied",
            ),
            ("commit 3f2a9c1e missing", "commit <id> missing"),
            ("réseau coupé 3 fois", "réseau coupé <N> fois"),
            ("Connection refused", "Connection refused"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }
}

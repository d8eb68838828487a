//! `log_line`: `detect_level` on arbitrary text, and `LogAssembler` fed arbitrary writes.
//!
//! The input is the text for `detect_level` and, read as records, the writes:
//! `[h0][h1][len][len bytes]`... where `h0` picks the fd (bits 0-1: 0..=3), pid (bits 2-3) and
//! tid (bits 4-5), bit 6 repeats the bytes 16 times (to reach the line length cap with small
//! inputs) and bit 7 makes the write ask for `h1 * 256` bytes more than were captured (as when
//! the kernel side cuts a long write); `h1` as an `i8` moves the clock (it may go back: writes
//! from different CPUs arrive out of order). A record cut short by the end of the
//! input takes the bytes that are left; fewer than three left over are ignored.
//!
//! Shared by the fuzz target and `agent/tests/fuzz_regressions.rs` (included with `#[path]`).
use modelprobe::{
    recording::logs::detect_level,
    session::log_lines::{LogAssembler, MAX_LINE},
};

/// Runs both on the input; checks the lines the assembler returns.
pub fn run(data: &[u8]) {
    let _ = detect_level(&String::from_utf8_lossy(data));
    let mut assembler = LogAssembler::default();
    let mut time_ns: u64 = 1_000_000;
    let mut rest = data;
    while let [h0, h1, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let bytes = if h0 & 0x40 != 0 {
            chunk.repeat(16)
        } else {
            chunk.to_vec()
        };
        let requested = bytes.len() as u64 + if h0 & 0x80 != 0 { *h1 as u64 * 256 } else { 0 };
        time_ns = time_ns.wrapping_add_signed(*h1 as i8 as i64);
        let (fd, pid, tid) = ((h0 & 3) as u32, (h0 >> 2 & 3) as u32, (h0 >> 4 & 3) as u32);
        assembler.write(time_ns, pid, tid, fd, &bytes, requested);
    }
    let (lines, _cut) = assembler.finish();
    for pair in lines.windows(2) {
        assert!(
            pair[0].time_ns <= pair[1].time_ns,
            "lines out of time order"
        );
    }
    for line in &lines {
        assert!(!line.message.contains('\n'), "{line:?}");
        assert!(
            line.message.chars().count() <= MAX_LINE,
            "line over MAX_LINE"
        );
        assert_eq!(line.level, detect_level(&line.message), "{line:?}");
    }
}

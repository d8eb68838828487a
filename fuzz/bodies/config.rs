//! Config files (`--config`, YAML): any text either applies or is refused with an error that
//! names the file and a line within it; never a panic.
use std::path::Path;

use modelprobe::config::Settings;

/// Runs one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut settings = Settings::default();
    match settings.apply_file(Path::new("/fuzz/config.yaml"), &text) {
        Ok(()) => {
            let rate = settings.sample_rate.value;
            assert!(rate > 0.0 && rate <= 1.0, "sample rate {rate} accepted");
            let hz = settings.frequency_hz.value;
            assert!((1..=100_000).contains(&hz), "frequency {hz} accepted");
            let a = &settings.agent;
            assert!(a.keep.value >= 1, "agent.keep {} accepted", a.keep.value);
            assert!((1..=100_000).contains(&a.frequency_hz.value));
            // What `config show` prints must be producible for anything accepted.
            assert_eq!(settings.rows().len(), 20);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("config /fuzz/config.yaml:"), "{msg}");
            // YAML breaks lines at \n, \r\n and a lone \r.
            let lines =
                1 + text.matches('\n').count() + text.replace("\r\n", "\n").matches('\r').count();
            let line: usize = msg["config /fuzz/config.yaml:".len()..]
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no line number in {msg:?}"));
            assert!(
                line <= lines + 1,
                "line {line} of a {lines}-line file: {msg}"
            );
            assert!(!msg.contains('\n'), "one-line error: {msg:?}");
        }
    }
}

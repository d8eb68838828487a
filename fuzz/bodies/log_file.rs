//! Plain log files as `modelprobe analyze` reads them: any text becomes items in order, each
//! with a message taken from the input; never a panic.
use modelprobe::analyze::parse_log_text;

/// Runs one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let items = parse_log_text(&text);
    let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(
        items.len() <= non_blank,
        "{} items from {non_blank} lines",
        items.len()
    );
    for item in &items {
        let _ = item.is_error();
        assert!(
            item.message.len() <= text.len() + 64,
            "message longer than the input"
        );
    }
}

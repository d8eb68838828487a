//! Timestamps in the shapes logs write them, turned into Unix nanoseconds.
//!
//! Civil-date arithmetic is done here (no time zone database): a time with a zone (`Z`,
//! `+02:00`, `+0200`) is exact; one without is taken as UTC, on the command line and in logs
//! alike, so naive times compare consistently with each other. Shapes without a year (glog,
//! syslog, vLLM) take one from the caller ([`Civil::unix_ns`]).
use std::time::{Duration, UNIX_EPOCH};

const NS_PER_SEC: i64 = 1_000_000_000;

/// A wall-clock time as written, before the year is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    /// `None` for shapes that do not write one.
    pub year: Option<i64>,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Seconds east of UTC.
    pub offset_s: i32,
}

impl Civil {
    /// Unix nanoseconds, with `year` for shapes without one; `None` before 1970.
    pub fn unix_ns(&self, year: i64) -> Option<u64> {
        let days = days_from_civil(self.year.unwrap_or(year), self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_s);
        let ns = secs.checked_mul(NS_PER_SEC)? + i64::from(self.nanos);
        u64::try_from(ns).ok()
    }

    fn valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second <= 60
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a Unix time in nanoseconds (UTC).
pub(crate) fn year_of(unix_ns: u64) -> i64 {
    let z = (unix_ns / NS_PER_SEC as u64 / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// RFC 3339 in UTC with milliseconds (`2024-01-01T12:00:00.123Z`), for tables.
pub(crate) fn format_millis(unix_ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// RFC 3339 in UTC with nanoseconds, for JSON.
pub(crate) fn format_nanos(unix_ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// Exactly `n` ASCII digits at `b[i..]`.
fn digits(b: &[u8], i: usize, n: usize) -> Option<u32> {
    let s = b.get(i..i + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `HH:MM:SS[.fff|,fff]` at `b[i..]`: (hour, minute, second, nanos, end).
fn hms(b: &[u8], i: usize) -> Option<(u32, u32, u32, u32, usize)> {
    let h = digits(b, i, 2)?;
    (b.get(i + 2) == Some(&b':')).then_some(())?;
    let m = digits(b, i + 3, 2)?;
    (b.get(i + 5) == Some(&b':')).then_some(())?;
    let s = digits(b, i + 6, 2)?;
    let mut end = i + 8;
    let mut nanos = 0u32;
    if matches!(b.get(end), Some(b'.' | b',')) && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1;
        let mut scale = 100_000_000u32;
        while let Some(&c) = b.get(end).filter(|c| c.is_ascii_digit()) {
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
            end += 1;
        }
    }
    Some((h, m, s, nanos, end))
}

/// A zone designator at `b[i..]`: `Z`, `+HH:MM`, `+HHMM`, `+HH` (or `-`); (seconds, end).
fn zone(b: &[u8], i: usize) -> Option<(i32, usize)> {
    match b.get(i)? {
        b'Z' | b'z' => Some((0, i + 1)),
        &sign @ (b'+' | b'-') => {
            let h = digits(b, i + 1, 2)?;
            let (m, end) = if b.get(i + 3) == Some(&b':') {
                (digits(b, i + 4, 2)?, i + 6)
            } else if let Some(m) = digits(b, i + 3, 2) {
                (m, i + 5)
            } else {
                (0, i + 3)
            };
            let s = (h * 3600 + m * 60) as i32;
            Some((if sign == b'-' { -s } else { s }, end))
        }
        _ => None,
    }
}

/// ISO 8601 / RFC 3339 and the common relaxations at the start of `b`:
/// `YYYY-MM-DD[T| ]HH:MM:SS[.frac|,frac][Z|±HH:MM|±HHMM]`, also with `/` between date parts.
/// With `date_only`, a bare `YYYY-MM-DD` is midnight. Returns the time and the bytes used.
pub(crate) fn iso(b: &[u8], date_only: bool) -> Option<(Civil, usize)> {
    let year = digits(b, 0, 4)?;
    let sep = *b.get(4)?;
    if sep != b'-' && sep != b'/' {
        return None;
    }
    let month = digits(b, 5, 2)?;
    (b.get(7) == Some(&sep)).then_some(())?;
    let day = digits(b, 8, 2)?;
    let mut c = Civil {
        year: Some(i64::from(year)),
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset_s: 0,
    };
    let timed = matches!(b.get(10), Some(b'T' | b't' | b' ' | b'_'))
        .then(|| hms(b, 11))
        .flatten();
    let end = match timed {
        Some((h, m, s, ns, end)) => {
            (c.hour, c.minute, c.second, c.nanos) = (h, m, s, ns);
            match zone(b, end) {
                Some((off, end)) => {
                    c.offset_s = off;
                    end
                }
                None => end,
            }
        }
        None if date_only => 10,
        None => return None,
    };
    c.valid().then_some((c, end))
}

/// glog's `Lmmdd hh:mm:ss.uuuuuu` (L one of `IWEF`): no year.
pub(crate) fn glog(b: &[u8]) -> Option<(Civil, usize)> {
    if !matches!(b.first(), Some(b'I' | b'W' | b'E' | b'F')) || b.get(5) != Some(&b' ') {
        return None;
    }
    yearless(b, 1)
}

/// A yearless date-time: the month's two digits at `month_at`, the day's at byte 3, the time
/// from byte 6 (glog and vLLM lay them out alike).
fn yearless(b: &[u8], month_at: usize) -> Option<(Civil, usize)> {
    let month = digits(b, month_at, 2)?;
    let day = digits(b, 3, 2)?;
    let (hour, minute, second, nanos, end) = hms(b, 6)?;
    let c = Civil {
        year: None,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_s: 0,
    };
    c.valid().then_some((c, end))
}

/// `MM-DD hh:mm:ss[.fff]` (vLLM): no year.
pub(crate) fn month_day(b: &[u8]) -> Option<(Civil, usize)> {
    (b.get(2) == Some(&b'-') && b.get(5) == Some(&b' ')).then_some(())?;
    yearless(b, 0)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// BSD syslog's `Mmm dd hh:mm:ss` (day space-padded or not): no year.
pub(crate) fn syslog(b: &[u8]) -> Option<(Civil, usize)> {
    let name = b.get(..3)?;
    let month = MONTHS.iter().position(|m| m[..] == *name)? as u32 + 1;
    (b.get(3) == Some(&b' ')).then_some(())?;
    let mut i = 4;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let (day, after) = match (digits(b, i, 2), digits(b, i, 1)) {
        (Some(d), _) => (d, i + 2),
        (None, Some(d)) => (d, i + 1),
        _ => return None,
    };
    (b.get(after) == Some(&b' ')).then_some(())?;
    let (hour, minute, second, nanos, end) = hms(b, after + 1)?;
    let c = Civil {
        year: None,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_s: 0,
    };
    c.valid().then_some((c, end))
}

/// A number of seconds, milliseconds, microseconds or nanoseconds since the epoch (told apart by
/// magnitude, as JSON loggers write any of them), as Unix nanoseconds.
pub(crate) fn epoch_number(x: f64) -> Option<u64> {
    if !x.is_finite() || x <= 0.0 {
        return None;
    }
    if x >= 1e17 {
        Some(x as u64)
    } else if x >= 1e14 {
        Some((x * 1e3) as u64)
    } else if x >= 1e11 {
        Some((x * 1e6) as u64)
    } else {
        // Seconds with a fraction: whole seconds and the fraction apart, so no precision is lost.
        (x.trunc() as u64)
            .checked_mul(NS_PER_SEC as u64)?
            .checked_add((x.fract() * 1e9).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> u64 {
        let (c, used) = iso(s.as_bytes(), true).unwrap();
        assert_eq!(used, s.len(), "{s}");
        c.unix_ns(0).unwrap()
    }

    #[test]
    fn iso_shapes() {
        let base = 1_704_110_400_000_000_000; // 2024-01-01T12:00:00Z
        assert_eq!(ns("2024-01-01T12:00:00Z"), base);
        assert_eq!(ns("2024-01-01 12:00:00"), base);
        assert_eq!(ns("2024/01/01 12:00:00"), base);
        assert_eq!(ns("2024-01-01 12:00:00,123"), base + 123_000_000);
        assert_eq!(ns("2024-01-01T12:00:00.123456789Z"), base + 123_456_789);
        assert_eq!(ns("2024-01-01T14:00:00+02:00"), base);
        assert_eq!(ns("2024-01-01T07:00:00-0500"), base);
        assert_eq!(ns("2024-01-01"), base - 12 * 3600 * 1_000_000_000);
        assert!(iso(b"2024-01-01", false).is_none());
        assert!(iso(b"2024-13-01 00:00:00", false).is_none());
        assert!(iso(b"20240101", true).is_none());
    }

    #[test]
    fn yearless_shapes() {
        let (c, used) = glog(b"E1124 13:01:02.123456  42 x.cc:1] y").unwrap();
        assert_eq!(
            (c.month, c.day, c.hour, c.nanos, used),
            (11, 24, 13, 123_456_000, 21)
        );
        let (c, _) = syslog(b"Nov  4 13:01:02 host x: y").unwrap();
        assert_eq!((c.month, c.day, c.second), (11, 4, 2));
        let (c, _) = syslog(b"Nov 24 13:01:02 host").unwrap();
        assert_eq!(c.day, 24);
        assert!(syslog(b"Now 24 13:01:02").is_none());
        let (c, used) = month_day(b"11-24 13:01:02 [engine.py:1]").unwrap();
        assert_eq!((c.month, c.day, used), (11, 24, 14));
        assert_eq!(
            c.unix_ns(2024).unwrap(),
            ns("2024-11-24T13:01:02Z"),
            "the year comes from the caller"
        );
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(year_of(ns("2024-12-31T23:59:59Z")), 2024);
        assert_eq!(year_of(ns("2025-01-01T00:00:00Z")), 2025);
        assert_eq!(year_of(ns("2024-02-29T00:00:00Z")), 2024);
        assert_eq!(
            epoch_number(1_704_110_400.5),
            Some(1_704_110_400_500_000_000)
        );
        assert_eq!(
            epoch_number(1_704_110_400_000.0),
            Some(1_704_110_400_000_000_000)
        );
        assert_eq!(
            format_millis(ns("2024-01-01T12:00:00.123Z")),
            "2024-01-01T12:00:00.123Z"
        );
    }
}

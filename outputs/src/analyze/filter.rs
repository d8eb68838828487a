//! Which items an analysis keeps: the [`AnalyzeOptions`] filters, all of which must hold.
//!
//! - `level`: items with a level at least this (`DEBUG < INFO < WARN < ERROR`, `FATAL` ranks
//!   as `ERROR`); items without a level never pass.
//! - `min_duration`: items lasting at least this, so only spans pass.
//! - `since` / `until`: items whose time (a span's start) is within the bounds, inclusive; a
//!   relative bound counts from the start of the item's input (a recording's start, a log's
//!   first timestamp). Items without a time never pass.
//! - `pattern`: the regex finds a match in the item's name or its message (the whole text,
//!   continuation lines included).
use super::{AnalyzeOptions, Item, TimeBound};
use crate::logs::Level;

fn rank(l: Level) -> Level {
    if l == Level::Fatal {
        Level::Error
    } else {
        l
    }
}

impl TimeBound {
    /// The bound in Unix ns for an input that starts at `start`.
    pub(crate) fn resolve(&self, start: Option<u64>) -> Option<u64> {
        match *self {
            TimeBound::Absolute(t) => Some(t),
            TimeBound::Relative(d) => start.map(|s| s.saturating_add(d.as_nanos() as u64)),
        }
    }
}

/// Whether `item`, from an input that starts at `start` (Unix ns), passes every filter.
pub(crate) fn matches(opts: &AnalyzeOptions, item: &Item, start: Option<u64>) -> bool {
    if let Some(min) = opts.level {
        if item.level.is_none_or(|l| rank(l) < rank(min)) {
            return false;
        }
    }
    if let Some(min) = opts.min_duration {
        if item
            .duration_ns
            .is_none_or(|d| u128::from(d) < min.as_nanos())
        {
            return false;
        }
    }
    if opts.since.is_some() || opts.until.is_some() {
        let Some(t) = item.t else {
            return false;
        };
        if let Some(since) = &opts.since {
            if since.resolve(start).is_none_or(|s| t < s) {
                return false;
            }
        }
        if let Some(until) = &opts.until {
            if until.resolve(start).is_none_or(|u| t > u) {
                return false;
            }
        }
    }
    if let Some(re) = &opts.pattern {
        let named = item.name.as_deref().is_some_and(|n| re.is_match(n));
        if !named && !re.is_match(&item.message) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::analyze::ItemKind;

    fn item(level: Option<Level>, t: Option<u64>, dur: Option<u64>, msg: &str) -> Item {
        Item {
            input: 0,
            t,
            level,
            kind: if dur.is_some() {
                ItemKind::Span
            } else {
                ItemKind::Log
            },
            name: Some("llama_decode".into()),
            message: msg.into(),
            duration_ns: dur,
            counts_as_error: true,
        }
    }

    #[test]
    fn level_is_a_minimum_and_fatal_ranks_as_error() {
        let opts = AnalyzeOptions {
            level: Some(Level::Warn),
            ..Default::default()
        };
        let pass = |l| matches(&opts, &item(l, None, None, ""), None);
        assert!(!pass(None));
        assert!(!pass(Some(Level::Info)));
        assert!(pass(Some(Level::Warn)));
        assert!(pass(Some(Level::Fatal)));
        let errors = AnalyzeOptions {
            level: Some(Level::Fatal),
            ..Default::default()
        };
        assert!(matches(
            &errors,
            &item(Some(Level::Error), None, None, ""),
            None
        ));
    }

    #[test]
    fn duration_keeps_long_spans_only() {
        let opts = AnalyzeOptions {
            min_duration: Some(Duration::from_millis(2)),
            ..Default::default()
        };
        assert!(matches(&opts, &item(None, None, Some(2_000_000), ""), None));
        assert!(!matches(
            &opts,
            &item(None, None, Some(1_999_999), ""),
            None
        ));
        assert!(!matches(&opts, &item(None, None, None, ""), None));
    }

    #[test]
    fn time_bounds_absolute_and_relative_to_the_input() {
        let opts = AnalyzeOptions {
            since: Some(TimeBound::Relative(Duration::from_secs(10))),
            until: Some(TimeBound::Absolute(1_000)),
            ..Default::default()
        };
        let at = |t| item(None, t, None, "");
        let start = Some(0);
        assert!(!matches(&opts, &at(None), start));
        assert!(!matches(&opts, &at(Some(1_000)), start), "before since");
        let opts = AnalyzeOptions {
            since: Some(TimeBound::Relative(Duration::from_secs(10))),
            until: Some(TimeBound::Absolute(20_000_000_000)),
            ..Default::default()
        };
        assert!(!matches(&opts, &at(Some(9_999_999_999)), start));
        assert!(matches(&opts, &at(Some(10_000_000_000)), start));
        assert!(matches(&opts, &at(Some(20_000_000_000)), start));
        assert!(!matches(&opts, &at(Some(20_000_000_001)), start));
        assert!(
            !matches(&opts, &at(Some(15_000_000_000)), None),
            "no start, no relative bound"
        );
    }

    #[test]
    fn pattern_matches_name_or_message() {
        let opts = AnalyzeOptions {
            pattern: Some(regex::Regex::new("decode|timeout").unwrap()),
            ..Default::default()
        };
        assert!(matches(&opts, &item(None, None, None, "x"), None));
        let mut other = item(None, None, None, "request timeout after 3s");
        other.name = None;
        assert!(matches(&opts, &other, None));
        other.message = "fine".into();
        assert!(!matches(&opts, &other, None));
    }
}

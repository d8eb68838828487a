//! Model prices and the cost of a call.
//!
//! The built-in table is `prices.yaml`, embedded, with the date its prices were checked. A
//! user's YAML document overrides and extends it, in our shape (`prices:`, dollars per
//! million tokens) or in the seed's (`model_pricing:`, dollars per thousand tokens).

use std::collections::HashMap;

use modelprobe_recording::llm::Usage;
use serde_yaml_ng::{Mapping, Value};

const BUILTIN: &str = include_str!("prices.yaml");

/// A model's prices, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    pub output_per_mtok: f64,
    /// Input tokens read from the prompt cache, when priced apart.
    pub cached_input_per_mtok: Option<f64>,
    /// Input tokens written to the prompt cache (Anthropic), when priced apart.
    pub cache_write_per_mtok: Option<f64>,
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// The built-in table.
    Builtin,
    /// The user's table.
    Config,
}

impl PriceSource {
    /// The name a call's `cost_source` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Builtin => "builtin",
            PriceSource::Config => "config",
        }
    }
}

/// A price table that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// Not YAML at all.
    #[error("price table is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// YAML, but not a price table.
    #[error("price table: `{at}`: {problem}")]
    Invalid {
        /// Where: the key path (`prices.gpt-4o.input`).
        at: String,
        /// What is wrong there.
        problem: String,
    },
}

fn invalid(at: impl Into<String>, problem: impl Into<String>) -> PriceError {
    // A key may hold a newline or any control character: the error stays on one line.
    let at: String = at.into();
    let at = if at.chars().any(char::is_control) {
        at.escape_debug().to_string()
    } else {
        at
    };
    PriceError::Invalid {
        at,
        problem: problem.into(),
    }
}

/// Prices by model name (lowercase).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, (Price, PriceSource)>,
    as_of: String,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> PriceTable {
        // Parsed once: every `Options::default()` (and `Settings::default()`) starts from it.
        static PARSED: std::sync::OnceLock<PriceTable> = std::sync::OnceLock::new();
        PARSED
            .get_or_init(|| {
                let doc: Value = serde_yaml_ng::from_str(BUILTIN).expect("prices.yaml is YAML");
                let mut table = PriceTable {
                    prices: HashMap::new(),
                    as_of: String::new(),
                };
                table
                    .merge(&doc, PriceSource::Builtin)
                    .expect("prices.yaml is a price table");
                table
            })
            .clone()
    }

    /// Overrides and extends the table from a user's YAML document.
    pub fn merge_yaml(&mut self, yaml: &str) -> Result<(), PriceError> {
        self.merge_value(&serde_yaml_ng::from_str(yaml)?)
    }

    /// Overrides and extends the table from a user's YAML value (a part of a bigger
    /// configuration file). Nothing changes when it is invalid.
    pub fn merge_value(&mut self, value: &Value) -> Result<(), PriceError> {
        self.merge(value, PriceSource::Config)
    }

    /// The price of a model: its own, else that of the longest model name it starts with
    /// (`gpt-4o-2024-08-06` is priced as `gpt-4o`), ignoring case and a `vendor/` prefix.
    pub fn price(&self, model: &str) -> Option<(&Price, PriceSource)> {
        let model = model.trim().to_ascii_lowercase();
        let bare = model.rsplit('/').next().unwrap_or(&model);
        let lookup = |name: &str| {
            self.prices.get(name).or_else(|| {
                self.prices
                    .iter()
                    .filter(|(key, _)| name.starts_with(key.as_str()))
                    .max_by_key(|(key, _)| key.len())
                    .map(|(_, entry)| entry)
            })
        };
        lookup(&model)
            .or_else(|| lookup(bare))
            .map(|(price, source)| (price, *source))
    }

    /// How many models are priced.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when no model is priced.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The date the built-in prices were checked (`YYYY-MM-DD`).
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    fn merge(&mut self, value: &Value, source: PriceSource) -> Result<(), PriceError> {
        let top = value.as_mapping().ok_or_else(|| {
            invalid(
                "(top)",
                "expected a mapping with `prices` or `model_pricing`",
            )
        })?;
        let mut new = Vec::new();
        let mut as_of = None;
        for (key, section) in top {
            match key.as_str() {
                Some("as_of") => as_of = Some(date(section)?),
                Some("prices") => read_section("prices", section, 1.0, &mut new)?,
                Some("model_pricing") => read_section("model_pricing", section, 1000.0, &mut new)?,
                _ => {
                    return Err(invalid(
                        key_name(key),
                        "unknown key (expected `as_of`, `prices` or `model_pricing`)",
                    ))
                }
            }
        }
        // A user's `as_of` is checked but not kept: the date is the built-in table's.
        if let (PriceSource::Builtin, Some(as_of)) = (source, as_of) {
            self.as_of = as_of;
        }
        for (model, price) in new {
            self.prices.insert(model, (price, source));
        }
        Ok(())
    }
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

fn date(value: &Value) -> Result<String, PriceError> {
    let text = value.as_str().unwrap_or_default();
    let shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape {
        return Err(invalid("as_of", "expected a date, YYYY-MM-DD"));
    }
    Ok(text.to_owned())
}

/// Reads `model: {input, output, ...}` entries, multiplying prices by `scale` to get dollars
/// per million tokens.
fn read_section(
    section: &str,
    value: &Value,
    scale: f64,
    out: &mut Vec<(String, Price)>,
) -> Result<(), PriceError> {
    let models = value
        .as_mapping()
        .ok_or_else(|| invalid(section, "expected a mapping of model names to prices"))?;
    for (model, entry) in models {
        let model = key_name(model);
        let at = format!("{section}.{model}");
        if model.trim().is_empty() {
            return Err(invalid(at, "empty model name"));
        }
        let entry = entry
            .as_mapping()
            .ok_or_else(|| invalid(&at, "expected a mapping like {input: 2.5, output: 10}"))?;
        let cache_keys: &[&str] = if section == "prices" {
            &["cached_input", "cache_write"]
        } else {
            &[]
        };
        for key in entry.keys() {
            let name = key_name(key);
            if !["input", "output"].contains(&name.as_str()) && !cache_keys.contains(&name.as_str())
            {
                return Err(invalid(format!("{at}.{name}"), "unknown price key"));
            }
        }
        let required = |key: &str| {
            number(entry, &at, key, scale)?.ok_or_else(|| invalid(format!("{at}.{key}"), "missing"))
        };
        let price = Price {
            input_per_mtok: required("input")?,
            output_per_mtok: required("output")?,
            cached_input_per_mtok: number(entry, &at, "cached_input", scale)?,
            cache_write_per_mtok: number(entry, &at, "cache_write", scale)?,
        };
        out.push((model.trim().to_ascii_lowercase(), price));
    }
    Ok(())
}

fn number(entry: &Mapping, at: &str, key: &str, scale: f64) -> Result<Option<f64>, PriceError> {
    let Some(value) = entry.get(key) else {
        return Ok(None);
    };
    match value.as_f64() {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n * scale)),
        _ => Err(invalid(
            format!("{at}.{key}"),
            "expected a number, 0 or more",
        )),
    }
}

/// The cost in US dollars of a call's tokens. `provider` says how `usage` counts: for
/// `anthropic`, input tokens exclude those read from or written to the cache (unpriced cache
/// reads cost a tenth of input, writes a quarter more); for everyone else (OpenAI's
/// convention), input tokens include the cached ones.
pub fn cost(provider: &str, usage: &Usage, price: &Price) -> f64 {
    let tokens = |n: u64| n as f64;
    let dollars = if provider == "anthropic" {
        tokens(usage.input_tokens) * price.input_per_mtok
            + tokens(usage.cache_read_tokens)
                * price
                    .cached_input_per_mtok
                    .unwrap_or(price.input_per_mtok * 0.1)
            + tokens(usage.cache_creation_tokens)
                * price
                    .cache_write_per_mtok
                    .unwrap_or(price.input_per_mtok * 1.25)
            + tokens(usage.output_tokens) * price.output_per_mtok
    } else {
        let cached = usage.cache_read_tokens.min(usage.input_tokens);
        tokens(usage.input_tokens - cached) * price.input_per_mtok
            + tokens(cached) * price.cached_input_per_mtok.unwrap_or(price.input_per_mtok)
            + tokens(usage.output_tokens) * price.output_per_mtok
    };
    dollars / 1e6
}

#[cfg(test)]
#[path = "prices_tests.rs"]
mod tests;

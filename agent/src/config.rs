//! Settings for recording, layered: command line > environment > YAML file > defaults.
//!
//! The file (`--config FILE`, else `$MODELPROBE_CONFIG`, else [`DEFAULT_PATH`] when it exists):
//!
//! ```yaml
//! tracing:
//!   enabled: true        # spans (probe packs, file probes), events and logs
//!   level: INFO          # keep log lines at or above this level: ERROR, WARN, INFO, DEBUG
//!   output_dir: /var/tmp/modelprobe   # where default output directories are created
//! profiling:
//!   cpu: true            # sample CPU stacks
//!   off_cpu: false       # record blocked time
//!   gpu: true            # trace CUDA, cuBLAS and NCCL calls
//!   memory: false        # memory over time and by stack (as --memory)
//!   frequency: 99        # CPU samples per second
//! sampling:
//!   rate: 1.0            # fraction of spans kept (0 < rate <= 1), every 1/rate-th call per function
//! probes:
//!   - libllama.so:llama_decode@2
//! llm:
//!   enabled: true        # LLM API calls from the target's TLS traffic (--no-llm)
//!   capture_io: false    # keep prompts and completions (--capture-io)
//!   redact: ['\bacct-[0-9]+\b']   # more to replace by [REDACTED] in captured text
//!   prices:              # US dollars per million tokens, over the built-in table
//!     my-finetune: {input: 3.0, output: 12.0, cached_input: 1.5}
//! model_pricing:         # also accepted: dollars per 1,000 tokens
//!   gpt-4: {input: 0.03, output: 0.06}
//! agent:                 # `modelprobe agent`; read again on SIGHUP
//!   match: ['^vllm', 'serve\.py']   # name or command line (regular expressions)
//!   cgroup: ['kubepods']  # cgroup path (regular expressions)
//!   loads: [libcuda]     # a mapped file's name contains this
//!   window: 60s          # length of each window
//!   frequency: 19        # CPU samples per second
//!   keep: 10             # windows kept on disk
//! ```
//!
//! Environment: `ENABLE_TRACING`, `TRACE_LEVEL`, `TRACE_OUTPUT_DIR`, `ENABLE_PROFILING`,
//! `TRACE_SAMPLE_RATE`, and the same names prefixed with `MODELPROBE_`, which win over the
//! plain ones. Every value remembers where it came from ([`Source`]), which
//! `modelprobe config show` prints. An unknown key or a bad value is an error naming the key
//! and the file's line.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer};

use crate::{probes::ProbeSpec, recording::logs::Level, Error, Result};

/// Where a config file is read from when neither `--config` nor `$MODELPROBE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/modelprobe/config.yaml";

/// Highest accepted sampling frequency in a file or the environment (the kernel may allow less).
const MAX_FREQUENCY: u64 = 100_000;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line option.
    Cli,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Cli => write!(f, "command line"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    /// The value in effect.
    pub value: T,
    /// Who set it.
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting {
            value,
            source: Source::Default,
        }
    }

    fn set(&mut self, value: T, source: Source) {
        *self = Setting { value, source };
    }

    /// Sets it from the command line, when the option was given.
    pub fn cli(&mut self, value: Option<T>) {
        if let Some(v) = value {
            self.set(v, Source::Cli);
        }
    }
}

/// Every setting in effect.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// Spans, events and logs.
    pub tracing: Setting<bool>,
    /// Lowest log level kept.
    pub level: Setting<Level>,
    /// Parent of default output directories (`None`: the current directory).
    pub output_dir: Setting<Option<PathBuf>>,
    /// CPU stack sampling.
    pub cpu: Setting<bool>,
    /// Off-CPU (blocked) time.
    pub off_cpu: Setting<bool>,
    /// Memory over time.
    pub memory: Setting<bool>,
    /// CUDA, cuBLAS and NCCL tracing.
    pub gpu: Setting<bool>,
    /// CPU samples per second.
    pub frequency_hz: Setting<u64>,
    /// Fraction of spans kept.
    pub sample_rate: Setting<f64>,
    /// Probes from the file (command-line probes are added to these).
    pub probes: Setting<Vec<ProbeSpec>>,
    /// LLM API calls read from TLS traffic.
    pub llm: Setting<bool>,
    /// Keep LLM prompts and completions.
    pub llm_capture_io: Setting<bool>,
    /// More patterns to redact in captured LLM text (checked regular expressions).
    pub llm_redact: Setting<Vec<regex::Regex>>,
    /// Model prices over the built-in table (checked).
    pub llm_prices: Setting<modelprobe_llm::PriceTable>,
    /// The continuous agent's rules (`agent:`).
    pub agent: AgentSettings,
}

/// The `agent:` section: what `modelprobe agent` records (its command line adds to the
/// rules and wins for the rest).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Name or command-line patterns.
    pub matches: Setting<Vec<regex::Regex>>,
    /// Cgroup path patterns.
    pub cgroups: Setting<Vec<regex::Regex>>,
    /// Mapped-file name parts.
    pub loads: Setting<Vec<String>>,
    /// Window length.
    pub window: Setting<std::time::Duration>,
    /// CPU samples per second.
    pub frequency_hz: Setting<u64>,
    /// Windows kept.
    pub keep: Setting<usize>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            matches: Setting::default(Vec::new()),
            cgroups: Setting::default(Vec::new()),
            loads: Setting::default(Vec::new()),
            window: Setting::default(std::time::Duration::from_secs(60)),
            frequency_hz: Setting::default(19),
            keep: Setting::default(10),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            file: None,
            tracing: Setting::default(true),
            level: Setting::default(Level::Debug),
            output_dir: Setting::default(None),
            cpu: Setting::default(true),
            off_cpu: Setting::default(false),
            memory: Setting::default(false),
            gpu: Setting::default(true),
            frequency_hz: Setting::default(99),
            sample_rate: Setting::default(1.0),
            probes: Setting::default(Vec::new()),
            llm: Setting::default(true),
            llm_capture_io: Setting::default(false),
            llm_redact: Setting::default(Vec::new()),
            llm_prices: Setting::default(modelprobe_llm::PriceTable::builtin()),
            agent: AgentSettings::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tracing: Option<TracingFile>,
    profiling: Option<ProfilingFile>,
    sampling: Option<SamplingFile>,
    probes: Option<Vec<SpecValue>>,
    llm: Option<LlmFile>,
    /// The seed's price table shape: dollars per 1,000 tokens by model.
    model_pricing: Option<serde_yaml_ng::Value>,
    agent: Option<AgentFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    #[serde(rename = "match")]
    matches: Option<Vec<String>>,
    cgroup: Option<Vec<String>>,
    loads: Option<Vec<String>>,
    window: Option<DurationValue>,
    frequency: Option<FrequencyValue>,
    keep: Option<KeepValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LlmFile {
    enabled: Option<bool>,
    capture_io: Option<bool>,
    redact: Option<Vec<String>>,
    prices: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TracingFile {
    enabled: Option<bool>,
    level: Option<LevelValue>,
    output_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProfilingFile {
    cpu: Option<bool>,
    off_cpu: Option<bool>,
    gpu: Option<bool>,
    memory: Option<bool>,
    frequency: Option<FrequencyValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SamplingFile {
    rate: Option<RateValue>,
}

/// Parses a log level name as the file and `TRACE_LEVEL` accept it.
pub fn parse_level(text: &str) -> std::result::Result<Level, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "ERROR" | "FATAL" | "CRITICAL" => Ok(Level::Error),
        "WARN" | "WARNING" => Ok(Level::Warn),
        "INFO" => Ok(Level::Info),
        "DEBUG" | "TRACE" => Ok(Level::Debug),
        _ => Err(format!(
            "{text:?} is not a level: use ERROR, WARN, INFO or DEBUG"
        )),
    }
}

fn parse_frequency(text: &str) -> std::result::Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(f) if (1..=MAX_FREQUENCY).contains(&f) => Ok(f),
        _ => Err(format!(
            "{text:?} is not a frequency: use 1..={MAX_FREQUENCY} (Hz)"
        )),
    }
}

/// Parses a span sample rate as the file, `TRACE_SAMPLE_RATE` and `--sample-rate` accept it.
pub fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a sample rate: use a fraction in (0, 1], e.g. 0.1"
        )),
    }
}

fn parse_bool(text: &str) -> std::result::Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean: use true or false")),
    }
}

/// A YAML scalar as text, for values given as numbers or strings alike.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    use serde::de::Error as _;
    match serde_yaml_ng::Value::deserialize(d)? {
        serde_yaml_ng::Value::String(s) => Ok(s),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        other => Err(D::Error::custom(format!(
            "expected a scalar, found {other:?}"
        ))),
    }
}

macro_rules! checked {
    ($name:ident, $ty:ty, $parse:expr) => {
        struct $name($ty);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                use serde::de::Error as _;
                let text = scalar(d)?;
                $parse(&text).map($name).map_err(D::Error::custom)
            }
        }
    };
}
checked!(LevelValue, Level, parse_level);
checked!(FrequencyValue, u64, parse_frequency);
checked!(RateValue, f64, parse_rate);
checked!(DurationValue, std::time::Duration, |t: &str| {
    humantime::parse_duration(t.trim())
        .map_err(|e| format!("{t:?} is not a duration ({e}): use 60s, 5m..."))
});
checked!(
    KeepValue,
    usize,
    |t: &str| match t.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{t:?} is not a number of windows: use 1 or more")),
    }
);
checked!(SpecValue, ProbeSpec, |t: &str| ProbeSpec::parse(t)
    .map_err(|e| e.to_string()));

/// The file to read: `explicit` (`--config`), else `$MODELPROBE_CONFIG`, else
/// [`DEFAULT_PATH`] if it exists.
pub fn locate(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env("MODELPROBE_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()))
}

impl Settings {
    /// Defaults, then the file (if any), then the environment (`env` looks a variable up).
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                line: 0,
                message: format!("cannot read it: {e}"),
            })?;
            s.apply_file(path, &text)?;
        }
        s.apply_env(env)?;
        Ok(s)
    }

    /// Applies a file's text (`path` names it in errors and sources).
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<()> {
        let parsed: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let message = e.to_string();
                // The location goes first, in our own words.
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                // Keys quoted from the file may hold line breaks: the error stays one line.
                let message: String = message
                    .chars()
                    .flat_map(|c| {
                        let escaped: Vec<char> = if c.is_control() {
                            c.escape_default().collect()
                        } else {
                            vec![c]
                        };
                        escaped
                    })
                    .collect();
                Error::Config {
                    path: path.to_path_buf(),
                    line: e.location().map_or(0, |l| l.line()),
                    message,
                }
            })?
        };
        let src = || Source::File(path.to_path_buf());
        self.file = Some(path.to_path_buf());
        if let Some(t) = parsed.tracing {
            if let Some(v) = t.enabled {
                self.tracing.set(v, src());
            }
            if let Some(v) = t.level {
                self.level.set(v.0, src());
            }
            if let Some(v) = t.output_dir {
                self.output_dir.set(Some(v), src());
            }
        }
        if let Some(p) = parsed.profiling {
            if let Some(v) = p.cpu {
                self.cpu.set(v, src());
            }
            if let Some(v) = p.off_cpu {
                self.off_cpu.set(v, src());
            }
            if let Some(v) = p.memory {
                self.memory.set(v, src());
            }
            if let Some(v) = p.gpu {
                self.gpu.set(v, src());
            }
            if let Some(v) = p.frequency {
                self.frequency_hz.set(v.0, src());
            }
        }
        if let Some(v) = parsed.sampling.and_then(|s| s.rate) {
            self.sample_rate.set(v.0, src());
        }
        if let Some(v) = parsed.probes {
            self.probes.set(v.into_iter().map(|s| s.0).collect(), src());
        }
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            line: 0,
            message,
        };
        let mut prices = Vec::new();
        if let Some(l) = parsed.llm {
            if let Some(v) = l.enabled {
                self.llm.set(v, src());
            }
            if let Some(v) = l.capture_io {
                self.llm_capture_io.set(v, src());
            }
            if let Some(v) = l.redact {
                let compiled = v
                    .iter()
                    .map(|r| {
                        regex::Regex::new(r).map_err(|e| {
                            bad(format!(
                                "llm.redact: {r:?} is not a regular expression: {}",
                                crate::analyze::regex_problem(&e)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.llm_redact.set(compiled, src());
            }
            if let Some(v) = l.prices {
                let mut doc = serde_yaml_ng::Mapping::new();
                doc.insert("prices".into(), v);
                prices.push(("llm.prices", serde_yaml_ng::Value::Mapping(doc)));
            }
        }
        if let Some(v) = parsed.model_pricing {
            let mut doc = serde_yaml_ng::Mapping::new();
            doc.insert("model_pricing".into(), v);
            prices.push(("model_pricing", serde_yaml_ng::Value::Mapping(doc)));
        }
        if let Some(a) = parsed.agent {
            let patterns = |key: &str, list: Vec<String>| {
                list.iter()
                    .map(|r| {
                        regex::Regex::new(r).map_err(|e| {
                            bad(format!(
                                "agent.{key}: {r:?} is not a regular expression: {}",
                                crate::analyze::regex_problem(&e)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            };
            if let Some(v) = a.matches {
                self.agent.matches.set(patterns("match", v)?, src());
            }
            if let Some(v) = a.cgroup {
                self.agent.cgroups.set(patterns("cgroup", v)?, src());
            }
            if let Some(v) = a.loads {
                self.agent.loads.set(v, src());
            }
            if let Some(v) = a.window {
                self.agent.window.set(v.0, src());
            }
            if let Some(v) = a.frequency {
                self.agent.frequency_hz.set(v.0, src());
            }
            if let Some(v) = a.keep {
                self.agent.keep.set(v.0, src());
            }
        }
        if !prices.is_empty() {
            let mut table = self.llm_prices.value.clone();
            for (key, doc) in prices {
                table
                    .merge_value(&doc)
                    .map_err(|e| bad(format!("{key}: {e}")))?;
            }
            self.llm_prices.set(table, src());
        }
        Ok(())
    }

    /// Applies the environment: for each setting, `MODELPROBE_NAME` wins over `NAME`.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        fn lookup(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<(String, String)> {
            let prefixed = format!("MODELPROBE_{name}");
            env(&prefixed)
                .map(|v| (prefixed, v))
                .or_else(|| env(name).map(|v| (name.to_string(), v)))
                .filter(|(_, v)| !v.is_empty())
        }
        fn apply<T>(
            env: &dyn Fn(&str) -> Option<String>,
            name: &str,
            setting: &mut Setting<T>,
            parse: impl Fn(&str) -> std::result::Result<T, String>,
        ) -> Result<()> {
            if let Some((var, text)) = lookup(env, name) {
                let value = parse(&text).map_err(|message| Error::BadEnv {
                    name: var.clone(),
                    message,
                })?;
                setting.set(value, Source::Env(var));
            }
            Ok(())
        }
        apply(env, "ENABLE_TRACING", &mut self.tracing, parse_bool)?;
        apply(env, "TRACE_LEVEL", &mut self.level, parse_level)?;
        apply(env, "TRACE_OUTPUT_DIR", &mut self.output_dir, |t| {
            Ok(Some(PathBuf::from(t)))
        })?;
        apply(env, "ENABLE_PROFILING", &mut self.cpu, parse_bool)?;
        apply(env, "TRACE_SAMPLE_RATE", &mut self.sample_rate, parse_rate)?;
        Ok(())
    }

    /// Every setting as `(key, value, source)`, for `modelprobe config show`.
    pub fn rows(&self) -> Vec<(&'static str, String, String)> {
        fn row<T>(
            key: &'static str,
            s: &Setting<T>,
            show: impl Fn(&T) -> String,
        ) -> (&'static str, String, String) {
            (key, show(&s.value), s.source.to_string())
        }
        let patterns =
            |v: &Vec<regex::Regex>| v.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        vec![
            row("tracing.enabled", &self.tracing, |v| v.to_string()),
            row("tracing.level", &self.level, |v| {
                format!("{v:?}").to_ascii_uppercase()
            }),
            row("tracing.output_dir", &self.output_dir, |v| {
                v.as_ref().map_or(".".into(), |p| p.display().to_string())
            }),
            row("profiling.cpu", &self.cpu, |v| v.to_string()),
            row("profiling.off_cpu", &self.off_cpu, |v| v.to_string()),
            row("profiling.gpu", &self.gpu, |v| v.to_string()),
            row("profiling.memory", &self.memory, |v| v.to_string()),
            row("profiling.frequency", &self.frequency_hz, |v| {
                format!("{v} Hz")
            }),
            row("sampling.rate", &self.sample_rate, |v| v.to_string()),
            row("llm.enabled", &self.llm, |v| v.to_string()),
            row("llm.capture_io", &self.llm_capture_io, |v| v.to_string()),
            row("llm.redact", &self.llm_redact, |v| {
                v.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            }),
            row("llm.prices", &self.llm_prices, |v| {
                format!("{} models (built-in as of {})", v.len(), v.as_of())
            }),
            row("agent.match", &self.agent.matches, |v| patterns(v)),
            row("agent.cgroup", &self.agent.cgroups, |v| patterns(v)),
            row("agent.loads", &self.agent.loads, |v| v.join(", ")),
            row("agent.window", &self.agent.window, |v| {
                humantime::format_duration(*v).to_string()
            }),
            row("agent.frequency", &self.agent.frequency_hz, |v| {
                format!("{v} Hz")
            }),
            row("agent.keep", &self.agent.keep, |v| v.to_string()),
            row("probes", &self.probes, |v| {
                if v.is_empty() {
                    "(none)".into()
                } else {
                    v.iter()
                        .map(|p| p.text.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            }),
        ]
    }
}

#[cfg(test)]
mod tests;

//! Tests of the settings: the file, the environment, precedence and errors.
use super::*;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn from_file(text: &str) -> Result<Settings> {
    let mut s = Settings::default();
    s.apply_file(Path::new("/etc/mp.yaml"), text)?;
    Ok(s)
}

fn err(text: &str) -> String {
    from_file(text).unwrap_err().to_string()
}

#[test]
fn file_values_and_sources() {
    let s = from_file(
        "tracing:\n  enabled: false\n  level: warn\n  output_dir: /var/tmp/mp\nprofiling:\n  off_cpu: true\n  frequency: 499\nsampling:\n  rate: 0.25\nprobes:\n  - libfoo.so:bar@2\n",
    )
    .unwrap();
    assert!(!s.tracing.value);
    assert_eq!(s.level.value, Level::Warn);
    assert_eq!(s.output_dir.value, Some(PathBuf::from("/var/tmp/mp")));
    assert!(s.off_cpu.value);
    assert_eq!(s.frequency_hz.value, 499);
    assert_eq!(s.sample_rate.value, 0.25);
    assert_eq!(s.probes.value[0].args, 2);
    assert_eq!(s.frequency_hz.source, Source::File("/etc/mp.yaml".into()));
    assert_eq!(s.cpu.source, Source::Default);
}

#[test]
fn llm_settings_and_both_price_shapes() {
    let s = from_file(
        "llm:\n  capture_io: true\n  redact: ['acct-[0-9]+']\n  prices:\n    my-model: {input: 3.0, output: 12.0}\nmodel_pricing:\n  old-model: {input: 0.03, output: 0.06}\n",
    )
    .unwrap();
    assert!(s.llm.value && s.llm_capture_io.value);
    assert!(s.llm_redact.value[0].is_match("acct-42"));
    let prices = &s.llm_prices.value;
    let (p, source) = prices.price("my-model").unwrap();
    assert_eq!((p.input_per_mtok, p.output_per_mtok), (3.0, 12.0));
    assert_eq!(source, modelprobe_llm::PriceSource::Config);
    // Per 1,000 tokens in the seed's shape: per million here.
    assert_eq!(prices.price("old-model").unwrap().0.output_per_mtok, 60.0);
    // The built-in table is still there underneath.
    assert!(prices.price("gpt-4o-mini").is_some());
    let e = err("llm:\n  redact: ['(']\n");
    assert!(
        e.contains("llm.redact") && e.contains("regular expression"),
        "{e}"
    );
    let e = err("llm:\n  prices:\n    m: {input: cheap}\n");
    assert!(e.contains("llm.prices"), "{e}");
}

#[test]
fn errors_name_the_key_and_the_line() {
    let e = err("tracing:\n  enabled: true\n  levle: INFO\n");
    assert!(e.contains("/etc/mp.yaml:3:"), "{e}");
    assert!(e.contains("levle"), "{e}");
    let e = err("profiling:\n  frequency: 0\n");
    assert!(e.contains(":2:") && e.contains("frequency"), "{e}");
    let e = err("profiling:\n  frequency: fast\n");
    assert!(e.contains(":2:") && e.contains("\"fast\""), "{e}");
    let e = err("sampling:\n  rate: 2\n");
    assert!(e.contains(":2:") && e.contains("sample rate"), "{e}");
    let e = err("tracing:\n  level: loud\n");
    assert!(e.contains(":2:") && e.contains("not a level"), "{e}");
    let e = err("profiling:\n  memory: sometimes\n");
    assert!(e.contains(":2:") && e.contains("memory"), "{e}");
    assert!(
        from_file("profiling:\n  memory: true\n")
            .unwrap()
            .memory
            .value
    );
    let e = err("probes:\n  - nocolon\n");
    assert!(e.contains(":2:"), "{e}");
    let e = err("gpu: true\n");
    assert!(e.contains(":1:") && e.contains("gpu"), "{e}");
    let e = err("tracing: [1, 2\n");
    assert!(e.contains("/etc/mp.yaml:"), "{e}");
    assert!(from_file("").is_ok());
    assert!(from_file("# only a comment\n").is_ok());
}

#[test]
fn precedence_env_over_file_and_prefixed_over_plain() {
    let mut s = from_file("tracing:\n  level: ERROR\nsampling:\n  rate: 0.5\n").unwrap();
    s.apply_env(&env(&[
        ("TRACE_LEVEL", "info"),
        ("MODELPROBE_TRACE_LEVEL", "debug"),
        ("TRACE_SAMPLE_RATE", "0.1"),
        ("ENABLE_PROFILING", "false"),
    ]))
    .unwrap();
    assert_eq!(s.level.value, Level::Debug);
    assert_eq!(s.level.source, Source::Env("MODELPROBE_TRACE_LEVEL".into()));
    assert_eq!(s.sample_rate.value, 0.1);
    assert!(!s.cpu.value);
    s.frequency_hz.cli(Some(999));
    s.sample_rate.cli(None);
    assert_eq!(s.frequency_hz.source, Source::Cli);
    assert_eq!(s.sample_rate.value, 0.1);
}

#[test]
fn bad_environment_values_name_the_variable() {
    let mut s = Settings::default();
    let e = s
        .apply_env(&env(&[("ENABLE_TRACING", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ENABLE_TRACING") && e.contains("boolean"), "{e}");
    let e = s
        .apply_env(&env(&[("MODELPROBE_TRACE_SAMPLE_RATE", "0")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MODELPROBE_TRACE_SAMPLE_RATE"), "{e}");
}

#[test]
fn locating_the_file() {
    let none = env(&[]);
    assert_eq!(
        locate(Some(Path::new("a.yaml")), &none),
        Some(PathBuf::from("a.yaml"))
    );
    let e = env(&[("MODELPROBE_CONFIG", "/x/b.yaml")]);
    assert_eq!(locate(None, &e), Some(PathBuf::from("/x/b.yaml")));
}

#[test]
fn the_agent_section() {
    let s = from_file(
        "agent:\n  match: ['^vllm', 'serve\\.py']\n  cgroup: [kubepods]\n  loads: [libcuda]\n  window: 30s\n  frequency: 49\n  keep: 3\n",
    )
    .unwrap();
    let a = &s.agent;
    assert!(a.matches.value[1].is_match("python serve.py"));
    assert!(a.cgroups.value[0].is_match("/kubepods.slice/x"));
    assert_eq!(a.loads.value, ["libcuda"]);
    assert_eq!(a.window.value, std::time::Duration::from_secs(30));
    assert_eq!((a.frequency_hz.value, a.keep.value), (49, 3));
    assert_eq!(a.window.source, Source::File("/etc/mp.yaml".into()));
    assert!(s
        .rows()
        .iter()
        .any(|(k, v, _)| *k == "agent.window" && v == "30s"));
    // Defaults.
    let d = Settings::default().agent;
    assert_eq!((d.frequency_hz.value, d.keep.value), (19, 10));
    for (text, want) in [
        ("agent:\n  window: soon\n", "not a duration"),
        ("agent:\n  keep: 0\n", "not a number of windows"),
        ("agent:\n  match: ['(']\n", "agent.match"),
        ("agent:\n  pids: [1]\n", "unknown field"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text}: {e}");
    }
}

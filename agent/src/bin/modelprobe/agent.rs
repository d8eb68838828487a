//! `modelprobe agent` and `modelprobe ctl`: the continuous agent's rules from the command line
//! and the config file (read again on SIGHUP), its signals, and the control client.
use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context;
use modelprobe::{
    continuous::{
        capture::CaptureRequest,
        control::{self, Request},
        AgentOptions, Reload, Rules,
    },
    push::{Endpoint, PprofEndpoint},
    select::Selector,
};

use crate::{
    args::{AgentArgs, CtlCommand},
    inspect, record,
};

/// The rules: the config file's `agent:` section, with the command line's rules added and its
/// values winning.
fn rules(
    config: Option<&Path>,
    cli: &Selector,
    window: Option<Duration>,
    freq: Option<u64>,
    keep: Option<usize>,
) -> modelprobe::Result<Rules> {
    let a = record::settings(config)?.agent;
    let mut select = cli.clone();
    select.names.extend(a.matches.value);
    select.cgroups.extend(a.cgroups.value);
    select.loads.extend(a.loads.value);
    Ok(Rules {
        select,
        window: window.unwrap_or(a.window.value),
        frequency_hz: freq.unwrap_or(a.frequency_hz.value),
        keep: keep.unwrap_or(a.keep.value),
    })
}

/// `modelprobe agent`.
pub fn agent(config: Option<&Path>, args: AgentArgs) -> anyhow::Result<i32> {
    let cli = Selector {
        names: args.matches,
        loads: args.loads,
        cgroups: args.cgroups,
    };
    let first = rules(config, &cli, args.window, args.freq, args.keep)?;
    let mut headers = args.headers;
    headers.extend(std::env::var("OTEL_EXPORTER_OTLP_HEADERS").ok());
    let requested = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, requested.clone())
        .context("installing the SIGHUP handler")?;
    let config: Option<PathBuf> = config.map(Path::to_path_buf);
    let (window, freq, keep) = (args.window, args.freq, args.keep);
    let opts = AgentOptions {
        rules: first,
        off_cpu: args.off_cpu,
        llm: !args.no_llm,
        dir: args.dir,
        metrics_addr: args.metrics_addr,
        endpoint: args
            .endpoint
            .map(|url| Endpoint::new(&url, &headers))
            .transpose()?,
        pprof_endpoint: args
            .pprof_endpoint
            .map(|url| PprofEndpoint::new(&url, &headers))
            .transpose()?,
        resource: inspect::otel_resource(),
        control: (!args.no_control).then_some(args.control),
        stop: record::register_signals()?,
        reload: Some(Reload {
            requested,
            load: Box::new(move || rules(config.as_deref(), &cli, window, freq, keep)),
        }),
        max_windows: args.windows,
    };
    modelprobe::preflight::check_privileges()?;
    modelprobe::continuous::run(&opts)
        .map(|_| 0)
        .map_err(Into::into)
}

/// `modelprobe ctl`.
pub fn ctl(cmd: CtlCommand) -> anyhow::Result<i32> {
    match cmd {
        CtlCommand::Capture {
            pid,
            duration,
            out,
            freq,
            print_dir,
            socket,
        } => {
            let out = match out {
                Some(o) if o.is_relative() => Some(
                    std::env::current_dir()
                        .context("reading the current directory")?
                        .join(o),
                ),
                o => o,
            };
            let req = Request::Capture(CaptureRequest {
                pid,
                duration_ms: duration.as_millis() as u64,
                out,
                frequency_hz: freq,
            });
            if !print_dir {
                log::info!(
                    "asking the agent at {} to capture pid {pid} for {}",
                    socket.display(),
                    humantime::format_duration(duration)
                );
            }
            // The capture's length, then finalizing (symbolizing, writing) takes a while.
            let reply = control::request(&socket, &req, duration + Duration::from_secs(120))?;
            if let Some(e) = reply.error {
                anyhow::bail!("the agent could not capture pid {pid}: {e}");
            }
            let done = reply
                .capture
                .context("the agent's reply holds no capture")?;
            if print_dir {
                println!("{}", done.dir.display());
            } else {
                println!(
                    "captured pid {pid} into {}: {} CPU samples, {} spans, {} GPU operations, {} process(es)",
                    done.dir.display(),
                    done.cpu_samples,
                    done.spans,
                    done.gpu_ops,
                    done.processes
                );
            }
            Ok(0)
        }
    }
}

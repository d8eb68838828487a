//! The `modelprobe` command line: parses options, wires signals and logging, calls the library.
use std::process::ExitCode;

use clap::Parser;
use modelprobe::error::exit_code;

mod agent;
mod args;
mod inspect;
mod record;

use args::{Cli, Command, ConfigCommand};

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().filter_or("MODELPROBE_LOG", format!("warn,modelprobe={level}")),
    )
    .format(|buf, record| {
        use std::io::Write;
        modelprobe::progress::clear();
        match record.level() {
            log::Level::Info => writeln!(buf, "modelprobe: {}", record.args()),
            level => writeln!(
                buf,
                "modelprobe: {}: {}",
                level.as_str().to_lowercase(),
                record.args()
            ),
        }
    })
    .init();
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Attach {
            pid,
            duration,
            gpu,
            record: args,
        } => record::record(
            config,
            record::Target::Pid(pid),
            duration,
            Some(gpu),
            args,
            cli.quiet,
        ),
        Command::Run {
            record: args,
            command,
        } => record::record(
            config,
            record::Target::Command(command),
            None,
            None,
            args,
            cli.quiet,
        ),
        Command::Probes { pid, probes } => inspect::probes(pid, &probes),
        Command::Stacks { pid, json, native } => inspect::stacks(pid, json, native),
        Command::Resume { pid } => {
            modelprobe::stop::resume(pid)?;
            println!("pid {pid} resumed");
            Ok(0)
        }
        Command::Report { path, top, json } => inspect::report(&path, top, json),
        Command::Analyze {
            inputs,
            level,
            min_duration,
            pattern,
            since,
            until,
            top,
            json,
        } => inspect::analyze(
            &inputs,
            inspect::AnalyzeArgs {
                level,
                min_duration,
                pattern,
                since,
                until,
                top,
                json,
            },
        ),
        Command::View { path, output } => inspect::view(&path, output, cli.quiet),
        Command::Export {
            path,
            format,
            output,
            endpoint,
            headers,
            at,
        } => inspect::export(&path, format, output, endpoint, &headers, at, cli.quiet),
        Command::Agent(args) => agent::agent(config, args),
        Command::Ctl(cmd) => agent::ctl(cmd),
        Command::Config(ConfigCommand::Show) => inspect::config_show(config),
        Command::GpuLibrary { dir } => inspect::gpu_library(dir),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    modelprobe::preflight::restrict_new_files();
    match real_main(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            modelprobe::progress::clear();
            // Library errors already name their cause in one line; others get anyhow's chain.
            let library = err
                .downcast::<modelprobe::Error>()
                .or_else(|e| {
                    e.downcast::<modelprobe_outputs::Error>()
                        .map(modelprobe::Error::from)
                })
                .or_else(|e| {
                    e.downcast::<modelprobe_recording::Error>()
                        .map(modelprobe::Error::from)
                });
            let code = match library {
                Ok(e) => {
                    eprintln!("modelprobe: error: {e}");
                    e.exit_code()
                }
                Err(err) => {
                    eprintln!("modelprobe: error: {err:#}");
                    exit_code::FAILURE
                }
            };
            ExitCode::from(code as u8)
        }
    }
}

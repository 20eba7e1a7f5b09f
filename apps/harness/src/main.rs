//! `keynode-harness`: runs many real keynodes on one machine.
//!
//! `keynode-harness demo` plays the sharing story end to end with real agents on
//! loopback (see `demo.rs`) and exits non-zero if any step misbehaves.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs many real keynodes: the multi-node demo (and, later, load and chaos).
#[derive(Debug, Parser)]
#[command(name = "keynode-harness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share, scan, clone, pull, unshare and fork across four real nodes.
    Demo,
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            let system = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"))
            });
            match system.block_on(demo::run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(failed) => {
                    eprintln!("demo failed: {failed}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

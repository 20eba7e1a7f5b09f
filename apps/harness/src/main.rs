//! `keynode-harness`: runs many real keynodes on one machine (or drives agents
//! that run elsewhere).
//!
//! - `demo` plays the sharing story end to end with real agents on loopback
//!   (see `demo.rs`) and exits non-zero if any step misbehaves.
//! - `load` starts N agents as processes (re-executing this binary as the
//!   hidden `agent` subcommand), forms gestalts and trust, runs a seeded
//!   workload mix from concurrent clients and writes `report.json` and
//!   `report.svg`.
//! - `chaos` is `load` plus a nemesis scheduled from the seed (kill -9 and
//!   restart, connection cuts, delays, black holes and partitions through a
//!   fault-injecting proxy) and checks invariants at the end; any violation
//!   exits non-zero.
//! - `fanout` and `idle` measure one share reaching a big gestalt, and the
//!   memory of idle agents.
//!
//! See `docs/HARNESS.md`.

mod agent;
mod backup;
mod check;
mod cluster;
mod demo;
mod dht;
mod follow;
mod measure;
mod metrics;
mod nemesis;
mod proxy;
mod renew;
mod run;
mod svg;
mod topology;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Runs many real keynodes: the multi-node demo, load, chaos and measurements.
#[derive(Debug, Parser)]
#[command(name = "keynode-harness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share, scan, clone, pull, unshare and fork across four real nodes.
    Demo {
        /// Run the four nodes on a local DHT testnet: they find each other
        /// by NodeId, nobody types an address.
        #[arg(long)]
        dht: bool,
    },
    /// Run one agent in the foreground (what the harness spawns).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    /// Start N agents and run a seeded workload; report latencies and throughput.
    Load(LoadArgs),
    /// The load plus a seeded nemesis; check invariants (non-zero exit on a violation).
    Chaos(ChaosArgs),
    /// Time one share reaching every member of a big gestalt, then writes
    /// reaching every following member and a watched program.
    Fanout(FanoutArgs),
    /// Start N idle agents and report their memory.
    Idle(IdleArgs),
    /// Time `backup create` of a node beside `tar` of its node path, and
    /// write latency during the backup.
    Backup(BackupArgs),
    /// Time from a key renewal until a peer's share works under the new key.
    Renew(RenewArgs),
    /// A local Mainline DHT testnet: serve one for agents to join (prints
    /// `bootstrap: HOST:PORT,…`), or measure lookups, a moved node and
    /// relayed connections on one.
    Dht(DhtArgs),
}

#[derive(Debug, Args)]
struct DhtArgs {
    /// DHT nodes in the testnet.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Measure instead of serving: lookups, a moved node, relay against
    /// direct; exits non-zero if a target is missed.
    #[arg(long)]
    measure: bool,
    /// Records to publish and look up when measuring.
    #[arg(long, default_value_t = 50)]
    lookups: usize,
    /// Where the report goes.
    #[arg(long, default_value = "harness-report/dht")]
    report: PathBuf,
}

#[derive(Debug, Args)]
struct Common {
    /// Agents to start.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// How long the workload runs (`30s`, `5m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Vaults each node owns.
    #[arg(long, default_value_t = 2)]
    vaults: usize,
    /// Secrets written into each vault before the workload.
    #[arg(long, default_value_t = 5)]
    secrets: usize,
    /// Concurrent client tasks (default: 2 per node, at least 4).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Neighbouring gestalts each node shares with, trusts and talks to.
    #[arg(long, default_value_t = 4)]
    reach: usize,
    /// Directory for report.json, report.svg and history.jsonl.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Keep the agents' node paths (printed at the end).
    #[arg(long)]
    keep: bool,
    /// With `--dht`: node 0 relays, and this many other nodes run without a
    /// listener (`--no-listen`), reachable only through it.
    #[arg(long, default_value_t = 0)]
    behind_relay: usize,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drive agents that already run: one `NODE_ID@host:port socket=PATH` a line.
    #[arg(long)]
    attach: Option<PathBuf>,
    /// Also run the end-of-run invariant checks (always on in chaos).
    #[arg(long)]
    check: bool,
    /// Start the agents on a local DHT testnet: they find each other by
    /// NodeId, with no `nodes add` at all.
    #[arg(long)]
    dht: bool,
}

#[derive(Debug, Args)]
struct ChaosArgs {
    #[command(flatten)]
    common: Common,
    /// Seed of the workload and of the fault schedule.
    #[arg(long)]
    seed: u64,
    /// How long notifications may take to arrive after healing.
    #[arg(long, default_value = "75s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Run on a local DHT testnet with no `nodes add`; the nemesis kills,
    /// restarts and moves nodes (another port), no link faults.
    #[arg(long)]
    dht: bool,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Members of the gestalt the vault is shared with.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Shares to time.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Then every member clones the last vault (following it) and this many
    /// writes on the owner are timed until each is visible on every member
    /// and has restarted a program under `keynode secrets env --watch` on
    /// one of them (0: skip).
    #[arg(long, default_value_t = 20)]
    writes: usize,
    /// Directory for fanout.json.
    #[arg(long, default_value = "harness-report/fanout")]
    report: PathBuf,
}

#[derive(Debug, Args)]
struct RenewArgs {
    /// Renewals to time.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Directory for renew.json.
    #[arg(long, default_value = "harness-report/renew")]
    report: PathBuf,
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// Vaults on the node.
    #[arg(long, default_value_t = 10)]
    vaults: usize,
    /// Secrets in each vault.
    #[arg(long, default_value_t = 5000)]
    secrets: usize,
    /// Directory for backup.json.
    #[arg(long, default_value = "harness-report/backup")]
    report: PathBuf,
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// Agents to start.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// How long to wait before measuring.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Directory for idle.json.
    #[arg(long, default_value = "harness-report/idle")]
    report: PathBuf,
}

fn config(mode: &'static str, c: Common, seed: u64) -> run::RunConfig {
    run::RunConfig {
        mode,
        nodes: c.nodes.max(2),
        duration: c.duration,
        vaults: c.vaults,
        secrets: c.secrets,
        seed,
        concurrency: c.concurrency.unwrap_or((2 * c.nodes).max(4)),
        reach: c.reach,
        report: c
            .report
            .unwrap_or_else(|| PathBuf::from(format!("harness-report/{mode}"))),
        attach: None,
        keep: c.keep,
        check: false,
        dht: false,
        behind_relay: c.behind_relay,
        settle: Duration::from_secs(75),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"))
}

fn exit(what: &str, r: Result<bool, String>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{what}: FAILED");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{what} failed: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    keynode_core::exec::limit_malloc_arenas(keynode_core::exec::AGENT_MALLOC_ARENAS);
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Agent(_)) {
        "warn"
    } else {
        "error"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match cli.command {
        Command::Demo { dht } => {
            let system = actix_rt::System::with_tokio_rt(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"))
            });
            match system.block_on(demo::run(dht)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(failed) => {
                    eprintln!("demo failed: {failed}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(args) => match agent::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agent failed: {e}");
                ExitCode::from(74)
            }
        },
        Command::Load(a) => {
            let mut cfg = config("load", a.common, a.seed);
            cfg.attach = a.attach;
            cfg.check = a.check;
            cfg.dht = a.dht;
            exit("load", runtime().block_on(run::run(cfg)))
        }
        Command::Chaos(a) => {
            let mut cfg = config("chaos", a.common, a.seed);
            cfg.settle = a.settle;
            cfg.dht = a.dht;
            exit("chaos", runtime().block_on(run::run(cfg)))
        }
        Command::Fanout(a) => exit(
            "fanout",
            runtime().block_on(measure::fanout(
                a.members.max(2),
                a.runs.max(1),
                a.writes,
                a.report,
            )),
        ),
        Command::Dht(a) if a.measure => exit(
            "dht",
            runtime().block_on(dht::measure(a.nodes, a.lookups, a.report)),
        ),
        Command::Dht(a) => exit("dht", runtime().block_on(dht::serve(a.nodes))),
        Command::Renew(a) => exit("renew", runtime().block_on(renew::run(a.rounds, a.report))),
        Command::Backup(a) => exit(
            "backup",
            runtime().block_on(backup::run(a.vaults, a.secrets, a.report)),
        ),
        Command::Idle(a) => exit(
            "idle",
            runtime().block_on(measure::idle(a.nodes.max(1), a.wait, a.report)),
        ),
    }
}

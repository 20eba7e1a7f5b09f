//! `keynode`: run a node's agent and manage its vaults and secrets (SPEC §9).
//!
//! Every command takes `--node-path` (else `KEYNODE_NODE_PATH`), `--format
//! human|json` and `-v`. Errors are one line on stderr and a sysexits exit code.

// clap turns the commands' doc comments into help text, where `VAULT[:PATH]`
// is meant literally, not as a link.
#![allow(rustdoc::broken_intra_doc_links)]

#[macro_use]
mod output;
mod agent;
mod audit;
mod backup;
mod cli;
mod config;
mod identities;
mod keys;
mod nodes;
mod notifications;
mod password;
mod recovery;
mod secrets;
mod shells;
mod vaults;
mod watch;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};

use keynode_client::{Client, ClientError, NodePaths};

use crate::cli::{AgentCmd, Cli, Command};
use crate::output::Format;

/// A failed command: what to tell the user and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line naming what failed and what to do.
    pub message: String,
    /// The sysexits code.
    pub code: u8,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    /// Exit with `code` and say nothing (the status of a command keynode ran).
    pub fn exit(code: u8) -> Self {
        Self::new(code, "")
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::new(e.exit_code() as u8, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(74, format!("i/o error: {e}"))
    }
}

/// What every command gets: where the node is and how to print.
pub struct Ctx {
    /// The node path.
    pub paths: NodePaths,
    /// Output format.
    pub format: Format,
}

impl Ctx {
    /// Connects to this node's agent.
    pub async fn client(&self) -> Result<Client, Failure> {
        Ok(Client::connect(&self.paths.socket()).await?)
    }

    /// Sends `request` to the running agent and returns its node and answer,
    /// or `None` when no agent runs on the node path (for commands that then
    /// work on the node path directly). Blocking.
    pub fn call_if_running(
        &self,
        request: keynode_client::api::Request,
    ) -> Result<Option<(keynode_core::NodeId, keynode_client::api::Response)>, Failure> {
        let not_running =
            keynode_client::ClientError::NotRunning(Default::default()).exit_code() as u8;
        client_runtime()?.block_on(async {
            let mut client = match self.client().await {
                Ok(c) => c,
                Err(f) if f.code == not_running => return Ok(None),
                Err(f) => return Err(f),
            };
            let node = client.node_id();
            Ok(Some((node, client.call(request).await?)))
        })
    }
}

/// Logs to stderr with `filter`, else RUST_LOG, else warnings.
fn init_tracing(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line; usage errors are one line and exit 64 (sysexits).
fn parse() -> Result<(Cli, ArgMatches), ExitCode> {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    match parsed {
        Ok(parsed) => Ok(parsed),
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            let text = e.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            esay!("keynode: {line} (see `keynode --help`)");
            Err(ExitCode::from(64))
        }
    }
}

fn main() -> ExitCode {
    keynode_core::exec::limit_malloc_arenas(keynode_core::exec::AGENT_MALLOC_ARENAS);
    let (mut cli, matches) = match parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let ctx = Ctx {
        paths: NodePaths::resolve(cli.node_path.as_deref()),
        format: cli.format,
    };
    let log = match &mut cli.command {
        Command::Agent(AgentCmd::Start(args)) if !args.daemon_child => {
            match start_settings(&ctx, args, cli.verbose, &matches) {
                Ok(log) => log,
                Err(f) => return fail(f),
            }
        }
        // Settled by the agent that started it.
        Command::Agent(AgentCmd::Start(args)) => args.log.clone(),
        _ => verbosity(cli.verbose),
    };
    init_tracing(log.as_deref());
    let result = match cli.command {
        Command::Agent(cmd) => agent::run(&ctx, cmd),
        Command::Backup(cmd) => backup::run(&ctx, cmd),
        Command::Completions { shell } => shells::completions(shell),
        Command::Man { dir } => shells::man(dir.as_deref()),
        other => client_runtime().and_then(|rt| {
            rt.block_on(async {
                match other {
                    Command::Vaults(cmd) => vaults::run(&ctx, cmd).await,
                    Command::Secrets(cmd) => secrets::run(&ctx, cmd).await,
                    Command::Nodes(cmd) => nodes::run(&ctx, cmd).await,
                    Command::Identities(cmd) => identities::run(&ctx, cmd).await,
                    Command::Notifications(cmd) => notifications::run(&ctx, cmd).await,
                    Command::Audit(cmd) => audit::run(&ctx, cmd).await,
                    Command::Keys(cmd) => keys::run(&ctx, cmd).await,
                    Command::Agent(_)
                    | Command::Backup(_)
                    | Command::Completions { .. }
                    | Command::Man { .. } => unreachable!("handled above"),
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    if !f.message.is_empty() {
        esay!("keynode: {}", f.message);
    }
    ExitCode::from(f.code)
}

/// The log level `-v` asks for, if any.
fn verbosity(verbose: u8) -> Option<String> {
    let level = match verbose {
        0 => return None,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    Some(level.to_owned())
}

/// Completes `agent start`'s settings from its config file (see `config`)
/// and returns the log filter it runs with: `--log` > `-v` > KEYNODE_LOG >
/// RUST_LOG (`None`: taken from the environment) > the file's `log` >
/// `warn`. The filter is also put in `args.log`, for a background agent.
fn start_settings(
    ctx: &Ctx,
    args: &mut cli::StartArgs,
    verbose: u8,
    matches: &ArgMatches,
) -> Result<Option<String>, Failure> {
    let start = matches
        .subcommand_matches("agent")
        .and_then(|m| m.subcommand_matches("start"))
        .ok_or_else(|| Failure::new(70, "agent start without its arguments"))?;
    let file_log = match config::ConfigFile::load(args.config.as_deref(), &ctx.paths.root)? {
        Some(file) => config::apply(args, start, &file)?,
        None => None,
    };
    let from_flag = matches!(
        start.value_source("log"),
        Some(clap::parser::ValueSource::CommandLine)
    );
    let log = match (args.log.take(), verbosity(verbose)) {
        (Some(flag), _) if from_flag => Some(flag),
        (_, Some(level)) => Some(level),
        (Some(env), None) => Some(env),
        (None, None) if std::env::var_os("RUST_LOG").is_some() => None,
        (None, None) => Some(file_log.unwrap_or_else(|| "warn".to_owned())),
    };
    if let Some(filter) = &log {
        tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| Failure::new(64, format!("--log {filter}: {e}")))?;
    }
    args.log = log.clone();
    Ok(log)
}

fn client_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(71, format!("cannot start the runtime: {e}")))
}

//! `secrets env --watch VAULT[:PATH]... -- CMD`: runs CMD with the secrets as
//! environment variables and keeps it on the current values.
//!
//! - The agent tells us when a watched vault moves (`VaultsWatch`: a local
//!   write, or a change a followed clone pulled). The variables are read
//!   again; only when they differ is CMD restarted (SIGTERM, wait up to
//!   `--stop-timeout`, SIGKILL, start again with the new values) or sent
//!   `--signal SIG`.
//! - Values that break the variable rules after a change (a bad name, a
//!   loader variable not allowed) leave CMD running on the old ones, with a
//!   warning.
//! - When the agent goes away CMD keeps running; the watch is taken up again
//!   (every second, then every few) and the values compared at once.
//! - SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to keynode go
//!   to CMD. When CMD exits on its own, keynode exits with its status (128 +
//!   the signal's number if a signal ended it).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use keynode_core::SecretPath;
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::secrets::{Watching, load_env};
use crate::{Ctx, Failure};

/// Signals passed on to the command.
const FORWARDED: [(SignalKind, Signal); 6] = [
    (SignalKind::interrupt(), Signal::INT),
    (SignalKind::terminate(), Signal::TERM),
    (SignalKind::hangup(), Signal::HUP),
    (SignalKind::quit(), Signal::QUIT),
    (SignalKind::user_defined1(), Signal::USR1),
    (SignalKind::user_defined2(), Signal::USR2),
];

/// Pause before taking the watch up again after the agent went away.
const REWATCH_FIRST: Duration = Duration::from_secs(1);
const REWATCH_MAX: Duration = Duration::from_secs(10);

/// Parses `--signal`: a name (`HUP`, `SIGHUP`, case-insensitive) or a number.
pub fn parse_signal(s: &str) -> Result<Signal, Failure> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let by_name = match name {
        "HUP" => Some(Signal::HUP),
        "INT" => Some(Signal::INT),
        "QUIT" => Some(Signal::QUIT),
        "TERM" => Some(Signal::TERM),
        "USR1" => Some(Signal::USR1),
        "USR2" => Some(Signal::USR2),
        "KILL" => Some(Signal::KILL),
        "WINCH" => Some(Signal::WINCH),
        _ => None,
    };
    by_name
        .or_else(|| s.parse::<i32>().ok().and_then(Signal::from_named_raw))
        .ok_or_else(|| {
            Failure::new(
                64,
                format!("--signal: {s:?} is not a signal name or number"),
            )
        })
}

/// Runs `command` under watch until it exits on its own.
pub async fn run(
    ctx: &Ctx,
    refs: &[(String, Option<SecretPath>)],
    allowed: &[String],
    command: &[String],
    watching: Watching,
) -> Result<(), Failure> {
    let notify = watching.signal.as_deref().map(parse_signal).transpose()?;
    let vaults: Vec<String> = refs
        .iter()
        .map(|(v, _)| v.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (forward, mut signals) = tokio::sync::mpsc::channel(16);
    for (kind, sig) in FORWARDED {
        let mut stream = signal(kind).map_err(|e| Failure::new(71, format!("signals: {e}")))?;
        let forward = forward.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if forward.send(sig).await.is_err() {
                    break;
                }
            }
        });
    }
    // Watch first, then read: a change in between is not missed.
    let mut watch = Some(open_watch(ctx, &vaults).await?);
    let mut env = load_env(ctx, refs, allowed).await?;
    let mut child = spawn(command, &env)?;
    let mut pause = REWATCH_FIRST;
    loop {
        let event = tokio::select! {
            status = child.wait() => {
                let status = status?;
                return exit_with(status);
            }
            Some(sig) = signals.recv() => {
                send(&child, sig);
                continue;
            }
            moved = next_change(&mut watch) => moved,
            _ = tokio::time::sleep(pause), if watch.is_none() => {
                match open_watch(ctx, &vaults).await {
                    Ok(w) => {
                        watch = Some(w);
                        pause = REWATCH_FIRST;
                        true
                    }
                    Err(_) => {
                        pause = (pause * 2).min(REWATCH_MAX);
                        false
                    }
                }
            }
        };
        if !event {
            continue;
        }
        let fresh = match load_env(ctx, refs, allowed).await {
            Ok(fresh) => fresh,
            Err(e) => {
                esay!("keynode: kept the command on its old values: {}", e.message);
                continue;
            }
        };
        if fresh == env {
            continue;
        }
        env = fresh;
        match notify {
            Some(sig) => send(&child, sig),
            None => {
                stop(&mut child, watching.stop_timeout).await?;
                child = spawn(command, &env)?;
            }
        }
    }
}

async fn open_watch(ctx: &Ctx, vaults: &[String]) -> Result<keynode_client::Watch, Failure> {
    let (_, watch) = ctx.client().await?.watch(vaults.to_vec()).await?;
    Ok(watch)
}

/// Whether a watched vault moved (`true`), or the watch ended (`false`; it is
/// dropped and taken up again later).
async fn next_change(watch: &mut Option<keynode_client::Watch>) -> bool {
    let Some(w) = watch.as_mut() else {
        return std::future::pending().await;
    };
    match w.next().await {
        Ok(Some(_)) => true,
        Ok(None) | Err(_) => {
            *watch = None;
            false
        }
    }
}

fn spawn(command: &[String], env: &BTreeMap<String, String>) -> Result<Child, Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::new(64, "--watch needs a command after --"))?;
    Command::new(program)
        .args(args)
        .envs(env)
        .spawn()
        .map_err(|e| Failure::new(69, format!("cannot run {program:?}: {e}")))
}

fn send(child: &Child, sig: Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // Gone already: its exit is about to be seen.
        let _ = kill_process(pid, sig);
    }
}

/// SIGTERM, then SIGKILL if it has not exited after `timeout`.
async fn stop(child: &mut Child, timeout: Duration) -> Result<(), Failure> {
    send(child, Signal::TERM);
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        child.kill().await?;
    }
    Ok(())
}

fn exit_with(status: std::process::ExitStatus) -> Result<(), Failure> {
    let code = match (status.code(), status.signal()) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    Err(Failure::exit(u8::try_from(code).unwrap_or(1)))
}

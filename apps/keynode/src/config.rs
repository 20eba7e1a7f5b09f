//! `keynode.toml`: the settings of `agent start` from a file.
//!
//! Every key is an `agent start` flag's name with `_` for `-`; a flag beats
//! its environment variable, which beats the file, which beats the default
//! (clap says where each value came from). A missing default file is no
//! file; a file named with `--config` must exist. Anything wrong in the file
//! (its syntax, an unknown key, a value of the wrong type or form) is one
//! line naming the file and the key, and exit 78 (`EX_CONFIG`).

use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::de::DeserializeOwned;

use crate::Failure;
use crate::cli::StartArgs;

/// The config file's name in the node path.
pub const FILE_NAME: &str = "keynode.toml";
/// The exit code of a bad config (sysexits `EX_CONFIG`).
pub const EX_CONFIG: u8 = 78;

/// Every key a config file may hold.
pub const KEYS: &[&str] = &[
    "agent_host",
    "agent_port",
    "seed_nodes",
    "max_vault_bytes",
    "max_state_bytes",
    "dht",
    "dht_bootstrap",
    "relay_serve",
    "relays",
    "no_listen",
    "password_file",
    "metrics",
    "log",
];

/// A loaded config file.
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Failure {
    Failure::new(EX_CONFIG, format!("config {}: {what}", path.display()))
}

impl ConfigFile {
    /// The file `explicit` names, else `keynode.toml` in `node_path` if it
    /// exists; `None` when there is no file to read.
    pub fn load(explicit: Option<&Path>, node_path: &Path) -> Result<Option<ConfigFile>, Failure> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => {
                let p = node_path.join(FILE_NAME);
                if !p.exists() {
                    return Ok(None);
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e))?;
        Self::parse(path, &text).map(Some)
    }

    /// A config from `text` (read from `path`).
    pub fn parse(path: PathBuf, text: &str) -> Result<ConfigFile, Failure> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let at = 1 + text[..span.start].matches('\n').count();
                    bad(&path, format!("line {at}: {line}"))
                }
                None => bad(&path, line),
            }
        })?;
        let mut unknown: Vec<&String> = table
            .keys()
            .filter(|k| !KEYS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(key) = unknown.first() {
            return Err(bad(
                &path,
                format!("unknown key `{key}` (known keys: {})", KEYS.join(", ")),
            ));
        }
        Ok(ConfigFile { path, table })
    }

    /// The value of `key`, if the file has it.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Failure> {
        let Some(value) = self.table.get(key) else {
            return Ok(None);
        };
        value
            .clone()
            .try_into()
            .map(Some)
            .map_err(|e: toml::de::Error| bad(&self.path, format!("key `{key}`: {}", e.message())))
    }

    /// A list of strings, joined with `sep` as its flag takes it.
    fn list(&self, key: &str, sep: &str) -> Result<Option<String>, Failure> {
        Ok(self.get::<Vec<String>>(key)?.map(|l| l.join(sep)))
    }

    fn invalid(&self, key: &str, why: impl std::fmt::Display) -> Failure {
        bad(&self.path, format!("key `{key}`: {why}"))
    }
}

/// Whether the value of flag `id` is only its default (neither given nor
/// from its environment variable).
fn defaulted(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        None | Some(ValueSource::DefaultValue)
    )
}

/// Fills every setting of `args` that neither a flag nor an environment
/// variable set from `file`. Every value in the file is checked as its flag
/// would be, used or not (errors name the key, exit 78). Returns the file's
/// log filter, for when no flag or variable chose one.
pub fn apply(
    args: &mut StartArgs,
    matches: &ArgMatches,
    file: &ConfigFile,
) -> Result<Option<String>, Failure> {
    let agent_host: Option<String> = file.get("agent_host")?;
    let agent_port: Option<u16> = file.get("agent_port")?;
    let seed_nodes = file.list("seed_nodes", ";")?;
    if let Some(v) = &seed_nodes {
        keynode_agent::parse_seed_nodes(v).map_err(|e| file.invalid("seed_nodes", e))?;
    }
    let max_vault_bytes: Option<u64> = file.get("max_vault_bytes")?;
    let max_state_bytes: Option<usize> = file.get("max_state_bytes")?;
    let dht: Option<bool> = file.get("dht")?;
    // An empty list means the default: the public bootstrap nodes.
    let dht_bootstrap = file
        .list("dht_bootstrap", ",")?
        .filter(|list| !list.is_empty());
    let relay_serve: Option<bool> = file.get("relay_serve")?;
    let relays = file.list("relays", ";")?;
    if let Some(v) = &relays {
        crate::agent::parse_relays(v).map_err(|e| file.invalid("relays", e.message))?;
    }
    let no_listen: Option<bool> = file.get("no_listen")?;
    let password_file: Option<PathBuf> = file.get("password_file")?;
    let metrics = match file.get::<String>("metrics")? {
        Some(addr) => Some(Some(addr.parse::<std::net::SocketAddr>().map_err(|e| {
            file.invalid("metrics", format!("{addr}: {e} (want HOST:PORT)"))
        })?)),
        None => None,
    };
    let log: Option<String> = file.get("log")?;
    if let Some(filter) = &log {
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| file.invalid("log", e))?;
    }

    let take = |id: &str| defaulted(matches, id);
    fn set<T>(slot: &mut T, value: Option<T>, free: bool) {
        if let (Some(v), true) = (value, free) {
            *slot = v;
        }
    }
    set(&mut args.agent_host, agent_host, take("agent_host"));
    set(&mut args.agent_port, agent_port, take("agent_port"));
    set(&mut args.seed_nodes, seed_nodes, take("seed_nodes"));
    set(
        &mut args.max_vault_bytes,
        max_vault_bytes,
        take("max_vault_bytes"),
    );
    set(
        &mut args.max_state_bytes,
        max_state_bytes,
        take("max_state_bytes"),
    );
    let dht = dht.map(|on| if on { "on" } else { "off" }.to_owned());
    set(&mut args.dht, dht, take("dht"));
    set(
        &mut args.dht_bootstrap,
        dht_bootstrap.map(Some),
        take("dht_bootstrap"),
    );
    set(&mut args.relay_serve, relay_serve, take("relay_serve"));
    set(&mut args.relays, relays, take("relays"));
    set(&mut args.no_listen, no_listen, take("no_listen"));
    set(&mut args.metrics, metrics, take("metrics"));
    // The password file comes after KEYNODE_PASSWORD and a systemd credential.
    let password_free = take("password_file")
        && std::env::var_os(crate::password::PASSWORD_ENV).is_none()
        && credential().is_none();
    set(
        &mut args.password_file,
        password_file.map(Some),
        password_free,
    );
    Ok(log)
}

/// The systemd credential holding the password
/// (`LoadCredential=password:…` in the unit), if the service manager gave
/// one.
pub fn credential() -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join("password");
    path.is_file().then_some(path)
}

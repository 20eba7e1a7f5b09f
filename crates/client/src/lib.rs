//! Talk to a running keynode agent from Rust: read a secret in five lines.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keynode_client::ClientError> {
//! let agent = keynode_client::Agent::local(); // KEYNODE_NODE_PATH, else ~/.local/share/keynode
//! let password = agent.read("prod", "db/password").await?;
//! println!("{}", String::from_utf8_lossy(&password));
//! # Ok(()) }
//! ```
//!
//! This crate is the agent's client protocol ([`api`]: requests, responses,
//! frames over the agent's Unix socket), a connection that carries one
//! request ([`Client`]), and [`Agent`], a typed async client that opens one
//! per call. It depends on no storage, no git and no network stack: the node
//! is the agent's business (`keynode-agent`, which re-exports this crate's
//! types). The `keynode` CLI and the harness drive agents through it.
//!
//! Errors carry the agent's kind ([`api::ErrorKind`]: not found, permission
//! denied…) and a sysexits code ([`ClientError::exit_code`]). A secret is
//! returned as the bytes stored; nothing here logs or keeps a value.

pub mod api;
pub mod client;
pub mod paths;

use std::path::{Path, PathBuf};

pub use client::{Client, ClientError, Watch};
pub use paths::{NODE_PATH_ENV, NodePaths};

use api::{AgentStatus, Entry, Request, Response, VaultMeta, WatchedVault};
use keynode_core::SecretPath;

/// A running agent, by its node path: each call connects, sends one request
/// and reads its answer. Cheap to clone and to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    paths: NodePaths,
}

fn secret_path(path: &str) -> Result<SecretPath, ClientError> {
    SecretPath::new(path).map_err(|e| {
        ClientError::Api(api::ApiError::new(
            api::ErrorKind::BadData,
            format!("secret path {path:?}: {e}"),
        ))
    })
}

fn unexpected(what: &str, got: Response) -> ClientError {
    ClientError::Protocol(format!("expected {what}, got {got:?}"))
}

impl Agent {
    /// The agent of the node at `node_path`.
    pub fn new(node_path: impl Into<PathBuf>) -> Agent {
        Agent {
            paths: NodePaths::new(node_path),
        }
    }

    /// The agent of this user's node: `KEYNODE_NODE_PATH`, else
    /// `$XDG_DATA_HOME/keynode`, else `~/.local/share/keynode` (as the CLI).
    pub fn local() -> Agent {
        Agent {
            paths: NodePaths::resolve(None),
        }
    }

    /// The node path.
    pub fn node_path(&self) -> &Path {
        &self.paths.root
    }

    /// A connection for one request (see [`Client`] for uploads, downloads
    /// and watches of your own).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.paths.socket()).await
    }

    /// Sends any unary request and returns the response.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.connect().await?.call(request).await
    }

    /// The agent's status: its node id, listen address, storage use.
    pub async fn status(&self) -> Result<AgentStatus, ClientError> {
        match self.call(Request::AgentStatus).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("a status", other)),
        }
    }

    /// The content of secret `path` in `vault` (a name or an id), at the head.
    pub async fn read(&self, vault: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        self.read_at(vault, path, None).await
    }

    /// The content of secret `path` in `vault` as of revision `at` (a commit
    /// id), or at the head.
    pub async fn read_at(
        &self,
        vault: &str,
        path: &str,
        at: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let request = Request::SecretsGet {
            vault: vault.to_owned(),
            path: secret_path(path)?,
            at: at.map(str::to_owned),
        };
        let mut out = Vec::new();
        self.connect().await?.download(request, &mut out).await?;
        Ok(out)
    }

    /// Writes `value` at `path` in `vault`, overwriting, as one commit.
    pub async fn write(&self, vault: &str, path: &str, value: &[u8]) -> Result<(), ClientError> {
        let request = Request::SecretsWrite {
            vault: vault.to_owned(),
            path: secret_path(path)?,
            create_new: false,
        };
        let mut data = value;
        self.connect().await?.upload(request, &mut data).await?;
        Ok(())
    }

    /// The entries of directory `dir` in `vault` (the root when `None`).
    pub async fn list(&self, vault: &str, dir: Option<&str>) -> Result<Vec<Entry>, ClientError> {
        let request = Request::SecretsList {
            vault: vault.to_owned(),
            path: dir.map(secret_path).transpose()?,
            at: None,
        };
        match self.call(request).await? {
            Response::Entries(entries) => Ok(entries),
            other => Err(unexpected("entries", other)),
        }
    }

    /// Environment variables from secrets: each `(vault, path)` names a
    /// secret, or a directory (`None`: the vault's root) whose every secret
    /// becomes one; names as `secrets env` makes them.
    pub async fn env(
        &self,
        refs: &[(&str, Option<&str>)],
    ) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let refs = refs
            .iter()
            .map(|(vault, path)| Ok(((*vault).to_owned(), path.map(secret_path).transpose()?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        match self.call(Request::SecretsEnv { refs }).await? {
            Response::Env(vars) => Ok(vars),
            other => Err(unexpected("environment variables", other)),
        }
    }

    /// The node's vaults.
    pub async fn vaults(&self) -> Result<Vec<VaultMeta>, ClientError> {
        match self.call(Request::VaultsList).await? {
            Response::Vaults(list) => Ok(list),
            other => Err(unexpected("vaults", other)),
        }
    }

    /// Watches `vaults` (names or ids): their heads now, and a [`Watch`]
    /// that yields every later move of one (a local write or a pulled
    /// change).
    pub async fn watch(&self, vaults: &[&str]) -> Result<(Vec<WatchedVault>, Watch), ClientError> {
        let vaults = vaults.iter().map(|v| (*v).to_owned()).collect();
        self.connect().await?.watch(vaults).await
    }
}

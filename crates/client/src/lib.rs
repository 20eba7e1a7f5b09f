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
//! frames over the agent's Unix socket), a connection that carries requests
//! one after another ([`Client`]), and [`Agent`], a typed async client that
//! keeps a few connections open between calls. It depends on no storage, no git and no network stack: the node
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use client::{Client, ClientError, Watch};
pub use paths::{NODE_PATH_ENV, NodePaths};

use api::{AgentStatus, ClientMsg, Entry, Request, Response, VaultMeta, WatchedVault};
use keynode_core::SecretPath;

/// Connections an [`Agent`] keeps open between calls (one per call running
/// at once, up to this many).
pub const IDLE_CONNECTIONS: usize = 8;
/// A kept connection unused for this long is closed rather than used: well
/// under the agent's own idle close (30 s).
pub const IDLE_FOR: Duration = Duration::from_secs(10);

/// A running agent, by its node path. A call takes a connection kept from an
/// earlier call (or opens one), sends its request and reads the answer; the
/// connection is kept for the next call if it ended in step. A kept
/// connection the agent has closed (it stopped or restarted) is noticed
/// before any of the request is sent, and a new one opened. Cheap to clone
/// (clones share the kept connections) and to keep.
#[derive(Clone)]
pub struct Agent {
    paths: NodePaths,
    socket: PathBuf,
    idle: Arc<Mutex<Vec<(Instant, Client)>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_path", &self.paths.root)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Agent {
    fn eq(&self, other: &Agent) -> bool {
        self.paths == other.paths && self.socket == other.socket
    }
}

impl Eq for Agent {}

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
        Agent::at(NodePaths::new(node_path))
    }

    /// The agent listening on `socket`, wherever its node is (the node path
    /// is taken to be the socket's directory).
    pub fn at_socket(socket: impl Into<PathBuf>) -> Agent {
        let socket = socket.into();
        let root = socket.parent().unwrap_or(Path::new(".")).to_path_buf();
        Agent {
            paths: NodePaths::new(root),
            socket,
            idle: Arc::default(),
        }
    }

    fn at(paths: NodePaths) -> Agent {
        Agent {
            socket: paths.socket(),
            paths,
            idle: Arc::default(),
        }
    }

    /// The agent of this user's node: `KEYNODE_NODE_PATH`, else
    /// `$XDG_DATA_HOME/keynode`, else `~/.local/share/keynode` (as the CLI).
    pub fn local() -> Agent {
        Agent::at(NodePaths::resolve(None))
    }

    /// The node path.
    pub fn node_path(&self) -> &Path {
        &self.paths.root
    }

    /// A new connection of your own (see [`Client`] for uploads, downloads
    /// and watches).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket).await
    }

    /// A connection with `request` sent on it: a kept one if one takes it,
    /// else a new one. A kept connection that fails here had read nothing of
    /// the request, so sending it again elsewhere is safe.
    async fn begin(&self, request: Request) -> Result<Client, ClientError> {
        let msg = ClientMsg::Request(request);
        while let Some(mut client) = self.kept() {
            if client.begin(&msg).await.is_ok() {
                return Ok(client);
            }
        }
        let mut client = self.connect().await?;
        client.begin(&msg).await?;
        Ok(client)
    }

    /// The most recently kept connection that is still open.
    fn kept(&self) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((since, client)) = idle.pop() {
            if since.elapsed() < IDLE_FOR && client.reusable() {
                return Some(client);
            }
        }
        None
    }

    /// How many connections are kept open for later calls now (shared with
    /// this `Agent`'s clones), at most [`IDLE_CONNECTIONS`].
    pub fn kept_connections(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Keeps `client` for a later call if it is in step and there is room.
    fn keep(&self, client: Client) {
        if !client.reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_CONNECTIONS {
            idle.push((Instant::now(), client));
        }
    }

    /// Sends any unary request and returns the response.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let mut client = self.begin(request).await?;
        let answer = client.answer().await;
        self.keep(client);
        answer
    }

    /// Sends `request` and writes the bytes it streams (a `SecretsGet`) to
    /// `out`; returns how many.
    pub async fn download(
        &self,
        request: Request,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let mut client = self.begin(request).await?;
        let got = client.download_rest(out).await;
        self.keep(client);
        got
    }

    /// Sends `request` (a `SecretsWrite`), then everything `data` yields.
    pub async fn upload(
        &self,
        request: Request,
        data: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<Response, ClientError> {
        let mut client = self.begin(request).await?;
        let answer = client.upload_rest(data).await;
        self.keep(client);
        answer
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
        self.download(request, &mut out).await?;
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
        self.upload(request, &mut data).await?;
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

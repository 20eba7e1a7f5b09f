//! Where a node keeps its state (SPEC §2).
//!
//! ```text
//! <node path>/            mode 0700
//!   agent.lock            held (flock) by the running agent; the kernel drops it
//!                         when the process dies, so a crash never blocks a restart
//!   agent.sock            the client socket, mode 0600
//!   status.json           pid, node id, status, listen address
//!   agent.log             log of a --background agent
//!   keys/root.key         the root Ed25519 key, sealed under the password (0600)
//!   keys/data.key         the data key, sealed under the root key (0600)
//!   state/                the node's one LMDB environment, encrypted under the
//!                         data key
//!   vaults/               one bare git repository per vault
//! ```

use std::path::{Path, PathBuf};

/// Environment variable naming the node path.
pub const NODE_PATH_ENV: &str = "KEYNODE_NODE_PATH";

/// The files and directories of one node path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The node path itself.
    pub root: PathBuf,
}

impl NodePaths {
    /// Paths under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The node path from `--node-path`, else `KEYNODE_NODE_PATH`, else
    /// `$XDG_DATA_HOME/keynode`, else `~/.local/share/keynode`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(p) = explicit {
            return Self::new(p);
        }
        if let Some(p) = std::env::var_os(NODE_PATH_ENV).filter(|p| !p.is_empty()) {
            return Self::new(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return Self::new(PathBuf::from(p).join("keynode"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        Self::new(home.join(".local/share/keynode"))
    }

    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        self.root.join("agent.lock")
    }
    /// The client socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
    /// The status file.
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// The background agent's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("agent.log")
    }
    /// The sealed root key.
    pub fn root_key(&self) -> PathBuf {
        self.root.join("keys").join("root.key")
    }
    /// The data key, sealed under the root key
    /// ([`keynode_core::datakey::write_file`]).
    pub fn data_key(&self) -> PathBuf {
        self.root.join("keys").join("data.key")
    }
    /// Says the root key was derived from a recovery code: holds the NodeId
    /// it was made for (public; the words are never stored).
    pub fn recovery_marker(&self) -> PathBuf {
        self.root.join("keys").join("recovery")
    }
    /// The LMDB environment directory.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The vault repositories.
    pub fn vaults(&self) -> PathBuf {
        self.root.join("vaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let p = NodePaths::resolve(Some(Path::new("/tmp/x")));
        assert_eq!(p.root, PathBuf::from("/tmp/x"));
        assert_eq!(p.socket(), PathBuf::from("/tmp/x/agent.sock"));
    }
}

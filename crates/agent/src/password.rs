//! Changing the password that seals a node's root key (`keynode agent password`).
//!
//! The password seals only `keys/root.key` (see [`keynode_core::keystore`]); the
//! root key wraps the data key that encrypts everything else. So a change
//! re-seals that one file, atomically, with a fresh salt and nonce, and touches
//! no other byte of the node path.
//!
//! Two ways in, both checking the current password first:
//!
//! - a running agent serves [`crate::api::Request::AgentPassword`] (`Rekey`):
//!   holding the key is not enough, a client that merely reaches the socket
//!   must still know the current password. The change is recorded in the audit
//!   log (`password_changed`, no secrets).
//! - with no agent running, [`change_password`] works on the key file directly
//!   while holding the agent lock, so an agent starting meanwhile either waits
//!   its turn (it is refused as "already running") or reads the file whole,
//!   old or new. This change is not in the audit log: the log lives in the
//!   node's state, which only a running agent opens.

use std::path::{Path, PathBuf};

use keynode_core::NodeId;
use keynode_core::keystore::{self, KeystoreError};

use crate::api::{ApiError, ErrorKind, Password};
use crate::paths::NodePaths;
use crate::status::{AgentLock, LockError};

/// A password change failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The new password is empty.
    #[error("the new password is empty")]
    Empty,
    /// The current password does not open the root key.
    #[error("wrong password for the node at {0}")]
    WrongPassword(PathBuf),
    /// The node path has no key file (no agent ever started there).
    #[error("no node at {0}: it has no root key yet (`keynode agent start` creates one)")]
    NoNode(PathBuf),
    /// The key file opened to another node than the running one.
    #[error("the key file holds node {found}, but this agent runs node {running}")]
    OtherNode {
        /// The node the agent runs.
        running: NodeId,
        /// The node the key file holds.
        found: NodeId,
    },
    /// An agent holds (or is taking) the node path.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The key file could not be read, opened or written.
    #[error("cannot re-seal the root key")]
    Key(#[source] KeystoreError),
    /// The recovery code does not read (a word, the count or the checksum).
    #[error(transparent)]
    BadCode(#[from] keynode_core::recovery::RecoveryError),
    /// The recovery code is a valid code, but not this node's.
    #[error("this recovery code is not the code of the node at {0}")]
    WrongCode(PathBuf),
}

impl PasswordError {
    /// The client-protocol error for this failure.
    pub fn to_api(&self) -> ApiError {
        let kind = match self {
            PasswordError::Empty => ErrorKind::Usage,
            PasswordError::WrongPassword(_) => ErrorKind::PermissionDenied,
            PasswordError::NoNode(_) => ErrorKind::NotFound,
            PasswordError::OtherNode { .. } => ErrorKind::BadData,
            PasswordError::Locked(_) => ErrorKind::Temporary,
            PasswordError::Key(KeystoreError::Corrupt(_)) => ErrorKind::BadData,
            PasswordError::Key(_) => ErrorKind::Io,
            PasswordError::BadCode(_) => ErrorKind::BadData,
            PasswordError::WrongCode(_) => ErrorKind::PermissionDenied,
        };
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ApiError::new(kind, message)
    }
}

/// Re-seals the key file at `key_file` (of the node at `root`) from `current`
/// to `new`; returns the node's id. Blocking: Argon2id runs twice (open, seal).
fn reseal_file(
    root: &Path,
    key_file: &Path,
    current: &[u8],
    new: &[u8],
    running: Option<NodeId>,
) -> Result<NodeId, PasswordError> {
    if new.is_empty() {
        return Err(PasswordError::Empty);
    }
    let bytes = match std::fs::read(key_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PasswordError::NoNode(root.to_path_buf()));
        }
        Err(e) => return Err(PasswordError::Key(e.into())),
    };
    let (key, sealed) = keystore::reseal(&bytes, current, new).map_err(|e| match e {
        KeystoreError::WrongPassword => PasswordError::WrongPassword(root.to_path_buf()),
        e => PasswordError::Key(e),
    })?;
    let found = key.node_id();
    if let Some(running) = running.filter(|r| *r != found) {
        return Err(PasswordError::OtherNode { running, found });
    }
    keystore::write_private_file(key_file, &sealed).map_err(|e| PasswordError::Key(e.into()))?;
    Ok(found)
}

/// Changes the password of the node at `paths` while no agent runs there:
/// takes the agent lock for the duration (an agent running or starting is
/// [`PasswordError::Locked`]; ask it instead), checks `current`, re-seals the
/// root key under `new`. Returns the node's id. Blocking: call it off any event
/// loop.
pub fn change_password(
    paths: &NodePaths,
    current: &[u8],
    new: &[u8],
) -> Result<NodeId, PasswordError> {
    if new.is_empty() {
        return Err(PasswordError::Empty);
    }
    if !paths.root_key().exists() {
        return Err(PasswordError::NoNode(paths.root.clone()));
    }
    let _lock = AgentLock::acquire(&paths.lock())?;
    let id = reseal_file(&paths.root, &paths.root_key(), current, new, None)?;
    tracing::info!(node_id = %id, path = %paths.root.display(), "password changed");
    Ok(id)
}

/// Whether `key` is the root key of the node at `paths`: it opens the node's
/// data key (sealed under the root key), or, on a node that never wrote one,
/// it is the node the status file names.
fn is_root_of(paths: &NodePaths, key: &keynode_core::Keypair) -> bool {
    if paths.data_key().exists() {
        return keynode_core::datakey::read_file(&paths.data_key(), key).is_ok();
    }
    crate::status::read_status(&paths.status()).is_some_and(|s| s.node_id == key.node_id())
}

/// Seals the root key that `code` stands for under `new`, if it is the key of
/// the node at `paths` (nothing is written otherwise). Blocking (Argon2id).
fn reseal_from_code(
    paths: &NodePaths,
    code: &str,
    new: &[u8],
    running: Option<NodeId>,
) -> Result<NodeId, PasswordError> {
    if new.is_empty() {
        return Err(PasswordError::Empty);
    }
    if !paths.root_key().exists() {
        return Err(PasswordError::NoNode(paths.root.clone()));
    }
    let code = keynode_core::recovery::RecoveryCode::parse(code)?;
    let key = code.keypair();
    let mine = match running {
        Some(id) => id == key.node_id() && is_root_of(paths, &key),
        None => is_root_of(paths, &key),
    };
    if !mine {
        return Err(PasswordError::WrongCode(paths.root.clone()));
    }
    keystore::write_key_file(&paths.root_key(), &key, new, keystore::KdfParams::DEFAULT)
        .map_err(PasswordError::Key)?;
    crate::disk::mark_recoverable(paths, key.node_id())
        .map_err(|e| PasswordError::Key(e.into()))?;
    Ok(key.node_id())
}

/// Sets a new password on the node at `paths` from its recovery code, the old
/// password forgotten, while no agent runs there (under the agent lock). A
/// code that is not this node's is [`PasswordError::WrongCode`] and changes
/// nothing. Blocking.
pub fn reset_with_code(paths: &NodePaths, code: &str, new: &[u8]) -> Result<NodeId, PasswordError> {
    if new.is_empty() {
        return Err(PasswordError::Empty);
    }
    if !paths.root_key().exists() {
        return Err(PasswordError::NoNode(paths.root.clone()));
    }
    let _lock = AgentLock::acquire(&paths.lock())?;
    let id = reseal_from_code(paths, code, new, None)?;
    tracing::info!(node_id = %id, path = %paths.root.display(), "password reset from the recovery code");
    Ok(id)
}

/// A running agent's side of `agent password`: one change at a time (so two
/// concurrent changes cannot both pass the check against the same old
/// password, and hostile clients cannot pile up Argon2 work), each on the
/// blocking pool.
pub(crate) struct Rekey {
    paths: NodePaths,
    root: PathBuf,
    key_file: PathBuf,
    node_id: NodeId,
    one_at_a_time: tokio::sync::Mutex<()>,
    exec: keynode_core::exec::Exec,
}

impl Rekey {
    pub(crate) fn new(paths: &NodePaths, node_id: NodeId, exec: keynode_core::exec::Exec) -> Rekey {
        Rekey {
            paths: paths.clone(),
            root: paths.root.clone(),
            key_file: paths.root_key(),
            node_id,
            one_at_a_time: tokio::sync::Mutex::new(()),
            exec,
        }
    }

    /// Checks `current` against the key file and re-seals it under `new`.
    pub(crate) async fn change(&self, current: Password, new: Password) -> Result<(), ApiError> {
        if new.expose().is_empty() {
            return Err(PasswordError::Empty.to_api());
        }
        let _turn = self.one_at_a_time.lock().await;
        let (root, key_file, running) = (self.root.clone(), self.key_file.clone(), self.node_id);
        keynode_core::exec::blocking(self.exec.as_ref(), move || {
            reseal_file(
                &root,
                &key_file,
                current.expose(),
                new.expose(),
                Some(running),
            )
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("password change: {e}")))?
        .map_err(|e| e.to_api())?;
        tracing::info!(node_id = %self.node_id, "password changed");
        Ok(())
    }

    /// Checks that `code` is this node's recovery code and seals the root key
    /// under `new`.
    pub(crate) async fn recover(&self, code: Password, new: Password) -> Result<(), ApiError> {
        if new.expose().is_empty() {
            return Err(PasswordError::Empty.to_api());
        }
        let _turn = self.one_at_a_time.lock().await;
        let (paths, running) = (self.paths.clone(), self.node_id);
        keynode_core::exec::blocking(self.exec.as_ref(), move || {
            let code = String::from_utf8_lossy(code.expose()).into_owned();
            let code = zeroize::Zeroizing::new(code);
            reseal_from_code(&paths, &code, new.expose(), Some(running))
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("password reset: {e}")))?
        .map_err(|e| e.to_api())?;
        tracing::info!(node_id = %self.node_id, "password reset from the recovery code");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keynode_core::Keypair;
    use keynode_core::keystore::KdfParams;

    fn node() -> (tempfile::TempDir, NodePaths, Keypair) {
        let dir = tempfile::tempdir().unwrap();
        let paths = NodePaths::new(dir.path().join("node"));
        std::fs::create_dir_all(paths.root_key().parent().unwrap()).unwrap();
        let key = Keypair::generate();
        keystore::write_key_file(&paths.root_key(), &key, b"old", KdfParams::DEFAULT).unwrap();
        (dir, paths, key)
    }

    #[test]
    fn offline_change_checks_the_password_and_the_lock() {
        let (_dir, paths, key) = node();
        assert!(matches!(
            change_password(&paths, b"old", b""),
            Err(PasswordError::Empty)
        ));
        assert!(matches!(
            change_password(&paths, b"wrong", b"new"),
            Err(PasswordError::WrongPassword(_))
        ));
        {
            let _agent = AgentLock::acquire(&paths.lock()).unwrap();
            let e = change_password(&paths, b"old", b"new").unwrap_err();
            assert!(matches!(e, PasswordError::Locked(_)));
            assert_eq!(e.to_api().kind, ErrorKind::Temporary);
        }
        assert_eq!(
            change_password(&paths, b"old", b"new").unwrap(),
            key.node_id()
        );
        let reopened = keystore::read_key_file(&paths.root_key(), b"new").unwrap();
        assert_eq!(reopened.node_id(), key.node_id());
        // The lock was released.
        assert!(!AgentLock::is_held(&paths.lock()));

        let empty = NodePaths::new(paths.root.join("elsewhere"));
        assert!(matches!(
            change_password(&empty, b"old", b"new"),
            Err(PasswordError::NoNode(_))
        ));
    }

    #[tokio::test]
    async fn agent_change_refuses_a_key_file_of_another_node() {
        let (_dir, paths, _key) = node();
        let rekey = Rekey::new(
            &paths,
            Keypair::generate().node_id(),
            keynode_core::exec::threads(),
        );
        let e = rekey
            .change(Password::new("old"), Password::new("new"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadData);
        // Untouched.
        keystore::read_key_file(&paths.root_key(), b"old").unwrap();
    }

    #[tokio::test]
    async fn agent_change_maps_errors_to_kinds() {
        let (_dir, paths, key) = node();
        let rekey = Rekey::new(&paths, key.node_id(), keynode_core::exec::threads());
        let wrong = rekey
            .change(Password::new("x"), Password::new("new"))
            .await
            .unwrap_err();
        assert_eq!(wrong.kind, ErrorKind::PermissionDenied);
        assert!(
            wrong.message.contains("wrong password"),
            "{}",
            wrong.message
        );
        let empty = rekey
            .change(Password::new("old"), Password::new(""))
            .await
            .unwrap_err();
        assert_eq!(empty.kind, ErrorKind::Usage);
        rekey
            .change(Password::new("old"), Password::new("new"))
            .await
            .unwrap();
        keystore::read_key_file(&paths.root_key(), b"new").unwrap();
    }

    #[test]
    fn passwords_are_not_printed() {
        let r = crate::api::Request::AgentPassword {
            current: Password::new("hunter2"),
            new: Password::new("correct horse"),
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("correct"),
            "{shown}"
        );
    }
}

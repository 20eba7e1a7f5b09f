//! The status file and the agent lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::api::AgentStatus;

/// Writes the status file atomically.
pub fn write_status(path: &Path, status: &AgentStatus) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    keynode_core::keystore::write_private_file(path, &json)
}

/// Reads the status file, if any.
pub fn read_status(path: &Path) -> Option<AgentStatus> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The agent lock: an exclusive `flock` on `agent.lock`, released by the kernel
/// when the process exits however it exits.
#[derive(Debug)]
pub struct AgentLock {
    file: File,
}

/// Another agent holds the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Held by another live agent.
    #[error("another agent is already running on this node path (pid {pid})")]
    Held {
        /// The pid recorded by the holder (0 if unknown).
        pid: u32,
    },
    /// The lock file could not be opened.
    #[error("cannot open the agent lock")]
    Io(#[from] io::Error),
}

impl AgentLock {
    /// Takes the lock at `path` without waiting, recording our pid in it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(LockError::Held {
                    pid: s.trim().parse().unwrap_or(0),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Self { file })
    }

    /// Whether some agent holds the lock at `path` right now.
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for AgentLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        let lock = AgentLock::acquire(&path).unwrap();
        assert!(AgentLock::is_held(&path));
        match AgentLock::acquire(&path) {
            Err(LockError::Held { pid }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert!(!AgentLock::is_held(&path));
        let _again = AgentLock::acquire(&path).unwrap();
    }
}

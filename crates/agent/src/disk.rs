//! The node's keys and state on disk: the root key, the data key, the layout
//! check and the LMDB environment.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use keynode_core::Keypair;
use keynode_core::datakey::{self, DataKey};
use keynode_core::keystore::{self, KdfParams, KeystoreError};
use keynode_core::recovery::RecoveryCode;

use crate::config::StartError;
use crate::paths::NodePaths;

/// Default largest the LMDB map may grow, in bytes (a sparse maximum, not an
/// allocation; [`NodeConfig::max_state_bytes`](crate::NodeConfig::max_state_bytes)).
pub const LMDB_MAP_SIZE: usize = 16 * 1024 * 1024 * 1024;
/// Named LMDB databases the environment may hold.
pub const LMDB_MAX_DBS: u32 = 64;

pub(crate) fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |e| StartError::Io(e, what.to_owned())
}

/// Creates `path` (mode 0700) if missing and makes it 0700 if it exists with
/// wider permissions: nothing under a node path is anyone else's business.
pub(crate) fn private_dir(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("creating the node path"))?;
    let mode = std::fs::metadata(path)
        .map_err(io_err("reading the node path"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("making the node path private"))?;
    }
    Ok(())
}

/// Where a started node's root key came from.
pub(crate) enum KeyOrigin {
    /// It was on disk.
    Existing,
    /// Made now: from the recovery code given, or (`Some`) from a new one,
    /// to be shown once.
    Created(Option<RecoveryCode>),
}

/// Loads the root key, creating it (and the node's identity) on first start:
/// from `code` if given (the same NodeId as the node the code was made for),
/// else from a fresh recovery code.
pub(crate) fn load_or_create_key(
    paths: &NodePaths,
    password: &[u8],
    kdf: KdfParams,
    code: Option<&RecoveryCode>,
) -> Result<(Keypair, KeyOrigin), StartError> {
    let path = paths.root_key();
    if path.exists() {
        if code.is_some() {
            return Err(StartError::RecoveryOnExistingNode(paths.root.clone()));
        }
        return match keystore::read_key_file(&path, password) {
            Ok(k) => Ok((k, KeyOrigin::Existing)),
            Err(KeystoreError::WrongPassword) => Err(StartError::WrongPassword(paths.root.clone())),
            Err(e) => Err(StartError::Key(e)),
        };
    }
    private_dir(&paths.root.join("keys"))?;
    let (key, new_code) = match code {
        Some(code) => (code.keypair(), None),
        None => {
            let code = RecoveryCode::generate();
            (code.keypair(), Some(code))
        }
    };
    keystore::write_key_file(&path, &key, password, kdf).map_err(StartError::Key)?;
    mark_recoverable(paths, key.node_id()).map_err(io_err("writing the recovery marker"))?;
    Ok((key, KeyOrigin::Created(new_code)))
}

/// Records that `node`'s root key derives from a recovery code.
pub(crate) fn mark_recoverable(
    paths: &NodePaths,
    node: keynode_core::NodeId,
) -> std::io::Result<()> {
    keystore::write_private_file(&paths.recovery_marker(), format!("{node}\n").as_bytes())
}

/// Whether `node`'s root key derives from a recovery code (a node made before
/// keynode had them has none).
pub fn has_recovery_code(paths: &NodePaths, node: keynode_core::NodeId) -> bool {
    std::fs::read_to_string(paths.recovery_marker()).is_ok_and(|s| s.trim() == node.to_string())
}

/// Whether `dir` exists and holds anything.
pub(crate) fn non_empty(dir: &Path) -> Result<bool, StartError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StartError::Io(e, format!("reading {}", dir.display()))),
    }
}

pub(crate) fn exists(path: &Path) -> Result<bool, StartError> {
    path.try_exists()
        .map_err(|e| StartError::Io(e, format!("reading {}", path.display())))
}

/// Refuses a node path this version must not open, reading only: state or
/// vaults without a data key were written by an earlier, unencrypted version
/// (this version writes the data key before any state), and a data key
/// without its root key cannot be opened.
pub(crate) fn check_layout(paths: &NodePaths) -> Result<(), StartError> {
    if exists(&paths.data_key())? {
        if !exists(&paths.root_key())? {
            return Err(StartError::RootKeyMissing(paths.root.clone()));
        }
        return Ok(());
    }
    if non_empty(&paths.state())? || non_empty(&paths.vaults())? {
        return Err(StartError::EarlierVersion(paths.root.clone()));
    }
    Ok(())
}

/// Loads the data key sealed by `root`, creating it on a node that holds no
/// state yet (a new node, or one whose first start stopped before writing it).
pub(crate) fn load_or_create_data_key(
    paths: &NodePaths,
    root: &Keypair,
) -> Result<DataKey, StartError> {
    let path = paths.data_key();
    if exists(&path)? {
        return datakey::read_file(&path, root).map_err(|e| StartError::DataKey(path, e));
    }
    check_layout(paths)?;
    let key = DataKey::generate();
    datakey::write_file(&path, &key, root).map_err(|e| StartError::DataKey(path, e))?;
    Ok(key)
}

/// Whether LMDB failed to authenticate a page somewhere in `e`'s causes.
pub(crate) fn is_crypto_fail(e: &StartError) -> bool {
    use keynode_core::store::heed3::{Error, MdbError};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(Error::Mdb(MdbError::CryptoFail)) = c.downcast_ref::<Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Opens the node's one environment, encrypted under `key`.
pub(crate) fn open_env(
    dir: &Path,
    key: &DataKey,
    map_size: usize,
) -> Result<keynode_core::store::Env, StartError> {
    private_dir(dir)?;
    // The agent lock (held by the caller) guarantees one node per node path, and
    // each node opens its environment exactly once (see `open_env`'s safety note).
    keynode_core::store::open_env(dir, key, map_size, LMDB_MAX_DBS).map_err(StartError::Storage)
}

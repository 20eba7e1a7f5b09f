//! The node's one LMDB environment, encrypted at rest.
//!
//! Every actor keeps its state in named databases of one environment per node.
//! The environment is LMDB's `mdb.master3` with page-level encryption (through
//! `heed3`): every page (keys, values, the B-tree structure, free lists) is
//! sealed with ChaCha20-Poly1305 under a key derived from the node's
//! [`DataKey`](crate::datakey::DataKey), using LMDB's unique per-page nonces, and
//! authenticated on read. So no database needs its own codec-level encryption
//! and no key (a vault name, an identity) leaks through the key space.
//!
//! One consequence of page decryption shows in the API: reads take the read
//! transaction by `&mut` and a value borrowed from one read must be dropped (or
//! copied) before the next read in the same transaction.

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::{ChaCha20Poly1305, Key};

use crate::datakey::DataKey;

pub use heed3;

/// The environment type every store opens its databases in.
///
/// Shared by reference count: `heed3::EncryptedEnv<WithoutTls>` is not `Clone`
/// (its derive bounds the TLS marker), while every store of a node holds the same
/// environment. Methods are reached through `Deref`.
pub type Env = Arc<heed3::EncryptedEnv<heed3::WithoutTls>>;

/// Default maximal map size (the file grows as needed, up to this).
pub const DEFAULT_MAP_SIZE: usize = 16 << 30;
/// Named databases an environment may hold.
pub const DEFAULT_MAX_DBS: u32 = 64;

/// Context for deriving the LMDB page key from the data key.
const PAGE_KEY_CONTEXT: &str = "keynode/1 lmdb pages";

/// Opens (creating if needed) the encrypted environment in `dir`.
///
/// Opening an existing environment with another key fails (LMDB reports an
/// encryption mismatch / authentication failure on the first page).
#[allow(unsafe_code)]
pub fn open_env(
    dir: &Path,
    key: &DataKey,
    map_size: usize,
    max_dbs: u32,
) -> Result<Env, heed3::Error> {
    let page_key = key.derive(PAGE_KEY_CONTEXT);
    let key = Key::clone_from_slice(page_key.expose());
    // SAFETY: LMDB requires that an environment is opened at most once per process
    // (heed3 checks this and returns `EnvAlreadyOpened`) and that its files are not
    // modified by other means while open. Callers own their directory: the agent
    // holds a lock on its node path; tests and benchmarks use fresh directories.
    let env = unsafe {
        heed3::EnvOpenOptions::new()
            .read_txn_without_tls()
            .map_size(map_size)
            .max_dbs(max_dbs)
            .open_encrypted::<ChaCha20Poly1305, _>(key, dir)
    }?;
    Ok(Arc::new(env))
}

/// Opens an encrypted environment in `dir` with default limits.
pub fn open_default(dir: &Path, key: &DataKey) -> Result<Env, heed3::Error> {
    open_env(dir, key, DEFAULT_MAP_SIZE, DEFAULT_MAX_DBS)
}

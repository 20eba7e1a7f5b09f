//! Key renewal: `keys renew` (under the agent lock), the first start with the
//! renewed key, and a peer applying a rotation it is told of. The design and
//! the formats are in docs/RECOVERY.md ("Key renewal").
//!
//! `keys renew` writes, in `keys/`:
//!
//! 1. `rotation` — the rotation claim (signed by the old and the new key), at
//!    the position after the chain's head;
//! 2. `root.key.new` — the new key, sealed under the same password;
//! 3. `data.key.new` — the same data key, sealed under the new root key;
//!
//! each synced, then renames `root.key.new` and `data.key.new` into place. A
//! start that finds `data.key.new` finishes the renames (the renewal was
//! decided); one that finds only `root.key.new` (or `rotation` without the
//! new key in place) drops them (it was not). The first start with the new key
//! appends the claim to the chain, applies it to its own graph, queues a
//! `key-rotated` notification to every node it knows, and removes `rotation`.

use std::path::Path;

use keynode_core::NodeId;
use keynode_core::datakey;
use keynode_core::keystore::{self, KdfParams, KeystoreError};
use keynode_core::recovery::RecoveryCode;
use keynode_gestalt::{ClaimBody, Sigchain, SignedClaim};
use keynode_vaults::messages as v;

use crate::api::{ApiError, ErrorKind};
use crate::errors::Ask;
use crate::gestalts::Gestalts;
use crate::paths::NodePaths;

/// A renewal could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The password does not open the root key.
    #[error("wrong password for the node at {0}")]
    WrongPassword(std::path::PathBuf),
    /// An agent holds the node path.
    #[error(transparent)]
    Locked(#[from] crate::status::LockError),
    /// The node path has no node.
    #[error("no node at {0}")]
    NoNode(std::path::PathBuf),
    /// A renewal is waiting for the node's next start.
    #[error("a renewal of this node waits for its next start; start the agent first")]
    Pending,
    /// The keys or the state could not be read or written.
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> RenewError {
    RenewError::Failed(e.to_string())
}

fn rotation_file(paths: &NodePaths) -> std::path::PathBuf {
    paths.root.join("keys").join("rotation")
}

/// The old key's DHT record naming the new NodeId, signed at renewal (both
/// keys are at hand only then), published once the node runs.
fn pointer_file(paths: &NodePaths) -> std::path::PathBuf {
    paths.root.join("keys").join("renewal-record")
}

/// The old key's pointer record still to publish, with the old NodeId.
pub(crate) fn pending_pointer(paths: &NodePaths) -> Option<(NodeId, Vec<u8>)> {
    let bytes = std::fs::read(pointer_file(paths)).ok()?;
    let old = NodeId::from_bytes(bytes.get(..32)?.try_into().ok()?).ok()?;
    Some((old, bytes))
}

/// The pointer record is out.
pub(crate) fn pointer_done(paths: &NodePaths) {
    let _ = std::fs::remove_file(pointer_file(paths));
}

fn with_new(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    s.into()
}

/// What `keys renew` made.
pub struct Renewed {
    /// The node before.
    pub old: NodeId,
    /// The node from now on.
    pub new: NodeId,
    /// The new key's recovery code, to show once.
    pub code: RecoveryCode,
}

/// Renews the root key of the stopped node at `paths` (under the agent lock):
/// a new key from a new recovery code, the rotation claim signed by both keys
/// after the chain's head (read from the state), the new key sealed under the
/// same `password` and the data key re-sealed under it. Blocking.
pub fn renew(paths: &NodePaths, password: &[u8]) -> Result<Renewed, RenewError> {
    if !paths.root_key().exists() {
        return Err(RenewError::NoNode(paths.root.clone()));
    }
    let _lock = crate::status::AgentLock::acquire(&paths.lock())?;
    finish_interrupted(paths).map_err(failed)?;
    if rotation_file(paths).exists() {
        return Err(RenewError::Pending);
    }
    let old = match keystore::read_key_file(&paths.root_key(), password) {
        Ok(k) => k,
        Err(KeystoreError::WrongPassword) => {
            return Err(RenewError::WrongPassword(paths.root.clone()));
        }
        Err(e) => return Err(failed(e)),
    };
    let data_key = datakey::read_file(&paths.data_key(), &old).map_err(failed)?;
    let head = {
        let env = crate::disk::open_env(&paths.state(), &data_key, crate::disk::LMDB_MAP_SIZE)
            .map_err(failed)?;
        let chain = Sigchain::open(env.clone(), old.node_id()).map_err(failed)?;
        let head = chain.head().map_err(failed)?;
        drop(chain);
        if let Some(closing) = env.prepare_for_closing() {
            closing.wait();
        }
        head
    };
    let code = RecoveryCode::generate();
    let new = code.keypair();
    let tid = keynode_core::TidGenerator::new(keynode_core::SystemClock).next_id();
    let claim = keynode_gestalt::rotate(head.as_ref(), &old, &new, tid).map_err(failed)?;
    let bytes = keynode_core::codec::encode(&claim).map_err(failed)?;
    keystore::write_private_file(&rotation_file(paths), &bytes).map_err(failed)?;
    match keynode_net::dht::renewal_record(&old, &new) {
        Ok(record) => {
            keystore::write_private_file(&pointer_file(paths), &record).map_err(failed)?
        }
        Err(e) => tracing::warn!(error = %e, "cannot sign the old key's DHT record"),
    }
    let kdf = KdfParams::DEFAULT;
    keystore::write_key_file(&with_new(&paths.root_key()), &new, password, kdf).map_err(failed)?;
    datakey::write_file(&with_new(&paths.data_key()), &data_key, &new).map_err(failed)?;
    // Decided: from here a start finishes the renames.
    std::fs::rename(with_new(&paths.root_key()), paths.root_key()).map_err(failed)?;
    std::fs::rename(with_new(&paths.data_key()), paths.data_key()).map_err(failed)?;
    crate::disk::mark_recoverable(paths, new.node_id()).map_err(failed)?;
    Ok(Renewed {
        old: old.node_id(),
        new: new.node_id(),
        code,
    })
}

/// Finishes or drops a renewal cut short (see the module). Blocking.
pub fn finish_interrupted(paths: &NodePaths) -> std::io::Result<()> {
    let root_new = with_new(&paths.root_key());
    let data_new = with_new(&paths.data_key());
    if data_new.exists() {
        if root_new.exists() {
            std::fs::rename(&root_new, paths.root_key())?;
        }
        std::fs::rename(&data_new, paths.data_key())?;
    } else if root_new.exists() {
        std::fs::remove_file(&root_new)?;
        let _ = std::fs::remove_file(rotation_file(paths));
    }
    Ok(())
}

/// The rotation claim a renewal left for this start, if it is for `me` (the
/// key now in place); one for another key is stale (the renewal was not
/// completed) and removed. Blocking.
pub(crate) fn pending_rotation(paths: &NodePaths, me: NodeId) -> Option<SignedClaim> {
    let path = rotation_file(paths);
    let bytes = std::fs::read(&path).ok()?;
    match keynode_core::codec::decode::<SignedClaim>(&bytes) {
        Ok(c) if matches!(c.claim.body, ClaimBody::Rotate { new, .. } if new == me) => Some(c),
        _ => {
            tracing::warn!("dropping a rotation claim that is not for this key");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// The rotation claim's file is done with.
pub(crate) fn rotation_done(paths: &NodePaths) {
    let _ = std::fs::remove_file(rotation_file(paths));
}

/// A peer told us of a rotation (a `key-rotated` notification from `peer`):
/// applies it to the gestalts, then gives `new` the addresses of `old` and
/// points our clones of `old`'s vaults at `new`.
pub(crate) async fn apply_announced(
    gestalts: &Gestalts,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    notifications: &actix::Addr<keynode_notify::NotificationsManager>,
    proof: &[u8],
    peer: NodeId,
) -> Result<(), ApiError> {
    let claim: SignedClaim = keynode_core::codec::decode(proof)
        .map_err(|_| ApiError::new(ErrorKind::BadData, "the rotation claim is malformed"))?;
    let (old, new, _) = gestalts.apply_rotation(&claim, peer).await?;
    move_records(gestalts, vaults, old, new).await?;
    // What waits for the old key goes to the new one.
    if !matches!(
        notifications
            .ask_raw(keynode_notify::messages::Redirect { old, new })
            .await,
        Ok(Ok(_))
    ) {
        tracing::warn!("could not readdress the notifications queued for a renewed node");
    }
    Ok(())
}

/// Gives `new` what this node holds for `old` outside the gestalts: its
/// addresses and the remotes of the clones of its vaults.
pub(crate) async fn move_records(
    gestalts: &Gestalts,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    old: NodeId,
    new: NodeId,
) -> Result<(), ApiError> {
    if let Ok(net) = gestalts.network() {
        let book = net.book().clone();
        let moved = keynode_core::exec::blocking(gestalts.exec().as_ref(), move || {
            for addr in book.get(old)? {
                book.add_from(new, addr, keynode_net::AddressSource::Learned)?;
            }
            Ok::<_, keynode_net::BookError>(())
        })
        .await;
        if !matches!(moved, Ok(Ok(()))) {
            tracing::warn!("could not copy a renewed node's addresses");
        }
    }
    for meta in vaults.ask(v::ListVaults {}).await? {
        if let Some(remote) = meta.remote.filter(|r| r.node == old) {
            vaults
                .ask(v::SetRemote {
                    vault: meta.id,
                    remote: Some(keynode_vaults::Remote {
                        node: new,
                        vault: remote.vault,
                    }),
                })
                .await?;
        }
    }
    Ok(())
}

/// The first start with a renewed key: appends the rotation claim to this
/// node's chain, applies it to its own graph (the old key's node is refused
/// from now on, the gestalt stays whole), moves its own records, and queues a
/// `key-rotated` notification to every node it knows. Idempotent: a start cut
/// short does it again.
pub(crate) async fn apply_own(
    gestalts: &Gestalts,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    notifications: &actix::Addr<keynode_notify::NotificationsManager>,
    me: NodeId,
    claim: &SignedClaim,
) -> Result<(), ApiError> {
    gestalts.append_own(claim).await?;
    let (old, new, _) = gestalts.apply_rotation(claim, me).await?;
    move_records(gestalts, vaults, old, new).await?;
    // What the old key signed and is still queued goes out signed anew.
    match notifications
        .ask_raw(keynode_notify::messages::Resign { old })
        .await
    {
        Ok(Ok(n)) if n > 0 => tracing::info!(notifications = n, "queued notifications signed anew"),
        Ok(Ok(_)) => {}
        _ => tracing::warn!("could not sign the queued notifications anew"),
    }
    let proof = keynode_core::codec::encode(claim)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let mut told = 0usize;
    for to in gestalts.known_nodes().await? {
        if to == old || to == new {
            continue;
        }
        let data = keynode_notify::NotificationData::KeyRotated {
            old,
            proof: proof.clone(),
        };
        match notifications
            .ask_raw(keynode_notify::messages::Send { to, data })
            .await
        {
            Ok(Ok(_)) => told += 1,
            _ => tracing::warn!("could not queue a key-rotation notice"),
        }
    }
    tracing::info!(%old, %new, peers = told, "key renewed; peers are being told");
    Ok(())
}

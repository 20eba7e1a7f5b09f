//! The serving side of scan, clone and pull.

use actix::Addr;
use keynode_acl::{GestaltAction, VaultAction};
use keynode_audit::{AuditEvent, TransferOp};
use keynode_core::exec::Exec;
use keynode_core::{GestaltId, NodeId, VaultId};
use keynode_net::{RpcStream, WireError, WireErrorKind};
use keynode_vaults::messages as v;
use keynode_vaults::{PackStats, VaultManager};
use tokio::sync::mpsc;

use super::{DENIED, FRAME_TIMEOUT, PACK_QUEUE};
use crate::api::{ApiError, ScanEntry};
use crate::errors::Ask;
use crate::gestalts::Gestalts;
use crate::protocol::{PeerRequest, PeerResponse};

/// Most commits a caller may say it has.
const MAX_HAVES: usize = 1024;

/// Largest pack built into memory by a short job before it is sent (256 KiB);
/// a larger one is built again and streamed (see `keynode_core::exec`).
const SMALL_PACK: usize = 256 << 10;

fn denied() -> WireError {
    WireError::new(WireErrorKind::PermissionDenied, DENIED)
}

fn refused(peer: NodeId, op: &str, reason: &str) -> AuditEvent {
    AuditEvent::Refused {
        peer,
        op: op.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Serves `Scan`: the vaults shared with the caller's gestalt. Needs `scan`.
pub(crate) async fn serve_scan(
    gestalts: &Gestalts,
    vaults: &Addr<VaultManager>,
    peer: NodeId,
) -> Result<PeerResponse, WireError> {
    let may = match gestalts.has_action(peer, GestaltAction::Scan).await {
        Ok(may) => may,
        Err(e) => return Err(gestalts.serve_failed(peer, "scan", &e).await),
    };
    if !may {
        gestalts
            .record(refused(peer, "scan", "no scan permission"))
            .await;
        return Err(denied());
    }
    let perm = match gestalts.permission(&GestaltId::Node(peer)).await {
        Ok(p) => p,
        Err(e) => return Err(gestalts.serve_failed(peer, "scan", &e).await),
    };
    let mut out = Vec::new();
    for (vault, actions) in perm.vaults {
        // A grant on a vault deleted meanwhile lists nothing.
        let Ok(meta) = vaults.ask(v::GetVault { vault }).await else {
            continue;
        };
        out.push(ScanEntry {
            vault_id: vault.to_string(),
            name: meta.name.to_string(),
            actions: actions.iter().map(ToString::to_string).collect(),
        });
    }
    gestalts
        .record(AuditEvent::Served {
            peer,
            op: TransferOp::Scan,
            vault: None,
        })
        .await;
    Ok(PeerResponse::Scanned(out))
}

/// One `VaultOpen` being served to `peer`.
pub(crate) struct Serving<'a> {
    pub gestalts: &'a Gestalts,
    pub vaults: &'a Addr<VaultManager>,
    pub exec: &'a Exec,
    pub peer: NodeId,
}

impl Serving<'_> {
    /// The pack for `want` in chunks built by a short job, or `None` if it
    /// is larger than [`SMALL_PACK`].
    async fn small_pack(
        &self,
        vault: VaultId,
        want: &str,
        haves: &[String],
    ) -> Result<Option<(Vec<Vec<u8>>, PackStats)>, ApiError> {
        let (sink, held) = crate::pipe::MemorySink::new(SMALL_PACK);
        let packed = self
            .vaults
            .ask(v::SendPack {
                vault,
                want: want.to_owned(),
                haves: haves.to_vec(),
                sink,
                waits: false,
            })
            .await;
        match (packed, held.take()) {
            (Ok(stats), Some(chunks)) => Ok(Some((chunks, stats))),
            (_, None) => Ok(None),
            (Err(e), Some(_)) => Err(e),
        }
    }

    /// Builds and sends the pack for `want` at once: the store builds it where
    /// blocking is allowed and its chunks cross a bounded channel, so a slow
    /// reader slows the packer instead of filling memory. `Err` when sending
    /// failed; how packing went otherwise.
    async fn streamed_pack(
        &self,
        stream: &mut RpcStream,
        vault: VaultId,
        want: String,
        haves: Vec<String>,
    ) -> Result<Result<PackStats, ApiError>, WireError> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(self.exec.pipe_depth(PACK_QUEUE));
        let packing = self.vaults.ask(v::SendPack {
            vault,
            want,
            haves,
            sink: crate::pipe::channel_sink(tx),
            waits: true,
        });
        // The receiver moves in: once sending stops, dropping it stops the
        // packer.
        let sending = async move {
            while let Some(chunk) = rx.recv().await {
                // A reader that takes nothing for a whole frame timeout is
                // cut: it would hold a stream and a packer thread for ever.
                let frame = PeerResponse::PackChunk(chunk);
                let send = stream.send(&frame);
                if !matches!(tokio::time::timeout(FRAME_TIMEOUT, send).await, Ok(Ok(()))) {
                    return false;
                }
            }
            true
        };
        let (packed, sent) = tokio::join!(packing, sending);
        if !sent {
            return Err(WireError::new(WireErrorKind::BadRequest, "stream failed"));
        }
        Ok(packed)
    }

    async fn failed(&self, op: VaultAction, e: &(dyn std::fmt::Display + Sync)) -> WireError {
        self.gestalts
            .serve_failed(self.peer, &op.to_string(), e)
            .await
    }

    /// Serves `VaultOpen`: advert, then the pack the caller wants.
    pub(crate) async fn vault(
        &self,
        vault: String,
        action: VaultAction,
        stream: &mut RpcStream,
    ) -> Result<PeerResponse, WireError> {
        let (gestalts, peer) = (self.gestalts, self.peer);
        // Resolve and check together, with one answer for every failure.
        let Ok(meta) = self.vaults.ask(v::ResolveVault { name_or_id: vault }).await else {
            gestalts
                .record(refused(peer, &action.to_string(), "no such vault"))
                .await;
            return Err(denied());
        };
        let served = AuditEvent::Served {
            peer,
            op: match action {
                VaultAction::Clone => TransferOp::Clone,
                VaultAction::Pull => TransferOp::Pull,
            },
            vault: Some(meta.id),
        };
        let may = match gestalts.may_vault(peer, meta.id, action).await {
            Ok(may) => may,
            Err(e) => return Err(self.failed(action, &e).await),
        };
        if !may {
            let reason = format!("vault {} not shared", meta.id);
            gestalts
                .record(refused(peer, &action.to_string(), &reason))
                .await;
            return Err(denied());
        }
        let advert = match self.vaults.ask(v::Advertise { vault: meta.id }).await {
            Ok(a) => a,
            Err(e) => return Err(self.failed(action, &e).await),
        };
        let bad = |what: &'static str| WireError::new(WireErrorKind::BadRequest, what);
        stream
            .send(&PeerResponse::Advert(advert))
            .await
            .map_err(|_| bad("stream failed"))?;
        let (want, haves) =
            match tokio::time::timeout(FRAME_TIMEOUT, stream.recv::<PeerRequest>()).await {
                Ok(Ok(Some(PeerRequest::VaultWant { want, haves }))) => (want, haves),
                _ => return Err(bad("expected VaultWant")),
            };
        let Some(want) = want else {
            gestalts.record(served).await;
            return Ok(PeerResponse::PackEnd(PackStats {
                objects: 0,
                bytes: 0,
            }));
        };
        if haves.len() > MAX_HAVES {
            return Err(bad("too many haves"));
        }
        // Most packs (a pull of a few commits) are small: a short job builds
        // them into memory. A pack that outgrows that is built again, streamed
        // (below).
        let packed = match self.small_pack(meta.id, &want, &haves).await {
            Ok(Some((chunks, stats))) => {
                for chunk in chunks {
                    let frame = PeerResponse::PackChunk(chunk);
                    let send = stream.send(&frame);
                    if !matches!(tokio::time::timeout(FRAME_TIMEOUT, send).await, Ok(Ok(()))) {
                        return Err(bad("stream failed"));
                    }
                }
                Ok(stats)
            }
            Ok(None) => self.streamed_pack(stream, meta.id, want, haves).await?,
            Err(e) => Err(e),
        };
        crate::metrics::transfer(
            "serve",
            packed.is_ok(),
            "sent",
            packed.as_ref().map_or(0, |s| s.bytes),
        );
        match packed {
            Ok(stats) => {
                gestalts.record(served).await;
                Ok(PeerResponse::PackEnd(stats))
            }
            // What the caller asked for does not exist here (a want or have
            // that is not ours): its fault, told without our detail.
            Err(e) if e.kind == crate::api::ErrorKind::NotFound => Err(bad("unknown commit")),
            Err(e) => Err(self.failed(action, &e).await),
        }
    }
}

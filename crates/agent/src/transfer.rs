//! Scan, clone, pull and fork across nodes: the agent carries the vault store's
//! transfer protocol (advert → wants/haves → pack) over one network stream, and
//! checks every request on the serving side against the caller's NodeId as
//! proven by the Noise handshake.
//!
//! A caller without permission learns nothing: "no such vault" and "not shared
//! with you" are the same [`DENIED`] answer.

use std::io;
use std::time::Duration;

use keynode_acl::{GestaltAction, VaultAction};
use keynode_audit::{AuditEvent, TransferOp};
use keynode_core::{NodeId, VaultName};
use keynode_net::{NetError, RpcError, RpcStream, WireError, WireErrorKind};
use keynode_vaults::messages as v;
use keynode_vaults::{Advert, PackStats, PullOutcome, Remote, VaultMeta};
use tokio::sync::mpsc;

use crate::api::{ApiError, ErrorKind, Response, ScanEntry};
use crate::gestalts::Gestalts;
use crate::peer::{PeerRequest, PeerResponse};
use crate::server::{ChannelReader, Ctx, net_err};

/// The one answer to a scan, clone or pull that is not allowed.
pub const DENIED: &str = "vault access denied";
/// Longest wait for the next frame of a transfer.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Pack chunks in flight between the stream and the store, each ≤ 64 KiB.
const PACK_QUEUE: usize = 8;
/// Pack chunks queued whole when the store runs inline (deterministic
/// simulation only; see `keynode_core::sim`).
const INLINE_QUEUE: usize = 1 << 20;

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

fn internal(e: impl std::fmt::Display) -> WireError {
    WireError::new(WireErrorKind::Internal, e.to_string())
}

fn api_internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, e.to_string())
}

fn vault_api(
    r: Result<Result<impl Sized, keynode_vaults::VaultError>, actix::MailboxError>,
) -> Result<(), ApiError> {
    r.map_err(api_internal)?.map_err(api_internal).map(drop)
}

// ---- serving side ---------------------------------------------------------------

/// Serves `Scan`: the vaults shared with the caller's gestalt. Needs `scan`.
pub(crate) async fn serve_scan(
    gestalts: &Gestalts,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    peer: NodeId,
) -> Result<PeerResponse, WireError> {
    let may = gestalts
        .has_action(peer, GestaltAction::Scan)
        .await
        .map_err(|e| internal(e.message))?;
    if !may {
        gestalts
            .record(refused(peer, "scan", "no scan permission"))
            .await;
        return Err(denied());
    }
    let perm = gestalts
        .permission(&keynode_core::GestaltId::Node(peer))
        .await
        .map_err(|e| internal(e.message))?;
    let mut out = Vec::new();
    for (vault, actions) in perm.vaults {
        let Ok(Ok(meta)) = vaults.send(v::GetVault { vault }).await else {
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

/// Serves `VaultOpen`: advert, then the pack the caller wants.
pub(crate) async fn serve_vault(
    gestalts: &Gestalts,
    vaults: &actix::Addr<keynode_vaults::VaultManager>,
    peer: NodeId,
    vault: String,
    action: VaultAction,
    stream: &mut RpcStream,
) -> Result<PeerResponse, WireError> {
    // Resolve and check together, with one answer for every failure.
    let meta = match vaults.send(v::ResolveVault { name_or_id: vault }).await {
        Ok(Ok(meta)) => meta,
        _ => {
            let reason = "no such vault";
            gestalts
                .record(refused(peer, &action.to_string(), reason))
                .await;
            return Err(denied());
        }
    };
    let served = AuditEvent::Served {
        peer,
        op: match action {
            VaultAction::Clone => TransferOp::Clone,
            VaultAction::Pull => TransferOp::Pull,
        },
        vault: Some(meta.id),
    };
    let may = gestalts
        .may_vault(peer, meta.id, action)
        .await
        .map_err(|e| internal(e.message))?;
    if !may {
        let reason = format!("vault {} not shared", meta.id);
        gestalts
            .record(refused(peer, &action.to_string(), &reason))
            .await;
        return Err(denied());
    }
    let advert = vaults
        .send(v::Advertise { vault: meta.id })
        .await
        .map_err(internal)?
        .map_err(internal)?;
    stream
        .send(&PeerResponse::Advert(advert))
        .await
        .map_err(internal)?;
    let (want, haves) =
        match tokio::time::timeout(FRAME_TIMEOUT, stream.recv::<PeerRequest>()).await {
            Ok(Ok(Some(PeerRequest::VaultWant { want, haves }))) => (want, haves),
            _ => {
                return Err(WireError::new(
                    WireErrorKind::BadRequest,
                    "expected VaultWant",
                ));
            }
        };
    let Some(want) = want else {
        gestalts.record(served).await;
        return Ok(PeerResponse::PackEnd(PackStats {
            objects: 0,
            bytes: 0,
        }));
    };
    if haves.len() > 1024 {
        return Err(WireError::new(WireErrorKind::BadRequest, "too many haves"));
    }
    // The store builds the pack on a blocking thread; chunks cross a bounded
    // channel, so a slow reader slows the packer instead of filling memory.
    // In a deterministic simulation the store runs inline (no thread to block):
    // the pack is queued whole, then streamed.
    let inline = keynode_core::sim::inline_blocking();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(if inline { INLINE_QUEUE } else { PACK_QUEUE });
    let sink: keynode_vaults::messages::Sink = Box::new(move |chunk: &[u8]| {
        let sent = if inline {
            tx.try_send(chunk.to_vec()).map_err(|_| ())
        } else {
            tx.blocking_send(chunk.to_vec()).map_err(|_| ())
        };
        sent.map_err(|_| io::Error::other("the caller went away"))
    });
    let packing = tokio::spawn(vaults.send(v::SendPack {
        vault: meta.id,
        want,
        haves,
        sink,
    }));
    while let Some(chunk) = rx.recv().await {
        stream
            .send(&PeerResponse::PackChunk(chunk))
            .await
            .map_err(internal)?;
    }
    let stats = packing
        .await
        .map_err(internal)?
        .map_err(internal)?
        .map_err(|e| WireError::new(WireErrorKind::BadRequest, e.to_string()))?;
    gestalts.record(served).await;
    Ok(PeerResponse::PackEnd(stats))
}

// ---- calling side ---------------------------------------------------------------

fn rpc_err(node: NodeId) -> impl Fn(RpcError) -> ApiError {
    move |e| match e {
        RpcError::Remote(w) => net_err(NetError::Remote(w)),
        other => net_err(NetError::Rpc {
            node,
            source: other,
        }),
    }
}

async fn next(stream: &mut RpcStream, node: NodeId) -> Result<PeerResponse, ApiError> {
    match tokio::time::timeout(FRAME_TIMEOUT, stream.recv::<PeerResponse>()).await {
        Err(_) => Err(ApiError::new(
            ErrorKind::Unreachable,
            format!("{node} stopped answering"),
        )),
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => Err(ApiError::new(
            ErrorKind::Unreachable,
            format!("{node} closed the stream"),
        )),
        Ok(Err(e)) => Err(rpc_err(node)(e)),
    }
}

fn unexpected(node: NodeId, r: &PeerResponse) -> ApiError {
    let what = match r {
        PeerResponse::Chain(_) => "Chain",
        PeerResponse::LinkProposed { .. } => "LinkProposed",
        PeerResponse::LinkFinished => "LinkFinished",
        PeerResponse::Notified => "Notified",
        PeerResponse::Scanned(_) => "Scanned",
        PeerResponse::Advert(_) => "Advert",
        PeerResponse::PackChunk(_) => "PackChunk",
        PeerResponse::PackEnd(_) => "PackEnd",
    };
    ApiError::new(
        ErrorKind::Protocol,
        format!("{node} answered {what} out of turn"),
    )
}

/// `vaults scan NODE`.
pub(crate) async fn scan(ctx: &Ctx, node: NodeId) -> Result<Vec<ScanEntry>, ApiError> {
    let net = ctx.gestalts.network()?;
    match net.call::<_, PeerResponse>(node, &PeerRequest::Scan).await {
        Ok(PeerResponse::Scanned(list)) => Ok(list),
        Ok(other) => Err(unexpected(node, &other)),
        Err(e) => Err(net_err(e)),
    }
}

/// Opens a vault on `node` for `action`: returns the stream and the advert.
async fn open(
    ctx: &Ctx,
    node: NodeId,
    vault: &str,
    action: VaultAction,
) -> Result<(RpcStream, Advert), ApiError> {
    let net = ctx.gestalts.network()?;
    let mut stream = net.open(node).await.map_err(net_err)?;
    stream
        .send(&PeerRequest::VaultOpen {
            vault: vault.to_owned(),
            action,
        })
        .await
        .map_err(rpc_err(node))?;
    match next(&mut stream, node).await? {
        PeerResponse::Advert(a) => Ok((stream, a)),
        other => Err(unexpected(node, &other)),
    }
}

/// Feeds `PackChunk` frames into the store's reader until `PackEnd`; any other
/// ending makes the reader fail, so the store discards what it received.
async fn feed_pack(
    stream: &mut RpcStream,
    node: NodeId,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
) -> Result<PackStats, ApiError> {
    loop {
        match next(stream, node).await {
            Ok(PeerResponse::PackChunk(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    // The store stopped reading; its result says why.
                    return Err(ApiError::new(ErrorKind::Internal, "pack refused"));
                }
            }
            Ok(PeerResponse::PackEnd(stats)) => return Ok(stats),
            Ok(other) => {
                let _ = tx.send(Err(io::Error::other("transfer broken"))).await;
                return Err(unexpected(node, &other));
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::other("transfer broken"))).await;
                return Err(e);
            }
        }
    }
}

/// Runs `receive` (a store call reading the pack from a channel) while the
/// stream's chunks feed it. The store's error wins over the stream's.
async fn receive<T>(
    stream: &mut RpcStream,
    node: NodeId,
    receive: impl FnOnce(
        keynode_vaults::messages::Source,
    ) -> actix::dev::Request<keynode_vaults::VaultManager, T>,
) -> Result<T::Result, ApiError>
where
    T: actix::Message + Send + 'static,
    T::Result: Send,
    keynode_vaults::VaultManager: actix::Handler<T>,
{
    if keynode_core::sim::inline_blocking() {
        // Deterministic simulation: the store runs inline and cannot wait for
        // chunks, so the whole pack is received first.
        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(INLINE_QUEUE);
        let fed = feed_pack(stream, node, tx).await;
        let stored = receive(Box::new(ChannelReader::new(rx)))
            .await
            .map_err(api_internal)?;
        fed?;
        return Ok(stored);
    }
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(PACK_QUEUE);
    let storing = tokio::spawn(receive(Box::new(ChannelReader::new(rx))));
    let fed = feed_pack(stream, node, tx).await;
    let stored = storing.await.map_err(api_internal)?.map_err(api_internal)?;
    fed?;
    Ok(stored)
}

/// `vaults clone VAULT NODE`: the new vault appears whole or not at all.
pub(crate) async fn clone(ctx: &Ctx, node: NodeId, vault: &str) -> Result<VaultMeta, ApiError> {
    let (mut stream, advert) = open(ctx, node, vault, VaultAction::Clone).await?;
    stream
        .send(&PeerRequest::VaultWant {
            want: Some(advert.head.clone()),
            haves: Vec::new(),
        })
        .await
        .map_err(rpc_err(node))?;
    let remote = Remote {
        node,
        vault: advert.vault,
    };
    let (name, head) = (advert.name.clone(), advert.head.clone());
    let vaults = ctx.vaults.clone();
    let r = receive(&mut stream, node, move |pack| {
        vaults.send(v::ReceiveClone {
            name,
            remote,
            head,
            pack,
        })
    })
    .await?;
    r.map_err(crate::server::vault_err)
}

/// `vaults pull VAULT [NODE] [--pull-vault V]`: fast-forward only; explicit
/// arguments replace the stored remote once the pull succeeds.
pub(crate) async fn pull(
    ctx: &Ctx,
    vault: &str,
    node: Option<NodeId>,
    pull_vault: Option<String>,
) -> Result<Response, ApiError> {
    let meta = ctx
        .vaults
        .send(v::ResolveVault {
            name_or_id: vault.to_owned(),
        })
        .await
        .map_err(api_internal)?
        .map_err(crate::server::vault_err)?;
    let stored = meta.remote;
    let source_node = match (node, stored) {
        (Some(n), _) => n,
        (None, Some(r)) => r.node,
        (None, None) => {
            return Err(ApiError::new(
                ErrorKind::Usage,
                format!(
                    "vault {} is not a clone; give the node and --pull-vault to pull from",
                    meta.name
                ),
            ));
        }
    };
    let source_vault = match (&pull_vault, stored) {
        (Some(v), _) => v.clone(),
        (None, Some(r)) => r.vault.to_string(),
        (None, None) => {
            return Err(ApiError::new(
                ErrorKind::Usage,
                "give --pull-vault: the vault to pull from",
            ));
        }
    };
    let (mut stream, advert) = open(ctx, source_node, &source_vault, VaultAction::Pull).await?;
    let haves = ctx
        .vaults
        .send(v::Haves { vault: meta.id })
        .await
        .map_err(api_internal)?
        .map_err(crate::server::vault_err)?;
    let want = keynode_vaults::want(&advert, &haves);
    let up_to_date = want.is_none();
    stream
        .send(&PeerRequest::VaultWant { want, haves })
        .await
        .map_err(rpc_err(source_node))?;
    let outcome = if up_to_date {
        match next(&mut stream, source_node).await? {
            PeerResponse::PackEnd(_) => PullOutcome::UpToDate,
            other => return Err(unexpected(source_node, &other)),
        }
    } else {
        let vaults = ctx.vaults.clone();
        let (id, head) = (meta.id, advert.head.clone());
        let r = receive(&mut stream, source_node, move |pack| {
            vaults.send(v::ReceivePull {
                vault: id,
                head,
                pack,
            })
        })
        .await?;
        r.map_err(crate::server::vault_err)?
    };
    let new_remote = Remote {
        node: source_node,
        vault: advert.vault,
    };
    if stored != Some(new_remote) {
        vault_api(
            ctx.vaults
                .send(v::SetRemote {
                    vault: meta.id,
                    remote: Some(new_remote),
                })
                .await,
        )?;
    }
    let (from, to, commits) = match outcome {
        PullOutcome::Updated { from, to, commits } => (Some(from), to, commits as u64),
        PullOutcome::UpToDate => (None, advert.head, 0),
    };
    Ok(Response::Pulled {
        vault: meta.name.to_string(),
        from,
        to,
        commits,
    })
}

/// `vaults fork VAULT [NEW_NAME]`.
pub(crate) async fn fork(
    ctx: &Ctx,
    vault: &str,
    name: Option<String>,
) -> Result<VaultMeta, ApiError> {
    let name = name
        .map(VaultName::new)
        .transpose()
        .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
    let meta = ctx
        .vaults
        .send(v::ResolveVault {
            name_or_id: vault.to_owned(),
        })
        .await
        .map_err(api_internal)?
        .map_err(crate::server::vault_err)?;
    ctx.vaults
        .send(v::Fork {
            vault: meta.id,
            name,
        })
        .await
        .map_err(api_internal)?
        .map_err(crate::server::vault_err)
}

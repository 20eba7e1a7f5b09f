//! The calling side of scan, clone, pull and fork.

use std::io;

use keynode_acl::VaultAction;
use keynode_core::{NodeId, VaultName};
use keynode_net::RpcStream;
use keynode_vaults::messages::{self as v, Source};
use keynode_vaults::{Advert, PackStats, PullOutcome, Remote};

use super::{FRAME_TIMEOUT, PACK_QUEUE};
use crate::api::{self, ApiError, ErrorKind, Response, ScanEntry};
use crate::convert::IntoApi;
use crate::ctx::Ctx;
use crate::errors::{Ask, Failure, rpc_failure};
use crate::pipe::{Feeder, feed_store};
use crate::protocol::{PeerRequest, PeerResponse};

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
        Ok(Err(e)) => Err(rpc_failure(node, e)),
    }
}

fn unexpected(node: NodeId, r: &PeerResponse) -> ApiError {
    ApiError::new(
        ErrorKind::Protocol,
        format!("{node} answered {} out of turn", r.name()),
    )
}

/// `vaults scan NODE`.
pub(crate) async fn scan(ctx: &Ctx, node: NodeId) -> Result<Vec<ScanEntry>, ApiError> {
    let net = ctx.gestalts.network()?;
    match net.call::<_, PeerResponse>(node, &PeerRequest::Scan).await {
        Ok(PeerResponse::Scanned(list)) => Ok(list),
        Ok(other) => Err(unexpected(node, &other)),
        Err(e) => Err(e.api()),
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
    let mut stream = net.open(node).await.map_err(Failure::api)?;
    stream
        .send(&PeerRequest::VaultOpen {
            vault: vault.to_owned(),
            action,
        })
        .await
        .map_err(|e| rpc_failure(node, e))?;
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
    mut tx: Feeder,
    received: &mut u64,
) -> Result<PackStats, ApiError> {
    loop {
        match next(stream, node).await {
            Ok(PeerResponse::PackChunk(chunk)) => {
                *received += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    // The store stopped reading; its result says why.
                    return Err(ApiError::new(ErrorKind::Protocol, "pack refused"));
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

/// Runs `store` (a store call reading the pack from `source`) while the
/// stream's chunks feed it. The store's error wins over the stream's.
/// `kind` (clone, pull) names the transfer in the metrics.
async fn receive<T, F>(
    ctx: &Ctx,
    stream: &mut RpcStream,
    node: NodeId,
    kind: &'static str,
    store: impl FnOnce(Source, bool) -> F,
) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut received = 0u64;
    let (stored, fed) = feed_store(ctx.exec.pipe_depth(PACK_QUEUE), store, |tx| {
        feed_pack(stream, node, tx, &mut received)
    })
    .await;
    let ok = stored.is_ok() && fed.is_ok();
    crate::metrics::transfer(kind, ok, "received", received);
    let stored = stored?;
    fed?;
    Ok(stored)
}

/// `vaults clone VAULT NODE`: the new vault appears whole or not at all.
pub(crate) async fn clone(
    ctx: &Ctx,
    node: NodeId,
    vault: &str,
    follow: bool,
) -> Result<api::VaultMeta, ApiError> {
    let (mut stream, advert) = open(ctx, node, vault, VaultAction::Clone).await?;
    stream
        .send(&PeerRequest::VaultWant {
            want: Some(advert.head.clone()),
            haves: Vec::new(),
        })
        .await
        .map_err(|e| rpc_failure(node, e))?;
    let remote = Remote {
        node,
        vault: advert.vault,
    };
    let (name, head) = (advert.name.clone(), advert.head.clone());
    let meta = receive(ctx, &mut stream, node, "clone", |pack, waits| {
        ctx.vaults.ask(v::ReceiveClone {
            name,
            remote,
            head,
            pack,
            waits,
            follow: if follow {
                keynode_vaults::Follow::On
            } else {
                keynode_vaults::Follow::Off
            },
        })
    })
    .await?;
    Ok(meta.into_api())
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
        .ask(v::ResolveVault {
            name_or_id: vault.to_owned(),
        })
        .await?;
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
    let haves = ctx.vaults.ask(v::Haves { vault: meta.id }).await?;
    let want = keynode_vaults::want(&advert, &haves);
    let up_to_date = want.is_none();
    stream
        .send(&PeerRequest::VaultWant { want, haves })
        .await
        .map_err(|e| rpc_failure(source_node, e))?;
    let outcome = if up_to_date {
        match next(&mut stream, source_node).await? {
            PeerResponse::PackEnd(_) => PullOutcome::UpToDate,
            other => return Err(unexpected(source_node, &other)),
        }
    } else {
        let (id, head) = (meta.id, advert.head.clone());
        receive(ctx, &mut stream, source_node, "pull", |pack, waits| {
            ctx.vaults.ask(v::ReceivePull {
                vault: id,
                head,
                pack,
                waits,
            })
        })
        .await?
    };
    let new_remote = Remote {
        node: source_node,
        vault: advert.vault,
    };
    if stored != Some(new_remote) {
        ctx.vaults
            .ask(v::SetRemote {
                vault: meta.id,
                remote: Some(new_remote),
            })
            .await?;
        // A clone that follows now follows its new remote.
        ctx.follow.changed();
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
    name: Option<VaultName>,
) -> Result<api::VaultMeta, ApiError> {
    let meta = ctx
        .vaults
        .ask(v::ResolveVault {
            name_or_id: vault.to_owned(),
        })
        .await?;
    let forked = ctx
        .vaults
        .ask(v::Fork {
            vault: meta.id,
            name,
        })
        .await?;
    Ok(forked.into_api())
}

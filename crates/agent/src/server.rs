//! Serves clients on the agent's Unix socket (see [`crate::api`]).

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use futures_util::{SinkExt, StreamExt};
use keynode_core::{NameError, SecretPath, VaultId, VaultName};
use keynode_net::{BoxTransport, NetError, NetworkManager, PeerAddress};
use keynode_vaults::messages::*;
use keynode_vaults::{BlobId, EntryKind, Op, PutPolicy, VaultError, VaultManager};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::*;
use crate::gestalts::{Gestalts, permission_view};

/// Most client connections served at once; more wait in the accept queue.
pub const MAX_CLIENTS: usize = 256;
/// Longest wait for a client's next frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes `secrets env` returns in all.
pub const MAX_ENV_BYTES: usize = 512 * 1024;

pub(crate) struct Ctx {
    pub gestalts: Arc<Gestalts>,
    pub notifications: Addr<keynode_notify::NotificationsManager>,
    pub vaults: Addr<VaultManager>,
    pub network: Addr<NetworkManager<BoxTransport>>,
    pub audit: Addr<keynode_audit::AuditManager>,
    pub rekey: crate::password::Rekey,
    pub status: Arc<Mutex<AgentStatus>>,
    pub shutdown: CancellationToken,
}

type Conn = Framed<UnixStream, LengthDelimitedCodec>;

pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

pub(crate) async fn serve(
    listener: UnixListener,
    ctx: Arc<Ctx>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let mut conn = Framed::new(stream, codec());
            if let Err(e) = handle(&mut conn, &ctx).await {
                tracing::debug!(error = %e, "client connection ended with an error");
                let _ = send(&mut conn, ServerMsg::Error(e)).await;
            }
            drop(permit);
        });
    }
}

async fn send(conn: &mut Conn, msg: ServerMsg) -> Result<(), ApiError> {
    let bytes = keynode_core::codec::encode(&msg)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    conn.send(bytes::Bytes::from(bytes))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Io, format!("client connection: {e}")))
}

async fn recv(conn: &mut Conn) -> Result<ClientMsg, ApiError> {
    let frame = match tokio::time::timeout(FRAME_TIMEOUT, conn.next()).await {
        Err(_) => return Err(ApiError::new(ErrorKind::Protocol, "client timed out")),
        Ok(None) => return Err(ApiError::new(ErrorKind::Protocol, "client went away")),
        Ok(Some(Err(e))) => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                format!("bad frame: {e}"),
            ));
        }
        Ok(Some(Ok(f))) => f,
    };
    keynode_core::codec::decode_with_limit::<ClientMsg, MAX_FRAME>(&frame)
        .map_err(|e| ApiError::new(ErrorKind::Protocol, format!("malformed message: {e}")))
}

/// Receives a frame unless the agent is stopping: a client that has not sent its
/// request yet does not hold up a graceful stop.
async fn recv_unless_stopping(conn: &mut Conn, ctx: &Ctx) -> Result<ClientMsg, ApiError> {
    tokio::select! {
        _ = ctx.shutdown.cancelled() => Err(ApiError::new(ErrorKind::Unavailable, "the agent is stopping")),
        m = recv(conn) => m,
    }
}

async fn handle(conn: &mut Conn, ctx: &Ctx) -> Result<(), ApiError> {
    let node_id = ctx.status.lock().unwrap_or_else(|p| p.into_inner()).node_id;
    match recv_unless_stopping(conn, ctx).await? {
        ClientMsg::Hello { version } if version == PROTOCOL_VERSION => {}
        ClientMsg::Hello { version } => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                format!("client speaks protocol {version}, this agent {PROTOCOL_VERSION}"),
            ));
        }
        _ => return Err(ApiError::new(ErrorKind::Protocol, "expected Hello")),
    }
    send(
        conn,
        ServerMsg::Hello {
            version: PROTOCOL_VERSION,
            node_id,
        },
    )
    .await?;
    let request = match recv_unless_stopping(conn, ctx).await? {
        ClientMsg::Request(r) => r,
        _ => return Err(ApiError::new(ErrorKind::Protocol, "expected a request")),
    };
    // Only the kind: vault names, secret paths and values never reach the log.
    let kind: &'static str = (&request).into();
    tracing::debug!(kind, "request");
    match request {
        Request::SecretsGet { vault, path, at } => download(conn, ctx, &vault, &path, at).await,
        Request::SecretsWrite {
            vault,
            path,
            create_new,
        } => {
            let r = upload_one(conn, ctx, &vault, &path, create_new).await?;
            send(conn, ServerMsg::Response(r)).await
        }
        Request::SecretsDir { vault, path } => {
            let r = upload_dir(conn, ctx, &vault, path.as_deref()).await?;
            send(conn, ServerMsg::Response(r)).await
        }
        other => {
            let r = unary(ctx, other).await?;
            send(conn, ServerMsg::Response(r)).await
        }
    }
}

pub(crate) fn vault_err(e: VaultError) -> ApiError {
    use VaultError as V;
    let kind = match &e {
        V::VaultNotFound(_) | V::SecretNotFound(_) | V::BadRevision(_) => ErrorKind::NotFound,
        V::VaultExists(_) | V::SecretExists(_) => ErrorKind::Exists,
        V::IsADirectory(_) | V::NotADirectory(_) | V::DirectoryNotEmpty(_) => ErrorKind::BadData,
        V::ParentNotFound(_) => ErrorKind::NotFound,
        V::ReadOnly(_) => ErrorKind::ReadOnly,
        V::Diverged { .. } => ErrorKind::Conflict,
        V::NotAClone(_) => ErrorKind::Usage,
        V::BadPack(_) | V::MissingHead(_) => ErrorKind::Protocol,
        V::Io(_) => ErrorKind::Io,
        _ => ErrorKind::Internal,
    };
    ApiError::new(kind, e.to_string())
}

/// Maps a network failure to what the CLI reports; errors from the other node
/// say so.
pub(crate) fn net_err(e: NetError) -> ApiError {
    let kind = match &e {
        NetError::Remote(w) => match w.kind {
            keynode_net::WireErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            keynode_net::WireErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Remote,
        },
        NetError::NoAddress(_) => ErrorKind::NotFound,
        NetError::UnexpectedPeer { .. } => ErrorKind::PermissionDenied,
        NetError::Unreachable { .. }
        | NetError::Timeout { .. }
        | NetError::ConnectionClosed(_)
        | NetError::Handshake { .. }
        | NetError::NoResponse(_) => ErrorKind::Unreachable,
        NetError::Shutdown => ErrorKind::Unavailable,
        // A stream cut by the network is unreachability; a peer that sends
        // what cannot be decoded breaks the protocol.
        NetError::Rpc { source, .. } => match source {
            keynode_net::RpcError::Io(_) | keynode_net::RpcError::Truncated => {
                ErrorKind::Unreachable
            }
            _ => ErrorKind::Protocol,
        },
        _ => ErrorKind::Internal,
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if let NetError::NoAddress(_) = e {
        message.push_str("; add it with `keynode nodes add NODE_ID HOST PORT`");
    }
    ApiError::new(kind, message)
}

fn gestalt_id(s: &str) -> Result<keynode_core::GestaltId, ApiError> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorKind::BadData, format!("{e} (got {s:?})")))
}

fn gestalt_action(s: &str) -> Result<keynode_acl::GestaltAction, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            ErrorKind::BadData,
            format!("{e}; gestalt actions are notify, scan and claim (vault access is granted with `keynode vaults share`)"),
        )
    })
}

fn claimed(c: &keynode_gestalt::SignedClaim) -> Response {
    Response::Claimed {
        claim_id: c.claim.id.to_string(),
        seq: c.claim.seq,
    }
}

fn tid(s: &str) -> Result<keynode_core::Tid, ApiError> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorKind::BadData, format!("{e} (got {s:?})")))
}

/// `Removed(1)`, or NotFound naming the box.
fn removed_one(found: bool, id: keynode_core::Tid, which: &str) -> Result<Response, ApiError> {
    if found {
        Ok(Response::Removed(1))
    } else {
        Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no notification {id} in the {which}"),
        ))
    }
}

fn store_call<T>(
    r: Result<Result<T, keynode_notify::StoreError>, actix::MailboxError>,
) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::new(ErrorKind::Unavailable, format!("notifications: {e}")))?
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
}

/// `vaults share` / `unshare` (SPEC §6.1–2): one ACL transaction for the
/// grantee's whole gestalt, then a notification to every node of it.
async fn share(
    ctx: &Ctx,
    meta: &keynode_vaults::VaultMeta,
    node: keynode_core::NodeId,
    grant: bool,
) -> Result<(), ApiError> {
    let member = keynode_core::GestaltId::Node(node);
    if !ctx.gestalts.knows(&member).await? {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "{node} is not a known node; add it with `keynode nodes add {node} HOST PORT` \
                 and `keynode identities trust {node}` first"
            ),
        ));
    }
    ctx.gestalts.share_vault(&member, meta.id, grant).await?;
    let vault = meta.id;
    ctx.gestalts
        .record(if grant {
            keynode_audit::AuditEvent::VaultShared { vault, node }
        } else {
            keynode_audit::AuditEvent::VaultUnshared { vault, node }
        })
        .await;
    let data = if grant {
        keynode_notify::NotificationData::VaultShare {
            vault: meta.id,
            name: meta.name.clone(),
            actions: vec!["clone".into(), "pull".into()],
        }
    } else {
        keynode_notify::NotificationData::VaultUnshare {
            vault: meta.id,
            name: meta.name.clone(),
        }
    };
    for to in ctx.gestalts.gestalt_nodes(node).await? {
        notify(ctx, to, data.clone()).await?;
    }
    Ok(())
}

/// Queues a notification for `to` (delivered now if it is reachable, retried
/// from the outbox if not).
pub(crate) async fn notify(
    ctx: &Ctx,
    to: keynode_core::NodeId,
    data: keynode_notify::NotificationData,
) -> Result<(), ApiError> {
    ctx.notifications
        .send(keynode_notify::messages::Send { to, data })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Unavailable, format!("notifications: {e}")))?
        .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
    Ok(())
}

fn network_gone(e: actix::MailboxError) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, format!("network service: {e}"))
}

fn name_err(e: NameError) -> ApiError {
    ApiError::new(ErrorKind::BadData, e.to_string())
}

fn mailbox<T>(r: Result<Result<T, VaultError>, actix::MailboxError>) -> Result<T, ApiError> {
    match r {
        Ok(r) => r.map_err(vault_err),
        Err(e) => Err(ApiError::new(
            ErrorKind::Unavailable,
            format!("vault service: {e}"),
        )),
    }
}

fn path(s: &str) -> Result<SecretPath, ApiError> {
    SecretPath::new(s).map_err(name_err)
}

async fn resolve(ctx: &Ctx, vault: &str) -> Result<VaultId, ApiError> {
    let meta = mailbox(
        ctx.vaults
            .send(ResolveVault {
                name_or_id: vault.to_owned(),
            })
            .await,
    )?;
    Ok(meta.id)
}

async fn commit(ctx: &Ctx, vault: VaultId, ops: Vec<Op>) -> Result<Response, ApiError> {
    let outcome = mailbox(ctx.vaults.send(Commit { vault, ops }).await)?;
    Ok(Response::Committed(outcome.commit().cloned()))
}

/// One request served in process, as the socket server would (unary requests
/// only: uploads and downloads go through [`put_secret`] and [`get_secret`]).
pub(crate) async fn call(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    match request {
        Request::SecretsGet { .. } | Request::SecretsWrite { .. } | Request::SecretsDir { .. } => {
            Err(ApiError::new(
                ErrorKind::Usage,
                "streaming requests cannot be called in process",
            ))
        }
        other => unary(ctx, other).await,
    }
}

/// `secrets write` in process: puts `value` at `p` (overwriting) in one commit.
pub(crate) async fn put_secret(
    ctx: &Ctx,
    vault: &str,
    p: &str,
    value: Vec<u8>,
) -> Result<Response, ApiError> {
    let p = path(p)?;
    let vault = resolve(ctx, vault).await?;
    let source: Source = Box::new(io::Cursor::new(value));
    let blob = mailbox(ctx.vaults.send(WriteBlob { vault, source }).await)?;
    commit(
        ctx,
        vault,
        vec![Op::Put {
            path: p,
            blob,
            policy: PutPolicy::Overwrite,
        }],
    )
    .await
}

/// `secrets get` in process: the secret's content at the head.
pub(crate) async fn get_secret(ctx: &Ctx, vault: &str, p: &str) -> Result<Vec<u8>, ApiError> {
    let p = path(p)?;
    let vault = resolve(ctx, vault).await?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let into = out.clone();
    let sink: Sink = Box::new(move |chunk: &[u8]| {
        into.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(chunk);
        Ok(())
    });
    mailbox(
        ctx.vaults
            .send(ReadSecret {
                vault,
                path: p,
                at: None,
                sink,
            })
            .await,
    )?;
    let value = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(value)
}

async fn unary(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    let v = &ctx.vaults;
    Ok(match request {
        Request::AgentStatus => {
            Response::Status(ctx.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
        }
        Request::AgentStop => {
            ctx.shutdown.cancel();
            Response::Unit
        }
        Request::AgentPassword { current, new } => {
            ctx.rekey.change(current, new).await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::PasswordChanged)
                .await;
            Response::Unit
        }
        Request::VaultsCreate { name } => {
            let name = VaultName::new(name).map_err(name_err)?;
            Response::Vault(mailbox(v.send(CreateVault { name }).await)?)
        }
        Request::VaultsList => Response::Vaults(mailbox(v.send(ListVaults {}).await)?),
        Request::VaultsRename { vault, new_name } => {
            let new_name = VaultName::new(new_name).map_err(name_err)?;
            let vault = resolve(ctx, &vault).await?;
            mailbox(
                v.send(RenameVault {
                    vault,
                    name: new_name,
                })
                .await,
            )?;
            Response::Unit
        }
        Request::VaultsDelete { vault } => {
            let vault = resolve(ctx, &vault).await?;
            mailbox(v.send(DeleteVault { vault }).await)?;
            // A deleted vault's grants go with it (SPEC §3).
            ctx.gestalts.purge_vault(vault).await?;
            Response::Unit
        }
        Request::VaultsShare { vault, node } => {
            let meta = mailbox(v.send(ResolveVault { name_or_id: vault }).await)?;
            share(ctx, &meta, node, true).await?;
            Response::Unit
        }
        Request::VaultsUnshare { vault, node } => {
            let meta = mailbox(v.send(ResolveVault { name_or_id: vault }).await)?;
            share(ctx, &meta, node, false).await?;
            Response::Unit
        }
        Request::VaultsPermissions { vault } => {
            let vault = resolve(ctx, &vault).await?;
            Response::VaultPermissions(ctx.gestalts.vault_grants(vault).await?)
        }
        Request::VaultsScan { node } => Response::Scan(crate::transfer::scan(ctx, node).await?),
        Request::VaultsClone { vault, node } => {
            Response::Vault(crate::transfer::clone(ctx, node, &vault).await?)
        }
        Request::VaultsPull {
            vault,
            node,
            pull_vault,
        } => crate::transfer::pull(ctx, &vault, node, pull_vault).await?,
        Request::VaultsFork { vault, new_name } => {
            Response::Vault(crate::transfer::fork(ctx, &vault, new_name).await?)
        }
        Request::VaultsLog {
            vault,
            depth,
            commit,
        } => {
            let vault = resolve(ctx, &vault).await?;
            Response::Log(mailbox(
                v.send(Log {
                    vault,
                    depth: depth.map(|d| d as usize),
                    from: commit,
                })
                .await,
            )?)
        }
        Request::VaultsVersion { vault, rev } => {
            let vault = resolve(ctx, &vault).await?;
            Response::Committed(
                mailbox(v.send(Version { vault, rev }).await)?
                    .commit()
                    .cloned(),
            )
        }
        Request::SecretsList { vault, path: p, at } => {
            let dir = p.as_deref().map(path).transpose()?;
            let vault = resolve(ctx, &vault).await?;
            Response::Entries(mailbox(v.send(ListSecrets { vault, dir, at }).await)?)
        }
        Request::SecretsMkdir {
            vault,
            path: p,
            parents,
        } => {
            let p = path(&p)?;
            let vault = resolve(ctx, &vault).await?;
            commit(ctx, vault, vec![Op::Mkdir { path: p, parents }]).await?
        }
        Request::SecretsRename {
            vault,
            path: p,
            new_name,
        } => {
            let from = path(&p)?;
            let to = from.with_file_name(&new_name).map_err(name_err)?;
            let vault = resolve(ctx, &vault).await?;
            commit(ctx, vault, vec![Op::Rename { from, to }]).await?
        }
        Request::SecretsRm {
            vault,
            paths,
            recursive,
        } => {
            if paths.is_empty() {
                return Err(ApiError::new(ErrorKind::Usage, "no secret paths given"));
            }
            let ops = paths
                .iter()
                .map(|p| path(p).map(|path| Op::Remove { path, recursive }))
                .collect::<Result<Vec<_>, _>>()?;
            let vault = resolve(ctx, &vault).await?;
            commit(ctx, vault, ops).await?
        }
        Request::SecretsStat { vault, path: p, at } => {
            let p = path(&p)?;
            let vault = resolve(ctx, &vault).await?;
            Response::Stat(mailbox(v.send(Stat { vault, path: p, at }).await)?)
        }
        Request::SecretsEnv { refs } => Response::Env(env(ctx, refs).await?),
        Request::NodesAdd { node, host, port } => {
            if host.is_empty()
                || host.len() > 253
                || host.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ApiError::new(
                    ErrorKind::BadData,
                    format!("invalid host {host:?}"),
                ));
            }
            let addr = PeerAddress::new(host, port);
            ctx.network
                .send(keynode_net::actor::AddNode { node, addr })
                .await
                .map_err(network_gone)?
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            Response::Unit
        }
        Request::NodesPing { node } => {
            let rtt = ctx
                .network
                .send(keynode_net::actor::Ping { node })
                .await
                .map_err(network_gone)?
                .map_err(net_err)?;
            Response::Pong {
                rtt_us: rtt.as_micros() as u64,
            }
        }
        Request::NodesList => {
            let nodes = ctx
                .network
                .send(keynode_net::actor::ListNodes)
                .await
                .map_err(network_gone)?
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            Response::Nodes(
                nodes
                    .into_iter()
                    .map(|(node_id, addrs)| NodeEntry {
                        node_id,
                        addresses: addrs.iter().map(|a| a.to_string()).collect(),
                    })
                    .collect(),
            )
        }
        Request::NodesClaim { node } => claimed(&ctx.gestalts.claim_node(node).await?),
        Request::IdentitiesTrust { gestalt } => {
            let id = gestalt_id(&gestalt)?;
            ctx.gestalts
                .allow(&id, keynode_acl::GestaltAction::Notify)
                .await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::Trusted {
                    gestalt: id.to_string(),
                })
                .await;
            // Learn the rest of the gestalt in the background.
            let gestalts = ctx.gestalts.clone();
            tokio::spawn(async move {
                if let Err(e) = gestalts.discover(id.clone()).await {
                    tracing::debug!(gestalt = %id, error = %e, "discovery after trust failed");
                }
            });
            Response::Unit
        }
        Request::IdentitiesUntrust { gestalt } => {
            let id = gestalt_id(&gestalt)?;
            ctx.gestalts
                .disallow(&id, keynode_acl::GestaltAction::Notify)
                .await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::Untrusted {
                    gestalt: id.to_string(),
                })
                .await;
            Response::Unit
        }
        Request::IdentitiesAllow { gestalt, action } => {
            let (id, action) = (gestalt_id(&gestalt)?, gestalt_action(&action)?);
            ctx.gestalts.allow(&id, action).await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::Allowed {
                    gestalt: id.to_string(),
                    action: action.to_string(),
                })
                .await;
            Response::Unit
        }
        Request::IdentitiesDisallow { gestalt, action } => {
            let (id, action) = (gestalt_id(&gestalt)?, gestalt_action(&action)?);
            ctx.gestalts.disallow(&id, action).await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::Disallowed {
                    gestalt: id.to_string(),
                    action: action.to_string(),
                })
                .await;
            Response::Unit
        }
        Request::IdentitiesPermissions { gestalt } => {
            let id = gestalt_id(&gestalt)?;
            Response::Permissions(permission_view(&ctx.gestalts.permission(&id).await?))
        }
        Request::IdentitiesInvite { node } => {
            let id = keynode_core::GestaltId::Node(node);
            ctx.gestalts
                .allow(&id, keynode_acl::GestaltAction::Claim)
                .await?;
            ctx.gestalts
                .record(keynode_audit::AuditEvent::Allowed {
                    gestalt: id.to_string(),
                    action: keynode_acl::GestaltAction::Claim.to_string(),
                })
                .await;
            notify(ctx, node, keynode_notify::NotificationData::GestaltInvite).await?;
            Response::Unit
        }
        Request::NotificationsSend { node, message } => {
            let data = keynode_notify::NotificationData::general(message)
                .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
            notify(ctx, node, data).await?;
            Response::Unit
        }
        Request::NotificationsInboxRead {
            unread,
            limit,
            newest_first,
        } => {
            let order = if newest_first {
                keynode_notify::Order::Newest
            } else {
                keynode_notify::Order::Oldest
            };
            let msg = keynode_notify::messages::InboxRead {
                unread_only: unread,
                limit: limit.map(|l| l as usize),
                order,
            };
            let entries = store_call(ctx.notifications.send(msg).await)?;
            Response::Notifications(
                entries
                    .iter()
                    .map(crate::notifications::inbox_view)
                    .collect(),
            )
        }
        Request::NotificationsInboxRemove { id } => {
            let id = tid(&id)?;
            let msg = keynode_notify::messages::InboxRemove { id };
            removed_one(store_call(ctx.notifications.send(msg).await)?, id, "inbox")?
        }
        Request::NotificationsInboxClear => {
            let msg = keynode_notify::messages::InboxClear {};
            Response::Removed(store_call(ctx.notifications.send(msg).await)? as u64)
        }
        Request::NotificationsOutboxRead => {
            let msg = keynode_notify::messages::OutboxRead {};
            let pending = store_call(ctx.notifications.send(msg).await)?;
            Response::Notifications(
                pending
                    .iter()
                    .map(crate::notifications::outbox_view)
                    .collect(),
            )
        }
        Request::NotificationsOutboxRemove { id } => {
            let id = tid(&id)?;
            let msg = keynode_notify::messages::OutboxRemove { id };
            removed_one(store_call(ctx.notifications.send(msg).await)?, id, "outbox")?
        }
        Request::NotificationsOutboxClear => {
            let msg = keynode_notify::messages::OutboxClear {};
            Response::Removed(store_call(ctx.notifications.send(msg).await)? as u64)
        }
        Request::IdentitiesDiscover { gestalt } => {
            let id = gestalt_id(&gestalt)?;
            let report = ctx.gestalts.discover(id.clone()).await?;
            Response::Discovered(DiscoveryView {
                visited: report.visited.iter().map(ToString::to_string).collect(),
                changes: report.events.len(),
                failures: report
                    .failures
                    .iter()
                    .map(|(v, e)| format!("{v}: {e}"))
                    .collect(),
                truncated: report.truncated,
                gestalt: ctx.gestalts.view(&id).await.ok(),
            })
        }
        Request::IdentitiesList => Response::Gestalts(ctx.gestalts.list().await?),
        Request::IdentitiesGet { gestalt } => {
            Response::Gestalt(ctx.gestalts.view(&gestalt_id(&gestalt)?).await?)
        }
        Request::IdentitiesAuthenticate { provider } => {
            let provider = keynode_core::ProviderId::new(provider)
                .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
            ctx.gestalts.provider(&provider)?;
            Response::Unit
        }
        Request::IdentitiesClaim { identity } => match gestalt_id(&identity)? {
            keynode_core::GestaltId::Identity(provider, identity) => {
                claimed(&ctx.gestalts.claim_identity(provider, identity).await?)
            }
            keynode_core::GestaltId::Node(_) => {
                return Err(ApiError::new(
                    ErrorKind::BadData,
                    "expected PROVIDER:IDENTITY, got a node id",
                ));
            }
        },
        Request::NodesConnections => {
            let conns = ctx
                .network
                .send(keynode_net::actor::Connections)
                .await
                .map_err(network_gone)?;
            Response::Connections(
                conns
                    .into_iter()
                    .map(|c| ConnectionEntry {
                        node_id: c.node_id,
                        remote_addr: c.remote_addr.to_string(),
                        direction: match c.direction {
                            keynode_net::Direction::Inbound => "inbound".into(),
                            keynode_net::Direction::Outbound => "outbound".into(),
                        },
                        established_ms: c.established_ms,
                        streams: c.streams as u64,
                    })
                    .collect(),
            )
        }
        Request::AuditRead { limit } => {
            let entries = ctx
                .audit
                .send(keynode_audit::Read {
                    limit: limit.map(|l| l as usize),
                    newest_first: true,
                })
                .await
                .map_err(|e| ApiError::new(ErrorKind::Unavailable, format!("audit log: {e}")))?
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            Response::AuditEntries(entries.iter().map(audit_view).collect())
        }
        Request::AuditVerify => {
            let owner = ctx.status.lock().unwrap_or_else(|p| p.into_inner()).node_id;
            let verified = ctx
                .audit
                .send(keynode_audit::Verify { owner })
                .await
                .map_err(|e| ApiError::new(ErrorKind::Unavailable, format!("audit log: {e}")))?;
            match verified {
                Ok(entries) => Response::AuditVerified { entries },
                Err(e @ keynode_audit::AuditError::Tampered { .. }) => {
                    return Err(ApiError::new(ErrorKind::BadData, e.to_string()));
                }
                Err(e) => return Err(ApiError::new(ErrorKind::Internal, e.to_string())),
            }
        }
        Request::SecretsGet { .. } | Request::SecretsWrite { .. } | Request::SecretsDir { .. } => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                "streaming request sent as unary",
            ));
        }
    })
}

fn audit_view(e: &keynode_audit::AuditEntry) -> AuditEntryView {
    AuditEntryView {
        seq: e.seq,
        time_ms: e.time_ms,
        kind: e.event.kind().to_owned(),
        peer: e.event.peer(),
        fields: e
            .event
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// Collects secrets as `(name, value)` pairs, expanding directories.
async fn env(
    ctx: &Ctx,
    refs: Vec<(String, Option<String>)>,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (vault_text, p) in refs {
        let vault = resolve(ctx, &vault_text).await?;
        let mut stack: Vec<Option<SecretPath>> = Vec::new();
        match p.as_deref().map(path).transpose()? {
            None => stack.push(None),
            Some(p) => {
                let stat = mailbox(
                    ctx.vaults
                        .send(Stat {
                            vault,
                            path: p.clone(),
                            at: None,
                        })
                        .await,
                )?;
                match stat.kind {
                    EntryKind::Dir => stack.push(Some(p)),
                    EntryKind::File => {
                        let value = read_small(ctx, vault, &p, &mut total).await?;
                        out.push((p.file_name().to_owned(), value));
                    }
                }
            }
        }
        while let Some(dir) = stack.pop() {
            let entries = mailbox(
                ctx.vaults
                    .send(ListSecrets {
                        vault,
                        dir: dir.clone(),
                        at: None,
                    })
                    .await,
            )?;
            for e in entries {
                let child = match &dir {
                    Some(d) => d.join(&path(&e.name)?),
                    None => path(&e.name)?,
                };
                match e.kind {
                    EntryKind::Dir => stack.push(Some(child)),
                    EntryKind::File => {
                        let value = read_small(ctx, vault, &child, &mut total).await?;
                        out.push((child.file_name().to_owned(), value));
                    }
                }
            }
        }
    }
    Ok(out)
}

async fn read_small(
    ctx: &Ctx,
    vault: VaultId,
    p: &SecretPath,
    total: &mut usize,
) -> Result<Vec<u8>, ApiError> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let budget = MAX_ENV_BYTES.saturating_sub(*total);
    let sink_buf = buf.clone();
    let sink = Box::new(move |chunk: &[u8]| {
        let mut b = sink_buf.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() + chunk.len() > budget {
            return Err(io::Error::other("secrets too large for the environment"));
        }
        b.extend_from_slice(chunk);
        Ok(())
    });
    let r = ctx
        .vaults
        .send(ReadSecret {
            vault,
            path: p.clone(),
            at: None,
            sink,
        })
        .await;
    mailbox(r).map_err(|e| match e.kind {
        ErrorKind::Io => ApiError::new(
            ErrorKind::BadData,
            format!("secrets exceed {MAX_ENV_BYTES} bytes, too large for the environment"),
        ),
        _ => e,
    })?;
    let value = std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()));
    *total += value.len();
    Ok(value)
}

async fn download(
    conn: &mut Conn,
    ctx: &Ctx,
    vault: &str,
    p: &str,
    at: Option<String>,
) -> Result<(), ApiError> {
    let p = path(p)?;
    let vault = resolve(ctx, vault).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let sink = Box::new(move |chunk: &[u8]| {
        tx.blocking_send(chunk.to_vec())
            .map_err(|_| io::Error::other("client went away"))
    });
    let read = ctx.vaults.send(ReadSecret {
        vault,
        path: p,
        at,
        sink,
    });
    let reading = tokio::spawn(read);
    let mut started = false;
    while let Some(chunk) = rx.recv().await {
        if !started {
            send(conn, ServerMsg::Response(Response::Streaming)).await?;
            started = true;
        }
        send(conn, ServerMsg::Data(chunk)).await?;
    }
    let result = reading
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    mailbox(result)?;
    if !started {
        send(conn, ServerMsg::Response(Response::Streaming)).await?;
    }
    send(conn, ServerMsg::End).await
}

/// `Read` over chunks arriving from the connection task. An `Err` item aborts
/// the blob being written.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            // Inline (simulation): everything was queued before reading began.
            let next = if keynode_core::sim::inline_blocking() {
                self.rx.try_recv().ok()
            } else {
                self.rx.blocking_recv()
            };
            match next {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How an upload of one blob ended.
enum Next {
    End,
    File(String),
}

/// Receives `Data` frames into a new blob until `End` or `FileStart`. A client that
/// breaks off aborts the blob: nothing partial is ever committed.
async fn receive_blob(
    conn: &mut Conn,
    ctx: &Ctx,
    vault: VaultId,
) -> Result<(BlobId, Next), ApiError> {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    let source = Box::new(ChannelReader::new(rx));
    let writing = tokio::spawn(ctx.vaults.send(WriteBlob { vault, source }));
    let next = loop {
        match recv(conn).await {
            Ok(ClientMsg::Data(b)) => {
                if tx.send(Ok(b)).await.is_err() {
                    // The writer stopped early; its result says why.
                    break Next::End;
                }
            }
            Ok(ClientMsg::End) => break Next::End,
            Ok(ClientMsg::FileStart { path }) => break Next::File(path),
            Ok(_) => {
                let _ = tx.send(Err(io::Error::other("upload aborted"))).await;
                drop(tx);
                let _ = writing.await;
                return Err(ApiError::new(
                    ErrorKind::Protocol,
                    "unexpected message in upload",
                ));
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::other("upload aborted"))).await;
                drop(tx);
                let _ = writing.await;
                return Err(e);
            }
        }
    };
    drop(tx);
    let result = writing
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    Ok((mailbox(result)?, next))
}

async fn upload_one(
    conn: &mut Conn,
    ctx: &Ctx,
    vault: &str,
    p: &str,
    create_new: bool,
) -> Result<Response, ApiError> {
    let p = path(p)?;
    let vault = resolve(ctx, vault).await?;
    let (blob, next) = receive_blob(conn, ctx, vault).await?;
    if let Next::File(_) = next {
        return Err(ApiError::new(
            ErrorKind::Protocol,
            "FileStart in a single upload",
        ));
    }
    let policy = if create_new {
        PutPolicy::CreateNew
    } else {
        PutPolicy::Overwrite
    };
    commit(
        ctx,
        vault,
        vec![Op::Put {
            path: p,
            blob,
            policy,
        }],
    )
    .await
}

async fn upload_dir(
    conn: &mut Conn,
    ctx: &Ctx,
    vault: &str,
    base: Option<&str>,
) -> Result<Response, ApiError> {
    let base = base.map(path).transpose()?;
    let vault = resolve(ctx, vault).await?;
    let mut ops = Vec::new();
    let mut next = match recv(conn).await? {
        ClientMsg::FileStart { path } => Next::File(path),
        ClientMsg::End => Next::End,
        _ => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                "expected FileStart or End",
            ));
        }
    };
    while let Next::File(name) = next {
        let rel = path(&name)?;
        let target = match &base {
            Some(b) => b.join(&rel),
            None => rel,
        };
        let (blob, n) = receive_blob(conn, ctx, vault).await?;
        ops.push(Op::Put {
            path: target,
            blob,
            policy: PutPolicy::Overwrite,
        });
        next = n;
    }
    if ops.is_empty() {
        return Ok(Response::Committed(None));
    }
    commit(ctx, vault, ops).await
}

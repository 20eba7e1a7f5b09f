//! The client socket layer: accepts clients on the agent's Unix socket, speaks
//! the framing and the `Hello`, then reads [`Request`]s one after another and
//! hands each to [`crate::handlers`], streaming uploads and downloads between
//! the frames and the handlers (see [`crate::api`] for the protocol).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::*;
use crate::ctx::Ctx;
use crate::handlers::{self, Upload, UploadSource};

/// Most client connections served at once; more wait in the accept queue.
pub const MAX_CLIENTS: usize = 256;
/// Longest wait for a client's next frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connection waits, answered, for its client's next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type Conn = Framed<UnixStream, LengthDelimitedCodec>;

/// Serves clients until `shutdown`, each connection a task of `tracker`.
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
                // The kind only: messages may name vaults and secrets.
                tracing::debug!(kind = ?e.kind, "client request failed");
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

/// An upload's frames, as the handlers read them.
struct Frames<'a>(&'a mut Conn);

impl UploadSource for Frames<'_> {
    async fn next(&mut self) -> Result<Upload, ApiError> {
        match recv(self.0).await? {
            ClientMsg::Data(b) => Ok(Upload::Data(b)),
            ClientMsg::FileStart { path } => Ok(Upload::File(path)),
            ClientMsg::End => Ok(Upload::End),
            _ => Err(ApiError::new(
                ErrorKind::Protocol,
                "unexpected message in upload",
            )),
        }
    }
}

async fn handle(conn: &mut Conn, ctx: &Ctx) -> Result<(), ApiError> {
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
    let hello = ServerMsg::Hello {
        version: PROTOCOL_VERSION,
        node_id: ctx.node_id(),
    };
    send(conn, hello).await?;
    let mut request = match recv_unless_stopping(conn, ctx).await? {
        ClientMsg::Request(r) => r,
        _ => return Err(ApiError::new(ErrorKind::Protocol, "expected a request")),
    };
    loop {
        // Only the kind: vault names, secret paths and values never reach the log.
        let kind: &'static str = (&request).into();
        tracing::debug!(kind, "request");
        let reusable = !request.ends_connection_when_refused();
        let watch = matches!(request, Request::VaultsWatch { .. });
        let result = respond(conn, ctx, request).await;
        crate::metrics::client_request(kind, &result);
        match result {
            // A watch ends its connection.
            Ok(()) if watch => return Ok(()),
            Ok(()) => {}
            Err(e) if reusable && !e.kind.ends_connection() => {
                tracing::debug!(kind = ?e.kind, "client request failed");
                send(conn, ServerMsg::Error(e)).await?;
            }
            Err(e) => return Err(e),
        }
        request = match next_request(conn, ctx).await? {
            Some(r) => r,
            None => return Ok(()),
        };
    }
}

/// The next request on a connection that has been answered: `None` when the
/// client closes it, is idle for [`IDLE_TIMEOUT`] or the agent stops (the
/// client reconnects; nothing of its was read).
async fn next_request(conn: &mut Conn, ctx: &Ctx) -> Result<Option<Request>, ApiError> {
    let frame = tokio::select! {
        _ = ctx.shutdown.cancelled() => return Ok(None),
        f = tokio::time::timeout(IDLE_TIMEOUT, conn.next()) => match f {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(f)) => f,
        },
    };
    let frame = frame.map_err(|e| ApiError::new(ErrorKind::Protocol, format!("bad frame: {e}")))?;
    match keynode_core::codec::decode_with_limit::<ClientMsg, MAX_FRAME>(&frame) {
        Ok(ClientMsg::Request(r)) => Ok(Some(r)),
        Ok(_) => Err(ApiError::new(ErrorKind::Protocol, "expected a request")),
        Err(e) => Err(ApiError::new(
            ErrorKind::Protocol,
            format!("malformed message: {e}"),
        )),
    }
}

/// Answers one request: a stream for downloads, uploads and watches, else
/// one response.
async fn respond(conn: &mut Conn, ctx: &Ctx, request: Request) -> Result<(), ApiError> {
    let response = match request {
        Request::SecretsGet { vault, path, at } => {
            return download(conn, ctx, &vault, path, at).await;
        }
        Request::SecretsWrite {
            vault,
            path,
            create_new,
        } => handlers::upload_one(ctx, &mut Frames(conn), &vault, path, create_new).await?,
        Request::SecretsDir { vault, path } => {
            handlers::upload_dir(ctx, &mut Frames(conn), &vault, path).await?
        }
        Request::VaultsWatch { vaults } => return watch(conn, ctx, &vaults).await,
        other => handlers::unary(ctx, other).await?,
    };
    send(conn, ServerMsg::Response(response)).await
}

/// `SecretsGet`: `Streaming`, then the content as `Data` frames as the store
/// reads it, then `End` (or an `Error`).
async fn download(
    conn: &mut Conn,
    ctx: &Ctx,
    vault: &str,
    path: keynode_core::SecretPath,
    at: Option<String>,
) -> Result<(), ApiError> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(handlers::download_depth(ctx));
    let reading = handlers::download(ctx, vault, path, at, tx);
    // The receiver moves in: if the client goes away, dropping it stops the
    // store's read.
    let forwarding = async move {
        let mut started = false;
        while let Some(chunk) = rx.recv().await {
            if !started {
                send(conn, ServerMsg::Response(Response::Streaming)).await?;
                started = true;
            }
            send(conn, ServerMsg::Data(chunk)).await?;
        }
        Ok::<_, ApiError>((started, conn))
    };
    let (read, forwarded) = tokio::join!(reading, forwarding);
    let (started, conn) = forwarded?;
    read?;
    if !started {
        send(conn, ServerMsg::Response(Response::Streaming)).await?;
    }
    send(conn, ServerMsg::End).await
}

/// `VaultsWatch`: `Watching` with the heads now, then a `HeadChanged` each
/// time a watched vault moves, until the client goes away (or sends anything)
/// or the agent stops (`End`). The client's silence is no timeout here.
async fn watch(conn: &mut Conn, ctx: &Ctx, names: &[String]) -> Result<(), ApiError> {
    use keynode_vaults::messages::Advertise;
    use tokio::sync::broadcast::error::RecvError;

    use crate::errors::Ask;

    if names.is_empty() || names.len() > MAX_WATCHED {
        return Err(ApiError::new(
            ErrorKind::Usage,
            format!("watch 1 to {MAX_WATCHED} vaults"),
        ));
    }
    // Subscribed before the heads are read, so no move falls in between.
    let mut changes = ctx.heads.subscribe();
    let mut watched = Vec::with_capacity(names.len());
    for name in names {
        let meta = handlers::meta(ctx, name).await?;
        let advert = ctx.vaults.ask(Advertise { vault: meta.id }).await?;
        watched.push(WatchedVault {
            id: meta.id,
            name: meta.name,
            head: advert.head,
        });
    }
    let mut heads: std::collections::HashMap<_, _> =
        watched.iter().map(|w| (w.id, w.head.clone())).collect();
    send(conn, ServerMsg::Response(Response::Watching(watched))).await?;
    loop {
        let change = tokio::select! {
            _ = ctx.shutdown.cancelled() => return send(conn, ServerMsg::End).await,
            _ = conn.next() => return Ok(()),
            c = changes.recv() => c,
        };
        let moved: Vec<_> = match change {
            Ok(c) if heads.contains_key(&c.vault) => vec![(c.vault, c.head)],
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                // Fell behind: read every watched head again.
                let mut now = Vec::new();
                for id in heads.keys() {
                    if let Ok(a) = ctx.vaults.ask(Advertise { vault: *id }).await {
                        now.push((*id, a.head));
                    }
                }
                now
            }
            Err(RecvError::Closed) => return send(conn, ServerMsg::End).await,
        };
        for (vault, head) in moved {
            if heads.get(&vault) == Some(&head) {
                continue;
            }
            heads.insert(vault, head.clone());
            send(
                conn,
                ServerMsg::Response(Response::HeadChanged { vault, head }),
            )
            .await?;
        }
    }
}

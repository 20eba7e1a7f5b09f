//! Secrets' contents: streamed reads and writes, imports of many files in one
//! commit, and `secrets env`.

use std::io;

use keynode_core::{SecretPath, VaultId};
use keynode_vaults::messages::*;
use keynode_vaults::{BlobId, EntryKind, Op, PutPolicy, READ_CHUNK};
use tokio::sync::mpsc;

use super::vaults::{commit, resolve};
use crate::api::{ApiError, ErrorKind, Response};
use crate::ctx::Ctx;
use crate::errors::Ask;
use crate::pipe::{Feeder, MemorySink, channel_sink, feed_store};

/// Most bytes `secrets env` returns in all.
pub const MAX_ENV_BYTES: usize = 512 * 1024;
/// Upload or download chunks in flight between the client and the store.
const CHUNK_QUEUE: usize = 4;

/// What the client sends next in an upload.
pub(crate) enum Upload {
    /// A chunk of the current file.
    Data(Vec<u8>),
    /// The next file of an import starts.
    File(SecretPath),
    /// The upload is complete.
    End,
}

/// Where an upload's frames come from (the client socket).
pub(crate) trait UploadSource {
    /// The next frame of the upload.
    async fn next(&mut self) -> Result<Upload, ApiError>;
}

/// How an upload of one blob ended.
enum Next {
    End,
    File(SecretPath),
}

/// Receives chunks into a new blob until `End` or `File`. A client that breaks
/// off aborts the blob: nothing partial is ever committed.
async fn receive_blob(
    ctx: &Ctx,
    from: &mut impl UploadSource,
    vault: VaultId,
    head: Vec<u8>,
) -> Result<(BlobId, Next), ApiError> {
    let feed = |mut tx: Feeder| async move {
        if !head.is_empty() && tx.send(Ok(head)).await.is_err() {
            return Ok(Next::End);
        }
        loop {
            match from.next().await {
                Ok(Upload::Data(b)) => {
                    if tx.send(Ok(b)).await.is_err() {
                        // The writer stopped early; its result says why.
                        return Ok(Next::End);
                    }
                }
                Ok(Upload::End) => return Ok(Next::End),
                Ok(Upload::File(path)) => return Ok(Next::File(path)),
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other("upload aborted"))).await;
                    return Err(e);
                }
            }
        }
    };
    let store = |source, waits| {
        ctx.vaults.ask(WriteBlob {
            vault,
            source,
            waits,
        })
    };
    let (blob, next) = feed_store(ctx.exec.pipe_depth(CHUNK_QUEUE), store, feed).await;
    let next = next?;
    Ok((blob?, next))
}

/// `secrets write` / `secrets create`: one streamed secret, one commit.
pub(crate) async fn upload_one(
    ctx: &Ctx,
    from: &mut impl UploadSource,
    vault: &str,
    path: SecretPath,
    create_new: bool,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let (blob, next) = receive_blob(ctx, from, vault, Vec::new()).await?;
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
    commit(ctx, vault, vec![Op::Put { path, blob, policy }]).await
}

/// `secrets dir`: every file of an import in one commit.
pub(crate) async fn upload_dir(
    ctx: &Ctx,
    from: &mut impl UploadSource,
    vault: &str,
    base: Option<SecretPath>,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let mut ops = Vec::new();
    let mut small = SmallFiles::default();
    let mut next = match from.next().await? {
        Upload::File(path) => Next::File(path),
        Upload::End => Next::End,
        Upload::Data(_) => {
            return Err(ApiError::new(
                ErrorKind::Protocol,
                "expected FileStart or End",
            ));
        }
    };
    while let Next::File(rel) = next {
        let path = match &base {
            Some(b) => b.join(&rel),
            None => rel,
        };
        // Small files are gathered and written together (one file on disk
        // for many); a file that outgrows the limit is streamed, after the
        // small ones before it, so the ops keep the client's order.
        let head = match receive_small(from).await? {
            Received::Small(content, n) => {
                small.push(path, content);
                if small.full() {
                    small.write(ctx, vault, &mut ops).await?;
                }
                next = n;
                continue;
            }
            Received::Large(head) => head,
        };
        small.write(ctx, vault, &mut ops).await?;
        let (blob, n) = receive_blob(ctx, from, vault, head).await?;
        ops.push(Op::Put {
            path,
            blob,
            policy: PutPolicy::Overwrite,
        });
        next = n;
    }
    small.write(ctx, vault, &mut ops).await?;
    if ops.is_empty() {
        return Ok(Response::Committed(None));
    }
    commit(ctx, vault, ops).await
}

/// Most bytes of small files held before they are written.
const SMALL_BATCH_BYTES: usize = 8 << 20;
/// Most small files held before they are written.
const SMALL_BATCH_FILES: usize = 4096;

/// Small files of an import, waiting to be written in one go.
#[derive(Default)]
struct SmallFiles {
    paths: Vec<SecretPath>,
    contents: Vec<Vec<u8>>,
    bytes: usize,
}

impl SmallFiles {
    fn push(&mut self, path: SecretPath, content: Vec<u8>) {
        self.bytes += content.len();
        self.paths.push(path);
        self.contents.push(content);
    }

    fn full(&self) -> bool {
        self.bytes >= SMALL_BATCH_BYTES || self.paths.len() >= SMALL_BATCH_FILES
    }

    /// Writes the held files as blobs and appends their puts to `ops`.
    async fn write(
        &mut self,
        ctx: &Ctx,
        vault: VaultId,
        ops: &mut Vec<Op>,
    ) -> Result<(), ApiError> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let blobs = std::mem::take(&mut self.contents);
        self.bytes = 0;
        let ids = ctx.vaults.ask(WriteBlobs { vault, blobs }).await?;
        for (path, blob) in self.paths.drain(..).zip(ids) {
            ops.push(Op::Put {
                path,
                blob,
                policy: PutPolicy::Overwrite,
            });
        }
        Ok(())
    }
}

/// A file of an import, as far as it was read.
enum Received {
    /// Complete and at most [`keynode_vaults::BUNDLED_BLOB`] bytes, with what
    /// follows it.
    Small(Vec<u8>, Next),
    /// Larger: the bytes read so far; the rest is still to come.
    Large(Vec<u8>),
}

async fn receive_small(from: &mut impl UploadSource) -> Result<Received, ApiError> {
    let mut content = Vec::new();
    loop {
        match from.next().await? {
            Upload::Data(b) => {
                content.extend_from_slice(&b);
                if content.len() > keynode_vaults::BUNDLED_BLOB {
                    return Ok(Received::Large(content));
                }
            }
            Upload::End => return Ok(Received::Small(content, Next::End)),
            Upload::File(path) => return Ok(Received::Small(content, Next::File(path))),
        }
    }
}

/// `secrets get`: streams the secret's content into `chunks` as the store
/// reads it. A secret of at most [`READ_CHUNK`] bytes (most are) is read
/// into memory by a short job first; a larger one is read again, streamed
/// through a pipe.
pub(crate) async fn download(
    ctx: &Ctx,
    vault: &str,
    path: SecretPath,
    at: Option<String>,
    chunks: mpsc::Sender<Vec<u8>>,
) -> Result<(), ApiError> {
    let vault = resolve(ctx, vault).await?;
    if let Some(value) = read_small(ctx, vault, path.clone(), at.clone(), READ_CHUNK).await? {
        if !value.is_empty() {
            // The client went away if this fails: nothing to tell it.
            let _ = chunks.send(value).await;
        }
        return Ok(());
    }
    let sink = channel_sink(chunks);
    ctx.vaults
        .ask(ReadSecret {
            vault,
            path,
            at,
            sink,
            waits: true,
        })
        .await?;
    Ok(())
}

/// The content of a secret as a short job (into memory), or `None` if it has
/// more than `limit` bytes.
async fn read_small(
    ctx: &Ctx,
    vault: VaultId,
    path: SecretPath,
    at: Option<String>,
    limit: usize,
) -> Result<Option<Vec<u8>>, ApiError> {
    let (sink, held) = MemorySink::new(limit);
    let read = ctx
        .vaults
        .ask(ReadSecret {
            vault,
            path,
            at,
            sink,
            waits: false,
        })
        .await;
    match (read, held.take().map(|chunks| chunks.concat())) {
        (Ok(_), value) => Ok(value),
        // The sink refused more: too large for memory.
        (Err(_), None) => Ok(None),
        (Err(e), Some(_)) => Err(e),
    }
}

/// How many chunks a download may hold between the store and the client.
pub(crate) fn download_depth(ctx: &Ctx) -> usize {
    ctx.exec.pipe_depth(CHUNK_QUEUE)
}

/// `secrets write` in process: puts `value` at `path` (overwriting) in one commit.
pub(crate) async fn put_secret(
    ctx: &Ctx,
    vault: &str,
    path: SecretPath,
    value: Vec<u8>,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let source: Source = Box::new(io::Cursor::new(value));
    let blob = ctx
        .vaults
        .ask(WriteBlob {
            vault,
            source,
            waits: false,
        })
        .await?;
    let policy = PutPolicy::Overwrite;
    commit(ctx, vault, vec![Op::Put { path, blob, policy }]).await
}

/// `secrets get` in process: the secret's content at the head, at most
/// `limit` bytes (`BadData` beyond).
pub(crate) async fn read_to_vec(
    ctx: &Ctx,
    vault: VaultId,
    path: SecretPath,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    read_small(ctx, vault, path, None, limit)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::BadData,
                format!("more than {limit} bytes to read at once"),
            )
        })
}

/// `secrets env`: secrets as `(name, value)` pairs, directories expanded, at
/// most [`MAX_ENV_BYTES`] in all.
pub(super) async fn env(
    ctx: &Ctx,
    refs: Vec<(String, Option<SecretPath>)>,
) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut read = async |vault, path: SecretPath, out: &mut Vec<(String, Vec<u8>)>| {
        let value = read_to_vec(ctx, vault, path.clone(), MAX_ENV_BYTES - total)
            .await
            .map_err(|e| match e.kind {
                ErrorKind::BadData => ApiError::new(
                    ErrorKind::BadData,
                    format!("secrets exceed {MAX_ENV_BYTES} bytes, too large for the environment"),
                ),
                _ => e,
            })?;
        total += value.len();
        out.push((path.file_name().to_owned(), value));
        Ok::<_, ApiError>(())
    };
    for (vault_text, p) in refs {
        let vault = resolve(ctx, &vault_text).await?;
        let mut stack: Vec<Option<SecretPath>> = Vec::new();
        match p {
            None => stack.push(None),
            Some(p) => {
                let stat = ctx
                    .vaults
                    .ask(Stat {
                        vault,
                        path: p.clone(),
                        at: None,
                    })
                    .await?;
                match stat.kind {
                    EntryKind::Dir => stack.push(Some(p)),
                    EntryKind::File => read(vault, p, &mut out).await?,
                }
            }
        }
        while let Some(dir) = stack.pop() {
            let entries = ctx
                .vaults
                .ask(ListSecrets {
                    vault,
                    dir: dir.clone(),
                    at: None,
                })
                .await?;
            for e in entries {
                let name = SecretPath::new(&e.name)
                    .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
                let child = match &dir {
                    Some(d) => d.join(&name),
                    None => name,
                };
                match e.kind {
                    EntryKind::Dir => stack.push(Some(child)),
                    EntryKind::File => read(vault, child, &mut out).await?,
                }
            }
        }
    }
    Ok(Response::Env(out))
}

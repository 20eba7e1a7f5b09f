//! A client of a running agent, over its Unix socket.
//!
//! A connection carries requests one after another (a watch ends it). The
//! CLI is built on this; so can any program that drives a local node.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use keynode_core::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::api::*;

/// A request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent serves this node path.
    #[error("no agent is running at {0}; start one with `keynode agent start`")]
    NotRunning(PathBuf),
    /// The agent refused or failed the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The agent broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Local I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The sysexits code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotRunning(_) => 69,
            ClientError::Api(e) => e.kind.exit_code(),
            ClientError::Protocol(_) => 76,
            ClientError::Io(_) => 74,
        }
    }
}

type Conn = Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>;

/// A connection to an agent. Requests go one after another; after each that
/// ends cleanly (or with the agent's refusal of a unary request or a
/// download), [`Client::reusable`] says the connection may carry the next.
pub struct Client {
    conn: Conn,
    node_id: NodeId,
    /// Both sides are between requests.
    in_step: bool,
}

impl Client {
    /// Connects to the agent listening on `socket` and greets it.
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = match UnixStream::connect(socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                let dir = socket.parent().unwrap_or(socket).to_path_buf();
                return Err(ClientError::NotRunning(dir));
            }
            Err(e) => return Err(e.into()),
        };
        let mut conn = Framed::new(stream, crate::api::codec());
        send(
            &mut conn,
            &ClientMsg::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .await?;
        match recv(&mut conn).await? {
            ServerMsg::Hello { version, node_id } if version == PROTOCOL_VERSION => Ok(Client {
                conn,
                node_id,
                in_step: true,
            }),
            ServerMsg::Hello { version, .. } => Err(ClientError::Protocol(format!(
                "agent speaks protocol {version}, this client {PROTOCOL_VERSION}"
            ))),
            ServerMsg::Error(e) => Err(e.into()),
            other => Err(unexpected(&other)),
        }
    }

    /// The id of the node behind this connection.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether this connection can carry another request: the last one ended
    /// cleanly and the agent has not closed it since (it closes connections
    /// idle for 30 s, and when it stops).
    pub fn reusable(&self) -> bool {
        if !self.in_step || !self.conn.read_buffer().is_empty() {
            return false;
        }
        // Anything readable between requests is the agent's close (or a
        // frame out of turn): either way the connection is done.
        let mut probe = [0u8; 1];
        matches!(
            self.conn.get_ref().try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Sends `request` as the next on this connection. Nothing of the
    /// request reached the agent if this fails.
    pub(crate) async fn begin(&mut self, request: &ClientMsg) -> Result<(), ClientError> {
        if !self.in_step {
            return Err(ClientError::Protocol(
                "the connection's last request did not end cleanly".into(),
            ));
        }
        self.in_step = false;
        send(&mut self.conn, request).await
    }

    /// Sends a request that takes no upload and answers with one response.
    pub async fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        self.begin(&ClientMsg::Request(request)).await?;
        self.answer().await
    }

    /// The response to a unary request sent with [`Client::begin`].
    pub(crate) async fn answer(&mut self) -> Result<Response, ClientError> {
        let answer = response(&mut self.conn).await;
        self.in_step = refused_in_step(&answer);
        answer
    }

    /// Sends `request`, then everything `data` yields, then `End`.
    pub async fn upload(
        &mut self,
        request: Request,
        data: &mut (impl AsyncRead + Unpin),
    ) -> Result<Response, ClientError> {
        self.begin(&ClientMsg::Request(request)).await?;
        self.upload_rest(data).await
    }

    /// The data and the answer of an upload sent with [`Client::begin`].
    pub(crate) async fn upload_rest(
        &mut self,
        data: &mut (impl AsyncRead + Unpin),
    ) -> Result<Response, ClientError> {
        let sent = async {
            send_stream(&mut self.conn, data).await?;
            send(&mut self.conn, &ClientMsg::End).await
        }
        .await;
        self.end_upload(sent).await
    }

    /// The agent's answer to an upload whose sending ended with `sent`. The
    /// agent closes an upload it refuses
    /// ([`Request::ends_connection_when_refused`]): only success keeps step.
    async fn end_upload(&mut self, sent: Result<(), ClientError>) -> Result<Response, ClientError> {
        let answer = finish_upload(&mut self.conn, sent).await;
        self.in_step = answer.is_ok();
        answer
    }

    /// Sends a `SecretsDir` request and the files, each as `(relative path, file)`.
    pub async fn upload_files(
        &mut self,
        request: Request,
        files: &[(keynode_core::SecretPath, PathBuf)],
    ) -> Result<Response, ClientError> {
        self.begin(&ClientMsg::Request(request)).await?;
        let conn = &mut self.conn;
        let sent = async {
            // Small files are read a run at a time in one blocking hop, and
            // their frames go out in full socket writes, not one each; a
            // large file is streamed.
            for run in files.chunks(READ_RUN) {
                let paths: Vec<PathBuf> = run.iter().map(|(_, f)| f.clone()).collect();
                let read = tokio::task::spawn_blocking(move || read_small(&paths))
                    .await
                    .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
                for ((rel, file), content) in run.iter().zip(read) {
                    feed(conn, &ClientMsg::FileStart { path: rel.clone() }).await?;
                    match content? {
                        Some(content) => {
                            for chunk in content.chunks(CHUNK) {
                                feed(conn, &ClientMsg::Data(chunk.to_vec())).await?;
                            }
                        }
                        None => {
                            let mut f = tokio::fs::File::open(file).await?;
                            send_stream(conn, &mut f).await?;
                        }
                    }
                }
            }
            send(conn, &ClientMsg::End).await
        }
        .await;
        self.end_upload(sent).await
    }

    /// Sends a download request and writes the streamed bytes to `out`; returns
    /// the number of bytes written.
    pub async fn download(
        &mut self,
        request: Request,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        self.begin(&ClientMsg::Request(request)).await?;
        self.download_rest(out).await
    }

    /// The stream of a download sent with [`Client::begin`].
    pub(crate) async fn download_rest(
        &mut self,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let received = receive_download(&mut self.conn, out).await;
        self.in_step = refused_in_step(&received);
        if received.is_ok() {
            out.flush().await?;
        }
        received
    }

    /// Watches `vaults` (names or ids): their heads now, and a [`Watch`] that
    /// yields each later move of one of them (a local write or a pulled
    /// change). Dropping the `Watch` ends it.
    pub async fn watch(
        mut self,
        vaults: Vec<String>,
    ) -> Result<(Vec<WatchedVault>, Watch), ClientError> {
        self.begin(&ClientMsg::Request(Request::VaultsWatch { vaults }))
            .await?;
        match response(&mut self.conn).await? {
            Response::Watching(list) => Ok((list, Watch { conn: self.conn })),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }
}

/// A running `VaultsWatch` (see [`Client::watch`]).
pub struct Watch {
    conn: Conn,
}

impl Watch {
    /// The next move of a watched vault, as (vault id, new head); `None` once
    /// the agent stops.
    pub async fn next(&mut self) -> Result<Option<(keynode_core::VaultId, String)>, ClientError> {
        match recv(&mut self.conn).await? {
            ServerMsg::Response(Response::HeadChanged { vault, head }) => Ok(Some((vault, head))),
            ServerMsg::End => Ok(None),
            ServerMsg::Error(e) => Err(e.into()),
            other => Err(unexpected(&other)),
        }
    }
}

/// Whether the connection is between requests after `result` of a unary
/// request or a download: on success, and on the agent's refusal (a protocol
/// or I/O failure on its side ends the connection).
fn refused_in_step<T>(result: &Result<T, ClientError>) -> bool {
    match result {
        Ok(_) => true,
        Err(ClientError::Api(e)) => !e.kind.ends_connection(),
        Err(_) => false,
    }
}

/// A download's `Streaming`, `Data` frames (written to `out`) and `End`.
async fn receive_download(
    conn: &mut Conn,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, ClientError> {
    match response(conn).await? {
        Response::Streaming => {}
        other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
    }
    let mut n = 0u64;
    loop {
        match recv(conn).await? {
            ServerMsg::Data(b) => {
                // A failed write ends the download, and the connection
                // with it (its frames are left unread).
                out.write_all(&b).await?;
                n += b.len() as u64;
            }
            ServerMsg::End => return Ok(n),
            ServerMsg::Error(e) => return Err(e.into()),
            other => return Err(unexpected(&other)),
        }
    }
}

/// The agent's answer to an upload. If sending failed, the agent may have
/// refused early and closed the connection: its error says why.
async fn finish_upload(
    conn: &mut Conn,
    sent: Result<(), ClientError>,
) -> Result<Response, ClientError> {
    match (sent, response(conn).await) {
        (Ok(()), answer) => answer,
        (Err(_), Err(ClientError::Api(api))) => Err(api.into()),
        (Err(e), _) => Err(e),
    }
}

async fn send_stream(
    conn: &mut Conn,
    data: &mut (impl AsyncRead + Unpin),
) -> Result<(), ClientError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = data.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        send(conn, &ClientMsg::Data(buf[..n].to_vec())).await?;
    }
}

/// Files an import reads in one blocking hop.
const READ_RUN: usize = 256;
/// Files up to this size are read whole; larger ones are streamed.
const SMALL_FILE: u64 = 64 * 1024;

/// The contents of the files that are at most [`SMALL_FILE`] bytes (`None`
/// for larger ones), in order.
fn read_small(paths: &[PathBuf]) -> Vec<std::io::Result<Option<Vec<u8>>>> {
    use std::io::Read;
    paths
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path)?;
            if file.metadata()?.len() > SMALL_FILE {
                return Ok(None);
            }
            let mut content = Vec::new();
            file.take(SMALL_FILE + 1).read_to_end(&mut content)?;
            // Grown since: stream it like any large file.
            Ok((content.len() as u64 <= SMALL_FILE).then_some(content))
        })
        .collect()
}

/// Queues `msg` without flushing (the codec writes out once its buffer
/// fills, and the next [`send`] flushes).
async fn feed(conn: &mut Conn, msg: &ClientMsg) -> Result<(), ClientError> {
    let bytes =
        keynode_core::codec::encode(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
    conn.feed(bytes::Bytes::from(bytes)).await?;
    Ok(())
}

async fn send(conn: &mut Conn, msg: &ClientMsg) -> Result<(), ClientError> {
    let bytes =
        keynode_core::codec::encode(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
    conn.send(bytes::Bytes::from(bytes)).await?;
    Ok(())
}

async fn recv(conn: &mut Conn) -> Result<ServerMsg, ClientError> {
    match conn.next().await {
        None => Err(ClientError::Protocol("agent closed the connection".into())),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(frame)) => keynode_core::codec::decode_with_limit::<ServerMsg, MAX_FRAME>(&frame)
            .map_err(|e| ClientError::Protocol(format!("malformed message: {e}"))),
    }
}

async fn response(conn: &mut Conn) -> Result<Response, ClientError> {
    match recv(conn).await? {
        ServerMsg::Response(r) => Ok(r),
        ServerMsg::Error(e) => Err(e.into()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(msg: &ServerMsg) -> ClientError {
    let what = match msg {
        ServerMsg::Hello { .. } => "Hello",
        ServerMsg::Response(_) => "Response",
        ServerMsg::Data(_) => "Data",
        ServerMsg::End => "End",
        ServerMsg::Error(_) => "Error",
    };
    ClientError::Protocol(format!("unexpected {what} from the agent"))
}

//! Nodes and the agent itself: the address book, pings, connections, status,
//! stop and password.

use keynode_core::NodeId;
use keynode_net::PeerAddress;
use keynode_net::actor as net;

use crate::api::{ApiError, ConnectionEntry, ErrorKind, NodeEntry, Password, Response};
use crate::ctx::Ctx;
use crate::errors::Ask;

/// The status, with the state's fill level as it is now.
pub(super) fn status(ctx: &Ctx) -> Response {
    let mut status = ctx.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    status.storage_used_percent = ctx.env.usage().percent();
    Response::Status(status)
}

pub(super) fn stop(ctx: &Ctx) -> Response {
    ctx.shutdown.cancel();
    Response::Unit
}

pub(super) async fn password(
    ctx: &Ctx,
    current: Password,
    new: Password,
) -> Result<Response, ApiError> {
    ctx.rekey.change(current, new).await?;
    ctx.gestalts
        .record(keynode_audit::AuditEvent::PasswordChanged)
        .await;
    Ok(Response::Unit)
}

/// `agent password --recovery-code-file`: the old password forgotten.
pub(super) async fn recover(
    ctx: &Ctx,
    code: Password,
    new: Password,
) -> Result<Response, ApiError> {
    ctx.rekey.recover(code, new).await?;
    ctx.gestalts
        .record(keynode_audit::AuditEvent::PasswordChanged)
        .await;
    Ok(Response::Unit)
}

pub(super) async fn add(
    ctx: &Ctx,
    node: NodeId,
    host: String,
    port: u16,
) -> Result<Response, ApiError> {
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
    ctx.network.ask(net::AddNode { node, addr }).await?;
    Ok(Response::Unit)
}

pub(super) async fn ping(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    let rtt = ctx.network.ask(net::Ping { node }).await?;
    Ok(Response::Pong {
        rtt_us: rtt.as_micros() as u64,
    })
}

pub(super) async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let nodes = ctx.network.ask(net::ListNodes).await?;
    Ok(Response::Nodes(
        nodes
            .into_iter()
            .map(|(node_id, addrs)| NodeEntry {
                node_id,
                addresses: addrs.iter().map(|(a, _)| a.to_string()).collect(),
                sources: addrs
                    .iter()
                    .map(|(a, i)| crate::api::AddressView {
                        address: a.to_string(),
                        source: i.source.as_str().to_owned(),
                        last_ok_ms: i.last_ok_ms,
                    })
                    .collect(),
            })
            .collect(),
    ))
}

pub(super) async fn connections(ctx: &Ctx) -> Result<Response, ApiError> {
    let conns = ctx.network.ask(net::Connections).await?;
    Ok(Response::Connections(
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
                relay: c.relay,
            })
            .collect(),
    ))
}

pub(super) async fn find(ctx: &Ctx, node: NodeId) -> Result<Response, ApiError> {
    let found = ctx.network.ask(net::Find { node }).await?;
    let mut addresses: Vec<crate::api::AddressView> = found
        .book
        .iter()
        .map(|(a, i)| crate::api::AddressView {
            address: a.to_string(),
            source: i.source.as_str().to_owned(),
            last_ok_ms: i.last_ok_ms,
        })
        .collect();
    let (dht, relays, renewed_to) = match found.directory {
        keynode_net::Lookup::Off => ("off".to_owned(), Vec::new(), None),
        keynode_net::Lookup::NotFound => ("not found".to_owned(), Vec::new(), None),
        keynode_net::Lookup::Failed(why) => (format!("failed: {why}"), Vec::new(), None),
        keynode_net::Lookup::Found(record) => {
            for a in &record.addresses {
                let address = a.to_string();
                if !addresses.iter().any(|v| v.address == address) {
                    addresses.push(crate::api::AddressView {
                        address,
                        source: "dht-record".into(),
                        last_ok_ms: None,
                    });
                }
            }
            for r in &record.relays {
                addresses.push(crate::api::AddressView {
                    address: format!("via {r}"),
                    source: "relay".into(),
                    last_ok_ms: None,
                });
            }
            let relays = record.relays.iter().map(ToString::to_string).collect();
            ("found".to_owned(), relays, record.renewed_to.map(|p| p.new))
        }
    };
    Ok(Response::Found(crate::api::FoundView {
        node_id: node,
        addresses,
        relays,
        dht,
        renewed_to,
    }))
}

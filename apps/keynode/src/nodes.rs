//! `keynode nodes ...`

use keynode_client::api::{Request, Response};
use keynode_core::NodeId;

use crate::cli::NodesCmd;
use crate::output;
use crate::{Ctx, Failure};

pub fn node_id(s: &str) -> Result<NodeId, Failure> {
    s.parse()
        .map_err(|e| Failure::new(65, format!("{e} (got {s:?})")))
}

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

pub async fn run(ctx: &Ctx, cmd: NodesCmd) -> Result<(), Failure> {
    match cmd {
        NodesCmd::Revoke { node_id: id } => {
            let node = node_id(&id)?;
            match ctx
                .client()
                .await?
                .call(Request::NodesRevoke { node })
                .await?
            {
                Response::Unit => {
                    let doc = serde_json::json!({ "revoked": node });
                    output::emit(ctx.format, &doc, || {
                        say!("revoked {node}: refused from now on")
                    });
                }
                other => return Err(unexpected(other)),
            }
        }
        NodesCmd::Add {
            node_id: id,
            host,
            port,
        } => {
            let node = node_id(&id)?;
            ctx.client()
                .await?
                .call(Request::NodesAdd {
                    node,
                    host: host.clone(),
                    port,
                })
                .await?;
            let doc = serde_json::json!({"node_id": node, "host": host, "port": port});
            output::emit(ctx.format, &doc, || say!("added {node} at {host}:{port}"));
        }
        NodesCmd::Ping { node_id: id } => {
            let node = node_id(&id)?;
            let r = ctx
                .client()
                .await?
                .call(Request::NodesPing { node })
                .await?;
            let Response::Pong { rtt_us } = r else {
                return Err(unexpected(r));
            };
            let doc = serde_json::json!({"node_id": node, "rtt_us": rtt_us});
            output::emit(ctx.format, &doc, || {
                say!("{node} answered in {:.3} ms", rtt_us as f64 / 1000.0)
            });
        }
        NodesCmd::List => {
            let r = ctx.client().await?.call(Request::NodesList).await?;
            let Response::Nodes(nodes) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &nodes, || {
                for n in &nodes {
                    let addrs: Vec<String> = if n.sources.is_empty() {
                        n.addresses.clone()
                    } else {
                        n.sources
                            .iter()
                            .map(|s| match s.last_ok_ms {
                                Some(t) => format!(
                                    "{} ({}, worked {})",
                                    s.address,
                                    s.source,
                                    output::time(t)
                                ),
                                None => format!("{} ({})", s.address, s.source),
                            })
                            .collect()
                    };
                    say!("{}\t{}", n.node_id, addrs.join(" "));
                }
            });
        }
        NodesCmd::Claim { node_id: id } => {
            let node = node_id(&id)?;
            let r = ctx
                .client()
                .await?
                .call(Request::NodesClaim { node })
                .await?;
            crate::identities::print_claimed(ctx, r, &format!("linked with {node}"))?;
        }
        NodesCmd::Find { node_id: id } => {
            let node = node_id(&id)?;
            let r = ctx
                .client()
                .await?
                .call(Request::NodesFind { node })
                .await?;
            let Response::Found(found) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &found, || {
                for a in &found.addresses {
                    match a.last_ok_ms {
                        Some(t) => say!("{}\t{}\tworked {}", a.address, a.source, output::time(t)),
                        None => say!("{}\t{}", a.address, a.source),
                    }
                }
                if found.addresses.is_empty() {
                    say!("no address known for {}", found.node_id);
                }
                say!("dht: {}", found.dht);
                if let Some(new) = found.renewed_to {
                    say!("renewed to {new} (signed by both keys)");
                }
            });
            if found.addresses.is_empty() && found.renewed_to.is_none() {
                return Err(Failure::new(69, format!("{node} was not found")));
            }
        }
        NodesCmd::Connections => {
            let r = ctx.client().await?.call(Request::NodesConnections).await?;
            let Response::Connections(conns) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &conns, || {
                for c in &conns {
                    let path = match c.relay {
                        Some(r) => format!("relayed via {r}"),
                        None => "direct".to_owned(),
                    };
                    say!(
                        "{}\t{}\t{}\t{}\tsince {}\t{} streams",
                        c.node_id,
                        c.remote_addr,
                        c.direction,
                        path,
                        output::time(c.established_ms),
                        c.streams
                    );
                }
            });
        }
    }
    Ok(())
}

//! `keynode identities ...`

use keynode_client::api::{GestaltAction, GestaltView, PermissionView, Request, Response};
use keynode_core::{GestaltId, IdentityId, ProviderId};

use crate::cli::IdentitiesCmd;
use crate::nodes::node_id;
use crate::output;
use crate::{Ctx, Failure};

/// Parses a node id or `provider:identity`.
fn gestalt_id(s: &str) -> Result<GestaltId, Failure> {
    s.parse()
        .map_err(|e| Failure::new(65, format!("{e} (got {s:?})")))
}

/// Parses `notify`, `scan` or `claim`.
fn gestalt_action(s: &str) -> Result<GestaltAction, Failure> {
    s.parse().map_err(|e| Failure::new(65, format!("{e}")))
}

/// Parses an identity provider's id.
fn provider_id(s: &str) -> Result<ProviderId, Failure> {
    ProviderId::new(s).map_err(|e| Failure::new(65, e.to_string()))
}

/// Parses `provider:identity` (a node id is refused).
fn identity(s: &str) -> Result<(ProviderId, IdentityId), Failure> {
    match gestalt_id(s)? {
        GestaltId::Identity(provider, identity) => Ok((provider, identity)),
        GestaltId::Node(_) => Err(Failure::new(
            65,
            "expected PROVIDER:IDENTITY, got a node id",
        )),
    }
}

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

/// Prints a `Claimed` answer.
pub fn print_claimed(ctx: &Ctx, r: Response, what: &str) -> Result<(), Failure> {
    let Response::Claimed { claim_id, seq } = r else {
        return Err(unexpected(r));
    };
    let doc = serde_json::json!({"claim_id": claim_id, "seq": seq});
    output::emit(ctx.format, &doc, || {
        say!("{what} (claim {claim_id}, sigchain entry {seq})")
    });
    Ok(())
}

fn print_permissions(p: &PermissionView, indent: &str) {
    let actions = if p.gestalt.is_empty() {
        "none".to_owned()
    } else {
        p.gestalt.join(", ")
    };
    say!("{indent}actions: {actions}");
    for (vault, actions) in &p.vaults {
        say!("{indent}vault {vault}: {}", actions.join(", "));
    }
}

fn print_gestalt(g: &GestaltView) {
    for n in &g.nodes {
        say!("node {n}");
    }
    for i in &g.identities {
        say!("identity {i}");
    }
    print_permissions(&g.permissions, "  ");
}

async fn unit(ctx: &Ctx, req: Request, done: String) -> Result<(), Failure> {
    ctx.client().await?.call(req).await?;
    output::emit(ctx.format, &serde_json::json!({"ok": true}), || {
        say!("{done}")
    });
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: IdentitiesCmd) -> Result<(), Failure> {
    match cmd {
        IdentitiesCmd::Trust { gestalt } => {
            let gestalt = gestalt_id(&gestalt)?;
            let done = format!("trusted {gestalt}");
            unit(ctx, Request::IdentitiesTrust { gestalt }, done).await
        }
        IdentitiesCmd::Untrust { gestalt } => {
            let gestalt = gestalt_id(&gestalt)?;
            let done = format!("no longer trusting {gestalt}");
            unit(ctx, Request::IdentitiesUntrust { gestalt }, done).await
        }
        IdentitiesCmd::Allow { gestalt, action } => {
            let gestalt = gestalt_id(&gestalt)?;
            let action = gestalt_action(&action)?;
            let done = format!("allowed {gestalt} to {action}");
            unit(ctx, Request::IdentitiesAllow { gestalt, action }, done).await
        }
        IdentitiesCmd::Disallow { gestalt, action } => {
            let gestalt = gestalt_id(&gestalt)?;
            let action = gestalt_action(&action)?;
            let done = format!("disallowed {gestalt} to {action}");
            unit(ctx, Request::IdentitiesDisallow { gestalt, action }, done).await
        }
        IdentitiesCmd::Invite { node_id: id } => {
            let node = node_id(&id)?;
            let done = format!("invited {node}; it joins with `keynode nodes claim <this node>`");
            unit(ctx, Request::IdentitiesInvite { node }, done).await
        }
        IdentitiesCmd::Authenticate { provider } => {
            let provider = provider_id(&provider)?;
            let done = format!("authenticated to {provider}");
            unit(ctx, Request::IdentitiesAuthenticate { provider }, done).await
        }
        IdentitiesCmd::Permissions { gestalt } => {
            let gestalt = gestalt_id(&gestalt)?;
            let r = ctx
                .client()
                .await?
                .call(Request::IdentitiesPermissions {
                    gestalt: gestalt.clone(),
                })
                .await?;
            let Response::Permissions(p) = r else {
                return Err(unexpected(r));
            };
            // Who holds them: the gestalt's nodes and identities (people).
            let members = match ctx
                .client()
                .await?
                .call(Request::IdentitiesGet { gestalt })
                .await
            {
                Ok(Response::Gestalt(g)) => Some(g),
                _ => None,
            };
            let mut doc = serde_json::to_value(&p).map_err(|e| Failure::new(70, e.to_string()))?;
            if let Some(g) = &members {
                doc["nodes"] = serde_json::json!(g.nodes);
                doc["identities"] = serde_json::json!(g.identities);
            }
            output::emit(ctx.format, &doc, || {
                if let Some(g) = &members {
                    let who: Vec<String> = g
                        .nodes
                        .iter()
                        .map(ToString::to_string)
                        .chain(g.identities.iter().cloned())
                        .collect();
                    say!("members: {}", who.join(", "));
                }
                print_permissions(&p, "")
            });
            Ok(())
        }
        IdentitiesCmd::Discover { gestalt } => {
            let gestalt = gestalt_id(&gestalt)?;
            let r = ctx
                .client()
                .await?
                .call(Request::IdentitiesDiscover { gestalt })
                .await?;
            let Response::Discovered(d) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &d, || {
                say!(
                    "visited {} vertices, {} changes",
                    d.visited.len(),
                    d.changes
                );
                for f in &d.failures {
                    say!("failed: {f}");
                }
                if let Some(g) = &d.gestalt {
                    print_gestalt(g);
                }
            });
            Ok(())
        }
        IdentitiesCmd::List => {
            let r = ctx.client().await?.call(Request::IdentitiesList).await?;
            let Response::Gestalts(gs) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &gs, || {
                for (i, g) in gs.iter().enumerate() {
                    say!("gestalt {}", i + 1);
                    print_gestalt(g);
                }
            });
            Ok(())
        }
        IdentitiesCmd::Get { gestalt } => {
            let gestalt = gestalt_id(&gestalt)?;
            let r = ctx
                .client()
                .await?
                .call(Request::IdentitiesGet { gestalt })
                .await?;
            let Response::Gestalt(g) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &g, || print_gestalt(&g));
            Ok(())
        }
        IdentitiesCmd::Claim { identity: text } => {
            let (provider, identity) = identity(&text)?;
            let r = ctx
                .client()
                .await?
                .call(Request::IdentitiesClaim { provider, identity })
                .await?;
            print_claimed(ctx, r, &format!("claimed {text}"))
        }
    }
}

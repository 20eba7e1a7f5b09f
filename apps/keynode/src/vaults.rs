//! `keynode vaults ...`

use keynode_client::api::{Request, Response};
use keynode_core::VaultName;

use crate::cli::VaultsCmd;
use crate::output;
use crate::{Ctx, Failure};

/// Parses a vault name.
fn vault_name(s: &str) -> Result<VaultName, Failure> {
    VaultName::new(s).map_err(|e| Failure::new(65, e.to_string()))
}

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

/// Prints a mutation's outcome.
pub fn print_committed(ctx: &Ctx, r: Response, what: &str) -> Result<(), Failure> {
    let Response::Committed(c) = r else {
        return Err(unexpected(r));
    };
    let doc = serde_json::json!({ "committed": c.is_some(), "commit": c });
    output::emit(ctx.format, &doc, || match &c {
        Some(c) => say!("{what} (commit {})", &c.oid[..c.oid.len().min(12)]),
        None => say!("nothing changed"),
    });
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: VaultsCmd) -> Result<(), Failure> {
    let mut client = ctx.client().await?;
    match cmd {
        VaultsCmd::Create { name } => {
            let name = vault_name(&name)?;
            let r = client.call(Request::VaultsCreate { name }).await?;
            let Response::Vault(v) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &v, || {
                say!("created vault {} ({})", v.name, v.id)
            });
        }
        VaultsCmd::List => {
            let r = client.call(Request::VaultsList).await?;
            let Response::Vaults(vs) = r else {
                return Err(unexpected(r));
            };
            let docs: Vec<serde_json::Value> = vs.iter().map(vault_doc).collect();
            output::emit(ctx.format, &docs, || {
                for v in &vs {
                    match (&v.remote, &v.follow) {
                        (Some(rm), follow) => say!(
                            "{}\t{}\tclone of {} on {}\t{}",
                            v.name,
                            v.id,
                            rm.vault,
                            rm.node,
                            follow.as_ref().map(follow_line).unwrap_or_default()
                        ),
                        (None, _) => say!("{}\t{}", v.name, v.id),
                    }
                }
            });
        }
        VaultsCmd::Rename { name, new_name } => {
            client
                .call(Request::VaultsRename {
                    vault: name.clone(),
                    new_name: vault_name(&new_name)?,
                })
                .await?;
            let doc = serde_json::json!({"renamed": name, "new_name": new_name});
            output::emit(ctx.format, &doc, || {
                say!("renamed vault {name} to {new_name}")
            });
        }
        VaultsCmd::Delete { name } => {
            client
                .call(Request::VaultsDelete {
                    vault: name.clone(),
                })
                .await?;
            let doc = serde_json::json!({"deleted": name});
            output::emit(ctx.format, &doc, || say!("deleted vault {name}"));
        }
        VaultsCmd::Log {
            name,
            depth,
            commit,
        } => {
            let r = client
                .call(Request::VaultsLog {
                    vault: name,
                    depth,
                    commit,
                })
                .await?;
            let Response::Log(log) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &log, || {
                for c in &log {
                    say!("commit {}", c.oid);
                    say!("Author: {}", c.author);
                    say!("Date:   {}", output::time(c.time_ms));
                    say!();
                    for line in c.message.lines() {
                        say!("    {line}");
                    }
                    say!();
                }
            });
        }
        VaultsCmd::Share { name, node_id: id } => {
            let to = grantee(&id)?;
            client
                .call(Request::VaultsShare {
                    vault: name.clone(),
                    to: to.clone(),
                })
                .await?;
            let mut doc = serde_json::json!({"shared": name, "gestalt": to.to_string()});
            if let Some(node) = to.node() {
                doc["node_id"] = serde_json::json!(node);
            }
            output::emit(ctx.format, &doc, || {
                say!(
                    "shared {name} with the gestalt of {to} (clone, pull, scan); notified its nodes"
                )
            });
        }
        VaultsCmd::Unshare { name, node_id: id } => {
            let to = grantee(&id)?;
            client
                .call(Request::VaultsUnshare {
                    vault: name.clone(),
                    to: to.clone(),
                })
                .await?;
            let mut doc = serde_json::json!({"unshared": name, "gestalt": to.to_string()});
            if let Some(node) = to.node() {
                doc["node_id"] = serde_json::json!(node);
            }
            output::emit(ctx.format, &doc, || {
                say!("stopped sharing {name} with the gestalt of {to}")
            });
        }
        VaultsCmd::Permissions { name } => {
            let r = client
                .call(Request::VaultsPermissions { vault: name })
                .await?;
            let Response::VaultPermissions(grants) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &grants, || {
                for g in &grants {
                    let who: Vec<String> = g
                        .nodes
                        .iter()
                        .map(ToString::to_string)
                        .chain(g.identities.iter().cloned())
                        .collect();
                    say!("{}: {}", who.join(", "), g.actions.join(", "));
                }
            });
        }
        VaultsCmd::Scan { node_id: id } => {
            let node = crate::nodes::node_id(&id)?;
            let r = client.call(Request::VaultsScan { node }).await?;
            let Response::Scan(entries) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &entries, || {
                for e in &entries {
                    say!("{}\t{}\t{}", e.name, e.vault_id, e.actions.join(","));
                }
            });
        }
        VaultsCmd::Clone {
            name_or_id,
            node_id: id,
            no_follow,
        } => {
            let node = crate::nodes::node_id(&id)?;
            let r = client
                .call(Request::VaultsClone {
                    vault: name_or_id,
                    node,
                    follow: !no_follow,
                })
                .await?;
            let Response::Vault(v) = r else {
                return Err(unexpected(r));
            };
            let mut doc = vault_doc(&v);
            doc["following"] = serde_json::json!(!no_follow);
            output::emit(ctx.format, &doc, || {
                say!(
                    "cloned into {} ({}); read-only, fork it to write; {}",
                    v.name,
                    v.id,
                    if no_follow {
                        "not following its remote (vaults pull to update)"
                    } else {
                        "follows its remote"
                    }
                )
            });
        }
        VaultsCmd::Follow { name } => set_follow(ctx, client, name, true).await?,
        VaultsCmd::Unfollow { name } => set_follow(ctx, client, name, false).await?,
        VaultsCmd::Pull {
            name,
            node_id,
            pull_vault,
        } => {
            let node = node_id.as_deref().map(crate::nodes::node_id).transpose()?;
            let r = client
                .call(Request::VaultsPull {
                    vault: name,
                    node,
                    pull_vault,
                })
                .await?;
            let Response::Pulled {
                vault,
                from,
                to,
                commits,
            } = r
            else {
                return Err(unexpected(r));
            };
            let doc =
                serde_json::json!({"vault": vault, "from": from, "to": to, "commits": commits});
            output::emit(ctx.format, &doc, || {
                if commits == 0 {
                    say!("{vault} is up to date");
                } else {
                    say!(
                        "pulled {commits} commits into {vault} (now at {})",
                        &to[..to.len().min(12)]
                    );
                }
            });
        }
        VaultsCmd::Fork { name, new_name } => {
            let new_name = new_name.as_deref().map(vault_name).transpose()?;
            let r = client
                .call(Request::VaultsFork {
                    vault: name,
                    new_name,
                })
                .await?;
            let Response::Vault(v) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &v, || say!("forked into {} ({})", v.name, v.id));
        }
        VaultsCmd::Version { name, rev } => {
            let r = client
                .call(Request::VaultsVersion {
                    vault: name,
                    rev: rev.clone(),
                })
                .await?;
            print_committed(ctx, r, &format!("restored {rev}"))?;
        }
    }
    Ok(())
}

/// A vault as JSON: the API's fields, with `follow` as
/// `{"state": "following"|"behind"|"refused"|"off"|"diverged", ...}`.
fn vault_doc(v: &keynode_client::api::VaultMeta) -> serde_json::Value {
    use keynode_client::api::FollowStatus as F;
    let mut doc = serde_json::json!({
        "id": v.id.to_string(),
        "name": v.name.as_str(),
        "created_ms": v.created_ms,
        "remote": v.remote.map(|r| serde_json::json!({
            "node": r.node.to_string(),
            "vault": r.vault.to_string(),
        })),
    });
    if let Some(f) = &v.follow {
        let mut state = serde_json::json!({ "state": f.word() });
        match f {
            F::Behind { remote_head, error } => {
                state["remote_head"] = serde_json::json!(remote_head);
                state["error"] = serde_json::json!(error);
            }
            F::Diverged { remote_head } => state["remote_head"] = serde_json::json!(remote_head),
            F::Following | F::Refused | F::Off => {}
        }
        doc["follow"] = state;
    }
    doc
}

/// A clone's follow state in a listing line.
fn follow_line(f: &keynode_client::api::FollowStatus) -> String {
    use keynode_client::api::FollowStatus as F;
    match f {
        F::Following => "following".into(),
        F::Behind {
            remote_head,
            error: Some(e),
        } => format!("behind (remote at {}; last pull: {e})", short(remote_head)),
        F::Behind { remote_head, .. } => format!("behind (remote at {})", short(remote_head)),
        F::Refused => "refused (the remote no longer shares it)".into(),
        F::Off => "not following".into(),
        F::Diverged { remote_head } => format!(
            "diverged from the remote (at {}); not following: `vaults follow` tries again, `vaults fork` keeps a copy",
            short(remote_head)
        ),
    }
}

fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}

/// `vaults follow|unfollow NAME`.
async fn set_follow(
    ctx: &Ctx,
    mut client: keynode_client::Client,
    name: String,
    follow: bool,
) -> Result<(), Failure> {
    client
        .call(Request::VaultsFollow {
            vault: name.clone(),
            follow,
        })
        .await?;
    let doc = serde_json::json!({"vault": name, "following": follow});
    output::emit(ctx.format, &doc, || {
        if follow {
            say!("{name} follows its remote")
        } else {
            say!("{name} no longer follows its remote")
        }
    });
    Ok(())
}

/// Parses whom a vault is shared with: a NodeId or `provider:identity`.
fn grantee(s: &str) -> Result<keynode_core::GestaltId, Failure> {
    if !s.contains(':') {
        return Ok(crate::nodes::node_id(s)?.into());
    }
    s.parse()
        .map_err(|e| Failure::new(65, format!("{e} (got {s:?})")))
}

//! Vaults and the secrets in them: create, list, rename, delete, history, and
//! the one-commit mutations of secrets.

use keynode_core::{SecretPath, VaultId, VaultName};
use keynode_vaults::Op;
use keynode_vaults::messages::*;

use crate::api::{ApiError, ErrorKind, Response};
use crate::convert::IntoApi;
use crate::convert::{all, committed};
use crate::ctx::Ctx;
use crate::errors::Ask;

/// The id of the vault named (or with the id) `vault`.
pub(crate) async fn resolve(ctx: &Ctx, vault: &str) -> Result<VaultId, ApiError> {
    Ok(meta(ctx, vault).await?.id)
}

/// The vault named (or with the id) `vault`.
pub(crate) async fn meta(ctx: &Ctx, vault: &str) -> Result<keynode_vaults::VaultMeta, ApiError> {
    ctx.vaults
        .ask(ResolveVault {
            name_or_id: vault.to_owned(),
        })
        .await
}

/// Applies `ops` to `vault` in one commit.
pub(crate) async fn commit(ctx: &Ctx, vault: VaultId, ops: Vec<Op>) -> Result<Response, ApiError> {
    Ok(committed(ctx.vaults.ask(Commit { vault, ops }).await?))
}

pub(super) async fn create(ctx: &Ctx, name: VaultName) -> Result<Response, ApiError> {
    let meta = ctx.vaults.ask(CreateVault { name }).await?;
    Ok(Response::Vault(meta.into_api()))
}

/// `vaults list`: every vault, and for each clone whether it follows its
/// remote and where it stands.
pub(super) async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let metas = ctx.vaults.ask(ListVaults {}).await?;
    let follows: std::collections::HashMap<VaultId, keynode_vaults::Follow> = ctx
        .vaults
        .ask(Follows {})
        .await?
        .into_iter()
        .map(|(m, f)| (m.id, f))
        .collect();
    let mut out = Vec::with_capacity(metas.len());
    for meta in metas {
        let id = meta.id;
        let mut view: crate::api::VaultMeta = meta.into_api();
        if let Some(follow) = follows.get(&id) {
            // Deleted since the listing: leave it out.
            let Ok(advert) = ctx.vaults.ask(Advertise { vault: id }).await else {
                continue;
            };
            view.follow = Some(ctx.follow.status(id, follow, &advert.head));
        }
        out.push(view);
    }
    Ok(Response::Vaults(out))
}

/// `vaults follow|unfollow`: only clones follow; following again after a
/// divergence tries again.
pub(super) async fn follow(ctx: &Ctx, vault: &str, on: bool) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let follow = if on {
        keynode_vaults::Follow::On
    } else {
        keynode_vaults::Follow::Off
    };
    ctx.vaults.ask(SetFollow { vault, follow }).await?;
    ctx.follow.changed();
    Ok(Response::Unit)
}

pub(super) async fn rename(ctx: &Ctx, vault: &str, name: VaultName) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    ctx.vaults.ask(RenameVault { vault, name }).await?;
    Ok(Response::Unit)
}

pub(super) async fn delete(ctx: &Ctx, vault: &str) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    ctx.vaults.ask(DeleteVault { vault }).await?;
    ctx.follow.changed();
    // A deleted vault's grants go with it (SPEC §3).
    ctx.gestalts.purge_vault(vault).await?;
    Ok(Response::Unit)
}

pub(super) async fn log(
    ctx: &Ctx,
    vault: &str,
    depth: Option<u32>,
    from: Option<String>,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let depth = depth.map(|d| d as usize);
    let commits = ctx.vaults.ask(Log { vault, depth, from }).await?;
    Ok(Response::Log(all(commits)))
}

pub(super) async fn version(ctx: &Ctx, vault: &str, rev: String) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    Ok(committed(ctx.vaults.ask(Version { vault, rev }).await?))
}

pub(super) async fn list_secrets(
    ctx: &Ctx,
    vault: &str,
    dir: Option<SecretPath>,
    at: Option<String>,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let entries = ctx.vaults.ask(ListSecrets { vault, dir, at }).await?;
    Ok(Response::Entries(all(entries)))
}

pub(super) async fn mkdir(
    ctx: &Ctx,
    vault: &str,
    path: SecretPath,
    parents: bool,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    commit(ctx, vault, vec![Op::Mkdir { path, parents }]).await
}

pub(super) async fn rename_secret(
    ctx: &Ctx,
    vault: &str,
    from: SecretPath,
    new_name: &str,
) -> Result<Response, ApiError> {
    let to = from
        .with_file_name(new_name)
        .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string()))?;
    let vault = resolve(ctx, vault).await?;
    commit(ctx, vault, vec![Op::Rename { from, to }]).await
}

pub(super) async fn remove(
    ctx: &Ctx,
    vault: &str,
    paths: Vec<SecretPath>,
    recursive: bool,
) -> Result<Response, ApiError> {
    if paths.is_empty() {
        return Err(ApiError::new(ErrorKind::Usage, "no secret paths given"));
    }
    let ops = paths
        .into_iter()
        .map(|path| Op::Remove { path, recursive })
        .collect();
    let vault = resolve(ctx, vault).await?;
    commit(ctx, vault, ops).await
}

pub(super) async fn stat(
    ctx: &Ctx,
    vault: &str,
    path: SecretPath,
    at: Option<String>,
) -> Result<Response, ApiError> {
    let vault = resolve(ctx, vault).await?;
    let stat = ctx.vaults.ask(Stat { vault, path, at }).await?;
    Ok(Response::Stat(stat.into_api()))
}

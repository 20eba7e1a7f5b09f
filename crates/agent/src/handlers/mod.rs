//! Request handling: each [`Request`] goes to the module of its domain. The
//! socket layer (`socket.rs`, above this one) decodes requests and streams; nothing here
//! knows about frames.

mod audit;
mod backup;
mod gestalts;
mod nodes;
mod notifications;
mod secrets;
mod sharing;
mod vaults;

pub use secrets::MAX_ENV_BYTES;
pub use sharing::SHARED_ACTIONS;

pub(crate) use secrets::{
    Upload, UploadSource, download, download_depth, put_secret, read_to_vec, upload_dir, upload_one,
};
pub(crate) use vaults::{meta, resolve};

use crate::api::{ApiError, ErrorKind, Request, Response};
use crate::ctx::Ctx;

/// Serves one unary request (streaming requests go through the socket layer's
/// upload and download paths).
pub(crate) async fn unary(ctx: &Ctx, request: Request) -> Result<Response, ApiError> {
    use Request as R;
    match request {
        R::AgentStatus => Ok(nodes::status(ctx)),
        R::AgentStop => Ok(nodes::stop(ctx)),
        R::AgentPassword { current, new } => nodes::password(ctx, current, new).await,
        R::AgentRecover { code, new } => nodes::recover(ctx, code, new).await,
        R::BackupCreate { path } => backup::create(ctx, path).await,
        R::NodesRevoke { node } => ctx.gestalts.revoke(node).await.map(|_| Response::Unit),
        R::KeysSign { digest } => Ok(Response::Signed(keynode_core::filesig::sign(
            &ctx.key, &digest,
        ))),
        R::KeysDecrypt { sealed } => keynode_core::encrypt::decrypt(&ctx.key, &sealed)
            .map(|plain| Response::Decrypted(plain.to_vec()))
            .map_err(|e| ApiError::new(ErrorKind::BadData, e.to_string())),
        R::VaultsCreate { name } => vaults::create(ctx, name).await,
        R::VaultsList => vaults::list(ctx).await,
        R::VaultsRename { vault, new_name } => vaults::rename(ctx, &vault, new_name).await,
        R::VaultsDelete { vault } => vaults::delete(ctx, &vault).await,
        R::VaultsLog {
            vault,
            depth,
            commit,
        } => vaults::log(ctx, &vault, depth, commit).await,
        R::VaultsVersion { vault, rev } => vaults::version(ctx, &vault, rev).await,
        R::VaultsShare { vault, to } => sharing::share(ctx, &vault, to, true).await,
        R::VaultsUnshare { vault, to } => sharing::share(ctx, &vault, to, false).await,
        R::VaultsPermissions { vault } => sharing::permissions(ctx, &vault).await,
        R::VaultsScan { node } => sharing::scan(ctx, node).await,
        R::VaultsClone {
            vault,
            node,
            follow,
        } => sharing::clone(ctx, &vault, node, follow).await,
        R::VaultsFollow { vault, follow } => vaults::follow(ctx, &vault, follow).await,
        R::VaultsPull {
            vault,
            node,
            pull_vault,
        } => sharing::pull(ctx, &vault, node, pull_vault).await,
        R::VaultsFork { vault, new_name } => sharing::fork(ctx, &vault, new_name).await,
        R::SecretsList { vault, path, at } => vaults::list_secrets(ctx, &vault, path, at).await,
        R::SecretsMkdir {
            vault,
            path,
            parents,
        } => vaults::mkdir(ctx, &vault, path, parents).await,
        R::SecretsRename {
            vault,
            path,
            new_name,
        } => vaults::rename_secret(ctx, &vault, path, &new_name).await,
        R::SecretsRm {
            vault,
            paths,
            recursive,
        } => vaults::remove(ctx, &vault, paths, recursive).await,
        R::SecretsStat { vault, path, at } => vaults::stat(ctx, &vault, path, at).await,
        R::SecretsEnv { refs } => secrets::env(ctx, refs).await,
        R::NodesAdd { node, host, port } => nodes::add(ctx, node, host, port).await,
        R::NodesPing { node } => nodes::ping(ctx, node).await,
        R::NodesList => nodes::list(ctx).await,
        R::NodesConnections => nodes::connections(ctx).await,
        R::NodesFind { node } => nodes::find(ctx, node).await,
        R::NodesClaim { node } => gestalts::claim_node(ctx, node).await,
        R::IdentitiesTrust { gestalt } => gestalts::trust(ctx, gestalt).await,
        R::IdentitiesUntrust { gestalt } => gestalts::untrust(ctx, gestalt).await,
        R::IdentitiesAllow { gestalt, action } => gestalts::allow(ctx, gestalt, action).await,
        R::IdentitiesDisallow { gestalt, action } => gestalts::disallow(ctx, gestalt, action).await,
        R::IdentitiesPermissions { gestalt } => gestalts::permissions(ctx, gestalt).await,
        R::IdentitiesInvite { node } => gestalts::invite(ctx, node).await,
        R::IdentitiesDiscover { gestalt } => gestalts::discover(ctx, gestalt).await,
        R::IdentitiesList => gestalts::list(ctx).await,
        R::IdentitiesGet { gestalt } => gestalts::get(ctx, gestalt).await,
        R::IdentitiesAuthenticate { provider } => gestalts::authenticate(ctx, provider).await,
        R::IdentitiesClaim { provider, identity } => {
            gestalts::claim_identity(ctx, provider, identity).await
        }
        R::NotificationsSend { node, message } => notifications::send(ctx, node, message).await,
        R::NotificationsInboxRead {
            unread,
            limit,
            newest_first,
        } => notifications::inbox_read(ctx, unread, limit, newest_first).await,
        R::NotificationsInboxRemove { id } => notifications::inbox_remove(ctx, id).await,
        R::NotificationsInboxClear => notifications::inbox_clear(ctx).await,
        R::NotificationsOutboxRead => notifications::outbox_read(ctx).await,
        R::NotificationsOutboxRemove { id } => notifications::outbox_remove(ctx, id).await,
        R::NotificationsOutboxClear => notifications::outbox_clear(ctx).await,
        R::NotificationsQuarantineRead {
            limit,
            newest_first,
        } => notifications::quarantine_read(ctx, limit, newest_first).await,
        R::NotificationsAccept { node } => notifications::accept(ctx, node).await,
        R::NotificationsBlock { node } => notifications::block(ctx, node).await,
        R::NotificationsUnblock { node } => notifications::unblock(ctx, node).await,
        R::AuditRead { limit } => audit::read(ctx, limit).await,
        R::AuditVerify => audit::verify(ctx).await,
        R::SecretsGet { .. }
        | R::SecretsWrite { .. }
        | R::SecretsDir { .. }
        | R::VaultsWatch { .. } => Err(ApiError::new(
            ErrorKind::Protocol,
            "streaming request sent as unary",
        )),
    }
}

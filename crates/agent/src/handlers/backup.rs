//! `backup create` on a running node.

use keynode_vaults::messages as v;

use crate::api::{ApiError, BackupSummary, ErrorKind, Response};
use crate::backup::{BackupError, Build, state_copy};
use crate::ctx::Ctx;
use crate::errors::Ask;

fn api(e: BackupError) -> ApiError {
    let kind = match &e {
        BackupError::Exists(_) | BackupError::NotEmpty(_) => ErrorKind::Exists,
        BackupError::Invalid(_) => ErrorKind::BadData,
        BackupError::NoNode(_) => ErrorKind::NotFound,
        BackupError::WrongPassword(_) => ErrorKind::PermissionDenied,
        BackupError::Locked(_) => ErrorKind::Temporary,
        BackupError::Io(..) => ErrorKind::Io,
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::new(kind, message)
}

fn job(e: keynode_core::exec::JobFailed) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("backup: {e}"))
}

/// Writes a backup of this node to `path`: vault mutations pause while the
/// state is copied and the repositories listed; everything else goes on.
pub(super) async fn create(ctx: &Ctx, path: std::path::PathBuf) -> Result<Response, ApiError> {
    if !path.is_absolute() {
        return Err(ApiError::new(
            ErrorKind::Usage,
            "the backup's path must be absolute",
        ));
    }
    let exec = ctx.exec.clone();
    let (paths, out) = (ctx.paths.clone(), path.clone());
    let (build, state) = keynode_core::exec::blocking(exec.as_ref(), move || {
        Ok::<_, BackupError>((Build::start(&paths, &out)?, state_copy(&out)?))
    })
    .await
    .map_err(job)?
    .map_err(api)?;
    let mut copy = state
        .reopen()
        .map_err(|e| api(BackupError::Io(e, "opening the state copy".into())))?;
    let env = ctx.env.clone();
    ctx.vaults
        .ask(v::Backup {
            during: Box::new(move || {
                env.copy_to_file(&mut copy)
                    .map(drop)
                    .map_err(std::io::Error::other)
            }),
            sink: build.sink(),
        })
        .await?;
    let key = ctx.key.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let manifest = keynode_core::exec::blocking(exec.as_ref(), move || {
        let mut state = state;
        build.finish(state.as_file_mut(), &key, now)
    })
    .await
    .map_err(job)?
    .map_err(api)?;
    Ok(Response::BackupCreated(BackupSummary {
        node_id: manifest.node_id,
        path,
        members: manifest.members.len() as u64,
        bytes: manifest.bytes(),
        created_ms: manifest.created_ms,
    }))
}

//! `keynode backup create|verify|restore`.

use std::path::{Path, PathBuf};

use keynode_agent::backup::{self, BackupError, Manifest};
use keynode_client::api::{BackupSummary, Request, Response};

use crate::cli::BackupCmd;
use crate::output;
use crate::password::{PASSWORD_ENV, PasswordSource};
use crate::{Ctx, Failure};

pub fn run(ctx: &Ctx, cmd: BackupCmd) -> Result<(), Failure> {
    match cmd {
        BackupCmd::Create {
            file,
            password_file,
        } => create(ctx, &file, password_file.as_deref()),
        BackupCmd::Verify { file } => {
            let manifest = backup::verify(&file).map_err(failure)?;
            report(ctx, "verified", &file, &manifest);
            Ok(())
        }
        BackupCmd::Restore { file } => {
            let manifest = backup::restore(&file, &ctx.paths.root).map_err(failure)?;
            report(ctx, "restored", &file, &manifest);
            Ok(())
        }
    }
}

fn failure(e: BackupError) -> Failure {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure::new(e.exit_code(), message)
}

fn absolute(file: &Path) -> Result<PathBuf, Failure> {
    if file.is_absolute() {
        return Ok(file.to_path_buf());
    }
    Ok(std::env::current_dir()?.join(file))
}

fn create(ctx: &Ctx, file: &Path, password_file: Option<&Path>) -> Result<(), Failure> {
    let file = absolute(file)?;
    let through_agent = match ctx.call_if_running(Request::BackupCreate { path: file.clone() })? {
        None => None,
        Some((_, Response::BackupCreated(s))) => Some(s),
        Some((_, other)) => return Err(Failure::new(76, format!("unexpected answer {other:?}"))),
    };
    let summary = match through_agent {
        Some(s) => s,
        None => {
            let password = PasswordSource {
                file: password_file,
                file_flag: "password file",
                env: PASSWORD_ENV,
                prompt: "Password: ",
                confirm: None,
            }
            .read(|p| rpassword::prompt_password(p))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let manifest =
                backup::create_offline(&ctx.paths, &password, &file, now).map_err(failure)?;
            BackupSummary {
                node_id: manifest.node_id,
                path: file.clone(),
                members: manifest.members.len() as u64,
                bytes: manifest.bytes(),
                created_ms: manifest.created_ms,
            }
        }
    };
    output::emit(ctx.format, &summary, || {
        say!(
            "backed up node {} to {}: {} files, {} bytes",
            summary.node_id,
            summary.path.display(),
            summary.members,
            summary.bytes
        );
    });
    Ok(())
}

fn report(ctx: &Ctx, what: &str, file: &Path, manifest: &Manifest) {
    let doc = serde_json::json!({
        what: true,
        "file": file,
        "node_id": manifest.node_id,
        "created_ms": manifest.created_ms,
        "members": manifest.members.len(),
        "bytes": manifest.bytes(),
    });
    output::emit(ctx.format, &doc, || {
        say!(
            "{what} {}: node {}, {} files, {} bytes",
            file.display(),
            manifest.node_id,
            manifest.members.len(),
            manifest.bytes()
        );
        if what == "restored" {
            say!(
                "start it with `keynode --node-path {} agent start` and its password",
                ctx.paths.root.display()
            );
        }
    });
}

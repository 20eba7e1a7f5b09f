//! `keynode secrets ...`

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use keynode_agent::ClientError;
use keynode_agent::api::{EntryKind, ErrorKind, Request, Response};
use keynode_core::SecretPath;
use keynode_core::names::split_secret_ref;

use crate::cli::{EnvFormat, SecretsCmd};
use crate::output::{self, Format};
use crate::vaults::print_committed;
use crate::{Ctx, Failure};

/// Parses a secret path.
fn secret_path(s: &str) -> Result<SecretPath, Failure> {
    SecretPath::new(s).map_err(|e| Failure::new(65, e.to_string()))
}

/// Splits `VAULT:PATH`, requiring the path.
fn secret_ref(s: &str) -> Result<(String, SecretPath), Failure> {
    match split_secret_ref(s) {
        (v, Some(p)) if !v.is_empty() => Ok((v.to_owned(), secret_path(p)?)),
        _ => Err(Failure::new(64, format!("expected VAULT:PATH, got {s:?}"))),
    }
}

/// Splits `VAULT[:PATH]`.
fn dir_ref(s: &str) -> Result<(String, Option<SecretPath>), Failure> {
    match split_secret_ref(s) {
        ("", _) => Err(Failure::new(
            64,
            format!("expected VAULT[:PATH], got {s:?}"),
        )),
        (v, p) => Ok((
            v.to_owned(),
            p.filter(|p| !p.is_empty()).map(secret_path).transpose()?,
        )),
    }
}

/// Streams `data` into the secret `vault:path` (one commit).
async fn write_secret(
    ctx: &Ctx,
    (vault, path): (String, SecretPath),
    create_new: bool,
    data: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Response, Failure> {
    let request = Request::SecretsWrite {
        vault,
        path,
        create_new,
    };
    Ok(ctx.client().await?.upload(request, data).await?)
}

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

pub async fn run(ctx: &Ctx, cmd: SecretsCmd) -> Result<(), Failure> {
    match cmd {
        SecretsCmd::Create { file, secret } => {
            let target = secret_ref(&secret)?;
            let mut f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| Failure::new(66, format!("cannot open {}: {e}", file.display())))?;
            let r = write_secret(ctx, target, true, &mut f).await?;
            print_committed(ctx, r, &format!("created {secret}"))
        }
        SecretsCmd::Write { secret } => {
            let target = secret_ref(&secret)?;
            let r = write_secret(ctx, target, false, &mut tokio::io::stdin()).await?;
            print_committed(ctx, r, &format!("wrote {secret}"))
        }
        SecretsCmd::Get { secret, at } => {
            let (vault, path) = secret_ref(&secret)?;
            let req = Request::SecretsGet { vault, path, at };
            let client = ctx.client().await?;
            match ctx.format {
                Format::Human => {
                    client.download(req, &mut tokio::io::stdout()).await?;
                }
                Format::Json => {
                    let mut buf = Vec::new();
                    client.download(req, &mut buf).await?;
                    let doc = match String::from_utf8(buf) {
                        Ok(s) => serde_json::json!({ "secret": secret, "content": s }),
                        Err(e) => serde_json::json!({
                            "secret": secret,
                            "content_base64": data_encoding::BASE64.encode(e.as_bytes()),
                        }),
                    };
                    output::json(&doc);
                }
            }
            Ok(())
        }
        SecretsCmd::List { target, at } => {
            let (vault, path) = dir_ref(&target)?;
            let r = ctx
                .client()
                .await?
                .call(Request::SecretsList { vault, path, at })
                .await?;
            let Response::Entries(entries) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &entries, || {
                for e in &entries {
                    match e.kind {
                        EntryKind::Dir => println!("{}/", e.name),
                        EntryKind::File => println!("{}", e.name),
                    }
                }
            });
            Ok(())
        }
        SecretsCmd::Mkdir { target, recursive } => {
            let (vault, path) = secret_ref(&target)?;
            let r = ctx
                .client()
                .await?
                .call(Request::SecretsMkdir {
                    vault,
                    path,
                    parents: recursive,
                })
                .await?;
            print_committed(ctx, r, &format!("created directory {target}"))
        }
        SecretsCmd::Rename { secret, new_name } => {
            let (vault, path) = secret_ref(&secret)?;
            let r = ctx
                .client()
                .await?
                .call(Request::SecretsRename {
                    vault,
                    path,
                    new_name: new_name.clone(),
                })
                .await?;
            print_committed(ctx, r, &format!("renamed {secret} to {new_name}"))
        }
        SecretsCmd::Rm { secrets, recursive } => {
            // One commit per vault named.
            let mut by_vault: BTreeMap<String, Vec<SecretPath>> = BTreeMap::new();
            for s in &secrets {
                let (v, p) = secret_ref(s)?;
                by_vault.entry(v).or_default().push(p);
            }
            for (vault, paths) in by_vault {
                let r = ctx
                    .client()
                    .await?
                    .call(Request::SecretsRm {
                        vault: vault.clone(),
                        paths,
                        recursive,
                    })
                    .await?;
                print_committed(ctx, r, &format!("removed from {vault}"))?;
            }
            Ok(())
        }
        SecretsCmd::Stat { secret, at } => {
            let (vault, path) = secret_ref(&secret)?;
            let r = ctx
                .client()
                .await?
                .call(Request::SecretsStat { vault, path, at })
                .await?;
            let Response::Stat(st) = r else {
                return Err(unexpected(r));
            };
            output::emit(ctx.format, &st, || {
                println!("path: {}", st.path);
                println!("type: {:?}", st.kind);
                println!("size: {}", st.size);
                println!("blob: {}", st.blob);
                println!("mode: {:o}", st.mode);
                if let Some(c) = &st.last_commit {
                    println!(
                        "last changed: {} by commit {}",
                        output::time(c.time_ms),
                        c.oid
                    );
                }
            });
            Ok(())
        }
        SecretsCmd::Edit { secret } => edit(ctx, &secret).await,
        SecretsCmd::Dir { dir, target } => {
            let (vault, path) = dir_ref(&target)?;
            let files = walk(&dir)?;
            let r = ctx
                .client()
                .await?
                .upload_files(Request::SecretsDir { vault, path }, &files)
                .await?;
            print_committed(ctx, r, &format!("imported {} files", files.len()))
        }
        SecretsCmd::Env {
            targets,
            env_format,
            command,
        } => env(ctx, targets, env_format, command).await,
    }
}

/// Regular files under `dir`, as (path relative to `dir`, full path), sorted.
/// Symbolic links are not followed; a name that is not a valid secret path
/// fails the whole import.
fn walk(dir: &Path) -> Result<Vec<(SecretPath, PathBuf)>, Failure> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| Failure::new(66, format!("cannot read {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Failure::new(
            66,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, full)) = stack.pop() {
        for entry in std::fs::read_dir(&full)? {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| Failure::new(65, format!("file name {n:?} is not valid UTF-8")))?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push((rel, entry.path()));
            } else if ft.is_file() {
                out.push((secret_path(&rel)?, entry.path()));
            } else {
                eprintln!(
                    "keynode: skipping {} (not a regular file)",
                    entry.path().display()
                );
            }
        }
    }
    out.sort();
    Ok(out)
}

async fn edit(ctx: &Ctx, secret: &str) -> Result<(), Failure> {
    let (vault, path) = secret_ref(secret)?;
    let dir = tempfile::Builder::new().prefix("keynode-edit").tempdir()?; // mode 0700
    let file = dir.path().join("secret");
    let mut original = Vec::new();
    let got = ctx
        .client()
        .await?
        .download(
            Request::SecretsGet {
                vault: vault.clone(),
                path: path.clone(),
                at: None,
            },
            &mut original,
        )
        .await;
    let exists = match got {
        Ok(_) => true,
        Err(ClientError::Api(e))
            if e.kind == ErrorKind::NotFound && e.message.contains("secret") =>
        {
            false
        }
        Err(e) => return Err(e.into()),
    };
    keynode_core::keystore::write_private_file(&file, &original)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| Failure::new(69, format!("cannot run the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(Failure::new(
            1,
            format!("the editor {editor:?} failed ({status}); secret unchanged"),
        ));
    }
    let edited = std::fs::read(&file)?;
    if exists && edited == original {
        output::emit(ctx.format, &serde_json::json!({"committed": false}), || {
            println!("nothing changed")
        });
        return Ok(());
    }
    let mut f = tokio::fs::File::open(&file).await?;
    let r = write_secret(ctx, (vault, path), false, &mut f).await?;
    print_committed(ctx, r, &format!("saved {secret}"))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

async fn env(
    ctx: &Ctx,
    targets: Vec<String>,
    format: EnvFormat,
    command: Vec<String>,
) -> Result<(), Failure> {
    let refs = targets
        .iter()
        .map(|t| dir_ref(t))
        .collect::<Result<Vec<_>, _>>()?;
    let r = ctx
        .client()
        .await?
        .call(Request::SecretsEnv { refs })
        .await?;
    let Response::Env(vars) = r else {
        return Err(unexpected(r));
    };
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        if !valid_env_name(&name) {
            return Err(Failure::new(
                65,
                format!("secret {name:?} is not a valid environment variable name"),
            ));
        }
        let value = String::from_utf8(value).map_err(|_| {
            Failure::new(
                65,
                format!("secret {name:?} is not text and cannot be an environment variable"),
            )
        })?;
        if value.contains('\0') {
            return Err(Failure::new(
                65,
                format!("secret {name:?} contains a NUL byte"),
            ));
        }
        // Later targets win, as in a shell.
        env.insert(name, value);
    }
    if let Some((program, args)) = command.split_first() {
        let err = std::process::Command::new(program)
            .args(args)
            .envs(&env)
            .exec();
        return Err(Failure::new(69, format!("cannot run {program:?}: {err}")));
    }
    match (format, ctx.format) {
        (EnvFormat::Json, _) | (_, Format::Json) => output::json(&env),
        (EnvFormat::Unix, Format::Human) => {
            for (k, v) in &env {
                println!("export {k}='{}'", v.replace('\'', "'\\''"));
            }
        }
    }
    Ok(())
}

//! `keynode secrets ...`

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use keynode_client::ClientError;
use keynode_client::api::{EntryKind, ErrorKind, Request, Response};
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
            let mut client = ctx.client().await?;
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
                        EntryKind::Dir => say!("{}/", e.name),
                        EntryKind::File => say!("{}", e.name),
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
                say!("path: {}", st.path);
                say!("type: {:?}", st.kind);
                say!("size: {}", st.size);
                say!("blob: {}", st.blob);
                say!("mode: {:o}", st.mode);
                if let Some(c) = &st.last_commit {
                    say!(
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
            allow_env,
            watch,
            signal,
            stop_timeout,
            command,
        } => {
            let watching = watch.then_some(Watching {
                signal,
                stop_timeout,
            });
            env(ctx, targets, env_format, &allow_env, command, watching).await
        }
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
                esay!(
                    "keynode: skipping {} (not a regular file)",
                    entry.path().display()
                );
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A private (0700) directory for `secrets edit`'s plaintext copy: under
/// `$XDG_RUNTIME_DIR` (memory-backed, the user's own) when set, else the
/// system's temporary directory.
fn edit_dir() -> Result<tempfile::TempDir, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = tempfile::Builder::new();
    builder
        .prefix("keynode-edit")
        .permissions(std::fs::Permissions::from_mode(0o700));
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir());
    Ok(match runtime {
        Some(d) => builder.tempdir_in(d)?,
        None => builder.tempdir()?,
    })
}

/// The signals `secrets edit` handles while the editor runs.
struct EditSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl EditSignals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(EditSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for the editor. SIGINT is the editor's (Ctrl-C in vi must not end
/// us and leave the copy behind); SIGTERM or SIGHUP (a closed terminal) remove
/// the copy and end the command, the secret unchanged.
async fn wait_editor(
    child: &mut tokio::process::Child,
    dir: &tempfile::TempDir,
    mut signals: EditSignals,
) -> Result<std::process::ExitStatus, Failure> {
    loop {
        let (code, why) = tokio::select! {
            biased;
            _ = signals.term.recv() => (143, "terminated"),
            _ = signals.hup.recv() => (129, "hung up"),
            _ = signals.int.recv() => continue,
            status = child.wait() => return Ok(status?),
        };
        let _ = child.start_kill();
        let _ = std::fs::remove_dir_all(dir.path());
        return Err(Failure::new(
            code,
            format!("{why} while editing; secret unchanged, its temporary copy removed"),
        ));
    }
}

async fn edit(ctx: &Ctx, secret: &str) -> Result<(), Failure> {
    let (vault, path) = secret_ref(secret)?;
    let dir = edit_dir()?;
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
    // Signals are ours from before the editor starts (see `wait_editor`).
    let signals = EditSignals::new()?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .spawn()
        .map_err(|e| Failure::new(69, format!("cannot run the editor {editor:?}: {e}")))?;
    let status = wait_editor(&mut child, &dir, signals).await?;
    if !status.success() {
        return Err(Failure::new(
            1,
            format!("the editor {editor:?} failed ({status}); secret unchanged"),
        ));
    }
    let edited = std::fs::read(&file)?;
    // The plaintext goes as soon as it is read.
    let _ = std::fs::remove_file(&file);
    if exists && edited == original {
        output::emit(ctx.format, &serde_json::json!({"committed": false}), || {
            say!("nothing changed")
        });
        return Ok(());
    }
    let r = write_secret(ctx, (vault, path), false, &mut &edited[..]).await?;
    print_committed(ctx, r, &format!("saved {secret}"))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Variables that change how programs load or run: a shared vault must not
/// set them behind its grantee's back (`secrets env` refuses them unless
/// allowed by name). Exact names; see also [`LOADER_PREFIXES`].
const LOADER_VARS: &[&str] = &[
    // Where programs are found, how words split, what a shell runs first.
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "CDPATH",
    "GLOBIGNORE",
    "PROMPT_COMMAND",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "ZDOTDIR",
    "SHELL",
    "HOME",
    "TMPDIR",
    // Programs other programs run.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    // The C library.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCPATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "TZDIR",
    // Interpreters and runtimes.
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "R_PROFILE",
    "R_PROFILE_USER",
    "R_ENVIRON",
    "R_ENVIRON_USER",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
];

/// Prefixes of variable families with the same effect: the dynamic loader's,
/// bash's exported functions, interpreters' and runtimes' own, git's.
const LOADER_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "NPM_CONFIG_",
    "LUA_",
    "DOTNET_",
    "COMPLUS_",
    "CORECLR_",
    "GIT_",
    "MALLOC_",
    "JULIA_",
    "ERL_",
    "ELIXIR_",
];

/// Whether `name` is a variable `secrets env` refuses unless allowed.
fn changes_how_programs_run(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    LOADER_VARS.contains(&upper.as_str()) || LOADER_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// What `secrets env` hands a command: every variable the targets hold,
/// checked against the naming rules (later targets win, as in a shell).
pub(crate) async fn load_env(
    ctx: &Ctx,
    refs: &[(String, Option<SecretPath>)],
    allowed: &[String],
) -> Result<BTreeMap<String, String>, Failure> {
    let r = ctx
        .client()
        .await?
        .call(Request::SecretsEnv {
            refs: refs.to_vec(),
        })
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
        if changes_how_programs_run(&name) && !allowed.iter().any(|a| a == &name) {
            return Err(Failure::new(
                65,
                format!(
                    "secret {name} would set {name}, which changes how programs load or run; \
                     allow it with --allow-env {name}"
                ),
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
        env.insert(name, value);
    }
    Ok(env)
}

/// How `secrets env --watch` runs its command.
pub struct Watching {
    /// Send this signal on a change instead of restarting.
    pub signal: Option<String>,
    /// How long a restart waits after SIGTERM.
    pub stop_timeout: std::time::Duration,
}

async fn env(
    ctx: &Ctx,
    targets: Vec<String>,
    format: EnvFormat,
    allowed: &[String],
    command: Vec<String>,
    watching: Option<Watching>,
) -> Result<(), Failure> {
    let refs = targets
        .iter()
        .map(|t| dir_ref(t))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(watching) = watching {
        return crate::watch::run(ctx, &refs, allowed, &command, watching).await;
    }
    let env = load_env(ctx, &refs, allowed).await?;
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

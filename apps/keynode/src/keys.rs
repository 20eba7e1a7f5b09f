//! `keynode keys public|sign|verify|encrypt|decrypt`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use keynode_client::api::{Request, Response};
use keynode_core::{NodeId, Signature, encrypt, filesig};

use crate::cli::KeysCmd;
use crate::nodes::node_id;
use crate::output;
use crate::{Ctx, Failure};

/// Largest file `keys encrypt` and `keys decrypt` take (one client frame).
const MAX_MESSAGE: u64 = 1 << 20;

pub async fn run(ctx: &Ctx, cmd: KeysCmd) -> Result<(), Failure> {
    match cmd {
        KeysCmd::Public => public(ctx).await,
        KeysCmd::Renew {
            password_file,
            recovery_code_out_file,
        } => {
            renew(
                ctx,
                password_file.as_deref(),
                recovery_code_out_file.as_deref(),
            )
            .await
        }
        KeysCmd::Sign { file } => {
            let digest = digest_of(&file)?;
            let mut client = ctx.client().await?;
            let signer = client.node_id();
            let Response::Signed(sig) = client.call(Request::KeysSign { digest }).await? else {
                return Err(Failure::new(76, "unexpected answer"));
            };
            let hex = hex(sig.as_bytes());
            let doc = serde_json::json!({ "file": file, "node_id": signer, "signature": hex });
            output::emit(ctx.format, &doc, || say!("{hex}"));
            Ok(())
        }
        KeysCmd::Verify {
            file,
            signature,
            node_id: node,
        } => {
            let node = node_id(&node)?;
            let sig = parse_signature(&signature)?;
            let digest = digest_of(&file)?;
            filesig::verify(&node, &digest, &sig).map_err(|_| {
                Failure::new(
                    65,
                    format!("the signature over {} is not {node}'s", file.display()),
                )
            })?;
            let doc = serde_json::json!({ "file": file, "node_id": node, "valid": true });
            output::emit(ctx.format, &doc, || {
                say!("valid: {} is signed by {node}", file.display())
            });
            Ok(())
        }
        KeysCmd::Encrypt {
            file,
            node_id: node,
            out,
        } => {
            let node = node_id(&node)?;
            let plain = zeroize::Zeroizing::new(read_limited(&file)?);
            let sealed = encrypt::encrypt_to(&node, &plain)
                .map_err(|e| Failure::new(65, format!("{node}: {e}")))?;
            write_out(ctx, out.as_deref(), &sealed, "sealed_base64")
        }
        KeysCmd::Decrypt { file, out } => {
            let sealed = read_limited(&file)?;
            let mut client = ctx.client().await?;
            let Response::Decrypted(plain) = client.call(Request::KeysDecrypt { sealed }).await?
            else {
                return Err(Failure::new(76, "unexpected answer"));
            };
            let plain = zeroize::Zeroizing::new(plain);
            write_out(ctx, out.as_deref(), &plain, "plaintext_base64")
        }
    }
}

async fn renew(ctx: &Ctx, password_file: Option<&Path>, out: Option<&Path>) -> Result<(), Failure> {
    if ctx.client().await.is_ok() {
        return Err(Failure::new(
            75,
            "the agent is running: stop it (`keynode agent stop`), renew, then start it again",
        ));
    }
    if let Some(out) = out {
        crate::recovery::check_out_file(out)?;
    }
    let password = crate::password::PasswordSource {
        file: password_file,
        file_flag: "password file",
        env: crate::password::PASSWORD_ENV,
        prompt: "Password: ",
        confirm: None,
    }
    .read(|p| rpassword::prompt_password(p))?;
    let paths = ctx.paths.clone();
    let renewed =
        tokio::task::spawn_blocking(move || keynode_agent::renewal::renew(&paths, &password))
            .await
            .map_err(|e| Failure::new(70, e.to_string()))?;
    let renewed = renewed.map_err(|e| {
        use keynode_agent::renewal::RenewError as R;
        let code = match &e {
            R::WrongPassword(_) => 77,
            R::Locked(_) | R::Pending => 75,
            R::NoNode(_) => 66,
            R::Failed(_) => 74,
        };
        Failure::new(code, e.to_string())
    })?;
    crate::recovery::show(&renewed.code, out)?;
    let doc =
        serde_json::json!({ "old_node_id": renewed.old, "node_id": renewed.new, "renewed": true });
    output::emit(ctx.format, &doc, || {
        say!("renewed: node {} is now {}", renewed.old, renewed.new);
        say!("start the agent: it tells the nodes it knows, which refuse the old key from then on");
    });
    Ok(())
}

async fn public(ctx: &Ctx) -> Result<(), Failure> {
    let id: NodeId = match ctx.client().await {
        Ok(client) => client.node_id(),
        Err(f) => match keynode_agent::status::read_status(&ctx.paths.status()) {
            Some(s) => s.node_id,
            None => return Err(f),
        },
    };
    let bytes = id.as_bytes();
    let b64 = multibase::encode(multibase::Base::Base64Pad, bytes);
    let doc = serde_json::json!({
        "node_id": id,
        "public_key_hex": hex(bytes),
        "public_key_base64": &b64[1..],
        "algorithm": "ed25519",
    });
    output::emit(ctx.format, &doc, || {
        say!("node_id: {id}");
        say!("public_key_hex: {}", hex(bytes));
        say!("public_key_base64: {}", &b64[1..]);
    });
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_signature(text: &str) -> Result<Signature, Failure> {
    let text = text.trim();
    let bad = || {
        Failure::new(
            65,
            "a signature is 128 hex digits, as `keys sign` prints it",
        )
    };
    if text.len() != 128 || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 64];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Signature::from_bytes(out))
}

fn digest_of(file: &Path) -> Result<[u8; 32], Failure> {
    let mut f = std::fs::File::open(file)
        .map_err(|e| Failure::new(66, format!("cannot read {}: {e}", file.display())))?;
    Ok(filesig::digest(&mut f)?)
}

fn read_limited(file: &Path) -> Result<Vec<u8>, Failure> {
    let len = std::fs::metadata(file)
        .map_err(|e| Failure::new(66, format!("cannot read {}: {e}", file.display())))?
        .len();
    if len > MAX_MESSAGE {
        return Err(Failure::new(
            65,
            format!(
                "{} is {len} bytes; keys encrypt and decrypt take at most {MAX_MESSAGE} (store larger secrets in a vault and share it)",
                file.display()
            ),
        ));
    }
    Ok(std::fs::read(file)?)
}

/// Writes `data` to `out`, else to stdout: raw for a person (or a pipe), in
/// JSON as `{field: base64}` (with `--out`, `{"out", "bytes"}`).
fn write_out(ctx: &Ctx, out: Option<&Path>, data: &[u8], field: &str) -> Result<(), Failure> {
    if ctx.format == crate::output::Format::Json {
        let doc = match out {
            Some(path) => {
                write_raw(Some(path), data)?;
                serde_json::json!({ "out": path, "bytes": data.len() })
            }
            None => {
                let b64 = multibase::encode(multibase::Base::Base64Pad, data);
                serde_json::json!({ field: &b64[1..] })
            }
        };
        output::emit(ctx.format, &doc, || {});
        return Ok(());
    }
    write_raw(out, data)
}

fn write_raw(out: Option<&Path>, data: &[u8]) -> Result<(), Failure> {
    match out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Failure::new(73, format!("cannot create {}: {e}", path.display())))?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(data)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

//! `keynode agent password`: a new password from the current one, or from the
//! recovery code when the current one is lost; and where passwords come from.

use std::path::Path;

use keynode_agent::password::PasswordError;
use keynode_client::api::{Password, Request, Response};
use keynode_core::NodeId;
use zeroize::Zeroizing;

use crate::cli::PasswordArgs;
use crate::output;
use crate::{Ctx, Failure};

/// Environment variable holding the password.
pub(crate) const PASSWORD_ENV: &str = "KEYNODE_PASSWORD";
/// Environment variable holding the new password for `agent password`.
const NEW_PASSWORD_ENV: &str = "KEYNODE_NEW_PASSWORD";

/// A password as read: zeroed on drop.
pub(crate) type Secret = Zeroizing<Vec<u8>>;

/// Where one password comes from: a file, else an environment variable, else
/// a prompt on the terminal (asked twice when `confirm` is set).
pub(crate) struct PasswordSource<'a> {
    pub(crate) file: Option<&'a Path>,
    pub(crate) file_flag: &'a str,
    pub(crate) env: &'a str,
    pub(crate) prompt: &'a str,
    pub(crate) confirm: Option<&'a str>,
}

impl PasswordSource<'_> {
    pub(crate) fn read(
        &self,
        mut prompt: impl FnMut(&str) -> std::io::Result<String>,
    ) -> Result<Secret, Failure> {
        if let Some(file) = self.file {
            let bytes = std::fs::read(file).map_err(|e| {
                Failure::new(
                    66,
                    format!("cannot read {} {}: {e}", self.file_flag, file.display()),
                )
            })?;
            let mut s = Zeroizing::new(bytes);
            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                s.pop();
            }
            return Ok(s);
        }
        if let Ok(p) = std::env::var(self.env) {
            return Ok(Zeroizing::new(p.into_bytes()));
        }
        let p = Zeroizing::new(prompt(self.prompt).map_err(|e| {
            Failure::new(
                64,
                format!(
                    "no {} given and cannot prompt: {e}",
                    self.prompt.trim_end_matches([':', ' ']).to_lowercase()
                ),
            )
        })?);
        if let Some(confirm) = self.confirm {
            let again = Zeroizing::new(
                prompt(confirm).map_err(|e| Failure::new(64, format!("cannot prompt: {e}")))?,
            );
            if *again != *p {
                return Err(Failure::new(64, "passwords do not match"));
            }
        }
        Ok(Zeroizing::new(p.as_bytes().to_vec()))
    }
}

/// The current and the new password of `agent password`.
fn password_pair(
    args: &PasswordArgs,
    prompt: impl FnMut(&str) -> std::io::Result<String>,
) -> Result<(Secret, Secret), Failure> {
    let mut prompt = prompt;
    let current = PasswordSource {
        file: args.password_file.as_deref(),
        file_flag: "password file",
        env: PASSWORD_ENV,
        prompt: "Current password: ",
        confirm: None,
    }
    .read(&mut prompt)?;
    let new = PasswordSource {
        file: args.new_password_file.as_deref(),
        file_flag: "new password file",
        env: NEW_PASSWORD_ENV,
        prompt: "New password: ",
        confirm: Some("Confirm new password: "),
    }
    .read(&mut prompt)?;
    if new.is_empty() {
        return Err(Failure::new(64, "the new password is empty"));
    }
    Ok((current, new))
}

/// `agent password`: through the running agent, which checks the current
/// password and re-seals its key file; with none running, on the key file
/// directly under the agent lock (so no agent starts meanwhile).
pub(crate) fn run(ctx: &Ctx, args: PasswordArgs) -> Result<(), Failure> {
    if let Some(file) = args.recovery_code_file.clone() {
        return password_from_code(ctx, &args, &file);
    }
    let (current, new) = password_pair(&args, |p| rpassword::prompt_password(p))?;
    let request = Request::AgentPassword {
        current: Password::new(current.to_vec()),
        new: Password::new(new.to_vec()),
    };
    let through_agent = unit_from_agent(ctx, request)?;
    let (node_id, agent_running) = match through_agent {
        Some(id) => (id, true),
        None => {
            let id = keynode_agent::password::change_password(&ctx.paths, &current, &new)
                .map_err(|e| password_error(ctx, &e))?;
            (id, false)
        }
    };
    let doc = serde_json::json!({
        "password_changed": true,
        "node_id": node_id,
        "agent_running": agent_running,
    });
    output::emit(ctx.format, &doc, || {
        say!("password changed for node {node_id}");
        if !agent_running {
            say!("(no agent was running: the key file was re-sealed directly)");
        }
    });
    Ok(())
}

/// `request` to the running agent, which answers `Unit`: its node, or `None`
/// with no agent running.
fn unit_from_agent(ctx: &Ctx, request: Request) -> Result<Option<NodeId>, Failure> {
    match ctx.call_if_running(request)? {
        None => Ok(None),
        Some((node, Response::Unit)) => Ok(Some(node)),
        Some((_, other)) => Err(Failure::new(76, format!("unexpected answer {other:?}"))),
    }
}

/// `agent password --recovery-code-file`: a new password, the old one lost.
fn password_from_code(ctx: &Ctx, args: &PasswordArgs, file: &Path) -> Result<(), Failure> {
    let code = crate::recovery::read_code_file(file)?;
    let new = PasswordSource {
        file: args.new_password_file.as_deref(),
        file_flag: "new password file",
        env: NEW_PASSWORD_ENV,
        prompt: "New password: ",
        confirm: Some("Confirm new password: "),
    }
    .read(|p| rpassword::prompt_password(p))?;
    if new.is_empty() {
        return Err(Failure::new(64, "the new password is empty"));
    }
    let request = Request::AgentRecover {
        code: Password::new(code.as_bytes().to_vec()),
        new: Password::new(new.to_vec()),
    };
    let through_agent = unit_from_agent(ctx, request)?;
    let (node_id, agent_running) = match through_agent {
        Some(id) => (id, true),
        None => {
            let id = keynode_agent::password::reset_with_code(&ctx.paths, &code, &new)
                .map_err(|e| password_error(ctx, &e))?;
            (id, false)
        }
    };
    let doc = serde_json::json!({
        "password_changed": true,
        "node_id": node_id,
        "agent_running": agent_running,
        "from_recovery_code": true,
    });
    output::emit(ctx.format, &doc, || {
        say!("password set from the recovery code for node {node_id}");
    });
    Ok(())
}

fn password_error(ctx: &Ctx, e: &PasswordError) -> Failure {
    match e {
        PasswordError::Locked(lock) => {
            let pid = match lock {
                keynode_agent::status::LockError::Held { pid } => format!(" (pid {pid})"),
                _ => String::new(),
            };
            Failure::new(
                75,
                format!(
                    "another keynode process holds the node path {}{pid}: an agent starting or \
                     another password change; try again once it is done",
                    ctx.paths.root.display()
                ),
            )
        }
        e => {
            let api = e.to_api();
            Failure::new(api.kind.exit_code() as u8, api.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(current: Option<&Path>, new: Option<&Path>) -> PasswordArgs {
        PasswordArgs {
            password_file: current.map(Path::to_path_buf),
            new_password_file: new.map(Path::to_path_buf),
            recovery_code_file: None,
        }
    }

    /// A prompt that answers from `answers`, in order.
    fn answering(answers: &[&str]) -> impl FnMut(&str) -> std::io::Result<String> {
        let mut answers: Vec<String> = answers.iter().rev().map(|s| s.to_string()).collect();
        move |_| answers.pop().ok_or_else(|| std::io::Error::other("no tty"))
    }

    #[test]
    fn the_new_password_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let (cur, new) = (dir.path().join("cur"), dir.path().join("new"));
        std::fs::write(&cur, "old\n").unwrap();
        std::fs::write(&new, "new\r\n").unwrap();
        let (c, n) = password_pair(&args(Some(&cur), Some(&new)), answering(&[])).unwrap();
        assert_eq!((&c[..], &n[..]), (&b"old"[..], &b"new"[..]));

        std::fs::write(&new, "\n").unwrap();
        let e = password_pair(&args(Some(&cur), Some(&new)), answering(&[])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (64, "the new password is empty")
        );

        let e = password_pair(
            &args(Some(&cur), Some(&dir.path().join("missing"))),
            answering(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, 66);
        assert!(e.message.contains("new password file"), "{}", e.message);
    }

    #[test]
    fn the_prompted_new_password_is_asked_twice() {
        if std::env::var_os(NEW_PASSWORD_ENV).is_some() {
            return; // the environment would answer instead of the prompt
        }
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("cur");
        std::fs::write(&cur, "old").unwrap();
        let a = args(Some(&cur), None);
        let (_, n) = password_pair(&a, answering(&["new", "new"])).unwrap();
        assert_eq!(&n[..], b"new");
        let e = password_pair(&a, answering(&["new", "neW"])).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (64, "passwords do not match"));
        let e = password_pair(&a, answering(&["", ""])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (64, "the new password is empty")
        );
        let e = password_pair(&a, answering(&[])).unwrap_err();
        assert_eq!(e.code, 64);
        assert!(e.message.contains("no new password given"), "{}", e.message);
    }
}

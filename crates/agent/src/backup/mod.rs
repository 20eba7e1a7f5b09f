//! Backups: one file holding a whole node, as it is at rest, that restores
//! into a node with the same NodeId, vaults, history, permissions, gestalt,
//! notifications and queued deliveries.
//!
//! An archive is a POSIX tar file (`tar tf` lists it) of regular files only:
//!
//! ```text
//! keys/root.key          the root key, sealed under the password (as on disk)
//! keys/data.key          the data key, sealed under the root key
//! keys/recovery          present if the root key derives from a recovery code
//! vaults/<id>.git/…      every vault repository: refs, config, encrypted objects and bundles
//! state/data.mdb         the LMDB environment, copied by LMDB (every page still encrypted)
//! MANIFEST               JSON: {"format": 1, "node_id", "created_ms", "members": [{"path", "size", "blake2b"}]}
//! MANIFEST.sig           Ed25519 signature by the node's root key over
//!                        "keynode/1 backup manifest\0" ‖ MANIFEST
//! ```
//!
//! Nothing in it is readable without the password or the recovery code: it is
//! the node path's own encrypted files. The manifest lists every member in
//! archive order with its size and BLAKE2b-256; reading an archive checks each
//! member as it streams by, then the manifest's signature against the NodeId
//! it names, then that the members are exactly the listed ones. A truncated,
//! altered, reordered or foreign archive fails one of these.
//!
//! Creating one (`create.rs`) with the agent running pauses vault mutations
//! only while LMDB copies the state and the repositories' files are listed
//! (`keynode_vaults::VaultStore::backup`); reads, writes, clones and pulls go
//! on. Restoring (`restore`) unpacks into a new directory beside the target and
//! renames it into place only once everything checked, so a refused archive
//! writes nothing under the target.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use keynode_core::{Keypair, NodeId};
use serde::{Deserialize, Serialize};

mod create;

pub use create::{Build, create_offline, state_copy};

/// Archive format written by this version.
pub const FORMAT: u16 = 1;
/// The manifest's member name.
pub const MANIFEST: &str = "MANIFEST";
/// The signature's member name.
pub const SIGNATURE: &str = "MANIFEST.sig";
/// What the signature covers, before the manifest's bytes.
const CONTEXT: &[u8] = b"keynode/1 backup manifest\0";
/// Largest manifest read.
const MAX_MANIFEST: u64 = 256 << 20;
/// Most members an archive may hold.
const MAX_MEMBERS: usize = 10_000_000;
/// Longest member path (what a ustar header holds: 155 + 100 bytes).
const MAX_PATH: usize = 255;

/// An archive's table of contents, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u16,
    /// The node the archive is of, whose key signed it.
    pub node_id: NodeId,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Every member but the manifest and its signature, in archive order.
    pub members: Vec<Member>,
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its path in the node path, `/`-separated.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE2b-256 of its content, hex.
    pub blake2b: String,
}

impl Manifest {
    /// Bytes in all members.
    pub fn bytes(&self) -> u64 {
        self.members.iter().map(|m| m.size).sum()
    }
}

/// A backup could not be made, checked or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing failed.
    #[error("{1}: {0}")]
    Io(#[source] io::Error, String),
    /// The file is not a keynode backup, or is damaged: the message says how.
    #[error("not a valid keynode backup: {0}")]
    Invalid(String),
    /// The restore target holds files already.
    #[error("{0} is not empty: a backup restores into a new or empty node path only")]
    NotEmpty(PathBuf),
    /// The output exists already.
    #[error("{0} exists: a backup is written to a new file only")]
    Exists(PathBuf),
    /// The password does not open the root key (a backup of a stopped node
    /// is signed with it).
    #[error("wrong password for the node at {0}")]
    WrongPassword(PathBuf),
    /// An agent holds the node path.
    #[error(transparent)]
    Locked(#[from] crate::status::LockError),
    /// The node path has no node.
    #[error("no node at {0}")]
    NoNode(PathBuf),
}

impl BackupError {
    /// The sysexits code: 65 for a bad archive, 73 for an existing target, 77
    /// for a wrong password, 75 for a held lock, 66 for no node, 74 for I/O.
    pub fn exit_code(&self) -> u8 {
        match self {
            BackupError::Invalid(_) => 65,
            BackupError::NotEmpty(_) | BackupError::Exists(_) => 73,
            BackupError::WrongPassword(_) => 77,
            BackupError::Locked(_) => 75,
            BackupError::NoNode(_) => 66,
            BackupError::Io(..) => 74,
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.into();
    move |e| BackupError::Io(e, what)
}

fn invalid(why: impl Into<String>) -> BackupError {
    BackupError::Invalid(why.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` may be a member: relative, plain components, under the
/// parts of a node path a backup holds.
fn member_path_ok(path: &str) -> bool {
    if path.is_empty() || path.len() > MAX_PATH {
        return false;
    }
    let parts: Vec<&str> = path.split('/').collect();
    let plain = parts.iter().all(|p| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    });
    if !plain || parts.len() > 16 {
        return false;
    }
    match parts[0] {
        "keys" => parts.len() == 2 && ["root.key", "data.key", "recovery"].contains(&parts[1]),
        "state" => parts.len() == 2 && parts[1] == "data.mdb",
        "vaults" => parts.len() >= 3 && parts[1].ends_with(keynode_vaults::REPO_SUFFIX),
        _ => false,
    }
}

/// Writes an archive: members, then the signed manifest.
pub(crate) struct ArchiveWriter<W: Write> {
    tar: tar::Builder<W>,
    members: Vec<Member>,
}

impl<W: Write> ArchiveWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        ArchiveWriter {
            tar,
            members: Vec::new(),
        }
    }

    /// Appends `size` bytes of `data` as `path`.
    pub(crate) fn add(&mut self, path: &str, data: &mut dyn Read, size: u64) -> io::Result<()> {
        debug_assert!(member_path_ok(path), "{path}");
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = Hashing::new(data.take(size));
        self.tar.append_data(&mut header, path, &mut reader)?;
        if reader.count != size {
            return Err(io::Error::other(format!(
                "{path} changed while it was being copied"
            )));
        }
        self.members.push(Member {
            path: path.to_owned(),
            size,
            blake2b: reader.finish(),
        });
        Ok(())
    }

    /// Appends the manifest and its signature; returns the output and the
    /// manifest.
    pub(crate) fn finish(mut self, key: &Keypair, created_ms: u64) -> io::Result<(W, Manifest)> {
        let manifest = Manifest {
            format: FORMAT,
            node_id: key.node_id(),
            created_ms,
            members: std::mem::take(&mut self.members),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let signature = key.sign(&[CONTEXT, &bytes].concat());
        for (name, data) in [
            (MANIFEST, bytes.as_slice()),
            (SIGNATURE, signature.as_bytes().as_slice()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            self.tar.append_data(&mut header, name, data)?;
        }
        Ok((self.tar.into_inner()?, manifest))
    }
}

/// Counts and hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Blake2b<U32>,
    count: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Blake2b::new(),
            count: 0,
        }
    }

    fn finish(self) -> String {
        hex(&self.hash.finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// What [`read_archive`] hands each member to: its path, content and size.
pub type Each<'a> = dyn FnMut(&str, &mut dyn Read, u64) -> Result<(), BackupError> + 'a;

/// Reads the archive at `file`, handing each member to `each` (path, content,
/// size) as it streams by, and checks it whole: every member's hash and size,
/// the manifest's signature, and that the members are exactly those listed.
/// Returns the manifest; on any error the archive must be treated as refused
/// (what `each` did with earlier members is the caller's to undo).
pub fn read_archive(file: &Path, each: &mut Each<'_>) -> Result<Manifest, BackupError> {
    let f = fs::File::open(file).map_err(io_err(format!("opening {}", file.display())))?;
    let mut archive = tar::Archive::new(io::BufReader::new(f));
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("unreadable: {e}")))?;
    let mut seen: Vec<Member> = Vec::new();
    let mut paths = std::collections::HashSet::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut signature: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("unreadable: {e}")))?;
        if signature.is_some() {
            return Err(invalid("members after the signature"));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid("a member is not a regular file"));
        }
        let path = entry
            .path()
            .map_err(|_| invalid("a member's path is not text"))?
            .components()
            .map(|c| match c {
                Component::Normal(p) => p.to_str().map(str::to_owned),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| invalid("a member's path is not a plain relative path"))?
            .join("/");
        let size = entry.size();
        if path == MANIFEST {
            if manifest_bytes.is_some() || size > MAX_MANIFEST {
                return Err(invalid("a second or oversized manifest"));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(format!("the manifest is cut short: {e}")))?;
            manifest_bytes = Some(bytes);
            continue;
        }
        if path == SIGNATURE {
            if manifest_bytes.is_none() || size != 64 {
                return Err(invalid("the signature is misplaced or malformed"));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(format!("the signature is cut short: {e}")))?;
            signature = Some(bytes);
            continue;
        }
        if manifest_bytes.is_some() {
            return Err(invalid("members after the manifest"));
        }
        if !member_path_ok(&path) {
            return Err(invalid(format!("unexpected member {path:?}")));
        }
        if !paths.insert(path.clone()) || seen.len() >= MAX_MEMBERS {
            return Err(invalid(format!(
                "member {path:?} twice, or too many members"
            )));
        }
        let mut reader = Hashing::new(&mut entry);
        each(&path, &mut reader, size)?;
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| invalid(format!("{path} is cut short: {e}")))?;
        if reader.count != size {
            return Err(invalid(format!("{path} is cut short")));
        }
        seen.push(Member {
            path,
            size,
            blake2b: reader.finish(),
        });
    }
    let (Some(bytes), Some(signature)) = (manifest_bytes, signature) else {
        return Err(invalid(
            "no signed manifest: the archive is cut short or not a keynode backup",
        ));
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("bad manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this keynode reads format {FORMAT})",
            manifest.format
        )));
    }
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| invalid("the signature is malformed"))?;
    let signature = keynode_core::Signature::from_bytes(signature);
    manifest
        .node_id
        .verify(&[CONTEXT, &bytes].concat(), &signature)
        .map_err(|_| invalid("the manifest's signature fails: altered, or not this node's"))?;
    if manifest.members != seen {
        return Err(invalid(
            "the members differ from the manifest: altered, reordered or incomplete",
        ));
    }
    Ok(manifest)
}

/// Checks the archive at `file` without writing anything.
pub fn verify(file: &Path) -> Result<Manifest, BackupError> {
    read_archive(file, &mut |_, _, _| Ok(()))
}

/// Restores the archive at `file` as the node path `target` (which must not
/// exist or be empty). Everything is unpacked and checked in a new directory
/// beside `target`, synced, then renamed into place: a refused archive leaves
/// `target` as it was. Blocking.
pub fn restore(file: &Path, target: &Path) -> Result<Manifest, BackupError> {
    if crate::disk::non_empty(target).map_err(|e| invalid(e.to_string()))? {
        return Err(BackupError::NotEmpty(target.to_path_buf()));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .create(parent)
        .map_err(io_err(format!("creating {}", parent.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".keynode-restore-")
        .tempdir_in(parent)
        .map_err(io_err(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    let root = staging.path().to_path_buf();
    let manifest = read_archive(file, &mut |path, data, _| {
        let dest = root.join(path);
        if let Some(dir) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(io_err(format!("creating {}", dest.display())))?;
        io::copy(data, &mut out).map_err(|e| invalid(format!("{path} is cut short: {e}")))?;
        out.sync_all()
            .map_err(io_err(format!("syncing {}", dest.display())))?;
        Ok(())
    })?;
    for dir in ["keys", "state", "vaults"] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(dir))
            .map_err(io_err(format!("creating {dir}")))?;
    }
    if !root.join("keys/root.key").is_file() || !root.join("keys/data.key").is_file() {
        return Err(invalid("the archive holds no node keys"));
    }
    let root = staging.keep();
    if target.exists() {
        fs::remove_dir(target).map_err(io_err(format!("replacing {}", target.display())))?;
    }
    if let Err(e) = fs::rename(&root, target) {
        let _ = fs::remove_dir_all(&root);
        return Err(BackupError::Io(
            e,
            format!("moving the node into {}", target.display()),
        ));
    }
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", parent.display())))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_are_plain_and_expected() {
        for ok in [
            "keys/root.key",
            "keys/data.key",
            "state/data.mdb",
            "vaults/abc.git/HEAD",
            "vaults/abc.git/objects/ab/cdef",
            "vaults/abc.git/objects/bundles/x.knb2",
        ] {
            assert!(member_path_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "keys/../../x",
            "keys/other",
            "state/lock.mdb",
            "vaults/abc/HEAD",
            "vaults/abc.git/./x",
            "agent.sock",
            "vaults/abc.git/a b",
            "vaults/abc.git/x\u{1b}",
        ] {
            assert!(!member_path_ok(bad), "{bad:?}");
        }
    }
}

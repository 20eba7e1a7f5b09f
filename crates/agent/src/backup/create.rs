//! Making an archive: of a running node (through the vault store's pause, see
//! `keynode_vaults::VaultStore::backup`), or of a stopped one under its lock.

use std::fs;
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use keynode_core::Keypair;
use keynode_core::keystore::{self, KeystoreError};
use keynode_vaults::BackupFile;

use super::{ArchiveWriter, BackupError, Manifest, io_err};
use crate::paths::NodePaths;

type Writer = ArchiveWriter<BufWriter<fs::File>>;

/// An archive being written to a temporary file beside its destination; it
/// is renamed into place only when whole (a cut-short one is a
/// `.NAME.partial-…` file that no reader accepts; one stopped between its
/// sync and its rename is whole and verifies).
pub struct Build {
    writer: Arc<Mutex<Option<Writer>>>,
    archive: tempfile::NamedTempFile,
    out: PathBuf,
}

impl Build {
    /// Starts an archive of the node at `paths` to be written to `out` (which
    /// must not exist) and adds its key files.
    pub fn start(paths: &NodePaths, out: &Path) -> Result<Build, BackupError> {
        if out.exists() {
            return Err(BackupError::Exists(out.to_path_buf()));
        }
        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BackupError::Invalid(format!("{} names no file", out.display())))?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let archive = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempfile_in(dir)
            .map_err(io_err(format!("creating a file in {}", dir.display())))?;
        let file = archive
            .as_file()
            .try_clone()
            .map_err(io_err("opening the archive"))?;
        let mut writer = ArchiveWriter::new(BufWriter::with_capacity(1 << 20, file));
        for key in ["root.key", "data.key", "recovery"] {
            let path = paths.root.join("keys").join(key);
            let mut f = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && key == "recovery" => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(BackupError::NoNode(paths.root.clone()));
                }
                Err(e) => return Err(BackupError::Io(e, format!("reading {}", path.display()))),
            };
            let size = f.metadata().map_err(io_err("reading a key file"))?.len();
            writer
                .add(&format!("keys/{key}"), &mut f, size)
                .map_err(io_err("writing the archive"))?;
        }
        Ok(Build {
            writer: Arc::new(Mutex::new(Some(writer))),
            archive,
            out: out.to_path_buf(),
        })
    }

    /// Adds a vault repository file (as the store lists it) of `size` bytes.
    pub fn add_vault_file(
        &self,
        file: &BackupFile,
        data: &mut dyn io::Read,
        size: u64,
    ) -> io::Result<()> {
        add_vault_file(&self.writer, file, data, size)
    }

    /// Where the vault store sends its files.
    pub fn sink(&self) -> keynode_vaults::BackupSink {
        let writer = self.writer.clone();
        Box::new(move |file, data, size| add_vault_file(&writer, file, data, size))
    }

    /// Adds the state (an LMDB data file), the signed manifest, syncs and
    /// renames the archive into place.
    pub fn finish(
        self,
        state: &mut fs::File,
        key: &Keypair,
        created_ms: u64,
    ) -> Result<Manifest, BackupError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| BackupError::Invalid("the archive was finished twice".into()))?;
        state.rewind().map_err(io_err("reading the state copy"))?;
        let size = state
            .metadata()
            .map_err(io_err("reading the state copy"))?
            .len();
        writer
            .add("state/data.mdb", state, size)
            .map_err(io_err("writing the archive"))?;
        let (mut out, manifest) = writer
            .finish(key, created_ms)
            .map_err(io_err("writing the archive"))?;
        out.flush().map_err(io_err("writing the archive"))?;
        out.get_ref()
            .sync_all()
            .map_err(io_err("syncing the archive"))?;
        self.archive
            .persist_noclobber(&self.out)
            .map_err(|e| BackupError::Io(e.error, format!("placing {}", self.out.display())))?;
        if let Some(dir) = self.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(manifest)
    }
}

fn add_vault_file(
    writer: &Mutex<Option<Writer>>,
    file: &BackupFile,
    f: &mut dyn io::Read,
    size: u64,
) -> io::Result<()> {
    let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
    let writer = writer
        .as_mut()
        .ok_or_else(|| io::Error::other("the archive is finished"))?;
    writer.add(&format!("vaults/{}", file.name), f, size)
}

/// A temporary file beside `out` for the copy of the state.
pub fn state_copy(out: &Path) -> Result<tempfile::NamedTempFile, BackupError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(".keynode-state-")
        .tempfile_in(dir)
        .map_err(io_err(format!("creating a file in {}", dir.display())))
}

/// Backs up the stopped node at `paths` into `out`, under the agent lock (an
/// agent running or starting is [`BackupError::Locked`]; ask it instead). The
/// password opens the root key, which signs the manifest. Blocking.
pub fn create_offline(
    paths: &NodePaths,
    password: &[u8],
    out: &Path,
    now_ms: u64,
) -> Result<Manifest, BackupError> {
    if !paths.root_key().exists() {
        return Err(BackupError::NoNode(paths.root.clone()));
    }
    let _lock = crate::status::AgentLock::acquire(&paths.lock())?;
    let key = match keystore::read_key_file(&paths.root_key(), password) {
        Ok(k) => k,
        Err(KeystoreError::WrongPassword) => {
            return Err(BackupError::WrongPassword(paths.root.clone()));
        }
        Err(e) => return Err(BackupError::Invalid(format!("the root key: {e}"))),
    };
    let build = Build::start(paths, out)?;
    let files =
        keynode_vaults::backup_files(&paths.vaults()).map_err(io_err("listing the vaults"))?;
    for file in &files {
        let mut f = fs::File::open(&file.path).map_err(io_err(format!("reading {}", file.name)))?;
        let size = f
            .metadata()
            .map_err(io_err(format!("reading {}", file.name)))?
            .len();
        build
            .add_vault_file(file, &mut f, size)
            .map_err(io_err("writing the archive"))?;
    }
    let state = paths.state().join("data.mdb");
    let mut state =
        fs::File::open(&state).map_err(io_err(format!("reading {}", state.display())))?;
    build.finish(&mut state, &key, now_ms)
}

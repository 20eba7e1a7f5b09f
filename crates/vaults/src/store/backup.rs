//! A consistent copy of the store while it keeps serving.
//!
//! [`VaultStore::backup`] pauses mutations for as long as it takes to copy the
//! node's state (the caller's `during`, e.g. a copy of LMDB's data file), to
//! list every repository's files and to read the few that change (refs,
//! `HEAD`, `config`: everything outside `objects/`); then mutations go on while
//! the listed files are handed to the caller one by one. Objects are written
//! once and never changed, so a listed object file still holds what it held at
//! the pause; what is written after the pause is not listed and not needed
//! (nothing the copied state or refs point to). Only deletions could take a
//! listed file away: while the files are being read, a vault deletion waits for
//! the backup, and a clone's pack consolidation is skipped (it runs again at a
//! later pull).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use super::{REPO_SUFFIX, VaultStore};
use crate::VaultError;

/// Directory, under a repository's `objects`, of object files being written.
const OBJECTS_TMP: &str = "tmp";

/// One file a backup copies: where it is, and its path in the backup (under
/// the store's directory, `/`-separated).
#[derive(Debug, Clone)]
pub struct BackupFile {
    /// Relative to the store's directory, e.g. `<id>.git/objects/ab/cd…`.
    pub name: String,
    /// Where it is now.
    pub path: PathBuf,
}

impl BackupFile {
    /// Whether the file can change after it was written (a ref, `HEAD`,
    /// `config`…), so a backup reads it during the pause.
    fn mutable(&self) -> bool {
        !self.name.contains("/objects/")
    }
}

impl VaultStore {
    /// Runs `during` with every vault mutation paused (those in progress
    /// finish first), lists the files of every repository as they are then,
    /// and hands each to `sink` with mutations running again (deletions wait,
    /// see the module). A listed file that cannot be opened fails the backup.
    pub fn backup<R>(
        &self,
        during: impl FnOnce() -> io::Result<R>,
        sink: &mut dyn FnMut(&BackupFile, &mut dyn io::Read, u64) -> io::Result<()>,
    ) -> Result<R, VaultError> {
        let (result, files, read, _hold) = {
            let _paused = self.quiesce.write().unwrap_or_else(PoisonError::into_inner);
            // Taken before the listing: a merge of bundles between the listing
            // and the copy would delete listed files.
            let hold = self
                .deletions
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let result = during()?;
            let files = backup_files(&self.dir)?;
            let mut read = std::collections::HashMap::new();
            for (i, file) in files.iter().enumerate() {
                if file.mutable() {
                    read.insert(i, fs::read(&file.path)?);
                }
            }
            (result, files, read, hold)
        };
        for (i, file) in files.iter().enumerate() {
            match read.get(&i) {
                Some(bytes) => sink(file, &mut &bytes[..], bytes.len() as u64)?,
                None => {
                    let f = fs::File::open(&file.path)?;
                    let size = f.metadata()?.len();
                    // A journal grows after the pause (records no copied
                    // ref needs); what it held then is within `size`.
                    sink(file, &mut io::Read::take(f, size), size)?;
                }
            }
        }
        Ok(result)
    }
}

/// Every file of every repository under the store directory `dir` (by its
/// directory name), sorted: what a backup copies. Skips unfinished object
/// writes and the leftovers of interrupted operations. Only a consistent
/// view while nothing writes (a stopped node, or under [`VaultStore::backup`]'s
/// pause).
pub fn backup_files(dir: &Path) -> io::Result<Vec<BackupFile>> {
    let mut out = Vec::new();
    let mut repos: Vec<String> = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(REPO_SUFFIX) && entry.file_type()?.is_dir() {
            repos.push(name);
        }
    }
    repos.sort();
    for repo in repos {
        walk(&dir.join(&repo), &repo, &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, name: &str, out: &mut Vec<BackupFile>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(child) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let child_name = format!("{name}/{child}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // Unfinished object writes are not part of the repository.
            if child == OBJECTS_TMP && name.ends_with("/objects") {
                continue;
            }
            walk(&entry.path(), &child_name, out)?;
        } else if kind.is_file() {
            out.push(BackupFile {
                name: child_name,
                path: entry.path(),
            });
        }
    }
    Ok(())
}

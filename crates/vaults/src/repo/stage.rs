//! Building a new tree from the head tree, op by op, without a working tree or an
//! index file.
//!
//! Only the directories an op touches are loaded (as libgit2 tree builders); at the
//! end, dirty directories are written bottom-up and untouched ones keep their tree
//! ids, so a commit costs O(depth × directory size), not O(vault size).

use std::collections::BTreeMap;

use git2::{ObjectType, Oid, Repository, TreeBuilder};
use keynode_core::SecretPath;

use crate::{DIR_MARKER, Op, PutPolicy, VaultError};

/// Git mode of a secret.
pub(super) const BLOB_MODE: i32 = 0o100_644;
/// Git mode of a directory.
pub(super) const TREE_MODE: i32 = 0o040_000;

/// What is at a path.
#[derive(Clone, Copy)]
enum Found {
    File { oid: Oid, mode: i32 },
    Dir,
}

/// Why a walk down the staged tree stopped; the string is the offending prefix.
enum Miss {
    Missing(String),
    NotDir(String),
    Git(git2::Error),
}

impl From<git2::Error> for Miss {
    fn from(e: git2::Error) -> Self {
        Miss::Git(e)
    }
}

impl Miss {
    /// Maps a miss to the error an op reports: `missing` for an absent
    /// directory, `not_dir` (given the prefix) for a secret in the way.
    fn into_error(
        self,
        missing: impl FnOnce(String) -> VaultError,
        not_dir: impl FnOnce(String) -> VaultError,
    ) -> VaultError {
        match self {
            Miss::Missing(prefix) => missing(prefix),
            Miss::NotDir(prefix) => not_dir(prefix),
            Miss::Git(e) => VaultError::Git(e),
        }
    }
}

/// One directory of the staged tree.
struct Dir<'r> {
    /// The directory's entries; an entry whose name is in `children` is stale
    /// until [`Dir::write`].
    builder: TreeBuilder<'r>,
    /// Subdirectories loaded (or created) during this commit; authoritative.
    children: BTreeMap<String, Dir<'r>>,
    /// The tree this directory was loaded from.
    original: Option<Oid>,
    /// Whether an op may have changed this directory or one below it.
    dirty: bool,
}

impl<'r> Dir<'r> {
    fn load(repo: &'r Repository, tree: Oid) -> Result<Self, git2::Error> {
        let tree = repo.find_tree(tree)?;
        Ok(Dir {
            builder: repo.treebuilder(Some(&tree))?,
            children: BTreeMap::new(),
            original: Some(tree.id()),
            dirty: false,
        })
    }

    fn empty(repo: &'r Repository) -> Result<Self, git2::Error> {
        Ok(Dir {
            builder: repo.treebuilder(None)?,
            children: BTreeMap::new(),
            original: None,
            dirty: true,
        })
    }

    /// What is called `name` in this directory.
    fn found(&self, name: &str) -> Result<Option<Found>, git2::Error> {
        if self.children.contains_key(name) {
            return Ok(Some(Found::Dir));
        }
        Ok(self.builder.get(name)?.map(|e| match e.kind() {
            Some(ObjectType::Tree) => Found::Dir,
            _ => Found::File {
                oid: e.id(),
                mode: e.filemode(),
            },
        }))
    }

    /// Whether the directory has an entry other than the marker.
    fn has_visible_entries(&self) -> Result<bool, git2::Error> {
        let marker = usize::from(self.builder.get(DIR_MARKER)?.is_some());
        Ok(self.builder.len() > marker || !self.children.is_empty())
    }

    /// Drops `name` from this directory.
    fn remove(&mut self, name: &str) -> Result<(), git2::Error> {
        self.children.remove(name);
        if self.builder.get(name)?.is_some() {
            self.builder.remove(name)?;
        }
        Ok(())
    }

    /// Sets `name` to an object, replacing whatever was there.
    fn insert(&mut self, name: &str, oid: Oid, mode: i32) -> Result<(), git2::Error> {
        self.children.remove(name);
        self.builder.insert(name, oid, mode)?;
        Ok(())
    }

    /// Walks to the directory `path[at..]` below this one. `create` makes missing
    /// directories; `mutate` marks the walked directories dirty.
    fn descend<'a>(
        &'a mut self,
        repo: &'r Repository,
        path: &[&str],
        at: usize,
        create: bool,
        mutate: bool,
    ) -> Result<&'a mut Dir<'r>, Miss> {
        if mutate {
            self.dirty = true;
        }
        let Some(&name) = path.get(at) else {
            return Ok(self);
        };
        let prefix = || path[..=at].join("/");
        if !self.children.contains_key(name) {
            let child = match self.builder.get(name)? {
                Some(e) if e.kind() == Some(ObjectType::Tree) => Dir::load(repo, e.id())?,
                Some(_) => return Err(Miss::NotDir(prefix())),
                None if create => Dir::empty(repo)?,
                None => return Err(Miss::Missing(prefix())),
            };
            self.children.insert(name.to_owned(), child);
        }
        match self.children.get_mut(name) {
            Some(child) => child.descend(repo, path, at + 1, create, mutate),
            None => Err(Miss::Missing(prefix())),
        }
    }

    /// Writes dirty directories bottom-up; `None` if this directory is empty.
    fn write(&mut self) -> Result<Option<Oid>, git2::Error> {
        if !self.dirty {
            return Ok(self.original);
        }
        let Dir {
            builder, children, ..
        } = self;
        for (name, child) in children.iter_mut() {
            match child.write()? {
                Some(oid) => {
                    builder.insert(name.as_str(), oid, TREE_MODE)?;
                }
                None => {
                    if builder.get(name.as_str())?.is_some() {
                        builder.remove(name.as_str())?;
                    }
                }
            }
        }
        if builder.is_empty() {
            return Ok(None);
        }
        builder.write().map(Some)
    }
}

/// A tree being rebuilt from a base tree by a list of ops.
pub(super) struct Stage<'r> {
    repo: &'r Repository,
    root: Dir<'r>,
    empty_blob: Option<Oid>,
}

/// Splits a path into its parent segments and its last segment.
fn split(path: &SecretPath) -> (Vec<&str>, &str) {
    let mut segs: Vec<&str> = path.segments().collect();
    let name = segs.pop().unwrap_or_default();
    (segs, name)
}

/// Refuses paths that use the directory marker's name.
pub(super) fn reserved(path: &SecretPath) -> Result<(), VaultError> {
    if path.segments().any(|s| s == DIR_MARKER) {
        return Err(VaultError::Reserved(path.to_string()));
    }
    Ok(())
}

impl<'r> Stage<'r> {
    /// Starts from `base`.
    pub(super) fn new(repo: &'r Repository, base: Oid) -> Result<Self, git2::Error> {
        Ok(Stage {
            repo,
            root: Dir::load(repo, base)?,
            empty_blob: None,
        })
    }

    /// Applies one op; returns its line for the commit message, or `None` if it
    /// changed nothing.
    pub(super) fn apply(&mut self, op: Op) -> Result<Option<String>, VaultError> {
        match op {
            Op::Put { path, blob, policy } => self.put(&path, Oid::from_bytes(&blob.0)?, policy),
            Op::Mkdir { path, parents } => self.mkdir(&path, parents),
            Op::Remove { path, recursive } => self.remove(&path, recursive),
            Op::Rename { from, to } => self.rename(&from, &to),
        }
    }

    /// Writes the staged tree and returns its id.
    pub(super) fn write(mut self) -> Result<Oid, git2::Error> {
        match self.root.write()? {
            Some(oid) => Ok(oid),
            None => self.repo.treebuilder(None)?.write(),
        }
    }

    fn put(
        &mut self,
        path: &SecretPath,
        blob: Oid,
        policy: PutPolicy,
    ) -> Result<Option<String>, VaultError> {
        reserved(path)?;
        match self.repo.odb()?.read_header(blob) {
            Ok((_, ObjectType::Blob)) => {}
            _ => return Err(VaultError::BlobNotFound(blob.to_string())),
        }
        let (parents, name) = split(path);
        let dir = self
            .root
            .descend(self.repo, &parents, 0, true, true)
            .map_err(|m| m.into_error(VaultError::ParentNotFound, VaultError::NotADirectory))?;
        let verb = match dir.found(name)? {
            Some(Found::Dir) => return Err(VaultError::IsADirectory(path.to_string())),
            Some(Found::File { .. }) if policy == PutPolicy::CreateNew => {
                return Err(VaultError::SecretExists(path.to_string()));
            }
            Some(Found::File { oid, .. }) if oid == blob => return Ok(None),
            Some(Found::File { .. }) => "update",
            None => "create",
        };
        dir.insert(name, blob, BLOB_MODE)?;
        Ok(Some(format!("{verb} secret {path}")))
    }

    fn mkdir(&mut self, path: &SecretPath, parents: bool) -> Result<Option<String>, VaultError> {
        reserved(path)?;
        let empty_blob = match self.empty_blob {
            Some(oid) => oid,
            None => *self.empty_blob.insert(self.repo.blob(b"")?),
        };
        let (dirs, name) = split(path);
        let text = path.to_string();
        let dir = self
            .root
            .descend(self.repo, &dirs, 0, parents, true)
            .map_err(|m| {
                m.into_error(
                    |_| VaultError::ParentNotFound(text),
                    VaultError::NotADirectory,
                )
            })?;
        match dir.found(name)? {
            Some(Found::Dir) if parents => return Ok(None),
            Some(_) => return Err(VaultError::SecretExists(path.to_string())),
            None => {}
        }
        let mut new = Dir::empty(self.repo)?;
        new.builder.insert(DIR_MARKER, empty_blob, BLOB_MODE)?;
        dir.children.insert(name.to_owned(), new);
        Ok(Some(format!("create directory {path}")))
    }

    fn remove(&mut self, path: &SecretPath, recursive: bool) -> Result<Option<String>, VaultError> {
        reserved(path)?;
        let not_found = || VaultError::SecretNotFound(path.to_string());
        let (dirs, name) = split(path);
        let dir = self
            .root
            .descend(self.repo, &dirs, 0, false, true)
            .map_err(|m| m.into_error(|_| not_found(), |_| not_found()))?;
        let line = match dir.found(name)?.ok_or_else(not_found)? {
            Found::File { .. } => format!("remove secret {path}"),
            Found::Dir => {
                if !recursive {
                    let child = dir
                        .descend(self.repo, &[name], 0, false, false)
                        .map_err(|m| m.into_error(|_| not_found(), |_| not_found()))?;
                    if child.has_visible_entries()? {
                        return Err(VaultError::DirectoryNotEmpty(path.to_string()));
                    }
                }
                format!("remove directory {path}")
            }
        };
        dir.remove(name)?;
        Ok(Some(line))
    }

    fn rename(&mut self, from: &SecretPath, to: &SecretPath) -> Result<Option<String>, VaultError> {
        reserved(from)?;
        reserved(to)?;
        let not_found = || VaultError::SecretNotFound(from.to_string());
        let (from_dirs, from_name) = split(from);
        let (to_dirs, to_name) = split(to);

        let found = self
            .root
            .descend(self.repo, &from_dirs, 0, false, false)
            .map_err(|m| m.into_error(|_| not_found(), |_| not_found()))?
            .found(from_name)?
            .ok_or_else(not_found)?;
        if from == to {
            return Err(VaultError::SecretExists(to.to_string()));
        }
        if to.starts_with(from) {
            return Err(VaultError::MoveIntoItself(from.to_string()));
        }
        let to_text = to.to_string();
        let target = self
            .root
            .descend(self.repo, &to_dirs, 0, false, false)
            .map_err(|m| {
                m.into_error(
                    |_| VaultError::ParentNotFound(to_text),
                    VaultError::NotADirectory,
                )
            })?;
        if target.found(to_name)?.is_some() {
            return Err(VaultError::SecretExists(to.to_string()));
        }

        let source = self
            .root
            .descend(self.repo, &from_dirs, 0, false, true)
            .map_err(|m| m.into_error(|_| not_found(), |_| not_found()))?;
        let (moved, mode, what) = match found {
            Found::File { oid, mode } => (Some(oid), mode, "secret"),
            Found::Dir => {
                let oid = match source.children.remove(from_name) {
                    Some(mut child) => child.write()?,
                    None => source.builder.get(from_name)?.map(|e| e.id()),
                };
                (oid, TREE_MODE, "directory")
            }
        };
        source.remove(from_name)?;

        let target = self
            .root
            .descend(self.repo, &to_dirs, 0, false, true)
            .map_err(|m| m.into_error(|_| not_found(), VaultError::NotADirectory))?;
        if let Some(oid) = moved {
            target.insert(to_name, oid, mode)?;
        }
        Ok(Some(format!("rename {what} {from} -> {to}")))
    }
}

//! The git seam: every libgit2 call of this crate lives in this module.
//!
//! A vault is a bare repository whose one branch, `refs/heads/main`, carries a
//! linear history. [`Repo`] offers the narrow interface the store needs: write a
//! blob, read a blob, the head, a tree update, a commit (moving the branch with a
//! compare-and-swap), a history walk and tree listings, and (in `transfer`)
//! packs in and out, fast-forwards and fork copies. Nothing else in the crate
//! sees a git object.
//!
//! Encryption at rest: with [`Objects::Encrypted`] (what a node uses) the
//! repository's object database is replaced by encrypted object files
//! (`objects.rs`, plugged into libgit2 by `backend.rs`); blobs are streamed into
//! them directly, secrets are streamed out of them, and received packs are
//! parsed into them (`pack.rs`), so neither content, names nor object ids reach
//! the disk in the clear. The repository directory keeps only git's own files
//! (`HEAD`, `config`, refs holding commit ids). [`Objects::Git`] keeps
//! libgit2's plain object database; it exists to measure what encryption costs.
//!
//! Durability: objects are written before the ref that makes them reachable, and
//! the branch moves last (its 41 bytes overwritten in place, `branch.rs`; other
//! refs through libgit2's lock file and rename), so a process that dies at any
//! instant leaves the old or the new version. Refs are not flushed, as with
//! libgit2's default (its process-wide `git2::opts::enable_fsync_gitdir`
//! switch, which the embedding application owns).

mod backend;
mod branch;
mod bundle;
mod journal;
mod objects;
mod pack;
mod pack_out;
mod stage;
mod transfer;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use git2::{Commit, ErrorCode, ObjectType, Oid, Repository, Signature, Time, TreeEntry};
use keynode_core::SecretPath;

use crate::revision::Revision;
use crate::{
    BlobId, CommitInfo, CommitOutcome, DIR_MARKER, Entry, EntryKind, Op, READ_CHUNK,
    STAT_HISTORY_LIMIT, SecretStat, VaultError,
};

pub(crate) use git2::Oid as CommitId;
use objects::ObjectFiles;
pub(crate) use objects::ObjectKeys;
use stage::{Stage, TREE_MODE, reserved};
pub(crate) use transfer::parse_oid;

/// Where a repository's objects live.
#[derive(Clone)]
pub(crate) enum Objects {
    /// Encrypted object files under the node's data key.
    Encrypted(Arc<ObjectKeys>),
    /// libgit2's own (plain) object database: only for measuring.
    Git,
}

/// The vault's one branch.
pub(crate) const BRANCH: &str = "refs/heads/main";

/// Hex digits of a commit id shown in messages.
const SHORT_ID: usize = 7;

/// Who makes a commit, and when.
pub(crate) struct Author {
    /// Name: the owner's NodeId text.
    pub(crate) name: String,
    /// Email: `<node id>@keynode`.
    pub(crate) email: String,
    /// Seconds since the Unix epoch.
    pub(crate) time_s: i64,
}

/// One vault's repository, opened for one call (a `Repository` is `Send`, not
/// `Sync`).
pub(crate) struct Repo {
    git: Repository,
    /// The encrypted object files, `None` with [`Objects::Git`].
    files: Option<ObjectFiles>,
}

impl Repo {
    /// Creates a bare repository at `path` with HEAD on `main` and one commit of
    /// the empty tree.
    pub(crate) fn init(
        path: &Path,
        objects: &Objects,
        author: &Author,
        message: &str,
    ) -> Result<(), VaultError> {
        let git = Repository::init_opts(path, &transfer::init_options())?;
        transfer::tune(&git)?;
        attach(&git, objects)?;
        let tree = git.find_tree(git.treebuilder(None)?.write()?)?;
        let sig = signature(author)?;
        git.commit(Some(BRANCH), &sig, &sig, message, &tree, &[])?;
        Ok(())
    }

    /// Opens the bare repository at `path`.
    pub(crate) fn open(path: &Path, objects: &Objects) -> Result<Repo, VaultError> {
        let git = Repository::open_bare(path)?;
        let files = attach(&git, objects)?;
        Ok(Repo { git, files })
    }

    /// Streams `data` into a new blob, holding at most one copy buffer in memory.
    ///
    /// Content that fits in one buffer is written as one object; larger content
    /// goes through libgit2's blob stream (a temporary file, then the object).
    pub(crate) fn write_blob(&self, data: &mut dyn Read) -> Result<BlobId, VaultError> {
        if let Some(files) = &self.files {
            let oid = files.write_stream(ObjectType::Blob, data)?;
            return Ok(blob_id(oid));
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let head = fill(data, &mut buf)?;
        let oid = if head < buf.len() {
            self.git.blob(&buf[..head])?
        } else {
            let mut writer = self.git.blob_writer(None)?;
            writer.write_all(&buf)?;
            loop {
                let n = fill(data, &mut buf)?;
                if n == 0 {
                    break;
                }
                writer.write_all(&buf[..n])?;
            }
            writer.commit()?
        };
        Ok(blob_id(oid))
    }

    /// Stores many blobs in one go (for the encrypted store: the small ones in
    /// one bundle); their ids in order.
    pub(crate) fn write_blobs(&self, blobs: &[Vec<u8>]) -> Result<Vec<BlobId>, VaultError> {
        let oids = match &self.files {
            Some(files) => files.write_blobs(blobs)?,
            None => blobs
                .iter()
                .map(|b| self.git.blob(b))
                .collect::<Result<_, _>>()?,
        };
        Ok(oids.into_iter().map(blob_id).collect())
    }

    /// The head commit. The branch is read without a lock while a writer may
    /// be moving it in place (`branch.rs`): an id that names no commit is read
    /// again, and is an error only if it stays.
    fn head(&self) -> Result<Commit<'_>, VaultError> {
        let mut id = branch::read(&self.git)?;
        loop {
            match self.git.find_commit(id) {
                Ok(commit) => return Ok(commit),
                Err(e) if e.code() == ErrorCode::NotFound => {
                    let again = branch::read(&self.git)?;
                    if again == id {
                        return Err(e.into());
                    }
                    id = again;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The commit `rev` names (the head if `None`); it must be in the head's
    /// history.
    fn resolve(&self, rev: Option<&str>) -> Result<Commit<'_>, VaultError> {
        let head = self.head()?;
        let Some(text) = rev else {
            return Ok(head);
        };
        let bad = || VaultError::BadRevision(text.to_owned());
        match Revision::parse(text).ok_or_else(bad)? {
            Revision::Head { back } => {
                let mut commit = head;
                for _ in 0..back {
                    commit = commit.parent(0).map_err(|_| bad())?;
                }
                Ok(commit)
            }
            Revision::Id(hex) => {
                // Object ids cannot be looked up by prefix in the encrypted
                // store, and only commits of the head's history count anyway:
                // walk it.
                let mut walk = self.git.revwalk()?;
                walk.push(head.id())?;
                let mut found = None;
                for oid in walk {
                    let oid = oid?;
                    if oid.to_string().starts_with(&hex) {
                        if found.is_some() {
                            return Err(bad());
                        }
                        found = Some(oid);
                    }
                }
                let oid = found.ok_or_else(bad)?;
                Ok(self.git.find_commit(oid)?)
            }
        }
    }

    /// Applies `ops` to the head tree and commits the result. The caller holds the
    /// vault's writer lock.
    pub(crate) fn commit_ops(
        &self,
        ops: Vec<Op>,
        author: &Author,
    ) -> Result<CommitOutcome, VaultError> {
        let head = self.head()?;
        let mut stage = Stage::new(&self.git, head.tree_id())?;
        let mut lines = Vec::new();
        for op in ops {
            lines.extend(stage.apply(op)?);
        }
        let tree = stage.write()?;
        if tree == head.tree_id() {
            return Ok(CommitOutcome::Unchanged);
        }
        self.advance(&head, tree, &lines.join("\n"), author)
    }

    /// Appends a commit whose tree is `rev`'s tree. The caller holds the lock.
    pub(crate) fn restore(&self, rev: &str, author: &Author) -> Result<CommitOutcome, VaultError> {
        let head = self.head()?;
        let target = self.resolve(Some(rev))?;
        if target.tree_id() == head.tree_id() {
            return Ok(CommitOutcome::Unchanged);
        }
        let short = short_id(target.id());
        let message = format!("restore to {short}");
        self.advance(&head, target.tree_id(), &message, author)
    }

    /// Writes a commit of `tree` on top of `head` and moves the branch to it,
    /// only if the branch still points at `head`.
    fn advance(
        &self,
        head: &Commit<'_>,
        tree: Oid,
        message: &str,
        author: &Author,
    ) -> Result<CommitOutcome, VaultError> {
        let tree = self.git.find_tree(tree)?;
        let sig = signature(author)?;
        let oid = self.git.commit(None, &sig, &sig, message, &tree, &[head])?;
        branch::swap(&self.git, head.id(), oid, "commit")?;
        Ok(CommitOutcome::Committed(info(&self.git.find_commit(oid)?)))
    }

    /// History from `from` (default the head), newest first, along first parents.
    pub(crate) fn log(
        &self,
        depth: Option<usize>,
        from: Option<&str>,
    ) -> Result<Vec<CommitInfo>, VaultError> {
        let mut out = Vec::new();
        let mut next = Some(self.resolve(from)?);
        while let Some(commit) = next {
            if depth.is_some_and(|d| out.len() >= d) {
                break;
            }
            out.push(info(&commit));
            next = commit.parent(0).ok();
        }
        Ok(out)
    }

    /// The tree entry at `path` in `commit`.
    fn entry(commit: &Commit<'_>, path: &SecretPath) -> Result<TreeEntry<'static>, VaultError> {
        reserved(path)?;
        commit
            .tree()?
            .get_path(Path::new(path.as_str()))
            .map_err(|e| match e.code() {
                ErrorCode::NotFound => VaultError::SecretNotFound(path.to_string()),
                _ => e.into(),
            })
    }

    /// Streams the secret at `path` to `sink` in chunks of at most
    /// [`READ_CHUNK`] bytes; returns its size.
    pub(crate) fn read_secret(
        &self,
        path: &SecretPath,
        at: Option<&str>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, VaultError> {
        let commit = self.resolve(at)?;
        let entry = Self::entry(&commit, path)?;
        match entry.kind() {
            Some(ObjectType::Blob) => {}
            Some(ObjectType::Tree) => return Err(VaultError::IsADirectory(path.to_string())),
            _ => return Err(VaultError::SecretNotFound(path.to_string())),
        }
        if let Some(files) = &self.files {
            let (size, mut reader) = files
                .reader(entry.id())?
                .ok_or_else(|| VaultError::BlobNotFound(entry.id().to_string()))?;
            return stream(&mut reader, size, entry.id(), sink);
        }
        let odb = self.git.odb()?;
        // Loose objects stream; packed ones (after a pull) are read whole.
        let Ok((mut reader, size, _)) = odb.reader(entry.id()) else {
            let blob = self.git.find_blob(entry.id())?;
            for chunk in blob.content().chunks(READ_CHUNK) {
                sink(chunk)?;
            }
            return Ok(blob.size() as u64);
        };
        stream(&mut reader, size as u64, entry.id(), sink)
    }

    /// One directory level at `dir` (the root if `None`), sorted by name, marker
    /// hidden.
    pub(crate) fn list(
        &self,
        dir: Option<&SecretPath>,
        at: Option<&str>,
    ) -> Result<Vec<Entry>, VaultError> {
        let commit = self.resolve(at)?;
        let tree = match dir {
            None => commit.tree()?,
            Some(path) => {
                let entry = Self::entry(&commit, path)?;
                if entry.kind() != Some(ObjectType::Tree) {
                    return Err(VaultError::NotADirectory(path.to_string()));
                }
                self.git.find_tree(entry.id())?
            }
        };
        let odb = self.git.odb()?;
        let mut out = Vec::with_capacity(tree.len());
        for e in tree.iter() {
            let name = String::from_utf8_lossy(e.name_bytes());
            if name == DIR_MARKER {
                continue;
            }
            let (kind, size) = match e.kind() {
                Some(ObjectType::Blob) => {
                    (EntryKind::File, Some(odb.read_header(e.id())?.0 as u64))
                }
                Some(ObjectType::Tree) => (EntryKind::Dir, None),
                _ => continue,
            };
            out.push(Entry {
                name: name.into_owned(),
                kind,
                size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Details of the secret or directory at `path`.
    pub(crate) fn stat(
        &self,
        path: &SecretPath,
        at: Option<&str>,
    ) -> Result<SecretStat, VaultError> {
        let commit = self.resolve(at)?;
        let entry = Self::entry(&commit, path)?;
        let (kind, size) = match entry.kind() {
            Some(ObjectType::Blob) => (
                EntryKind::File,
                self.git.odb()?.read_header(entry.id())?.0 as u64,
            ),
            Some(ObjectType::Tree) => {
                let tree = self.git.find_tree(entry.id())?;
                let hidden = usize::from(tree.get_name(DIR_MARKER).is_some());
                (EntryKind::Dir, (tree.len() - hidden) as u64)
            }
            _ => return Err(VaultError::SecretNotFound(path.to_string())),
        };
        let mode = u32::try_from(entry.filemode()).unwrap_or(TREE_MODE as u32);
        Ok(SecretStat {
            path: path.clone(),
            kind,
            size,
            blob: entry.id().to_string(),
            mode,
            last_commit: self.last_change(&commit, path, entry.id())?,
        })
    }

    /// The newest commit at or before `start` that set `path` to `oid`, looking
    /// back at most [`STAT_HISTORY_LIMIT`] commits.
    fn last_change(
        &self,
        start: &Commit<'_>,
        path: &SecretPath,
        oid: Oid,
    ) -> Result<Option<CommitInfo>, VaultError> {
        let path = Path::new(path.as_str());
        let mut current = start.clone();
        for _ in 0..STAT_HISTORY_LIMIT {
            let Ok(parent) = current.parent(0) else {
                return Ok(Some(info(&current)));
            };
            let same = parent.tree()?.get_path(path).is_ok_and(|e| e.id() == oid);
            if !same {
                return Ok(Some(info(&current)));
            }
            current = parent;
        }
        Ok(None)
    }
}

/// Removes what interrupted writes leave in the repository at `path`: object
/// files never renamed into place, bundles whose index was never written, and
/// libgit2's lock files (`refs/heads/main.lock` from a process killed while it
/// moved the branch, which would refuse every later commit). Only while
/// nothing writes to the repository (the store calls it at open, and one
/// agent holds a node's files).
pub(crate) fn sweep_objects(path: &Path) -> std::io::Result<usize> {
    Ok(objects::sweep(&path.join("objects"))? + sweep_locks(path)?)
}

/// Removes `*.lock` files in the repository's top directory and under `refs`.
fn sweep_locks(path: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut dirs = vec![path.to_owned(), path.join("refs")];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if dir != path {
                    dirs.push(entry.path());
                }
            } else if entry.path().extension().is_some_and(|e| e == "lock") {
                tracing::info!(path = %entry.path().display(), "removing the lock file of an interrupted ref update");
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Rewrites the format 1 bundles of the repository at `path` in the current
/// format (see `bundle::v1`) and format 2 indexes in format 3 (see
/// `bundle::index`); returns how many bundles were rewritten. Only while
/// nothing writes to the repository, after [`sweep_objects`].
pub(crate) fn migrate_objects(path: &Path, objects: &Objects) -> Result<usize, VaultError> {
    match objects {
        Objects::Git => Ok(0),
        Objects::Encrypted(keys) => {
            let objects = path.join("objects");
            let v1 = bundle::v1::migrate(&objects, &keys.legacy_cipher(), &keys.cipher())?;
            Ok(v1 + bundle::index::migrate_v2(&objects, &keys.cipher())?)
        }
    }
}

/// Rewrites the repository's format 2 bundles in format 1; returns how many.
#[cfg(test)]
pub(crate) fn downgrade_bundles_for_tests(path: &Path, keys: &ObjectKeys) -> usize {
    bundle::v1::downgrade(&path.join("objects"), &keys.cipher(), &keys.legacy_cipher())
}

/// Rewrites the repository's format 3 bundle indexes in format 2; returns how
/// many.
#[cfg(test)]
pub(crate) fn downgrade_indexes_for_tests(path: &Path, keys: &ObjectKeys) -> usize {
    bundle::index::downgrade(&path.join("objects"), &keys.cipher())
}

/// Gives `git` the object database `objects` asks for; the encrypted files if so.
fn attach(git: &Repository, objects: &Objects) -> Result<Option<ObjectFiles>, VaultError> {
    match objects {
        Objects::Git => Ok(None),
        Objects::Encrypted(keys) => {
            let files = ObjectFiles::new(git.path().join("objects"), keys.clone());
            backend::install(git, files.clone())?;
            Ok(Some(files))
        }
    }
}

/// Copies `reader` (a blob of `size` bytes) to `sink` in chunks of at most
/// [`READ_CHUNK`] bytes.
fn stream(
    reader: &mut dyn Read,
    size: u64,
    oid: Oid,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, VaultError> {
    let mut buf = vec![0u8; READ_CHUNK.min(size.max(1) as usize)];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(VaultError::Corrupt(format!("object {oid}: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        sink(&buf[..n])?;
        total += n as u64;
    }
    if total != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("blob {oid} is truncated"),
        )
        .into());
    }
    Ok(total)
}

/// Reads from `data` until `buf` is full or the data ends; returns the count.
fn fill(data: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The store's name for a blob's git id.
fn blob_id(oid: Oid) -> BlobId {
    let mut id = [0u8; 20];
    id.copy_from_slice(oid.as_bytes());
    BlobId(id)
}

fn signature(author: &Author) -> Result<Signature<'static>, git2::Error> {
    Signature::new(&author.name, &author.email, &Time::new(author.time_s, 0))
}

fn short_id(oid: Oid) -> String {
    let mut text = oid.to_string();
    text.truncate(SHORT_ID);
    text
}

fn info(commit: &Commit<'_>) -> CommitInfo {
    let author = commit.author();
    CommitInfo {
        oid: commit.id().to_string(),
        author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        time_ms: u64::try_from(commit.time().seconds()).unwrap_or(0) * 1000,
        message: String::from_utf8_lossy(commit.message_bytes())
            .trim_end()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PutPolicy;

    fn author() -> Author {
        Author {
            name: "node".into(),
            email: "node@keynode".into(),
            time_s: 1,
        }
    }

    fn repo() -> (tempfile::TempDir, Repo) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("v.git");
        let objects = Objects::Encrypted(ObjectKeys::new(
            &keynode_core::datakey::DataKey::from_bytes([5; 32]),
        ));
        Repo::init(&path, &objects, &author(), "create vault v").unwrap();
        let repo = Repo::open(&path, &objects).unwrap();
        (tmp, repo)
    }

    fn put(repo: &Repo, path: &str, data: &[u8]) -> Op {
        Op::Put {
            path: SecretPath::new(path).unwrap(),
            blob: repo.write_blob(&mut &data[..]).unwrap(),
            policy: PutPolicy::Overwrite,
        }
    }

    #[test]
    fn a_new_repository_is_bare_on_main_with_one_empty_commit() {
        let (_tmp, repo) = repo();
        assert!(repo.git.is_bare());
        assert_eq!(
            repo.git
                .find_reference("HEAD")
                .unwrap()
                .symbolic_target()
                .unwrap(),
            Some(BRANCH)
        );
        let head = repo.head().unwrap();
        assert_eq!(head.parent_count(), 0);
        assert_eq!(head.tree().unwrap().len(), 0);
        assert_eq!(head.author().email().unwrap(), "node@keynode");
    }

    #[test]
    fn untouched_directories_keep_their_trees() {
        let (_tmp, repo) = repo();
        let ops = vec![put(&repo, "a/x", b"1"), put(&repo, "b/y", b"2")];
        repo.commit_ops(ops, &author()).unwrap();
        let before = repo
            .head()
            .unwrap()
            .tree()
            .unwrap()
            .get_name("b")
            .unwrap()
            .id();
        let op = put(&repo, "a/x", b"3");
        repo.commit_ops(vec![op], &author()).unwrap();
        let tree = repo.head().unwrap().tree().unwrap();
        assert_eq!(tree.get_name("b").unwrap().id(), before);
        assert_eq!(repo.head().unwrap().parent_count(), 1);
    }

    #[test]
    fn mkdir_writes_a_marker_and_emptied_directories_vanish() {
        let (_tmp, repo) = repo();
        let mkdir = Op::Mkdir {
            path: SecretPath::new("d").unwrap(),
            parents: false,
        };
        repo.commit_ops(vec![mkdir], &author()).unwrap();
        let tree = repo.head().unwrap().tree().unwrap();
        let d = repo
            .git
            .find_tree(tree.get_name("d").unwrap().id())
            .unwrap();
        assert_eq!(d.len(), 1);
        assert!(d.get_name(DIR_MARKER).is_some());

        let ops = vec![put(&repo, "e/f/g", b"1")];
        repo.commit_ops(ops, &author()).unwrap();
        let rm = Op::Remove {
            path: SecretPath::new("e/f/g").unwrap(),
            recursive: false,
        };
        repo.commit_ops(vec![rm], &author()).unwrap();
        let tree = repo.head().unwrap().tree().unwrap();
        assert!(tree.get_name("e").is_none());
        assert!(tree.get_name("d").is_some());
    }

    #[test]
    fn the_branch_moves_only_from_the_expected_head() {
        let (_tmp, repo) = repo();
        let head = repo.head().unwrap();
        let tree = head.tree_id();
        // Someone else moved the branch meanwhile: the compare-and-swap refuses.
        let sig = signature(&author()).unwrap();
        let tree_obj = repo.git.find_tree(tree).unwrap();
        let other = repo
            .git
            .commit(None, &sig, &sig, "other", &tree_obj, &[&head])
            .unwrap();
        repo.git
            .reference_matching(BRANCH, other, true, head.id(), "x")
            .unwrap();
        let err = repo.advance(&head, tree, "stale", &author()).unwrap_err();
        assert!(matches!(err, VaultError::Git(e) if e.code() == ErrorCode::Modified));
        assert_eq!(repo.head().unwrap().id(), other);
    }

    #[test]
    fn a_commit_moves_the_branch_in_place_and_libgit2_reads_the_same_id() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, repo) = repo();
        let path = repo.git.path().join(BRANCH);
        let inode = std::fs::metadata(&path).unwrap().ino();
        for i in 0..3u8 {
            let ops = vec![put(&repo, "a", &[i])];
            repo.commit_ops(ops, &author()).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "same file");
        let head = repo.head().unwrap();
        assert_eq!(
            repo.log(None, None).unwrap().len(),
            4,
            "three commits on the first"
        );
        assert_eq!(repo.git.refname_to_id(BRANCH).unwrap(), head.id());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            format!("{}\n", head.id()).into_bytes()
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["main"], "no lock file left");
    }

    #[test]
    fn a_packed_branch_is_read_and_moved_through_libgit2() {
        let (_tmp, repo) = repo();
        let id = repo.head().unwrap().id();
        let loose = repo.git.path().join(BRANCH);
        std::fs::remove_file(&loose).unwrap();
        std::fs::write(
            repo.git.path().join("packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted \n{id} {BRANCH}\n"),
        )
        .unwrap();
        assert_eq!(repo.head().unwrap().id(), id);
        repo.commit_ops(vec![put(&repo, "p", b"1")], &author())
            .unwrap();
        let head = repo.head().unwrap();
        assert_ne!(head.id(), id);
        assert_eq!(head.parent_id(0).unwrap(), id);
    }

    #[test]
    fn a_branch_naming_no_commit_is_an_error_and_moves_nothing() {
        let (_tmp, repo) = repo();
        let path = repo.git.path().join(BRANCH);
        let bogus = "ab".repeat(20);
        std::fs::write(&path, format!("{bogus}\n")).unwrap();
        let err = repo.head().unwrap_err();
        assert!(
            matches!(&err, VaultError::Git(e) if e.code() == ErrorCode::NotFound),
            "{err}"
        );
        assert!(
            repo.commit_ops(vec![put(&repo, "x", b"1")], &author())
                .is_err()
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            format!("{bogus}\n").into_bytes()
        );
    }
}

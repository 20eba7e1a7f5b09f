//! The git side of vault transfer: haves, packs out, packs in, fast-forward,
//! and copying a repository for a fork.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use git2::{ErrorCode, Indexer, ObjectType, Oid, Repository, RepositoryInitOptions};

use super::{BRANCH, Objects, Repo, attach, backend, branch, fill, pack};
use crate::transfer::{PACK_CHUNK, PACK_DELTA_CACHE, PACK_WINDOW_MEMORY, Step, fast_forward};
use crate::{PackStats, PullOutcome, READ_CHUNK, VaultError};

/// The last head received from the remote, kept to offer as a have.
pub(crate) const REMOTE_BRANCH: &str = "refs/remotes/origin/main";

/// Bytes of a pack header: `PACK`, version, object count.
const PACK_HEADER: usize = 12;
/// Bytes of a pack trailer (a SHA-1 of everything before it).
const PACK_TRAILER: usize = 20;

/// Parses a full commit id (40 hex digits), as the transfer messages carry them.
pub(crate) fn parse_oid(text: &str) -> Result<Oid, VaultError> {
    if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VaultError::BadRevision(text.to_owned()));
    }
    Oid::from_str(text).map_err(|_| VaultError::BadRevision(text.to_owned()))
}

/// Writes the pack builder's memory limits into the repository's config (see
/// [`PACK_WINDOW_MEMORY`] and [`PACK_DELTA_CACHE`]).
pub(super) fn tune(git: &Repository) -> Result<(), git2::Error> {
    let mut config = git.config()?;
    config.set_i64("pack.windowMemory", PACK_WINDOW_MEMORY)?;
    config.set_i64("pack.deltaCacheSize", PACK_DELTA_CACHE)?;
    Ok(())
}

/// A pack goes through libgit2's delta search only when at least one object
/// in this many is another version of a path already in it...
const DELTA_WORTH: usize = 4;
/// ...and those versions hold at least this many bytes. Below it the search
/// (up to ten delta attempts per object) costs the serving node more CPU
/// than the bytes it could save cost to send: a whole pack of a small vault's
/// few hundred commits is under 128 KiB more than a deltified one.
const DELTA_BYTES: u64 = 128 * 1024;

/// Whether a pack of `entries` (trees and blobs with their paths) is worth a
/// delta search: see [`DELTA_WORTH`] and [`DELTA_BYTES`]. Sizes come from
/// the objects' headers (nothing is decrypted).
fn worth_deltas(odb: &git2::Odb<'_>, entries: &[(Oid, String)]) -> Result<bool, git2::Error> {
    let mut paths = HashSet::new();
    let versions: Vec<Oid> = entries
        .iter()
        .filter(|(_, path)| !paths.insert(path.as_str()))
        .map(|(oid, _)| *oid)
        .collect();
    if versions.len() * DELTA_WORTH < entries.len() {
        return Ok(false);
    }
    let mut bytes = 0u64;
    for oid in versions {
        bytes += odb.read_header(oid)?.0 as u64;
        if bytes >= DELTA_BYTES {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a vault's repository is created: bare, `HEAD` on `main`, and without
/// git's template directory (`/usr/share/git-core/templates`: sample hooks,
/// `description`, `info/exclude`), which a vault never uses and which made
/// every clone create 17 more files, nor libgit2's built-in ones
/// (`description`, `hooks/README.sample`, `info/exclude`); nor does a vault
/// take files from a directory the system controls.
pub(super) fn init_options() -> RepositoryInitOptions {
    let mut opts = RepositoryInitOptions::new();
    opts.bare(true)
        .initial_head("main")
        .mkdir(true)
        .mkpath(false)
        // An empty template path: no template copied, and (unlike no
        // external template) none of libgit2's own files either, only its
        // directories.
        .template_path(Path::new(""));
    opts
}

/// Creates an empty bare repository (no commit, no branch) with HEAD on `main`.
fn init_empty(path: &Path) -> Result<Repository, VaultError> {
    let git = Repository::init_opts(path, &init_options())?;
    tune(&git)?;
    Ok(git)
}

/// Maps an indexer write error to `BadPack`, keeping libgit2's message.
fn bad_pack(e: io::Error) -> VaultError {
    let message = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<git2::Error>()) {
        Some(Ok(git)) => VaultError::BadPack(*git),
        _ => VaultError::BadPack(git2::Error::from_str(&message)),
    }
}

impl Repo {
    /// Creates the repository of a clone at `path`: no commits until a pack
    /// arrives.
    pub(crate) fn init_clone(path: &Path, objects: &Objects) -> Result<Repo, VaultError> {
        let git = init_empty(path)?;
        let files = attach(&git, objects)?;
        Ok(Repo { git, files })
    }

    /// The head commit id.
    pub(crate) fn head_id(&self) -> Result<Oid, VaultError> {
        Ok(self.head()?.id())
    }

    /// Whether the pack builder limits are in the repository's config.
    pub(crate) fn is_tuned(&self) -> Result<bool, VaultError> {
        let config = self.git.config()?;
        Ok(
            config.get_i64("pack.windowMemory").ok() == Some(PACK_WINDOW_MEMORY)
                && config.get_i64("pack.deltaCacheSize").ok() == Some(PACK_DELTA_CACHE),
        )
    }

    /// Writes the pack builder limits into the repository's config.
    pub(crate) fn tune(&self) -> Result<(), VaultError> {
        Ok(tune(&self.git)?)
    }

    /// The first parent of commit `oid`, `None` at a root.
    pub(crate) fn first_parent(&self, oid: Oid) -> Result<Option<Oid>, VaultError> {
        let commit = self.git.find_commit(oid)?;
        Ok(commit.parent_id(0).ok())
    }

    /// The remote's head as this clone's last pull recorded it.
    pub(crate) fn remote_head(&self) -> Option<Oid> {
        self.git.refname_to_id(REMOTE_BRANCH).ok()
    }

    /// Streams a pack of what `want` needs and the client (who has `haves`)
    /// lacks to `sink`, in chunks of at most [`PACK_CHUNK`] bytes.
    ///
    /// `want` must be the head or in its history ([`VaultError::NotServed`]).
    /// Haves unknown here are skipped. Every new tree and blob is inserted with
    /// its path, so delta search pairs versions of one file.
    pub(crate) fn send_pack(
        &self,
        want: Oid,
        haves: &[Oid],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<PackStats, VaultError> {
        let git = &self.git;
        let head = self.head_id()?;
        // An error (unknown object, not a commit) is "not served" too, so a
        // client cannot tell what exists outside the history it was shown.
        let served = want == head || git.graph_descendant_of(head, want).unwrap_or(false);
        if !served {
            return Err(VaultError::NotServed(want.to_string()));
        }

        let mut walk = git.revwalk()?;
        walk.push(want)?;
        for have in haves {
            // Unknown ids (and non-commits) cannot be hidden: the client has
            // something this vault never saw.
            if walk.hide(*have).is_err() {
                tracing::debug!(%have, "skipping a have this vault does not know");
            }
        }
        let commits = walk.collect::<Result<Vec<Oid>, _>>()?;
        let new: HashSet<Oid> = commits.iter().copied().collect();

        // Everything in the trees of the commits the client has at the edge of
        // the new history is already there.
        let mut seen = HashSet::new();
        let mut edges = HashSet::new();
        for oid in &commits {
            for parent in git.find_commit(*oid)?.parent_ids() {
                if !new.contains(&parent) && edges.insert(parent) {
                    let tree = git.find_commit(parent)?.tree_id();
                    self.walk_tree(tree, &mut seen, &mut |_, _, _| Ok(()))?;
                }
            }
        }

        // Every new tree and blob with its path, counting those that are
        // another version of a path already in the pack: what a delta search
        // could pair (libgit2 makes no thin packs, so nothing outside the
        // pack is a base).
        let mut entries: Vec<(Oid, String)> = Vec::new();
        for oid in &commits {
            let tree = git.find_commit(*oid)?.tree_id();
            self.walk_tree(tree, &mut seen, &mut |oid, path, _| {
                entries.push((oid, path.to_owned()));
                Ok(())
            })?;
        }
        if !worth_deltas(&git.odb()?, &entries)? {
            return self.write_whole(&commits, &entries, sink);
        }

        // Many versions of the same paths (a long history): libgit2's
        // builder, whose delta search pairs them.
        let mut pack = git.packbuilder()?;
        for oid in &commits {
            pack.insert_object(*oid, None)?;
        }
        for (oid, path) in &entries {
            pack.insert_object(*oid, Some(path))?;
        }

        let objects = pack.object_count();
        let mut bytes = 0u64;
        let mut failed = None;
        let written = pack.foreach(|buf| {
            for chunk in buf.chunks(PACK_CHUNK) {
                if let Err(e) = sink(chunk) {
                    failed = Some(e);
                    return false;
                }
            }
            bytes += buf.len() as u64;
            true
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        written?;
        Ok(PackStats { objects, bytes })
    }

    /// A pack of `commits` and `entries`, every object whole (see
    /// `pack_out`): no delta search, and only what compresses is deflated.
    fn write_whole(
        &self,
        commits: &[Oid],
        entries: &[(Oid, String)],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<PackStats, VaultError> {
        let objects = commits.len() + entries.len();
        let count = u32::try_from(objects)
            .map_err(|_| io::Error::other("too many objects for one pack"))?;
        let odb = self.git.odb()?;
        let mut pack = super::pack_out::PackWriter::new(sink, count);
        for oid in commits.iter().chain(entries.iter().map(|(oid, _)| oid)) {
            let object = odb.read(*oid)?;
            pack.object(object.kind(), object.data())?;
        }
        let bytes = pack.finish()?;
        Ok(PackStats { objects, bytes })
    }

    /// Visits every tree and blob under `root` not yet in `seen` (adding them),
    /// depth first, with its path (`""` for the root). A tree already seen is
    /// skipped with everything under it.
    fn walk_tree(
        &self,
        root: Oid,
        seen: &mut HashSet<Oid>,
        visit: &mut dyn FnMut(Oid, &str, ObjectType) -> Result<(), git2::Error>,
    ) -> Result<(), VaultError> {
        if !seen.insert(root) {
            return Ok(());
        }
        visit(root, "", ObjectType::Tree)?;
        let mut stack = vec![(root, String::new())];
        while let Some((oid, dir)) = stack.pop() {
            let tree = self.git.find_tree(oid)?;
            for entry in tree.iter() {
                let kind = match entry.kind() {
                    Some(kind @ (ObjectType::Tree | ObjectType::Blob)) => kind,
                    _ => continue,
                };
                // Most entries of a pull's trees were seen (the parent's
                // tree): their paths are not built.
                if !seen.insert(entry.id()) {
                    continue;
                }
                let name = String::from_utf8_lossy(entry.name_bytes());
                let path = if dir.is_empty() {
                    name.into_owned()
                } else {
                    format!("{dir}/{name}")
                };
                visit(entry.id(), &path, kind)?;
                if kind == ObjectType::Tree {
                    stack.push((entry.id(), path));
                }
            }
        }
        Ok(())
    }

    /// Streams a pack from `pack` into the object database and returns how many
    /// objects it held. The indexer checks every object and, with `verify`,
    /// that everything the pack's objects refer to is in the pack (a
    /// `self_contained` pack, for a clone) or in the pack or the repository (for
    /// a pull). A pack that fails is deleted; an empty pack (or no bytes at all)
    /// stores nothing.
    /// The objects the pack adds may hold at most `room` bytes; `limit` is the
    /// vault's size limit, for the error.
    pub(crate) fn index_pack(
        &self,
        pack: &mut dyn Read,
        self_contained: bool,
        room: u64,
        limit: u64,
    ) -> Result<usize, VaultError> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = fill(pack, &mut buf[..PACK_HEADER])?;
        if n == 0 {
            return Ok(0);
        }
        let count = if n == PACK_HEADER && buf.starts_with(b"PACK") {
            u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize
        } else {
            // Not a pack: the indexer says why.
            usize::MAX
        };
        if let Some(files) = &self.files {
            let mut whole = io::Cursor::new(&buf[..n]).chain(pack);
            return Ok(pack::ingest(&mut whole, files, room, limit)?.objects);
        }
        if count == 0 {
            let rest = fill(pack, &mut buf)?;
            if rest != PACK_TRAILER {
                return Err(VaultError::BadPack(git2::Error::from_str(
                    "empty pack with a bad trailer",
                )));
            }
            return Ok(0);
        }
        let odb = self.git.odb()?;
        let dir = self.git.path().join("objects").join("pack");
        let base = if self_contained { None } else { Some(&odb) };
        let mut indexer = Indexer::new(base, &dir, 0, true)?;
        indexer.write_all(&buf[..n]).map_err(bad_pack)?;
        loop {
            let n = fill(pack, &mut buf)?;
            if n == 0 {
                break;
            }
            indexer.write_all(&buf[..n]).map_err(bad_pack)?;
        }
        indexer.commit().map_err(VaultError::BadPack)?;
        odb.refresh()?;
        Ok(count)
    }

    /// The pack files (`pack-*.pack` and their `.idx`) of the repository.
    fn pack_files(&self) -> Result<Vec<std::path::PathBuf>, VaultError> {
        let dir = self.git.path().join("objects").join("pack");
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("pack-") && (name.ends_with(".pack") || name.ends_with(".idx")) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Whether [`consolidate`](Self::consolidate) has work: more than
    /// [`MAX_PACKS`](crate::MAX_PACKS) packs, or with encrypted objects more
    /// than `bundle::MAX_BUNDLES` bundles (each pull adds one).
    pub(crate) fn needs_consolidation(&self) -> Result<bool, VaultError> {
        match &self.files {
            Some(files) => {
                Ok(files.journal_full()? || files.bundle_count()? > super::bundle::MAX_BUNDLES)
            }
            None => Ok(self.pack_count()? > crate::MAX_PACKS),
        }
    }

    /// Packs in the repository (each pull adds one).
    fn pack_count(&self) -> Result<usize, VaultError> {
        let files = self.pack_files()?;
        Ok(files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "idx"))
            .count())
    }

    /// Rewrites every object reachable from the branch into one pack and deletes
    /// the other packs (loose objects are left alone). The caller holds the
    /// vault's writer lock, so no pull is indexing meanwhile; a reader that
    /// misses an object in a deleted pack finds it after libgit2's rescan.
    ///
    /// With encrypted objects, merges the smallest bundles once there are more
    /// than `bundle::MAX_BUNDLES` (see `bundle::merge`).
    pub(crate) fn consolidate(&self) -> Result<(), VaultError> {
        if let Some(files) = &self.files {
            if files.journal_full()? {
                files.roll_journal()?;
            }
            return files.merge_bundles().map(drop);
        }
        let old = self.pack_files()?;
        let head = self.head_id()?;
        let dir = self.git.path().join("objects").join("pack");
        let mut indexer = Indexer::new(None, &dir, 0, false)?;
        self.send_pack(head, &[], &mut |chunk| indexer.write_all(chunk))?;
        let name = indexer.commit()?;
        for path in old {
            let current = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&name));
            if !current && let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a repacked pack");
            }
        }
        self.git.odb()?.refresh()?;
        Ok(())
    }

    /// Checks that `oid` is a commit, as a received pack must have brought.
    fn received(&self, oid: Oid) -> Result<(), VaultError> {
        match self.git.find_object(oid, None) {
            Ok(object) if object.kind() == Some(ObjectType::Commit) => Ok(()),
            Ok(_) => Err(VaultError::MissingHead(oid.to_string())),
            Err(e) if e.code() == ErrorCode::NotFound => {
                Err(VaultError::MissingHead(oid.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks every tree of the commits reachable from `new` and not from
    /// `known` (the whole history for a clone): see [`check_entry`].
    fn check_received_trees(&self, new: Oid, known: Option<Oid>) -> Result<(), VaultError> {
        let git = &self.git;
        let mut walk = git.revwalk()?;
        walk.push(new)?;
        if let Some(k) = known {
            walk.hide(k)?;
        }
        let mut seen = std::collections::HashSet::new();
        let mut trees = Vec::new();
        for commit in walk {
            let commit = git.find_commit(commit?)?;
            trees.push(commit.tree_id());
            while let Some(id) = trees.pop() {
                if !seen.insert(id) {
                    continue;
                }
                let tree = git.find_tree(id)?;
                for entry in tree.iter() {
                    check_entry(entry.name_bytes(), entry.filemode())?;
                    if entry.kind() == Some(ObjectType::Tree) {
                        trees.push(entry.id());
                    }
                }
            }
        }
        Ok(())
    }

    /// Points a new clone's branch at the received `head` (the remote's head
    /// is kept only while it differs from the branch).
    pub(crate) fn start_branch(&self, head: Oid) -> Result<(), VaultError> {
        self.received(head)?;
        self.check_received_trees(head, None)?;
        self.git.reference(BRANCH, head, false, "clone")?;
        Ok(())
    }

    /// Moves the branch to the received `new` head if it descends from the
    /// current head (compare-and-swap); `Diverged` and no change otherwise. The
    /// caller holds the vault's writer lock.
    pub(crate) fn fast_forward(&self, new: Oid) -> Result<PullOutcome, VaultError> {
        self.received(new)?;
        let git = &self.git;
        let current = self.head_id()?;
        let same = new == current;
        let new_descends = !same && git.graph_descendant_of(new, current)?;
        if new_descends {
            self.check_received_trees(new, Some(current))?;
        }
        let current_descends = !same && !new_descends && git.graph_descendant_of(current, new)?;
        match fast_forward(same, new_descends, current_descends) {
            Step::UpToDate => {
                self.remember_remote(new, current);
                Ok(PullOutcome::UpToDate)
            }
            Step::FastForward => {
                let (commits, _) = git.graph_ahead_behind(new, current)?;
                branch::swap(git, current, new, "pull")?;
                self.remember_remote(new, new);
                Ok(PullOutcome::Updated {
                    from: current.to_string(),
                    to: new.to_string(),
                    commits,
                })
            }
            Step::Diverged => {
                let (ahead, behind) = git.graph_ahead_behind(current, new)?;
                Err(VaultError::Diverged { ahead, behind })
            }
        }
    }

    /// Records the remote's head for later haves, kept only while it differs
    /// from the branch (`branch`): after a fast-forward the branch is the
    /// remote's head, and writing a ref is a lock file and a rename. A failure
    /// only costs a bigger pack next time.
    fn remember_remote(&self, remote: Oid, branch: Oid) {
        let kept = self.remote_head();
        let done = if remote == branch {
            match kept {
                Some(_) => self
                    .git
                    .find_reference(REMOTE_BRANCH)
                    .and_then(|mut r| r.delete()),
                None => Ok(()),
            }
        } else if kept != Some(remote) {
            self.git
                .reference(REMOTE_BRANCH, remote, true, "pull")
                .map(drop)
        } else {
            Ok(())
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not record the remote head");
        }
    }

    /// Makes a repository at `dest` with this one's objects (hard links where
    /// possible, they are immutable; copies otherwise) and its branch at this
    /// head. The caller holds the vault's writer lock.
    pub(crate) fn fork_to(&self, dest: &Path) -> Result<(), VaultError> {
        let head = self.head_id()?;
        let git = init_empty(dest)?;
        if let Some(files) = &self.files {
            let dir = git.path().join("objects");
            files.copy_to(&dir)?;
            let files = files.at(dir);
            backend::install(&git, files.clone())?;
            let fork = Repo {
                git,
                files: Some(files),
            };
            fork.received(head)?;
            fork.git.reference(BRANCH, head, false, "fork")?;
            return Ok(());
        }
        let from = self.git.path().join("objects");
        let to = git.path().join("objects");
        for entry in fs::read_dir(&from)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let loose = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !(loose || name == "pack") || !entry.file_type()?.is_dir() {
                continue;
            }
            fs::create_dir_all(to.join(name))?;
            for file in fs::read_dir(entry.path())? {
                let file = file?;
                let file_name = file.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                // Skip libgit2's temporaries (`tmp_object…`, `pack_XXXXXX`).
                let keep = if loose {
                    file_name.len() == 38
                } else {
                    file_name.starts_with("pack-")
                };
                if !keep {
                    continue;
                }
                let target = to.join(name).join(file_name);
                if fs::hard_link(file.path(), &target).is_err() {
                    fs::copy(file.path(), &target)?;
                }
            }
        }
        let fork = Repo { git, files: None };
        fork.received(head)?;
        fork.git.reference(BRANCH, head, false, "fork")?;
        Ok(())
    }
}

/// Whether a received tree entry may enter a vault: a name that is a single,
/// printable path component (not empty, `.`, `..` or any case of `.git`; no
/// `/`, NUL or control character) and a mode of a file (0100644, 0100755) or a
/// directory (040000). Symbolic links and submodules are refused.
pub(crate) fn check_entry(name: &[u8], mode: i32) -> Result<(), VaultError> {
    let bad = VaultError::BadTree;
    let Ok(name) = std::str::from_utf8(name) else {
        return Err(bad("a name that is not UTF-8"));
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad("an empty, . or .. name"));
    }
    if name.eq_ignore_ascii_case(".git") {
        return Err(bad("a .git name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(bad("a name with a separator or a control character"));
    }
    match mode {
        0o100644 | 0o100755 | 0o040000 => Ok(()),
        0o120000 => Err(bad("a symbolic link")),
        0o160000 => Err(bad("a submodule")),
        _ => Err(bad("an unknown mode")),
    }
}

#[cfg(test)]
mod entry_tests {
    use super::check_entry;

    #[test]
    fn only_plain_names_of_files_and_directories_enter() {
        for ok in ["a", "db.password", "..hidden", "día", ".gitignore"] {
            assert!(check_entry(ok.as_bytes(), 0o100644).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".git",
            ".GIT",
            "a/b",
            "a\\b",
            "nul\0",
            "esc\u{1b}[2J",
            "cr\r",
        ] {
            assert!(check_entry(bad.as_bytes(), 0o100644).is_err(), "{bad:?}");
        }
        assert!(check_entry(b"\xff\xfe", 0o100644).is_err());
        assert!(check_entry(b"dir", 0o040000).is_ok());
        assert!(check_entry(b"x", 0o100755).is_ok());
        assert!(check_entry(b"link", 0o120000).is_err());
        assert!(check_entry(b"sub", 0o160000).is_err());
        assert!(check_entry(b"odd", 0o100664).is_err());
    }

    proptest::proptest! {
        /// Whatever a hostile tree holds, the check never panics, and what it
        /// lets in is one printable path component of a file or directory.
        #[test]
        fn any_entry_is_judged_and_only_plain_ones_pass(
            name in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            mode in proptest::prop_oneof![
                proptest::strategy::Just(0o100644),
                proptest::strategy::Just(0o100755),
                proptest::strategy::Just(0o040000),
                proptest::strategy::Just(0o120000),
                proptest::strategy::Just(0o160000),
                proptest::num::i32::ANY,
            ],
        ) {
            if check_entry(&name, mode).is_ok() {
                let text = std::str::from_utf8(&name).unwrap();
                proptest::prop_assert!(!text.is_empty() && text != "." && text != "..");
                proptest::prop_assert!(!text.eq_ignore_ascii_case(".git"));
                proptest::prop_assert!(!text.chars().any(|c| c == '/' || c == '\\' || c.is_control()));
                proptest::prop_assert!(matches!(mode, 0o100644 | 0o100755 | 0o040000));
            }
        }
    }
}

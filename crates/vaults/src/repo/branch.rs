//! The vault's branch, read and moved in place.
//!
//! libgit2 moves a ref by writing `refs/heads/main.lock` and renaming it onto
//! the ref: a new file, so a new inode, and the old one freed, for every commit
//! and every pull. On ext4 an inode freed in the last minute is skipped by the
//! allocator, and under load that search was the agent's largest single cost
//! (see `docs/PERFORMANCE.md`). A loose ref to a SHA-1 commit is always the same
//! 41 bytes (40 hex digits and a newline), so the store moves the branch by
//! overwriting those bytes: one `pwrite` into the file that is already there.
//!
//! - **Atomic for a crash:** the write is one system call of 41 bytes at offset
//!   0, inside one disk sector; a process killed at any instant leaves the old
//!   or the new id, as the rename did. As with libgit2's move (whose fsync is
//!   the process-wide `enable_fsync_gitdir` switch, off by default), the ref is
//!   not flushed; the objects it names were made durable before it moved.
//! - **Readers never lock:** a read racing the write could in principle see a
//!   mix of the two ids. Such a mix names no object, so [`Repo::head`] reads
//!   the ref again when its id names no commit, and only an id that stays the
//!   same and names nothing is an error.
//! - **Compare-and-swap:** the move checks the id in the file first and
//!   refuses with libgit2's own `Modified` error when it is not the expected
//!   one; writers of one vault also take turns under the store's writer lock.
//! - Anything else (a ref that is missing, packed, symbolic, or of another
//!   length) is left to libgit2, which reads and moves it as git does.
//!
//! [`Repo::head`]: super::Repo

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;

use git2::{ErrorClass, ErrorCode, Oid, Repository};

use super::BRANCH;
use crate::VaultError;

/// A loose ref to a SHA-1 object: 40 hex digits and a newline.
const LOOSE_LEN: usize = 41;

/// Parses a loose ref's bytes; `None` unless they are exactly 40 hex digits and
/// a newline.
fn parse(bytes: &[u8]) -> Option<Oid> {
    let (hex, nl) = bytes.split_at_checked(LOOSE_LEN - 1)?;
    if nl != b"\n" || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Oid::from_str(std::str::from_utf8(hex).ok()?).ok()
}

/// The first bytes of a just-opened `file`: one more than a loose ref holds,
/// so a longer file does not parse.
fn read_start(file: &std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(LOOSE_LEN + 1);
    file.take(LOOSE_LEN as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The id the branch names.
pub(super) fn read(git: &Repository) -> Result<Oid, VaultError> {
    let path = git.path().join(BRANCH);
    match std::fs::File::open(&path) {
        Ok(file) => match parse(&read_start(&file)?) {
            Some(oid) => Ok(oid),
            None => Ok(git.refname_to_id(BRANCH)?),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(git.refname_to_id(BRANCH)?),
        Err(e) => Err(e.into()),
    }
}

/// Moves the branch from `from` to `to`, refusing (libgit2's `Modified`) if it
/// does not name `from`. `why` is the reflog message libgit2 gets when the
/// ref is not a plain loose one.
pub(super) fn swap(git: &Repository, from: Oid, to: Oid, why: &str) -> Result<(), VaultError> {
    let by_libgit2 = || -> Result<(), VaultError> {
        git.reference_matching(BRANCH, to, true, from, why)?;
        Ok(())
    };
    let path = git.path().join(BRANCH);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return by_libgit2(),
        Err(e) => return Err(e.into()),
    };
    let Some(current) = parse(&read_start(&file)?) else {
        drop(file);
        return by_libgit2();
    };
    if current != from {
        return Err(git2::Error::new(
            ErrorCode::Modified,
            ErrorClass::Reference,
            format!("the branch moved to {current} (expected {from})"),
        )
        .into());
    }
    let text = format!("{to}\n");
    debug_assert_eq!(text.len(), LOOSE_LEN);
    file.write_all_at(text.as_bytes(), 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_loose_ref_parses() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse(format!("{id}\n").as_bytes()),
            Some(Oid::from_str(id).unwrap())
        );
        assert_eq!(parse(id.as_bytes()), None, "no newline");
        assert_eq!(parse(format!("{id}\n\n").as_bytes()), None, "too long");
        assert_eq!(parse(b"ref: refs/heads/other\n"), None, "symbolic");
        let bad = format!("{}g\n", &id[..39]);
        assert_eq!(parse(bad.as_bytes()), None, "not hex");
        assert_eq!(parse(b""), None);
    }
}

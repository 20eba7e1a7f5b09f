//! The encrypted object files ([`ObjectFiles`]) as libgit2's object database.
//!
//! git2-rs offers no safe way to plug in an object database backend, so this
//! module fills libgit2's `git_odb_backend` table itself: it is the crate's only
//! `unsafe` code. A repository opened through [`install`] gets a fresh, empty
//! object database holding this one backend, so libgit2 never reads or writes
//! its own loose objects or packs: every object it reads (trees, commits, blobs,
//! the pack builder's input) and every object it writes (trees and commits; the
//! store writes blobs itself) goes through here.
//!
//! Callbacks: `read`, `read_header`, `write` and `exists`. Prefix lookups and
//! `foreach` are absent (an object's file name is a keyed hash of its id, so ids
//! cannot be enumerated by prefix); the store resolves abbreviated commit ids by
//! walking the history instead. Packs are received by the store's own parser
//! (`pack.rs`), not libgit2's `writepack`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use git2::{Binding, ObjectType, Odb, Oid, Repository};
use libgit2_sys as raw;

use super::objects::ObjectFiles;

/// The backend's priority in its object database (it is the only one).
const PRIORITY: c_int = 1000;

#[repr(C)]
struct Backend {
    /// libgit2's part: must come first, libgit2 hands back a pointer to it.
    parent: raw::git_odb_backend,
    files: ObjectFiles,
}

/// libgit2's cache of the commits and trees it has read, shared by every
/// repository of the process: 1.5 MiB, not libgit2's default of 256 MiB, now
/// that the store keeps handles open between operations (`store/pool.rs`).
/// Blobs, which hold the secrets, are never cached (libgit2's default).
/// Under the harness's load 1.5 MiB kept the throughput of 2 MiB with about
/// 1.5 MiB less resident per agent; 1 MiB cost a tenth of the throughput.
const CACHE_BYTES: isize = 3 << 19;

/// Gives `git` an object database of `files` only.
pub(crate) fn install(git: &Repository, files: ObjectFiles) -> Result<(), git2::Error> {
    static CACHE_LIMIT: std::sync::Once = std::sync::Once::new();
    CACHE_LIMIT.call_once(|| {
        // SAFETY: sets one of libgit2's process-wide integer options (through
        // `git_libgit2_opts`, which takes a lock of its own); no pointer is
        // passed.
        if let Err(e) = unsafe { git2::opts::set_cache_max_size(CACHE_BYTES) } {
            tracing::warn!(error = %e, "cannot limit libgit2's object cache");
        }
    });
    let odb = Odb::new()?;
    let mut backend = Box::new(Backend {
        // SAFETY: `git_odb_backend` is a C struct of integers, raw pointers and
        // optional function pointers, for all of which zero is a valid value
        // (`git_odb_init_backend` zeroes it too).
        parent: unsafe { std::mem::zeroed() },
        files,
    });
    // SAFETY: `parent` is a valid, exclusively borrowed backend struct.
    let rc =
        unsafe { raw::git_odb_init_backend(&mut backend.parent, raw::GIT_ODB_BACKEND_VERSION) };
    if rc < 0 {
        return Err(git2::Error::from_str(
            "could not initialise the object backend",
        ));
    }
    backend.parent.read = Some(read);
    backend.parent.read_header = Some(read_header);
    backend.parent.write = Some(write);
    backend.parent.exists = Some(exists);
    backend.parent.free = Some(free);
    let ptr = Box::into_raw(backend);
    // SAFETY: `odb` is a live object database and `ptr` a fully initialised
    // backend whose first field is the `git_odb_backend`; on success the database
    // owns it and releases it through `free`.
    let rc = unsafe { raw::git_odb_add_backend(odb.raw(), ptr.cast(), PRIORITY) };
    if rc < 0 {
        // SAFETY: the database did not take the backend; it is still ours.
        drop(unsafe { Box::from_raw(ptr) });
        return Err(git2::Error::from_str("could not add the object backend"));
    }
    git.set_odb(&odb)
}

/// The backend behind `ptr`.
///
/// # Safety
/// `ptr` must be a backend made by [`install`] and not yet freed.
unsafe fn backend<'a>(ptr: *mut raw::git_odb_backend) -> &'a Backend {
    // SAFETY: per the contract, `ptr` points at the `parent` field, which is the
    // first field of a `repr(C)` `Backend`.
    unsafe { &*ptr.cast::<Backend>() }
}

/// The object id behind `oid`.
///
/// # Safety
/// `oid` must point at a valid `git_oid`.
unsafe fn oid_of(oid: *const raw::git_oid) -> Oid {
    // SAFETY: per the contract.
    let bytes = unsafe { &(*oid).id };
    Oid::from_bytes(&bytes[..20]).unwrap_or(Oid::ZERO_SHA1)
}

/// Records `message` as libgit2's last error and returns the generic error code.
fn fail(message: &str) -> c_int {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `text` is a valid NUL-terminated string; libgit2 copies it.
    unsafe { raw::git_error_set_str(raw::GIT_ERROR_ODB as c_int, text.as_ptr()) };
    raw::GIT_ERROR
}

fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| fail("object backend panicked"))
}

extern "C" fn read(
    data_p: *mut *mut c_void,
    len_p: *mut usize,
    type_p: *mut raw::git_object_t,
    ptr: *mut raw::git_odb_backend,
    oid: *const raw::git_oid,
) -> c_int {
    guarded(|| {
        // SAFETY: libgit2 passes the backend it was given and a valid oid.
        let (this, oid) = unsafe { (backend(ptr), oid_of(oid)) };
        match this.files.read(oid) {
            Ok(Some((kind, data))) => {
                // SAFETY: libgit2 owns the buffer it allocates here; it is at
                // least `data.len()` bytes (one more for an empty object, which
                // libgit2 still frees).
                let buf = unsafe { raw::git_odb_backend_data_alloc(ptr, data.len().max(1)) };
                if buf.is_null() {
                    return fail("out of memory");
                }
                // SAFETY: `buf` has room for `data.len()` bytes and does not
                // overlap `data`; the out-pointers are valid per libgit2's contract.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), buf.cast::<u8>(), data.len());
                    *data_p = buf;
                    *len_p = data.len();
                    *type_p = kind.raw();
                }
                0
            }
            Ok(None) => raw::GIT_ENOTFOUND,
            Err(e) => fail(&e.to_string()),
        }
    })
}

extern "C" fn read_header(
    len_p: *mut usize,
    type_p: *mut raw::git_object_t,
    ptr: *mut raw::git_odb_backend,
    oid: *const raw::git_oid,
) -> c_int {
    guarded(|| {
        // SAFETY: libgit2 passes the backend it was given and a valid oid.
        let (this, oid) = unsafe { (backend(ptr), oid_of(oid)) };
        match this.files.read_header(oid) {
            Ok(Some((kind, size))) => {
                let Ok(size) = usize::try_from(size) else {
                    return fail("object is too large");
                };
                // SAFETY: valid out-pointers per libgit2's contract.
                unsafe {
                    *len_p = size;
                    *type_p = kind.raw();
                }
                0
            }
            Ok(None) => raw::GIT_ENOTFOUND,
            Err(e) => fail(&e.to_string()),
        }
    })
}

extern "C" fn write(
    ptr: *mut raw::git_odb_backend,
    oid: *const raw::git_oid,
    data: *const c_void,
    len: usize,
    kind: raw::git_object_t,
) -> c_int {
    guarded(|| {
        // SAFETY: libgit2 passes the backend it was given, a valid oid and `len`
        // readable bytes at `data`.
        let (this, oid, bytes) = unsafe {
            let bytes: &[u8] = if len == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(data.cast::<u8>(), len)
            };
            (backend(ptr), oid_of(oid), bytes)
        };
        let Some(kind) = ObjectType::from_raw(kind) else {
            return fail("unknown object type");
        };
        // libgit2 asked `exists` (or `freshen`) before writing.
        match this.files.write_new(oid, kind, bytes) {
            Ok(()) => 0,
            Err(e) => fail(&e.to_string()),
        }
    })
}

extern "C" fn exists(ptr: *mut raw::git_odb_backend, oid: *const raw::git_oid) -> c_int {
    guarded(|| {
        // SAFETY: libgit2 passes the backend it was given and a valid oid.
        let (this, oid) = unsafe { (backend(ptr), oid_of(oid)) };
        c_int::from(this.files.exists(oid))
    })
}

extern "C" fn free(ptr: *mut raw::git_odb_backend) {
    // SAFETY: libgit2 frees each backend once, with the pointer `install` gave it.
    drop(unsafe { Box::from_raw(ptr.cast::<Backend>()) });
}

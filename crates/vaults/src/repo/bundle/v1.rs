//! Format 1 bundles, read once to be rewritten in the current format (data
//! format 2, index format 3).
//!
//! ```text
//! bundles/<name>.knb  = "KNB1" ‖ record*      record aad = "KNB1" ‖ object id
//! bundles/<name>.kni  = nonce ‖ sealed entry* index aad  = "KNI1" ‖ name
//! ```
//!
//! Records and entries are laid out as in format 2; only the magics, the file
//! extensions and the key differ: format 1 used the object-file key (also a
//! BLAKE2b key) as the XChaCha20-Poly1305 key. [`migrate`] runs while nothing
//! else touches the repository (the store calls it at open) and is safe to cut
//! at any point:
//!
//! 1. the current-format copy is written under the same name, data and index
//!    synced to disk, the index last (an index-less copy is swept at open);
//! 2. the format 1 index is removed, then its data (data without an index is
//!    swept at open).
//!
//! An interrupted migration is finished by the next open: a format 1 index
//! whose format 2 or 3 index exists only has its files removed.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use chacha20poly1305::XChaCha20Poly1305;

use super::index::open_run;
use super::{BUNDLE_DIR, BundleWriter, INDEX_EXT, INDEX_EXT_V2, corrupt, open_record};
use crate::VaultError;

const DATA_MAGIC: &[u8; 4] = b"KNB1";
const INDEX_MAGIC: &[u8; 4] = b"KNI1";
/// File name extensions of a format 1 bundle's data and index.
pub(crate) const DATA_EXT: &str = "knb";
pub(crate) const INDEX_EXT_V1: &str = "kni";

/// Rewrites every format 1 bundle under the `objects` directory `objects` in
/// format 2: opened with `legacy`, sealed with `cipher`. Returns how many
/// bundles were rewritten. A bundle that fails authentication is left as it is
/// (and reported): a wrong key must not destroy data.
pub(crate) fn migrate(
    objects: &Path,
    legacy: &XChaCha20Poly1305,
    cipher: &XChaCha20Poly1305,
) -> Result<usize, VaultError> {
    let root = objects.join(BUNDLE_DIR);
    let mut migrated = 0;
    for name in super::names_with(&root, INDEX_EXT_V1)? {
        let index = root.join(format!("{name}.{INDEX_EXT_V1}"));
        let data = root.join(format!("{name}.{DATA_EXT}"));
        let rewritten = [INDEX_EXT, INDEX_EXT_V2]
            .iter()
            .any(|ext| root.join(format!("{name}.{ext}")).exists());
        if !rewritten {
            match rewrite(objects, &name, legacy, cipher) {
                Ok(()) => migrated += 1,
                Err(VaultError::Corrupt(why)) => {
                    tracing::warn!(bundle = %name, %why, "format 1 bundle not migrated: it fails authentication");
                    let _ = fs::remove_file(root.join(format!("{name}.{}", super::DATA_EXT)));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        fs::remove_file(&index)?;
        match fs::remove_file(&data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(migrated)
}

/// Writes the format 2 copy of the format 1 bundle `name`, durably.
fn rewrite(
    objects: &Path,
    name: &str,
    legacy: &XChaCha20Poly1305,
    cipher: &XChaCha20Poly1305,
) -> Result<(), VaultError> {
    let root = objects.join(BUNDLE_DIR);
    let index = root.join(format!("{name}.{INDEX_EXT_V1}"));
    let data_path = root.join(format!("{name}.{DATA_EXT}"));
    let entries = open_run(&fs::read(&index)?, name, INDEX_MAGIC, legacy)
        .map_err(|why| corrupt(&index, why))?;
    let data = fs::File::open(&data_path)?;
    let mut writer = BundleWriter::named(objects, name.to_owned());
    let mut sealed = Vec::new();
    for (oid, at) in entries {
        sealed.resize(at.len as usize, 0);
        data.read_exact_at(&mut sealed, at.offset)?;
        let content = open_record(&sealed, oid, at.kind, DATA_MAGIC, legacy)
            .map_err(|why| corrupt(&data_path, why))?;
        writer.add(oid, at.kind, &content, cipher)?;
    }
    writer.write_index(cipher, true)?;
    Ok(())
}

/// Writes a format 1 bundle of `objects` (what an older keynode wrote), for the
/// migration's tests.
#[cfg(test)]
pub(crate) fn write(
    objects: &Path,
    name: &str,
    items: &[(git2::Oid, git2::ObjectType, Vec<u8>)],
    legacy: &XChaCha20Poly1305,
) {
    use chacha20poly1305::XNonce;
    use chacha20poly1305::aead::{Aead, Payload};
    let root = objects.join(BUNDLE_DIR);
    fs::create_dir_all(&root).unwrap();
    let mut file = DATA_MAGIC.to_vec();
    let mut entries = Vec::new();
    for (i, (oid, kind, content)) in items.iter().enumerate() {
        let nonce = [i as u8; 24];
        let msg = [
            &[super::super::objects::kind_byte(*kind)],
            content.as_slice(),
        ]
        .concat();
        let aad = [DATA_MAGIC.as_slice(), oid.as_bytes()].concat();
        let sealed = legacy
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .unwrap();
        let len = (24 + sealed.len()) as u32;
        entries.extend_from_slice(oid.as_bytes());
        entries.extend_from_slice(&(file.len() as u64).to_le_bytes());
        entries.extend_from_slice(&len.to_le_bytes());
        entries.push(super::super::objects::kind_byte(*kind));
        entries.extend_from_slice(&(content.len() as u64).to_le_bytes());
        file.extend_from_slice(&nonce);
        file.extend_from_slice(&sealed);
    }
    fs::write(root.join(format!("{name}.{DATA_EXT}")), file).unwrap();
    let index = root.join(format!("{name}.{INDEX_EXT_V1}"));
    super::index::write_run(&index, &entries, name, INDEX_MAGIC, legacy);
}

/// Rewrites every format 2 bundle under `objects` in format 1, for the
/// migration's tests; returns how many.
#[cfg(test)]
pub(crate) fn downgrade(
    objects: &Path,
    cipher: &XChaCha20Poly1305,
    legacy: &XChaCha20Poly1305,
) -> usize {
    let root = objects.join(BUNDLE_DIR);
    let mut n = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != INDEX_EXT) {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let data_path = root.join(format!("{name}.{}", super::DATA_EXT));
        let data = fs::File::open(&data_path).unwrap();
        let items: Vec<_> = super::index::read_all(&path, &name, cipher)
            .into_iter()
            .map(|(oid, at)| {
                let mut sealed = vec![0; at.len as usize];
                data.read_exact_at(&mut sealed, at.offset).unwrap();
                let content =
                    open_record(&sealed, oid, at.kind, super::DATA_MAGIC, cipher).unwrap();
                (oid, at.kind, content)
            })
            .collect();
        write(objects, &name, &items, legacy);
        fs::remove_file(&path).unwrap();
        fs::remove_file(&data_path).unwrap();
        n += 1;
    }
    n
}

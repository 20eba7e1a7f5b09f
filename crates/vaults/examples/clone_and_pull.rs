//! The vault store alone, without the agent: one node's store writes
//! secrets, another's clones the vault and pulls a later change, each pack
//! streamed through an OS pipe as the network would carry it.
//!
//! ```sh
//! cargo run -p keynode-vaults --example clone_and_pull
//! ```
//!
//! Every object is encrypted at rest under each node's own data key; the
//! pack between them is plain git (the agent sends it over Noise).

use std::io::Write;

use keynode_core::datakey::DataKey;
use keynode_core::{Keypair, SecretPath, VaultId, VaultName};
use keynode_vaults::{Op, PullOutcome, PutPolicy, Remote, VaultStore, want};

/// A node's store: its own encrypted LMDB environment, data key and
/// directory of repositories.
fn store(dir: &std::path::Path, key: u8) -> Result<VaultStore, Box<dyn std::error::Error>> {
    let data_key = DataKey::from_bytes([key; 32]);
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::create_dir_all(dir.join("vaults"))?;
    let env = keynode_core::store::open_env(&dir.join("state"), &data_key, 1 << 28, 16)?;
    let owner = Keypair::generate().node_id();
    Ok(VaultStore::open(
        &dir.join("vaults"),
        env,
        owner,
        &data_key,
    )?)
}

fn put(
    store: &VaultStore,
    vault: VaultId,
    path: &str,
    value: &[u8],
) -> Result<(), Box<dyn std::error::Error>> {
    let blob = store.write_blob(vault, &mut &value[..])?;
    let op = Op::Put {
        path: SecretPath::new(path)?,
        blob,
        policy: PutPolicy::Overwrite,
    };
    store.commit(vault, vec![op])?;
    Ok(())
}

fn read(
    store: &VaultStore,
    vault: VaultId,
    path: &str,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    store.read_secret(vault, &SecretPath::new(path)?, None, &mut |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

/// Streams the pack `owner` builds for `wanted` through a pipe into
/// `receive`, running both sides at once.
fn through_pipe<T: Send>(
    owner: &VaultStore,
    vault: VaultId,
    wanted: &str,
    haves: &[String],
    receive: impl FnOnce(&mut dyn std::io::Read) -> Result<T, keynode_vaults::VaultError> + Send,
) -> Result<T, Box<dyn std::error::Error>> {
    let (mut reader, mut writer) = std::io::pipe()?;
    std::thread::scope(|s| {
        let sender = s.spawn(move || {
            let sent = owner.send_pack(vault, wanted, haves, &mut |chunk| writer.write_all(chunk));
            drop(writer); // the end of the pack
            sent
        });
        let received = receive(&mut reader);
        drop(reader);
        let sent = sender.join().expect("the sender thread");
        let stats = sent?;
        println!("  pack: {} objects, {} bytes", stats.objects, stats.bytes);
        Ok(received?)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = (store(a_dir.path(), 1)?, store(b_dir.path(), 2)?);

    let prod = alice.create(&VaultName::new("prod")?)?.id;
    put(&alice, prod, "db/password", b"hunter2")?;

    // Clone: everything the head reaches.
    println!("clone:");
    let advert = alice.advertise(prod)?;
    let remote = Remote {
        node: alice.owner(),
        vault: prod,
    };
    let clone = through_pipe(&alice, prod, &advert.head, &[], |pack| {
        bob.receive_clone(&advert.name, remote, &advert.head, pack)
    })?;
    assert_eq!(read(&bob, clone.id, "db/password")?, b"hunter2");
    // A clone is read-only: its remote's history is the only one it takes.
    assert!(put(&bob, clone.id, "x", b"1").is_err());

    // A change at the owner, then a pull: only what the clone lacks.
    put(&alice, prod, "db/password", b"correct horse")?;
    println!("pull:");
    let advert = alice.advertise(prod)?;
    let haves = bob.haves(clone.id)?;
    let wanted = want(&advert, &haves).expect("the clone is behind");
    let outcome = through_pipe(&alice, prod, &wanted, &haves, |pack| {
        bob.receive_pull(clone.id, &advert.head, pack)
    })?;
    assert!(
        matches!(outcome, PullOutcome::Updated { commits: 1, .. }),
        "{outcome:?}"
    );
    println!(
        "  bob reads: {}",
        String::from_utf8(read(&bob, clone.id, "db/password")?)?
    );
    assert_eq!(read(&bob, clone.id, "db/password")?, b"correct horse");
    Ok(())
}

#[test]
fn runs() {
    main().expect("the example runs");
}

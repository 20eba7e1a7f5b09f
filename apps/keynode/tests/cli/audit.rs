//! `keynode audit read|verify` through the binary, and `verify` catching a
//! log altered on disk while the agent was stopped.

use crate::support::*;

/// Deletes entry `seq` from the stopped agent's audit log, opening its
/// encrypted state with the data key (unsealed with the root key).
fn delete_entry(a: &Agent, seq: u64) {
    use keynode_core::store::heed3::{CommitOrAbort, types::Bytes};
    let root =
        keynode_core::keystore::read_key_file(&a.node.join("keys/root.key"), PASSWORD.as_bytes())
            .expect("root key");
    let data_key =
        keynode_core::datakey::read_file(&a.node.join("keys/data.key"), &root).expect("data key");
    // The agent is stopped (its lock released), so this process is the only one
    // with the environment open, once.
    let env = keynode_core::store::open_env(&a.node.join("state"), &data_key, 1 << 30, 64)
        .expect("open state");
    let wtxn = env.write_txn().expect("wtxn");
    let log = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Bytes, Bytes>(wtxn, Some(keynode_audit::LOG_DB))
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .expect("open audit.log")
        .unwrap_commit();
    let mut w = env.write_txn().expect("wtxn");
    assert!(
        log.delete(&mut w, &keynode_audit::seq_key(seq))
            .expect("delete")
    );
    w.commit().expect("commit");
}

#[test]
fn audit_read_and_verify() {
    let a = Agent::started();
    let other = keynode_core::Keypair::generate().node_id().to_string();
    a.run(&["identities", "trust", &other]).success();
    a.run(&["identities", "allow", &other, "scan"]).success();
    a.run(&["identities", "disallow", &other, "scan"]).success();

    let human = a.run(&["audit", "read"]).success();
    assert!(human.contains("trusted"), "{human}");
    assert!(human.contains(&format!("gestalt={other}")), "{human}");
    let json = a.json(&["audit", "read", "--limit", "2"]);
    let list = json.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["seq"], 2);
    assert_eq!(list[0]["kind"], "disallowed");
    assert_eq!(list[0]["fields"]["action"], "scan");
    assert_eq!(list[1]["kind"], "allowed");

    let out = a.run(&["audit", "verify"]).success();
    assert_eq!(out.trim(), "audit log verified: 3 entries");
    assert_eq!(a.json(&["audit", "verify"])["entries"], 3);

    // A middle entry removed behind the agent's back.
    a.run(&["agent", "stop"]).success();
    delete_entry(&a, 1);
    a.start().success();
    let err = a.run(&["audit", "verify"]).fails(65, "entry 1");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

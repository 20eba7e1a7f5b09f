//! `keynode audit read|verify` through the binary, and `verify` catching a
//! log altered on disk while the agent was stopped.

use crate::support::*;

/// Deletes entry `seq` from the stopped agent's audit log.
#[allow(unsafe_code)]
fn delete_entry(a: &Agent, seq: u64) {
    use heed::types::Bytes;
    let mut opts = heed::EnvOpenOptions::new().read_txn_without_tls();
    opts.max_dbs(64).map_size(1 << 30);
    // SAFETY: the agent is stopped (its lock released), so this process is the
    // only one with the environment open, once.
    let env = unsafe { opts.open(a.node.join("state")) }.expect("open state");
    let rtxn = env.read_txn().expect("rtxn");
    let opened = env
        .open_databases_and_commit(rtxn, |opener, rtxn| {
            let db: Option<heed::Database<'_, Bytes, Bytes>> =
                opener.open_database(rtxn, Some(keynode_audit::LOG_DB))?;
            Ok::<_, heed::Error>(heed::CommitOrAbort::<_, ()>::Commit(db.expect("audit.log")))
        })
        .expect("open audit.log");
    let heed::CommitOrAbort::Commit(log) = opened else {
        panic!("aborted")
    };
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

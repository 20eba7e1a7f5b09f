//! `keynode identities ...` and `keynode nodes claim` through the binary.

use crate::support::*;

#[test]
fn invite_claim_trust_discover_allow() {
    let a = Agent::started();
    let a2 = Agent::started();
    let b = Agent::started();
    let (a_id, a_port) = a.id_and_port();
    let (a2_id, a2_port) = a2.id_and_port();
    a.run(&["nodes", "add", &a2_id, "127.0.0.1", &a2_port])
        .success();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();

    // Not invited yet: refused by A2, and the error says it came from the remote.
    let err = a.run(&["nodes", "claim", &a2_id]).fails(77, "remote node");
    assert!(err.contains("invited"), "{err}");
    a2.run(&["identities", "invite", &a_id]).success();
    let claim = a.json(&["nodes", "claim", &a2_id]);
    assert_eq!(claim["seq"], 0);
    // The invitation was good for that one claim.
    let after = a2.json(&["identities", "permissions", &a_id]);
    assert!(
        !after["gestalt"]
            .as_array()
            .expect("actions")
            .contains(&serde_json::json!("claim")),
        "{after}"
    );

    b.run(&["identities", "trust", &a_id]).success();
    let d = b.json(&["identities", "discover", &a_id]);
    let nodes = d["gestalt"]["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2, "{d}");
    assert!(
        b.run(&["identities", "get", &a2_id])
            .success()
            .contains(&a_id)
    );

    b.run(&["identities", "allow", &a2_id, "scan"]).success();
    let p = b.json(&["identities", "permissions", &a_id]);
    assert_eq!(p["gestalt"], serde_json::json!(["notify", "scan"]));
    assert!(
        b.run(&["identities", "permissions", &a_id])
            .success()
            .contains("notify, scan")
    );
    b.run(&["identities", "disallow", &a_id, "notify"])
        .success();
    b.run(&["identities", "untrust", &a2_id]).success();
    assert_eq!(
        b.json(&["identities", "permissions", &a2_id])["gestalt"],
        serde_json::json!(["scan"])
    );
    let list = b.json(&["identities", "list"]);
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|g| g["nodes"].as_array().expect("n").len() == 2)
    );

    // Bad input.
    b.run(&["identities", "allow", &a_id, "fly"])
        .fails(65, "notify, scan or claim");
    b.run(&["identities", "trust", "not-a-gestalt"])
        .fails(65, "gestalt");
    b.run(&["identities", "get", "offline:nobody"])
        .fails(66, "not a known gestalt");
    b.run(&["identities", "invite", "vbad"])
        .fails(65, "node id");
}

#[test]
fn identity_claims_and_providers() {
    let a = Agent::started();
    let b = Agent::started();
    let (a_id, a_port) = a.id_and_port();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();
    a.run(&["identities", "authenticate", "offline"]).success();
    a.run(&["identities", "authenticate", "nowhere"])
        .fails(66, "unknown identity provider");
    let who = format!("offline:user-{}", std::process::id());
    a.run(&["identities", "claim", &who]).success();
    a.run(&["identities", "claim", &a_id])
        .fails(65, "PROVIDER:IDENTITY");
    let d = b.json(&["identities", "discover", &who]);
    assert_eq!(d["gestalt"]["nodes"][0], a_id.as_str(), "{d}");
    assert_eq!(d["gestalt"]["identities"][0], who.as_str());
}

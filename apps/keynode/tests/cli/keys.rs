//! `keynode keys`: public forms, file signatures between nodes, encryption to
//! a node, and the bad inputs of each.

use std::path::Path;

use crate::support::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

#[test]
fn sign_verify_encrypt_decrypt_between_two_nodes() {
    let a = Agent::started();
    let b = Agent::started();
    let a_pub = a.json(&["keys", "public"]);
    let a_id = a_pub["node_id"].as_str().unwrap().to_owned();
    assert_eq!(a_pub["public_key_hex"].as_str().unwrap().len(), 64);
    assert_eq!(a_pub["public_key_base64"].as_str().unwrap().len(), 44);
    let b_id = b.json(&["keys", "public"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A signs; anyone checks with A's NodeId.
    let file = a.path("release.txt");
    std::fs::write(&file, b"version 1.2.3\n").unwrap();
    let sig = a.json(&["keys", "sign", s(&file)])["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sig.len(), 128);
    b.run(&["keys", "verify", s(&file), &sig, &a_id]).success();
    // Another signer, another file, a damaged signature: refused.
    b.run(&["keys", "verify", s(&file), &sig, &b_id])
        .fails(65, "is not");
    let other = a.path("other.txt");
    std::fs::write(&other, b"version 1.2.4\n").unwrap();
    b.run(&["keys", "verify", s(&other), &sig, &a_id])
        .fails(65, "is not");
    let mut bad = sig.clone().into_bytes();
    bad[10] = if bad[10] == b'0' { b'1' } else { b'0' };
    b.run(&[
        "keys",
        "verify",
        s(&file),
        std::str::from_utf8(&bad).unwrap(),
        &a_id,
    ])
    .fails(65, "is not");
    b.run(&["keys", "verify", s(&file), "zz", &a_id])
        .fails(65, "128 hex digits");
    b.run(&["keys", "verify", s(&file), &sig, "not-a-node"])
        .fails(65, "");

    // Anyone encrypts to B (no agent needed); only B decrypts.
    let secret = a.path("secret.txt");
    std::fs::write(&secret, b"kn7 the launch code").unwrap();
    let sealed = a.path("secret.kne");
    a.run(&["keys", "encrypt", s(&secret), &b_id, "--out", s(&sealed)])
        .success();
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"launch"));
    assert_eq!(
        b.run(&["keys", "decrypt", s(&sealed)]).success(),
        "kn7 the launch code"
    );
    let out = b.path("opened");
    b.run(&["keys", "decrypt", s(&sealed), "--out", s(&out)])
        .success();
    assert_eq!(std::fs::read(&out).unwrap(), b"kn7 the launch code");
    // A is not the recipient; a damaged message opens nowhere.
    a.run(&["keys", "decrypt", s(&sealed)])
        .fails(65, "another node");
    let mut damaged = bytes.clone();
    let n = damaged.len();
    damaged[n - 3] ^= 1;
    std::fs::write(&sealed, &damaged).unwrap();
    b.run(&["keys", "decrypt", s(&sealed)]).fails(65, "");
    std::fs::write(&sealed, b"hello").unwrap();
    b.run(&["keys", "decrypt", s(&sealed)])
        .fails(65, "not a message");
    // In JSON, the message travels as base64.
    let doc = a.json(&["keys", "encrypt", s(&secret), &b_id]);
    assert!(
        doc["sealed_base64"].as_str().is_some_and(|b| b.len() > 40),
        "{doc}"
    );
    // Too large for one message.
    let big = a.path("big");
    std::fs::write(&big, vec![0u8; (1 << 20) + 1]).unwrap();
    a.run(&["keys", "encrypt", s(&big), &b_id])
        .fails(65, "at most");
}

#[test]
fn renew_moves_the_shares_to_the_new_key() {
    let a = Agent::started();
    let b = Agent::started();
    let (a_id, a_port) = a.id_and_port();
    let (b_id, b_port) = b.id_and_port();
    a.run(&["nodes", "add", &b_id, "127.0.0.1", &b_port])
        .success();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();
    a.run(&["identities", "trust", &b_id]).success();
    b.run(&["identities", "trust", &a_id]).success();
    a.run(&["vaults", "create", "prod"]).success();
    a.run_stdin(&["secrets", "write", "prod:k"], b"v1")
        .success();
    a.run(&["vaults", "share", "prod", &b_id]).success();
    b.run(&["vaults", "clone", "prod", &a_id]).success();

    // Not while the agent runs; not with a wrong password.
    b.run(&["keys", "renew", "--password-file", s(&b.password_file)])
        .fails(75, "stop it");
    b.run(&["agent", "stop"]).success();
    let wrong = b.path("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    b.run(&["keys", "renew", "--password-file", s(&wrong)])
        .fails(77, "wrong password");
    let code = b.path("new-code");
    let doc = b.json(&[
        "keys",
        "renew",
        "--password-file",
        s(&b.password_file),
        "--recovery-code-out-file",
        s(&code),
    ]);
    assert_eq!(doc["old_node_id"], b_id.as_str());
    let new_id = doc["node_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, b_id);
    assert_eq!(
        std::fs::read_to_string(&code)
            .unwrap()
            .split_whitespace()
            .count(),
        24
    );
    b.start().success();
    assert_eq!(b.json(&["agent", "status"])["node_id"], new_id.as_str());
    wait_for(
        || {
            a.json(&["vaults", "permissions", "prod"])
                .as_array()
                .is_some_and(|g| {
                    g.iter().any(|g| {
                        g["nodes"]
                            .as_array()
                            .is_some_and(|n| n.iter().any(|n| n == new_id.as_str()))
                    })
                })
        },
        "the owner applying the rotation",
    );
    a.run_stdin(&["secrets", "write", "prod:k"], b"v2")
        .success();
    b.run(&["vaults", "pull", "prod"]).success();
    assert_eq!(b.run(&["secrets", "get", "prod:k"]).success(), "v2");
}

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
    // Too large for one message.
    let big = a.path("big");
    std::fs::write(&big, vec![0u8; (1 << 20) + 1]).unwrap();
    a.run(&["keys", "encrypt", s(&big), &b_id])
        .fails(65, "at most");
}

//! `keynode vaults share|unshare|permissions|scan|clone|pull|fork` and
//! `keynode notifications ...` through the binary, with two real agents.

use crate::support::*;

#[test]
fn share_scan_clone_pull_fork_unshare() {
    let (a, b, a_id, b_id) = two_known();
    a.run(&["identities", "trust", &b_id]).success();
    b.run(&["vaults", "create", "prod"]).success();
    b.run_stdin(&["secrets", "write", "prod:db/password"], b"hunter2")
        .success();

    // Unknown grantee: a hint, and nothing changes.
    let stranger = Agent::started();
    let (s_id, _) = stranger.id_and_port();
    let err = b
        .run(&["vaults", "share", "prod", &s_id])
        .fails(66, "nodes add");
    assert!(err.contains("identities trust"), "{err}");

    b.run(&["identities", "trust", &a_id]).success();
    b.run(&["vaults", "share", "prod", &a_id]).success();
    let perms = b.json(&["vaults", "permissions", "prod"]);
    assert_eq!(perms[0]["nodes"][0], a_id.as_str());
    assert_eq!(perms[0]["actions"], serde_json::json!(["clone", "pull"]));
    wait_for(
        || {
            a.json(&["notifications", "inbox", "read", "--unread"])
                .as_array()
                .is_some_and(|l| !l.is_empty())
        },
        "the VaultShare notification",
    );
    let inbox = a.json(&["notifications", "inbox", "read"]);
    assert_eq!(inbox[0]["kind"], "vault_share");
    assert_eq!(inbox[0]["data"]["vault_name"], "prod");

    let scan = a.json(&["vaults", "scan", &b_id]);
    assert_eq!(scan[0]["name"], "prod");
    let clone = a.json(&["vaults", "clone", "prod", &b_id, "--no-follow"]);
    assert_eq!(clone["name"], "prod");
    assert_eq!(clone["remote"]["node"], b_id.as_str());
    assert_eq!(
        a.run(&["secrets", "get", "prod:db/password"]).success(),
        "hunter2"
    );
    a.run_stdin(&["secrets", "write", "prod:x"], b"1")
        .fails(77, "vaults fork");

    b.run_stdin(&["secrets", "write", "prod:db/password"], b"s3cret")
        .success();
    let pulled = a.json(&["vaults", "pull", "prod"]);
    assert_eq!(pulled["commits"], 1);
    assert!(
        a.run(&["vaults", "pull", "prod"])
            .success()
            .contains("up to date")
    );
    assert_eq!(
        a.run(&["secrets", "get", "prod:db/password"]).success(),
        "s3cret"
    );
    // Explicit source arguments.
    a.run(&["vaults", "pull", "prod", &b_id, "--pull-vault", "prod"])
        .success();

    let fork = a.json(&["vaults", "fork", "prod", "mine"]);
    assert_eq!(fork["name"], "mine");
    a.run_stdin(&["secrets", "write", "mine:x"], b"1").success();

    b.run(&["vaults", "unshare", "prod", &a_id]).success();
    a.run(&["vaults", "pull", "prod"]).fails(77, "remote node");
    a.run(&["vaults", "scan", &b_id]).fails(77, "remote node");
    stranger
        .run(&["vaults", "clone", "prod", &b_id])
        .fails(66, "nodes add");
    a.run(&["vaults", "pull", "mine"]).fails(64, "not a clone");
}

#[test]
fn notifications_send_inbox_outbox() {
    let a = Agent::started();
    let b = Agent::started();
    let (a_id, a_port) = a.id_and_port();
    let (b_id, _) = b.id_and_port();
    b.run(&["nodes", "add", &a_id, "127.0.0.1", &a_port])
        .success();
    // A does not trust B yet: refused, and dropped from B's outbox.
    b.run(&["notifications", "send", &a_id, "ignored"])
        .success();
    wait_for(
        || {
            b.json(&["notifications", "outbox", "read"])
                .as_array()
                .is_some_and(Vec::is_empty)
        },
        "the refusal",
    );
    assert!(
        a.json(&["notifications", "inbox", "read"])
            .as_array()
            .expect("list")
            .is_empty()
    );

    a.run(&["identities", "trust", &b_id]).success();
    // One after the other: notifications in flight at once to one node may
    // arrive in either order, and the order flags below read arrival order.
    for m in ["one", "two", "three"] {
        b.run(&["notifications", "send", &a_id, m]).success();
        wait_for(
            || {
                b.json(&["notifications", "outbox", "read"])
                    .as_array()
                    .is_some_and(Vec::is_empty)
            },
            "delivery",
        );
    }
    let unread = a.json(&[
        "notifications",
        "inbox",
        "read",
        "--unread",
        "--limit",
        "10",
    ]);
    assert_eq!(unread.as_array().expect("list").len(), 3);
    // Reading marked them read.
    assert!(
        a.json(&["notifications", "inbox", "read", "--unread"])
            .as_array()
            .expect("list")
            .is_empty()
    );
    let oldest = a.json(&[
        "notifications",
        "inbox",
        "read",
        "--order",
        "oldest",
        "--limit",
        "1",
    ]);
    assert_eq!(oldest[0]["data"]["message"], "one");
    let newest = a.json(&["notifications", "inbox", "read", "--limit", "1"]);
    assert_eq!(newest[0]["data"]["message"], "three");
    let id = newest[0]["id"].as_str().expect("id").to_owned();
    // What another node wrote reaches the terminal with its control
    // characters escaped: no escape sequence, no carriage return.
    let evil = "evil\u{1b}]0;owned\u{7}\r\u{1b}[2Kfine";
    b.run(&["notifications", "send", &a_id, evil]).success();
    wait_for(
        || {
            b.json(&["notifications", "outbox", "read"])
                .as_array()
                .is_some_and(Vec::is_empty)
        },
        "delivery",
    );
    let shown = a
        .run(&["notifications", "inbox", "read", "--limit", "1"])
        .success();
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\r') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert!(shown.contains("]0;owned"), "{shown:?}");
    // JSON keeps the exact text (escaped by JSON's own rules).
    let exact = a.json(&["notifications", "inbox", "read", "--limit", "1"]);
    assert_eq!(exact[0]["data"]["message"], evil);
    let evil_id = exact[0]["id"].as_str().expect("id").to_owned();
    a.run(&["notifications", "inbox", "remove", &evil_id])
        .success();
    a.run(&["notifications", "inbox", "remove", &id]).success();
    a.run(&["notifications", "inbox", "remove", &id])
        .fails(66, "no notification");
    a.run(&["notifications", "inbox", "remove", "nonsense"])
        .fails(65, "id");
    assert_eq!(a.json(&["notifications", "inbox", "clear"])["removed"], 2);

    // To a node that is down: queued in the outbox; it can be removed or cleared.
    let (gone_id, gone_port) = {
        let gone = Agent::started();
        gone.id_and_port()
    };
    b.run(&["nodes", "add", &gone_id, "127.0.0.1", &gone_port])
        .success();
    b.run(&["notifications", "send", &gone_id, "later"])
        .success();
    b.run(&["notifications", "send", &gone_id, "later too"])
        .success();
    let outbox = b.json(&["notifications", "outbox", "read"]);
    assert_eq!(outbox.as_array().expect("list").len(), 2);
    let id = outbox[0]["id"].as_str().expect("id").to_owned();
    b.run(&["notifications", "outbox", "remove", &id]).success();
    assert_eq!(b.json(&["notifications", "outbox", "clear"])["removed"], 1);
    b.run(&["notifications", "send", &a_id, &"x".repeat(5000)])
        .fails(65, "long");
}

#[test]
fn a_strangers_share_waits_in_the_quarantine_until_accepted() {
    let (a, b, a_id, b_id) = two_known();
    // B trusts A and shares; A does not trust B (yet).
    b.run(&["identities", "trust", &a_id]).success();
    b.run(&["vaults", "create", "prod"]).success();
    b.run(&["vaults", "share", "prod", &a_id]).success();
    wait_for(
        || {
            a.json(&["notifications", "inbox", "read", "--untrusted"])
                .as_array()
                .is_some_and(|l| l.len() == 1)
        },
        "the share in the quarantine",
    );
    let held = a.json(&["notifications", "inbox", "read", "--untrusted"]);
    assert_eq!(held[0]["kind"], "vault_share");
    assert_eq!(held[0]["from"], b_id.as_str());
    assert_eq!(
        a.json(&["notifications", "inbox", "read"]),
        serde_json::json!([])
    );
    let accepted = a.json(&["notifications", "accept", &b_id]);
    assert_eq!(accepted["moved"], 1);
    let inbox = a.json(&["notifications", "inbox", "read"]);
    assert_eq!(inbox[0]["data"]["vault_name"], "prod");
    assert_eq!(
        a.json(&["notifications", "inbox", "read", "--untrusted"]),
        serde_json::json!([])
    );
    a.run(&["notifications", "block", "not-a-node"])
        .fails(65, "not-a-node");
}

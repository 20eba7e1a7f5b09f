//! `keynode vaults ...`

use crate::support::*;

#[test]
fn create_list_rename_delete() {
    let a = Agent::started();
    let v = a.json(&["vaults", "create", "prod"]);
    assert_eq!(v["name"], "prod");
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with('z'));
    a.run(&["vaults", "create", "dev"]).success();

    let list = a.json(&["vaults", "list"]);
    let names: Vec<_> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, ["dev", "prod"]);
    assert!(a.run(&["vaults", "list"]).success().contains(&id));

    a.run(&["vaults", "create", "prod"]).fails(73, "prod");
    a.run(&["vaults", "rename", "prod", "production"]).success();
    a.run(&["vaults", "rename", "production", "dev"])
        .fails(73, "dev");
    // By id as well as by name.
    a.run(&["vaults", "rename", &id, "prod2"]).success();
    let list = a.json(&["vaults", "list"]);
    assert!(
        list.as_array()
            .expect("array")
            .iter()
            .any(|v| v["name"] == "prod2" && v["id"] == id.as_str())
    );

    a.run(&["vaults", "delete", "prod2"]).success();
    a.run(&["vaults", "delete", "prod2"]).fails(66, "prod2");
    assert_eq!(
        a.json(&["vaults", "list"]).as_array().expect("array").len(),
        1
    );
    // A deleted vault's name can be reused, with a fresh id.
    let again = a.json(&["vaults", "create", "prod2"]);
    assert_ne!(again["id"], id.as_str());
    assert!(!a.node.join("vaults").read_dir().expect("dir").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .contains(&id)
    }));
}

#[test]
fn invalid_vault_names_are_refused() {
    let a = Agent::started();
    let long = "x".repeat(256);
    for (name, needle) in [
        ("a:b", "':'"),
        ("a/b", "'/'"),
        ("", "empty"),
        (long.as_str(), "255"),
        ("tab\there", "'\\t'"),
    ] {
        a.run(&["vaults", "create", name]).fails(65, needle);
    }
    a.run(&["vaults", "create", &"y".repeat(255)]).success();
    a.run(&["vaults", "create", "ok"]).success();
    a.run(&["vaults", "rename", "ok", "no:pe"]).fails(65, "':'");
    assert_eq!(
        a.json(&["vaults", "list"]).as_array().expect("array").len(),
        2
    );
}

#[test]
fn missing_vaults_are_not_found() {
    let a = Agent::started();
    a.run(&["vaults", "delete", "ghost"]).fails(66, "ghost");
    a.run(&["vaults", "rename", "ghost", "x"])
        .fails(66, "ghost");
    a.run(&["vaults", "log", "ghost"]).fails(66, "ghost");
    a.run(&["secrets", "list", "ghost"]).fails(66, "ghost");
    a.run(&["secrets", "get", "ghost:x"]).fails(66, "ghost");
    a.run_stdin(&["secrets", "write", "ghost:x"], b"v")
        .fails(66, "ghost");
}

#[test]
fn log_and_version_append_history() {
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    a.run_stdin(&["secrets", "write", "v:key"], b"one")
        .success();
    a.run_stdin(&["secrets", "write", "v:key"], b"two")
        .success();
    a.run_stdin(&["secrets", "write", "v:other"], b"x")
        .success();

    let log = a.json(&["vaults", "log", "v"]);
    let log = log.as_array().expect("array");
    assert_eq!(log.len(), 4, "initial commit + 3 writes: {log:?}");
    assert!(log[0]["message"].as_str().expect("msg").contains("other"));
    assert!(log[3]["message"].as_str().expect("msg").contains("v"));
    let node_id = a.json(&["agent", "status"])["node_id"].clone();
    assert!(log.iter().all(|c| {
        c["author"]
            .as_str()
            .expect("author")
            .contains(node_id.as_str().expect("id"))
    }));

    let depth = a.json(&["vaults", "log", "v", "--depth", "2"]);
    assert_eq!(depth.as_array().expect("array").len(), 2);
    let first_write = log[2]["oid"].as_str().expect("oid").to_owned();
    let from = a.json(&["vaults", "log", "v", "--commit", &first_write]);
    assert_eq!(from.as_array().expect("array").len(), 2);
    assert_eq!(from[0]["oid"], first_write.as_str());

    // Reading an old version.
    assert_eq!(
        a.run(&["secrets", "get", "v:key", "--at", &first_write])
            .success(),
        "one"
    );
    a.run(&["secrets", "get", "v:other", "--at", &first_write])
        .fails(66, "other");

    // Restoring appends a commit; nothing is rewritten.
    a.run(&["vaults", "version", "v", &first_write[..10]])
        .success();
    assert_eq!(a.run(&["secrets", "get", "v:key"]).success(), "one");
    a.run(&["secrets", "get", "v:other"]).fails(66, "other");
    let after = a.json(&["vaults", "log", "v"]);
    let after = after.as_array().expect("array");
    assert_eq!(after.len(), 5);
    assert_eq!(after[1]["oid"], log[0]["oid"]);
    // Restoring the same version again changes nothing.
    let same = a.json(&["vaults", "version", "v", &first_write]);
    assert_eq!(same["committed"], false);
    assert_eq!(
        a.json(&["vaults", "log", "v"])
            .as_array()
            .expect("array")
            .len(),
        5
    );

    a.run(&["vaults", "version", "v", "nonsense"])
        .fails(66, "nonsense");
    a.run(&["vaults", "log", "v", "--commit", "deadbeef"])
        .fails(66, "deadbeef");
}

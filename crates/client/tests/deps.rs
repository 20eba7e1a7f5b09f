//! The client crate stays light: a program that reads its secrets from
//! keynode links no git, no LMDB and no node.

/// The names in the `[dependencies]` table of a Cargo manifest, and each
/// one's line.
fn dependencies(manifest: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            out.push((name.to_owned(), line.to_owned()));
        }
    }
    out
}

#[test]
fn the_client_depends_on_no_storage_network_or_node_crate() {
    let deps = dependencies(include_str!("../Cargo.toml"));
    assert!(
        deps.iter().any(|(name, _)| name == "tokio"),
        "parsed nothing"
    );
    for banned in [
        "git2",
        "heed3",
        "libgit2-sys",
        "keynode-vaults",
        "keynode-agent",
        "keynode-net",
        "keynode-acl",
        "keynode-gestalt",
        "keynode-notify",
        "keynode-audit",
        "actix",
    ] {
        assert!(
            deps.iter().all(|(name, _)| name != banned),
            "depends on {banned}"
        );
    }
    // keynode-core without its `store` feature, the one that brings LMDB.
    let (_, core) = deps
        .iter()
        .find(|(name, _)| name == "keynode-core")
        .expect("keynode-core");
    assert!(core.contains("default-features = false"), "{core}");
    let core_manifest = include_str!("../../core/Cargo.toml");
    assert!(core_manifest.contains("heed3 = { workspace = true, optional = true }"));
    assert!(core_manifest.contains("store = [\"dep:heed3\"]"));
}

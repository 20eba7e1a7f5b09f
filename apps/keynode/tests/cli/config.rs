//! `keynode.toml`: precedence (flag > environment > file > default) and
//! errors (exit 78, naming the key); the password from a systemd credential.

use crate::support::*;

fn port_of(a: &Agent) -> u64 {
    a.json(&["agent", "status"])["agent_port"]
        .as_u64()
        .expect("port")
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let a = Agent::new();
    std::fs::create_dir_all(&a.node).expect("node path");
    let (file_port, env_port, flag_port, other_port) =
        (free_port(), free_port(), free_port(), free_port());
    let password = a.password_file.to_str().expect("utf8").to_owned();
    std::fs::write(
        a.node.join("keynode.toml"),
        format!(
            "# every agent start setting may be here\nagent_port = {file_port}\npassword_file = \"{password}\"\nmax_vault_bytes = 1_000_000\nlog = \"debug\"\n"
        ),
    )
    .expect("config");
    let stop = || a.run(&["agent", "stop"]).success();

    // The file alone: its port, its password file, its log filter.
    a.start_with_env(&[], &[]).success();
    assert_eq!(port_of(&a), u64::from(file_port));
    let log = std::fs::read_to_string(a.node.join("agent.log")).expect("log");
    assert!(log.contains("DEBUG"), "the file's log filter is not used");
    stop();

    // The variable beats the file.
    let env_var = env_port.to_string();
    a.start_with_env(&[], &[("KEYNODE_AGENT_PORT", &env_var)])
        .success();
    assert_eq!(port_of(&a), u64::from(env_port));
    stop();

    // The flag beats both.
    let flag = flag_port.to_string();
    a.start_with_env(
        &["--agent-port", &flag],
        &[("KEYNODE_AGENT_PORT", &env_var)],
    )
    .success();
    assert_eq!(port_of(&a), u64::from(flag_port));
    stop();

    // `--config` reads another file instead; without a port there, the
    // default (0: any free port) applies.
    let other = a.dir.path().join("other.toml");
    let other_path = other.to_str().expect("utf8");
    std::fs::write(&other, format!("password_file = \"{password}\"\n")).expect("other");
    a.start_with_env(&["--config", other_path], &[]).success();
    let port = port_of(&a);
    assert!(port != u64::from(file_port) && port > 0);
    stop();
    std::fs::write(
        &other,
        format!("agent_port = {other_port}\npassword_file = \"{password}\"\n"),
    )
    .expect("other");
    a.start_with_env(&["--config", other_path], &[]).success();
    assert_eq!(port_of(&a), u64::from(other_port));
}

#[test]
fn a_bad_config_is_refused_with_78_naming_the_key() {
    let a = Agent::new();
    std::fs::create_dir_all(&a.node).expect("node path");
    let config = a.node.join("keynode.toml");
    for (text, needle) in [
        ("agent_hots = \"0.0.0.0\"\n", "unknown key `agent_hots`"),
        ("agent_port = \"x\"\n", "key `agent_port`"),
        ("agent_port = 70000\n", "key `agent_port`"),
        ("max_vault_bytes = -1\n", "key `max_vault_bytes`"),
        ("seed_nodes = [\"nonsense\"]\n", "key `seed_nodes`"),
        ("seed_nodes = \"not a list\"\n", "key `seed_nodes`"),
        ("relays = [\"nobody@nowhere\"]\n", "key `relays`"),
        ("dht = \"maybe\"\n", "key `dht`"),
        ("log = \"[[[\"\n", "key `log`"),
        ("agent_port = 1\nagent_port = 2\n", "line 2"),
        ("[network\n", "line 1"),
    ] {
        std::fs::write(&config, text).expect("config");
        let out = a.start().fails(78, needle);
        assert!(out.contains("keynode.toml"), "{out}");
        a.run(&["agent", "status"]).fails(69, "agent start");
    }
    // A file named with --config must exist.
    std::fs::remove_file(&config).expect("rm");
    let missing = a.dir.path().join("missing.toml");
    a.run(&[
        "agent",
        "start",
        "--background",
        "--password-file",
        a.password_file.to_str().unwrap(),
        "--config",
        missing.to_str().unwrap(),
    ])
    .fails(78, "missing.toml");
    // A bad file is no reason to refuse a node with no file at all.
    a.start().success();
}

#[test]
fn the_password_comes_from_a_systemd_credential() {
    let a = Agent::new();
    let credentials = a.dir.path().join("credentials");
    std::fs::create_dir_all(&credentials).expect("dir");
    std::fs::copy(&a.password_file, credentials.join("password")).expect("credential");
    let dir = credentials.to_str().expect("utf8");
    a.start_with_env(&[], &[("CREDENTIALS_DIRECTORY", dir)])
        .success();
    a.run(&["agent", "stop"]).success();
    // The flag and KEYNODE_PASSWORD come first: a wrong one is refused.
    std::fs::write(credentials.join("password"), "not the password").expect("write");
    a.start_with_env(&[], &[("CREDENTIALS_DIRECTORY", dir)])
        .fails(77, "wrong password");
    a.start_with_env(
        &[],
        &[
            ("CREDENTIALS_DIRECTORY", dir),
            ("KEYNODE_PASSWORD", PASSWORD),
        ],
    )
    .success();
}

#[test]
fn the_readme_example_is_a_whole_and_valid_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let start = readme
        .find("```toml\n# ~/.local/share/keynode/keynode.toml")
        .expect("the example");
    let example = &readme[start + "```toml\n".len()..];
    let example = &example[..example.find("```").expect("its end")];
    // Every key a config may hold is in the example.
    for key in [
        "agent_host",
        "agent_port",
        "seed_nodes",
        "max_vault_bytes",
        "max_state_bytes",
        "dht",
        "dht_bootstrap",
        "relay_serve",
        "relays",
        "no_listen",
        "password_file",
        "log",
    ] {
        assert!(
            example.contains(&format!("\n{key} = ")),
            "the example lacks {key}"
        );
    }
    let a = Agent::new();
    std::fs::create_dir_all(&a.node).expect("node path");
    let password = a.password_file.to_str().expect("utf8");
    let metrics = format!("127.0.0.1:{}", free_port());
    let text = example
        .replace("/home/me/.config/keynode/password", password)
        .replace("127.0.0.1:9464", &metrics);
    std::fs::write(a.node.join("keynode.toml"), text).expect("config");
    a.start_with_env(&[], &[]).success();
    assert_eq!(a.json(&["agent", "status"])["status"], "live");
}

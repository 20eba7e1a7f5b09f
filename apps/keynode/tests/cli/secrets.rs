//! `keynode secrets ...`

use rand::RngCore;

use crate::support::*;

fn agent_with_vault() -> Agent {
    let a = Agent::started();
    a.run(&["vaults", "create", "v"]).success();
    a
}

#[test]
fn create_write_get_and_aliases() {
    let a = agent_with_vault();
    let file = a.path("in.txt");
    write_file(&file, b"hunter2");
    let f = file.to_str().expect("utf8");
    a.run(&["secrets", "create", f, "v:db/password"]).success();
    assert_eq!(
        a.run(&["secrets", "get", "v:db/password"]).success(),
        "hunter2"
    );
    assert_eq!(
        a.run(&["secrets", "cat", "v:db/password"]).success(),
        "hunter2"
    );
    // create refuses to overwrite; write replaces.
    a.run(&["secrets", "create", f, "v:db/password"])
        .fails(73, "db/password");
    a.run_stdin(&["secrets", "write", "v:db/password"], b"s3cret")
        .success();
    assert_eq!(
        a.run(&["secrets", "get", "v:db/password"]).success(),
        "s3cret"
    );
    // Writing the same content makes no commit.
    let same = a.run_stdin(
        &["--format", "json", "secrets", "write", "v:db/password"],
        b"s3cret",
    );
    let doc: serde_json::Value = serde_json::from_str(&same.success()).expect("json");
    assert_eq!(doc["committed"], false);
    // JSON form of get.
    assert_eq!(
        a.json(&["secrets", "get", "v:db/password"])["content"],
        "s3cret"
    );
    // The vault can be named by id.
    let id = a.json(&["vaults", "list"])[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        a.run(&["secrets", "get", &format!("{id}:db/password")])
            .success(),
        "s3cret"
    );
    a.run(&["secrets", "create", "/nonexistent/file", "v:x"])
        .fails(66, "nonexistent");
}

#[test]
fn list_mkdir_rename_rm_stat() {
    let a = agent_with_vault();
    a.run_stdin(&["secrets", "write", "v:a"], b"1").success();
    a.run_stdin(&["secrets", "write", "v:dir/b"], b"22")
        .success();
    a.run(&["secrets", "mkdir", "v:empty"]).success();
    a.run(&["secrets", "mkdir", "v:deep/er/dir"])
        .fails(66, "deep");
    a.run(&["secrets", "mkdir", "-p", "v:deep/er/dir"])
        .success();
    a.run(&["secrets", "mkdir", "v:empty"]).fails(73, "empty");

    assert_eq!(
        a.run(&["secrets", "list", "v"]).success(),
        "a\ndeep/\ndir/\nempty/\n"
    );
    assert_eq!(a.run(&["secrets", "ls", "v:dir"]).success(), "b\n");
    assert_eq!(a.run(&["secrets", "ls", "v:empty"]).success(), "");
    let entries = a.json(&["secrets", "list", "v"]);
    assert_eq!(entries[0]["name"], "a");
    a.run(&["secrets", "list", "v:nope"]).fails(66, "nope");

    let st = a.json(&["secrets", "stat", "v:dir/b"]);
    assert_eq!(st["size"], 2);
    assert_eq!(st["path"], "dir/b");
    assert!(
        a.run(&["secrets", "stat", "v:dir/b"])
            .success()
            .contains("size: 2")
    );
    a.run(&["secrets", "stat", "v:zzz"]).fails(66, "zzz");

    a.run(&["secrets", "rename", "v:dir/b", "c"]).success();
    assert_eq!(a.run(&["secrets", "get", "v:dir/c"]).success(), "22");
    a.run(&["secrets", "get", "v:dir/b"]).fails(66, "dir/b");
    a.run(&["secrets", "rename", "v:dir/c", "../escape"])
        .fails(65, "..");
    a.run(&["secrets", "rename", "v:a", "dir"]).fails(73, "dir");

    a.run(&["secrets", "rm", "v:dir"]).fails(65, "dir");
    a.run(&["secrets", "rm", "v:a", "v:dir", "--recursive"])
        .success();
    assert_eq!(
        a.run(&["secrets", "list", "v"]).success(),
        "deep/\nempty/\n"
    );
    a.run(&["secrets", "rm", "v:a"]).fails(66, "a");
    // One rm of two paths is one commit.
    let log = a.json(&["vaults", "log", "v"]);
    assert!(
        log[0]["message"].as_str().expect("m").lines().count() >= 2,
        "{log}"
    );
    // A directory is not a file.
    a.run(&["secrets", "get", "v:deep"]).fails(65, "deep");
    a.run_stdin(&["secrets", "write", "v:deep"], b"x")
        .fails(65, "deep");
}

#[test]
fn bad_secret_paths_are_refused() {
    let a = agent_with_vault();
    for (target, needle) in [
        ("v:../x", ".."),
        ("v:a/../../x", ".."),
        ("v:/etc/passwd", "relative"),
        ("v:a//b", "empty segment"),
        ("v:a/", "empty segment"),
        ("v:", "empty"),
        ("v", "VAULT:PATH"),
        ("v:x/.git/config", ".git"),
    ] {
        let r = a.run_stdin(&["secrets", "write", target], b"x");
        let code = if needle == "VAULT:PATH" { 64 } else { 65 };
        r.fails(code, needle);
        a.run(&["secrets", "get", target]).fails(code, needle);
    }
    // Control characters (NUL cannot be passed in argv; see the agent's tests).
    a.run_stdin(&["secrets", "write", "v:a\u{1}b"], b"x")
        .fails(65, "control");
    // Nothing was written.
    assert_eq!(
        a.json(&["vaults", "log", "v"])
            .as_array()
            .expect("log")
            .len(),
        1
    );
    assert_eq!(a.run(&["secrets", "list", "v"]).success(), "");
}

#[test]
fn binary_secrets_round_trip_with_bounded_memory() {
    let a = agent_with_vault();
    // Empty.
    a.run_stdin(&["secrets", "write", "v:empty"], b"").success();
    let got = a.run(&["secrets", "get", "v:empty"]);
    assert!(got.out.stdout.is_empty());
    assert_eq!(a.json(&["secrets", "stat", "v:empty"])["size"], 0);

    // 50 MiB of random bytes, through stdin, from a file, and back out; the
    // agent's heap stays small (the data streams in 64 KiB chunks).
    let pid = a.pid();
    let before = rss_anon_kib(pid);
    let mut big = vec![0u8; 50 * 1024 * 1024];
    rand::thread_rng().fill_bytes(&mut big);
    let file = a.path("big-in.bin");
    write_file(&file, &big);
    let ((), peak) = peak_anon_during(pid, || {
        a.run_stdin(&["secrets", "write", "v:big.bin"], &big)
            .success();
        let got = a.run(&["secrets", "get", "v:big.bin"]);
        assert!(got.out.status.success());
        assert!(got.out.stdout == big, "50 MiB secret did not round-trip");
        a.run(&[
            "secrets",
            "create",
            file.to_str().expect("utf8"),
            "v:big2.bin",
        ])
        .success();
    });
    assert_eq!(
        a.json(&["secrets", "stat", "v:big2.bin"])["size"],
        big.len()
    );
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 16,
        "agent heap grew by {growth_mib} MiB while streaming 50 MiB"
    );
}

#[test]
fn edit_keeps_its_copy_private_and_removes_it_on_hangup() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let a = agent_with_vault();
    a.run_stdin(&["secrets", "write", "v:conf"], b"old")
        .success();
    let runtime = a.path("runtime");
    std::fs::create_dir(&runtime).expect("runtime dir");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let seen = a.path("seen");
    // An editor that says where its file is, then waits to be hung up on.
    let script = a.path("editor.sh");
    write_file(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" > {}\nexec sleep 60\n",
            seen.display()
        )
        .as_bytes(),
    );
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().expect("utf8")])
        .status()
        .expect("chmod");
    let child = a
        .command()
        .args(["secrets", "edit", "v:conf"])
        .env("EDITOR", &script)
        .env_remove("VISUAL")
        .env("XDG_RUNTIME_DIR", &runtime)
        // Its own process group, as a terminal's foreground job is.
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("edit");
    wait_for(
        || std::fs::read_to_string(&seen).is_ok_and(|s| s.ends_with('\n')),
        "the editor to start",
    );
    let file = std::path::PathBuf::from(std::fs::read_to_string(&seen).expect("seen").trim());
    let dir = file.parent().expect("dir").to_path_buf();
    assert!(
        dir.starts_with(&runtime),
        "{} not under $XDG_RUNTIME_DIR",
        dir.display()
    );
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the copy's directory is {mode:o}");
    assert_eq!(std::fs::read(&file).expect("copy"), b"old");
    // SIGINT is the editor's business: the copy stays while it runs.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    // The terminal goes away (SIGHUP to the whole job): the copy goes with
    // it, the secret is unchanged.
    std::process::Command::new("kill")
        .args(["-HUP", "--", &format!("-{pid}")])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    // Hung up (129), or the editor died of the hangup first (1): either way
    // the secret is unchanged and the copy gone.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(129 | 1)), "{err}");
    assert!(err.contains("secret unchanged"), "{err}");
    assert!(!dir.exists(), "the plaintext copy is still there");
    assert_eq!(a.run(&["secrets", "get", "v:conf"]).success(), "old");
}

#[test]
fn edit_uses_the_editor() {
    let a = agent_with_vault();
    a.run_stdin(&["secrets", "write", "v:conf"], b"old")
        .success();
    let script = a.path("editor.sh");
    write_file(&script, b"#!/bin/sh\nprintf 'new' > \"$1\"\n");
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().expect("utf8")])
        .status()
        .expect("chmod");
    let run = |args: &[&str], editor: &str| {
        a.command()
            .args(args)
            .env("EDITOR", editor)
            .env_remove("VISUAL")
            .output()
            .expect("run")
    };
    let out = run(
        &["secrets", "edit", "v:conf"],
        script.to_str().expect("utf8"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.run(&["secrets", "get", "v:conf"]).success(), "new");
    // A new secret can be made by editing.
    let out = run(
        &["secrets", "edit", "v:fresh"],
        script.to_str().expect("utf8"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.run(&["secrets", "get", "v:fresh"]).success(), "new");
    // An editor that does nothing makes no commit; a failing one changes nothing.
    let before = a
        .json(&["vaults", "log", "v"])
        .as_array()
        .expect("log")
        .len();
    assert!(run(&["secrets", "edit", "v:conf"], "true").status.success());
    let out = run(&["secrets", "edit", "v:conf"], "false");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        a.json(&["vaults", "log", "v"])
            .as_array()
            .expect("log")
            .len(),
        before
    );
}

#[test]
fn dir_imports_a_tree_as_one_commit() {
    let a = agent_with_vault();
    let src = a.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    write_file(&src.join("top"), b"t");
    write_file(&src.join("sub/one"), b"1");
    write_file(&src.join("sub/deeper/two"), b"2");
    // Small files are written together, larger ones streamed: a mix, with a
    // large file between small ones, comes back whole.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write_file(&src.join("sub/big"), &big);
    let before = a
        .json(&["vaults", "log", "v"])
        .as_array()
        .expect("log")
        .len();
    a.run(&["secrets", "dir", src.to_str().expect("utf8"), "v:imported"])
        .success();
    assert_eq!(
        a.json(&["vaults", "log", "v"])
            .as_array()
            .expect("log")
            .len(),
        before + 1
    );
    assert_eq!(
        a.run(&["secrets", "get", "v:imported/sub/deeper/two"])
            .success(),
        "2"
    );
    assert_eq!(a.run(&["secrets", "get", "v:imported/top"]).success(), "t");
    let got = a.run(&["secrets", "get", "v:imported/sub/big"]);
    got.success();
    assert!(got.out.stdout == big, "the large file came back changed");
    a.run(&["secrets", "dir", src.to_str().expect("utf8"), "v"])
        .success();
    assert_eq!(a.run(&["secrets", "get", "v:sub/one"]).success(), "1");
    a.run(&["secrets", "dir", "/nonexistent", "v"])
        .fails(66, "nonexistent");
}

#[test]
fn env_prints_and_runs_with_secrets() {
    let a = agent_with_vault();
    a.run_stdin(&["secrets", "write", "v:DB_USER"], b"admin")
        .success();
    a.run_stdin(&["secrets", "write", "v:app/API_KEY"], b"k'ey")
        .success();
    let unix = a.run(&["secrets", "env", "v"]).success();
    assert!(unix.contains("export DB_USER='admin'"), "{unix}");
    assert!(unix.contains("export API_KEY='k'\\''ey'"), "{unix}");
    let json = a.json(&["secrets", "env", "v:app"]);
    assert_eq!(json, serde_json::json!({"API_KEY": "k'ey"}));
    let json = a
        .run(&["secrets", "env", "v:DB_USER", "--env-format", "json"])
        .success();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).expect("json"),
        serde_json::json!({"DB_USER": "admin"})
    );
    let ran = a
        .run(&[
            "secrets",
            "env",
            "v",
            "--",
            "sh",
            "-c",
            "echo \"$DB_USER/$API_KEY\"",
        ])
        .success();
    assert_eq!(ran, "admin/k'ey\n");
    // A name that is not an environment variable name is refused.
    a.run_stdin(&["secrets", "write", "v:bad-name"], b"x")
        .success();
    a.run(&["secrets", "env", "v"]).fails(65, "bad-name");
    a.run(&["secrets", "env", "v:missing"]).fails(66, "missing");
}

#[test]
fn env_refuses_variables_that_change_how_programs_run_unless_allowed() {
    let a = agent_with_vault();
    a.run_stdin(&["secrets", "write", "v:TOKEN"], b"t")
        .success();
    for (name, value) in [
        ("LD_PRELOAD", "/tmp/evil.so"),
        ("BASH_ENV", "/tmp/evil.sh"),
        ("PS4", "$(touch /tmp/pwned)"),
        ("NODE_OPTIONS", "--require /tmp/evil.js"),
        ("PYTHONSTARTUP", "/tmp/evil.py"),
        ("PATH", "/tmp/evil"),
        ("SHELLOPTS", "xtrace"),
    ] {
        let dir = format!("v:{name}-dir/{name}");
        a.run_stdin(&["secrets", "write", &dir], value.as_bytes())
            .success();
        let target = format!("v:{name}-dir");
        // Printed or run, with the vault's other secrets or alone: refused,
        // naming the variable and the flag that allows it.
        let flag = format!("--allow-env {name}");
        a.run(&["secrets", "env", &target]).fails(65, &flag);
        a.run(&["secrets", "env", "v:TOKEN", &target, "--", "true"])
            .fails(65, &flag);
        // Allowed by name, it is set.
        let out = a
            .run(&[
                "secrets",
                "env",
                &target,
                "--allow-env",
                name,
                "--env-format",
                "json",
            ])
            .success();
        let env: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(env[name], value);
    }
    // Allowing one name allows no other.
    a.run(&["secrets", "env", "v", "--allow-env", "PATH"])
        .fails(65, "--allow-env");
    a.run(&["secrets", "env", "v:TOKEN"]).success();
}

//! The sharing story, with four real agents (B owns a vault; A and A2 are one
//! person's gestalt; C is an outsider), each in its own temporary node path,
//! talking Noise-encrypted TCP on loopback.

use std::future::Future;
use std::time::Instant;

use keynode_agent::{Node, NodeConfig};
use keynode_client::api::{ErrorKind, Request, Response};
use keynode_client::{Client, ClientError};
use keynode_core::{SecretPath, VaultName};

/// Runs one step: prints its outcome and time; a failure ends the demo.
async fn step<T>(name: &str, f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    let t = Instant::now();
    let r = f.await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    match &r {
        Ok(_) => println!("  ok    {name:<62} {ms:>8.1} ms"),
        Err(e) => println!("  FAIL  {name:<62} {ms:>8.1} ms\n        {e}"),
    }
    r.map_err(|e| format!("{name}: {e}"))
}

fn vault_name(name: &str) -> Result<VaultName, String> {
    VaultName::new(name).map_err(|e| e.to_string())
}

fn secret_path(path: &str) -> Result<SecretPath, String> {
    SecretPath::new(path).map_err(|e| e.to_string())
}

async fn call(node: &Node, req: Request) -> Result<Response, ClientError> {
    Client::connect(&node.socket_path()).await?.call(req).await
}

async fn ok(node: &Node, req: Request) -> Result<Response, String> {
    call(node, req).await.map_err(|e| e.to_string())
}

/// Expects the request to be refused with `kind`.
async fn refused(node: &Node, req: Request, kind: ErrorKind) -> Result<String, String> {
    match call(node, req).await {
        Err(ClientError::Api(e)) if e.kind == kind => Ok(e.message),
        Err(e) => Err(format!("refused, but not as expected: {e}")),
        Ok(r) => Err(format!("was not refused: {r:?}")),
    }
}

async fn secret(node: &Node, vault: &str, path: &str) -> Result<String, String> {
    let mut out = Vec::new();
    Client::connect(&node.socket_path())
        .await
        .map_err(|e| e.to_string())?
        .download(
            Request::SecretsGet {
                vault: vault.into(),
                path: secret_path(path)?,
                at: None,
            },
            &mut out,
        )
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

async fn write(node: &Node, vault: &str, path: &str, value: &str) -> Result<(), String> {
    let mut data = value.as_bytes();
    Client::connect(&node.socket_path())
        .await
        .map_err(|e| e.to_string())?
        .upload(
            Request::SecretsWrite {
                vault: vault.into(),
                path: secret_path(path)?,
                create_new: false,
            },
            &mut data,
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn knows(from: &Node, to: &Node) -> Result<(), String> {
    ok(
        from,
        Request::NodesAdd {
            node: to.node_id(),
            host: "127.0.0.1".into(),
            port: to.listen_addr().port(),
        },
    )
    .await
    .map(drop)
}

fn expect(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// Waits until `from` finds `to`'s record on the DHT.
async fn found(from: &Node, to: &Node) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(Response::Found(f)) = call(from, Request::NodesFind { node: to.node_id() }).await
            && f.dht == "found"
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{} never found {} on the DHT",
                from.node_id(),
                to.node_id()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Plays the story; returns the first step that misbehaved. With `dht`,
/// the four nodes join a local Mainline testnet and find each other there
/// by NodeId: nobody learns an address.
pub async fn run(dht: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!("keynode demo: four nodes in {}", dir.path().display());
    let testnet = if dht {
        let t = tokio::task::spawn_blocking(|| mainline::Testnet::builder(10).build())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot start the DHT testnet: {e}"))?;
        println!(
            "        a local DHT testnet of 10 nodes: {}",
            t.bootstrap.join(",")
        );
        Some(t)
    } else {
        None
    };
    let bootstrap = testnet.as_ref().map(|t| t.bootstrap.clone());
    let start = |name: &'static str| {
        let mut cfg = NodeConfig::new(dir.path().join(name), format!("{name} password"));
        cfg.provider_dir = Some(dir.path().join("offline-provider"));
        cfg.dht = bootstrap.clone().map(|b| keynode_agent::DhtSettings {
            bootstrap: Some(b),
            port: None,
        });
        async move { Node::start(cfg).await.map_err(|e| e.to_string()) }
    };
    let b = step("start node B (the owner)", start("b")).await?;
    let a = step("start node A", start("a")).await?;
    let a2 = step("start node A2 (A's second machine)", start("a2")).await?;
    let c = step("start node C (an outsider)", start("c")).await?;
    for (n, name) in [(&b, "B"), (&a, "A"), (&a2, "A2"), (&c, "C")] {
        println!(
            "        {name} = {} on 127.0.0.1:{}",
            n.node_id(),
            n.listen_addr().port()
        );
    }
    if dht {
        step("everyone finds everyone on the DHT by NodeId", async {
            for x in [&b, &a, &a2, &c] {
                for y in [&b, &a, &a2, &c] {
                    if x.node_id() != y.node_id() {
                        found(x, y).await?;
                    }
                }
            }
            Ok(())
        })
        .await?;
    } else {
        step("everyone learns everyone's address", async {
            for x in [&b, &a, &a2, &c] {
                for y in [&b, &a, &a2, &c] {
                    if x.node_id() != y.node_id() {
                        knows(x, y).await?;
                    }
                }
            }
            Ok(())
        })
        .await?;
    }

    step("B creates vault `prod` with a secret", async {
        ok(
            &b,
            Request::VaultsCreate {
                name: vault_name("prod")?,
            },
        )
        .await?;
        write(&b, "prod", "db/password", "hunter2").await
    })
    .await?;

    step(
        "A and A2 form one gestalt (A2 invites A, A claims A2)",
        async {
            ok(&a2, Request::IdentitiesInvite { node: a.node_id() }).await?;
            ok(&a, Request::NodesClaim { node: a2.node_id() })
                .await
                .map(drop)
        },
    )
    .await?;

    step("A and A2 trust B (accept its notifications)", async {
        for n in [&a, &a2] {
            ok(
                n,
                Request::IdentitiesTrust {
                    gestalt: b.node_id().into(),
                },
            )
            .await?;
        }
        Ok(())
    })
    .await?;

    step("B trusts A and discovers A2 through A's sigchain", async {
        ok(
            &b,
            Request::IdentitiesTrust {
                gestalt: a.node_id().into(),
            },
        )
        .await?;
        let r = ok(
            &b,
            Request::IdentitiesDiscover {
                gestalt: a.node_id().into(),
            },
        )
        .await?;
        let Response::Discovered(d) = r else {
            return Err(format!("{r:?}"));
        };
        let nodes = d.gestalt.map(|g| g.nodes).unwrap_or_default();
        expect(
            nodes.contains(&a2.node_id()),
            format!("A2 not in A's gestalt: {nodes:?}"),
        )
    })
    .await?;

    step(
        "B shares `prod` with A (the whole gestalt gets clone, pull, scan)",
        async {
            ok(
                &b,
                Request::VaultsShare {
                    vault: "prod".into(),
                    to: a.node_id().into(),
                },
            )
            .await
            .map(drop)
        },
    )
    .await?;

    step("A2 sees the VaultShare notification", async {
        for _ in 0..100 {
            let r = ok(
                &a2,
                Request::NotificationsInboxRead {
                    unread: true,
                    limit: None,
                    newest_first: true,
                },
            )
            .await?;
            if let Response::Notifications(list) = r
                && list
                    .iter()
                    .any(|n| n.kind == "vault_share" && n.from == b.node_id())
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err("no VaultShare arrived within 5 s".into())
    })
    .await?;

    step("A2 scans B and sees `prod`", async {
        let r = ok(&a2, Request::VaultsScan { node: b.node_id() }).await?;
        let Response::Scan(list) = r else {
            return Err(format!("{r:?}"));
        };
        expect(
            list.iter().any(|v| v.name == "prod"),
            format!("scan: {list:?}"),
        )
    })
    .await?;

    step(
        "A2 clones `prod` (A2 was never named in the share)",
        async {
            ok(
                &a2,
                Request::VaultsClone {
                    vault: "prod".into(),
                    node: b.node_id(),
                    follow: false,
                },
            )
            .await?;
            let v = secret(&a2, "prod", "db/password").await?;
            expect(v == "hunter2", format!("clone has {v:?}"))
        },
    )
    .await?;

    step(
        "B changes the secret; A2 pulls and sees the change",
        async {
            write(&b, "prod", "db/password", "correct horse").await?;
            ok(
                &a2,
                Request::VaultsPull {
                    vault: "prod".into(),
                    node: None,
                    pull_vault: None,
                },
            )
            .await?;
            let v = secret(&a2, "prod", "db/password").await?;
            expect(v == "correct horse", format!("after pull: {v:?}"))
        },
    )
    .await?;

    step(
        "C (outsider) is refused: scan, clone, and a vault that does not exist",
        async {
            let m1 = refused(
                &c,
                Request::VaultsScan { node: b.node_id() },
                ErrorKind::PermissionDenied,
            )
            .await?;
            let m2 = refused(
                &c,
                Request::VaultsClone {
                    vault: "prod".into(),
                    node: b.node_id(),
                    follow: false,
                },
                ErrorKind::PermissionDenied,
            )
            .await?;
            let m3 = refused(
                &c,
                Request::VaultsClone {
                    vault: "no-such-vault".into(),
                    node: b.node_id(),
                    follow: false,
                },
                ErrorKind::PermissionDenied,
            )
            .await?;
            expect(
                m2 == m3,
                format!("refusals differ, leaking existence: {m2:?} vs {m3:?}"),
            )?;
            let _ = m1;
            Ok(())
        },
    )
    .await?;

    step("B unshares `prod`; A2's next pull is refused", async {
        ok(
            &b,
            Request::VaultsUnshare {
                vault: "prod".into(),
                to: a.node_id().into(),
            },
        )
        .await?;
        refused(
            &a2,
            Request::VaultsPull {
                vault: "prod".into(),
                node: None,
                pull_vault: None,
            },
            ErrorKind::PermissionDenied,
        )
        .await
        .map(drop)
    })
    .await?;

    step(
        "A2's clone is read-only; A2 forks it and writes to the fork",
        async {
            let mut data: &[u8] = b"mine";
            let w = Client::connect(&a2.socket_path())
                .await
                .map_err(|e| e.to_string())?
                .upload(
                    Request::SecretsWrite {
                        vault: "prod".into(),
                        path: secret_path("x")?,
                        create_new: false,
                    },
                    &mut data,
                )
                .await;
            expect(
                matches!(w, Err(ClientError::Api(ref e)) if e.kind == ErrorKind::ReadOnly),
                format!("write to clone: {w:?}"),
            )?;
            ok(
                &a2,
                Request::VaultsFork {
                    vault: "prod".into(),
                    new_name: Some(vault_name("prod-mine")?),
                },
            )
            .await?;
            write(&a2, "prod-mine", "db/password", "my own").await?;
            let v = secret(&a2, "prod-mine", "db/password").await?;
            expect(v == "my own", format!("fork has {v:?}"))
        },
    )
    .await?;

    step("stop all nodes", async {
        for n in [a, a2, b, c] {
            n.stop().await;
        }
        Ok(())
    })
    .await?;
    println!("demo passed");
    Ok(())
}

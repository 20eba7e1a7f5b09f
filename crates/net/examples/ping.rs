//! The network alone, without the agent: two endpoints on loopback TCP, a
//! Noise XX handshake that proves each one's NodeId, a ping, and a typed
//! request to a service of our own.
//!
//! ```sh
//! cargo run -p keynode-net --example ping
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_core::{Keypair, NodeId};
use keynode_net::{AddressBook, NetConfig, Network, PeerAddress, RpcStream, Service, TcpTransport};

/// Answers a name with a greeting that names the caller (the NodeId its
/// handshake proved, not anything it claims).
struct Greeter;

impl Service for Greeter {
    fn serve(&self, peer: NodeId, mut stream: RpcStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Ok(Some(name)) = stream.recv::<String>().await {
                let _ = stream.send(&format!("hello {name}, you are {peer}")).await;
                let _ = stream.finish().await;
            }
        })
    }
}

/// An endpoint: a key, an address book in its own encrypted LMDB
/// environment, a listener on any free loopback port.
async fn endpoint(dir: &std::path::Path) -> Result<Network, Box<dyn std::error::Error>> {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    let env = keynode_core::store::open_env(dir, &key, 1 << 24, 16)?;
    let config = NetConfig {
        listen: "127.0.0.1:0".parse()?,
        handshake_timeout: Duration::from_secs(5),
        ..NetConfig::default()
    };
    let book = AddressBook::open(env)?;
    let identity = Arc::new(Keypair::generate());
    Ok(Network::start(identity, config, TcpTransport, book, Arc::new(Greeter)).await?)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = endpoint(a_dir.path()).await?;
    let b = endpoint(b_dir.path()).await?;
    // a learns where b listens; the handshake checks it is really b.
    a.book()
        .add(b.node_id(), PeerAddress::from(b.local_addr()))?;

    let rtt = a.ping(b.node_id()).await?;
    println!("a → b ping: {rtt:?}");
    let answer: String = a.call(b.node_id(), &"alice".to_owned()).await?;
    println!("b answered: {answer}");
    assert!(answer.ends_with(&a.node_id().to_string()));
    // b can answer back over the connection a opened: no address needed.
    b.ping(a.node_id()).await?;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[test]
fn runs() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run())
        .expect("the example runs");
}

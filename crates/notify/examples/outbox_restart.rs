//! The notifications actor alone, without the agent: a notification to an
//! unreachable node waits in the sender's outbox, survives the sender's
//! restart, and is delivered once the recipient can be reached.
//!
//! ```sh
//! cargo run -p keynode-notify --example outbox_restart
//! ```
//!
//! The network is a [`Deliver`] of our own: the agent plugs in its network
//! actor the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use futures_util::future::BoxFuture;
use keynode_core::{Clock, Keypair, NodeId, SystemClock};
use keynode_notify::messages::{InboxRead, OutboxRead, Receive, Send, Stop};
use keynode_notify::{
    Backoff, Deliver, DeliveryError, ManagerConfig, NotificationData, NotificationStore,
    NotificationsManager, Order, ReceiveError, SignedNotification, StoreConfig,
};

/// A wire to the recipient's actor, which can be cut.
struct Wire {
    from: NodeId,
    to: Mutex<Option<Addr<NotificationsManager>>>,
    up: AtomicBool,
}

impl Deliver for Wire {
    fn deliver(
        &self,
        _to: NodeId,
        signed: SignedNotification,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let target = self.to.lock().unwrap().clone();
        let (from, up) = (self.from, self.up.load(Ordering::SeqCst));
        Box::pin(async move {
            let Some(target) = target.filter(|_| up) else {
                return Err(DeliveryError::Unreachable("the wire is down".into()));
            };
            // `sender` is what the network's handshake proved.
            let receive = Receive {
                signed,
                sender: from,
                trusted: true,
            };
            match target.send(receive).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(ReceiveError::Refused(r))) => Err(DeliveryError::Rejected(r.to_string())),
                Ok(Err(e)) => Err(DeliveryError::Unreachable(e.to_string())),
                Err(e) => Err(DeliveryError::Unreachable(e.to_string())),
            }
        })
    }
}

fn env(dir: &std::path::Path) -> keynode_notify::Env {
    let key = keynode_core::datakey::DataKey::from_bytes([7; 32]);
    keynode_core::store::open_env(dir, &key, 1 << 26, 16).expect("env")
}

fn manager(dir: &std::path::Path, key: &Arc<Keypair>, wire: &Arc<Wire>) -> NotificationsManager {
    let config = StoreConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        ..StoreConfig::default()
    };
    let store = NotificationStore::open(env(dir), config).expect("store");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    NotificationsManager::new(
        Arc::new(store),
        key.clone(),
        clock,
        wire.clone(),
        ManagerConfig::default(),
    )
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a_key, b_key) = (Arc::new(Keypair::generate()), Arc::new(Keypair::generate()));
    let nowhere = Arc::new(Wire {
        from: b_key.node_id(),
        to: Mutex::new(None),
        up: AtomicBool::new(false),
    });
    let b = manager(b_dir.path(), &b_key, &nowhere).start();
    let wire = Arc::new(Wire {
        from: a_key.node_id(),
        to: Mutex::new(Some(b.clone())),
        up: AtomicBool::new(false),
    });

    // b cannot be reached: the notification waits in a's outbox.
    let a = manager(a_dir.path(), &a_key, &wire).start();
    let data = NotificationData::general("the vault prod is yours to clone")?;
    a.send(Send {
        to: b_key.node_id(),
        data,
    })
    .await??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "queued before the restart: {}",
        a.send(OutboxRead {}).await??.len()
    );

    // a stops (as at a restart) and starts again on the same state.
    a.send(Stop).await?;
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = manager(a_dir.path(), &a_key, &wire).start();
    let queued = a.send(OutboxRead {}).await??;
    println!("queued after the restart: {}", queued.len());
    assert_eq!(queued.len(), 1);

    // The wire comes up: the retry delivers it, and the outbox empties.
    wire.up.store(true, Ordering::SeqCst);
    let read = InboxRead {
        unread_only: false,
        limit: None,
        order: Order::Oldest,
    };
    for _ in 0..100 {
        if !b.send(read).await??.is_empty() && a.send(OutboxRead {}).await??.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inbox = b.send(read).await??;
    println!(
        "b's inbox: {:?}",
        inbox
            .iter()
            .map(|e| &e.notification.data)
            .collect::<Vec<_>>()
    );
    assert_eq!(inbox.len(), 1);
    assert!(a.send(OutboxRead {}).await??.is_empty());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    actix::System::new().block_on(run())
}

#[test]
fn runs() {
    main().expect("the example runs");
}

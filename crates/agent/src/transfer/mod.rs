//! Scan, clone, pull and fork across nodes: the agent carries the vault store's
//! transfer protocol (advert → wants/haves → pack) over one network stream, and
//! checks every request on the serving side against the caller's NodeId as
//! proven by the Noise handshake.
//!
//! A caller without permission learns nothing: "no such vault" and "not shared
//! with you" are the same [`DENIED`] answer.

use std::time::Duration;

mod fetch;
mod serve;

pub(crate) use fetch::{clone, fork, pull, scan};
pub(crate) use serve::{Serving, serve_scan};

/// The one answer to a scan, clone or pull that is not allowed.
pub const DENIED: &str = "vault access denied";
/// Longest wait for the next frame of a transfer.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Pack chunks in flight between the stream and the store, each ≤ 64 KiB
/// (when the store runs on its own thread; see
/// [`Executor::pipe_depth`](keynode_core::exec::Executor::pipe_depth)).
const PACK_QUEUE: usize = 8;

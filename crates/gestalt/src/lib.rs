//! keynode's gestalts (SPEC §5): which nodes and identities belong together,
//! and the signed claims that prove it.
//!
//! - [`GestaltGraph`] (and its actor [`GestaltManager`]) stores vertices
//!   ([`GestaltId`](keynode_core::GestaltId): nodes and `provider:identity`) and
//!   edges with the claims that prove them; a [`Gestalt`] is a connected
//!   component. Every mutation returns the [`GestaltEvent`]s it caused; the agent
//!   routes them to the ACL, which is how permissions follow gestalts.
//! - [`Sigchain`] is a node's own append-only, hash-linked chain of
//!   [`SignedClaim`]s.
//! - [`claims`] holds the cross-signing exchange as plain functions
//!   ([`propose_link`], [`countersign`], [`accept_countersigned`],
//!   [`claim_identity`]); its docs describe the protocol the agent runs.
//! - [`verify_chain`] checks a fetched chain; [`Discovery`] walks from a vertex
//!   through a [`ChainSource`] and [`IdentityProvider`]s and links only what
//!   verifies. [`OfflineProvider`] keeps identity claims in a directory, for tests
//!   and demos.
//!
//! ```
//! use keynode_core::{Keypair, SystemClock, TidGenerator};
//! use keynode_gestalt::{accept_countersigned, countersign, propose_link, verify_chain};
//!
//! let tids = TidGenerator::new(SystemClock);
//! let (a, b) = (Keypair::generate(), Keypair::generate());
//! // A proposes a link for its chain; B countersigns; A checks and keeps it.
//! let half = propose_link(None, &a, b.node_id(), tids.next_id())?;
//! let full = accept_countersigned(&half, countersign(half.clone(), &b)?)?;
//! // Anyone holding A's chain can verify it.
//! let links = verify_chain(a.node_id(), &[full], None)?;
//! assert_eq!(links.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod claims;
pub mod discovery;
mod graph;
mod manager;
pub mod messages;
pub mod provider;
mod sigchain;
mod verify;

pub use claims::{
    ChainHead, Claim, ClaimBody, ClaimError, ClaimHash, SignedClaim, accept_countersigned,
    claim_identity, countersign, propose_link, rotate, verify_claim,
};
pub use discovery::{
    ChainSource, Discovery, DiscoveryError, DiscoveryReport, MAX_DISCOVERY_VERTICES, SourceError,
    VertexFailure, Walk,
};
pub use graph::{
    EDGES_DB, Gestalt, GestaltEvent, GestaltGraph, GraphError, PENDING_DB, ROTATIONS_DB,
    RotationOutcome, VERTICES_DB,
};
pub use manager::GestaltManager;
pub use provider::{IdentityProvider, OfflineProvider, ProviderError};
pub use sigchain::{MAX_CLAIMS_PER_READ, SIGCHAIN_DB, Sigchain, SigchainError};
pub use verify::{ChainError, ClaimRef, VerifiedLink, verify_chain};

/// The LMDB environment the stores live in: the node's one encrypted
/// environment ([`keynode_core::store::open_env`], `max_dbs` leaving room for
/// this crate's five databases).
pub use keynode_core::store::Env;

//! The agent's integration tests with real nodes, in one test binary: each
//! module was once a binary of its own, and each linked the whole agent
//! (~80 MB apiece), which is most of a test build's disk and link time.
//! `hostile_source` stays alone in its binary, as it samples memory
//! process-wide.

mod audit;
mod backup;
mod client;
mod dht;
mod follow;
mod gestalt_model;
mod gestalts;
mod keys;
mod network;
mod node;
mod quarantine;
mod recovery;
mod renewal;
mod sharing;

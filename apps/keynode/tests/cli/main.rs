//! The `keynode` binary, driven as a user would: real agents in temporary node
//! paths, every command, every kind of bad input.

mod agent;
mod at_rest;
mod audit;
mod backup;
mod config;
mod crash;
mod identities;
mod keys;
mod metrics;
mod nodes;
mod password;
mod recovery;
mod secrets;
mod service;
mod sharing;
mod shells;
mod support;
mod vaults;
mod watch;

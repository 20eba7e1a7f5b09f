//! Nothing here: the simulation is `tests/simulation.rs`.

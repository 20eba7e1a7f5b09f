//! The vault transfer protocol: the values both sides exchange, and its pure
//! decisions (which haves to send, what to want, whether a pull fast-forwards,
//! which name a clone or fork gets). The git side lives in the repository module,
//! the store methods in `store/transfer.rs`; the network is the agent's.

use keynode_core::names::MAX_VAULT_NAME;
use keynode_core::{VaultId, VaultName};
use serde::{Deserialize, Serialize};

/// Largest chunk [`VaultStore::send_pack`](crate::VaultStore::send_pack) hands to
/// its sink, in bytes (64 KiB).
pub const PACK_CHUNK: usize = 64 * 1024;

/// Most commit ids a client sends as haves, in commits.
pub const MAX_HAVES: usize = 32;

/// How far back along first parents a client looks for haves, in commits.
pub const HAVES_WALK_LIMIT: usize = 1 << 16;

/// Packs a clone may hold before a pull rewrites them into one, in packs.
pub const MAX_PACKS: usize = 32;
/// With encrypted objects (the default), a repository with more bundles (one
/// per received pack or bulk import) than this has its smallest ones merged
/// into one by the next pull or bulk import.
pub const MAX_BUNDLES: usize = 8;

/// Memory libgit2's pack builder may use for its delta window, in bytes (16 MiB);
/// repository config `pack.windowMemory`.
pub const PACK_WINDOW_MEMORY: i64 = 16 * 1024 * 1024;

/// Memory libgit2's pack builder may use to cache computed deltas, in bytes
/// (512 KiB); repository config `pack.deltaCacheSize`. libgit2 1.9 also reads
/// this key as its big-file threshold: larger objects are sent whole, without a
/// delta search (which costs time in proportion to their size and finds little
/// in large secrets; a pull could not delta against the client's old version
/// anyway, libgit2 makes no thin packs). Deltas under 1,000 bytes are always
/// cached.
pub const PACK_DELTA_CACHE: i64 = 512 * 1024;

/// What a serving node says about one of its vaults before a clone or pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The vault's id on the serving node.
    pub vault: VaultId,
    /// The vault's name on the serving node.
    pub name: VaultName,
    /// The head commit id, 40 hex digits.
    pub head: String,
}

/// What [`VaultStore::send_pack`](crate::VaultStore::send_pack) sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackStats {
    /// Objects in the pack (0 when the client was up to date).
    pub objects: usize,
    /// Bytes of the pack, header and trailer included.
    pub bytes: u64,
}

/// The result of [`VaultStore::receive_pull`](crate::VaultStore::receive_pull).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullOutcome {
    /// The branch moved forward.
    Updated {
        /// The old head, 40 hex digits.
        from: String,
        /// The new head, 40 hex digits.
        to: String,
        /// How many commits were added.
        commits: usize,
    },
    /// The vault already had the remote's head (or is ahead of it).
    UpToDate,
}

/// The commit a client asks for after reading `advert`, given its own `haves`
/// (from [`VaultStore::haves`](crate::VaultStore::haves)): the advertised head,
/// or `None` when the client already has it (nothing to transfer).
pub fn want(advert: &Advert, haves: &[String]) -> Option<String> {
    if haves.contains(&advert.head) {
        None
    } else {
        Some(advert.head.clone())
    }
}

/// Picks a client's haves: its head, the last-known remote head, then the
/// first-parent `ancestors` (nearest first, starting with the head's parent) at
/// distances 1, 2, 4, 8… and the last one seen (the root when the walk reached
/// it); no duplicates, at most [`MAX_HAVES`].
///
/// Exponential spacing bounds what a divergent pull resends to about twice the
/// distance back to the fork point, with a constant-size request.
pub(crate) fn sample_haves(
    head: String,
    remote: Option<String>,
    ancestors: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut out = vec![head];
    if let Some(remote) = remote
        && !out.contains(&remote)
    {
        out.push(remote);
    }
    let mut next = 1usize;
    let mut last = None;
    for (i, oid) in ancestors.into_iter().enumerate() {
        if out.len() >= MAX_HAVES {
            return out;
        }
        let distance = i + 1;
        if distance == next {
            next = next.saturating_mul(2);
            if !out.contains(&oid) {
                out.push(oid);
            }
            last = None;
        } else {
            last = Some(oid);
        }
    }
    if let Some(oid) = last
        && out.len() < MAX_HAVES
        && !out.contains(&oid)
    {
        out.push(oid);
    }
    out
}

/// What a pull does with the received head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep the branch: it already is the remote's head, or descends from it.
    UpToDate,
    /// Move the branch to the remote's head.
    FastForward,
    /// Refuse: neither head descends from the other.
    Diverged,
}

/// Decides a pull from how the received head `new` relates to the current head.
pub(crate) fn fast_forward(same: bool, new_descends: bool, current_descends: bool) -> Step {
    if same || current_descends {
        Step::UpToDate
    } else if new_descends {
        Step::FastForward
    } else {
        Step::Diverged
    }
}

/// The `n`th candidate name from `base`: `base` itself for 0, else `base-n`;
/// `base` is cut (at a character boundary) so the result fits in
/// [`MAX_VAULT_NAME`] bytes.
pub(crate) fn numbered_name(base: &str, n: usize) -> Option<VaultName> {
    let suffix = if n == 0 {
        String::new()
    } else {
        format!("-{n}")
    };
    let mut cut = base.len().min(MAX_VAULT_NAME.saturating_sub(suffix.len()));
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    VaultName::new(format!("{}{suffix}", &base[..cut])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn haves_are_spaced_exponentially_and_end_at_the_root() {
        let haves = sample_haves("h".into(), Some("r".into()), ids(20));
        assert_eq!(haves, ["h", "r", "c1", "c2", "c4", "c8", "c16", "c20"]);
        // The remote head equal to the head is sent once.
        let haves = sample_haves("h".into(), Some("h".into()), ids(2));
        assert_eq!(haves, ["h", "c1", "c2"]);
        assert_eq!(sample_haves("h".into(), None, ids(0)), ["h"]);
    }

    #[test]
    fn haves_are_bounded() {
        let haves = sample_haves(
            "h".into(),
            Some("r".into()),
            (1..=100_000).map(|i| i.to_string()),
        );
        assert!(haves.len() <= MAX_HAVES);
        assert_eq!(haves[2..6], ["1", "2", "4", "8"]);
    }

    #[test]
    fn want_is_the_head_unless_the_client_has_it() {
        let advert = Advert {
            vault: VaultId::generate(),
            name: VaultName::new("v").unwrap(),
            head: "a".repeat(40),
        };
        assert_eq!(want(&advert, &[]), Some("a".repeat(40)));
        assert_eq!(want(&advert, &["b".repeat(40), "a".repeat(40)]), None);
    }

    #[test]
    fn pulls_fast_forward_only() {
        assert_eq!(fast_forward(true, false, false), Step::UpToDate);
        assert_eq!(fast_forward(false, true, false), Step::FastForward);
        assert_eq!(fast_forward(false, false, true), Step::UpToDate);
        assert_eq!(fast_forward(false, false, false), Step::Diverged);
    }

    #[test]
    fn numbered_names_fit() {
        assert_eq!(numbered_name("v", 0).unwrap().as_str(), "v");
        assert_eq!(numbered_name("v", 2).unwrap().as_str(), "v-2");
        let long = "é".repeat(127) + "x";
        let name = numbered_name(&long, 10).unwrap();
        assert!(name.as_str().len() <= MAX_VAULT_NAME);
        assert!(name.as_str().ends_with("-10"));
        let fork = numbered_name(&format!("{long}-fork"), 0).unwrap();
        assert!(fork.as_str().len() <= MAX_VAULT_NAME);
    }
}

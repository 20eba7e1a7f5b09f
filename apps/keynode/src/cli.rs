//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

/// keynode: a peer-to-peer secrets manager.
#[derive(Debug, Parser)]
#[command(name = "keynode", version, about)]
pub struct Cli {
    /// The node's state directory.
    #[arg(long, global = true, env = "KEYNODE_NODE_PATH", value_name = "PATH")]
    pub node_path: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, stop and inspect the agent.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Manage vaults.
    #[command(subcommand)]
    Vaults(VaultsCmd),
    /// Manage secrets inside vaults.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Other nodes: the address book, pings, connections, claims.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Gestalts: trust, permissions, invitations, discovery, identities.
    #[command(subcommand)]
    Identities(IdentitiesCmd),
    /// Notifications from and to other nodes.
    #[command(subcommand)]
    Notifications(NotificationsCmd),
    /// The node's audit log: permission changes, served transfers, refusals.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Back up the whole node into one file, check a backup, restore one.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The node's key: its public forms, file signatures, encryption to a node.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one per command into a directory.
    Man {
        /// Write `keynode.1`, `keynode-vaults.1`, `keynode-vaults-clone.1`…
        /// here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `keynode keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// The node's NodeId and public key (hex, base64).
    Public,
    /// Sign FILE with the node's key; prints the signature (hex).
    Sign {
        /// The file.
        file: PathBuf,
    },
    /// Check that SIGNATURE (hex) over FILE is NODE_ID's. Needs no agent.
    Verify {
        /// The file.
        file: PathBuf,
        /// The signature, as `keys sign` prints it.
        signature: String,
        /// The signer.
        node_id: String,
    },
    /// Encrypt FILE so that only NODE_ID can read it; writes to stdout, or
    /// to --out. Needs no agent.
    Encrypt {
        /// The file (at most 1 MiB).
        file: PathBuf,
        /// The recipient.
        node_id: String,
        /// Write here (a new file) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Renew the node's root key (the agent stopped): a new key with a new
    /// recovery code, a rotation signed by the old and the new key; at its
    /// next start the node tells every node it knows, which move what they
    /// hold for the old key to the new one and refuse the old key.
    Renew {
        /// Read the password from this file (else KEYNODE_PASSWORD, else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Write the new recovery code to this new file (mode 0600) instead of
        /// showing it on stderr.
        #[arg(long, value_name = "FILE")]
        recovery_code_out_file: Option<PathBuf>,
    },
    /// Decrypt FILE, encrypted to this node; writes to stdout, or to --out.
    Decrypt {
        /// The file.
        file: PathBuf,
        /// Write here (a new file, mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `keynode backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Write a consistent backup of the node to a new FILE: through the
    /// running agent, which keeps serving; with none running, from the node
    /// path (its password signs the backup).
    Create {
        /// The archive to write (must not exist).
        file: PathBuf,
        /// With no agent running: read the password from this file (else
        /// KEYNODE_PASSWORD, else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Check a backup whole (every file, the signed manifest) without
    /// restoring it.
    Verify {
        /// The archive.
        file: PathBuf,
    },
    /// Restore a backup as the node path given by --node-path, which must be
    /// new or empty; then start it with its password or its recovery code.
    Restore {
        /// The archive.
        file: PathBuf,
    },
}

/// `keynode audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the log, newest first.
    Read {
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Check the log's order, hash links, signatures and head; fails naming
    /// the first bad entry.
    Verify,
}

/// `keynode notifications ...`
#[derive(Debug, Subcommand)]
pub enum NotificationsCmd {
    /// Send a message to a node (queued and retried while it is unreachable).
    Send {
        /// The recipient.
        node_id: String,
        /// The message.
        message: String,
    },
    /// The inbox.
    #[command(subcommand)]
    Inbox(InboxCmd),
    /// Notifications waiting to be delivered.
    #[command(subcommand)]
    Outbox(OutboxCmd),
    /// Trust a sender and move what it sent from the quarantine (`inbox read
    /// --untrusted`) into the inbox.
    Accept {
        /// The sender.
        node_id: String,
    },
    /// Drop what a sender left in the quarantine, and what it sends from
    /// now on while it is not trusted.
    Block {
        /// The sender.
        node_id: String,
    },
    /// Stop blocking a sender (its notifications are quarantined again).
    Unblock {
        /// The sender.
        node_id: String,
    },
}

/// `--order` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Newest first.
    Newest,
    /// Oldest first.
    Oldest,
}

/// `keynode notifications inbox ...`
#[derive(Debug, Subcommand)]
pub enum InboxCmd {
    /// Read notifications (marks them read).
    Read {
        /// Only unread ones.
        #[arg(long, conflicts_with = "untrusted")]
        unread: bool,
        /// The quarantine instead: what senders we do not trust sent (they
        /// were told "refused", as always). `notifications accept|block`.
        #[arg(long)]
        untrusted: bool,
        /// At most N.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Order.
        #[arg(long, value_enum, default_value_t = Order::Newest)]
        order: Order,
    },
    /// Remove one notification.
    Remove {
        /// Its id.
        id: String,
    },
    /// Remove every notification.
    Clear,
}

/// `keynode notifications outbox ...`
#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// List queued notifications.
    Read,
    /// Drop one queued notification.
    Remove {
        /// Its id.
        id: String,
    },
    /// Drop every queued notification.
    Clear,
}

/// `keynode identities ...`
#[derive(Debug, Subcommand)]
pub enum IdentitiesCmd {
    /// Trust a gestalt: accept its notifications (and discover it).
    Trust {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
    },
    /// Stop trusting a gestalt.
    Untrust {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
    },
    /// Grant a gestalt action: notify, scan or claim.
    Allow {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
        /// notify, scan or claim.
        action: String,
    },
    /// Revoke a gestalt action.
    Disallow {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
        /// notify, scan or claim.
        action: String,
    },
    /// Show a gestalt's permissions.
    Permissions {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
    },
    /// Invite a node to join this node's gestalt (it then runs `nodes claim`).
    Invite {
        /// The node's id.
        node_id: String,
    },
    /// Discover a gestalt now: fetch and verify its sigchains.
    Discover {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
    },
    /// List known gestalts.
    #[command(alias = "ls")]
    List,
    /// Show one gestalt.
    Get {
        /// A node id or PROVIDER:IDENTITY.
        gestalt: String,
    },
    /// Authenticate to an identity provider (`offline` needs nothing).
    Authenticate {
        /// The provider.
        provider: String,
    },
    /// Claim an identity: sign a claim and publish it on the provider.
    Claim {
        /// PROVIDER:IDENTITY.
        identity: String,
    },
}

/// `keynode nodes ...`
#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// Record where a node can be reached.
    Add {
        /// The node's id.
        node_id: String,
        /// Its host name or IP address.
        host: String,
        /// Its port.
        port: u16,
    },
    /// Refuse a node's key from now on (a stolen or lost device): it loses
    /// every permission here and cannot be renewed by whoever holds it.
    Revoke {
        /// The node's id.
        node_id: String,
    },
    /// Make an authenticated round trip to a node.
    Ping {
        /// The node's id.
        node_id: String,
    },
    /// List the address book.
    #[command(alias = "ls")]
    List,
    /// List open connections to other nodes (direct or through a relay).
    Connections,
    /// Find a node by its NodeId: the address book, then the DHT; prints
    /// each address with where it came from, and the node's relays.
    Find {
        /// The node's id.
        node_id: String,
    },
    /// Join a node's gestalt: cross-sign a claim with it (it must have invited us).
    Claim {
        /// The node's id.
        node_id: String,
    },
}

/// `keynode agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Start the agent (foreground unless --background).
    Start(Box<StartArgs>),
    /// Show the agent's status.
    Status,
    /// Stop the agent gracefully.
    Stop,
    /// Change the password that seals the node's root key (no data is
    /// re-encrypted). Through the running agent, or on the key file directly
    /// when none runs.
    Password(PasswordArgs),
}

/// `keynode agent password` options.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// Read the current password from this file (else KEYNODE_PASSWORD, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the new password from this file (else KEYNODE_NEW_PASSWORD, else a
    /// prompt, asked twice).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// The old password is lost: prove the node with its recovery code (the
    /// 24 words, in this file) instead.
    #[arg(long, value_name = "FILE")]
    pub recovery_code_file: Option<PathBuf>,
}

/// `keynode agent start` options.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Read settings from this TOML file (default: `keynode.toml` in the node
    /// path, if there). A flag beats its environment variable, which beats
    /// the file, which beats the default.
    #[arg(long, value_name = "FILE", env = "KEYNODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read the password from this file (else KEYNODE_PASSWORD, else the
    /// systemd credential `password`, else the config's `password_file`,
    /// else a prompt).
    #[arg(long, value_name = "FILE", env = "KEYNODE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// On an empty node path: recreate the node of this recovery code (the 24
    /// words, in this file), same NodeId, sealed under the password given.
    #[arg(long, value_name = "FILE")]
    pub recovery_code_file: Option<PathBuf>,
    /// When a new node is made, write its recovery code to this new file
    /// (mode 0600) instead of showing it on stderr.
    #[arg(long, value_name = "FILE")]
    pub recovery_code_out_file: Option<PathBuf>,
    /// Host to listen on for other nodes.
    #[arg(long, default_value = "127.0.0.1", env = "KEYNODE_AGENT_HOST")]
    pub agent_host: String,
    /// Port to listen on for other nodes (0 picks a free one).
    #[arg(long, default_value_t = 0, env = "KEYNODE_AGENT_PORT")]
    pub agent_port: u16,
    /// Nodes to know from the start: `ID@host:port;ID@host:port`.
    #[arg(
        long,
        value_name = "NODES",
        default_value = "",
        env = "KEYNODE_SEED_NODES"
    )]
    pub seed_nodes: String,
    /// Largest a vault may grow by clones and pulls, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = keynode_agent::DEFAULT_MAX_VAULT_BYTES,
          env = "KEYNODE_MAX_VAULT_BYTES")]
    pub max_vault_bytes: u64,
    /// Largest the node's state may grow, in bytes (a sparse maximum; writes
    /// fail with a clear error when it is spent, reads go on).
    #[arg(long, value_name = "BYTES", default_value_t = keynode_agent::DEFAULT_MAX_STATE_BYTES,
          env = "KEYNODE_MAX_STATE_BYTES")]
    pub max_state_bytes: usize,
    /// Publish this node's addresses on the Mainline DHT and find peers
    /// there: `on` or `off`. Publishing tells whoever knows the NodeId where
    /// the node listens.
    #[arg(long, value_name = "on|off", default_value = "on", env = "KEYNODE_DHT",
          value_parser = ["on", "off"])]
    pub dht: String,
    /// DHT nodes to join through, `HOST:PORT,…` (default: the public
    /// Mainline bootstrap nodes).
    #[arg(long, value_name = "NODES", env = "KEYNODE_DHT_BOOTSTRAP")]
    pub dht_bootstrap: Option<String>,
    /// Relay connections for nodes that cannot be dialed (within the limits
    /// the README states).
    #[arg(long, env = "KEYNODE_RELAY_SERVE")]
    pub relay_serve: bool,
    /// Relays to keep a reservation at and publish: `ID@host:port;…`.
    #[arg(
        long,
        value_name = "RELAYS",
        default_value = "",
        env = "KEYNODE_RELAYS"
    )]
    pub relays: String,
    /// Listen for no peer at all (as behind a NAT): the node is reachable
    /// only through its --relays.
    #[arg(long, env = "KEYNODE_NO_LISTEN")]
    pub no_listen: bool,
    /// Serve Prometheus metrics at `http://HOST:PORT/metrics` (off by
    /// default; counts and sizes only, no names or secrets; bind it to a
    /// local or otherwise private address).
    #[arg(long, value_name = "HOST:PORT", env = "KEYNODE_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
    /// What the agent logs, as a tracing filter (`info`,
    /// `warn,keynode_net=debug`); beats `-v` and RUST_LOG.
    #[arg(long, value_name = "FILTER", env = "KEYNODE_LOG")]
    pub log: Option<String>,
    /// Return once the agent is ready, leaving it running in the background.
    #[arg(long)]
    pub background: bool,
    /// Internal: run as the background agent (password on stdin, one status line on stdout).
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

/// `keynode vaults ...`
#[derive(Debug, Subcommand)]
pub enum VaultsCmd {
    /// Create a vault.
    Create {
        /// Name of the new vault.
        name: String,
    },
    /// List vaults.
    #[command(alias = "ls")]
    List,
    /// Rename a vault.
    Rename {
        /// Vault name or id.
        name: String,
        /// New name.
        new_name: String,
    },
    /// Delete a vault and everything in it.
    Delete {
        /// Vault name or id.
        name: String,
    },
    /// Show a vault's history, newest first.
    Log {
        /// Vault name or id.
        name: String,
        /// Show at most N commits.
        #[arg(long, value_name = "N")]
        depth: Option<u32>,
        /// Start from this commit instead of the latest.
        #[arg(long, value_name = "ID")]
        commit: Option<String>,
    },
    /// Share a vault with a node's whole gestalt, or a person's (the nodes an
    /// identity's claims prove theirs), for clone, pull and scan, and notify
    /// every node of it.
    Share {
        /// Vault name or id.
        name: String,
        /// The node, or the person as PROVIDER:IDENTITY (discovered first).
        #[arg(value_name = "NODE_ID|PROVIDER:IDENTITY")]
        node_id: String,
    },
    /// Stop sharing a vault with a node's or a person's gestalt and notify it.
    Unshare {
        /// Vault name or id.
        name: String,
        /// The node, or the person as PROVIDER:IDENTITY.
        #[arg(value_name = "NODE_ID|PROVIDER:IDENTITY")]
        node_id: String,
    },
    /// Who may clone or pull a vault.
    Permissions {
        /// Vault name or id.
        name: String,
    },
    /// List the vaults another node shares with this node's gestalt.
    Scan {
        /// The node.
        node_id: String,
    },
    /// Clone a vault from another node (the clone is read-only and follows
    /// its remote: it pulls by itself when the remote changes).
    Clone {
        /// The vault's name or id on the other node.
        name_or_id: String,
        /// The node.
        node_id: String,
        /// Do not follow the remote: pull only when asked (`vaults pull`).
        #[arg(long)]
        no_follow: bool,
    },
    /// Make a clone follow its remote again (also after a divergence).
    Follow {
        /// The clone, name or id.
        name: String,
    },
    /// Stop a clone following its remote (`vaults pull` still works).
    Unfollow {
        /// The clone, name or id.
        name: String,
    },
    /// Pull a cloned vault from its remote; NODE_ID and --pull-vault replace it.
    Pull {
        /// The local vault, name or id.
        name: String,
        /// Pull from this node instead of the stored remote.
        node_id: Option<String>,
        /// The vault on the remote, name or id, instead of the stored one.
        #[arg(long, value_name = "NAME_OR_ID")]
        pull_vault: Option<String>,
    },
    /// Make a mutable copy of a vault (a clone's writable twin).
    Fork {
        /// Vault name or id.
        name: String,
        /// Name of the copy (default: NAME-fork).
        new_name: Option<String>,
    },
    /// Restore an older version by appending a new commit with its content.
    Version {
        /// Vault name or id.
        name: String,
        /// The commit to restore (id, abbreviated id, HEAD~N).
        #[arg(value_name = "REF")]
        rev: String,
    },
}

/// `--env-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// `export NAME='value'` lines.
    Unix,
    /// One JSON object.
    Json,
}

/// `keynode secrets ...`
#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Create a secret from a file (fails if it exists).
    Create {
        /// The file to read.
        file: PathBuf,
        /// VAULT:PATH of the new secret.
        secret: String,
    },
    /// Write a secret from standard input (creates or replaces it).
    Write {
        /// VAULT:PATH of the secret.
        secret: String,
    },
    /// Print a secret's content.
    #[command(alias = "cat")]
    Get {
        /// VAULT:PATH of the secret.
        secret: String,
        /// Read this version instead of the latest.
        #[arg(long, value_name = "REF")]
        at: Option<String>,
    },
    /// List a directory of a vault.
    #[command(alias = "ls")]
    List {
        /// VAULT[:PATH].
        target: String,
        /// List this version instead of the latest.
        #[arg(long, value_name = "REF")]
        at: Option<String>,
    },
    /// Make a directory.
    Mkdir {
        /// VAULT:PATH of the directory.
        target: String,
        /// Create missing parent directories too.
        #[arg(short = 'p', long)]
        recursive: bool,
    },
    /// Rename a secret or directory (within its directory).
    Rename {
        /// VAULT:PATH to rename.
        secret: String,
        /// The new name.
        new_name: String,
    },
    /// Remove secrets.
    Rm {
        /// VAULT:PATH of each secret.
        #[arg(required = true)]
        secrets: Vec<String>,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Describe a secret.
    Stat {
        /// VAULT:PATH of the secret.
        secret: String,
        /// Describe this version instead of the latest.
        #[arg(long, value_name = "REF")]
        at: Option<String>,
    },
    /// Edit a secret with $VISUAL / $EDITOR (creates it if missing).
    Edit {
        /// VAULT:PATH of the secret.
        secret: String,
    },
    /// Import a local directory as one commit.
    Dir {
        /// The local directory.
        dir: PathBuf,
        /// VAULT[:PATH] to import into.
        target: String,
    },
    /// Use secrets as environment variables: print them, or run a command with them.
    Env {
        /// VAULT[:PATH] of each secret or directory.
        #[arg(required = true)]
        targets: Vec<String>,
        /// How to print the variables when no command is given.
        #[arg(long, value_enum, default_value_t = EnvFormat::Unix)]
        env_format: EnvFormat,
        /// Let a secret set this variable although it changes how programs
        /// load or run (`PATH`, `LD_PRELOAD`, `BASH_ENV`…; see the README).
        #[arg(long = "allow-env", value_name = "NAME")]
        allow_env: Vec<String>,
        /// Keep running the command, and restart it (or signal it, with
        /// --signal) whenever one of its secrets changes: a local write or a
        /// pulled change. Exits with the command's status when it exits on
        /// its own; signals sent to keynode are passed on to it.
        #[arg(long, requires = "command")]
        watch: bool,
        /// With --watch: send this signal (HUP, USR1, … or a number) on a
        /// change instead of restarting.
        #[arg(long, value_name = "SIG", requires = "watch")]
        signal: Option<String>,
        /// With --watch: how long a restart waits for the command to exit
        /// after SIGTERM before it is killed.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration, requires = "watch")]
        stop_timeout: std::time::Duration,
        /// The command to run, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

//! Reads one secret from this user's running agent and prints it:
//!
//! ```sh
//! cargo run -p keynode-client --example read -- prod db/password
//! ```
//!
//! The node path is `KEYNODE_NODE_PATH`, else `~/.local/share/keynode`.

use std::io::Write;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [vault, path] = args.as_slice() else {
        eprintln!("usage: read VAULT PATH");
        return ExitCode::from(64);
    };
    let agent = keynode_client::Agent::local();
    match agent.read(vault, path).await {
        Ok(value) => {
            let _ = std::io::stdout().write_all(&value);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("read: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

//! `keynode audit ...`

use keynode_client::api::{AuditEntryView, Request, Response};

use crate::cli::AuditCmd;
use crate::output;
use crate::{Ctx, Failure};

fn unexpected(r: Response) -> Failure {
    Failure::new(76, format!("unexpected answer from the agent: {r:?}"))
}

/// The JSON form: fields as an object rather than pairs.
fn json_view(e: &AuditEntryView) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = e
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "seq": e.seq,
        "time_ms": e.time_ms,
        "kind": e.kind,
        "peer": e.peer,
        "fields": fields,
    })
}

pub async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<(), Failure> {
    match cmd {
        AuditCmd::Read { limit } => {
            let r = ctx
                .client()
                .await?
                .call(Request::AuditRead { limit })
                .await?;
            let Response::AuditEntries(list) = r else {
                return Err(unexpected(r));
            };
            let docs: Vec<_> = list.iter().map(json_view).collect();
            output::emit(ctx.format, &docs, || {
                for e in &list {
                    let fields: Vec<String> =
                        e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    say!(
                        "{:>6}  {}  {}  {}",
                        e.seq,
                        output::time(e.time_ms),
                        e.kind,
                        fields.join(" ")
                    );
                }
            });
            Ok(())
        }
        AuditCmd::Verify => {
            let r = ctx.client().await?.call(Request::AuditVerify).await?;
            let Response::AuditVerified { entries } = r else {
                return Err(unexpected(r));
            };
            output::emit(
                ctx.format,
                &serde_json::json!({"verified": true, "entries": entries}),
                || say!("audit log verified: {entries} entries"),
            );
            Ok(())
        }
    }
}

//! The audit log: read and verify.

use crate::api::{ApiError, AuditEntryView, Response};
use crate::ctx::Ctx;
use crate::errors::Ask;

fn view(e: &keynode_audit::AuditEntry) -> AuditEntryView {
    AuditEntryView {
        seq: e.seq,
        time_ms: e.time_ms,
        kind: e.event.kind().to_owned(),
        peer: e.event.peer(),
        fields: e
            .event
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

pub(super) async fn read(ctx: &Ctx, limit: Option<u32>) -> Result<Response, ApiError> {
    let entries = ctx
        .audit
        .ask(keynode_audit::Read {
            limit: limit.map(|l| l as usize),
            newest_first: true,
        })
        .await?;
    Ok(Response::AuditEntries(entries.iter().map(view).collect()))
}

pub(super) async fn verify(ctx: &Ctx) -> Result<Response, ApiError> {
    let owner = ctx.node_id();
    let entries = ctx.audit.ask(keynode_audit::Verify { owner }).await?;
    Ok(Response::AuditVerified { entries })
}

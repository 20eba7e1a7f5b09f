//! What a run measured: per-operation latency histograms (successful
//! operations), errors by kind, a per-second time series, and the history of
//! every operation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

/// Largest latency a histogram holds, in microseconds (longer is clamped).
const MAX_US: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Why an operation failed.
#[derive(Debug, Clone, Serialize)]
pub struct OpError {
    /// The API error kind, or `NotRunning`, `Io`, `Protocol`, `Timeout`.
    pub kind: String,
    /// The message.
    pub message: String,
    /// Whether the failure is known to have changed nothing (refused, or the
    /// agent was not running); else the operation may have taken effect.
    pub definite: bool,
}

impl OpError {
    /// Classifies a client error.
    pub fn from_client(e: &keynode_client::ClientError) -> OpError {
        use keynode_client::ClientError;
        use keynode_client::api::ErrorKind as K;
        let definite = match e {
            ClientError::NotRunning(_) => true,
            ClientError::Api(a) => matches!(
                a.kind,
                K::Usage
                    | K::BadData
                    | K::NotFound
                    | K::Exists
                    | K::PermissionDenied
                    | K::ReadOnly
                    | K::Conflict
            ),
            _ => false,
        };
        OpError {
            kind: crate::cluster::error_kind(e),
            message: e.to_string(),
            definite,
        }
    }

    /// The harness gave up waiting.
    pub fn timeout(after: Duration) -> OpError {
        OpError {
            kind: "Timeout".into(),
            message: format!("no answer within {after:?}"),
            definite: false,
        }
    }
}

/// One operation, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Sequence number.
    pub id: u64,
    /// The client task that ran it.
    pub worker: usize,
    /// The node it was sent to.
    pub node: usize,
    /// The operation.
    pub op: &'static str,
    /// Its arguments.
    pub args: Value,
    /// When it was sent, in ms since the workload started.
    pub start_ms: f64,
    /// When it was answered, in ms since the workload started.
    pub end_ms: f64,
    /// The result, if it succeeded.
    pub ok: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<OpError>,
}

#[derive(Default)]
struct OpStats {
    hist: Option<Histogram<u64>>,
    count: u64,
    errors: u64,
    by_kind: BTreeMap<String, u64>,
}

struct Second {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    by_op: BTreeMap<&'static str, u64>,
}

/// Collects metrics and history from every client task.
pub struct Recorder {
    t0: Instant,
    ops: BTreeMap<&'static str, OpStats>,
    seconds: Vec<Second>,
    /// Every operation, in the order they ended.
    pub history: Vec<Event>,
    next_id: u64,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            t0: Instant::now(),
            ops: BTreeMap::new(),
            seconds: Vec::new(),
            history: Vec::new(),
            next_id: 0,
        }
    }

    /// Starts the clock again at `t0` (when the workload starts).
    pub fn reset_clock(&mut self, t0: Instant) {
        self.t0 = t0;
    }

    /// Milliseconds since the start.
    pub fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }

    /// Records one operation.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        worker: usize,
        node: usize,
        op: &'static str,
        args: Value,
        start: Instant,
        end: Instant,
        outcome: Result<Value, OpError>,
    ) {
        let us = end.saturating_duration_since(start).as_micros() as u64;
        let sec = end.saturating_duration_since(self.t0).as_secs() as usize;
        while self.seconds.len() <= sec {
            self.seconds.push(Second {
                hist: histogram(),
                ok: 0,
                errors: 0,
                by_op: BTreeMap::new(),
            });
        }
        let stats = self.ops.entry(op).or_default();
        stats.count += 1;
        let second = &mut self.seconds[sec];
        let (ok, error) = match outcome {
            Ok(v) => {
                stats
                    .hist
                    .get_or_insert_with(histogram)
                    .saturating_record(us.clamp(1, MAX_US));
                second.hist.saturating_record(us.clamp(1, MAX_US));
                second.ok += 1;
                *second.by_op.entry(op).or_default() += 1;
                (Some(v), None)
            }
            Err(e) => {
                stats.errors += 1;
                *stats.by_kind.entry(e.kind.clone()).or_default() += 1;
                second.errors += 1;
                (None, Some(e))
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let (start_ms, end_ms) = (self.at(start), self.at(end));
        self.history.push(Event {
            id,
            worker,
            node,
            op,
            args,
            start_ms,
            end_ms,
            ok,
            error,
        });
    }

    /// Operations recorded so far, and how many failed.
    pub fn totals(&self) -> (u64, u64) {
        self.ops
            .values()
            .fold((0, 0), |(c, e), s| (c + s.count, e + s.errors))
    }

    /// Per-operation summary over `secs` seconds of workload.
    pub fn summary(&self, secs: f64) -> Value {
        let mut ops = serde_json::Map::new();
        let mut all = histogram();
        let (mut count, mut errors) = (0, 0);
        for (op, s) in &self.ops {
            count += s.count;
            errors += s.errors;
            if let Some(h) = &s.hist {
                let _ = all.add(h);
            }
            ops.insert(
                (*op).into(),
                op_summary(s.count, s.errors, &s.by_kind, s.hist.as_ref(), secs),
            );
        }
        let mut by_kind = BTreeMap::new();
        for s in self.ops.values() {
            for (k, v) in &s.by_kind {
                *by_kind.entry(k.clone()).or_default() += *v;
            }
        }
        json!({
            "ops": ops,
            "total": op_summary(count, errors, &by_kind, Some(&all), secs),
        })
    }

    /// The per-second time series.
    pub fn series(&self) -> Vec<Value> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let q = |p: f64| {
                    if s.ok > 0 {
                        ms(s.hist.value_at_quantile(p))
                    } else {
                        0.0
                    }
                };
                json!({
                    "t": t,
                    "ok": s.ok,
                    "errors": s.errors,
                    "p50_ms": q(0.5),
                    "p90_ms": q(0.9),
                    "p99_ms": q(0.99),
                    "max_ms": if s.ok > 0 { ms(s.hist.max()) } else { 0.0 },
                    "by_op": s.by_op,
                })
            })
            .collect()
    }
}

fn op_summary(
    count: u64,
    errors: u64,
    by_kind: &BTreeMap<String, u64>,
    hist: Option<&Histogram<u64>>,
    secs: f64,
) -> Value {
    let q = |p: f64| {
        hist.filter(|h| !h.is_empty())
            .map(|h| ms(h.value_at_quantile(p)))
    };
    let ok = count - errors;
    json!({
        "count": count,
        "ok": ok,
        "errors": errors,
        "errors_by_kind": by_kind,
        "ops_per_s": if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "max_ms": hist.filter(|h| !h.is_empty()).map(|h| ms(h.max())),
        "mean_ms": hist.filter(|h| !h.is_empty()).map(|h| h.mean() / 1000.0),
    })
}

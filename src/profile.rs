//! GPU profiles of graph runs: per-dispatch timestamps taken with `wgpu-profiler` (each dispatch
//! in a compute pass of its own with pass timestamp writes, which needs only `TIMESTAMP_QUERY`),
//! aggregated per op kind and per step, printed as a table or written as a Chrome trace
//! (`chrome://tracing`, Perfetto).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::{Error, Result};

/// When an op runs in a generation (the graph tags its ops with it; profiles group by it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Once, before the first step (noise, conditioning that does not depend on the step).
    Setup,
    /// Once per sampler step.
    #[default]
    Step,
    /// Once, after the last step (unpatchify, conversion to pixels).
    Finish,
}

/// The time of one dispatch.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DispatchTime {
    /// Phase of the op.
    #[serde(skip)]
    pub phase: Phase,
    /// Step index (for `Step` ops).
    pub step: Option<u32>,
    /// Op name in the graph.
    pub op: String,
    /// Op kind (the kernel's name).
    pub kind: &'static str,
    /// Dispatch index within the op (more than one when weights were split).
    pub dispatch: u32,
    /// Start, seconds (the origin is the device's).
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

impl DispatchTime {
    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// The profile of one run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Every timed dispatch, in submission order.
    pub dispatches: Vec<DispatchTime>,
    /// Dispatches recorded inside a profiler scope (timed or not; equals the run's dispatch
    /// count).
    pub scoped: u64,
    /// Scopes whose timestamps did not come back (no timestamp support, or a dropped frame).
    pub untimed: u64,
}

/// A row of [`Profile::by_kind`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KindTotal {
    /// Op kind.
    pub kind: &'static str,
    /// Dispatches.
    pub count: u64,
    /// Summed GPU time, seconds.
    pub seconds: f64,
}

impl Profile {
    /// GPU time of all dispatches, seconds.
    pub fn total(&self) -> f64 {
        self.dispatches.iter().map(DispatchTime::seconds).sum()
    }

    /// Totals per op kind, largest first.
    pub fn by_kind(&self) -> Vec<KindTotal> {
        let mut m: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
        for d in &self.dispatches {
            let e = m.entry(d.kind).or_default();
            e.0 += 1;
            e.1 += d.seconds();
        }
        let mut v: Vec<KindTotal> =
            m.into_iter().map(|(kind, (count, seconds))| KindTotal { kind, count, seconds }).collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    /// GPU time per step (setup and finish left out), seconds, by step index.
    pub fn by_step(&self) -> Vec<(u32, f64)> {
        let mut m: BTreeMap<u32, f64> = BTreeMap::new();
        for d in &self.dispatches {
            if let Some(s) = d.step {
                *m.entry(s).or_default() += d.seconds();
            }
        }
        m.into_iter().collect()
    }

    /// A text table: per kind (count, total, share), then per step.
    pub fn table(&self) -> String {
        let total = self.total().max(f64::MIN_POSITIVE);
        let mut out = String::new();
        let _ = writeln!(out, "{:<20} {:>8} {:>12} {:>7}", "kind", "count", "GPU ms", "share");
        for k in self.by_kind() {
            let _ = writeln!(
                out,
                "{:<20} {:>8} {:>12.3} {:>6.1}%",
                k.kind,
                k.count,
                k.seconds * 1e3,
                100.0 * k.seconds / total
            );
        }
        let _ = writeln!(out, "{:<20} {:>8} {:>12.3}", "total", self.dispatches.len(), self.total() * 1e3);
        let steps = self.by_step();
        if !steps.is_empty() {
            let _ = writeln!(out, "\n{:<8} {:>12}", "step", "GPU ms");
            for (s, t) in steps {
                let _ = writeln!(out, "{s:<8} {:>12.3}", t * 1e3);
            }
        }
        if self.untimed > 0 {
            let _ = writeln!(out, "({} of {} dispatches untimed)", self.untimed, self.scoped);
        }
        out
    }

    /// The profile as Chrome trace JSON: one complete event per dispatch (times in µs), named by
    /// op, with kind, step and dispatch index as arguments; steps on one track, setup and finish
    /// on another.
    pub fn chrome_trace(&self) -> String {
        let origin = self.dispatches.iter().map(|d| d.start).fold(f64::INFINITY, f64::min);
        let events: Vec<serde_json::Value> = self
            .dispatches
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.op,
                    "cat": d.kind,
                    "ph": "X",
                    "ts": (d.start - origin) * 1e6,
                    "dur": d.seconds() * 1e6,
                    "pid": 1,
                    "tid": if d.phase == Phase::Step { 1 } else { 2 },
                    "args": { "kind": d.kind, "step": d.step, "dispatch": d.dispatch },
                })
            })
            .collect();
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" }).to_string()
    }

    /// Writes [`Profile::chrome_trace`] to `path`.
    pub fn write_chrome_trace(&self, path: &std::path::Path) -> Result<()> {
        std::fs::write(path, self.chrome_trace()).map_err(|source| Error::Io { path: path.into(), source })
    }
}

/// Where a scope label points: (op index, step or `u32::MAX`, dispatch).
pub(crate) fn scope_label(op: usize, step: Option<u32>, dispatch: usize) -> String {
    format!("{op}:{}:{dispatch}", step.unwrap_or(u32::MAX))
}

/// Parses [`scope_label`].
pub(crate) fn parse_label(label: &str) -> Option<(usize, Option<u32>, u32)> {
    let mut it = label.split(':');
    let op = it.next()?.parse().ok()?;
    let step: u32 = it.next()?.parse().ok()?;
    let dispatch = it.next()?.parse().ok()?;
    Some((op, (step != u32::MAX).then_some(step), dispatch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: &'static str, step: Option<u32>, start: f64, end: f64) -> DispatchTime {
        let phase = if step.is_some() { Phase::Step } else { Phase::Setup };
        DispatchTime { phase, step, op: format!("{kind}.op"), kind, dispatch: 0, start, end }
    }

    #[test]
    fn aggregates_by_kind_and_step_and_writes_a_trace() {
        let p = Profile {
            dispatches: vec![
                d("noise", None, 0.0, 0.001),
                d("gemm", Some(0), 0.001, 0.004),
                d("norm", Some(0), 0.004, 0.005),
                d("gemm", Some(1), 0.005, 0.007),
            ],
            scoped: 4,
            untimed: 0,
        };
        let k = p.by_kind();
        assert_eq!((k[0].kind, k[0].count), ("gemm", 2));
        assert!((k[0].seconds - 0.005).abs() < 1e-12);
        let s = p.by_step();
        assert_eq!(s.len(), 2);
        assert!((s[0].1 - 0.004).abs() < 1e-12 && (s[1].1 - 0.002).abs() < 1e-12);
        let t = p.table();
        assert!(t.contains("gemm") && t.contains("step"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&p.chrome_trace()).unwrap();
        let ev = j["traceEvents"].as_array().unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[1]["cat"], "gemm");
        assert!((ev[1]["dur"].as_f64().unwrap() - 3000.0).abs() < 1e-6);
        assert_eq!(parse_label(&scope_label(7, Some(3), 1)), Some((7, Some(3), 1)));
        assert_eq!(parse_label(&scope_label(2, None, 0)), Some((2, None, 0)));
    }
}

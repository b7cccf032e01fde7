//! Liveness-based memory planning: every activation lives from the op that first writes it to the
//! last op that touches it; activations whose lives do not overlap share a pooled buffer. Buffers
//! come in size classes (powers of two, at least 256 bytes, so binding offsets stay aligned and a
//! freed buffer fits the next tensor of its class); a free buffer of the right class is reused,
//! the smallest class first.
//!
//! The step phase repeats: an activation written before the steps (in `Setup`) and touched during
//! them is carried from step to step, so it lives until the last step op at least. Activations
//! born inside a step are written before they are read in every step (the graph checks it), so
//! their lives need no extension.
//!
//! Weights, inputs and outputs get buffers of their own, sized exactly; a weight may exceed the
//! storage-binding limit (the kernels bind it in row ranges, kernel contract (e)), an activation
//! may not.

use std::collections::BTreeMap;

use super::{Graph, Phase, TensorId, TensorKind};

/// One buffer of the activation pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolBuffer {
    /// Bytes (a size class, or the tensor's own size without reuse).
    pub bytes: u64,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Pool buffer of each tensor (activations only; `None` for weights, inputs and outputs,
    /// which get buffers of their own, and for activations no op touches).
    pub slot: Vec<Option<usize>>,
    /// The pool.
    pub pool: Vec<PoolBuffer>,
    /// First and last op index of each activation's life.
    pub live: Vec<Option<(usize, usize)>>,
    /// Bytes of the pool (activations with reuse): the activations' peak.
    pub pooled_bytes: u64,
    /// Bytes of the activations if each had its own buffer.
    pub unpooled_bytes: u64,
    /// Bytes of the buffers of weights, inputs and outputs (one each, exact size).
    pub dedicated_bytes: u64,
    /// Number of those buffers.
    pub dedicated: usize,
}

impl Plan {
    /// Buffers the executor creates for tensors: the pool plus one per weight, input and output.
    pub fn buffers(&self) -> usize {
        self.pool.len() + self.dedicated
    }

    /// Bytes of those buffers.
    pub fn bytes(&self) -> u64 {
        self.pooled_bytes + self.dedicated_bytes
    }
}

/// The smallest size class holding `bytes`.
pub fn size_class(bytes: u64) -> u64 {
    bytes.max(256).next_power_of_two()
}

/// Plans the activation memory of `graph` with reuse.
pub fn plan(graph: &Graph) -> Plan {
    plan_with(graph, true)
}

/// Plans the activation memory of `graph`; without `reuse` every activation gets a buffer of its
/// own (the reference the planner is tested against).
pub fn plan_with(graph: &Graph, reuse: bool) -> Plan {
    let n = graph.tensors().len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; n];
    for (i, op) in graph.ops().iter().enumerate() {
        for t in op.reads.iter().chain(&op.writes) {
            if graph.tensors()[t.0].kind == TensorKind::Activation {
                let l = live[t.0].get_or_insert((i, i));
                l.1 = i;
            }
        }
    }
    // Carried through the step loop: born before the steps, touched during them.
    let steps = graph.phase_range(Phase::Step);
    if !steps.is_empty() {
        for l in live.iter_mut().flatten() {
            if l.0 < steps.start && l.1 >= steps.start {
                l.1 = l.1.max(steps.end - 1);
            }
        }
    }
    let mut slot = vec![None; n];
    let mut pool: Vec<PoolBuffer> = Vec::new();
    // Free buffers by size class.
    let mut free: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..graph.ops().len() {
        // Tensors born at op i take a buffer (a tensor read and written by the same op keeps one).
        let born: Vec<TensorId> = (0..n).map(TensorId).filter(|t| live[t.0].is_some_and(|(s, _)| s == i)).collect();
        for t in born {
            let bytes = graph.tensors()[t.0].bytes;
            let class = if reuse { size_class(bytes) } else { bytes };
            let reused = if reuse { free.get_mut(&class).and_then(Vec::pop) } else { None };
            let b = reused.unwrap_or_else(|| {
                pool.push(PoolBuffer { bytes: class });
                pool.len() - 1
            });
            slot[t.0] = Some(b);
        }
        // Tensors whose life ends at op i free their buffer for op i + 1.
        for t in 0..n {
            if let (Some((_, e)), Some(b)) = (live[t], slot[t])
                && e == i
            {
                free.entry(pool[b].bytes).or_default().push(b);
            }
        }
    }
    let unpooled_bytes = (0..n).filter(|&t| live[t].is_some()).map(|t| graph.tensors()[t].bytes).sum();
    let own: Vec<u64> = graph.tensors().iter().filter(|t| t.kind != TensorKind::Activation).map(|t| t.bytes).collect();
    Plan {
        pooled_bytes: pool.iter().map(|b| b.bytes).sum(),
        slot,
        pool,
        live,
        unpooled_bytes,
        dedicated_bytes: own.iter().sum(),
        dedicated: own.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::DType::F32;
    use crate::kernels::{Attention, Elem, Elementwise, EltOp, Epilogue, Gemm, MatmulShape, Norm};

    /// A transformer block: norm -> qkv -> attention -> proj (+ residual) -> norm -> fc1 (GELU)
    /// -> fc2 (+ residual), 32 tokens of 64 features, 2 heads.
    fn block() -> Graph {
        let (t, d) = (32u32, 64u32);
        let mut g = Graph::new();
        let x = g.input("x", &[t, d], F32);
        let wqkv = g.weight("wqkv", &[3 * d, d], F32);
        let wo = g.weight("wo", &[d, d], F32);
        let w1 = g.weight("w1", &[4 * d, d], F32);
        let w2 = g.weight("w2", &[d, 4 * d], F32);
        let h = g.activation("h", &[t, d], F32);
        let qkv = g.activation("qkv", &[t, 3 * d], F32);
        let a = g.activation("attn", &[t, d], F32);
        let x1 = g.activation("x1", &[t, d], F32);
        let h2 = g.activation("h2", &[t, d], F32);
        let f = g.activation("fc1", &[t, 4 * d], F32);
        let out = g.output("out", &[t, d], F32);
        let mm = |m, k| Gemm::new(MatmulShape::new(m, t, k), Elem::F32);
        let res = Epilogue { residual: true, ..Epilogue::default() };
        g.op("norm1", Norm::layer_norm(t, d, Elem::F32), &[x, h]).unwrap();
        g.op("qkv", mm(3 * d, d), &[h, wqkv, qkv]).unwrap();
        g.op("attention", Attention::dense(1, t, 2, d / 2, Elem::F32), &[qkv, a]).unwrap();
        g.op("proj", mm(d, d).with_epilogue(res), &[a, wo, x1, x]).unwrap();
        g.op("norm2", Norm::layer_norm(t, d, Elem::F32), &[x1, h2]).unwrap();
        g.op("fc1", mm(4 * d, d), &[h2, w1, f]).unwrap();
        g.op("fc2", mm(d, 4 * d).with_epilogue(res), &[f, w2, out, x1]).unwrap();
        g
    }

    fn overlaps(p: &Plan) -> Option<(usize, usize)> {
        let n = p.slot.len();
        for a in 0..n {
            for b in a + 1..n {
                if let (Some(sa), Some(sb), Some((s1, e1)), Some((s2, e2))) =
                    (p.slot[a], p.slot[b], p.live[a], p.live[b])
                    && sa == sb
                    && s1 <= e2
                    && s2 <= e1
                {
                    return Some((a, b));
                }
            }
        }
        None
    }

    #[test]
    fn block_reuses_buffers_without_overlap() {
        let g = block();
        let p = plan(&g);
        assert_eq!(overlaps(&p), None);
        assert!(p.pooled_bytes < p.unpooled_bytes, "{p:?}");
        for (t, s) in p.slot.iter().enumerate() {
            if let Some(s) = s {
                assert!(p.pool[*s].bytes >= g.tensors()[t].bytes);
            }
        }
        // Weights, inputs and outputs are not pooled; they have buffers of their own.
        for t in ["x", "wqkv", "wo", "w1", "w2", "out"] {
            assert_eq!(p.slot[g.find(t).unwrap().0], None, "{t}");
        }
        assert_eq!(p.dedicated, 6);
        // Without reuse: one exact buffer per activation.
        let q = plan_with(&g, false);
        assert_eq!(q.pool.len(), 6);
        assert_eq!(q.pooled_bytes, q.unpooled_bytes);
        assert!(q.buffers() > p.buffers());
    }

    #[test]
    fn step_loop_carries_setup_tensors() {
        let mut g = Graph::new();
        let len = 1000;
        let ew = |op| Elementwise::new(op, len, Elem::F32);
        let noise = g.input("noise", &[len], F32);
        let x = g.activation("x", &[len], F32);
        let v = g.activation("v", &[len], F32);
        let v2 = g.activation("v2", &[len], F32);
        let out = g.output("out", &[len], F32);
        g.set_phase(Phase::Setup);
        g.op("init", ew(EltOp::Scale { alpha: 1.0, beta: 0.0 }), &[noise, x]).unwrap();
        g.set_phase(Phase::Step);
        g.op("model", ew(EltOp::Silu), &[x, v]).unwrap();
        g.op("model2", ew(EltOp::Silu), &[v, v2]).unwrap();
        // One tensor as a read-only and a written binding of one dispatch is rejected.
        assert!(matches!(g.op("in place", ew(EltOp::Add), &[x, v2, x]), Err(crate::Error::Graph { .. })));
        let y = g.activation("y", &[len], F32);
        g.op("update", ew(EltOp::Add), &[x, v2, y]).unwrap();
        g.set_phase(Phase::Finish);
        g.op("final", ew(EltOp::Scale { alpha: 2.0, beta: 0.0 }), &[y, out]).unwrap();
        assert!(g.op("backwards", ew(EltOp::Silu), &[y, out]).is_ok());
        g.set_phase(Phase::Step);
        assert!(matches!(g.op("late step", ew(EltOp::Silu), &[y, out]), Err(crate::Error::Graph { .. })));
        let p = plan(&g);
        // x is born in Setup and read in the steps: it lives through the last step op and keeps
        // its buffer away from v, v2 and y.
        let steps = g.phase_range(Phase::Step);
        assert_eq!(p.live[x.0], Some((0, steps.end - 1)));
        for t in [v, v2, y] {
            assert_ne!(p.slot[x.0], p.slot[t.0]);
        }
        assert_eq!(overlaps(&p), None);
    }

    #[test]
    fn graph_rejects_bad_ops() {
        let mut g = Graph::new();
        let w = g.weight("w", &[16], F32);
        let a = g.activation("a", &[16], F32);
        let small = g.activation("small", &[8], F32);
        let i = g.input("i", &[16], F32);
        let ew = |op| Elementwise::new(op, 16, Elem::F32);
        assert!(g.op("read before write", ew(EltOp::Silu), &[a, small]).is_err());
        assert!(g.op("write a weight", ew(EltOp::Silu), &[i, w]).is_err());
        assert!(g.op("unknown", ew(EltOp::Silu), &[TensorId(9), a]).is_err());
        assert!(g.op("count", ew(EltOp::Silu), &[i]).is_err());
        let e = g.op("too small", ew(EltOp::Silu), &[i, small]).unwrap_err();
        assert!(e.to_string().contains("small"), "{e}");
        assert!(g.op("bad shape", ew(EltOp::Silu), &[]).is_err());
        assert!(g.ops().is_empty());
    }

    proptest::proptest! {
        /// Random graphs: no two simultaneously live activations share a buffer, every tensor
        /// fits its buffer, and pooling never needs more than one buffer per activation.
        #[test]
        fn no_two_live_tensors_share_memory(ops in proptest::collection::vec((0usize..6, 0usize..6, 1u32..25_000), 1..40)) {
            let mut g = Graph::new();
            let x = g.input("x", &[25_000], F32);
            let mut made: Vec<(TensorId, u32)> = Vec::new();
            for (i, (r1, r2, len)) in ops.into_iter().enumerate() {
                let mut reads: Vec<(TensorId, u32)> =
                    [r1, r2].iter().filter_map(|&r| made.len().checked_sub(r + 1).map(|j| made[j])).collect();
                if reads.is_empty() {
                    reads.push((x, 25_000));
                }
                let len = reads.iter().map(|r| r.1).fold(len, u32::min);
                let out = g.activation(format!("t{i}"), &[len], F32);
                let mut bindings: Vec<TensorId> = reads.iter().map(|r| r.0).collect();
                bindings.push(out);
                let op = if reads.len() == 2 { EltOp::Add } else { EltOp::Silu };
                g.op(format!("op{i}"), Elementwise::new(op, len, Elem::F32), &bindings).unwrap();
                made.push((out, len));
            }
            let p = plan(&g);
            proptest::prop_assert_eq!(overlaps(&p), None);
            for (t, s) in p.slot.iter().enumerate() {
                if let Some(s) = s {
                    proptest::prop_assert!(p.pool[*s].bytes >= g.tensors()[t].bytes);
                } else {
                    proptest::prop_assert_ne!(g.tensors()[t].kind, TensorKind::Activation);
                }
            }
            proptest::prop_assert!(p.pool.len() < g.tensors().len());
        }
    }
}

//! Liveness-based memory planning: every activation lives from the op that first writes it to the
//! last op that touches it; activations whose lives do not overlap share a pooled buffer. Buffers
//! come in size classes (powers of two, at least 256 bytes, so binding offsets stay aligned and a
//! freed buffer fits the next tensor of its class); a free buffer of the right class is reused,
//! the smallest class first.

use std::collections::BTreeMap;

use super::{Graph, TensorId, TensorKind};

/// One buffer of the activation pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolBuffer {
    /// Bytes (a size class).
    pub bytes: u64,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Pool buffer of each tensor (activations only; `None` for weights, inputs and outputs,
    /// which get buffers of their own).
    pub slot: Vec<Option<usize>>,
    /// The pool.
    pub pool: Vec<PoolBuffer>,
    /// First and last op index of each activation's life.
    pub live: Vec<Option<(usize, usize)>>,
    /// Bytes of the pool (activations with reuse).
    pub pooled_bytes: u64,
    /// Bytes of the activations if each had its own buffer.
    pub unpooled_bytes: u64,
}

/// The smallest size class holding `bytes`.
pub fn size_class(bytes: u64) -> u64 {
    bytes.max(256).next_power_of_two()
}

/// Plans the activation memory of `graph`.
pub fn plan(graph: &Graph) -> Plan {
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
    let mut slot = vec![None; n];
    let mut pool: Vec<PoolBuffer> = Vec::new();
    // Free buffers by size class.
    let mut free: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..graph.ops().len() {
        // Tensors born at op i take a buffer (a tensor read and written by the same op keeps one).
        let born: Vec<TensorId> = (0..n).map(TensorId).filter(|t| live[t.0].is_some_and(|(s, _)| s == i)).collect();
        for t in born {
            let class = size_class(graph.tensors()[t.0].bytes);
            let reuse = free.get_mut(&class).and_then(Vec::pop);
            let b = reuse.unwrap_or_else(|| {
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
    Plan { pooled_bytes: pool.iter().map(|b| b.bytes).sum(), slot, pool, live, unpooled_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::TensorKind::{Activation, Input, Output, Weight};

    /// A transformer-block-shaped chain: norm -> qkv -> attention -> proj (+ residual) -> norm ->
    /// fc1 -> fc2 (+ residual).
    fn block() -> Graph {
        let mut g = Graph::new();
        let x = g.tensor("x", 256 * 384 * 4, Input);
        let w = g.tensor("w", 1 << 20, Weight);
        let h = g.tensor("h", 256 * 384 * 4, Activation);
        let qkv = g.tensor("qkv", 3 * 256 * 384 * 4, Activation);
        let a = g.tensor("attn", 256 * 384 * 4, Activation);
        let x1 = g.tensor("x1", 256 * 384 * 4, Activation);
        let h2 = g.tensor("h2", 256 * 384 * 4, Activation);
        let f = g.tensor("fc1", 4 * 256 * 384 * 4, Activation);
        let out = g.tensor("out", 256 * 384 * 4, Output);
        g.op("norm", &[x], &[h]).unwrap();
        g.op("qkv", &[h, w], &[qkv]).unwrap();
        g.op("attention", &[qkv], &[a]).unwrap();
        g.op("proj", &[a, w, x], &[x1]).unwrap();
        g.op("norm", &[x1], &[h2]).unwrap();
        g.op("fc1", &[h2, w], &[f]).unwrap();
        g.op("fc2", &[f, w, x1], &[out]).unwrap();
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
        // Weights, inputs and outputs are not pooled.
        assert_eq!((p.slot[0], p.slot[1], p.slot[8]), (None, None, None));
    }

    #[test]
    fn graph_rejects_bad_ops() {
        let mut g = Graph::new();
        let w = g.tensor("w", 16, Weight);
        let a = g.tensor("a", 16, Activation);
        assert!(g.op("read before write", &[a], &[]).is_err());
        assert!(g.op("write a weight", &[], &[w]).is_err());
        assert!(g.op("unknown", &[TensorId(9)], &[]).is_err());
    }

    proptest::proptest! {
        /// Random graphs: no two simultaneously live activations share a buffer, every tensor
        /// fits its buffer, and pooling never needs more than one buffer per activation.
        #[test]
        fn no_two_live_tensors_share_memory(ops in proptest::collection::vec((0usize..6, 0usize..6, 1u64..100_000), 1..40)) {
            let mut g = Graph::new();
            let mut made: Vec<TensorId> = Vec::new();
            for (i, (r1, r2, bytes)) in ops.into_iter().enumerate() {
                let out = g.tensor(format!("t{i}"), bytes, Activation);
                let reads: Vec<TensorId> = [r1, r2].iter().filter_map(|&r| made.len().checked_sub(r + 1).map(|j| made[j])).collect();
                g.op(format!("op{i}"), &reads, &[out]).unwrap();
                made.push(out);
            }
            let p = plan(&g);
            proptest::prop_assert_eq!(overlaps(&p), None);
            for (t, s) in p.slot.iter().enumerate() {
                let s = s.expect("every tensor here is an activation");
                proptest::prop_assert!(p.pool[s].bytes >= g.tensors()[t].bytes);
            }
            proptest::prop_assert!(p.pool.len() <= g.tensors().len());
        }
    }
}

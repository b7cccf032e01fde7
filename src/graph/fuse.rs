//! Fusion: folds element-wise ops into the epilogues the matmuls offer, and activation
//! quantization into the norm that feeds it.
//!
//! Model code can describe the computation op by op (matmul, then a bias add, an activation, a
//! gate multiply, a residual add; a norm, then int8 quantization); this pass rewrites the graph so
//! each chain runs as one dispatch (`Epilogue`: `y = residual + gate * act(x W + bias)`;
//! `Norm { emit_i8 }`). A fold is made only when it cannot change the result: the intermediate
//! tensor is an activation that nothing else touches, the extra operand has the same value where
//! the fused op runs, and the moved write is not observed in between.

use std::collections::HashMap;

use super::{Graph, Op, TensorId, TensorKind};
use crate::error::Result;
use crate::gpu::Capabilities;
use crate::kernels::fusion::{DynKernel, Fused, FusionRole};
use crate::kernels::{Activation, EltOp, Epilogue};

/// What [`fuse`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FusionReport {
    /// One line per folded chain: the ops merged and what they became.
    pub folds: Vec<String>,
    /// Ops before.
    pub ops_before: usize,
    /// Ops after.
    pub ops_after: usize,
}

/// Tensors by binding name.
fn named(op: &Op) -> Result<HashMap<&'static str, TensorId>> {
    let reqs = op.kernel.requirements(&Capabilities::permissive())?;
    Ok(reqs.iter().map(|r| r.name).zip(op.bindings.iter().copied()).collect())
}

/// Ops (by index) that read or write `t`.
fn touching(ops: &[Op], t: TensorId) -> Vec<usize> {
    (0..ops.len()).filter(|&i| ops[i].reads.contains(&t) || ops[i].writes.contains(&t)).collect()
}

/// A candidate fold: op `first` becomes `kernel` over `names`, and ops `absorbed` disappear.
struct Fold {
    first: usize,
    absorbed: Vec<usize>,
    kernel: DynKernel,
    names: HashMap<&'static str, TensorId>,
    what: String,
}

/// Whether `t` (an intermediate) is an activation touched only by `producer` and `consumer`.
fn private(graph: &Graph, ops: &[Op], t: TensorId, producer: usize, consumer: usize) -> bool {
    graph.tensors()[t.0].kind == TensorKind::Activation && touching(ops, t) == vec![producer, consumer]
}

/// Whether no op strictly between `a` and `b` writes `operand`.
fn stable(ops: &[Op], operand: TensorId, a: usize, b: usize) -> bool {
    ops[a + 1..b].iter().all(|o| !o.writes.contains(&operand))
}

/// Whether no op strictly between `a` and `b` touches `out` (its write can move to `a`).
fn unobserved(ops: &[Op], out: TensorId, a: usize, b: usize) -> bool {
    ops[a + 1..b].iter().all(|o| !o.reads.contains(&out) && !o.writes.contains(&out))
}

/// The element-wise op `op` is, with its bindings by name.
struct EltView {
    op: EltOp,
    len: u32,
    elem: crate::kernels::Elem,
    broadcast: Option<crate::kernels::Broadcast>,
    a: TensorId,
    b: Option<TensorId>,
    out: TensorId,
}

fn elementwise_view(op: &Op) -> Result<Option<EltView>> {
    let FusionRole::Elementwise { op: e, len, elem, broadcast } = op.kernel.fusion_role() else { return Ok(None) };
    let names = named(op)?;
    Ok(Some(EltView { op: e, len, elem, broadcast, a: names["a"], b: names.get("b").copied(), out: names["out"] }))
}

fn elementwise_fold(graph: &Graph, ops: &[Op], i: usize) -> Result<Option<Fold>> {
    let FusionRole::Epilogue { epilogue: ep, n, m, out: y_elem } = ops[i].kernel.fusion_role() else {
        return Ok(None);
    };
    let names = named(&ops[i])?;
    let y = names["y"];
    let users = touching(ops, y);
    let [_, j] = users[..] else { return Ok(None) };
    if users[0] != i || !private(graph, ops, y, i, j) || ops[j].phase != ops[i].phase {
        return Ok(None);
    }
    let Some(e) = elementwise_view(&ops[j])? else { return Ok(None) };
    if e.elem != y_elem || u64::from(e.len) != u64::from(n) * u64::from(m) {
        return Ok(None);
    }
    let (a, b, out) = (e.a, e.b, e.out);
    let mut names = names;
    let mut absorbed = vec![j];
    let mut last = j;
    let untouched_before_residual = !ep.residual && ep.gate_rows.is_none();
    let new = match (e.op, b, e.broadcast) {
        // A bias row.
        (EltOp::Add, Some(bias), Some(br))
            if a == y
                && br.cols == m
                && br.group >= n
                && !ep.bias
                && ep.act == Activation::None
                && untouched_before_residual =>
        {
            names.insert("bias", bias);
            Epilogue { bias: true, ..ep }
        }
        // A residual.
        (EltOp::Add, Some(b), None) if untouched_before_residual => {
            let other = if a == y { b } else { a };
            if other == y {
                return Ok(None);
            }
            names.insert("residual", other);
            Epilogue { residual: true, ..ep }
        }
        // An activation.
        (EltOp::Silu | EltOp::GeluTanh, None, None) if ep.act == Activation::None && untouched_before_residual => {
            let act = if e.op == EltOp::Silu { Activation::Silu } else { Activation::GeluTanh };
            Epilogue { act, ..ep }
        }
        // A gate, then a residual add of the gated value.
        (EltOp::Mul, Some(gate), br) if a == y && untouched_before_residual => {
            let group = match br {
                None => 1,
                Some(br) if br.cols == m => br.group,
                Some(_) => return Ok(None),
            };
            let t = out;
            let t_users = touching(ops, t);
            let [_, k] = t_users[..] else { return Ok(None) };
            if t_users[0] != j || !private(graph, ops, t, j, k) || ops[k].phase != ops[i].phase {
                return Ok(None);
            }
            let Some(add) = elementwise_view(&ops[k])? else { return Ok(None) };
            let Some(kb) = add.b else { return Ok(None) };
            if add.op != EltOp::Add || add.broadcast.is_some() || add.len != e.len || add.elem != e.elem {
                return Ok(None);
            }
            let ka = add.a;
            let residual = if ka == t { kb } else { ka };
            if residual == t || !stable(ops, residual, i, k) {
                return Ok(None);
            }
            names.insert("gate", gate);
            names.insert("residual", residual);
            absorbed.push(k);
            last = k;
            Epilogue { residual: true, gate_rows: Some(group), ..ep }
        }
        _ => return Ok(None),
    };
    let out = if last == j { e.out } else { elementwise_view(&ops[last])?.map_or(e.out, |v| v.out) };
    // Operands must hold the same values at `i` as where they were read, and the output's write
    // must not be observed early; the output may not be one of the matmul's inputs.
    let operands: Vec<TensorId> = ["bias", "residual", "gate"].iter().filter_map(|n| names.get(n).copied()).collect();
    if operands.iter().any(|&o| o == out || !stable(ops, o, i, last))
        || !unobserved(ops, out, i, last)
        || ops[i].bindings.contains(&out)
    {
        return Ok(None);
    }
    names.insert("y", out);
    let what = format!("{new:?}");
    let Some(kernel) = ops[i].kernel.fused(Fused::Epilogue(new)) else { return Ok(None) };
    Ok(Some(Fold { first: i, absorbed, kernel, names, what }))
}

fn quantize_fold(graph: &Graph, ops: &[Op], i: usize) -> Result<Option<Fold>> {
    let FusionRole::Int8Output { rows, d, elem } = ops[i].kernel.fusion_role() else { return Ok(None) };
    let mut names = named(&ops[i])?;
    let y = names["y"];
    let users = touching(ops, y);
    let [_, j] = users[..] else { return Ok(None) };
    if users[0] != i || !private(graph, ops, y, i, j) || ops[j].phase != ops[i].phase {
        return Ok(None);
    }
    let FusionRole::ActQuant { n, k, elem: q_elem } = ops[j].kernel.fusion_role() else { return Ok(None) };
    if n != rows || k != d || q_elem != elem {
        return Ok(None);
    }
    let q = named(&ops[j])?;
    let (xq, scales) = (q["xq"], q["scales"]);
    if [xq, scales].iter().any(|&t| !unobserved(ops, t, i, j) || ops[i].bindings.contains(&t)) {
        return Ok(None);
    }
    let Some(kernel) = ops[i].kernel.fused(Fused::Int8Output) else { return Ok(None) };
    names.remove("y");
    names.insert("xq", xq);
    names.insert("x_scales", scales);
    Ok(Some(Fold { first: i, absorbed: vec![j], kernel, names, what: "int8 output".into() }))
}

/// Returns `graph` with every foldable chain folded, and what was folded.
pub fn fuse(graph: &Graph) -> Result<(Graph, FusionReport)> {
    let mut ops: Vec<Op> = graph.ops().to_vec();
    let mut report = FusionReport { ops_before: ops.len(), ..FusionReport::default() };
    // One forward scan: a fold can enable another at the same op (a chain folds link by link),
    // so the index only advances when nothing folds there.
    let mut i = 0;
    while i < ops.len() {
        let fold = match elementwise_fold(graph, &ops, i)? {
            Some(f) => Some(f),
            None => quantize_fold(graph, &ops, i)?,
        };
        let Some(fold) = fold else {
            i += 1;
            continue;
        };
        let reqs = fold.kernel.requirements(&Capabilities::permissive())?;
        let bindings: Vec<TensorId> = reqs.iter().map(|r| fold.names[r.name]).collect();
        let mut name = ops[fold.first].name.clone();
        for &j in &fold.absorbed {
            name = format!("{name}+{}", ops[j].name);
        }
        // A chain folds one op at a time: the line of its previous fold is replaced.
        let line = format!("{name}: {} ({})", fold.kernel.name(), fold.what);
        let previous = &ops[fold.first].name;
        match report.folds.iter_mut().find(|l| l.starts_with(&format!("{previous}:"))) {
            Some(l) => *l = line,
            None => report.folds.push(line),
        }
        let phase = ops[fold.first].phase;
        ops[fold.first] = Op::new(name, fold.kernel, bindings, phase)?;
        let mut absorbed = fold.absorbed;
        absorbed.sort_unstable_by(|a, b| b.cmp(a));
        for j in absorbed {
            ops.remove(j);
        }
    }
    // Rebuild through the graph's own checks.
    let mut out = Graph { tensors: graph.tensors.clone(), ops: Vec::new(), phase: graph.phase, step: graph.step };
    for op in ops {
        out.push(op.name, op.kernel, op.bindings, op.phase)?;
    }
    report.ops_after = out.ops.len();
    Ok((out, report))
}

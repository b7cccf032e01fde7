//! Fusion: folds element-wise ops into the epilogues the matmuls offer, and activation
//! quantization into the norm that feeds it.
//!
//! Model code can describe the computation op by op (matmul, then a bias add, an activation, a
//! gate multiply, a residual add; a norm, then int8 quantization); this pass rewrites the graph so
//! each chain runs as one dispatch (`Epilogue`: `y = residual + gate * act(x W + bias)`;
//! `Norm { emit_i8 }`). A fold is made only when it cannot change the result: the intermediate
//! tensor is an activation that nothing else touches, the extra operand has the same value where
//! the fused op runs, and the moved write is not observed in between.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use super::{DynKernel, Graph, Op, TensorId, TensorKind};
use crate::error::Result;
use crate::gpu::Capabilities;
use crate::kernels::{ActQuant, Activation, Elem, Elementwise, EltOp, Epilogue, Gemm, Gemv, Norm, QGemm, QGemv};

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

/// A matmul whose output goes through an epilogue.
struct MatmulView {
    epilogue: Epilogue,
    n: u32,
    m: u32,
    out: Elem,
    rebuild: Box<dyn Fn(Epilogue) -> DynKernel>,
}

fn matmul_view(kernel: &DynKernel) -> Option<MatmulView> {
    let any: &dyn Any = &**kernel;
    macro_rules! view {
        ($t:ty, $out:expr) => {
            if let Some(k) = any.downcast_ref::<$t>() {
                let k = k.clone();
                let out: Elem = $out(&k);
                return Some(MatmulView {
                    epilogue: k.epilogue,
                    n: k.shape.n,
                    m: k.shape.m,
                    out,
                    rebuild: Box::new(move |e| Arc::new(k.clone().with_epilogue(e))),
                });
            }
        };
    }
    view!(Gemm, |k: &Gemm| k.elem);
    view!(Gemv, |k: &Gemv| k.elem);
    view!(QGemv, |k: &QGemv| k.act.out());
    view!(QGemm, |k: &QGemm| k.act.out());
    None
}

fn downcast<T: 'static>(kernel: &DynKernel) -> Option<&T> {
    let any: &dyn Any = &**kernel;
    any.downcast_ref::<T>()
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

fn elementwise_fold(graph: &Graph, ops: &[Op], i: usize) -> Result<Option<Fold>> {
    let Some(mv) = matmul_view(&ops[i].kernel) else { return Ok(None) };
    let names = named(&ops[i])?;
    let y = names["y"];
    let users = touching(ops, y);
    let [_, j] = users[..] else { return Ok(None) };
    if users[0] != i || !private(graph, ops, y, i, j) || ops[j].phase != ops[i].phase {
        return Ok(None);
    }
    let Some(e) = downcast::<Elementwise>(&ops[j].kernel) else { return Ok(None) };
    if e.elem != mv.out || u64::from(e.len) != u64::from(mv.n) * u64::from(mv.m) {
        return Ok(None);
    }
    let ep = mv.epilogue;
    let (a, out) = (ops[j].bindings[0], *ops[j].bindings.last().expect("elementwise binds out"));
    let b = (ops[j].bindings.len() == 3).then(|| ops[j].bindings[1]);
    let mut names = names;
    let mut absorbed = vec![j];
    let mut last = j;
    let untouched_before_residual = !ep.residual && ep.gate_rows.is_none();
    let new = match (e.op, b, e.broadcast) {
        // A bias row.
        (EltOp::Add, Some(bias), Some(br))
            if a == y
                && br.cols == mv.m
                && br.group >= mv.n
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
                Some(br) if br.cols == mv.m => br.group,
                Some(_) => return Ok(None),
            };
            let t = out;
            let t_users = touching(ops, t);
            let [_, k] = t_users[..] else { return Ok(None) };
            if t_users[0] != j || !private(graph, ops, t, j, k) || ops[k].phase != ops[i].phase {
                return Ok(None);
            }
            let Some(add) = downcast::<Elementwise>(&ops[k].kernel) else { return Ok(None) };
            if add.op != EltOp::Add || add.broadcast.is_some() || add.len != e.len || add.elem != e.elem {
                return Ok(None);
            }
            let (ka, kb) = (ops[k].bindings[0], ops[k].bindings[1]);
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
    let out = *ops[last].bindings.last().expect("elementwise binds out");
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
    Ok(Some(Fold { first: i, absorbed, kernel: (mv.rebuild)(new), names, what }))
}

fn quantize_fold(graph: &Graph, ops: &[Op], i: usize) -> Result<Option<Fold>> {
    let Some(norm) = downcast::<Norm>(&ops[i].kernel) else { return Ok(None) };
    if norm.emit_i8 {
        return Ok(None);
    }
    let mut names = named(&ops[i])?;
    let y = names["y"];
    let users = touching(ops, y);
    let [_, j] = users[..] else { return Ok(None) };
    if users[0] != i || !private(graph, ops, y, i, j) || ops[j].phase != ops[i].phase {
        return Ok(None);
    }
    let Some(q) = downcast::<ActQuant>(&ops[j].kernel) else { return Ok(None) };
    if q.n != norm.rows || q.k != norm.d || q.elem != norm.elem {
        return Ok(None);
    }
    let (xq, scales) = (ops[j].bindings[1], ops[j].bindings[2]);
    if [xq, scales].iter().any(|&t| !unobserved(ops, t, i, j) || ops[i].bindings.contains(&t)) {
        return Ok(None);
    }
    names.remove("y");
    names.insert("xq", xq);
    names.insert("x_scales", scales);
    let kernel: DynKernel = Arc::new(Norm { emit_i8: true, ..norm.clone() });
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

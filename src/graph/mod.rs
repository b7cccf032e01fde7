//! The GPU-independent description of what to compute: ops over named tensor proxies, built
//! without touching the GPU, and the memory planner that assigns activations to a pool of reused
//! buffers by liveness. (The executor that turns a planned graph into prepared dispatches is the
//! next piece of issue 5.)

mod plan;

pub use plan::{Plan, PoolBuffer, plan};

use crate::error::{Error, Result};

/// A tensor proxy in a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// What a tensor is, which decides where its memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Uploaded once and kept (weights, tables, schedules).
    Weight,
    /// Written by the caller before a run (noise, labels, step values).
    Input,
    /// Produced and consumed inside the graph: pooled by liveness.
    Activation,
    /// Read back by the caller after a run: kept for the whole run.
    Output,
}

/// A tensor proxy: a name (`milliwatt.<name>` on the GPU), a size and a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    /// Name.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
    /// Kind.
    pub kind: TensorKind,
}

/// One op: reads some tensors, writes others. The kernel it runs is attached by the executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Name (kernel kind, for profiles and the ledger).
    pub name: String,
    /// Tensors read.
    pub reads: Vec<TensorId>,
    /// Tensors written.
    pub writes: Vec<TensorId>,
}

/// A recording of ops over tensor proxies.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    tensors: Vec<TensorDesc>,
    ops: Vec<Op>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a tensor.
    pub fn tensor(&mut self, name: impl Into<String>, bytes: u64, kind: TensorKind) -> TensorId {
        self.tensors.push(TensorDesc { name: name.into(), bytes, kind });
        TensorId(self.tensors.len() - 1)
    }

    /// Appends an op. Errors on unknown tensors, on reading an activation nothing wrote yet, and
    /// on writing weights.
    pub fn op(&mut self, name: impl Into<String>, reads: &[TensorId], writes: &[TensorId]) -> Result<()> {
        let name = name.into();
        let bad = |message: String| Err(Error::Shape { kernel: "graph", message });
        for t in reads.iter().chain(writes) {
            if t.0 >= self.tensors.len() {
                return bad(format!("op `{name}` uses unknown tensor {}", t.0));
            }
        }
        for t in reads {
            let d = &self.tensors[t.0];
            if d.kind == TensorKind::Activation && !self.ops.iter().any(|o| o.writes.contains(t)) {
                return bad(format!("op `{name}` reads activation `{}` before anything writes it", d.name));
            }
        }
        for t in writes {
            if self.tensors[t.0].kind == TensorKind::Weight {
                return bad(format!("op `{name}` writes weight `{}`", self.tensors[t.0].name));
            }
        }
        self.ops.push(Op { name, reads: reads.to_vec(), writes: writes.to_vec() });
        Ok(())
    }

    /// The tensors.
    pub fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    /// The ops in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

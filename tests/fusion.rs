//! Fusion goes through the kernel contract: a kernel the crate has never seen joins it by
//! describing itself (`Fusable`), and the pass reads bindings by name, not position or type.

use std::sync::Arc;

use milliwatt::graph::{DType, Graph, fuse};
use milliwatt::kernels::fusion::{DynKernel, Fusable, Fused, FusionRole};
use milliwatt::kernels::{Activation, Broadcast, Elem, Elementwise, EltOp, Epilogue, Gemm, MatmulShape};
use milliwatt::{BufferReq, Capabilities, Gpu, Kernel, Prepared, Result, TensorRef, Work};

/// An app's own matmul: the crate's GEMM under another name, declaring its bindings in another
/// order (`w` first), as a new kernel might.
#[derive(Clone, Debug)]
struct MyMatmul(Gemm);

impl MyMatmul {
    /// The inner kernel's order from ours: ours is w, x, y, epilogue…; Gemm's is x, w, y, ….
    fn inner_order<T: Clone>(v: &[T]) -> Vec<T> {
        let mut v = v.to_vec();
        v.swap(0, 1);
        v
    }
}

impl Kernel for MyMatmul {
    fn name(&self) -> &'static str {
        "my_matmul"
    }

    fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
        Ok(Self::inner_order(&self.0.requirements(caps)?))
    }

    fn work(&self, caps: &Capabilities) -> Result<Work> {
        self.0.work(caps)
    }

    fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
        self.0.dispatches(gpu, &Self::inner_order(buffers), &Self::inner_order(reqs))
    }
}

impl Fusable for MyMatmul {
    fn fusion_role(&self) -> FusionRole {
        FusionRole::Epilogue { epilogue: self.0.epilogue, n: self.0.shape.n, m: self.0.shape.m, out: self.0.elem }
    }

    fn fused(&self, with: Fused) -> Option<DynKernel> {
        match with {
            Fused::Epilogue(e) => Some(Arc::new(MyMatmul(self.0.clone().with_epilogue(e)))),
            Fused::Int8Output => None,
        }
    }
}

#[test]
fn a_new_matmul_fuses_its_bias_and_activation_through_the_contract() {
    let (n, m, k) = (5, 24, 7);
    let f = DType::F32;
    let mut g = Graph::new();
    let x = g.input("x", &[n, k], f);
    let w = g.weight("w", &[m, k], f);
    let bias = g.weight("bias", &[m], f);
    let mm = g.activation("mm", &[n, m], f);
    let biased = g.activation("biased", &[n, m], f);
    let y = g.output("y", &[n, m], f);
    g.op("mm", MyMatmul(Gemm::new(MatmulShape::new(m, n, k), Elem::F32)), &[w, x, mm]).unwrap();
    let add = Elementwise::new(EltOp::Add, n * m, Elem::F32).with_broadcast(Broadcast::row(m, n));
    g.op("bias", add, &[mm, bias, biased]).unwrap();
    g.op("gelu", Elementwise::new(EltOp::GeluTanh, n * m, Elem::F32), &[biased, y]).unwrap();

    let (fused, report) = fuse(&g).unwrap();
    assert_eq!((report.ops_before, report.ops_after), (3, 1), "{:#?}", report.folds);
    let op = &fused.ops()[0];
    assert_eq!(op.kernel.name(), "my_matmul");
    assert_eq!(
        op.kernel.fusion_role(),
        FusionRole::Epilogue {
            epilogue: Epilogue { bias: true, act: Activation::GeluTanh, ..Epilogue::default() },
            n,
            m,
            out: Elem::F32
        }
    );
    // Bound by name in the kernel's own order: w, x, y, then the epilogue's bias.
    assert_eq!(op.bindings, vec![w, x, y, bias]);
}

/// A kernel that says it takes no part is left alone.
#[test]
fn a_kernel_without_a_fusion_role_is_not_fused() {
    #[derive(Clone, Debug)]
    struct Opaque(MyMatmul);
    impl Kernel for Opaque {
        fn name(&self) -> &'static str {
            "opaque"
        }
        fn requirements(&self, caps: &Capabilities) -> Result<Vec<BufferReq>> {
            self.0.requirements(caps)
        }
        fn work(&self, caps: &Capabilities) -> Result<Work> {
            self.0.work(caps)
        }
        fn dispatches(&self, gpu: &Gpu, buffers: &[TensorRef<'_>], reqs: &[BufferReq]) -> Result<Prepared> {
            self.0.dispatches(gpu, buffers, reqs)
        }
    }
    impl Fusable for Opaque {
        fn fusion_role(&self) -> FusionRole {
            FusionRole::None
        }
        fn fused(&self, _: Fused) -> Option<DynKernel> {
            None
        }
    }
    let (n, m, k) = (3, 8, 4);
    let f = DType::F32;
    let mut g = Graph::new();
    let x = g.input("x", &[n, k], f);
    let w = g.weight("w", &[m, k], f);
    let mm = g.activation("mm", &[n, m], f);
    let y = g.output("y", &[n, m], f);
    g.op("mm", Opaque(MyMatmul(Gemm::new(MatmulShape::new(m, n, k), Elem::F32))), &[w, x, mm]).unwrap();
    g.op("silu", Elementwise::new(EltOp::Silu, n * m, Elem::F32), &[mm, y]).unwrap();
    assert_eq!(fuse(&g).unwrap().1.ops_after, 2);
}

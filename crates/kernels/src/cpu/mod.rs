//! The CPU backend (placeholder while it is written).
use crate::{AdamStep, AttentionShape, Backend, CrossEntropy, Dropout};

/// CPU backend.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Tensor = ();
    type Ids = ();
    fn name(&self) -> String {
        todo!()
    }
    fn tensor(&self, _: &[f32], _: &[usize]) -> () {
        todo!()
    }
    fn zeros(&self, _: &[usize]) -> () {
        todo!()
    }
    fn shape(&self, _: &()) -> Vec<usize> {
        todo!()
    }
    fn to_vec(&self, _: &()) -> Vec<f32> {
        todo!()
    }
    fn ids(&self, _: &[u32]) -> () {
        todo!()
    }
    fn ids_host<'a>(&self, _: &'a ()) -> &'a [u32] {
        todo!()
    }
    fn add(&self, _: &(), _: &()) -> () {
        todo!()
    }
    fn add_assign(&self, _: &mut (), _: &()) {
        todo!()
    }
    fn scale(&self, _: &(), _: &()) -> () {
        todo!()
    }
    fn relu(&self, _: &()) -> () {
        todo!()
    }
    fn relu_backward(&self, _: &(), _: &()) -> () {
        todo!()
    }
    fn dropout(&self, _: &(), _: &Dropout) -> () {
        todo!()
    }
    fn embedding(&self, _: &(), _: &()) -> () {
        todo!()
    }
    fn embedding_backward(&self, _: &(), _: &(), _: usize, _: Option<u32>) -> () {
        todo!()
    }
    fn layer_norm(&self, _: &(), _: &(), _: &(), _: f32) -> ((), ()) {
        todo!()
    }
    fn layer_norm_backward(&self, _: &(), _: &(), _: &(), _: &()) -> ((), (), ()) {
        todo!()
    }
    fn matmul(&self, _: &(), _: &(), _: bool, _: bool) -> () {
        todo!()
    }
    fn linear(&self, _: &(), _: &(), _: Option<&()>) -> () {
        todo!()
    }
    fn sum_rows(&self, _: &()) -> () {
        todo!()
    }
    fn attention(&self, _: &(), _: &(), _: AttentionShape, _: Option<&Dropout>) -> ((), ()) {
        todo!()
    }
    fn attention_backward(
        &self,
        _: &(),
        _: &(),
        _: &(),
        _: AttentionShape,
        _: Option<&Dropout>,
    ) -> () {
        todo!()
    }
    fn cross_entropy(&self, _: &(), _: &(), _: &(), _: bool) -> CrossEntropy<()> {
        todo!()
    }
    fn adam(&self, _: &mut (), _: &(), _: &mut (), _: &mut (), _: &AdamStep) {
        todo!()
    }
}

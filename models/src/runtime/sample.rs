//! (in progress)
/// Sampling parameters (in progress).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingParams;

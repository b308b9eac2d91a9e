//! The observation seam: the model reports what its routers chose through a `Probe`, which costs
//! nothing when it is off. The routing view, the JSON trace and GRPO's routing statistics all read
//! it. Only plain data crosses it.

pub trait Probe {
    /// Whether the model should copy router choices out at all.
    fn wants_routing(&self) -> bool {
        false
    }

    /// Router choices of decoder layer `layer` for `tokens` consecutive positions (row-major over
    /// batch then sequence): `experts[t * k + j]` was multiplied by `weights[t * k + j]`.
    fn routing(
        &mut self,
        _layer: usize,
        _tokens: usize,
        _k: usize,
        _experts: &[i64],
        _weights: &[f32],
    ) {
    }
}

/// Observes nothing.
pub struct NoProbe;

impl Probe for NoProbe {}

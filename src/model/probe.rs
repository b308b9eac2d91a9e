//! The observation seam: the model reports what its routers chose through a `Probe`, which costs
//! nothing when it is off. The routing view, the JSON trace and GRPO's routing statistics all read
//! it. Only plain data crosses it. One hook goes the other way: a probe may hand a router the
//! experts to use (GRPO's routing replay).

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

    /// The router of decoder layer `layer` chose `chosen` (`tokens × k` expert ids, best first,
    /// row-major as in [`Probe::routing`]); returning `Some(experts)` (the same shape) makes the
    /// layer use those instead. The mixing weights are still the router's own scores for the
    /// experts used, so a replayed router keeps its gradient. Called before `routing`, which
    /// then reports the experts actually used.
    fn replace_experts(&mut self, _layer: usize, _k: usize, _chosen: &[i64]) -> Option<Vec<i64>> {
        None
    }
}

/// Observes nothing.
pub struct NoProbe;

impl Probe for NoProbe {}

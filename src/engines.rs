//! The one factory for chat backends: a model on this machine (the libtorch engine thread) or
//! one behind an OpenAI-compatible server (`--remote`). Both are driven through the same
//! [`Engine`] handle and report the same [`EngineEvent`]s, so nothing above this line knows
//! which it has.

use tokio::sync::mpsc::UnboundedSender;

use crate::backend::chat::{Engine, EngineEvent, EngineSource};

pub fn spawn(source: EngineSource, events: UnboundedSender<EngineEvent>) -> Engine {
    match source {
        EngineSource::Local(config) => crate::runtime::engine::spawn(config, events),
        EngineSource::Remote(config) => crate::remote::spawn(config, events),
    }
}

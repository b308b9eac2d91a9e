//! Builds variables by walking the module tree with HF key names (`p / "self_attn" / "q_a_proj"`),
//! filling each from the checkpoint. A missing or misshapen weight is reported by its full dotted
//! name; nothing needs a renaming table.

use tch::{nn, Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::ModelError;

pub struct Loader<'a> {
    pub ckpt: &'a Checkpoint,
    pub kind: Kind,
    pub device: Device,
    pub fp8_block: Option<[usize; 2]>,
}

impl Loader<'_> {
    /// Loads `p.name` with the expected shape into the var store as a trainable variable.
    pub fn weight(&self, p: &nn::Path, name: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        self.load_as(p, name, shape, self.kind, true)
    }

    /// Loads a tensor that stays f32 whatever the run dtype (router bias) and is not trained by
    /// gradient descent.
    pub fn buffer_f32(
        &self,
        p: &nn::Path,
        name: &str,
        shape: &[i64],
    ) -> Result<Tensor, ModelError> {
        self.load_as(p, name, shape, Kind::Float, false)
    }

    pub fn has(&self, p: &nn::Path, name: &str) -> bool {
        self.ckpt.contains(&p.path(name))
    }

    fn load_as(
        &self,
        p: &nn::Path,
        name: &str,
        shape: &[i64],
        kind: Kind,
        trainable: bool,
    ) -> Result<Tensor, ModelError> {
        let full = p.path(name);
        let info = self
            .ckpt
            .info(&full)
            .ok_or_else(|| ModelError::MissingWeight {
                name: full.clone(),
                dir: self.ckpt.dir.display().to_string(),
            })?;
        if info.shape != shape {
            return Err(ModelError::WrongShape {
                name: full,
                msg: format!(
                    "shape {:?} in the checkpoint, expected {:?}",
                    info.shape, shape
                ),
            });
        }
        let t = self.ckpt.load(&full, kind, self.device, self.fp8_block)?;
        Ok(p.add(name, t, trainable))
    }
}

//! Builds variables by walking the module tree with HF key names (`p / "self_attn" / "q_a_proj"`),
//! filling each from the checkpoint. A missing or misshapen weight is reported by its full dotted
//! name; nothing needs a renaming table.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tch::{nn, Device, Kind, Tensor};

use super::block_store::BlockStore;
use super::layers::Weight;
use super::qlinear::QuantWeight;
use super::quant::Format;
use super::source::WeightSource;
use super::ModelError;

pub struct Loader<'a> {
    pub ckpt: &'a WeightSource,
    pub kind: Kind,
    pub device: Device,
    pub fp8_block: Option<[usize; 2]>,
    /// `--quant`: linear layers are stored in this block format.
    pub quant: Option<Format>,
    /// The weights stored quantized, by name, with their sizes in bytes (they are not in the var
    /// store).
    pub quantized: RefCell<BTreeMap<String, usize>>,
    /// Where the quantized weights' bytes are kept (few large allocations, not one each).
    pub blocks: BlockStore,
}

impl Loader<'_> {
    /// A linear layer's `[out, in]` weight: quantized tensor by tensor when the loader quantizes
    /// (read in f32, quantized, dropped, so the model is never held whole at 16 bits), else a
    /// float variable as [`Loader::weight`] loads it.
    pub fn linear_weight(
        &self,
        p: &nn::Path,
        name: &str,
        shape: &[i64],
    ) -> Result<Weight, ModelError> {
        // Rows that are not whole blocks of the `--quant` format stay in floating point, as
        // llama.cpp's quantizer falls back for such tensors.
        let whole_blocks = |f: Format| shape.last().is_some_and(|&k| k % f.block_len() as i64 == 0);
        let full = p.path(name);
        // Blocks a GGUF file stores in a format we run are used as they are: that is the model.
        if let Some((stored, bytes)) = self.ckpt.stored_blocks(&full)? {
            if self.quant.is_none_or(|q| q == stored) && self.device == Device::Cpu {
                let [n, k] = [shape[0] as usize, shape[1] as usize];
                let q = QuantWeight::from_bytes(stored, n, k, bytes, &full)?.kept_in(&self.blocks);
                self.quantized.borrow_mut().insert(full, q.byte_len());
                return Ok(Weight::Quant(q));
            }
        }
        let Some(format) = self.quant.filter(|&f| whole_blocks(f)) else {
            return Ok(Weight::Float(self.weight(p, name, shape)?));
        };
        // As stored (bf16 stays bf16): the quantizer widens a few rows at a time.
        let w = self.read_native(&full, shape)?;
        let q = QuantWeight::quantize(&w, format, &full)?.kept_in(&self.blocks);
        self.quantized.borrow_mut().insert(full, q.byte_len());
        Ok(Weight::Quant(q))
    }

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
        let t = self.read(&p.path(name), shape, kind, self.device)?;
        Ok(p.add(name, t, trainable))
    }

    /// The checkpoint tensor `full`, checked against `shape`, as `kind` on `device`.
    fn read(
        &self,
        full: &str,
        shape: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, ModelError> {
        self.check_shape(full, shape)?;
        self.ckpt.load(full, kind, device, self.fp8_block)
    }

    /// The checkpoint holds `full` with exactly `shape`.
    fn check_shape(&self, full: &str, shape: &[i64]) -> Result<(), ModelError> {
        let found = self
            .ckpt
            .shape(full)
            .ok_or_else(|| ModelError::MissingWeight {
                name: full.to_string(),
                dir: self.ckpt.location().display().to_string(),
            })?;
        if found != shape {
            return Err(ModelError::WrongShape {
                name: full.to_string(),
                msg: format!("shape {found:?} in the checkpoint, expected {shape:?}"),
            });
        }
        Ok(())
    }

    /// [`Loader::read`] in the kind the checkpoint stores (see `WeightSource::load_native`).
    fn read_native(&self, full: &str, shape: &[i64]) -> Result<Tensor, ModelError> {
        self.check_shape(full, shape)?;
        self.ckpt.load_native(full, self.fp8_block)
    }
}

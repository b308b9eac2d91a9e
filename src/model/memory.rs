//! Will the model fit? Checked before loading, from the checkpoint's header alone, so a model too
//! large for this machine is refused with a sentence — the size it needs, the memory available and
//! the `--quant` that would fit — instead of a libtorch allocation failure minutes later.

use super::quant::Format;
use super::source::WeightSource;
use super::{DType, ModelError};

/// Bytes the loaded weights take: each linear-layer matrix (a 2-D `*_proj`, expert or head weight
/// whose rows are whole blocks) in `quant`'s blocks when quantizing, everything else at `dtype`.
pub fn weight_bytes(source: &WeightSource, dtype: DType, quant: Option<Format>) -> u64 {
    let elem = dtype.kind().elt_size_in_bytes() as u64;
    source
        .names()
        .iter()
        .filter_map(|name| Some((name, source.shape(name)?)))
        .map(|(name, shape)| {
            let numel: u64 = shape.iter().map(|&d| d.max(0) as u64).product();
            let blocks = |f: Format| numel / f.block_len() as u64 * f.block_bytes() as u64;
            match (quant, source.stored_format(name)) {
                // A linear layer's blocks a GGUF file stores (Q4_K and Q6_K too) are kept as
                // they are (Loader::linear_weight); its embedding is dequantized to `dtype`.
                (None, Some(stored)) if quantizable(name, &shape, stored) => blocks(stored),
                (Some(f), _) if quantizable(name, &shape, f) => blocks(f),
                _ => numel * elem,
            }
        })
        .sum()
}

/// Whether the loader stores this weight in blocks under `--quant` (see `Loader::linear_weight`).
fn quantizable(name: &str, shape: &[i64], format: Format) -> bool {
    let linear = name.ends_with("proj.weight")
        || name.ends_with("proj_with_mqa.weight")
        || name == "lm_head.weight";
    linear
        && !name.contains("kv_b_proj")
        && shape.len() == 2
        && shape[1] % format.block_len() as i64 == 0
}

/// Memory the system can still give this process (`MemAvailable`), in bytes; `None` where it is
/// not known (not Linux).
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a model whose weights need more than `available` bytes, naming what would fit.
pub fn check_fits(
    source: &WeightSource,
    dtype: DType,
    quant: Option<Format>,
    available: u64,
) -> Result<(), ModelError> {
    let need = weight_bytes(source, dtype, quant);
    // Activations, the KV cache and libtorch's own buffers come on top of the weights.
    let headroom = 1.1;
    if need as f64 * headroom <= available as f64 {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    let as_what = match quant {
        Some(f) => format!("with --quant {}", f.name().to_ascii_lowercase()),
        None => format!("at {}", dtype.name()),
    };
    let fits: Vec<String> = [Format::Q8_0, Format::Q4_0]
        .into_iter()
        .filter(|&f| Some(f) != quant)
        .map(|f| (f, weight_bytes(source, dtype, Some(f))))
        .filter(|&(_, b)| b as f64 * headroom <= available as f64)
        .map(|(f, b)| {
            format!(
                "--quant {} ({:.1} GB)",
                f.name().to_ascii_lowercase(),
                gb(b)
            )
        })
        .collect();
    let advice = if fits.is_empty() {
        "no --quant makes it fit on this machine".to_string()
    } else {
        format!("{} would fit", fits.join(" or "))
    };
    Err(ModelError::Device(format!(
        "{}: the weights need {:.1} GB {as_what}, but only {:.1} GB of memory is available; {advice}",
        source.location().display(),
        gb(need),
        gb(available)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> WeightSource {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/thinkbench-tiny");
        WeightSource::open(&dir).unwrap()
    }

    /// Float sizes are the parameter count (read from the header) times the element size; block
    /// formats are smaller than bf16, Q4_0 smaller than Q8_0.
    #[test]
    fn f32_size_is_four_bytes_a_parameter_and_q8_0_is_smaller() {
        let src = builtin();
        let params: u64 = src
            .names()
            .iter()
            .map(|n| src.shape(n).unwrap().iter().product::<i64>() as u64)
            .sum();
        assert_eq!(weight_bytes(&src, DType::F32, None), 4 * params);
        assert_eq!(weight_bytes(&src, DType::BF16, None), 2 * params);
        let q8 = weight_bytes(&src, DType::F32, Some(Format::Q8_0));
        let q4 = weight_bytes(&src, DType::F32, Some(Format::Q4_0));
        assert!(
            q4 < q8 && q8 < 2 * params,
            "q4 {q4} q8 {q8} params {params}"
        );
    }

    #[test]
    fn a_model_too_large_is_refused_with_what_would_fit() {
        let src = builtin();
        let f32 = weight_bytes(&src, DType::F32, None);
        let q4 = weight_bytes(&src, DType::F32, Some(Format::Q4_0));
        assert!(check_fits(&src, DType::F32, None, 2 * f32).is_ok());
        // Room for the Q4_0 model only.
        let err = check_fits(&src, DType::F32, None, q4 * 12 / 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thinkbench-tiny"), "{err}");
        assert!(
            err.contains("at f32") && err.contains("--quant q4_0"),
            "{err}"
        );
        assert!(!err.contains("--quant q8_0"), "q8_0 does not fit: {err}");
        assert!(!err.contains('\n'));
    }
}

//! RoPE frequencies and their scaling for contexts beyond the original training length.
//!
//! Supported, as llama.cpp and Hugging Face transformers apply them:
//! * linear scaling (`rope_scaling.type = linear`, GGUF `rope.scaling.type = linear`): every
//!   frequency divided by the factor, i.e. positions compressed by it;
//! * per-frequency divisors: GGUF `rope_freqs.weight` (how Llama 3.1+ GGUFs carry their
//!   scaling), and Hugging Face `rope_type = llama3`, whose divisors are computed here with the
//!   same formula transformers uses;
//! * Hugging Face `rope_type = dynamic` (NTK-aware), as SGLang and vLLM serve it: the base is
//!   raised once for the whole extended context (`factor` times the original), so a position's
//!   angles never depend on the sequence's length and cached keys stay valid;
//! * YaRN (GGUF `rope.scaling.type = yarn`, Hugging Face `rope_type = yarn`): each frequency
//!   blended between interpolated and original by where its wavelength falls (ggml's
//!   `rope_yarn`, transformers' `_compute_yarn_parameters`), and cos and sin scaled by
//!   `attn_factor · (1 + 0.1 ln factor)`.
//!
//! Others (`longrope`, DeepSeek's YaRN `mscale`, ...) are refused by name where the
//! configuration is read, never silently ignored.

use crate::error::{ExecutorError, Result};

/// How RoPE frequencies are scaled; the default is plain RoPE.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// Linear factor (1 for none): every frequency is divided by it.
    pub linear: f32,
    /// One divisor per frequency pair (`head_dim / 2` of them), or none.
    pub freq_factors: Option<Vec<f32>>,
    /// Magnitude of cos and sin (1 but for YaRN's attention scaling).
    pub mscale: f32,
}

/// The parameters of YaRN scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnScaling {
    /// How much longer the new context is.
    pub factor: f64,
    /// The context the model was trained with.
    pub original_context: f64,
    /// Rotations over the original context above which a frequency keeps its value (32).
    pub beta_fast: f64,
    /// Rotations below which a frequency is fully interpolated (1).
    pub beta_slow: f64,
    /// Extra factor on cos and sin (1).
    pub attn_factor: f64,
}

/// The parameters of Llama 3.1's `llama3` scaling (Hugging Face `rope_scaling`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    /// How much longer the new context is.
    pub factor: f64,
    /// Wavelengths longer than `original / low_freq_factor` are divided by `factor`.
    pub low_freq_factor: f64,
    /// Wavelengths shorter than `original / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context the model was trained with.
    pub original_max_position: f64,
}

impl Default for RopeScaling {
    fn default() -> Self {
        Self::none()
    }
}

impl RopeScaling {
    /// Plain RoPE.
    pub fn none() -> Self {
        RopeScaling {
            linear: 1.0,
            freq_factors: None,
            mscale: 1.0,
        }
    }

    /// Linear scaling by `factor`.
    pub fn linear(factor: f32) -> Self {
        RopeScaling {
            linear: factor,
            freq_factors: None,
            mscale: 1.0,
        }
    }

    /// The divisors of Llama 3.1's scaling for `head_dim` and base `theta`: wavelengths below
    /// `original / high_freq_factor` are kept, those above `original / low_freq_factor` divided
    /// by `factor`, and those between blended smoothly (transformers'
    /// `_compute_llama3_parameters`).
    pub fn llama3(theta: f64, head_dim: usize, p: Llama3Scaling) -> Self {
        let factors = (0..head_dim / 2)
            .map(|i| {
                let freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let new = if wavelen < p.original_max_position / p.high_freq_factor {
                    freq
                } else if wavelen > p.original_max_position / p.low_freq_factor {
                    freq / p.factor
                } else {
                    let smooth = (p.original_max_position / wavelen - p.low_freq_factor)
                        / (p.high_freq_factor - p.low_freq_factor);
                    (1.0 - smooth) * freq / p.factor + smooth * freq
                };
                (freq / new) as f32
            })
            .collect();
        RopeScaling {
            linear: 1.0,
            freq_factors: Some(factors),
            mscale: 1.0,
        }
    }

    /// Dynamic NTK scaling by `factor` for `head_dim` and base `theta`, as SGLang's and vLLM's
    /// `DynamicNTKScalingRotaryEmbedding` compute it for a context `factor` times the original:
    /// the base becomes `theta · (factor² - factor + 1)^(d / (d - 2))`, here as the divisors
    /// `(new base / theta)^(2i / d)` of the original frequencies.
    pub fn dynamic_ntk(theta: f64, head_dim: usize, factor: f64) -> Self {
        let d = head_dim as f64;
        let base = theta * (factor * factor - (factor - 1.0)).powf(d / (d - 2.0));
        let factors = (0..head_dim / 2)
            .map(|i| (base / theta).powf(2.0 * i as f64 / d) as f32)
            .collect();
        RopeScaling {
            linear: 1.0,
            freq_factors: Some(factors),
            mscale: 1.0,
        }
    }

    /// YaRN for `head_dim` and base `theta`: pair `i`'s frequency becomes
    /// `f · (s · (1 - r) + r)` with `s = 1 / factor` and `r` the ramp, 1 below the correction
    /// range (high frequencies, kept) to 0 above it (low ones, interpolated); the range is where
    /// a frequency turns `beta_fast` to `beta_slow` times over the original context, floored
    /// and ceiled as ggml and transformers do.
    pub fn yarn(theta: f64, head_dim: usize, p: YarnScaling) -> Self {
        let d = head_dim as f64;
        let corr = |rotations: f64| {
            d * (p.original_context / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * theta.ln())
        };
        let low = corr(p.beta_fast).floor().max(0.0);
        let high = corr(p.beta_slow).ceil().min(d - 1.0);
        let scale = 1.0 / p.factor;
        let factors = (0..head_dim / 2)
            .map(|i| {
                let y = (i as f64 - low) / (high - low).max(0.001);
                let ramp = 1.0 - y.clamp(0.0, 1.0);
                (1.0 / (scale * (1.0 - ramp) + ramp)) as f32
            })
            .collect();
        RopeScaling {
            linear: 1.0,
            freq_factors: Some(factors),
            mscale: (p.attn_factor * (1.0 + 0.1 * p.factor.ln())) as f32,
        }
    }

    /// Checks the values against the head dimension.
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        let bad = |problem: String| {
            Err(ExecutorError::Metadata {
                key: "rope scaling".into(),
                problem,
            })
        };
        if !(self.linear.is_finite() && self.linear > 0.0) {
            return bad(format!("linear factor {} is not positive", self.linear));
        }
        if !(self.mscale.is_finite() && self.mscale > 0.0) {
            return bad(format!("magnitude {} is not positive", self.mscale));
        }
        if let Some(f) = &self.freq_factors {
            if f.len() != head_dim / 2 {
                return bad(format!(
                    "{} frequency factors for a head dimension of {head_dim}",
                    f.len()
                ));
            }
            if let Some(x) = f.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return bad(format!("frequency factor {x} is not positive"));
            }
        }
        Ok(())
    }

    /// The inverse frequency of pair `i` of `head_dim`, scaled.
    pub fn inv_freq(&self, theta: f32, head_dim: usize, i: usize) -> f64 {
        let base = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
        let factor = self
            .freq_factors
            .as_ref()
            .and_then(|f| f.get(i))
            .map_or(1.0, |&x| x as f64);
        base / (self.linear as f64 * factor)
    }

    /// The cos and sin tables, `[max_position][head_dim / 2]` each, row `pos` holding the
    /// angles `pos * inv_freq(i)`.
    pub fn tables(&self, theta: f32, head_dim: usize, max_position: usize) -> (Vec<f32>, Vec<f32>) {
        let half = head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| self.inv_freq(theta, head_dim, i))
            .collect();
        let mut cos = Vec::with_capacity(max_position * half);
        let mut sin = Vec::with_capacity(max_position * half);
        for pos in 0..max_position {
            for &f in &inv {
                let a = pos as f64 * f;
                cos.push(a.cos() as f32 * self.mscale);
                sin.push(a.sin() as f32 * self.mscale);
            }
        }
        (cos, sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_keeps_high_frequencies_and_divides_low_ones() {
        let s = RopeScaling::llama3(
            10_000.0,
            8,
            Llama3Scaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 64.0,
            },
        );
        let f = s.freq_factors.clone().unwrap_or_default();
        // Wavelengths 6.3 (kept), 62.8 (blended), 628 and 6283 (divided by 8).
        assert_eq!(f[0], 1.0);
        assert!(f[1] > 1.0 && f[1] < 8.0, "{f:?}");
        assert_eq!(&f[2..], &[8.0, 8.0]);
        assert!(s.validate(8).is_ok());
        assert!(s.validate(16).is_err());
        assert!(RopeScaling::linear(0.0).validate(8).is_err());
        let lin = RopeScaling::linear(4.0);
        assert_eq!(lin.inv_freq(10_000.0, 8, 0), 0.25);
    }
}

/**
 * WGSL math shared by kernels: functions WGSL lacks (erf) or whose built-in form is not safe on
 * every backend (tanh overflows to NaN on some drivers for large inputs), and the GELU forms.
 *
 * @module
 */

/** Overflow-safe tanh, erf (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7) and both GELU forms with derivatives. */
export const WGSL_MATH = `
fn safe_tanh(x: f32) -> f32 {
  let e = exp(-2.0 * abs(x));
  let t = (1.0 - e) / (1.0 + e);
  return select(-t, t, x >= 0.0);
}
fn erf_approx(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  let r = 1.0 - poly * exp(-z * z);
  return select(-r, r, x >= 0.0);
}
fn gelu_erf(x: f32) -> f32 {
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}
fn gelu_erf_grad(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_approx(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
fn gelu_tanh(x: f32) -> f32 {
  return 0.5 * x * (1.0 + safe_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
fn gelu_tanh_grad(x: f32) -> f32 {
  let t = safe_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x);
}
fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}
`;

/**
 * Counter-based random numbers: `random_uniform(seed, stream, index)` hashes its three inputs
 * (lowbias32 mixing) to a float in [0, 1) with 24 random bits, so a mask can be regenerated in
 * backward instead of stored. `randomUniform` in kernels/reference/random.ts computes the same bits.
 */
export const WGSL_RANDOM = `
fn mix32(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}
fn random_uniform(seed: u32, stream: u32, index: u32) -> f32 {
  let h = mix32(index ^ mix32(stream ^ mix32(seed)));
  return f32(h >> 8u) * (1.0 / 16777216.0);
}
`;

/**
 * The plan of an update - which models sit it out and why, each model's gradient norm and clipping,
 * its learning rate and bias corrections - as one GPU kernel (`mm_plan`), beside the float64 rule of
 * the adaptive learning-rate multipliers it implements.
 *
 * The adaptive rule, in float64 (the reference step uses these functions; the kernel computes the
 * same in float32):
 *
 * For each model with a full window of finite losses, fit a least-squares line to its last W
 * losses. The evidence that the loss is falling is the line's slope divided by its standard error,
 * z = -slope / se(slope) (a t-statistic: large when the loss falls steadily, near 0 when it is flat
 * or the fall is lost in noise, negative when it rises). A model's multiplier moves towards
 *
 *   target = 1 + d (max - 1) for d >= 0,   1 + d (1 - min) for d < 0,   d = tanh((z - zMean) / (1 + |zMean|))
 *
 * where zMean is the mean z of the models with a full window that take part in this update (a model
 * sitting an update out influences no one): learning rates shift towards the
 * models whose loss falls more convincingly than the others', and the bounds keep a slow model
 * from stalling. Because only the difference from the mean counts, one model alone, or several
 * with the same trend, stay at 1. A model whose loss is rising (slope > 0) never moves up: its
 * target is at most its current multiplier. The move is smoothed:
 * multiplier += smoothing * (target - multiplier). Without a full window of finite losses a
 * model's multiplier does not change.
 *
 * @module
 */
import { kernelFor } from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { WGSL_MATH } from "../kernels/wgsl.ts";
import { CONTROL, CONTROL_STRIDE, GRADIENT_LIMIT, SkipReason, TILE_FLAG, TILE_PARTIAL } from "./kernels.ts";
import { MAX_MODELS } from "./options.ts";
import { type ArenaLayout, FINITE, LANES, padded } from "./wgsl.ts";

/** Least-squares slope of `losses` against 0..W-1 and its t-statistic of decrease. */
export function lossTrend(losses: readonly number[]): { slope: number; z: number } {
  const n = losses.length;
  const meanT = (n - 1) / 2;
  const meanL = losses.reduce((s, v) => s + v, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let t = 0; t < n; t++) {
    sxx += (t - meanT) ** 2;
    sxy += (t - meanT) * (losses[t] - meanL);
  }
  const slope = sxy / sxx;
  let residual = 0;
  for (let t = 0; t < n; t++) residual += (losses[t] - meanL - slope * (t - meanT)) ** 2;
  // A perfectly straight line has no residual; the floor keeps z finite (and 0 for a flat line).
  const se = Math.sqrt(Math.max(residual / (n - 2), 1e-12 * meanL * meanL + 1e-20) / sxx);
  return { slope, z: -slope / se };
}

/** The adaptive-rate parameters the rule needs. */
export interface AdaptiveRule {
  /** Smallest multiplier. */
  min: number;
  /** Largest multiplier. */
  max: number;
  /** Fraction of the way towards the target per update. */
  smoothing: number;
}

/**
 * One update of the multipliers. `windows[m]` holds model m's last W losses (oldest first), or null
 * when it has fewer than W; a window with a non-finite loss counts as none. Models in `frozen`
 * (skipped in this update) keep their multiplier and do not count in the mean trend, so a fault in
 * one model never changes another's rate. Returns the new multipliers.
 */
export function updateMultipliers(
  current: readonly number[],
  windows: readonly (readonly number[] | null)[],
  rule: AdaptiveRule,
  frozen: readonly boolean[] = [],
): number[] {
  const trends = windows.map((w) => {
    if (!w || !w.every(Number.isFinite)) return null;
    const trend = lossTrend(w);
    return Number.isFinite(trend.slope) && Number.isFinite(trend.z) ? trend : null;
  });
  const valid = trends.filter((t, m): t is { slope: number; z: number } => t !== null && !frozen[m]);
  if (valid.length === 0) return [...current];
  const zMean = valid.reduce((s, t) => s + t.z, 0) / valid.length;
  return current.map((multiplier, m) => {
    const trend = trends[m];
    if (!trend || frozen[m]) return multiplier;
    const d = Math.tanh((trend.z - zMean) / (1 + Math.abs(zMean)));
    let target = d >= 0 ? 1 + d * (rule.max - 1) : 1 + d * (1 - rule.min);
    if (trend.slope > 0) target = Math.min(target, multiplier);
    return multiplier + rule.smoothing * (target - multiplier);
  });
}

/** What phase of an update `mm_plan` performs. */
export const PlanPhase = {
  /** Sum norms and flag non-finite models (before sharing). */
  Flag: 0,
  /** Sum norms again (after sharing) and plan the update. */
  Finish: 1,
  /** Both, when nothing changes the gradients in between. */
  FlagAndFinish: 2,
} as const;

/** One of {@linkcode PlanPhase}. */
export type PlanPhase = (typeof PlanPhase)[keyof typeof PlanPhase];

/** Per-update values of the plan kernel. */
export interface PlanUniforms {
  /** Phase. */
  phase: PlanPhase;
  /** Base learning rate x schedule factor. */
  lr: number;
  /** 1 / gradient-accumulation steps. */
  inverseAccumulation: number;
  /** Clip bound, 0 for none. */
  clip: number;
  /** 1 - beta1, computed in float64. */
  oneMinusBeta1: number;
  /** 1 - beta2, computed in float64. */
  oneMinusBeta2: number;
  /** Adaptive multipliers on (1) or off (0). */
  adaptive: number;
  /** Loss window length. */
  window: number;
  /** Multiplier bounds and smoothing. */
  min: number;
  /** Multiplier bounds and smoothing. */
  max: number;
  /** Multiplier bounds and smoothing. */
  smoothing: number;
  /** Bit m set when model m has a full window of losses. */
  validMask: number;
  /** Ring index of each model's oldest loss in the window. */
  ringHeads: number[];
  /** Learning-rate factor of each model's weight. */
  lrFactors: number[];
}

/** Records the plan: per-model norms, skip flags, clipping, adaptive multipliers, rates and bias corrections. */
export function recordPlan(
  layout: ArenaLayout,
  u: PlanUniforms,
  partials: BufferRange,
  ring: BufferRange,
  control: BufferRange,
): void {
  const kernel = kernelFor("mm_plan", () => ({
    name: "mm_plan",
    params: {
      models: "u32",
      phase: "u32",
      lr: "f32",
      inverse_accumulation: "f32",
      clip: "f32",
      one_minus_beta1: "f32",
      one_minus_beta2: "f32",
      adaptive: "u32",
      window: "u32",
      min_multiplier: "f32",
      max_multiplier: "f32",
      smoothing: "f32",
      valid_mask: "u32",
      tile_start: { type: "u32", length: MAX_MODELS + 1 },
      ring_head: { type: "u32", length: MAX_MODELS },
      lr_factor: { type: "f32", length: MAX_MODELS },
    },
    bindings: [{ name: "partials" }, { name: "ring" }, { name: "control", write: true }],
    code: `${FINITE}${WGSL_MATH}
const S = ${CONTROL_STRIDE}u;
var<workgroup> largest: array<f32, ${LANES}>;
var<workgroup> sums: array<f32, ${LANES}>;
var<workgroup> flags: array<u32, ${LANES}>;
var<workgroup> trend_z: array<f32, ${MAX_MODELS}>;
var<workgroup> trend_slope: array<f32, ${MAX_MODELS}>;
var<workgroup> trend_valid: array<u32, ${MAX_MODELS}>;

// Merges two scaled sums of squares (largest element, sum of squares relative to it).
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let top = max(a.x, b.x);
  if (top == 0.0) { return vec2<f32>(0.0, 0.0); }
  let ra = a.x / top;
  let rb = b.x / top;
  return vec2<f32>(top, a.y * ra * ra + b.y * rb * rb);
}

// Least-squares slope of model m's window and its t-statistic of decrease (lossTrend above).
fn fit_trend(m: u32) {
  let n = params.window;
  let mean_t = f32(n - 1u) * 0.5;
  var mean_l = 0.0;
  var ok = true;
  for (var t = 0u; t < n; t++) {
    let v = ring[m * n + (ring_head(m) + t) % n];
    ok = ok && finite(v);
    mean_l += v;
  }
  mean_l /= f32(n);
  var sxx = 0.0;
  var sxy = 0.0;
  for (var t = 0u; t < n; t++) {
    let v = ring[m * n + (ring_head(m) + t) % n];
    sxx += (f32(t) - mean_t) * (f32(t) - mean_t);
    sxy += (f32(t) - mean_t) * (v - mean_l);
  }
  let slope = sxy / sxx;
  var residual = 0.0;
  for (var t = 0u; t < n; t++) {
    let v = ring[m * n + (ring_head(m) + t) % n];
    let r = v - mean_l - slope * (f32(t) - mean_t);
    residual += r * r;
  }
  let se = sqrt(max(residual / f32(n - 2u), 1e-12 * mean_l * mean_l + 1e-20) / sxx);
  trend_slope[m] = slope;
  trend_z[m] = -slope / se;
  trend_valid[m] = select(0u, 1u, ok && finite(slope) && finite(trend_z[m]));
}

// The first reason to skip model m this update (a SkipReason), from its loss and tile flags.
fn skip_reason(row: u32, tile_flags: u32, gradient_max: f32) -> f32 {
  if (control[row + ${CONTROL.lossFinite}u] < 0.5) { return ${SkipReason.Loss}.0; }
  if ((tile_flags & ${TILE_FLAG.gradient}u) != 0u) { return ${SkipReason.Gradient}.0; }
  if ((tile_flags & ${TILE_FLAG.parameters}u) != 0u) { return ${SkipReason.Parameters}.0; }
  if (gradient_max > ${GRADIENT_LIMIT.toExponential()}) { return ${SkipReason.Overflow}.0; }
  return 0.0;
}

@compute @workgroup_size(${LANES})
fn main(@builtin(local_invocation_index) lid: u32) {
  // Each model's norm: strided partial merges, then a fixed-order tree (bit-identical run to run).
  for (var m = 0u; m < params.models; m++) {
    var acc = vec2<f32>(0.0, 0.0);
    var f = 0u;
    for (var t = tile_start(m) + lid; t < tile_start(m + 1u); t += ${LANES}u) {
      acc = merge(acc, vec2<f32>(partials[t * ${TILE_PARTIAL}u], partials[t * ${TILE_PARTIAL}u + 1u]));
      f |= u32(partials[t * ${TILE_PARTIAL}u + 2u]);
    }
    largest[lid] = acc.x;
    sums[lid] = acc.y;
    flags[lid] = f;
    workgroupBarrier();
    for (var stride = ${LANES / 2}u; stride > 0u; stride >>= 1u) {
      if (lid < stride) {
        let merged = merge(vec2<f32>(largest[lid], sums[lid]), vec2<f32>(largest[lid + stride], sums[lid + stride]));
        largest[lid] = merged.x;
        sums[lid] = merged.y;
        flags[lid] |= flags[lid + stride];
      }
      workgroupBarrier();
    }
    if (lid == 0u) {
      let row = m * S;
      let inverse = params.inverse_accumulation;
      // A non-finite gradient has no norm; NaN reports it (read from a var: Tint rejects a constant NaN).
      var nan_bits = 0x7fc00000u;
      let nan = bitcast<f32>(nan_bits);
      let norm = select(largest[0] * sqrt(sums[0]) * inverse, nan, (flags[0] & ${TILE_FLAG.gradient}u) != 0u);
      control[row + ${CONTROL.norm}u] = norm;
      if (params.phase != ${PlanPhase.Finish}u) {
        control[row + ${CONTROL.gradMax}u] = largest[0] * inverse;
        control[row + ${CONTROL.gradNorm}u] = norm;
        control[row + ${CONTROL.fault}u] = 0.0;
        control[row + ${CONTROL.skip}u] = skip_reason(row, flags[0], largest[0] * inverse);
      }
    }
    // Every lane reads lane 0's control writes below; workgroupBarrier alone orders only workgroup memory.
    storageBarrier();
    workgroupBarrier();
  }
  if (params.phase == ${PlanPhase.Flag}u) { return; }
  let adaptive = params.adaptive == 1u;
  if (adaptive && lid < params.models) {
    trend_valid[lid] = 0u;
    if (((params.valid_mask >> lid) & 1u) == 1u) { fit_trend(lid); }
  }
  workgroupBarrier();
  // Every lane sums the same trends in the same order, then lane m plans model m. (The loop's bound
  // is a constant: llvmpipe took 5-8 ms over this loop bounded by params.models.)
  var z_sum = 0.0;
  var z_count = 0.0;
  for (var k = 0u; k < ${MAX_MODELS}u; k++) {
    // A model sitting this update out takes no part in the others' rates either.
    if (k < params.models && trend_valid[k] == 1u && control[k * S + ${CONTROL.skip}u] < 0.5) {
      z_sum += trend_z[k];
      z_count += 1.0;
    }
  }
  let z_mean = z_sum / max(z_count, 1.0);
  if (lid >= params.models) { return; }
  let m = lid;
  let row = m * S;
  control[row + ${CONTROL.lossFinite}u] = 1.0;
  if (control[row + ${CONTROL.skip}u] > 0.5) {
    control[row + ${CONTROL.skipped}u] += 1.0;
    return;
  }
  let norm = control[row + ${CONTROL.norm}u];
  control[row + ${CONTROL.gradNorm}u] = norm;
  var clip_factor = 1.0;
  if (params.clip > 0.0) { clip_factor = min(1.0, params.clip / (norm + 1e-6)); }
  control[row + ${CONTROL.gradScale}u] = params.inverse_accumulation * clip_factor;
  var multiplier = control[row + ${CONTROL.multiplier}u];
  if (adaptive && trend_valid[m] == 1u) {
    let d = safe_tanh((trend_z[m] - z_mean) / (1.0 + abs(z_mean)));
    var goal = select(1.0 + d * (1.0 - params.min_multiplier), 1.0 + d * (params.max_multiplier - 1.0), d >= 0.0);
    if (trend_slope[m] > 0.0) { goal = min(goal, multiplier); }
    multiplier += params.smoothing * (goal - multiplier);
    control[row + ${CONTROL.multiplier}u] = multiplier;
    control[row + ${CONTROL.trend}u] = trend_z[m];
  }
  control[row + ${CONTROL.lr}u] = params.lr * lr_factor(m) * multiplier;
  control[row + ${CONTROL.steps}u] += 1.0;
  // 1 - beta^t by recurrence: computing it as 1 - pow(beta, t) in float32 loses ~5 digits for small t.
  let q1 = control[row + ${CONTROL.biasCorrection1}u];
  let q2 = control[row + ${CONTROL.biasCorrection2}u];
  control[row + ${CONTROL.biasCorrection1}u] = q1 + params.one_minus_beta1 * (1.0 - q1);
  control[row + ${CONTROL.biasCorrection2}u] = q2 + params.one_minus_beta2 * (1.0 - q2);
}`,
  }));
  dispatch(
    kernel,
    {
      models: layout.models,
      phase: u.phase,
      lr: u.lr,
      inverse_accumulation: u.inverseAccumulation,
      clip: u.clip,
      one_minus_beta1: u.oneMinusBeta1,
      one_minus_beta2: u.oneMinusBeta2,
      adaptive: u.adaptive,
      window: u.window,
      min_multiplier: u.min,
      max_multiplier: u.max,
      smoothing: u.smoothing,
      valid_mask: u.validMask,
      tile_start: padded(layout.tiles, MAX_MODELS + 1),
      ring_head: padded(u.ringHeads, MAX_MODELS),
      lr_factor: padded(u.lrFactors, MAX_MODELS),
    },
    [partials, ring, control],
    [1],
  );
}

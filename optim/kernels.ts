/**
 * The fused WGSL kernels of the multi-model optimizer. All parameters, gradients and moments of all
 * models live in one flat arena; model m owns the elements [segment[m], segment[m + 1]). An update
 * is a constant number of dispatches whatever the number of tensors:
 *
 * 1. `mm_tile_norms`: each 1024-element tile's gradient norm, scaled so it cannot overflow, and
 *    whether it holds a non-finite gradient (or parameter, before sharing); tiles never cross models;
 * 2. `mm_plan`: one workgroup sums each model's tiles in a fixed order, flags non-finite models,
 *    clips, updates the adaptive multipliers and writes each model's learning rate and bias
 *    corrections into the control table;
 * 3. `mm_mix` over gradients (sharing), then 1-2 again, when sharing is on for this update;
 * 4. `mm_adamw`: AdamW over every element, reading its model's row of the control table;
 * 5. `mm_mix` over parameters (soft sync), when due.
 *
 * No readback, no atomics: every sum has a fixed order, so updates are bit-identical run to run.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { grid, kernelFor, linearIndex } from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { kernelVariant } from "../engine/variants.ts";
import { WGSL_MATH } from "../kernels/wgsl.ts";
import { MAX_MODELS } from "./options.ts";

/** Fields of a model's row in the control table (float32, {@linkcode CONTROL_STRIDE} per model). */
export const CONTROL = {
  /** Effective learning rate of this update. */
  lr: 0,
  /** Factor applied to the raw gradient sum: 1/accumulation x clip factor. */
  gradScale: 1,
  /** Why this model's update is skipped, a {@linkcode SkipReason} (0 when it is not). */
  skip: 2,
  /** 1 - beta1^t, kept as state and advanced by q <- q + (1 - beta1)(1 - q), which has no cancellation. */
  biasCorrection1: 3,
  /** 1 - beta2^t, advanced the same way. */
  biasCorrection2: 4,
  /** Global norm of the averaged gradient (after sharing, when shared), computed without overflow. */
  norm: 5,
  /** Updates applied to this model (t). */
  steps: 6,
  /** Updates skipped. */
  skipped: 7,
  /** Adaptive learning-rate multiplier. */
  multiplier: 8,
  /** 1 until a non-finite loss is logged in the current update's micro-batches. */
  lossFinite: 9,
  /** Global gradient norm of the last update, before clipping. */
  gradNorm: 10,
  /** t-statistic of the loss trend at the last adaptive update (0 without a full window). */
  trend: 11,
  /** Largest |element| of the averaged gradient, before sharing. */
  gradMax: 12,
  /** 1 when this update's AdamW produced a non-finite parameter or moment (the model then takes no part in sync). */
  fault: 13,
} as const;

/**
 * Why a model sat an update out (the value of its {@linkcode CONTROL}.skip field). A skipped model's
 * parameters and moments stay as they were, and it neither contributes to nor receives sharing or sync.
 */
export const SkipReason = {
  /** Not skipped. */
  None: 0,
  /** A loss logged in this cycle was NaN or infinite. */
  Loss: 1,
  /** The accumulated gradient holds a NaN or an infinity. */
  Gradient: 2,
  /** A parameter holds a NaN or an infinity (checked before sharing, which would spread it). */
  Parameters: 3,
  /** The gradient is finite but an element exceeds {@linkcode GRADIENT_LIMIT}: its square overflows float32 moments. */
  Overflow: 4,
} as const;

/** One of {@linkcode SkipReason}. */
export type SkipReason = (typeof SkipReason)[keyof typeof SkipReason];

/**
 * Largest |gradient element| (after averaging over micro-batches) an update accepts: its square,
 * which AdamW's second moment holds, must stay below float32's maximum of 3.4e38.
 */
export const GRADIENT_LIMIT = 1e19;

/** Floats per model in the control table. */
export const CONTROL_STRIDE = 16;

/** Elements per tile of the norm pass (256 invocations x vec4). */
export const TILE = 1024;

/** Floats per tile in the norm pass's output: largest finite |g|, sum of (g / largest)^2, fault flags. */
export const TILE_PARTIAL = 3;

/** Bits of a tile's fault flags. */
const TILE_FLAG = { gradient: 1, parameters: 2 } as const;

/** u32 words per group in the group table: first block, size, count, pad, 8 offsets, 8 model indices. */
export const GROUP_WORDS = 4 + 2 * MAX_MODELS;

const FINITE = `
fn finite(x: f32) -> bool {
  // Bit test rather than comparisons, which compilers may fold under fast-math assumptions.
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
`;

function indexed(prefix: string, count: number, type: "u32" | "f32"): Record<string, "u32" | "f32"> {
  const out: Record<string, "u32" | "f32"> = {};
  for (let i = 0; i < count; i++) out[`${prefix}${i}`] = type;
  return out;
}

/** WGSL returning uniform `${prefix}${i}` for a runtime index i (uniform struct fields cannot be indexed). */
function uniformArray(name: string, prefix: string, count: number, type: "u32" | "f32"): string {
  const cases = Array.from({ length: count }, (_, i) => `    case ${i}u: { return params.${prefix}${i}; }`)
    .join("\n");
  return `fn ${name}(i: u32) -> ${type} {\n  switch i {\n${cases}\n    default: { return params.${prefix}${
    count - 1
  }; }\n  }\n}\n`;
}

const SEGMENTS = `${uniformArray("segment", "seg", MAX_MODELS + 1, "u32")}
fn model_of(element: u32) -> u32 {
  var m = 0u;
  for (; m + 1u < params.models; m++) {
    if (element < segment(m + 1u)) { break; }
  }
  return m;
}
`;

/** Layout facts every update needs, passed as uniforms. */
export interface ArenaLayout {
  /** Number of models. */
  models: number;
  /** Element offset where each model starts, plus the end (models + 1 entries). */
  segments: number[];
  /** First tile of each model, plus the total (models + 1 entries). */
  tiles: number[];
}

function padded(values: readonly number[], length: number): number[] {
  const out = [...values];
  while (out.length < length) out.push(values[values.length - 1] ?? 0);
  return out;
}

/**
 * Records each 1024-element tile's gradient norm without overflow (its largest finite |g| and the
 * sum of (g / largest)^2, as LAPACK's nrm2 scales) and its fault flags: a non-finite gradient, and
 * with `checkValues` a non-finite parameter. In the tree variant (GPUs) a workgroup reduces a tile
 * with a tree; in the serial variant (CPU adapters, where barriers are expensive) one invocation
 * walks a tile.
 */
export function recordTileNorms(
  layout: ArenaLayout,
  buffers: { grads: BufferRange; values: BufferRange; partials: BufferRange },
  checkValues: boolean,
): void {
  const variant = kernelVariant("mm_tile_norms", () => gpu().profile.isSoftware ? "serial" : "tree");
  const software = variant === "serial";
  const kernel = kernelFor(`mm_tile_norms/${variant}`, () => ({
    name: `mm_tile_norms_${variant}`,
    params: {
      models: "u32",
      check_values: "u32",
      ...indexed("seg", MAX_MODELS + 1, "u32"),
      ...indexed("tile", MAX_MODELS + 1, "u32"),
    },
    bindings: [
      { name: "grads", type: "vec4<f32>" },
      { name: "values", type: "vec4<f32>" },
      { name: "partials", write: true },
    ],
    code: `${FINITE}${SEGMENTS}${uniformArray("tile_start", "tile", MAX_MODELS + 1, "u32")}
fn tile_model(tile: u32) -> u32 {
  var m = 0u;
  for (; m + 1u < params.models; m++) {
    if (tile < tile_start(m + 1u)) { break; }
  }
  return m;
}

fn all_finite(v: vec4<f32>) -> bool {
  return finite(v.x) && finite(v.y) && finite(v.z) && finite(v.w);
}

// |v| with non-finite lanes zeroed: they are reported by the flags, not summed.
fn finite_abs(v: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(select(0.0, abs(v.x), finite(v.x)), select(0.0, abs(v.y), finite(v.y)),
                   select(0.0, abs(v.z), finite(v.z)), select(0.0, abs(v.w), finite(v.w)));
}

fn flags_of(i: u32) -> u32 {
  var flags = select(${TILE_FLAG.gradient}u, 0u, all_finite(grads[i]));
  if (params.check_values == 1u && !all_finite(values[i])) { flags |= ${TILE_FLAG.parameters}u; }
  return flags;
}

fn scaled_square(i: u32, largest: f32) -> f32 {
  if (largest == 0.0) { return 0.0; }
  let x = finite_abs(grads[i]) / largest;
  return dot(x, x);
}
${software ? SERIAL_TILE_NORM : TREE_TILE_NORM}`,
  }));
  const tiles = layout.tiles[layout.models];
  dispatch(
    kernel,
    [
      layout.models,
      checkValues ? 1 : 0,
      ...padded(layout.segments, MAX_MODELS + 1),
      ...padded(layout.tiles, MAX_MODELS + 1),
    ],
    [buffers.grads, buffers.values, buffers.partials],
    software ? grid(tiles, 64) : grid(tiles, 1),
  );
}

const TREE_TILE_NORM = `
var<workgroup> largest: array<f32, 256>;
var<workgroup> sums: array<f32, 256>;
var<workgroup> flags: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = wid.x + wid.y * groups.x;
  let in_range = tile < tile_start(params.models);
  var m = 0u;
  var i = 0u;
  var inside = false;
  if (in_range) {
    m = tile_model(tile);
    let element = segment(m) + (tile - tile_start(m)) * ${TILE}u + lid * 4u;
    inside = element < segment(m + 1u);
    i = element / 4u;
  }
  var a = vec4<f32>(0.0);
  var f = 0u;
  if (inside) {
    a = finite_abs(grads[i]);
    f = flags_of(i);
  }
  largest[lid] = max(max(a.x, a.y), max(a.z, a.w));
  flags[lid] = f;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      largest[lid] = max(largest[lid], largest[lid + stride]);
      flags[lid] |= flags[lid + stride];
    }
    workgroupBarrier();
  }
  let top = largest[0];
  var s = 0.0;
  if (inside) { s = scaled_square(i, top); }
  sums[lid] = s;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { sums[lid] += sums[lid + stride]; }
    workgroupBarrier();
  }
  if (in_range && lid == 0u) {
    partials[tile * ${TILE_PARTIAL}u] = top;
    partials[tile * ${TILE_PARTIAL}u + 1u] = sums[0];
    partials[tile * ${TILE_PARTIAL}u + 2u] = f32(flags[0]);
  }
}`;

const SERIAL_TILE_NORM = `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let tile = ${linearIndex(64)};
  if (tile >= tile_start(params.models)) { return; }
  let m = tile_model(tile);
  let start = (segment(m) + (tile - tile_start(m)) * ${TILE}u) / 4u;
  let end = min(start + ${TILE / 4}u, segment(m + 1u) / 4u);
  var top = 0.0;
  var f = 0u;
  for (var i = start; i < end; i++) {
    let a = finite_abs(grads[i]);
    top = max(top, max(max(a.x, a.y), max(a.z, a.w)));
    f |= flags_of(i);
  }
  var s = 0.0;
  for (var i = start; i < end; i++) { s += scaled_square(i, top); }
  partials[tile * ${TILE_PARTIAL}u] = top;
  partials[tile * ${TILE_PARTIAL}u + 1u] = s;
  partials[tile * ${TILE_PARTIAL}u + 2u] = f32(f);
}`;

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
      ...indexed("tile", MAX_MODELS + 1, "u32"),
      ...indexed("head", MAX_MODELS, "u32"),
      ...indexed("factor", MAX_MODELS, "f32"),
    },
    bindings: [{ name: "partials" }, { name: "ring" }, { name: "control", write: true }],
    code: `${FINITE}${WGSL_MATH}${uniformArray("tile_start", "tile", MAX_MODELS + 1, "u32")}${
      uniformArray("ring_head", "head", MAX_MODELS, "u32")
    }${uniformArray("lr_factor", "factor", MAX_MODELS, "f32")}
const S = ${CONTROL_STRIDE}u;
var<workgroup> largest: array<f32, 256>;
var<workgroup> sums: array<f32, 256>;
var<workgroup> flags: array<u32, 256>;
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

// Least-squares slope of model m's window and its t-statistic of decrease (see optim/adaptive.ts).
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

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  // Each model's norm: strided partial merges, then a fixed-order tree (bit-identical run to run).
  for (var m = 0u; m < params.models; m++) {
    var acc = vec2<f32>(0.0, 0.0);
    var f = 0u;
    for (var t = tile_start(m) + lid; t < tile_start(m + 1u); t += 256u) {
      acc = merge(acc, vec2<f32>(partials[t * ${TILE_PARTIAL}u], partials[t * ${TILE_PARTIAL}u + 1u]));
      f |= u32(partials[t * ${TILE_PARTIAL}u + 2u]);
    }
    largest[lid] = acc.x;
    sums[lid] = acc.y;
    flags[lid] = f;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
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
      // A non-finite gradient has no norm; NaN reports it.
      let nan = bitcast<f32>(0x7fc00000u);
      let norm = select(largest[0] * sqrt(sums[0]) * inverse, nan, (flags[0] & ${TILE_FLAG.gradient}u) != 0u);
      control[row + ${CONTROL.norm}u] = norm;
      if (params.phase != ${PlanPhase.Finish}u) {
        control[row + ${CONTROL.gradMax}u] = largest[0] * inverse;
        control[row + ${CONTROL.gradNorm}u] = norm;
        control[row + ${CONTROL.fault}u] = 0.0;
        control[row + ${CONTROL.skip}u] = skip_reason(row, flags[0], largest[0] * inverse);
      }
    }
    workgroupBarrier();
  }
  if (params.phase == ${PlanPhase.Flag}u) { return; }
  let adaptive = params.adaptive == 1u;
  if (adaptive && lid < params.models) {
    trend_valid[lid] = 0u;
    if ((params.valid_mask >> lid & 1u) == 1u) { fit_trend(lid); }
  }
  workgroupBarrier();
  if (lid != 0u) { return; }
  var z_sum = 0.0;
  var z_count = 0.0;
  for (var m = 0u; m < params.models; m++) {
    // A model sitting this update out takes no part in the others' rates either.
    if (trend_valid[m] == 1u && control[m * S + ${CONTROL.skip}u] < 0.5) {
      z_sum += trend_z[m];
      z_count += 1.0;
    }
  }
  let z_mean = z_sum / max(z_count, 1.0);
  for (var m = 0u; m < params.models; m++) {
    let row = m * S;
    control[row + ${CONTROL.lossFinite}u] = 1.0;
    if (control[row + ${CONTROL.skip}u] > 0.5) {
      control[row + ${CONTROL.skipped}u] += 1.0;
      continue;
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
  }
}`,
  }));
  dispatch(
    kernel,
    [
      layout.models,
      u.phase,
      u.lr,
      u.inverseAccumulation,
      u.clip,
      u.oneMinusBeta1,
      u.oneMinusBeta2,
      u.adaptive,
      u.window,
      u.min,
      u.max,
      u.smoothing,
      u.validMask,
      ...padded(layout.tiles, MAX_MODELS + 1),
      ...padded(u.ringHeads, MAX_MODELS),
      ...padded(u.lrFactors, MAX_MODELS),
    ],
    [partials, ring, control],
    [1],
  );
}

/**
 * Records AdamW (decoupled weight decay, PyTorch's operation order) over the whole arena. A model
 * whose new parameters or moments are not finite is marked in its control row's `fault` field, so
 * the soft sync that follows leaves it out.
 */
export function recordAdamw(
  layout: ArenaLayout,
  hyper: { beta1: number; beta2: number; eps: number; weightDecay: number },
  buffers: {
    values: BufferRange;
    grads: BufferRange;
    expAvg: BufferRange;
    expAvgSq: BufferRange;
    control: BufferRange;
  },
): void {
  const kernel = kernelFor("mm_adamw", () => ({
    name: "mm_adamw",
    params: {
      count: "u32",
      models: "u32",
      one_minus_beta1: "f32",
      beta2: "f32",
      one_minus_beta2: "f32",
      eps: "f32",
      weight_decay: "f32",
      ...indexed("seg", MAX_MODELS + 1, "u32"),
    },
    bindings: [
      { name: "values", type: "vec4<f32>", write: true },
      { name: "grads", type: "vec4<f32>" },
      { name: "exp_avg", type: "vec4<f32>", write: true },
      { name: "exp_avg_sq", type: "vec4<f32>", write: true },
      { name: "control", write: true },
    ],
    code: `${FINITE}${SEGMENTS}
fn all_finite(v: vec4<f32>) -> bool {
  return finite(v.x) && finite(v.y) && finite(v.z) && finite(v.w);
}
const S = ${CONTROL_STRIDE}u;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i >= params.count) { return; }
  let row = model_of(i * 4u) * S;
  if (control[row + ${CONTROL.skip}u] > 0.5) { return; }
  let lr = control[row + ${CONTROL.lr}u];
  let g = grads[i] * control[row + ${CONTROL.gradScale}u];
  let p = values[i] * (1.0 - lr * params.weight_decay);
  let m = exp_avg[i] + (g - exp_avg[i]) * params.one_minus_beta1;
  let v = exp_avg_sq[i] * params.beta2 + g * g * params.one_minus_beta2;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) / sqrt(control[row + ${CONTROL.biasCorrection2}u]) + params.eps;
  let updated = p - (lr / control[row + ${CONTROL.biasCorrection1}u]) * m / denom;
  values[i] = updated;
  // Every writer stores the same value, so the unordered writes agree.
  if (!(all_finite(updated) && all_finite(m) && all_finite(v))) { control[row + ${CONTROL.fault}u] = 1.0; }
}`,
  }));
  const count = buffers.values.size / 16;
  dispatch(
    kernel,
    [
      count,
      layout.models,
      1 - hyper.beta1,
      hyper.beta2,
      1 - hyper.beta2,
      hyper.eps,
      hyper.weightDecay,
      ...padded(layout.segments, MAX_MODELS + 1),
    ],
    [buffers.values, buffers.grads, buffers.expAvg, buffers.expAvgSq, buffers.control],
    grid(count, 256),
  );
}

/** Elements of one group a workgroup mixes: 256 lanes x 16, adjacent lanes on adjacent elements. */
export const MIX_BLOCK = 4096;

/**
 * The group table of {@linkcode recordMix}: per group its first block, size, member count, member
 * offsets and model indices ({@linkcode GROUP_WORDS} words), then the group of every block.
 */
export function groupTable(
  groups: readonly { size: number; members: readonly { offset: number; model: number }[] }[],
): {
  words: Uint32Array;
  blocks: number;
} {
  const blocks = groups.reduce((s, g) => s + Math.ceil(g.size / MIX_BLOCK), 0);
  const words = new Uint32Array(groups.length * GROUP_WORDS + blocks);
  let block = 0;
  groups.forEach((group, g) => {
    const base = g * GROUP_WORDS;
    words[base] = block;
    words[base + 1] = group.size;
    words[base + 2] = group.members.length;
    group.members.forEach((member, k) => {
      words[base + 4 + k] = member.offset;
      words[base + 4 + MAX_MODELS + k] = member.model;
    });
    for (let b = 0; b < Math.ceil(group.size / MIX_BLOCK); b++) {
      words[groups.length * GROUP_WORDS + block++] = g;
    }
  });
  return { words, blocks };
}

/**
 * Records `x <- (1 - ratio) x + ratio * sum(w x) / sum(w)` over every group's members (gradients
 * for sharing, parameters for sync); models skipped in this update neither contribute nor change.
 */
export function recordMix(
  target: BufferRange,
  table: BufferRange,
  control: BufferRange,
  groups: { count: number; blocks: number },
  ratio: number,
  weights: readonly number[],
): void {
  const kernel = kernelFor("mm_mix", () => ({
    name: "mm_mix",
    params: { groups: "u32", blocks: "u32", ratio: "f32", ...indexed("weight", MAX_MODELS, "f32") },
    bindings: [{ name: "mixed", write: true }, { name: "table", type: "u32" }, { name: "control" }],
    code: `${uniformArray("model_weight", "weight", MAX_MODELS, "f32")}
const S = ${CONTROL_STRIDE}u;
const W = ${GROUP_WORDS}u;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lane: u32) {
  let block = wid.x + wid.y * groups.x;
  if (block >= params.blocks) { return; }
  let base = table[params.groups * W + block] * W;
  let size = table[base + 1u];
  let count = table[base + 2u];
  var offsets: array<u32, ${MAX_MODELS}>;
  var weights: array<f32, ${MAX_MODELS}>;
  var weight_sum = 0.0;
  for (var k = 0u; k < count; k++) {
    let m = table[base + 4u + ${MAX_MODELS}u + k];
    offsets[k] = table[base + 4u + k];
    // Models sitting this update out (or whose AdamW just failed) get weight 0: they are never read
    // (0 x NaN would still be NaN) and never changed.
    let out = control[m * S + ${CONTROL.skip}u] > 0.5 || control[m * S + ${CONTROL.fault}u] > 0.5;
    weights[k] = select(model_weight(m), 0.0, out);
    weight_sum += weights[k];
  }
  if (weight_sum == 0.0) { return; }
  let first = (block - table[base]) * ${MIX_BLOCK}u + lane;
  for (var e = first; e < min(first + ${MIX_BLOCK}u, size); e += 256u) {
    var total = 0.0;
    // Constant trip counts let compilers unroll and keep offsets and weights in registers.
    for (var k = 0u; k < ${MAX_MODELS}u; k++) {
      if (k < count && weights[k] > 0.0) { total += weights[k] * mixed[offsets[k] + e]; }
    }
    let mean = total / weight_sum;
    for (var k = 0u; k < ${MAX_MODELS}u; k++) {
      if (k < count && weights[k] > 0.0) {
        let at = offsets[k] + e;
        mixed[at] = (1.0 - params.ratio) * mixed[at] + params.ratio * mean;
      }
    }
  }
}`,
  }));
  dispatch(
    kernel,
    [groups.count, groups.blocks, ratio, ...padded(weights, MAX_MODELS)],
    [target, table, control],
    grid(groups.blocks, 1),
  );
}

/** Records the logging of losses: each present model's latest loss goes into its ring slot; a non-finite one flags it. */
export function recordLosses(
  present: number,
  slots: readonly number[],
  window: number,
  buffers: { latest: BufferRange; ring: BufferRange; control: BufferRange },
): void {
  const kernel = kernelFor("mm_log_losses", () => ({
    name: "mm_log_losses",
    params: { present: "u32", window: "u32", ...indexed("slot", MAX_MODELS, "u32") },
    bindings: [{ name: "latest" }, { name: "ring", write: true }, { name: "control", write: true }],
    code: `${FINITE}${uniformArray("ring_slot", "slot", MAX_MODELS, "u32")}
@compute @workgroup_size(${MAX_MODELS})
fn main(@builtin(local_invocation_index) m: u32) {
  if ((params.present >> m & 1u) == 0u) { return; }
  let loss = latest[m];
  ring[m * params.window + ring_slot(m)] = loss;
  if (!finite(loss)) { control[m * ${CONTROL_STRIDE}u + ${CONTROL.lossFinite}u] = 0.0; }
}`,
  }));
  dispatch(kernel, [present, window, ...padded(slots, MAX_MODELS)], [
    buffers.latest,
    buffers.ring,
    buffers.control,
  ], [1]);
}

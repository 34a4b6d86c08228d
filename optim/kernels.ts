/**
 * The fused WGSL kernels of the multi-model optimizer. All parameters, gradients and moments of all
 * models live in one arena, its elements numbered across its chunks; model m owns the elements
 * [segment[m], segment[m + 1]). An update
 * is a constant number of dispatches whatever the number of tensors:
 *
 * 1. `mm_tile_norms`: each TILE-element tile's gradient norm, scaled so it cannot overflow, and
 *    whether it holds a non-finite gradient (or parameter, before sharing); tiles never cross models;
 * 2. `mm_plan`: one workgroup sums each model's tiles in a fixed order, flags non-finite models,
 *    clips, updates the adaptive multipliers and writes each model's learning rate and bias
 *    corrections into the control table;
 * 3. `mm_mix` over gradients (sharing), then 1-2 again, when sharing is on for this update;
 * 4. `mm_adamw`: AdamW over every element, reading its model's row of the control table;
 * 5. `mm_mix` over parameters (soft sync), when due.
 *
 * The arena may exceed one storage binding and one buffer (it is then held in several chunks):
 * steps 1 and 4 run once per binding-sized run of whole tiles inside one chunk (optim/windows.ts),
 * each binding only its window of every arena-sized buffer, and step 5's mixing binds one window per
 * model. An update thus costs 2 dispatches per binding-sized piece of each chunk plus one plan (3 per
 * piece and two plans with sharing), plus the mixes.
 *
 * No readback, no atomics: every sum has a fixed order, so updates are bit-identical run to run,
 * and windowed updates are bit-identical to those of a single binding.
 *
 * @module
 */
import { ARENA_ALIGN } from "../engine/arena.ts";
import { gpu } from "../engine/device.ts";
import { grid, kernelFor, linearIndex } from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { kernelVariant } from "../engine/variants.ts";
import { MAX_MODELS } from "./options.ts";
import { type ArenaLayout, FINITE, LANES, MODEL_OF, padded, SEGMENT_PARAM } from "./wgsl.ts";
import { type ChunkedBuffer, chunkWindow, type TileWindow } from "./windows.ts";

/** The window of an arena-sized buffer that a tile window covers. */
function windowOf(chunks: ChunkedBuffer, w: TileWindow): BufferRange {
  return chunkWindow(chunks, w.start, w.length);
}

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

/** Elements per tile of the norm pass (LANES invocations x vec4). */
export const TILE: number = LANES * 4;

/** Floats per tile in the norm pass's output: largest finite |g|, sum of (g / largest)^2, fault flags. */
export const TILE_PARTIAL = 3;

/** Bits of a tile's fault flags. */
export const TILE_FLAG = { gradient: 1, parameters: 2 } as const;

/** u32 words per group in the group table: first block, size, count, pad, 8 offsets, 8 model indices. */
const GROUP_WORDS: number = 4 + 2 * MAX_MODELS;

/**
 * Records each TILE-element tile's gradient norm without overflow (its largest finite |g| and the
 * sum of (g / largest)^2, as LAPACK's nrm2 scales) and its fault flags: a non-finite gradient, and
 * with `checkValues` a non-finite parameter. In the tree variant (GPUs) a workgroup reduces a tile
 * with a tree; in the serial variant (CPU adapters, where barriers are expensive) one invocation
 * walks a tile. One dispatch per tile window, binding the window of `grads` and `values`.
 */
export function recordTileNorms(
  layout: ArenaLayout,
  windows: readonly TileWindow[],
  buffers: { grads: ChunkedBuffer; values: ChunkedBuffer; partials: BufferRange },
  checkValues: boolean,
): void {
  const variant = kernelVariant("mm_tile_norms", () => gpu().profile.isSoftware ? "serial" : "tree");
  const software = variant === "serial";
  const kernel = kernelFor(`mm_tile_norms/${variant}`, () => ({
    name: `mm_tile_norms_${variant}`,
    params: {
      models: "u32",
      check_values: "u32",
      first_tile: "u32",
      tile_end: "u32",
      window_start: "u32",
      ...SEGMENT_PARAM,
      tile_start: { type: "u32", length: MAX_MODELS + 1 },
    },
    bindings: [
      { name: "grads", type: "vec4<f32>" },
      { name: "values", type: "vec4<f32>" },
      { name: "partials", write: true },
    ],
    code: `${FINITE}${MODEL_OF}
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
  for (const w of windows) {
    dispatch(
      kernel,
      {
        models: layout.models,
        check_values: checkValues ? 1 : 0,
        first_tile: w.firstTile,
        tile_end: w.firstTile + w.tiles,
        window_start: w.start,
        segment: padded(layout.segments, MAX_MODELS + 1),
        tile_start: padded(layout.tiles, MAX_MODELS + 1),
      },
      [windowOf(buffers.grads, w), windowOf(buffers.values, w), buffers.partials],
      software ? grid(w.tiles, 64) : grid(w.tiles, 1),
    );
  }
}

const TREE_TILE_NORM = `
var<workgroup> largest: array<f32, ${LANES}>;
var<workgroup> sums: array<f32, ${LANES}>;
var<workgroup> flags: array<u32, ${LANES}>;
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tile = params.first_tile + wid.x + wid.y * groups.x;
  let in_range = tile < params.tile_end;
  var m = 0u;
  var i = 0u;
  var inside = false;
  if (in_range) {
    m = tile_model(tile);
    let element = segment(m) + (tile - tile_start(m)) * ${TILE}u + lid * 4u;
    inside = element < segment(m + 1u);
    i = (element - params.window_start) / 4u;
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
  for (var stride = ${LANES / 2}u; stride > 0u; stride >>= 1u) {
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
  for (var stride = ${LANES / 2}u; stride > 0u; stride >>= 1u) {
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
  let tile = params.first_tile + ${linearIndex(64)};
  if (tile >= params.tile_end) { return; }
  let m = tile_model(tile);
  let element = segment(m) + (tile - tile_start(m)) * ${TILE}u;
  let start = (element - params.window_start) / 4u;
  let end = start + (min(element + ${TILE}u, segment(m + 1u)) - element) / 4u;
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

/** Arena elements per bit of a decay mask: the arena's alignment, so no block holds two tensors. */
export const DECAY_BLOCK: number = ARENA_ALIGN;

/**
 * Records AdamW (decoupled weight decay, PyTorch's operation order) over the whole arena; with a
 * `maxExpAvgSq` buffer, AMSGrad: the denominator comes from the running maximum of the second
 * moment, `max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)`, as in PyTorch. With a `decayMask`
 * (bit b of word w set when the arena's block 32w + b of {@linkcode DECAY_BLOCK} elements decays),
 * weight decay applies only to the marked blocks, as a Hugging Face `Trainer` exempts biases and
 * LayerNorm weights; without one, to every element, as `torch.optim.AdamW`. A model whose new
 * parameters or moments are not finite is marked in its control row's `fault` field, so the soft
 * sync that follows leaves it out. One dispatch per tile window, binding the window of every
 * arena-sized buffer.
 */
export function recordAdamw(
  layout: ArenaLayout,
  windows: readonly TileWindow[],
  hyper: { beta1: number; beta2: number; eps: number; weightDecay: number },
  buffers: {
    values: ChunkedBuffer;
    grads: ChunkedBuffer;
    expAvg: ChunkedBuffer;
    expAvgSq: ChunkedBuffer;
    control: BufferRange;
    maxExpAvgSq?: ChunkedBuffer;
    decayMask?: BufferRange;
  },
): void {
  const amsgrad = buffers.maxExpAvgSq !== undefined;
  const masked = buffers.decayMask !== undefined;
  const secondMoment = amsgrad ? "max_v" : "v";
  const decay = masked ? "decay_of(params.window_start + i * 4u)" : "params.weight_decay";
  const variant = `${amsgrad ? "_amsgrad" : ""}${masked ? "_masked" : ""}`;
  const kernel = kernelFor(`mm_adamw${variant}`, () => ({
    name: `mm_adamw${variant}`,
    params: {
      count: "u32",
      window_start: "u32",
      models: "u32",
      one_minus_beta1: "f32",
      beta2: "f32",
      one_minus_beta2: "f32",
      eps: "f32",
      weight_decay: "f32",
      ...SEGMENT_PARAM,
    },
    bindings: [
      { name: "values", type: "vec4<f32>", write: true },
      { name: "grads", type: "vec4<f32>" },
      { name: "exp_avg", type: "vec4<f32>", write: true },
      { name: "exp_avg_sq", type: "vec4<f32>", write: true },
      { name: "control", write: true },
      ...(amsgrad ? [{ name: "max_exp_avg_sq", type: "vec4<f32>" as const, write: true }] : []),
      ...(masked ? [{ name: "decay_mask", type: "u32" as const }] : []),
    ],
    code: `${FINITE}${MODEL_OF}
fn all_finite(v: vec4<f32>) -> bool {
  return finite(v.x) && finite(v.y) && finite(v.z) && finite(v.w);
}
const S = ${CONTROL_STRIDE}u;${masked ? DECAY_OF : ""}
@compute @workgroup_size(${LANES})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(LANES)};
  if (i >= params.count) { return; }
  let row = model_of(params.window_start + i * 4u) * S;
  if (control[row + ${CONTROL.skip}u] > 0.5) { return; }
  let lr = control[row + ${CONTROL.lr}u];
  let g = grads[i] * control[row + ${CONTROL.gradScale}u];
  let p = values[i] * (1.0 - lr * ${decay});
  let m = exp_avg[i] + (g - exp_avg[i]) * params.one_minus_beta1;
  let v = exp_avg_sq[i] * params.beta2 + g * g * params.one_minus_beta2;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;${amsgrad ? AMSGRAD_MAXIMUM : ""}
  let denom = sqrt(${secondMoment}) / sqrt(control[row + ${CONTROL.biasCorrection2}u]) + params.eps;
  let updated = p - (lr / control[row + ${CONTROL.biasCorrection1}u]) * m / denom;
  values[i] = updated;
  // Every writer stores the same value, so the unordered writes agree.
  if (!(all_finite(updated) && all_finite(m) && all_finite(v))) { control[row + ${CONTROL.fault}u] = 1.0; }
}`,
  }));
  const arenaBuffers = [buffers.values, buffers.grads, buffers.expAvg, buffers.expAvgSq];
  if (buffers.maxExpAvgSq) arenaBuffers.push(buffers.maxExpAvgSq);
  for (const w of windows) {
    const [values, grads, expAvg, expAvgSq, maxExpAvgSq] = arenaBuffers.map((b) => windowOf(b, w));
    dispatch(
      kernel,
      {
        count: w.length / 4,
        window_start: w.start,
        models: layout.models,
        one_minus_beta1: 1 - hyper.beta1,
        beta2: hyper.beta2,
        one_minus_beta2: 1 - hyper.beta2,
        eps: hyper.eps,
        weight_decay: hyper.weightDecay,
        segment: padded(layout.segments, MAX_MODELS + 1),
      },
      [
        values,
        grads,
        expAvg,
        expAvgSq,
        buffers.control,
        ...(maxExpAvgSq ? [maxExpAvgSq] : []),
        ...(buffers.decayMask ? [buffers.decayMask] : []),
      ],
      grid(w.length / 4, LANES),
    );
  }
}

/** WGSL `decay_of(element)`: the weight decay of an arena element, from its block's bit in the mask. */
const DECAY_OF = `
fn decay_of(element: u32) -> f32 {
  let block = element / ${DECAY_BLOCK}u;
  let decays = (decay_mask[block / 32u] >> (block % 32u)) & 1u;
  return select(0.0, params.weight_decay, decays == 1u);
}`;

/** AMSGrad's running maximum of the second moment, which it divides by instead of the moment itself. */
const AMSGRAD_MAXIMUM = `
  let max_v = max(max_exp_avg_sq[i], v);
  max_exp_avg_sq[i] = max_v;`;

/** Elements of one group a workgroup mixes: LANES lanes x 16, adjacent lanes on adjacent elements. */
export const MIX_BLOCK: number = LANES * 16;

/**
 * The group table of {@linkcode recordMix}: per group its first block, size, member count, member
 * offsets and model indices ({@linkcode GROUP_WORDS} words), then the group of every block; and
 * whether every member starts on a vec4, which the vec4 form of the mix needs.
 */
export function groupTable(
  groups: readonly { size: number; members: readonly { offset: number; model: number }[] }[],
): {
  words: Uint32Array;
  blocks: number;
  aligned: boolean;
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
  const aligned = groups.every((group) => group.members.every((member) => member.offset % 4 === 0));
  return { words, blocks, aligned };
}

/**
 * The WGSL of a mixing kernel's entry point for `models` models: the block's group from the table,
 * each model's member offset and weight (0 for a model without a member or sitting the update out),
 * then `x <- (1 - ratio) x + ratio * mean` over the block's elements. `firstBlock` is the WGSL of the
 * dispatch's first block, and `element(m, at)` the WGSL of model m's element `at` of the arena, which
 * with `vectorised` is a vec4: `at` counts vec4s, and lanes past the group's end are written back
 * unchanged (every member then starts on a vec4, so they belong to padding or to a parameter no one
 * mixes). Both forms do the same arithmetic per element in the same order (the members' order, which
 * is the models'); the loops over models are unrolled, so each member's value stays in a register
 * between its load and its store.
 */
export function mixEntryPoint(
  models: number,
  vectorised: boolean,
  firstBlock: string,
  element: (m: number, at: string) => string,
): string {
  const width = vectorised ? 4 : 1;
  const type = vectorised ? "vec4<f32>" : "f32";
  const each = (line: (m: number) => string) => Array.from({ length: models }, (_, m) => line(m)).join("\n");
  const at = (m: number) => `(offsets[${m}] + e) / ${width}u`;
  const mixed = (m: number) => `(1.0 - params.ratio) * x${m} + params.ratio * mean`;
  return `
const S = ${CONTROL_STRIDE}u;
const W = ${GROUP_WORDS}u;
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lane: u32) {
  let block = ${firstBlock} + wid.x + wid.y * groups.x;
  if (block >= params.block_end) { return; }
  let base = table[params.groups * W + block] * W;
  let size = table[base + 1u];
  let count = table[base + 2u];
  var offsets: array<u32, ${models}>;
  var weights: array<f32, ${models}>;
  var weight_sum = 0.0;
  for (var k = 0u; k < count; k++) {
    let m = table[base + 4u + ${MAX_MODELS}u + k];
    offsets[m] = table[base + 4u + k];
    // Models sitting this update out (or whose AdamW just failed) get weight 0: they are never read
    // (0 x NaN would still be NaN) and never changed.
    let out = control[m * S + ${CONTROL.skip}u] > 0.5 || control[m * S + ${CONTROL.fault}u] > 0.5;
    weights[m] = select(model_weight(m), 0.0, out);
    weight_sum += weights[m];
  }
  if (weight_sum == 0.0) { return; }
  let first = (block - table[base]) * ${MIX_BLOCK}u + lane * ${width}u;
  for (var e = first; e < min(first + ${MIX_BLOCK}u, size); e += ${LANES * width}u) {${
    vectorised ? "\n    let inside = vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(size);" : ""
  }
    var total = ${type}(0.0);
${
    each((m) =>
      `    var x${m} = ${type}(0.0);
    if (weights[${m}] > 0.0) { x${m} = ${element(m, at(m))}; total += weights[${m}] * x${m}; }`
    )
  }
    let mean = total / weight_sum;
${
    each((m) =>
      `    if (weights[${m}] > 0.0) {
      ${element(m, at(m))} = ${vectorised ? `select(x${m}, ${mixed(m)}, inside)` : mixed(m)};
    }`
    )
  }
  }
}`;
}

/** The parameters every mixing kernel takes (the windowed one adds its windows' starts). */
export const MIX_PARAMS: {
  readonly groups: "u32";
  readonly block_end: "u32";
  readonly ratio: "f32";
  readonly model_weight: { readonly type: "f32"; readonly length: number };
} = {
  groups: "u32",
  block_end: "u32",
  ratio: "f32",
  model_weight: { type: "f32", length: MAX_MODELS },
} as const;

/**
 * Whether the mix runs on vec4s (`mm_mix` variant `vec4`, the default): only where every member of
 * every group starts on a vec4 (`aligned`, see {@linkcode groupTable}); the scalar form otherwise.
 */
export function mixVectorised(aligned: boolean): boolean {
  return kernelVariant("mm_mix", () => "vec4") === "vec4" && aligned;
}

/**
 * Records `x <- (1 - ratio) x + ratio * sum(w x) / sum(w)` over every group's members (gradients
 * for sharing, parameters for sync) of `models` models; models skipped in this update neither
 * contribute nor change. `groups.aligned`: every member starts on a vec4, so the vec4 form may run.
 */
export function recordMix(
  target: BufferRange,
  table: BufferRange,
  control: BufferRange,
  groups: { models: number; count: number; blocks: number; aligned: boolean },
  ratio: number,
  weights: readonly number[],
): void {
  const vectorised = mixVectorised(groups.aligned);
  const type = vectorised ? "vec4<f32>" as const : "f32" as const;
  const kernel = kernelFor(`mm_mix/${groups.models}/${vectorised ? "vec4" : "scalar"}`, () => ({
    name: vectorised ? "mm_mix_vec4" : "mm_mix",
    params: MIX_PARAMS,
    bindings: [{ name: "mixed", type, write: true }, { name: "table", type: "u32" }, { name: "control" }],
    code: mixEntryPoint(groups.models, vectorised, "0u", (_, at) => `mixed[${at}]`),
  }));
  dispatch(
    kernel,
    { groups: groups.count, block_end: groups.blocks, ratio, model_weight: padded(weights, MAX_MODELS) },
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
    params: { present: "u32", window: "u32", ring_slot: { type: "u32", length: MAX_MODELS } },
    bindings: [{ name: "latest" }, { name: "ring", write: true }, { name: "control", write: true }],
    code: `${FINITE}
@compute @workgroup_size(${MAX_MODELS})
fn main(@builtin(local_invocation_index) m: u32) {
  if (((params.present >> m) & 1u) == 0u) { return; }
  let loss = latest[m];
  ring[m * params.window + ring_slot(m)] = loss;
  if (!finite(loss)) { control[m * ${CONTROL_STRIDE}u + ${CONTROL.lossFinite}u] = 0.0; }
}`,
  }));
  dispatch(kernel, { present, window, ring_slot: padded(slots, MAX_MODELS) }, [
    buffers.latest,
    buffers.ring,
    buffers.control,
  ], [1]);
}

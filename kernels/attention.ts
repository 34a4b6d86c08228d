/**
 * Fused scaled-dot-product attention, FlashAttention-2 style: the T x T score matrix never reaches
 * global memory. The forward pass keeps a running max and sum per query row (online softmax) and
 * saves the row's logsumexp; the backward pass recomputes the probabilities from it in two
 * kernels, one per key block (dK, dV) and one per query block (dQ), so every gradient element is
 * written by exactly one invocation and no atomics are needed.
 *
 * {@linkcode attention} and {@linkcode fusedQkvAttention} share the kernels: tensors are addressed
 * through offsets and batch, head and row strides passed as uniforms, so the fused QKV layout is
 * read and written in place without transposes. The head dimension D is a compile-time constant
 * and rows of D are handled as vec4s (zero-padded past D).
 *
 * Two kernel families implement the same passes (the variants of `MM_KERNELS=attention:...`).
 * "tiled" (GPUs) stages query and key tiles in workgroup memory; each thread owns a micro-tile of
 * scores and of outputs ("tiled_small": the same with small blocks). "rows" (llvmpipe)
 * gives each invocation whole rows in private arrays and reads the other side's rows straight from
 * memory: there, workgroup memory and barriers cost more than they save, and llvmpipe's
 * compilation time grows superlinearly with the workgroup memory a shader declares.
 *
 * The tiled kernels live in attention_tiled.ts, the row kernels in attention_rows.ts and the header
 * both families share in attention_header.ts; this file holds the ops, their validation, the choice
 * of family, the dispatches and the backward.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { type BindingSpec, grid, type Kernel, kernelFor, linearIndex, walkLimit } from "../engine/kernel.ts";
import { type BufferRange, copyBuffer, dispatch } from "../engine/recorder.ts";
import { nextKernelSeed } from "../engine/random.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";
import { formatShape } from "../engine/shape.ts";
import { checkOptions } from "../engine/options.ts";
import {
  attachGrad,
  composedOp,
  copyOf,
  emptyTensor,
  expectTensor,
  needsGrad,
  type Tensor,
} from "../engine/tensor.ts";
import { type AttentionPass, header } from "./attention_header.ts";
import { ROW_PASSES, rowBlockSize, rowConstants } from "./attention_rows.ts";
import { texelBlockSize, texelConstants, texelPass } from "./attention_texel.ts";
import { narrow, permute } from "./layout.ts";
import { texelRange, withTexels } from "../engine/texels.ts";
import { type HeadRun, headRuns, type Layout, type Operand, operandLimit } from "./attention_windows.ts";
import { attentionTiles, TILED_PASSES, tiledArrays, tiledConstants } from "./attention_tiled.ts";

/** Options of {@linkcode attention} and {@linkcode fusedQkvAttention}. */
export interface AttentionOptions {
  /** Query i attends only keys j <= i (top-left aligned, like PyTorch's is_causal). */
  causal?: boolean;
  /**
   * float32 [B, Tk]: 1 = attend, 0 = padding (never attended). Like Hugging Face's attention_mask;
   * not additive (any value but 0 attends, so SDPA's 0 / -inf float mask reads inverted) and the
   * inverse of PyTorch's boolean `key_padding_mask` (true = padding). It must stay alive until
   * backward has run.
   */
  keyMask?: Tensor;
  /** Multiplier of q·k; default 1/sqrt(D). */
  scale?: number;
  /** Dropout probability on the attention probabilities (training); default 0. */
  dropout?: number;
}

const ATTENTION_OPTIONS: readonly (keyof AttentionOptions)[] = ["causal", "keyMask", "scale", "dropout"];

/** Largest supported head dimension. */
export const MAX_HEAD_DIM = 256;

/** The distinct query and key block sizes the current variant uses for head dimension `dim` (for tests). */
export function attentionBlockSizes(dim: number): number[] {
  const variant = attentionVariant();
  if (variant === "rows") return [rowBlockSize(dim)];
  if (variant === "texel") return [texelBlockSize(dim)];
  const passes: AttentionPass[] = ["forward", "keyGrad", "queryGrad"];
  const sizes = passes.flatMap((pass) => {
    const t = attentionTiles(pass, dim, variant === "tiled_small");
    return [t.queries, t.keys];
  });
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/** Texels on software adapters, tiled on GPUs (see the module comment). */
function attentionVariant() {
  return kernelVariant("attention", () => gpu().profile.isSoftware ? "texel" : "tiled");
}

/** Uniforms of every pass: sizes, then offsets and (batch, head, row) strides of each tensor, then settings. */
const PARAMS = {
  blocks: "u32",
  heads: "u32",
  bh0: "u32",
  bh: "u32",
  tq: "u32",
  tk: "u32",
  q_off: "u32",
  q_sb: "u32",
  q_sh: "u32",
  q_si: "u32",
  k_off: "u32",
  v_off: "u32",
  kv_sb: "u32",
  kv_sh: "u32",
  kv_si: "u32",
  o_off: "u32",
  o_sb: "u32",
  o_sh: "u32",
  o_si: "u32",
  stat_off: "u32",
  mask_off: "u32",
  dk_off: "u32",
  dv_off: "u32",
  scale: "f32",
  causal: "u32",
  has_mask: "u32",
  dropout: "f32",
  keep_scale: "f32",
  seed: "u32",
} as const;
const INPUTS = [{ name: "q" }, { name: "k" }, { name: "v" }, { name: "mask" }];
const GRAD_INPUTS = [...INPUTS, { name: "o_grad" }, { name: "lse" }, { name: "dvec" }];

/** Per pass: the binding written through `store4_` and the output bindings. */
const PASSES = {
  forward: { write: "o", outputs: ["o", "lse"] },
  keyGrad: { write: "dkv", outputs: ["dkv"] },
  queryGrad: { write: "dq", outputs: ["dq"] },
} as const;

/** The kernel of one pass for head dimension `dim` in a variant; and the rows one workgroup covers. */
function passKernel(
  pass: AttentionPass,
  dim: number,
  variant: KernelVariant<"attention">,
): { kernel: Kernel<typeof PARAMS>; rowsPerBlock: number } {
  const spec = PASSES[pass];
  const reads = pass === "forward" ? ["q", "k", "v"] : ["q", "k", "v", "o_grad"];
  const bindings = [
    ...(pass === "forward" ? INPUTS : GRAD_INPUTS),
    ...spec.outputs.map((name) => ({ name, write: true })),
  ];
  const name = `attention_${pass}_${variant}`;
  if (variant === "texel") {
    const kernel = kernelFor(`${name}/${dim}`, () => ({
      name,
      params: PARAMS,
      // Inputs are textures; outputs are written a vec4 at a time, lse a float at a time.
      bindings: bindings.map((b): BindingSpec => ({
        ...b,
        type: !("write" in b) ? "texture" : b.name === "lse" ? "f32" : "vec4<f32>",
      })),
      code: `${header(dim, texelConstants(dim), reads, spec.write, true)}${texelPass(pass, dim)}`,
    }));
    return { kernel, rowsPerBlock: texelBlockSize(dim) };
  }
  if (variant === "rows") {
    const kernel = kernelFor(`${name}/${dim}`, () => ({
      name,
      params: PARAMS,
      bindings,
      code: `${header(dim, rowConstants(dim), reads, spec.write)}${ROW_PASSES[pass]}`,
    }));
    return { kernel, rowsPerBlock: rowBlockSize(dim) };
  }
  const t = attentionTiles(pass, dim, variant === "tiled_small");
  const consts = tiledConstants(pass, dim, t);
  const kernel = kernelFor(`${name}/${dim}/${Object.values(t).join("x")}`, () => ({
    name,
    params: PARAMS,
    bindings,
    code: `${tiledArrays(pass, dim, t)}\n${header(dim, consts, reads, spec.write)}${TILED_PASSES[pass]}`,
  }));
  return { kernel, rowsPerBlock: pass === "keyGrad" ? t.keys : t.queries };
}

/** D_i = rowsum(dO_i * O_i), one invocation per query row (O(T*D) work, negligible next to attention). */
function rowDotKernel() {
  return kernelFor("attention_row_dot", () => ({
    name: "attention_row_dot",
    params: {
      rows: "u32",
      tq: "u32",
      heads: "u32",
      dim: "u32",
      bh0: "u32",
      o_off: "u32",
      o_sb: "u32",
      o_sh: "u32",
      o_si: "u32",
      stat_off: "u32",
    },
    bindings: [{ name: "o" }, { name: "o_grad" }, { name: "dvec", write: true }],
    code: `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(64)};
  if (idx >= params.rows) { return; }
  let bh = params.bh0 + idx / params.tq;
  let i = idx % params.tq;
  let at = params.o_off + (bh / params.heads) * params.o_sb + (bh % params.heads) * params.o_sh + i * params.o_si;
  var acc = 0.0;
  for (var d = 0u; d < params.dim; d++) { acc += o[at + d] * o_grad[at + d]; }
  dvec[bh * params.tq + i - params.stat_off] = acc;
}`,
  }));
}

/** Where row i, dim d of head (b, h) lives: offset + b*batch + h*head + i*row + d. */
interface Strides extends Layout {
  readonly offset: number;
}

/** Sizes, layout and settings of one attention call, shared by its forward and backward dispatches. */
interface Problem {
  readonly batch: number;
  readonly heads: number;
  readonly queries: number;
  readonly keys: number;
  readonly dim: number;
  readonly q: Strides;
  /** Strides of k, v, dK and dV, with k's offset; v's offset is vOffset. */
  readonly kv: Strides;
  readonly vOffset: number;
  /** Strides of the output and of its gradient (offset 0). */
  readonly o: Strides;
  readonly scale: number;
  readonly causal: boolean;
  readonly mask: Tensor | undefined;
  readonly dropout: number;
  readonly seed: number;
  /** The kernel family: the adapter's choice, or rows where the texel kernels cannot read the operands. */
  readonly variant: KernelVariant<"attention">;
}

/** Binding order of the operands of a problem (see {@linkcode operandsOf}). */
const Q = 0, K = 1, V = 2, MASK = 3, O = 4, LSE = 5, DKV = 6;

/** u32 uniforms of possibly negative element shifts: kernels add them to indices, wrapping. */
const u32 = (n: number) => n >>> 0;

/**
 * Records one pass over the heads of a run; dK and dV go to element offsets dkOffset and dvOffset
 * (relative to the start of `dkv`'s range) of the `dkv` output. The texel family reads the inputs
 * through textures, copied first.
 */
function launch(
  pass: AttentionPass,
  p: Problem,
  run: HeadRun,
  inputs: BufferRange[],
  outputs: BufferRange[],
  dkOffset = 0,
  dvOffset = 0,
): void {
  const { kernel, rowsPerBlock } = passKernel(pass, p.dim, p.variant);
  const blocks = Math.ceil((pass === "keyGrad" ? p.keys : p.queries) / rowsPerBlock);
  const { q, kv, o } = p;
  const { starts } = run;
  const params = {
    blocks,
    heads: p.heads,
    bh0: run.first,
    bh: run.count,
    tq: p.queries,
    tk: p.keys,
    q_off: u32(q.offset - starts[Q]),
    q_sb: q.batch,
    q_sh: q.head,
    q_si: q.row,
    k_off: u32(kv.offset - starts[K]),
    v_off: u32(p.vOffset - starts[V]),
    kv_sb: kv.batch,
    kv_sh: kv.head,
    kv_si: kv.row,
    o_off: u32(-starts[O]),
    o_sb: o.batch,
    o_sh: o.head,
    o_si: o.row,
    stat_off: starts[LSE],
    mask_off: p.mask ? starts[MASK] : 0,
    dk_off: u32(dkOffset),
    dv_off: u32(dvOffset),
    scale: p.scale,
    causal: p.causal ? 1 : 0,
    has_mask: p.mask ? 1 : 0,
    dropout: p.dropout,
    keep_scale: 1 / (1 - p.dropout),
    seed: p.seed,
  };
  const groups = grid(blocks * run.count, 1);
  if (p.variant !== "texel") dispatch(kernel, params, [...inputs, ...outputs], groups);
  else {
    const texels = inputs.map((range) => texelRange(range)!);
    withTexels(texels, (views) => dispatch(kernel, params, [...views, ...outputs], groups));
  }
}

/**
 * The operands of a problem in binding order: q, k, v, the mask (q again when there is none: bound
 * but never read), the output or its gradient, the logsumexp (or D), then `more`.
 */
function operandsOf(p: Problem, [q, k, v, o, lse]: Tensor[], more: Operand[] = []): Operand[] {
  const part = (tensor: Tensor, s: Strides, offset: number, rows: number): Operand => ({
    tensor,
    offsets: [offset],
    layout: s,
    rows,
    width: p.dim,
  });
  const mask: Operand = p.mask
    ? { tensor: p.mask, offsets: [0], layout: { batch: p.keys, head: 0, row: 1 }, rows: p.keys, width: 1 }
    : part(q, p.q, p.q.offset, p.queries);
  const stats = { batch: p.heads * p.queries, head: p.queries, row: 1 };
  return [
    part(q, p.q, p.q.offset, p.queries),
    part(k, p.kv, p.kv.offset, p.keys),
    part(v, p.kv, p.vOffset, p.keys),
    mask,
    part(o, p.o, 0, p.queries),
    { tensor: lse, offsets: [0], layout: stats, rows: p.queries, width: 1 },
    ...more,
  ];
}

/** Runs of heads whose windows of every operand fit one binding (one run when all fit). */
function runsOf(op: string, p: Problem, operands: Operand[]): HeadRun[] {
  return headRuns(op, p.heads, p.batch * p.heads, operands, operandLimit(p.variant === "texel"));
}

/**
 * The adapter's attention family for a problem, or the software fallback where texel kernels cannot
 * read it: they need D % 4 == 0, row offsets and strides in whole vec4s and inputs on texel boundaries.
 */
function chooseVariant(
  shape: Pick<Problem, "dim" | "q" | "kv" | "vOffset" | "o" | "queries" | "keys">,
  inputs: Tensor[],
  mask: Tensor | undefined,
): KernelVariant<"attention"> {
  const variant = attentionVariant();
  if (variant !== "texel") return variant;
  const { dim, q, kv, o, vOffset, queries, keys } = shape;
  // The texel kernels' invocations loop once a key (forward, dQ) or a query (dK, dV): llvmpipe would
  // end the walk past 65535 of them (70000 keys came out wrong), so three quarters of that is the most.
  const longest = 6 * walkLimit();
  if (Math.max(queries, keys) > longest) {
    throw new Error(
      `attention: ${queries} queries and ${keys} keys are more than this software adapter's kernels walk ` +
        `(${longest})`,
    );
  }
  const offsets = [dim, vOffset, ...[q, kv, o].flatMap((s) => [s.offset, s.batch, s.head, s.row])];
  const readable = (t: Tensor) => texelRange(t.range()) !== null;
  return offsets.every((n) => n % 4 === 0) && inputs.every(readable) && (!mask || readable(mask))
    ? variant
    : softwareFallback(shape);
}

/**
 * The family for what the texel kernels cannot read on a software adapter (a head dimension not a
 * multiple of 4, a view off texel boundaries): the row kernels. Their invocations walk every query or key
 * of a head, each step looping about 2 * ceil(D / 4) + 2 times, and llvmpipe ends an invocation's loops
 * after 65535 iterations (it cut D = 62 short at 2000 keys, D = 30 at 4500): past three quarters of that
 * ({@linkcode walkLimit} * 6), the problem is refused rather than computed wrong.
 */
function softwareFallback(
  { queries, keys, dim }: Pick<Problem, "queries" | "keys" | "dim">,
): KernelVariant<"attention"> {
  const perStep = 2 * Math.ceil(dim / 4) + 2;
  const longest = Math.floor((6 * walkLimit()) / perStep);
  if (Math.max(queries, keys) > longest) {
    throw new Error(
      `attention: ${queries} queries and ${keys} keys of dimension ${dim} are more than this software ` +
        `adapter's row kernels walk (${longest}); its texel kernels take longer sequences when the head ` +
        "dimension is a multiple of 4 and q, k and v start on 16-byte boundaries",
    );
  }
  return "rows";
}

/**
 * Where the dK/dV pass writes: into `target` at element offsets dkOffset and dvOffset with k's
 * strides (the fused layout interleaves them in one buffer), or into new contiguous `dk` and `dv`
 * (either null when not wanted) through a scratch buffer per run of heads, copied out.
 */
type KeyGrads =
  | { readonly target: Tensor; readonly dkOffset: number; readonly dvOffset: number }
  | { readonly dk: Tensor | null; readonly dv: Tensor | null };

/**
 * Records the backward pass, one run of heads at a time: D = rowsum(dO * O), then dK and dV (see
 * {@linkcode KeyGrads}) and dQ (to `dq` with q's offset and strides). A target is null when no input
 * needs it.
 */
function backward(
  op: string,
  p: Problem,
  [q, k, v, out, lse, outGrad]: Tensor[],
  keyGrads: KeyGrads | null,
  dq: Tensor | null,
): void {
  const dvec = emptyTensor([p.batch, p.heads, p.queries]);
  const headKV = p.keys * p.dim;
  const stats = { batch: p.heads * p.queries, head: p.queries, row: 1 };
  const more: Operand[] = [
    { tensor: out, offsets: [0], layout: p.o, rows: p.queries, width: p.dim },
    { tensor: dvec, offsets: [0], layout: stats, rows: p.queries, width: 1 },
  ];
  if (dq) more.push({ tensor: dq, offsets: [p.q.offset], layout: p.q, rows: p.queries, width: p.dim });
  if (keyGrads && "target" in keyGrads) {
    const { target, dkOffset, dvOffset } = keyGrads;
    more.push({ tensor: target, offsets: [dkOffset, dvOffset], layout: p.kv, rows: p.keys, width: p.dim });
  } else if (keyGrads) {
    // The scratch holds a run's dK then its dV: sized as a layout of 2 * Tk rows per head.
    const layout = { batch: 2 * p.heads * headKV, head: 2 * headKV, row: p.dim };
    more.push({ tensor: null, offsets: [0, headKV], layout, rows: p.keys, width: p.dim });
  }
  const [OUT, DVEC, DQ] = [DKV, DKV + 1, DKV + 2];
  const KEYS = dq ? DQ + 1 : DQ;
  // An upstream gradient the texel kernels cannot read (a view off texel boundaries) is read from a copy,
  // which has the output's layout too.
  const upstream = p.variant === "texel" && texelRange(outGrad.range()) === null ? copyOf(outGrad) : outGrad;
  try {
    for (const run of runsOf(op, p, operandsOf(p, [q, k, v, upstream, lse], more))) {
      const r = run.ranges as BufferRange[];
      const rowDot = {
        rows: run.count * p.queries,
        tq: p.queries,
        heads: p.heads,
        dim: p.dim,
        bh0: run.first,
        o_off: u32(-run.starts[O]),
        o_sb: p.o.batch,
        o_sh: p.o.head,
        o_si: p.o.row,
        stat_off: run.starts[LSE],
      };
      dispatch(rowDotKernel(), rowDot, [r[OUT], r[O], r[DVEC]], grid(rowDot.rows, 64));
      const shared = [r[Q], r[K], r[V], r[MASK], r[O], r[LSE], r[DVEC]];
      if (keyGrads && "target" in keyGrads) {
        const start = run.starts[KEYS];
        launch("keyGrad", p, run, shared, [r[KEYS]], keyGrads.dkOffset - start, keyGrads.dvOffset - start);
      } else if (keyGrads) {
        // k's layout is contiguous here: the run's heads are elements [start, start + size) of dK and dV.
        const size = run.count * headKV, start = run.first * headKV;
        const scratch = emptyTensor([2 * size]);
        launch("keyGrad", p, run, shared, [scratch.range()], -start, size - start);
        if (size > 0) {
          if (keyGrads.dk) copyBuffer(scratch.window(0, size), keyGrads.dk.window(start, size));
          if (keyGrads.dv) copyBuffer(scratch.window(size, size), keyGrads.dv.window(start, size));
        }
        scratch.dispose();
      }
      if (dq) launch("queryGrad", p, run, shared, [r[DQ]]);
    }
  } finally {
    dvec.dispose();
    if (upstream !== outGrad) upstream.dispose();
  }
}

type Settings = Pick<Problem, "scale" | "causal" | "mask" | "dropout" | "seed">;

/** Validates the head dimension, options and dtypes; draws the dropout seed. */
function settings(
  op: string,
  shapes: string,
  inputs: Tensor[],
  batch: number,
  keys: number,
  dim: number,
  o: AttentionOptions,
): Settings {
  const { causal = false, keyMask, scale = 1 / Math.sqrt(dim), dropout = 0 } = o;
  if (!(dim >= 1 && dim <= MAX_HEAD_DIM)) {
    throw new Error(`${op}: head dimension ${dim} is outside 1..${MAX_HEAD_DIM} (${shapes})`);
  }
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`${op}: dropout ${dropout} is outside [0, 1)`);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale ${scale} is not finite`);
  if (keyMask && (keyMask.rank !== 2 || keyMask.shape[0] !== batch || keyMask.shape[1] !== keys)) {
    throw new Error(
      `${op}: keyMask ${formatShape(keyMask.shape)} must be [B, Tk] = [${batch}, ${keys}] (${shapes})`,
    );
  }
  for (const t of keyMask ? [...inputs, keyMask] : inputs) {
    if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
  }
  return { scale, causal, mask: keyMask, dropout, seed: dropout > 0 ? nextKernelSeed() : 0 };
}

/**
 * Runs the forward pass into new tensors, one run of heads at a time; returns the output and the
 * logsumexp saved for backward.
 */
function forward(
  op: string,
  p: Problem,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  outShape: number[],
): [Tensor, Tensor] {
  const out = emptyTensor(outShape), lse = emptyTensor([p.batch, p.heads, p.queries]);
  for (const run of runsOf(op, p, operandsOf(p, [q, k, v, out, lse]))) {
    const r = run.ranges as BufferRange[];
    launch("forward", p, run, [r[Q], r[K], r[V], r[MASK]], [r[O], r[LSE]]);
  }
  return [out, lse];
}

/**
 * Scaled-dot-product attention softmax(scale * q kᵀ + masks) v, fused (the score matrix is never
 * stored), with optional causal and key-padding masks and dropout on the probabilities.
 * q [B, H, Tq, D], k and v [B, H, Tk, D] -> [B, H, Tq, D], D from 1 to 256. A query row whose keys
 * are all masked (by padding, causality or both) outputs zeros and gets zero gradients. Results are
 * bit-identical for the same inputs (with dropout: for the same {@linkcode manualSeed} sequence).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  checkOptions("attention", options, ATTENTION_OPTIONS);
  Object.entries({ q, k, v }).forEach(([name, t]) => expectTensor("attention", t, name));
  const shapes = `q ${formatShape(q.shape)}, k ${formatShape(k.shape)}, v ${formatShape(v.shape)}`;
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new Error(`attention: expected q [B, H, Tq, D] and k, v [B, H, Tk, D], got ${shapes}`);
  }
  const [batch, heads, queries, dim] = q.shape, keys = k.shape[2];
  if (k.shape.some((d, i) => d !== v.shape[i] || (i !== 2 && d !== q.shape[i]))) {
    throw new Error(`attention: k and v must be [${batch}, ${heads}, Tk, ${dim}] like q, got ${shapes}`);
  }
  const contiguous = (rows: number): Strides => ({
    offset: 0,
    batch: heads * rows * dim,
    head: rows * dim,
    row: dim,
  });
  const layout = {
    ...{ batch, heads, queries, keys, dim },
    q: contiguous(queries),
    kv: contiguous(keys),
    vOffset: 0,
    o: contiguous(queries),
  };
  const set = settings("attention", shapes, [q, k, v], batch, keys, dim, options);
  const p: Problem = { ...layout, ...set, variant: chooseVariant(layout, [q, k, v], set.mask) };
  const [out, lse] = forward("attention", p, q, k, v, [batch, heads, queries, dim]);
  if (!needsGrad(q, k, v)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "attention", [q, k, v], (g) => {
    const dk = k.requiresGrad ? emptyTensor(k.shape) : null;
    const dv = v.requiresGrad ? emptyTensor(v.shape) : null;
    const dq = q.requiresGrad ? emptyTensor(q.shape) : null;
    backward("attention", p, [q, k, v, out, lse, g], dk || dv ? { dk, dv } : null, dq);
    return [dq, dk, dv];
  });
}

/**
 * Attention straight from a fused QKV projection: qkv [B, T, 3*H*D] with q | k | v along the last
 * dim and head h at columns h*D..h*D+D-1 of each part (the layout of GPT-2's c_attn and of a
 * concatenated BERT query/key/value projection) -> [B, T, H*D] with heads merged, ready for the
 * output projection. No transposes are materialised; the gradient is dqkv [B, T, 3*H*D].
 * Options and masking behave as in {@linkcode attention}.
 */
export function fusedQkvAttention(qkv: Tensor, heads: number, options: AttentionOptions = {}): Tensor {
  checkOptions("fusedQkvAttention", options, ATTENTION_OPTIONS);
  expectTensor("fusedQkvAttention", qkv, "qkv");
  const shape = formatShape(qkv.shape);
  if (qkv.rank !== 3) throw new Error(`fusedQkvAttention: expected qkv [B, T, 3*H*D], got ${shape}`);
  const [batch, tokens, width] = qkv.shape;
  if (!Number.isInteger(heads) || heads < 1 || width % (3 * heads) !== 0) {
    throw new Error(`fusedQkvAttention: qkv ${shape} does not split into q, k and v of ${heads} heads`);
  }
  const dim = width / (3 * heads), inner = heads * dim;
  // One head spans every row of qkv; where that exceeds a binding, q, k and v are copied apart.
  const headBytes = ((tokens - 1) * width + dim) * 4 + gpu().profile.storageOffsetAlignment;
  if (headBytes > operandLimit(true)) return separateHeads(qkv, heads, options);
  const part = (offset: number): Strides => ({ offset, batch: tokens * width, head: dim, row: width });
  const layout = {
    ...{ batch, heads, queries: tokens, keys: tokens, dim },
    q: part(0),
    kv: part(inner),
    vOffset: 2 * inner,
    o: { offset: 0, batch: tokens * inner, head: dim, row: inner },
  };
  const set = settings("fusedQkvAttention", `qkv ${shape}`, [qkv], batch, tokens, dim, options);
  const p: Problem = { ...layout, ...set, variant: chooseVariant(layout, [qkv], set.mask) };
  const [out, lse] = forward("fusedQkvAttention", p, qkv, qkv, qkv, [batch, tokens, inner]);
  if (!needsGrad(qkv)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "fusedQkvAttention", [qkv], (g) => {
    const dqkv = emptyTensor(qkv.shape);
    const keyGrads = { target: dqkv, dkOffset: inner, dvOffset: 2 * inner };
    backward("fusedQkvAttention", p, [qkv, qkv, qkv, out, lse, g], keyGrads, dqkv);
    return [dqkv];
  });
}

/**
 * fusedQkvAttention where one head's rows of qkv exceed a binding: q, k and v copied into [B, H, T, D]
 * tensors of their own (layout copies run in windows), {@linkcode attention} over them, and its
 * output copied back to [B, T, H*D]; autograd follows the ops.
 */
function separateHeads(qkv: Tensor, heads: number, options: AttentionOptions): Tensor {
  const [batch, tokens, width] = qkv.shape;
  const inner = width / 3, dim = inner / heads;
  return composedOp([qkv], (temp) => {
    const split = (k: number) =>
      temp(
        permute(temp(temp(narrow(qkv, 2, k * inner, inner)).reshape([batch, tokens, heads, dim])), [
          0,
          2,
          1,
          3,
        ]),
      );
    const out = temp(attention(split(0), split(1), split(2), options));
    return temp(permute(out, [0, 2, 1, 3])).reshape([batch, tokens, inner]);
  });
}

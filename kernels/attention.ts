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
import { type BindingSpec, grid, type Kernel, kernelFor, linearIndex } from "../engine/kernel.ts";
import { type BufferRange, copyBuffer, dispatch } from "../engine/recorder.ts";
import { nextKernelSeed } from "../engine/random.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";
import { formatShape } from "../engine/shape.ts";
import { attachGrad, emptyTensor, needsGrad, type Tensor } from "../engine/tensor.ts";
import { type AttentionPass, header } from "./attention_header.ts";
import { ROW_PASSES, rowBlockSize, rowConstants } from "./attention_rows.ts";
import { texelBlockSize, texelConstants, texelPass } from "./attention_texel.ts";
import { texelRange, withTexels } from "./texels.ts";
import { attentionTiles, TILED_PASSES, tiledArrays, tiledConstants } from "./attention_tiled.ts";

/** Options of {@linkcode attention} and {@linkcode fusedQkvAttention}. */
export interface AttentionOptions {
  /** Query i attends only keys j <= i (top-left aligned, like PyTorch's is_causal). */
  causal?: boolean;
  /**
   * float32 [B, Tk]: 1 = attend, 0 = padding (never attended). Like Hugging Face's attention_mask.
   * It must stay alive until backward has run.
   */
  keyMask?: Tensor;
  /** Multiplier of q·k; default 1/sqrt(D). */
  scale?: number;
  /** Dropout probability on the attention probabilities (training); default 0. */
  dropout?: number;
}

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
  o_sb: "u32",
  o_sh: "u32",
  o_si: "u32",
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
    params: { rows: "u32", tq: "u32", heads: "u32", dim: "u32", o_sb: "u32", o_sh: "u32", o_si: "u32" },
    bindings: [{ name: "o" }, { name: "o_grad" }, { name: "dvec", write: true }],
    code: `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(64)};
  if (idx >= params.rows) { return; }
  let bh = idx / params.tq;
  let at = (bh / params.heads) * params.o_sb + (bh % params.heads) * params.o_sh + (idx % params.tq) * params.o_si;
  var acc = 0.0;
  for (var d = 0u; d < params.dim; d++) { acc += o[at + d] * o_grad[at + d]; }
  dvec[idx] = acc;
}`,
  }));
}

/** Where row i, dim d of head (b, h) lives: offset + b*batch + h*head + i*row + d. */
interface Strides {
  readonly offset: number;
  readonly batch: number;
  readonly head: number;
  readonly row: number;
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

/**
 * Records one pass over every head; dK and dV go to element offsets dkOffset and dvOffset of `dkv`.
 * The texel family reads the inputs through textures, copied first.
 */
function launch(
  pass: AttentionPass,
  p: Problem,
  inputs: BufferRange[],
  outputs: BufferRange[],
  dkOffset = 0,
  dvOffset = 0,
): void {
  const { kernel, rowsPerBlock } = passKernel(pass, p.dim, p.variant);
  const blocks = Math.ceil((pass === "keyGrad" ? p.keys : p.queries) / rowsPerBlock);
  const { q, kv, o } = p;
  const params = {
    blocks,
    heads: p.heads,
    bh: p.batch * p.heads,
    tq: p.queries,
    tk: p.keys,
    q_off: q.offset,
    q_sb: q.batch,
    q_sh: q.head,
    q_si: q.row,
    k_off: kv.offset,
    v_off: p.vOffset,
    kv_sb: kv.batch,
    kv_sh: kv.head,
    kv_si: kv.row,
    o_sb: o.batch,
    o_sh: o.head,
    o_si: o.row,
    dk_off: dkOffset,
    dv_off: dvOffset,
    scale: p.scale,
    causal: p.causal ? 1 : 0,
    has_mask: p.mask ? 1 : 0,
    dropout: p.dropout,
    keep_scale: 1 / (1 - p.dropout),
    seed: p.seed,
  };
  const groups = grid(blocks * p.batch * p.heads, 1);
  if (p.variant !== "texel") dispatch(kernel, params, [...inputs, ...outputs], groups);
  else {
    const texels = inputs.map((range) => texelRange(range)!);
    withTexels(texels, (views) => dispatch(kernel, params, [...views, ...outputs], groups));
  }
}

/**
 * The adapter's attention family for a problem, or `rows` where texel kernels cannot read it: they
 * need D % 4 == 0, row offsets and strides in whole vec4s and inputs on texel boundaries.
 */
function chooseVariant(
  shape: Pick<Problem, "dim" | "q" | "kv" | "vOffset" | "o">,
  inputs: Tensor[],
  mask: Tensor | undefined,
): KernelVariant<"attention"> {
  const variant = attentionVariant();
  if (variant !== "texel") return variant;
  const { dim, q, kv, o, vOffset } = shape;
  const offsets = [dim, vOffset, ...[q, kv, o].flatMap((s) => [s.offset, s.batch, s.head, s.row])];
  const readable = (t: Tensor) => texelRange(t.range()) !== null;
  return offsets.every((n) => n % 4 === 0) && inputs.every(readable) && (!mask || readable(mask))
    ? variant
    : "rows";
}

/** q, k and v ranges and the mask's (q's when there is none: bound but never read). */
const inputRanges = (p: Problem, q: Tensor, k: Tensor, v: Tensor) =>
  [q, k, v, p.mask ?? q].map((t) => t.range());

/**
 * Records the backward pass. dK and dV share one binding (`dkv.target`, at element offsets dkOffset
 * and dvOffset with k's strides) because the fused layout interleaves them in one buffer; dQ goes
 * to `dq` with q's offset and strides. A target is null when no input needs it.
 */
function backward(
  p: Problem,
  [q, k, v, out, lse, outGrad]: Tensor[],
  dkv: { target: Tensor; dkOffset: number; dvOffset: number } | null,
  dq: Tensor | null,
): void {
  const rows = p.batch * p.heads * p.queries;
  const dvec = emptyTensor([rows]);
  const { o } = p;
  const rowDot = {
    rows,
    tq: p.queries,
    heads: p.heads,
    dim: p.dim,
    o_sb: o.batch,
    o_sh: o.head,
    o_si: o.row,
  };
  dispatch(rowDotKernel(), rowDot, [out.range(), outGrad.range(), dvec.range()], grid(rows, 64));
  const shared = [...inputRanges(p, q, k, v), outGrad.range(), lse.range(), dvec.range()];
  // The saved logsumexp means the same in every family, so an upstream gradient the texel kernels
  // cannot read sends only the backward pass to the row kernels.
  const pass = p.variant === "texel" && texelRange(outGrad.range()) === null
    ? { ...p, variant: "rows" as const }
    : p;
  if (dkv) launch("keyGrad", pass, shared, [dkv.target.range()], dkv.dkOffset, dkv.dvOffset);
  if (dq) launch("queryGrad", pass, shared, [dq.range()]);
  dvec.dispose();
}

type Settings = Pick<Problem, "scale" | "causal" | "mask" | "dropout" | "seed">;

/** Validates the head dimension, options, dtypes and sizes; draws the dropout seed. */
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
  const limit = gpu().profile.maxStorageBindingBytes;
  for (const t of keyMask ? [...inputs, keyMask] : inputs) {
    if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
    if (t.size * 4 > limit) {
      throw new Error(`${op}: ${t.describe()} exceeds the storage binding limit ${limit}`);
    }
  }
  return { scale, causal, mask: keyMask, dropout, seed: dropout > 0 ? nextKernelSeed() : 0 };
}

/** Runs the forward pass into new tensors; returns the output and the logsumexp saved for backward. */
function forward(p: Problem, q: Tensor, k: Tensor, v: Tensor, outShape: number[]): [Tensor, Tensor] {
  const out = emptyTensor(outShape), lse = emptyTensor([p.batch, p.heads, p.queries]);
  launch("forward", p, inputRanges(p, q, k, v), [out.range(), lse.range()]);
  return [out, lse];
}

/** A new tensor of `shape` holding the elements of `source` from element `start` on. */
function copySlice(source: Tensor, start: number, shape: readonly number[]): Tensor {
  const out = emptyTensor(shape);
  const from = source.range();
  if (out.size > 0) {
    copyBuffer({ buffer: from.buffer, offset: from.offset + start * 4, size: out.size * 4 }, out.range());
  }
  return out;
}

/**
 * Scaled-dot-product attention softmax(scale * q kᵀ + masks) v, fused (the score matrix is never
 * stored), with optional causal and key-padding masks and dropout on the probabilities.
 * q [B, H, Tq, D], k and v [B, H, Tk, D] -> [B, H, Tq, D], D from 1 to 256. A query row whose keys
 * are all masked (by padding, causality or both) outputs zeros and gets zero gradients. Results are
 * bit-identical for the same inputs (with dropout: for the same {@linkcode manualSeed} sequence).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const shapes = `q ${formatShape(q.shape)}, k ${formatShape(k.shape)}, v ${formatShape(v.shape)}`;
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new Error(`attention: expected q [B, H, Tq, D] and k, v [B, H, Tk, D], got ${shapes}`);
  }
  const [batch, heads, queries, dim] = q.shape, keys = k.shape[2];
  if (k.shape.some((d, i) => d !== v.shape[i] || (i !== 2 && d !== q.shape[i]))) {
    throw new Error(`attention: k and v must be [${batch}, ${heads}, Tk, ${dim}] like q, got ${shapes}`);
  }
  // Backward packs dK and dV into one binding.
  const limit = gpu().profile.maxStorageBindingBytes;
  if (k.size * 8 > limit) {
    throw new Error(`attention: ${shapes}: dK and dV exceed the storage binding limit ${limit}`);
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
  const [out, lse] = forward(p, q, k, v, [batch, heads, queries, dim]);
  if (!needsGrad(q, k, v)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "attention", [q, k, v], (g) => {
    const dkv = k.requiresGrad || v.requiresGrad ? emptyTensor([2 * k.size]) : null;
    const dq = q.requiresGrad ? emptyTensor(q.shape) : null;
    backward(p, [q, k, v, out, lse, g], dkv && { target: dkv, dkOffset: 0, dvOffset: k.size }, dq);
    const dk = dkv && k.requiresGrad ? copySlice(dkv, 0, k.shape) : null;
    const dv = dkv && v.requiresGrad ? copySlice(dkv, k.size, v.shape) : null;
    dkv?.dispose();
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
  const shape = formatShape(qkv.shape);
  if (qkv.rank !== 3) throw new Error(`fusedQkvAttention: expected qkv [B, T, 3*H*D], got ${shape}`);
  const [batch, tokens, width] = qkv.shape;
  if (!Number.isInteger(heads) || heads < 1 || width % (3 * heads) !== 0) {
    throw new Error(`fusedQkvAttention: qkv ${shape} does not split into q, k and v of ${heads} heads`);
  }
  const dim = width / (3 * heads), inner = heads * dim;
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
  const [out, lse] = forward(p, qkv, qkv, qkv, [batch, tokens, inner]);
  if (!needsGrad(qkv)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "fusedQkvAttention", [qkv], (g) => {
    const dqkv = emptyTensor(qkv.shape);
    backward(p, [qkv, qkv, qkv, out, lse, g], { target: dqkv, dkOffset: inner, dvOffset: 2 * inner }, dqkv);
    return [dqkv];
  });
}

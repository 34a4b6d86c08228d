/**
 * Sum and mean over an axis, and the sum over broadcast dimensions that elementwise backward needs.
 *
 * A reduction views its input as [outer, length, inner] and reduces the middle axis. Results are
 * bit-identical run to run: every sum is taken in a fixed order (a tree inside a workgroup, or
 * chunk partials summed by a second pass), never with atomics. Tensors beyond one storage binding
 * are bound in windows, which changes no sum's order (but for one row longer than a binding).
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { bindWindow, grid, kernelFor, linearIndex, walkLimit, windowElements } from "../engine/kernel.ts";
import { checkOptions } from "../engine/options.ts";
import { attachGrad, emptyTensor, expectTensor, full, type Tensor, zeros } from "../engine/tensor.ts";
import { formatShape, normalizeAxis, shapeSize } from "../engine/shape.ts";
import { kernelVariant } from "../engine/variants.ts";
import { TEXEL_WGSL, texelRange, texelsPayOff, withTexels } from "../engine/texels.ts";

/** Rows of the reduced axis one invocation sums before a second pass takes over. */
const CHUNK = 64;
const ROW_THREADS = 256;

/** A binding of the whole tensor, or of the window [lo, hi) when the work is windowed. */
function bindPart(t: Tensor, whole: boolean, lo: number, hi: number): { range: BufferRange; shift: number } {
  if (whole) return { range: t.range(), shift: 0 };
  const w = bindWindow(t, lo, hi);
  return { range: w.range, shift: -w.first >>> 0 };
}

/** Windows [first, last) of `count` outputs, `perWindow` at a time, or within rows of `rowLength` when one row is larger. */
function outputWindows(count: number, perWindow: number, rowLength: number): [number, number][] {
  const windows: [number, number][] = [];
  if (perWindow >= rowLength || count <= perWindow) {
    for (let first = 0; first < count; first += perWindow) {
      windows.push([first, Math.min(count, first + perWindow)]);
    }
    return windows;
  }
  for (let row = 0; row < count; row += rowLength) {
    for (let first = row; first < row + rowLength; first += perWindow) {
      windows.push([first, Math.min(row + rowLength, first + perWindow)]);
    }
  }
  return windows;
}

/**
 * Sums x viewed as [outer, length, inner] over the middle axis, times `factor`, into [outer, inner].
 * Beyond one storage binding the passes are the same, in windows (see {@linkcode stridedSum}), so
 * every sum keeps its order; only a row longer than a binding, or than a software adapter's workgroup
 * may walk (256 * walkLimit() elements), is summed in chunks instead of a tree.
 * With `into` ([outer * inner], factor 1) the last pass adds its sums onto it (stored + sum) when it
 * is one whole-tensor pass, and returns it; otherwise the sums come back in a new tensor.
 */
function reduceMiddle(
  x: Tensor,
  outer: number,
  length: number,
  inner: number,
  factor: number,
  into?: Tensor,
): Tensor {
  // A row's workgroup walks it in ROW_THREADS strides, at most walkLimit() each; longer rows go by chunks.
  if (inner === 1 && length <= windowElements() && length <= ROW_THREADS * walkLimit()) {
    return reduceRows(x, outer, length, factor);
  }
  let source = x;
  let remaining = length;
  // Few outputs leave the GPU idle, so long axes are first cut into chunks summed in parallel.
  while (remaining > CHUNK && outer * inner < 65536) {
    const chunks = Math.ceil(remaining / CHUNK);
    const partial = emptyTensor([outer * chunks * inner]);
    stridedSum(source, partial, outer, remaining, inner, CHUNK, 1);
    if (source !== x) source.dispose();
    source = partial;
    remaining = chunks;
  }
  const whole = source.size <= windowElements() && outer * inner <= windowElements();
  const out = into && whole && factor === 1 ? into : emptyTensor([outer * inner]);
  stridedSum(source, out, outer, remaining, inner, remaining, factor, out === into);
  if (source !== x) source.dispose();
  return out;
}

/**
 * One pass: out[o, c, i] = factor * sum of x[o, c*chunk .. c*chunk+chunk-1, i]; one invocation per
 * output element, summing in index order. Beyond one binding, windows hold whole chunks of x and
 * the outputs they give; a chunk larger than a binding is summed over runs of its rows that fit,
 * each dispatch continuing the sums the last one stored (the same additions in the same order).
 */
function stridedSum(
  x: Tensor,
  out: Tensor,
  outer: number,
  length: number,
  inner: number,
  chunk: number,
  factor: number,
  addTo = false,
): void {
  const chunks = Math.ceil(length / chunk);
  const kernel = kernelFor("reduce_strided", () => ({
    name: "reduce_strided",
    params: {
      first: "u32",
      count: "u32",
      length: "u32",
      inner: "u32",
      chunk: "u32",
      chunks: "u32",
      row_begin: "u32",
      row_end: "u32",
      carry: "u32",
      add_to: "u32",
      factor: "f32",
      x_shift: "u32",
      out_shift: "u32",
    },
    bindings: [{ name: "x" }, { name: "out", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let local = ${linearIndex(256)};
  if (local >= params.count) { return; }
  let idx = params.first + local;
  let i = idx % params.inner;
  let c = (idx / params.inner) % params.chunks;
  let o = idx / (params.inner * params.chunks);
  let start = max(c * params.chunk, params.row_begin);
  let end = min(min(c * params.chunk + params.chunk, params.length), params.row_end);
  var acc = 0.0;
  if (params.carry == 1u) { acc = out[idx + params.out_shift]; }
  for (var r = start; r < end; r++) {
    acc += x[(o * params.length + r) * params.inner + i + params.x_shift];
  }
  if (params.add_to == 1u) { out[idx + params.out_shift] += acc; } else { out[idx + params.out_shift] = acc * params.factor; }
}`,
  }));
  const count = outer * chunks * inner;
  const span = windowElements();
  const rows = Math.min(chunk, length);
  const pass = (
    first: number,
    end: number,
    rowBegin: number,
    rowEnd: number,
    carry: boolean,
    scale: number,
    whole = false,
  ) => {
    // The x elements outputs [first, end) read in rows [rowBegin, rowEnd).
    const xAt = (e: number, last: boolean) => {
      const unit = Math.floor(e / inner), o = Math.floor(unit / chunks), c = unit % chunks;
      const r = last ? Math.min((c + 1) * chunk, length, rowEnd) - 1 : Math.max(c * chunk, rowBegin);
      return (o * length + r) * inner + (e % inner);
    };
    const xw = bindPart(x, whole, xAt(first, false), xAt(end - 1, true) + 1);
    const ow = bindPart(out, whole, first, end);
    dispatch(
      kernel,
      {
        first,
        count: end - first,
        length,
        inner,
        chunk,
        chunks,
        row_begin: rowBegin,
        row_end: rowEnd,
        carry: carry ? 1 : 0,
        add_to: addTo ? 1 : 0,
        factor: scale,
        x_shift: xw.shift,
        out_shift: ow.shift,
      },
      [xw.range, ow.range],
      grid(end - first, 256),
    );
  };
  if (addTo && !(x.size <= span && count <= span)) {
    throw new Error("reduce: sums add onto a tensor only in one whole-tensor pass");
  }
  if (x.size <= span && count <= span) {
    const variant = kernelVariant(
      "reduce_strided",
      () => gpu().profile.isSoftware && texelsPayOff(x.size) ? "texel" : "scalar",
    );
    const source = variant === "texel" && inner % 4 === 0 ? texelRange(x.range()) : null;
    if (source) return texelStridedSum(source, out, count, length, inner, chunk, chunks, factor, addTo);
    return pass(0, count, 0, length, false, factor, true);
  }
  if (rows * inner <= span) {
    const perWindow = Math.floor(span / (rows * inner)) * inner;
    for (let first = 0; first < count; first += perWindow) {
      pass(first, Math.min(count, first + perWindow), 0, length, false, factor);
    }
    return;
  }
  // Chunks larger than a binding: per chunk and run of at most a binding's span of its `inner`
  // outputs, runs of rows whose elements fit, the last applying the factor.
  for (let unit = 0; unit < outer * chunks; unit++) {
    const c = unit % chunks;
    const rowStart = c * chunk, rowStop = Math.min(rowStart + chunk, length);
    for (let i0 = 0; i0 < inner; i0 += span) {
      const width = Math.min(span, inner - i0);
      const perPass = Math.max(1, Math.floor((span - width) / inner) + 1);
      for (let r = rowStart; r < rowStop; r += perPass) {
        const last = r + perPass >= rowStop;
        pass(
          unit * inner + i0,
          unit * inner + i0 + width,
          r,
          Math.min(rowStop, r + perPass),
          r > rowStart,
          last ? factor : 1,
        );
      }
    }
  }
}

/**
 * The whole-tensor pass of {@linkcode stridedSum} on software adapters: an invocation sums four
 * neighbouring outputs, reading x through a texture a vec4 per row (llvmpipe loads storage buffers a
 * lane and a float at a time), each sum in the same order as the scalar kernel's.
 */
function texelStridedSum(
  source: BufferRange,
  out: Tensor,
  count: number,
  length: number,
  inner: number,
  chunk: number,
  chunks: number,
  factor: number,
  addTo: boolean,
): void {
  const kernel = kernelFor("reduce_strided/texel", () => ({
    name: "reduce_strided_texel",
    params: {
      quads: "u32",
      length: "u32",
      inner_quads: "u32",
      chunk: "u32",
      chunks: "u32",
      factor: "f32",
      add_to: "u32",
    },
    bindings: [{ name: "x", type: "texture" }, { name: "out", type: "vec4<f32>", write: true }],
    code: `${TEXEL_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let q = ${linearIndex(256)};
  if (q >= params.quads) { return; }
  let i = q % params.inner_quads;
  let c = (q / params.inner_quads) % params.chunks;
  let o = q / (params.inner_quads * params.chunks);
  let end = min(c * params.chunk + params.chunk, params.length);
  var acc = vec4<f32>();
  for (var r = c * params.chunk; r < end; r++) {
    acc += texel(x, (o * params.length + r) * params.inner_quads + i);
  }
  if (params.add_to == 1u) { out[q] += acc; } else { out[q] = acc * params.factor; }
}`,
  }));
  const params = {
    quads: count / 4,
    length,
    inner_quads: inner / 4,
    chunk,
    chunks,
    factor,
    add_to: addTo ? 1 : 0,
  };
  withTexels([source], ([view]) => dispatch(kernel, params, [view, out.range()], grid(count / 4, 256)));
}

/** Sums each of `rows` contiguous rows of `length` with a workgroup tree, times `factor`, in windows of whole rows. */
function reduceRows(x: Tensor, rows: number, length: number, factor: number): Tensor {
  const out = emptyTensor([rows]);
  const kernel = kernelFor("reduce_rows", () => ({
    name: "reduce_rows",
    params: { first: "u32", rows: "u32", length: "u32", factor: "f32", x_shift: "u32", out_shift: "u32" },
    bindings: [{ name: "x" }, { name: "out", write: true }],
    code: `
var<workgroup> partial: array<f32, ${ROW_THREADS}>;
@compute @workgroup_size(${ROW_THREADS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let local = wid.x + wid.y * groups.x;
  if (local >= params.rows) { return; }
  let row = params.first + local;
  let base = row * params.length + params.x_shift;
  var acc = 0.0;
  for (var j = lid; j < params.length; j += ${ROW_THREADS}u) { acc += x[base + j]; }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${ROW_THREADS / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[row + params.out_shift] = partial[0] * params.factor; }
}`,
  }));
  const span = windowElements();
  const whole = x.size <= span && rows <= span;
  const perWindow = whole ? rows : Math.floor(span / length);
  for (let first = 0; first < rows; first += perWindow) {
    const end = Math.min(rows, first + perWindow);
    const xw = bindPart(x, whole, first * length, end * length);
    const ow = bindPart(out, whole, first, end);
    dispatch(
      kernel,
      { first, rows: end - first, length, factor, x_shift: xw.shift, out_shift: ow.shift },
      [xw.range, ow.range],
      grid(end - first, 1),
    );
  }
  return out;
}

/** Options of {@linkcode sum} and {@linkcode mean}. */
export interface ReduceOptions {
  /** Keep the reduced axis with length 1. */
  keepDims?: boolean;
}

function reduceAxis(
  op: string,
  x: Tensor,
  axis: number | undefined,
  options: ReduceOptions,
  isMean: boolean,
): Tensor {
  checkOptions(op, options, ["keepDims"]);
  expectTensor(op, x, "x");
  if (x.dtype !== "float32") throw new Error(`${op}: ${x.describe()} is not float32`);
  const flatAll = axis === undefined;
  const a = flatAll ? 0 : normalizeAxis(axis, x.rank, op);
  const shape = flatAll ? [x.size] : x.shape;
  const outer = shapeSize(shape.slice(0, a));
  const length = shape[a];
  const inner = shapeSize(shape.slice(a + 1));
  const outShape = flatAll
    ? (options.keepDims ? x.shape.map(() => 1) : [])
    : options.keepDims
    ? x.shape.map((d, i) => (i === a ? 1 : d))
    : x.shape.filter((_, i) => i !== a);
  if (length === 0) {
    // As PyTorch: the sum of nothing is 0, its mean NaN; x has no elements, so no gradient to give.
    const empty = full(outShape, isMean ? NaN : 0);
    return attachGrad(empty, op, [x], () => [zeros(x.shape)]);
  }
  const reduced = reduceMiddle(x, outer, length, inner, isMean ? 1 / length : 1);
  const out = reduced.reshape(outShape);
  reduced.dispose();
  const factor = isMean ? 1 / length : 1;
  const inShape = x.shape;
  return attachGrad(out, op, [x], (g) => [broadcastTo(g, inShape, flatAll ? undefined : a, factor)]);
}

/** Sum over one axis, or over all elements when `axis` is omitted. */
export function sum(x: Tensor, axis?: number, options: ReduceOptions = {}): Tensor {
  return reduceAxis("sum", x, axis, options, false);
}

/** Mean over one axis, or over all elements when `axis` is omitted. */
export function mean(x: Tensor, axis?: number, options: ReduceOptions = {}): Tensor {
  return reduceAxis("mean", x, axis, options, true);
}

/**
 * Repeats g (the reduced tensor) along `axis` (all axes when undefined) to `shape`, times `factor`;
 * beyond one storage binding in windows of whole rows of `inner` outputs (or runs within one row).
 */
function broadcastTo(g: Tensor, shape: readonly number[], axis: number | undefined, factor: number): Tensor {
  const length = axis === undefined ? shapeSize(shape) : shape[axis];
  const inner = axis === undefined ? 1 : shapeSize(shape.slice(axis + 1));
  const out = emptyTensor(shape);
  const kernel = kernelFor("reduce_broadcast", () => ({
    name: "reduce_broadcast",
    params: {
      first: "u32",
      count: "u32",
      length: "u32",
      inner: "u32",
      factor: "f32",
      g_shift: "u32",
      out_shift: "u32",
    },
    bindings: [{ name: "g" }, { name: "out", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let local = ${linearIndex(256)};
  if (local >= params.count) { return; }
  let idx = params.first + local;
  let i = idx % params.inner;
  let o = idx / (params.inner * params.length);
  out[idx + params.out_shift] = g[o * params.inner + i + params.g_shift] * params.factor;
}`,
  }));
  const span = windowElements();
  const whole = out.size <= span && g.size <= span;
  const perWindow = whole ? out.size : inner <= span ? Math.floor(span / inner) * inner : span;
  const gAt = (e: number) => Math.floor(e / (inner * length)) * inner + (e % inner);
  for (const [first, end] of outputWindows(out.size, perWindow, inner)) {
    const gw = bindPart(g, whole, gAt(first), gAt(end - 1) + 1);
    const ow = bindPart(out, whole, first, end);
    dispatch(
      kernel,
      { first, count: end - first, length, inner, factor, g_shift: gw.shift, out_shift: ow.shift },
      [gw.range, ow.range],
      grid(end - first, 256),
    );
  }
  return out;
}

/**
 * Sums `g` over the dimensions along which `shape` was broadcast to g's shape (NumPy rules), giving
 * a tensor of `shape`: the gradient of a broadcast input. Not differentiable itself.
 */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  const rank = g.rank;
  const padded = [...new Array(rank - shape.length).fill(1), ...shape];
  if (padded.some((d, i) => d !== 1 && d !== g.shape[i])) {
    throw new Error(`sumToShape: ${formatShape(g.shape)} does not broadcast from ${formatShape(shape)}`);
  }
  // Merge runs of dimensions that are all reduced or all kept, then reduce the runs one at a time.
  const runs: { size: number; reduced: boolean }[] = [];
  g.shape.forEach((d, i) => {
    const reduced = padded[i] === 1 && d !== 1;
    if (d === 1) return;
    const last = runs.at(-1);
    if (last && last.reduced === reduced) last.size *= d;
    else runs.push({ size: d, reduced });
  });
  let current = g;
  let sizes = runs.map((r) => r.size);
  for (let r = runs.length - 1; r >= 0; r--) {
    if (!runs[r].reduced) continue;
    const outer = shapeSize(sizes.slice(0, r));
    const inner = shapeSize(sizes.slice(r + 1));
    const next = reduceMiddle(current, outer, sizes[r], inner, 1);
    if (current !== g) current.dispose();
    current = next;
    sizes = sizes.filter((_, i) => i !== r);
  }
  if (current === g) return g.reshape(shape);
  const out = current.reshape(shape);
  current.dispose();
  return out;
}

/**
 * The gradient of a bias `[N]` added along the last axis of `g` [..., N]: the sums of `g` over its
 * leading axes, added onto `into` (the bias's .grad, see gradientSink) when given and one pass computes
 * them, then null; otherwise a new [N] tensor, as {@linkcode sumToShape} gives.
 */
export function biasGradient(g: Tensor, into: Tensor | null): Tensor | null {
  const n = g.shape[g.rank - 1];
  if (!into || g.rank < 2 || n === 0 || g.size === n) return sumToShape(g, [n]);
  const sums = reduceMiddle(g, 1, g.size / n, n, 1, into);
  if (sums === into) return null;
  const out = sums.reshape([n]);
  sums.dispose();
  return out;
}

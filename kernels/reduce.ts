/**
 * Sum and mean over an axis, and the sum over broadcast dimensions that elementwise backward needs.
 *
 * A reduction views its input as [outer, length, inner] and reduces the middle axis. Results are
 * bit-identical run to run: every sum is taken in a fixed order (a tree inside a workgroup, or
 * chunk partials summed by a second pass), never with atomics.
 *
 * @module
 */
import { dispatch } from "../engine/recorder.ts";
import { grid, kernelFor, linearIndex } from "../engine/kernel.ts";
import { attachGrad, emptyTensor, type Tensor } from "../engine/tensor.ts";
import { formatShape, normalizeAxis, shapeSize } from "../engine/shape.ts";

/** Rows of the reduced axis one invocation sums before a second pass takes over. */
const CHUNK = 64;
const ROW_THREADS = 256;

/** Sums x viewed as [outer, length, inner] over the middle axis, times `factor`, into [outer, inner]. */
function reduceMiddle(x: Tensor, outer: number, length: number, inner: number, factor: number): Tensor {
  if (inner === 1) return reduceRows(x, outer, length, factor);
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
  const out = emptyTensor([outer * inner]);
  stridedSum(source, out, outer, remaining, inner, remaining, factor);
  if (source !== x) source.dispose();
  return out;
}

/**
 * One pass: out[o, c, i] = factor * sum of x[o, c*chunk .. c*chunk+chunk-1, i]; one invocation per
 * output element, summing in index order.
 */
function stridedSum(
  x: Tensor,
  out: Tensor,
  outer: number,
  length: number,
  inner: number,
  chunk: number,
  factor: number,
): void {
  const chunks = Math.ceil(length / chunk);
  const kernel = kernelFor("reduce_strided", () => ({
    name: "reduce_strided",
    params: { outer: "u32", length: "u32", inner: "u32", chunk: "u32", chunks: "u32", factor: "f32" },
    bindings: [{ name: "x" }, { name: "out", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(256)};
  if (idx >= params.outer * params.chunks * params.inner) { return; }
  let i = idx % params.inner;
  let c = (idx / params.inner) % params.chunks;
  let o = idx / (params.inner * params.chunks);
  let start = c * params.chunk;
  let end = min(start + params.chunk, params.length);
  var acc = 0.0;
  for (var r = start; r < end; r++) {
    acc += x[(o * params.length + r) * params.inner + i];
  }
  out[idx] = acc * params.factor;
}`,
  }));
  const count = outer * chunks * inner;
  dispatch(
    kernel,
    { outer, length, inner, chunk, chunks, factor },
    [x.range(), out.range()],
    grid(count, 256),
  );
}

/** Sums each of `rows` contiguous rows of `length` with a workgroup tree, times `factor`. */
function reduceRows(x: Tensor, rows: number, length: number, factor: number): Tensor {
  const out = emptyTensor([rows]);
  const kernel = kernelFor("reduce_rows", () => ({
    name: "reduce_rows",
    params: { rows: "u32", length: "u32", factor: "f32" },
    bindings: [{ name: "x" }, { name: "out", write: true }],
    code: `
var<workgroup> partial: array<f32, ${ROW_THREADS}>;
@compute @workgroup_size(${ROW_THREADS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= params.rows) { return; }
  let base = row * params.length;
  var acc = 0.0;
  for (var j = lid; j < params.length; j += ${ROW_THREADS}u) { acc += x[base + j]; }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = ${ROW_THREADS / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[row] = partial[0] * params.factor; }
}`,
  }));
  dispatch(kernel, { rows, length, factor }, [x.range(), out.range()], grid(rows, 1));
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
  if (x.dtype !== "float32") throw new Error(`${op}: ${x.describe()} is not float32`);
  const flatAll = axis === undefined;
  const a = flatAll ? 0 : normalizeAxis(axis, x.rank, op);
  const shape = flatAll ? [x.size] : x.shape;
  const outer = shapeSize(shape.slice(0, a));
  const length = shape[a];
  const inner = shapeSize(shape.slice(a + 1));
  if (length === 0) throw new Error(`${op}: cannot reduce the empty axis of ${x.describe()}`);
  const outShape = flatAll
    ? (options.keepDims ? x.shape.map(() => 1) : [])
    : options.keepDims
    ? x.shape.map((d, i) => (i === a ? 1 : d))
    : x.shape.filter((_, i) => i !== a);
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

/** Repeats g (the reduced tensor) along `axis` (all axes when undefined) to `shape`, times `factor`. */
function broadcastTo(g: Tensor, shape: readonly number[], axis: number | undefined, factor: number): Tensor {
  const length = axis === undefined ? shapeSize(shape) : shape[axis];
  const inner = axis === undefined ? 1 : shapeSize(shape.slice(axis + 1));
  const out = emptyTensor(shape);
  const kernel = kernelFor("reduce_broadcast", () => ({
    name: "reduce_broadcast",
    params: { count: "u32", length: "u32", inner: "u32", factor: "f32" },
    bindings: [{ name: "g" }, { name: "out", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(256)};
  if (idx >= params.count) { return; }
  let i = idx % params.inner;
  let o = idx / (params.inner * params.length);
  out[idx] = g[o * params.inner + i] * params.factor;
}`,
  }));
  dispatch(kernel, { count: out.size, length, inner, factor }, [g.range(), out.range()], grid(out.size, 256));
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

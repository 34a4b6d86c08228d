/**
 * Softmax and log-softmax along any axis.
 *
 * The last axis is the fast path: a row is spread over `threads` invocations (a whole workgroup or
 * a fraction of one) that read it in vec4s when its length allows, each keeping up to `perThread`
 * vectors in registers; the maximum and the sum of exponentials are gathered in one pass and
 * combined by one fixed-order tree in workgroup memory. Any other axis is viewed as
 * [outer, length, inner] and each invocation walks one column of the middle axis, neighbouring
 * invocations reading neighbouring columns.
 *
 * @module
 */
import { grid, kernelFor, linearIndex, rowWindows, rowWindowsFit, walkLimit } from "../engine/kernel.ts";
import { dispatch } from "../engine/recorder.ts";
import { attachGrad, composedOp, emptyTensor, expectTensor, type Tensor } from "../engine/tensor.ts";
import { normalizeAxis, shapeSize } from "../engine/shape.ts";
import { exp, sub } from "./elementwise.ts";
import { concat, narrow, permute } from "./layout.ts";
import {
  dispatchRows,
  layoutKey,
  rowGrid,
  rowInput,
  rowKernel,
  rowLayout,
  rowLoads,
  rowLoops,
  rowReduce,
  rowVariant,
  texelRows,
  vectorType,
  walkableRow,
  wideRowParts,
} from "./rows.ts";

type Mode = "softmax" | "log_softmax";

/** The lowest finite f32: the running maximum of an invocation that has seen no value yet. */
const LOWEST = "-3.4028234663852886e38";

const MAX_SUM = `
fn combine_max_sum(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}`;

/** y = softmax or log-softmax of each contiguous row of x. */
function rowsForward(mode: Mode, x: Tensor, y: Tensor, rows: number, cols: number): void {
  const layout = rowLayout(cols);
  const type = vectorType(layout.width);
  // Softmax keeps exp(x - m) of its cached values (m: this invocation's maximum) so that each value
  // costs one exp; log-softmax keeps x, as it needs no exp on output. Tail values are re-read.
  const pass = mode === "softmax"
    ? { sum: "cache[k] = exp(cache[k] - m); s += cache[k];", cached: "cache[k] * scale" }
    : { sum: "s += exp(cache[k] - m);", cached: "(cache[k] - total.x) - log_sum" };
  const tail = mode === "softmax" ? "exp(v - total.x) * inverse" : "(v - total.x) - log_sum";
  const windows = rowWindows(`${mode} rows`, rows, [cols * 4]);
  const window = (t: Tensor, first: number, count: number) => t.window(first * cols, count * cols);
  const texel = texelRows(layout, windows.map(([first, count]) => window(x, first, count)));
  const name = `${mode}_rows_${texel ? "texel" : rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32" },
    bindings: [rowInput("x", type, texel), { name: "y", type, write: true }],
    code: rowKernel(
      layout,
      `${rowLoads(["x"], texel)}
${MAX_SUM}
${rowReduce("reduce_max_sum", "vec2<f32>", (a, b) => `combine_max_sum(${a}, ${b})`, layout)}`,
      `var cache: array<V, ${layout.perThread}>;
  var m = ${LOWEST};
  ${
        rowLoops(
          layout,
          "cache[k] = load_x(base + j); m = max(m, hmax(cache[k]));",
          "m = max(m, hmax(load_x(base + j)));",
        )
      }
  var s = V(0.0);
  ${rowLoops(layout, pass.sum, "s += exp(load_x(base + j) - m);")}
  let total = reduce_max_sum(vec2<f32>(m, hsum(s)), lane, slot);
  let inverse = 1.0 / total.y;
  let scale = exp(m - total.x) * inverse;
  let log_sum = log(total.y);
  ${rowLoops(layout, `y[base + j] = ${pass.cached};`, `let v = load_x(base + j); y[base + j] = ${tail};`)}`,
    ),
  }));
  for (const [first, count] of windows) {
    const groups = rowGrid(count, layout);
    dispatchRows(
      kernel,
      { rows: count, cols },
      [window(x, first, count)],
      [window(y, first, count)],
      groups,
      texel,
    );
  }
}

/** dx of softmax (y * (dy - sum(dy * y))) or log-softmax (dy - exp(y) * sum(dy)) over contiguous rows. */
function rowsBackward(mode: Mode, y: Tensor, dy: Tensor, dx: Tensor, rows: number, cols: number): void {
  const layout = rowLayout(cols);
  const term = mode === "softmax" ? "g * v" : "g";
  const write = mode === "softmax" ? "v * (g - total)" : "g - exp(v) * total";
  const type = vectorType(layout.width);
  const windows = rowWindows(`${mode} rows backward`, rows, [cols * 4]);
  const window = (t: Tensor, first: number, count: number) => t.window(first * cols, count * cols);
  const texel = texelRows(
    layout,
    windows.flatMap(([first, count]) => [window(y, first, count), window(dy, first, count)]),
  );
  const name = `${mode}_rows_backward_${texel ? "texel" : rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32" },
    bindings: [rowInput("y", type, texel), rowInput("dy", type, texel), { name: "dx", type, write: true }],
    code: rowKernel(
      layout,
      `${rowLoads(["y", "dy"], texel)}
${rowReduce("reduce_sum", "f32", (a, b) => `${a} + ${b}`, layout)}`,
      `var ys: array<V, ${layout.perThread}>;
  var gs: array<V, ${layout.perThread}>;
  var s = V(0.0);
  ${
        rowLoops(
          layout,
          `ys[k] = load_y(base + j); gs[k] = load_dy(base + j); let v = ys[k]; let g = gs[k]; s += ${term};`,
          `let v = load_y(base + j); let g = load_dy(base + j); s += ${term};`,
        )
      }
  let total = reduce_sum(hsum(s), lane, slot);
  ${
        rowLoops(
          layout,
          `let v = ys[k]; let g = gs[k]; dx[base + j] = ${write};`,
          `let v = load_y(base + j); let g = load_dy(base + j); dx[base + j] = ${write};`,
        )
      }`,
    ),
  }));
  for (const [first, count] of windows) {
    const inputs = [window(y, first, count), window(dy, first, count)];
    dispatchRows(
      kernel,
      { rows: count, cols },
      inputs,
      [window(dx, first, count)],
      rowGrid(count, layout),
      texel,
    );
  }
}

const STRIDED_THREADS = 64;

/** Entry point and preamble locating the column of [outer, length, inner] walked by this invocation. */
const STRIDED_ENTRY = `@compute @workgroup_size(${STRIDED_THREADS})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(STRIDED_THREADS)};
  if (idx >= params.outer * params.inner) { return; }
  let base = (idx / params.inner) * params.length * params.inner + idx % params.inner;
  let step = params.inner;
  let end = base + params.length * step;`;

/** Softmax or log-softmax over the middle axis of x viewed as [outer, length, inner]. */
function stridedForward(
  mode: Mode,
  x: Tensor,
  y: Tensor,
  outer: number,
  length: number,
  inner: number,
): void {
  const write = mode === "softmax" ? "exp(x[i] - m) * inverse" : "(x[i] - m) - log_sum";
  const kernel = kernelFor(`${mode}_strided`, () => ({
    name: `${mode}_strided`,
    params: { outer: "u32", length: "u32", inner: "u32" },
    bindings: [{ name: "x" }, { name: "y", write: true }],
    code: `${STRIDED_ENTRY}
  var m = ${LOWEST};
  for (var i = base; i < end; i += step) { m = max(m, x[i]); }
  var s = 0.0;
  for (var i = base; i < end; i += step) { s += exp(x[i] - m); }
  let inverse = 1.0 / s;
  let log_sum = log(s);
  for (var i = base; i < end; i += step) { y[i] = ${write}; }
}`,
  }));
  const slab = length * inner;
  for (const [first, count] of rowWindows(`${mode} strided`, outer, [slab * 4])) {
    const window = (t: Tensor) => t.window(first * slab, count * slab);
    dispatch(
      kernel,
      { outer: count, length, inner },
      [window(x), window(y)],
      grid(count * inner, STRIDED_THREADS),
    );
  }
}

/** Backward of {@linkcode stridedForward}. */
function stridedBackward(
  mode: Mode,
  y: Tensor,
  dy: Tensor,
  dx: Tensor,
  outer: number,
  length: number,
  inner: number,
): void {
  const term = mode === "softmax" ? "dy[i] * y[i]" : "dy[i]";
  const write = mode === "softmax" ? "y[i] * (dy[i] - s)" : "dy[i] - exp(y[i]) * s";
  const kernel = kernelFor(`${mode}_strided_backward`, () => ({
    name: `${mode}_strided_backward`,
    params: { outer: "u32", length: "u32", inner: "u32" },
    bindings: [{ name: "y" }, { name: "dy" }, { name: "dx", write: true }],
    code: `${STRIDED_ENTRY}
  var s = 0.0;
  for (var i = base; i < end; i += step) { s += ${term}; }
  for (var i = base; i < end; i += step) { dx[i] = ${write}; }
}`,
  }));
  const slab = length * inner;
  for (const [first, count] of rowWindows(`${mode} strided backward`, outer, [slab * 4])) {
    const window = (t: Tensor) => t.window(first * slab, count * slab);
    dispatch(
      kernel,
      { outer: count, length, inner },
      [window(y), window(dy), window(dx)],
      grid(count * inner, STRIDED_THREADS),
    );
  }
}

function normalize(mode: Mode, x: Tensor, axis: number): Tensor {
  const op = mode === "softmax" ? "softmax" : "logSoftmax";
  expectTensor(op, x, "x");
  if (x.dtype !== "float32") throw new Error(`${op}: ${x.describe()} is not float32`);
  const a = normalizeAxis(axis, x.rank, op);
  const outer = shapeSize(x.shape.slice(0, a));
  const length = x.shape[a];
  const inner = shapeSize(x.shape.slice(a + 1));
  if (inner === 1 && (!rowWindowsFit(outer, [length * 4]) || !walkableRow(length))) {
    return wideRows(mode, x, a);
  }
  // A strided axis is walked by one invocation per column: one too long for that goes last too.
  if (inner > 1 && (!rowWindowsFit(outer, [length * inner * 4]) || length > walkLimit())) {
    return lastAxisOf(mode, x, a);
  }
  const y = emptyTensor(x.shape);
  if (y.size > 0) {
    if (inner === 1) rowsForward(mode, x, y, outer, length);
    else stridedForward(mode, x, y, outer, length, inner);
  }
  return attachGrad(y, op, [x], (g) => {
    if (!x.requiresGrad) return [null];
    const dx = emptyTensor(x.shape);
    if (dx.size === 0) return [dx];
    if (inner === 1) rowsBackward(mode, y, g, dx, outer, length);
    else stridedBackward(mode, y, g, dx, outer, length, inner);
    return [dx];
  });
}

/**
 * Softmax or log-softmax of rows wider than a binding-sized run of rows allows, composed of windowed
 * ops (autograd follows them): each part's log-sum-exp (its first element minus its log-softmax
 * there), the log-sum-exp of those the same way, and x minus that; softmax exponentiates it.
 */
function wideRows(mode: Mode, x: Tensor, axis: number): Tensor {
  return composedOp([x], (temp) => {
    const firstOf = (t: Tensor) => temp(narrow(t, axis, 0, 1));
    const logSumExp = (t: Tensor) => temp(sub(firstOf(t), firstOf(temp(normalize("log_softmax", t, axis)))));
    const parts = wideRowParts(x.shape[axis]).map(([start, length]) =>
      logSumExp(temp(narrow(x, axis, start, length)))
    );
    const total = parts.length === 1 ? parts[0] : logSumExp(temp(concat(parts, axis)));
    const logProbabilities = sub(x, total);
    return mode === "softmax" ? exp(temp(logProbabilities)) : logProbabilities;
  });
}

/**
 * Softmax or log-softmax along a strided axis whose slab (its length times the dimensions after it)
 * exceeds a binding: the axis moved last (a layout copy in windows), normalised as rows, moved back.
 */
function lastAxisOf(mode: Mode, x: Tensor, axis: number): Tensor {
  const order = [...x.shape.keys()].filter((d) => d !== axis).concat(axis);
  const back = order.map((_, d) => order.indexOf(d));
  return composedOp([x], (temp) => permute(temp(normalize(mode, temp(permute(x, order)), x.rank - 1)), back));
}

/**
 * Softmax along `axis` (default -1): exp(x - max) / sum(exp(x - max)), stable for large logits.
 * The output is saved for the backward pass, so keep it alive until `backward()` has run.
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  return normalize("softmax", x, axis);
}

/**
 * Log-softmax along `axis` (default -1), computed stably as x - max - log(sum(exp(x - max))).
 * The output is saved for the backward pass, so keep it alive until `backward()` has run.
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return normalize("log_softmax", x, axis);
}

/**
 * Layout ops: permute/transpose, narrow (a slice along one axis) and concat. All are one strided
 * copy kernel: either a strided read into a contiguous output, or a contiguous read into a strided
 * region of the output. Each op's backward is the other direction. Beyond one storage binding the
 * copy runs in windows of whole trailing blocks.
 *
 * @module
 */
import { dispatch } from "../engine/recorder.ts";
import { bindWindow, grid, kernelFor, linearIndex, windowElements } from "../engine/kernel.ts";
import {
  attachGrad,
  emptyTensor,
  expectNumbers,
  expectTensor,
  type Tensor,
  zeros,
} from "../engine/tensor.ts";
import { contiguousStrides, formatShape, normalizeAxis, shapeSize } from "../engine/shape.ts";

/** Ranks above this are merged before copying; six covers every layout the models use. */
const MAX_RANK = 6;

/** A strided view: element `coord` of `dims` lives at `offset + sum(coord[r] * strides[r])`. */
interface StridedView {
  dims: number[];
  strides: number[];
  offset: number;
}

/** Drops unit dimensions and merges dimensions the strided side walks contiguously. */
function simplify(view: StridedView): StridedView {
  const dims: number[] = [];
  const strides: number[] = [];
  view.dims.forEach((d, r) => {
    if (d === 1) return;
    const last = dims.length - 1;
    if (last >= 0 && strides[last] === view.strides[r] * d) {
      dims[last] *= d;
      strides[last] = view.strides[r];
    } else {
      dims.push(d);
      strides.push(view.strides[r]);
    }
  });
  if (dims.length === 0) return { dims: [1], strides: [1], offset: view.offset };
  if (dims.length > MAX_RANK) throw new Error(`layout: a copy of rank ${dims.length} exceeds ${MAX_RANK}`);
  return { dims, strides, offset: view.offset };
}

/** Elements from a view's first to its last, plus one. */
function reach(dims: readonly number[], strides: readonly number[]): number {
  return dims.reduce((sum, d, r) => sum + (d - 1) * strides[r], 1);
}

/**
 * The copy in windows that each fit one storage binding: blocks of the view's trailing dimensions
 * that fit, taken in runs along the dimension before them; every element is copied once.
 */
function copyWindows(v: StridedView): { view: StridedView; denseFirst: number; count: number }[] {
  const span = windowElements();
  const rank = v.dims.length;
  const fits = (q: number) =>
    shapeSize(v.dims.slice(q)) <= span && reach(v.dims.slice(q), v.strides.slice(q)) <= span;
  let p = 0;
  while (p < rank && !fits(p)) p++;
  if (p === 0) return [{ view: v, denseFirst: 0, count: shapeSize(v.dims) }];
  const restDims = v.dims.slice(p), restStrides = v.strides.slice(p);
  const restCount = shapeSize(restDims), restReach = reach(restDims, restStrides);
  const along = v.dims[p - 1], stride = v.strides[p - 1];
  const run = Math.max(
    1,
    Math.min(along, Math.floor((span - restReach) / stride) + 1, Math.floor(span / restCount)),
  );
  const windows = [];
  const outerCount = shapeSize(v.dims.slice(0, p - 1));
  for (let o = 0; o < outerCount; o++) {
    let at = v.offset;
    for (let r = p - 2, rest = o; r >= 0; r--) {
      at += (rest % v.dims[r]) * v.strides[r];
      rest = Math.floor(rest / v.dims[r]);
    }
    for (let a = 0; a < along; a += run) {
      const n = Math.min(run, along - a);
      windows.push({
        view: { dims: [n, ...restDims], strides: [stride, ...restStrides], offset: at + a * stride },
        denseFirst: (o * along + a) * restCount,
        count: n * restCount,
      });
    }
  }
  return windows;
}

/**
 * Copies between a contiguous tensor and a strided view of another: `gather` reads `strided` at the
 * view into contiguous `dense`; otherwise `dense` is written into `strided` at the view. Beyond one
 * storage binding the copy runs in windows (see {@linkcode copyWindows}).
 */
function stridedCopy(view: StridedView, strided: Tensor, dense: Tensor, gather: boolean): void {
  const v = simplify(view);
  const span = windowElements();
  const whole = dense.size <= span && strided.size <= span;
  for (const w of whole ? [{ view: v, denseFirst: 0, count: dense.size }] : copyWindows(v)) {
    const rank = w.view.dims.length;
    const name = gather ? "strided_gather" : "strided_scatter";
    const kernel = kernelFor(`${name}/${rank}`, () => ({
      name,
      params: {
        count: "u32",
        offset: "u32",
        dense_offset: "u32",
        dims: { type: "u32", length: rank },
        strides: { type: "u32", length: rank },
      },
      bindings: gather
        ? [{ name: "strided" }, { name: "dense", write: true }]
        : [{ name: "dense" }, { name: "strided", write: true }],
      code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i >= params.count) { return; }
  var rem = i;
  var at = params.offset;
  ${
        Array.from({ length: rank }, (_, k) => rank - 1 - k).map((r) =>
          `at += (rem % dims(${r}u)) * strides(${r}u);${r > 0 ? ` rem = rem / dims(${r}u);` : ""}`
        ).join("\n  ")
      }
  ${
        gather
          ? "dense[params.dense_offset + i] = strided[at];"
          : "strided[at] = dense[params.dense_offset + i];"
      }
}`,
    }));
    const stridedWindow = whole
      ? { range: strided.range(), first: 0 }
      : bindWindow(strided, w.view.offset, w.view.offset + reach(w.view.dims, w.view.strides));
    const denseWindow = whole
      ? { range: dense.range(), first: 0 }
      : bindWindow(dense, w.denseFirst, w.denseFirst + w.count);
    dispatch(
      kernel,
      {
        count: w.count,
        offset: w.view.offset - stridedWindow.first,
        dense_offset: w.denseFirst - denseWindow.first,
        dims: w.view.dims,
        strides: w.view.strides,
      },
      gather ? [stridedWindow.range, denseWindow.range] : [denseWindow.range, stridedWindow.range],
      grid(w.count, 256),
    );
  }
}

/** Element i (row-major over `view.dims`) of a strided view: its index in the viewed storage. */
function viewIndex(
  i: number,
  view: { dims: readonly number[]; strides: readonly number[]; offset: number },
): number {
  let index = view.offset;
  for (let d = view.dims.length - 1; d >= 0; d--) {
    index += (i % view.dims[d]) * view.strides[d];
    i = Math.floor(i / view.dims[d]);
  }
  return index;
}

/**
 * Int32 ids keep their host values through a layout op, as the GPU copy moves them, so that a
 * narrowed or permuted id tensor is still range-checked by gatherRows and crossEntropy and can still
 * give an embedding table its gradient.
 */
function carryHostInts(
  out: Tensor,
  parts: readonly {
    source: Tensor;
    view: { dims: readonly number[]; strides: readonly number[]; offset: number };
  }[],
  gather: boolean,
): void {
  if (out.dtype !== "int32" || parts.some((p) => !p.source.hostValues)) return;
  const values = new Int32Array(out.size);
  for (const { source, view } of parts) {
    const from = source.hostValues!;
    const count = gather ? out.size : source.size;
    for (let i = 0; i < count; i++) {
      if (gather) values[i] = from[viewIndex(i, view)];
      else values[viewIndex(i, view)] = from[i];
    }
  }
  out.hostValues = values;
}

/** Reorders the axes of `x`: output axis i is input axis `order[i]` (a copy). */
export function permute(x: Tensor, order: readonly number[]): Tensor {
  expectTensor("permute", x, "x");
  expectNumbers("permute", order, "the order (permute(x, [1, 0]))");
  const rank = x.rank;
  const axes = order.map((a) => normalizeAxis(a, rank, "permute"));
  if (axes.length !== rank || new Set(axes).size !== rank) {
    throw new Error(`permute: order [${order}] is not a permutation of the axes of ${x.describe()}`);
  }
  const inStrides = contiguousStrides(x.shape);
  const outShape = axes.map((a) => x.shape[a]);
  const out = emptyTensor(outShape, x.dtype);
  const view = { dims: outShape, strides: axes.map((a) => inStrides[a]), offset: 0 };
  if (out.size > 0) stridedCopy(view, x, out, true);
  carryHostInts(out, [{ source: x, view }], true);
  const inverse = new Array(rank);
  axes.forEach((a, i) => (inverse[a] = i));
  return attachGrad(out, "permute", [x], (g) => [permute(g, inverse)]);
}

/** Swaps two axes (a copy). */
export function transpose(x: Tensor, axis0 = -2, axis1 = -1): Tensor {
  expectTensor("transpose", x, "x");
  const order = x.shape.map((_, i) => i);
  const a = normalizeAxis(axis0, x.rank, "transpose");
  const b = normalizeAxis(axis1, x.rank, "transpose");
  [order[a], order[b]] = [order[b], order[a]];
  return permute(x, order);
}

/**
 * Elements `start .. start+length-1` of `axis` (a copy), like torch.narrow: a negative `start` counts
 * from the end of the axis.
 */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  expectTensor("narrow", x, "x");
  const a = normalizeAxis(axis, x.rank, "narrow");
  if (start < 0 && start >= -x.shape[a]) start += x.shape[a];
  if (
    !Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 ||
    start + length > x.shape[a]
  ) {
    throw new Error(`narrow: [${start}, ${start + length}) is outside axis ${a} of ${x.describe()}`);
  }
  const outShape = x.shape.map((d, i) => (i === a ? length : d));
  const view = {
    dims: outShape,
    strides: contiguousStrides(x.shape),
    offset: start * shapeSize(x.shape.slice(a + 1)),
  };
  const out = emptyTensor(outShape, x.dtype);
  if (out.size > 0) stridedCopy(view, x, out, true);
  carryHostInts(out, [{ source: x, view }], true);
  const inShape = x.shape;
  return attachGrad(out, "narrow", [x], (g) => {
    const grad = zeros(inShape);
    if (g.size > 0) stridedCopy(view, grad, g, false);
    return [grad];
  });
}

/** Joins tensors along `axis`; all other dimensions must agree. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(tensors as unknown)) {
    throw new TypeError("concat: takes one array of tensors (concat([a, b], axis))");
  }
  tensors.forEach((t, i) => expectTensor("concat", t, `tensors[${i}]`));
  if (tensors.length === 0) throw new Error("concat: no tensors");
  const first = tensors[0];
  const a = normalizeAxis(axis, first.rank, "concat");
  for (const t of tensors) {
    const fits = t.rank === first.rank && t.dtype === first.dtype &&
      t.shape.every((d, i) => i === a || d === first.shape[i]);
    if (!fits) {
      throw new Error(
        `concat: ${tensors.map((x) => `${x.dtype}${formatShape(x.shape)}`).join(", ")} along axis ${a}`,
      );
    }
  }
  const total = tensors.reduce((s, t) => s + t.shape[a], 0);
  const outShape = first.shape.map((d, i) => (i === a ? total : d));
  const out = emptyTensor(outShape, first.dtype);
  const outStrides = contiguousStrides(outShape);
  let start = 0;
  const starts: number[] = [];
  const parts = tensors.map((t) => {
    const view = { dims: [...t.shape], strides: outStrides, offset: start * outStrides[a] };
    if (t.size > 0) stridedCopy(view, out, t, false);
    starts.push(start);
    start += t.shape[a];
    return { source: t, view };
  });
  carryHostInts(out, parts, false);
  return attachGrad(
    out,
    "concat",
    tensors,
    (g) => tensors.map((t, i) => (t.requiresGrad ? narrow(g, a, starts[i], t.shape[a]) : null)),
  );
}

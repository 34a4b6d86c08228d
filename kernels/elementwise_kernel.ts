/**
 * The kernels of elementwise expressions (elementwise.ts): WGSL emitted from an expression graph,
 * the collapsed broadcast layout of the inputs, and the two variants of `MM_KERNELS=elementwise:...`.
 *
 * - `scalar` (GPUs): one element per invocation, inputs read from storage buffers at the output's
 *   index or, when broadcast, at offsets from the collapsed strides.
 * - `texel` (software adapters): one vec4 of outputs per invocation, inputs copied into textures
 *   (engine/texels.ts) and fetched a vec4 at a time; llvmpipe loads a storage buffer one lane and
 *   one float at a time, a texel as one gather. It needs a multiple of 4 outputs and, for broadcast
 *   inputs, a last collapsed dimension of a multiple of 4 that the input walks contiguously or not
 *   at all; other problems run the scalar kernel.
 *
 * @module
 */
import {
  bindingWindows,
  bindWindow,
  grid,
  kernelFor,
  linearIndex,
  type ParamSpec,
  type ParamSpecs,
  type ParamValues,
  windowElements,
} from "../engine/kernel.ts";
import { gpu } from "../engine/device.ts";
import { dispatch } from "../engine/recorder.ts";
import type { Tensor } from "../engine/tensor.ts";
import { broadcastStrides, contiguousStrides, coordinatesOf, sameShape } from "../engine/shape.ts";
import { kernelVariant } from "../engine/variants.ts";
import { BINARY_OPS, type Expr, UNARY_OPS } from "./elementwise_ops.ts";
import { TEXEL_WGSL, texelRange, texelsPayOff, withTexels } from "../engine/texels.ts";
import { WGSL_MATH } from "./wgsl.ts";

/** Emits WGSL `let` statements for a set of expressions, sharing common subexpressions. */
class Emitter {
  readonly lines: string[] = [];
  readonly constants: number[] = [];
  readonly #names = new Map<Expr, string>();
  readonly #byText = new Map<string, string>();

  /** `inputName` gives the WGSL of input k; `prefix` starts every name (one emitter per vec4 lane). */
  constructor(readonly inputName: (index: number) => string, readonly prefix = "v") {}

  /** The WGSL name holding the value of `e`. */
  emit(e: Expr): string {
    const known = this.#names.get(e);
    if (known) return known;
    const n = e.node;
    let text: string;
    if (n.kind === "input") text = this.inputName(n.index);
    else if (n.kind === "const") {
      text = `constants(${this.constants.length}u)`;
      this.constants.push(n.value);
    } else if (n.kind === "unary") text = UNARY_OPS[n.op].wgsl(this.emit(n.a));
    else text = BINARY_OPS[n.op].wgsl(this.emit(n.a), this.emit(n.b));
    let name = n.kind === "const" ? text : this.#byText.get(text);
    if (!name) {
      name = `${this.prefix}${this.lines.length}`;
      this.lines.push(`let ${name} = ${text};`);
      this.#byText.set(text, name);
    }
    this.#names.set(e, name);
    return name;
  }
}

/** A structural key of an expression (constants by position, not value), for kernel caching. */
export function structureKey(e: Expr, memo: Map<Expr, string> = new Map()): string {
  const hit = memo.get(e);
  if (hit) return hit;
  const n = e.node;
  const key = n.kind === "input"
    ? `i${n.index}`
    : n.kind === "const"
    ? "c"
    : n.kind === "unary"
    ? `${n.op}(${structureKey(n.a, memo)})`
    : `${n.op}(${structureKey(n.a, memo)},${structureKey(n.b, memo)})`;
  memo.set(e, key);
  return key;
}

/** Output dims and per-input strides after merging dimensions that every input walks contiguously. */
function collapse(outShape: readonly number[], strides: number[][]): { dims: number[]; strides: number[][] } {
  const dims: number[] = [];
  const merged: number[][] = strides.map(() => []);
  for (let r = 0; r < outShape.length; r++) {
    if (outShape[r] === 1) continue;
    const last = dims.length - 1;
    const contiguous = last >= 0 && strides.every((s, k) => merged[k][last] === s[r] * outShape[r]);
    if (contiguous) {
      dims[last] *= outShape[r];
      strides.forEach((s, k) => (merged[k][last] = s[r]));
    } else {
      dims.push(outShape[r]);
      strides.forEach((s, k) => merged[k].push(s[r]));
    }
  }
  if (dims.length === 0) return { dims: [1], strides: strides.map(() => [1]) };
  return { dims, strides: merged };
}

interface Layout {
  /** Collapsed output dims. */
  dims: number[];
  /** Per input: its collapsed strides, or null when it is read at the output's own index. */
  strides: (number[] | null)[];
  /** Part of the kernel variant key. */
  key: string;
}

function layoutOf(outShape: readonly number[], shapes: readonly (readonly number[])[]): Layout {
  const c = collapse(outShape, shapes.map((s) => broadcastStrides(s, outShape)));
  const full = (s: number[]) => sameShape(s, contiguousStrides(c.dims));
  const strides = c.strides.map((s, k) => (sameShape(shapes[k], outShape) || full(s) ? null : s));
  const key = `${c.dims.length}:${strides.map((s) => (s ? "b" : "f")).join("")}`;
  return { dims: c.dims, strides, key };
}

/**
 * The uniforms of a layout and of `constants` expression constants: the window's element count and
 * first index; with broadcast inputs the collapsed dims and each broadcast input's strides
 * (`strides<k>`); the constants, when there are any.
 */
function paramSpecs(layout: Layout, constants: number): ParamSpecs {
  const rank = layout.dims.length;
  const params: Record<string, ParamSpec> = { count: "u32", base: "u32" };
  if (layout.strides.some((s) => s)) params.dims = { type: "u32", length: rank };
  layout.strides.forEach((s, k) => s && (params[`strides${k}`] = { type: "u32", length: rank }));
  if (constants > 0) params.constants = { type: "f32", length: constants };
  return params;
}

/** Values of {@linkcode paramSpecs} for a window of `count` elements from `base`. */
function paramValues(
  layout: Layout,
  constants: readonly number[],
  count: number,
  base: number,
): ParamValues<ParamSpecs> {
  const values: Record<string, number | readonly number[]> = { count, base };
  if (layout.strides.some((s) => s)) values.dims = layout.dims;
  layout.strides.forEach((s, k) => s && (values[`strides${k}`] = s));
  if (constants.length > 0) values.constants = constants;
  return values;
}

/** `o<k>`, the offset in input k of the element at global index `index`, for every broadcast input. */
function offsetCode(layout: Layout, index: string): string {
  if (!layout.strides.some((s) => s)) return "";
  const rank = layout.dims.length;
  const lines = [`var rem = ${index};`];
  for (let r = rank - 1; r >= 0; r--) {
    lines.push(`let x${r} = rem % dims(${r}u);`);
    if (r > 0) lines.push(`rem = rem / dims(${r}u);`);
  }
  layout.strides.forEach((s, k) => {
    if (s) lines.push(`let o${k} = ${s.map((_, r) => `x${r} * strides${k}(${r}u)`).join(" + ")};`);
  });
  return lines.join("\n  ");
}

/** What {@linkcode recordElementwise} computes. */
export interface ElementwiseWork {
  /** Kernel name (texel kernels add "_texel"). */
  readonly name: string;
  /** Variant key of the expressions, unique per structure (the kernel's key adds the name and layout). */
  readonly key: string;
  /** One expression per output, over the inputs. */
  readonly exprs: readonly Expr[];
  /** The inputs, each broadcastable to `shape`. */
  readonly inputs: readonly Tensor[];
  /** The outputs, all of `shape`, and their binding names. */
  readonly outputs: readonly Tensor[];
  readonly outputNames: readonly string[];
  readonly shape: readonly number[];
}

/**
 * How the texel kernel fetches each input's four values of an output quad: "quad" the input's own
 * quad, "row" four contiguous values at the first one's offset, "splat" one value for all four;
 * null when the texel kernel cannot read the problem.
 */
function quadReads(layout: Layout, work: ElementwiseWork): ("quad" | "row" | "splat")[] | null {
  const count = work.outputs[0].size, last = layout.dims.length - 1;
  if (count % 4 !== 0) return null;
  const reads = layout.strides.map((s) => {
    if (!s) return "quad" as const;
    if (layout.dims[last] % 4 !== 0) return null;
    return s[last] === 1 ? "row" as const : s[last] === 0 ? "splat" as const : null;
  });
  const readable = work.inputs.every((t) => texelRange(t.range()) !== null);
  return reads.every((r) => r !== null) && readable ? reads as ("quad" | "row" | "splat")[] : null;
}

/**
 * The scalar kernel (an element per invocation) and its expression constants; `shifted` adds a u32
 * shift per input (`shift<k>`) and output (`out_shift<j>`) to the indices, for inputs and outputs
 * bound as windows of their own (recordShifted).
 */
function scalarKernel(work: ElementwiseWork, layout: Layout, shifted: boolean) {
  const shift = (name: string) => shifted ? ` + params.${name}` : "";
  const emitter = new Emitter((k) => `in${k}[${layout.strides[k] ? `o${k}` : "i"}${shift(`shift${k}`)}]`);
  const results = work.exprs.map((e) => emitter.emit(e));
  const params: Record<string, ParamSpec> = { ...paramSpecs(layout, emitter.constants.length) };
  if (shifted) {
    work.inputs.forEach((_, k) => (params[`shift${k}`] = "u32"));
    work.outputs.forEach((_, j) => (params[`out_shift${j}`] = "u32"));
  }
  const kernel = kernelFor(`${work.name}/${work.key}/${layout.key}${shifted ? "/shifted" : ""}`, () => ({
    name: work.name,
    params,
    bindings: [
      ...work.inputs.map((_, k) => ({ name: `in${k}` })),
      ...work.outputNames.map((name) => ({ name, write: true })),
    ],
    code: `${WGSL_MATH}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i >= params.count) { return; }
  ${offsetCode(layout, "params.base + i")}
  ${emitter.lines.join("\n  ")}
  ${work.outputNames.map((name, j) => `${name}[i${shift(`out_shift${j}`)}] = ${results[j]};`).join("\n  ")}
}`,
  }));
  return { kernel, constants: emitter.constants };
}

/** Records `outputs[j] = exprs[j]` elementwise over the inputs (broadcast), in binding-sized windows. */
export function recordElementwise(work: ElementwiseWork): void {
  const { inputs, outputs, shape } = work;
  const layout = layoutOf(shape, inputs.map((t) => t.shape));
  if (layout.strides.some((s, k) => s && inputs[k].size > windowElements())) {
    return recordShifted(work, layout);
  }
  const variant = kernelVariant(
    "elementwise",
    () => gpu().profile.isSoftware && texelsPayOff(outputs[0].size) ? "texel" : "scalar",
  );
  const reads = variant === "texel" ? quadReads(layout, work) : null;
  if (reads) return recordTexel(work, layout, reads);
  const { kernel, constants } = scalarKernel(work, layout, false);
  // Tensors beyond one storage binding are walked a window at a time; broadcast inputs (each within
  // one binding here) are bound whole.
  for (const [start, length] of bindingWindows(outputs[0].size)) {
    dispatch(
      kernel,
      paramValues(layout, constants, length, start),
      [
        ...inputs.map((t, k) => (layout.strides[k] ? t.range() : t.window(start, length))),
        ...outputs.map((t) => t.window(start, length)),
      ],
      grid(length, 256),
    );
  }
}

/**
 * Output windows [first, end) in which every broadcast input's elements fit one binding: pieces of at
 * most a binding's span, split further at the blocks of the first dimension whose coordinate varies
 * inside a piece until each input's reach fits.
 */
function shiftedWindows(layout: Layout, count: number): [number, number][] {
  const span = windowElements();
  const { dims } = layout;
  const blocks = contiguousStrides(dims);
  const out: [number, number][] = [];
  const visit = (first: number, end: number) => {
    const a = coordinatesOf(first, dims, blocks), b = coordinatesOf(end - 1, dims, blocks);
    const r = a.findIndex((c, q) => c !== b[q]);
    const fits = r < 0 || layout.strides.every((s) => {
      const { lo, hi } = s ? reachOf(s, dims, a, b, r) : { lo: 0, hi: 0 };
      return hi - lo <= span;
    });
    if (fits) return void out.push([first, end]);
    for (let at = first; at < end;) {
      const next = Math.min(end, (Math.floor(at / blocks[r]) + 1) * blocks[r]);
      visit(at, next);
      at = next;
    }
  };
  for (let first = 0; first < count; first += span) visit(first, Math.min(count, first + span));
  return out;
}

/**
 * The elements [lo, hi) an input with collapsed `strides` reads over outputs from coordinates `a` to
 * `b`, which agree on the dimensions before `r` (all of them when r < 0).
 */
function reachOf(strides: readonly number[], dims: readonly number[], a: number[], b: number[], r: number) {
  const at = (c: number[], upTo: number) => c.slice(0, upTo).reduce((sum, x, q) => sum + x * strides[q], 0);
  if (r < 0) return { lo: at(a, dims.length), hi: at(a, dims.length) + 1 };
  const trailing = dims.slice(r + 1).reduce((sum, d, q) => sum + (d - 1) * strides[r + 1 + q], 0);
  return { lo: at(a, r) + a[r] * strides[r], hi: at(a, r) + b[r] * strides[r] + trailing + 1 };
}

/**
 * The scalar kernel for a broadcast input larger than one binding: every input and output is bound
 * as a window of its own (kernels add a u32 shift to their indices), over {@linkcode shiftedWindows}.
 */
function recordShifted(work: ElementwiseWork, layout: Layout): void {
  const { inputs, outputs } = work;
  const { kernel, constants } = scalarKernel(work, layout, true);
  const { dims } = layout;
  const blocks = contiguousStrides(dims);
  for (const [first, end] of shiftedWindows(layout, outputs[0].size)) {
    const values = paramValues(layout, constants, end - first, first) as Record<string, unknown>;
    const a = coordinatesOf(first, dims, blocks), b = coordinatesOf(end - 1, dims, blocks);
    const r = a.findIndex((c, q) => c !== b[q]);
    const ranges = inputs.map((t, k) => {
      const s = layout.strides[k];
      const { lo, hi } = s ? reachOf(s, dims, a, b, r) : { lo: first, hi: end };
      const w = bindWindow(t, lo, hi);
      values[`shift${k}`] = s ? -w.first >>> 0 : first - w.first;
      return w.range;
    });
    const outs = outputs.map((t, j) => {
      const w = bindWindow(t, first, end);
      values[`out_shift${j}`] = first - w.first;
      return w.range;
    });
    dispatch(kernel, values as ParamValues<ParamSpecs>, [...ranges, ...outs], grid(end - first, 256));
  }
}

const TEXEL_THREADS = 64;

/** The texel kernel: a vec4 of every output per invocation, the expressions unrolled per component. */
function recordTexel(work: ElementwiseWork, layout: Layout, reads: ("quad" | "row" | "splat")[]): void {
  const { inputs, outputs, exprs } = work;
  const fetch = reads.map((read, k) =>
    read === "quad"
      ? `let q${k} = texel(in${k}, i);`
      : read === "row"
      ? `let q${k} = texel(in${k}, o${k} / 4u);`
      : `let q${k} = vec4<f32>(texel(in${k}, o${k} / 4u)[o${k} % 4u]);`
  );
  const lanes = [0, 1, 2, 3].map((e) => new Emitter((k) => `q${k}[${e}]`, `v${e}_`));
  const results = lanes.map((emitter) => exprs.map((e) => emitter.emit(e)));
  const kernel = kernelFor(`${work.name}/${work.key}/${layout.key}/texel/${reads.join(",")}`, () => ({
    name: `${work.name}_texel`,
    params: paramSpecs(layout, lanes[0].constants.length),
    bindings: [
      ...inputs.map((_, k) => ({ name: `in${k}`, type: "texture" as const })),
      ...work.outputNames.map((name) => ({ name, type: "vec4<f32>" as const, write: true })),
    ],
    code: `${WGSL_MATH}
${TEXEL_WGSL}
@compute @workgroup_size(${TEXEL_THREADS})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(TEXEL_THREADS)};
  if (i >= params.count / 4u) { return; }
  ${offsetCode(layout, "params.base + 4u * i")}
  ${fetch.join("\n  ")}
  ${lanes.flatMap((emitter) => emitter.lines).join("\n  ")}
  ${
      work.outputNames.map((name, j) => `${name}[i] = vec4<f32>(${results.map((r) => r[j]).join(", ")});`)
        .join("\n  ")
    }
}`,
  }));
  for (const [start, length] of bindingWindows(outputs[0].size)) {
    const sources = inputs.map((t, k) =>
      texelRange(layout.strides[k] ? t.range() : t.window(start, length))!
    );
    withTexels(sources, (views) =>
      dispatch(
        kernel,
        paramValues(layout, lanes[0].constants, length, start),
        [...views, ...outputs.map((t) => t.window(start, length))],
        grid(length / 4, TEXEL_THREADS),
      ));
  }
}

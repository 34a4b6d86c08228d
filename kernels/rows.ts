/**
 * Row kernels shared by softmax, log-softmax and LayerNorm: how rows are spread over workgroups
 * per adapter, vector loads, and the fixed-order workgroup reductions; and for rows too wide for a
 * binding-sized run of them, the pieces those ops are composed of instead.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import {
  grid,
  type Kernel,
  type ParamSpecs,
  type ParamValues,
  walkers,
  walkLimit,
  windowElements,
} from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";
import { TEXEL_WGSL, texelRange, texelsPayOff, withTexels } from "../engine/texels.ts";

/** How a row kernel spreads rows over workgroups; part of the kernel variant key. */
export interface RowLayout {
  /** Invocations sharing one row (a power of two). */
  readonly threads: number;
  /** Rows handled side by side by one workgroup. */
  readonly rowsPerGroup: number;
  /** Vectors of a row each invocation keeps in registers; the rest of a longer row is re-read. */
  readonly perThread: number;
  /** Floats per load: 4 (vec4) when the row length is a multiple of 4, else 1. */
  readonly width: 1 | 4;
}

let forcedLayout: RowLayout | null = null;

/**
 * Forces one layout on every row kernel (its width applies to rows whose length is a multiple of
 * it; other rows use width 1), or restores the per-adapter choice with null. Tests use it to run
 * GPU-sized trees and register tails on a CPU adapter, benchmarks to compare layouts.
 */
export function forceRowLayout(layout: RowLayout | null): void {
  if (layout) {
    const { threads, rowsPerGroup, perThread, width } = layout;
    const counts = [threads, rowsPerGroup, perThread];
    if (
      !counts.every((n) => Number.isInteger(n) && n >= 1) || (threads & (threads - 1)) !== 0 ||
      ![1, 4].includes(width)
    ) {
      throw new Error(`forceRowLayout: invalid layout ${JSON.stringify(layout)}`);
    }
  }
  forcedLayout = layout;
}

const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * The variant of the row kernels ("rows" in `MM_KERNELS`): on software adapters texel for inputs of
 * `floats` worth a texture copy (engine/texels.ts) and serial below, tree on GPUs. Kernels without a
 * texel form (`texel` false) run the serial one in its place.
 */
export function rowVariant(texel: boolean = false, floats: number = Infinity): KernelVariant<"rows"> {
  const variant = kernelVariant(
    "rows",
    () => gpu().profile.isSoftware ? (texelsPayOff(floats) ? "texel" : "serial") : "tree",
  );
  return variant === "texel" && !texel ? "serial" : variant;
}

/**
 * Whether a row kernel with a texel form reads its inputs (`ranges`, every window of them) through
 * textures: the texel variant, rows of a multiple of 4 floats, every range on whole texels.
 */
export function texelRows(layout: RowLayout, ranges: readonly BufferRange[]): boolean {
  const floats = ranges.reduce((sum, r) => sum + r.size / 4, 0);
  return rowVariant(true, floats) === "texel" && layout.width === 4 &&
    ranges.every((r) => texelRange(r) !== null);
}

/** A read-only binding of a row kernel: a texture in the texel form, else a storage binding of `type`. */
export function rowInput(
  name: string,
  type: "f32" | "vec4<f32>",
  texel: boolean,
): { name: string; type: "texture" } | { name: string; type: "f32" | "vec4<f32>" } {
  return texel ? { name, type: "texture" as const } : { name, type };
}

/** Records a row kernel over its `inputs` (through textures in the texel form) and the `rest` of its bindings. */
export function dispatchRows<P extends ParamSpecs>(
  kernel: Kernel<P>,
  params: NoInfer<ParamValues<P>>,
  inputs: readonly BufferRange[],
  rest: readonly BufferRange[],
  groups: [number, number],
  texel: boolean,
): void {
  if (!texel) return dispatch(kernel, params, [...inputs, ...rest], groups);
  withTexels(
    inputs.map((r) => texelRange(r)!),
    (views) => dispatch(kernel, params, [...views, ...rest], groups),
  );
}

/**
 * WGSL of `load_<name>(i)`, the i-th vector of each named input: a texel of its operand texture
 * (the texel variant, rows of a multiple of 4 floats), else an element of its storage binding.
 */
export function rowLoads(names: readonly string[], texel: boolean): string {
  const loads = names.map((name) =>
    `fn load_${name}(i: u32) -> V { return ${texel ? `texel(${name}, i)` : `${name}[i]`}; }`
  );
  return (texel ? [TEXEL_WGSL, ...loads] : loads).join("\n");
}

/**
 * The layout for rows of `cols` floats. The tree variant (GPUs) gives about 8 floats to an
 * invocation, up to 1024 invocations to a row and at least 256 to a workgroup. On software adapters
 * every barrier costs a pass over the workgroup and workgroup memory is plain memory, so the serial
 * variant has one invocation walk a whole row (no barrier at all) and a workgroup take 16 rows,
 * leaving workgroups for every core; a row longer than one invocation may walk
 * ({@linkcode walkLimit} vectors) is shared by as few invocations as take it, combined by the tree.
 */
export function rowLayout(cols: number): RowLayout {
  const width = vectorWidth(cols);
  if (forcedLayout) {
    return { ...forcedLayout, width: cols % forcedLayout.width === 0 ? forcedLayout.width : 1 };
  }
  const vectors = cols / width;
  const { maxInvocationsPerWorkgroup } = gpu().profile;
  if (rowVariant() !== "tree") {
    const threads = walkers(vectors);
    if (!walkableRow(cols)) throw new Error(`rowLayout: rows of ${cols} floats go in parts (walkableRow)`);
    const rowsPerGroup = Math.max(1, Math.floor(16 / threads));
    return { threads, rowsPerGroup, perThread: Math.min(8, nextPow2(vectors)), width };
  }
  const invocations = Math.min(1024, maxInvocationsPerWorkgroup);
  const threads = Math.min(invocations, nextPow2(Math.ceil(vectors / (8 / width))));
  const perThread = Math.min(16 / width, nextPow2(Math.ceil(vectors / threads)));
  return { threads, rowsPerGroup: Math.max(1, Math.min(256, invocations) / threads), perThread, width };
}

/**
 * Whether the row kernels take rows of `cols` floats on this adapter: on a software adapter, a row must
 * be walked by one workgroup's invocations, each at most {@linkcode walkLimit} vectors; longer rows go in
 * parts ({@linkcode wideRowParts}).
 */
export function walkableRow(cols: number): boolean {
  return rowVariant() === "tree" ||
    walkers(cols / vectorWidth(cols)) <= gpu().profile.maxInvocationsPerWorkgroup;
}

/** A short key of a layout for kernel variants. */
export function layoutKey(layout: RowLayout): string {
  return `${layout.threads}x${layout.rowsPerGroup}x${layout.perThread}x${layout.width}`;
}

/** Floats per load for rows or columns of `cols` floats: 4 (vec4) when `cols` is a multiple of 4. */
export function vectorWidth(cols: number): 1 | 4 {
  return cols % 4 === 0 ? 4 : 1;
}

/** The element type of bindings read `width` floats at a time. */
export function vectorType(width: 1 | 4): "f32" | "vec4<f32>" {
  return width === 4 ? "vec4<f32>" : "f32";
}

/** WGSL of `V`, the vector type of `width` floats, with `hsum`, `hmax` and `first` over its components. */
export function vectorHelpers(width: 1 | 4): string {
  return width === 4
    ? `alias V = vec4<f32>;
fn hsum(v: V) -> f32 { return (v.x + v.y) + (v.z + v.w); }
fn hmax(v: V) -> f32 { return max(max(v.x, v.y), max(v.z, v.w)); }
fn first(v: V) -> f32 { return v.x; }`
    : `alias V = f32;
fn hsum(v: V) -> f32 { return v; }
fn hmax(v: V) -> f32 { return v; }
fn first(v: V) -> f32 { return v; }`;
}

/**
 * WGSL of a row kernel: {@linkcode vectorHelpers}, `declarations`, then the entry point, whose
 * preamble defines `lane` (position in the row), `slot` (row within the workgroup), `row`, `valid`,
 * `vectors` (the row's vector count, 0 for the padding rows of the last workgroup, which still take
 * part in the barriers) and `base` (index of the row's first vector) before `body`. Needs
 * params.rows and params.cols.
 */
export function rowKernel(layout: RowLayout, declarations: string, body: string): string {
  const { threads, rowsPerGroup, width } = layout;
  return `${vectorHelpers(width)}
${declarations}
@compute @workgroup_size(${threads * rowsPerGroup})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ${threads}u;
  let slot = lid / ${threads}u;
  let row = (wid.x + wid.y * groups.x) * ${rowsPerGroup}u + slot;
  let valid = row < params.rows;
  let vectors = select(0u, params.cols / ${width}u, valid);
  let base = row * (params.cols / ${width}u);
  ${body}
}`;
}

/** Workgroup counts of a row kernel over `rows` rows. */
export function rowGrid(rows: number, layout: RowLayout): [number, number] {
  return grid(rows, layout.rowsPerGroup);
}

/**
 * WGSL of `fn name(value, lane, slot)`, which combines `value` over the invocations of a row with a
 * fixed tree in workgroup memory (so results are bit-identical run to run) and returns the result to
 * all of them; no barrier when one invocation holds the row. Each reduction gets its own array, so
 * consecutive reductions need no barrier between them. Call it from uniform control flow.
 */
export function rowReduce(
  name: string,
  type: "f32" | "vec2<f32>",
  combine: (a: string, b: string) => string,
  layout: RowLayout,
): string {
  const { threads, rowsPerGroup } = layout;
  if (threads === 1) return `fn ${name}(value: ${type}, lane: u32, slot: u32) -> ${type} { return value; }`;
  const tree = `${name}_tree`;
  return `
var<workgroup> ${tree}: array<${type}, ${threads * rowsPerGroup}>;
fn ${name}(value: ${type}, lane: u32, slot: u32) -> ${type} {
  let i = slot * ${threads}u + lane;
  ${tree}[i] = value;
  workgroupBarrier();
  for (var stride = ${threads / 2}u; stride > 0u; stride >>= 1u) {
    if (lane < stride) { ${tree}[i] = ${combine(`${tree}[i]`, `${tree}[i + stride]`)}; }
    workgroupBarrier();
  }
  return ${tree}[i - lane];
}`;
}

/**
 * WGSL loops over the vectors of a row held by this invocation: `cached` runs for the k-th register
 * vector (index `j`; `k` has a constant bound so the array stays in registers), `tail` for the
 * vectors past the registers, re-read from memory.
 */
export function rowLoops(layout: RowLayout, cached: string, tail: string): string {
  const { threads, perThread } = layout;
  return `
  for (var k = 0u; k < ${perThread}u; k++) {
    let j = lane + k * ${threads}u;
    if (j < vectors) { ${cached} }
  }
  for (var j = lane + ${perThread * threads}u; j < vectors; j += ${threads}u) { ${tail} }`;
}

/**
 * [start, length] parts of a row of `length` elements that row kernels can each take: whole parts
 * of nearly a binding (or of what a workgroup may walk, {@linkcode walkableRow}), a multiple of 64
 * elements (rows of them start aligned), then the rest as a multiple of 64 and a tail below 64 elements.
 */
export function wideRowParts(length: number): [number, number][] {
  const walkable = gpu().profile.maxInvocationsPerWorkgroup * walkLimit() * 4; // in vec4s: parts are whole ones
  const width = Math.floor(Math.min(windowElements(), walkable) / 64) * 64;
  const parts: [number, number][] = [];
  let start = 0;
  for (; length - start >= width; start += width) parts.push([start, width]);
  const aligned = Math.floor((length - start) / 64) * 64;
  if (aligned > 0) parts.push([start, aligned]);
  if (length - start - aligned > 0) parts.push([start + aligned, length - start - aligned]);
  return parts;
}

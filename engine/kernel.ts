/**
 * Kernel definitions: a WGSL entry point with its uniform parameters and storage bindings declared
 * once, so the engine can generate the binding header, cache the pipeline by source and pack the
 * parameters of each dispatch.
 *
 * @module
 */
import { debugLevel, debugLine } from "./debug.ts";
import { gpu } from "./device.ts";
import type { BufferRange } from "./recorder.ts";
import type { Tensor } from "./tensor.ts";

/** Scalar types a kernel parameter may have. */
export type ParamType = "u32" | "i32" | "f32";

/**
 * A fixed-size array parameter of `length` scalars. WGSL's uniform layout gives array elements a
 * 16-byte stride, so it is packed four to a vec4 and read through a generated accessor named like
 * the parameter: `segment: { type: "u32", length: 9 }` is read in WGSL as `segment(i)`.
 */
export interface ArrayParam {
  /** Element type. */
  readonly type: ParamType;
  /** Number of elements a dispatch gives, at least 1. */
  readonly length: number;
}

/** A declared uniform parameter: a scalar type or a fixed-size array. */
export type ParamSpec = ParamType | ArrayParam;

/** A kernel's uniform parameters by name, in uniform order. */
export type ParamSpecs = { readonly [name: string]: ParamSpec };

/** The value a dispatch gives for a parameter declared as `S`: a number for a scalar, numbers for an array. */
export type ParamValue<S extends ParamSpec> = S extends ParamType ? number : readonly number[];

/** The values a dispatch gives for declared parameters `P`, by name. */
export type ParamValues<P extends ParamSpecs> = { readonly [K in keyof P]: ParamValue<P[K]> };

/**
 * Element types a storage binding may have, or "texture": a read-only `texture_2d<f32>` of rgba32float
 * texels, bound with a texture view (software adapters read operands that way, see engine/texels.ts).
 */
export type ElementType = "f32" | "u32" | "i32" | "vec4<f32>" | "atomic<u32>" | "texture";

/** One storage or texture binding of a kernel. */
export interface BindingSpec {
  /** The WGSL variable name. */
  readonly name: string;
  /** Element type of the runtime-sized array (f32 when omitted), or "texture". */
  readonly type?: ElementType;
  /** True if the kernel writes the binding. */
  readonly write?: boolean;
}

/** Everything needed to build a kernel; `P` its uniform parameters. */
export interface KernelSpec<P extends ParamSpecs = ParamSpecs> {
  /** Name shown by `MM_DEBUG` and in errors, ending in the variant where a family has several ("matmul_tiled64"). */
  readonly name: string;
  /** Uniform parameters, in order; a scalar is read in WGSL as `params.<name>`, an array as `<name>(i)`. */
  readonly params: P;
  /** Storage bindings, in order; binding 0 is the uniform block, these follow from 1. */
  readonly bindings: readonly BindingSpec[];
  /** WGSL after the generated header: helper functions and one `@compute fn main`. */
  readonly code: string;
}

/** Where one uniform parameter lies in a dispatch's parameter block. */
export interface UniformField {
  /** The parameter's name. */
  readonly name: string;
  /** Its scalar type (of every element, for an array). */
  readonly type: ParamType;
  /** Offset in 4-byte words from the start of the block. */
  readonly offset: number;
  /** Number of elements of an array parameter; undefined for a scalar. */
  readonly length?: number;
}

/** A compiled kernel: its pipeline, layout and parameter packing; `P` its uniform parameters. */
export interface Kernel<P extends ParamSpecs = ParamSpecs> {
  /** Name shown by `MM_DEBUG`. */
  readonly name: string;
  /** Full WGSL source, header included. */
  readonly source: string;
  /** The declared uniform parameters. */
  readonly params: P;
  /** The parameters' places in the uniform block, in declaration order. */
  readonly uniforms: readonly UniformField[];
  /** Storage binding declarations. */
  readonly bindings: readonly BindingSpec[];
  /** The compute pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Layout of group 0. */
  readonly layout: GPUBindGroupLayout;
  /** Small integer identifying the pipeline in bind-group cache keys. */
  readonly id: number;
}

/** Bytes reserved for one dispatch's uniform parameters (64 scalars). */
export const PARAM_BLOCK_BYTES = 256;

/** Compiled kernels by WGSL source: one GPU pipeline per distinct source. */
const pipelines = new Map<string, Kernel>();
/** Kernels by name and source: specs that differ only in name share a pipeline but keep their names. */
const named = new Map<string, Kernel>();

/**
 * The uniform block's layout under WGSL's rules: scalars take one 4-byte word; an array is packed
 * into vec4s (the 16-byte stride uniform arrays require) and starts on a 16-byte boundary.
 */
function uniformFields(spec: KernelSpec): UniformField[] {
  let offset = 0;
  return Object.entries(spec.params).map(([name, param]) => {
    if (typeof param === "string") return { name, type: param, offset: offset++ };
    if (!(Number.isInteger(param.length) && param.length >= 1)) {
      throw new RangeError(`kernel ${spec.name}: array parameter "${name}" has length ${param.length}`);
    }
    const start = Math.ceil(offset / 4) * 4;
    offset = start + Math.ceil(param.length / 4) * 4;
    return { name, type: param.type, offset: start, length: param.length };
  });
}

/** WGSL of the uniform struct, its binding, and an accessor `<name>(i)` per array parameter. */
function uniformSource(fields: readonly UniformField[]): string {
  const vector = { u32: "vec4u", i32: "vec4i", f32: "vec4f" };
  const members = fields.map((f) =>
    f.length === undefined
      ? `  ${f.name}: ${f.type},`
      : `  ${f.name}: array<${vector[f.type]}, ${Math.ceil(f.length / 4)}>,`
  );
  const accessors = fields.filter((f) => f.length !== undefined).map((f) =>
    `fn ${f.name}(i: u32) -> ${f.type} {\n  return params.${f.name}[i / 4u][i % 4u];\n}\n`
  );
  return `struct Params {\n${members.length > 0 ? members.join("\n") : "  unused: u32,"}\n}\n` +
    "@group(0) @binding(0) var<uniform> params: Params;\n" + accessors.join("");
}

/** Builds the WGSL source of a kernel: uniform struct and accessors, binding declarations, then the spec's code. */
function kernelSource(spec: KernelSpec): string {
  const storage = spec.bindings.map((b, i) =>
    b.type === "texture"
      ? `@group(0) @binding(${i + 1}) var ${b.name}: texture_2d<f32>;`
      : `@group(0) @binding(${i + 1}) var<storage, ${b.write ? "read_write" : "read"}> ${b.name}: array<${
        b.type ?? "f32"
      }>;`
  ).join("\n");
  return `${uniformSource(uniformFields(spec))}${storage}\n${spec.code}`;
}

/**
 * Returns the compiled kernel for a spec, compiling it on first use. Kernels are cached by name and
 * full source; pipelines by source alone, so two specs that generate the same WGSL (`scale` and
 * `mul` by a number) share one pipeline yet each dispatches, and is listed by `MM_DEBUG`, under its
 * own name. `MM_DEBUG=3` prints each new pipeline's WGSL and the time its creation took.
 */
function compileKernel<P extends ParamSpecs>(spec: KernelSpec<P>): Kernel<P> {
  const source = kernelSource(spec);
  const key = `${spec.name}\n${source}`;
  let kernel = named.get(key) as Kernel<P> | undefined;
  if (!kernel) {
    const compiled = pipelines.get(source) ?? createPipeline(spec, source);
    kernel = { ...compiled, name: spec.name, params: spec.params };
    named.set(key, kernel);
  }
  return kernel;
}

/** Compiles the pipeline of a spec whose source is new. */
function createPipeline(spec: KernelSpec, source: string): Kernel {
  const uniforms = uniformFields(spec);
  const words = uniforms.reduce((end, f) => Math.max(end, f.offset + (f.length ?? 1)), 0);
  if (words * 4 > PARAM_BLOCK_BYTES) {
    throw new RangeError(
      `kernel ${spec.name}: uniform parameters take ${words * 4} bytes, more than ${PARAM_BLOCK_BYTES}`,
    );
  }
  const { device, profile } = gpu();
  const storageBindings = spec.bindings.filter((b) => b.type !== "texture").length;
  if (storageBindings > profile.maxStorageBuffersPerStage) {
    throw new RangeError(
      `kernel ${spec.name}: ${storageBindings} storage bindings exceed the device's ` +
        `maxStorageBuffersPerShaderStage of ${profile.maxStorageBuffersPerStage}`,
    );
  }
  const layout = device.createBindGroupLayout({
    label: spec.name,
    entries: [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } },
      ...spec.bindings.map((b, i) => ({
        binding: i + 1,
        visibility: GPUShaderStage.COMPUTE,
        ...(b.type === "texture"
          ? { texture: { sampleType: "unfilterable-float" as const } }
          : { buffer: { type: (b.write ? "storage" : "read-only-storage") as GPUBufferBindingType } }),
      })),
    ],
  });
  const started = performance.now();
  const module = device.createShaderModule({ label: spec.name, code: source });
  const pipeline = device.createComputePipeline({
    label: spec.name,
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: "main" },
  });
  if (debugLevel >= 3) {
    const ms = performance.now() - started;
    debugLine(`pipeline ${pipelines.size + 1} ${spec.name}, created in ${ms.toFixed(1)} ms:\n${source}`);
  }
  const kernel: Kernel = {
    name: spec.name,
    source,
    params: spec.params,
    uniforms,
    bindings: spec.bindings,
    pipeline,
    layout,
    id: pipelines.size + 1,
  };
  pipelines.set(source, kernel);
  return kernel;
}

/** Number of distinct pipelines compiled so far. */
export function pipelineCount(): number {
  return pipelines.size;
}

const byVariant = new Map<string, Kernel<ParamSpecs>>();

/**
 * Returns the kernel for a variant key (for example "layernorm_forward/256"), building its spec
 * only the first time, so hot paths do not regenerate WGSL on every dispatch. The key must
 * determine the whole spec, its name included: two specs under one key get the first one's kernel.
 */
export function kernelFor<P extends ParamSpecs>(variant: string, build: () => KernelSpec<P>): Kernel<P> {
  let kernel = byVariant.get(variant) as Kernel<P> | undefined;
  if (!kernel) {
    kernel = compileKernel(build());
    byVariant.set(variant, kernel);
  }
  return kernel;
}

/**
 * Workgroup counts covering `count` invocations with `perWorkgroup` each, spread over x and y so
 * that no dimension exceeds the device limit; kernels recover the index with {@linkcode linearIndex}.
 */
export function grid(count: number, perWorkgroup: number): [number, number] {
  const groups = Math.ceil(count / perWorkgroup);
  const limit = gpu().profile.maxWorkgroupsPerDimension;
  if (groups <= limit) return [groups, 1];
  const y = Math.ceil(groups / limit);
  return [Math.ceil(groups / y), y];
}

/**
 * WGSL expression for the flat invocation index of a {@linkcode grid} dispatch; needs `gid`
 * (global_invocation_id) and `groups` (num_workgroups) in scope.
 */
export function linearIndex(perWorkgroup: number): string {
  return `gid.x + gid.y * groups.x * ${perWorkgroup}u`;
}

/**
 * Row runs [first, count] such that, for each per-row byte size in `rowBytes` (one per tensor an op
 * walks row by row), the rows of a run fit one storage binding and start on the binding offset
 * alignment; one run when everything fits. Ops bind one run per dispatch (`Tensor.window`), so
 * tensors beyond the binding limit work.
 */
export function rowWindows(op: string, rows: number, rowBytes: readonly number[]): [number, number][] {
  const { maxStorageBindingBytes: limit } = gpu().profile;
  const fitting = Math.min(...rowBytes.map((b) => Math.floor(limit / b)));
  if (rows <= fitting) return [[0, rows]];
  const step = rowStep(rowBytes);
  const perChunk = Math.floor(fitting / step) * step;
  if (perChunk === 0) {
    throw new RangeError(
      `${op}: ${step} rows of ${Math.max(...rowBytes)} bytes exceed maxStorageBindingBytes (${limit})`,
    );
  }
  const chunks: [number, number][] = [];
  for (let first = 0; first < rows; first += perChunk) chunks.push([first, Math.min(perChunk, rows - first)]);
  return chunks;
}

/** Rows a run of {@linkcode rowWindows} must be a multiple of, so that every run starts on the binding offset alignment. */
function rowStep(rowBytes: readonly number[]): number {
  const align = gpu().profile.storageOffsetAlignment;
  return rowBytes.reduce((s, b) => lcm(s, align / gcd(align, b)), 1);
}

/**
 * Whether {@linkcode rowWindows} can walk `rows` rows of these sizes: false when the rows are too
 * wide for one aligned run of them to fit a binding (ops then take a path built of windowed ops).
 */
export function rowWindowsFit(rows: number, rowBytes: readonly number[]): boolean {
  const limit = gpu().profile.maxStorageBindingBytes;
  const fitting = Math.min(...rowBytes.map((b) => Math.floor(limit / b)));
  return rows <= fitting || fitting >= rowStep(rowBytes);
}

/**
 * The most loop steps one invocation takes in one walk over a row on this adapter (Infinity on GPUs).
 * Mesa's llvmpipe ends every loop of an invocation once its loops have run 65535 iterations in all
 * (gallivm's loop limiter), without an error, so a serial walk of a long row would leave the rest of it
 * out: on software adapters, kernels that give an invocation a whole row or column split it (see
 * {@linkcode walkers}) so that each walk takes at most this many steps, and the few walks a kernel
 * makes stay well under the limit: the row kernels, cross-entropy and its loss reduction, sums, a
 * strided softmax, matmul's inner steps, LayerNorm's parameter-gradient sums, the embedding gradient's
 * runs of a repeated id; attention refuses what its kernels cannot walk. No shape a model of this project trains comes near it.
 */
export function walkLimit(): number {
  return gpu().profile.isSoftware ? 8192 : Infinity;
}

/**
 * How many invocations (a power of two) share a walk of `steps` loop steps so that none takes more than
 * {@linkcode walkLimit}; 1 where one invocation may take them all.
 */
export function walkers(steps: number): number {
  const limit = walkLimit();
  return steps <= limit ? 1 : 2 ** Math.ceil(Math.log2(steps / limit));
}

/** Elements a {@linkcode bindWindow} may span and still fit one storage binding, wherever it starts. */
export function windowElements(): number {
  const { maxStorageBindingBytes: limit, storageOffsetAlignment: align } = gpu().profile;
  return Math.floor((limit - align - 16) / 4);
}

/** A binding of part of a tensor: its byte range, and the tensor element at which the range starts. */
export interface TensorWindow {
  /** What to bind. */
  range: BufferRange;
  /** The tensor's element index at the range's first byte (below 0 for a packed view's misalignment). */
  first: number;
}

/**
 * Binds elements [lo, hi) of a tensor (at least), from the aligned offset at or below `lo`; packed
 * views, whose own offset is not aligned, are bound the same way. Kernels index the binding with
 * (tensor index - first). At most {@linkcode windowElements} elements fit one binding.
 */
export function bindWindow(tensor: Tensor, lo: number, hi: number): TensorWindow {
  const { buffer, offset } = tensor.range();
  const align = gpu().profile.storageOffsetAlignment;
  const start = Math.floor((offset + lo * 4) / align) * align;
  const size = Math.min(buffer.size - start, Math.max(16, Math.ceil((offset + hi * 4 - start) / 16) * 16));
  return { range: { buffer, offset: start, size }, first: (start - offset) / 4 };
}

/** Element windows [start, length] of `count` float32 elements: {@linkcode rowWindows} of 4-byte rows. */
export function bindingWindows(count: number): [number, number][] {
  return rowWindows("elementwise", count, [4]);
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

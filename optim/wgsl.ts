/**
 * WGSL pieces shared by the optimizer's kernels: a non-finite test, per-model uniform arrays (uniform
 * struct fields cannot be indexed at run time, so an array is a generated switch), the arena layout
 * they all take, and the workgroup width their reductions are written for.
 *
 * @module
 */
import { MAX_MODELS } from "./options.ts";

/** Invocations of a reduction workgroup; the WGSL's tree strides are generated from it. */
export const LANES = 256;

/** WGSL `finite(x)`: true unless x is NaN or infinite. */
export const FINITE = `
fn finite(x: f32) -> bool {
  // Bit test rather than comparisons, which compilers may fold under fast-math assumptions.
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
`;

/** Uniform declarations `${prefix}0 .. ${prefix}${count - 1}` of one type. */
export function indexed(prefix: string, count: number, type: "u32" | "f32"): Record<string, "u32" | "f32"> {
  const out: Record<string, "u32" | "f32"> = {};
  for (let i = 0; i < count; i++) out[`${prefix}${i}`] = type;
  return out;
}

/** WGSL returning uniform `${prefix}${i}` for a runtime index i (uniform struct fields cannot be indexed). */
export function uniformArray(name: string, prefix: string, count: number, type: "u32" | "f32"): string {
  const cases = Array.from({ length: count }, (_, i) => `    case ${i}u: { return params.${prefix}${i}; }`)
    .join("\n");
  return `fn ${name}(i: u32) -> ${type} {\n  switch i {\n${cases}\n    default: { return params.${prefix}${
    count - 1
  }; }\n  }\n}\n`;
}

/** WGSL `segment(m)` (where model m starts in the arena) and `model_of(element)`. */
export const SEGMENTS = `${uniformArray("segment", "seg", MAX_MODELS + 1, "u32")}
fn model_of(element: u32) -> u32 {
  var m = 0u;
  for (; m + 1u < params.models; m++) {
    if (element < segment(m + 1u)) { break; }
  }
  return m;
}
`;

/** Layout facts every update needs, passed as uniforms. */
export interface ArenaLayout {
  /** Number of models. */
  models: number;
  /** Element offset where each model starts, plus the end (models + 1 entries). */
  segments: number[];
  /** First tile of each model, plus the total (models + 1 entries). */
  tiles: number[];
}

/** `values` extended to `length` by repeating the last one (fixed-size uniform arrays). */
export function padded(values: readonly number[], length: number): number[] {
  const out = [...values];
  while (out.length < length) out.push(values[values.length - 1] ?? 0);
  return out;
}

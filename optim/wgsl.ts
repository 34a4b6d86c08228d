/**
 * WGSL pieces shared by the optimizer's kernels: a non-finite test, the per-model arena segments
 * and the model of an element, the arena layout they all take, and the workgroup width their
 * reductions are written for.
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

/** The uniform every update kernel declares: where each model starts in the arena, plus the end. */
export const SEGMENT_PARAM: { readonly segment: { readonly type: "u32"; readonly length: number } } = {
  segment: { type: "u32", length: MAX_MODELS + 1 },
};

/** WGSL `model_of(element)`: the model owning an arena element (needs {@linkcode SEGMENT_PARAM}). */
export const MODEL_OF = `
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

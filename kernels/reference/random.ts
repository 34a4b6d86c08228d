/**
 * The counter-based generator of `WGSL_RANDOM` (kernels/wgsl.ts) in TypeScript, bit for bit, so
 * references can rebuild the masks that kernels draw.
 *
 * @module
 */

function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** The float in [0, 1) that `random_uniform(seed, stream, index)` returns in WGSL. */
export function randomUniform(seed: number, stream: number, index: number): number {
  const h = mix32((index ^ mix32((stream ^ mix32(seed)) >>> 0)) >>> 0);
  return (h >>> 8) / 16777216;
}

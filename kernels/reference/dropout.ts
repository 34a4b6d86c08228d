/**
 * Float64 reference of dropout: the mask is rebuilt bit for bit from the kernel's seed with
 * {@linkcode randomUniform}, compared against p as the kernel sees it (rounded to float32).
 *
 * @module
 */
import { randomUniform } from "./random.ts";

/** The keep mask (1 kept, 0 dropped) of `size` elements that the dropout kernel draws for `seed`. */
export function dropoutMask(size: number, p: number, seed: number): Uint8Array {
  const threshold = Math.fround(p);
  const mask = new Uint8Array(size);
  for (let i = 0; i < size; i++) mask[i] = randomUniform(seed, 0, i) >= threshold ? 1 : 0;
  return mask;
}

/** y = x * mask / (1 - p) (a dropped NaN stays NaN). */
export function dropoutForward(x: ArrayLike<number>, p: number, seed: number): Float64Array {
  const mask = dropoutMask(x.length, p, seed);
  return Float64Array.from(x, (v, i) => v * (mask[i] ? 1 / (1 - p) : 0));
}

/** dx = mask * g / (1 - p): the same mask, regenerated from the seed. */
export function dropoutBackward(g: ArrayLike<number>, p: number, seed: number): Float64Array {
  return dropoutForward(g, p, seed);
}

/**
 * Seeded host-side random numbers for initialising parameters reproducibly (GPU-side randomness,
 * for dropout, lives in kernels/dropout.ts).
 *
 * @module
 */

/** A small seeded generator (SplitMix32 mixing); the same seed gives the same sequence everywhere. */
export class Random {
  #state: number;

  /** Starts the sequence of `seed` (any integer). */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform float in [0, 1). */
  uniform(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  }

  /** A standard normal sample (Box-Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** `count` normal samples with the given standard deviation. */
  normals(count: number, std = 1): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.normal() * std;
    return out;
  }

  /** `count` uniform samples in [low, high). */
  uniforms(count: number, low = 0, high = 1): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = low + (high - low) * this.uniform();
    return out;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

let kernelSeedBase = 0x2545f491;
let kernelSeedCounter = 0;

/**
 * Sets the seed of GPU-side randomness (dropout masks): after `manualSeed(s)`, the same sequence of
 * ops draws the same masks.
 */
export function manualSeed(seed: number): void {
  kernelSeedBase = seed >>> 0;
  kernelSeedCounter = 0;
}

/** The seed for the next random kernel launch: a hash of the base seed and a launch counter. */
export function nextKernelSeed(): number {
  let h = (kernelSeedBase ^ Math.imul(++kernelSeedCounter, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** The state of GPU-side randomness, saved in checkpoints so that a resumed run draws the same masks. */
export function kernelSeedState(): { base: number; counter: number } {
  return { base: kernelSeedBase, counter: kernelSeedCounter };
}

/** Restores a state from {@linkcode kernelSeedState}. */
export function setKernelSeedState(state: { base: number; counter: number }): void {
  kernelSeedBase = state.base >>> 0;
  kernelSeedCounter = state.counter;
}

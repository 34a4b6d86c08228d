/**
 * Shared test utilities: GPU set-up, seeded random data, closeness checks that report the worst
 * element, and central finite differences for checking float64 reference gradients.
 *
 * @module
 */
import { type DeviceProfile, gpu, initGpu } from "../engine/device.ts";
import { Random } from "../engine/random.ts";

let watching = false;

/** Opens the WebGPU device (once per process); any WebGPU validation error then fails the test run. */
export async function setup(): Promise<void> {
  const { device } = await initGpu();
  if (watching) return;
  watching = true;
  device.addEventListener("uncapturederror", (event) => {
    throw new Error(`WebGPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
}

/** `count` seeded normal values scaled by `std`, as float32. */
export function randomValues(count: number, seed: number, std = 1): Float32Array {
  return new Random(seed).normals(count, std);
}

/** Widens float32 values to float64 for the references. */
export function f64(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values);
}

/** Tolerances of {@linkcode assertClose}: |a - e| <= atol + rtol * |e| for every element. */
export interface Tolerance {
  /** Absolute tolerance. */
  atol?: number;
  /** Relative tolerance. */
  rtol?: number;
}

/** Throws with the worst element's index and values unless `actual` is close to `expected` everywhere. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tolerance: Tolerance,
  label: string,
): void {
  const { atol = 0, rtol = 0 } = tolerance;
  if (actual.length !== expected.length) {
    throw new Error(`${label}: ${actual.length} values, expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i] - expected[i]);
    const excess = error - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= worstExcess) || Number.isNaN(actual[i]) !== Number.isNaN(expected[i])) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ` +
        `(atol ${atol}, rtol ${rtol}, ${actual.length} elements)`,
    );
  }
}

/** Throws unless two arrays are bit-identical. */
export function assertBitwiseEqual(a: ArrayLike<number>, b: ArrayLike<number>, label: string): void {
  if (a.length !== b.length) throw new Error(`${label}: lengths ${a.length} and ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

/** Largest absolute value, for scaling tolerances. */
export function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

/**
 * Central finite-difference gradient of a scalar function of a float64 array, for checking the
 * analytic backward of a reference (step 1e-6, error about 1e-9 for smooth functions).
 */
export function numericGradient(f: (x: Float64Array) => number, x: Float64Array, step = 1e-6): Float64Array {
  const grad = new Float64Array(x.length);
  const probe = Float64Array.from(x);
  for (let i = 0; i < x.length; i++) {
    probe[i] = x[i] + step;
    const up = f(probe);
    probe[i] = x[i] - step;
    const down = f(probe);
    probe[i] = x[i];
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

/** Sum of elementwise products, the scalar used to turn an output into a loss in gradient checks. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Runs `fn` with device-profile fields replaced, e.g. a small `maxStorageBindingBytes` to exercise
 * chunking. Kernel variants are forced with `withKernels` (engine/variants.ts), not here.
 */
export async function withProfile<T>(
  overrides: Partial<DeviceProfile>,
  fn: () => T | Promise<T>,
): Promise<T> {
  const profile = gpu().profile as { -readonly [K in keyof DeviceProfile]: DeviceProfile[K] };
  const saved = { ...profile };
  Object.assign(profile, overrides);
  try {
    return await fn();
  } finally {
    Object.assign(profile, saved);
  }
}

/** Throws unless `fn` throws an error whose message is exactly `expected`. */
export function expectError(fn: () => unknown, expected: string): void {
  try {
    fn();
  } catch (e) {
    if ((e as Error).message === expected) return;
    throw new Error(`expected "${expected}", got "${(e as Error).message}"`);
  }
  throw new Error(`expected "${expected}", nothing was thrown`);
}

/** The message of what `fn` throws (or rejects with); "nothing was thrown" when it succeeds. */
export async function thrownMessage(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    return (e as Error).message;
  }
  return "nothing was thrown";
}

/** Runs `deno task parity` on a folder in a fresh process: its exit code and first JSON line. */
export async function runParity(folder: string): Promise<{ code: number; line: Record<string, unknown> }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      new URL("../tools/parity.ts", import.meta.url).pathname,
      folder,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const first = new TextDecoder().decode(output.stdout).split("\n")[0];
  return { code: output.code, line: JSON.parse(first) };
}

/**
 * Dropout with counter-based masks: each element's keep decision is `random_uniform(seed, 0, index)
 * >= p`, so backward regenerates the mask from the seed drawn in forward and nothing is stored.
 *
 * @module
 */
import { grid, kernelFor, linearIndex, rowWindows } from "../engine/kernel.ts";
import { nextKernelSeed } from "../engine/random.ts";
import { dispatch } from "../engine/recorder.ts";
import { attachGrad, emptyTensor, type Tensor } from "../engine/tensor.ts";
import { WGSL_RANDOM } from "./wgsl.ts";

/** Options of {@linkcode dropout}. */
export interface DropoutOptions {
  /** Whether the model is training; dropout is the identity when false. Default true. */
  training?: boolean;
}

const WORKGROUP = 256;

/**
 * Zeroes each element with probability p and scales the rest by 1/(1-p); the identity (returns x)
 * when p is 0 or training is false. The mask depends on the seed from `nextKernelSeed()`, so
 * `manualSeed` makes it reproducible.
 */
export function dropout(x: Tensor, p: number, options: DropoutOptions = {}): Tensor {
  if (x.dtype !== "float32") throw new Error(`dropout: ${x.describe()} is not float32`);
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p} for ${x.describe()}`);
  if (p === 0 || options.training === false) return x;
  const seed = nextKernelSeed();
  const out = emptyTensor(x.shape);
  applyMask(x, out, p, seed);
  return attachGrad(out, "dropout", [x], (g) => {
    const grad = emptyTensor(g.shape);
    applyMask(g, grad, p, seed);
    return [grad];
  });
}

/**
 * Writes `out = keep ? input / (1 - p) : 0` with the mask of `seed`, in binding-sized chunks that
 * index the mask globally.
 */
function applyMask(input: Tensor, out: Tensor, p: number, seed: number): void {
  const kernel = kernelFor("dropout", () => ({
    name: "dropout",
    params: { count: "u32", first: "u32", seed: "u32", p: "f32", scale: "f32" },
    bindings: [{ name: "x" }, { name: "y", write: true }],
    code: `${WGSL_RANDOM}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(WORKGROUP)};
  if (i >= params.count) { return; }
  let keep = random_uniform(params.seed, 0u, params.first + i) >= params.p;
  y[i] = select(0.0, x[i] * params.scale, keep);
}`,
  }));
  const scale = 1 / (1 - p);
  for (const [first, count] of rowWindows("dropout", input.size, [4])) {
    dispatch(
      kernel,
      { count, first, seed, p, scale },
      [input.window(first, count), out.window(first, count)],
      grid(count, WORKGROUP),
    );
  }
}

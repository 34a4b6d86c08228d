/**
 * Dropout with counter-based masks: each element's keep decision is `random_uniform(seed, 0, index)
 * >= p`, so backward regenerates the mask from the seed drawn in forward and nothing is stored.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { grid, type Kernel, kernelFor, linearIndex, rowWindows } from "../engine/kernel.ts";
import { nextKernelSeed } from "../engine/random.ts";
import { dispatch } from "../engine/recorder.ts";
import { checkOptions } from "../engine/options.ts";
import { attachGrad, emptyTensor, expectTensor, type Tensor } from "../engine/tensor.ts";
import { kernelVariant } from "../engine/variants.ts";
import { TEXEL_WGSL, texelRange, texelsPayOff, withTexels } from "../engine/texels.ts";
import { WGSL_RANDOM } from "./wgsl.ts";

/** Options of {@linkcode dropout}. */
export interface DropoutOptions {
  /** Whether the model is training; dropout is the identity when false. Default true. */
  training?: boolean;
}

const WORKGROUP = 256;

/**
 * Zeroes each element with probability p and scales the rest by 1/(1-p), as a multiplication by the
 * mask (so a NaN or infinity stays one, as in PyTorch, rather than being hidden by a dropped zero);
 * zeros when p is 1; the identity (returns x) when p is 0 or training is false. The mask depends on the seed from `nextKernelSeed()`, so
 * `manualSeed` makes it reproducible.
 */
export function dropout(x: Tensor, p: number, options: DropoutOptions = {}): Tensor {
  checkOptions("dropout", options, ["training"]);
  expectTensor("dropout", x, "x");
  if (x.dtype !== "float32") throw new Error(`dropout: ${x.describe()} is not float32`);
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: p must be in [0, 1], got ${p} for ${x.describe()}`);
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
 * Writes `out = input * (keep ? 1 / (1 - p) : 0)` with the mask of `seed`, in binding-sized chunks that
 * index the mask globally. On software adapters (variant `texel`) an invocation takes four elements,
 * fetched as one texel (engine/texels.ts: llvmpipe loads a storage buffer a lane and a float at a
 * time); the mask is the same per element, so both variants write the same values.
 */
function applyMask(input: Tensor, out: Tensor, p: number, seed: number): void {
  const variant = kernelVariant(
    "dropout",
    () => gpu().profile.isSoftware && texelsPayOff(input.size) ? "texel" : "scalar",
  );
  const texel = variant === "texel" && input.size % 4 === 0;
  const scale = p === 1 ? 0 : 1 / (1 - p);
  for (const [first, count] of rowWindows("dropout", input.size, [4])) {
    const params = { count, first, seed, p, scale };
    const output = out.window(first, count);
    const source = texel ? texelRange(input.window(first, count)) : null;
    if (source) {
      withTexels(
        [source],
        ([view]) => dispatch(texelKernel(), params, [view, output], grid(count / 4, WORKGROUP)),
      );
    } else dispatch(scalarKernel(), params, [input.window(first, count), output], grid(count, WORKGROUP));
  }
}

const PARAMS = { count: "u32", first: "u32", seed: "u32", p: "f32", scale: "f32" } as const;

function scalarKernel(): Kernel {
  return kernelFor("dropout", () => ({
    name: "dropout",
    params: PARAMS,
    bindings: [{ name: "x" }, { name: "y", write: true }],
    code: `${WGSL_RANDOM}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(WORKGROUP)};
  if (i >= params.count) { return; }
  let keep = random_uniform(params.seed, 0u, params.first + i) >= params.p;
  y[i] = x[i] * select(0.0, params.scale, keep);
}`,
  }));
}

function texelKernel(): Kernel {
  return kernelFor("dropout/texel", () => ({
    name: "dropout_texel",
    params: PARAMS,
    bindings: [{ name: "x", type: "texture" }, { name: "y", type: "vec4<f32>", write: true }],
    code: `${WGSL_RANDOM}
${TEXEL_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let q = ${linearIndex(WORKGROUP)};
  if (q >= params.count / 4u) { return; }
  let v = texel(x, q);
  var kept = vec4<f32>();
  for (var j = 0u; j < 4u; j++) {
    let keep = random_uniform(params.seed, 0u, params.first + 4u * q + j) >= params.p;
    kept[j] = v[j] * select(0.0, params.scale, keep);
  }
  y[q] = kept;
}`,
  }));
}

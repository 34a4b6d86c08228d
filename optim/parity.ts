/**
 * The AdamW check against `torch.optim.AdamW` trajectories: a folder with `cases.json` (per case
 * lr, betas, eps, weight_decay, and amsgrad, false when absent) and `adamw.safetensors` (`p0`, gradients `g1`..`gK`, and per case
 * the parameters after each step, `<case>_p1`..`<case>_pK`). The multi-model optimizer runs with
 * sharing, sync and adaptive rates off on a one-parameter model, which must be plain AdamW.
 *
 * @module
 */
import { readAll, writeTensor } from "../engine/tensor.ts";
import { ParameterSet } from "../models/parameters.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { MultiModelOptimizer } from "./multimodel.ts";

/** Largest relative deviation from the torch trajectory that passes. */
export const ADAMW_TOLERANCE = 1e-6;

/** The result of checking one AdamW folder. */
export interface AdamwParity {
  /** The folder. */
  folder: string;
  /** "adamw". */
  model: string;
  /** Worst max|ours - torch| / max|torch| over every case and step. */
  worstRelativeError: number;
  /** Where the worst error was, e.g. "b step 5". */
  worstAt: string;
  /** Whether the tolerance held. */
  pass: boolean;
}

interface AdamwCase {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  amsgrad?: boolean;
}

/** Runs every case of an AdamW folder through the optimizer and compares each step with torch's parameters. */
export async function checkAdamwFolder(folder: string): Promise<AdamwParity> {
  let cases: Record<string, AdamwCase>;
  try {
    cases = JSON.parse(await Deno.readTextFile(`${folder}/cases.json`));
  } catch (error) {
    throw new Error(`${folder}/cases.json: ${(error as Error).message}`);
  }
  const { tensors } = await readSafetensors(`${folder}/adamw.safetensors`);
  const p0 = tensors.get("p0");
  if (!p0) throw new Error(`${folder}/adamw.safetensors: no p0`);
  let steps = 0;
  while (tensors.has(`g${steps + 1}`)) steps++;
  let worstRelativeError = 0;
  let worstAt = "";
  for (const [name, c] of Object.entries(cases)) {
    const set = new ParameterSet("adamw");
    set.declare({
      role: "head",
      kind: "weight",
      site: "adamw",
      layer: null,
      layerCount: 0,
      name: "p",
      shape: p0.shape,
      layout: "vector",
    }, { kind: "zeros" });
    set.allocate(0);
    const parameter = set.parameters[0];
    writeTensor(parameter.value, p0.data as Float32Array);
    const optimizer = new MultiModelOptimizer({
      models: { adamw: { parameterSet: set } },
      lr: c.lr,
      betas: c.betas,
      eps: c.eps,
      weightDecay: c.weight_decay,
      amsgrad: c.amsgrad ?? false,
      gradientSharing: false,
      parameterSync: false,
      adaptiveLr: false,
    });
    for (let k = 1; k <= steps; k++) {
      optimizer.zeroGrad();
      writeTensor(parameter.value.grad!, tensors.get(`g${k}`)!.data as Float32Array);
      optimizer.step();
      const expected = tensors.get(`${name}_p${k}`);
      if (!expected) throw new Error(`${folder}/adamw.safetensors: no ${name}_p${k}`);
      const [ours] = await readAll([parameter.value]);
      let scale = 0;
      let error = 0;
      expected.data.forEach((v, i) => {
        scale = Math.max(scale, Math.abs(v));
        error = Math.max(error, Math.abs(ours[i] - v));
      });
      const relative = error / scale;
      if (relative >= worstRelativeError) [worstRelativeError, worstAt] = [relative, `${name} step ${k}`];
    }
    optimizer.dispose();
  }
  return { folder, model: "adamw", worstRelativeError, worstAt, pass: worstRelativeError <= ADAMW_TOLERANCE };
}

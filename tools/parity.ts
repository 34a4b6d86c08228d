/**
 * `deno task parity <folder>...`: checks the engine against reference folders written with Hugging
 * Face transformers (layout of tests/fixtures/hf, see its README). A model folder holds
 * `config.json`, `model.safetensors`, `io.safetensors` (inputs, outputs, `loss`, and the weights
 * `R`/`Rp`/`R_<output>` of a linear loss) and `grads.safetensors`; a folder holding `cases.json` is
 * an AdamW trajectory (optim/parity.ts). A folder with neither checks every such folder below it.
 * Prints one JSON line per model and exits 1 when a tolerance is exceeded (or WebGPU has no adapter).
 * Exits 2, with one line and before opening the GPU, on a bad flag, a path that is not a folder, or
 * a folder that holds no reference folder at all.
 *
 * @module
 */
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { add, mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { loadPretrained } from "../models/checkpoint.ts";
import type { Batch } from "../models/inputs.ts";
import type { ModelOutput } from "../models/model.ts";
import { checkAdamwFolder } from "../optim/parity.ts";
import { type HostTensor, readSafetensors } from "../models/safetensors.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";
import { openGpuOrExit } from "./start.ts";

/** Tolerances of the model check (from the project's parity requirement). */
export const MODEL_TOLERANCE = {
  /** Max absolute error of every output. */
  output: 1e-4,
  /** Relative error of the loss. */
  loss: 1e-5,
  /** Max absolute gradient error, relative to the largest |gradient| of the tensor. */
  gradient: 1e-4,
  /**
   * Float32 resolves a gradient only to about 1e-7 of the magnitudes summed into it, so a gradient
   * that cancels to zero cannot be matched relatively: the attention key bias has an exactly zero
   * gradient (softmax is invariant to a per-row shift), which Hugging Face's float64 gives as
   * ~1e-18. A tensor's scale for the gradient tolerance is therefore at least this fraction of the
   * model's largest |gradient|; the JSON line lists every tensor this floor applied to.
   */
  gradientScaleFloor: 1e-6,
};

/** The result of checking one model folder. */
export interface ModelParity {
  /** The folder. */
  folder: string;
  /** Model family and task. */
  model: string;
  /** Relative error of the loss. */
  lossError: number;
  /** Largest absolute error over the outputs, and which output. */
  maxOutputError: number;
  /** The output with the largest error. */
  worstOutput: string;
  /** Largest gradient error relative to its tensor's scale, and which tensor. */
  worstGradientError: number;
  /** The tensor with the worst gradient error. */
  worstGradientTensor: string;
  /** Tensors whose scale was raised to the floor (numerically zero reference gradient). */
  flooredTensors: string[];
  /** Whether every tolerance held. */
  pass: boolean;
}

const OUTPUTS: Record<string, keyof ModelOutput> = {
  last_hidden_state: "lastHiddenState",
  pooler_output: "poolerOutput",
  logits: "logits",
  start_logits: "startLogits",
  end_logits: "endLogits",
};

function upload(h: HostTensor): Tensor {
  return tensor(h.data, { shape: h.shape });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return a.length === b.length ? m : Infinity;
}

/** Checks one model folder: outputs, loss and every parameter gradient against Hugging Face's. */
export async function checkModelFolder(folder: string): Promise<ModelParity> {
  const model = await loadPretrained(folder);
  const io = (await readSafetensors(`${folder}/io.safetensors`)).tensors;
  const grads = (await readSafetensors(`${folder}/grads.safetensors`)).tensors;
  const input = (name: string) => (io.has(name) ? upload(io.get(name)!) : undefined);
  const batch: Batch = {
    inputIds: input("input_ids")!,
    attentionMask: input("attention_mask"),
    tokenTypeIds: input("token_type_ids"),
    labels: input("labels"),
    startPositions: input("start_positions"),
    endPositions: input("end_positions"),
  };
  if (!batch.inputIds) throw new Error(`${folder}/io.safetensors: no input_ids`);
  model.zeroGrad();
  const output = model.forward(batch);
  const compared = Object.entries(OUTPUTS).filter(([name, field]) => io.has(name) && output[field]);
  let loss = output.loss ?? null;
  for (const [name, field] of compared) {
    const weight = io.get(name === "last_hidden_state" ? "R" : name === "pooler_output" ? "Rp" : `R_${name}`);
    if (!weight) continue;
    const term = sum(mul(output[field] as Tensor, upload(weight)));
    loss = loss ? add(loss, term) : term;
  }
  if (!loss) throw new Error(`${folder}: io.safetensors defines no loss (labels, R, Rp or R_<output>)`);
  loss.backward();
  const values = await readAll([loss, ...compared.map(([, field]) => output[field] as Tensor)]);
  const gradValues = await readAll(model.parameters.map((p) => p.value.grad!));
  const expectedLoss = io.get("loss")!.data[0];
  const lossError = Math.abs(values[0][0] - expectedLoss) / Math.max(Math.abs(expectedLoss), 1e-30);
  let maxOutputError = 0;
  let worstOutput = "";
  compared.forEach(([name], i) => {
    const error = maxAbsDiff(values[i + 1], io.get(name)!.data);
    if (error >= maxOutputError) [maxOutputError, worstOutput] = [error, name];
  });
  const scales = model.parameters.map((p) => {
    const reference = grads.get(p.info.name);
    if (!reference) throw new Error(`${folder}/grads.safetensors: no gradient for "${p.info.name}"`);
    return Array.from(reference.data).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  });
  const floor = MODEL_TOLERANCE.gradientScaleFloor * Math.max(...scales);
  let worstGradientError = 0;
  let worstGradientTensor = "";
  const flooredTensors: string[] = [];
  model.parameters.forEach((p, i) => {
    if (scales[i] < floor) flooredTensors.push(p.info.name);
    const error = maxAbsDiff(gradValues[i], grads.get(p.info.name)!.data) / Math.max(scales[i], floor);
    if (error >= worstGradientError) [worstGradientError, worstGradientTensor] = [error, p.info.name];
  });
  return {
    folder,
    model: `${model.config.family}/${model.task}`,
    lossError,
    maxOutputError,
    worstOutput,
    worstGradientError,
    worstGradientTensor,
    flooredTensors,
    pass: lossError <= MODEL_TOLERANCE.loss && maxOutputError <= MODEL_TOLERANCE.output &&
      worstGradientError <= MODEL_TOLERANCE.gradient,
  };
}

async function foldersToCheck(path: string): Promise<string[]> {
  const has = async (name: string) => await Deno.stat(`${path}/${name}`).then(() => true, () => false);
  if (await has("config.json") || await has("cases.json")) return [path];
  const found: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (entry.isDirectory) found.push(...await foldersToCheck(`${path}/${entry.name}`));
  }
  return found.sort();
}

if (import.meta.main) {
  const { positionals: paths } = parseCommand({
    name: "parity",
    operands: "<folder>...",
    positionals: [1, Infinity],
    summary:
      "Checks models (or AdamW trajectories) against Hugging Face reference folders: a model folder, " +
      "an adamw folder, or a folder of them.\nPrints one JSON line per folder; exits 1 when a tolerance " +
      "is exceeded, 2 when a path is not a folder or holds no reference folder.",
    flags: {},
  });
  // Every path is resolved before the GPU opens, so a mistyped one fails at once and is never
  // mistaken for a pass with nothing checked.
  const folders: string[] = [];
  for (const path of paths) {
    const info = await Deno.stat(path).catch(() => null);
    if (!info?.isDirectory) {
      exitWithUsageError("parity", `${path}: ${info ? "not a folder" : "no such folder"}`);
    }
    const found = await foldersToCheck(path);
    if (found.length === 0) {
      exitWithUsageError("parity", `${path}: holds no reference folder (one with config.json or cases.json)`);
    }
    folders.push(...found);
  }
  await openGpuOrExit();
  let failed = false;
  for (const folder of folders) {
    const isAdamw = await Deno.stat(`${folder}/cases.json`).then(() => true, () => false);
    const result = isAdamw ? await checkAdamwFolder(folder) : await checkModelFolder(folder);
    console.log(JSON.stringify(result));
    failed ||= !result.pass;
  }
  Deno.exit(failed ? 1 : 0);
}

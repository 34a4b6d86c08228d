/**
 * Training checkpoints: every model as a Hugging Face folder, the optimizer's tensors (moments, and
 * the gradients of an open accumulation cycle) in `optimizer.safetensors` and the rest in
 * `optimizer.json`. The whole checkpoint is written into a
 * temporary folder that is renamed into place, so a crash never leaves a half-written checkpoint;
 * resuming reproduces the following steps bit for bit (the GPU random state is saved too).
 *
 * @module
 */
import { kernelSeedState, setKernelSeedState } from "../engine/random.ts";
import { checkWeights, savePretrained } from "../models/checkpoint.ts";
import type { TransformerModel } from "../models/model.ts";
import { type HostTensor, readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import type { Counters, MultiModelOptimizer, OptimizerState } from "./multimodel.ts";

const MOMENT_KINDS = ["exp_avg", "exp_avg_sq"] as const;

interface OptimizerJson {
  format: OptimizerState["format"];
  models: string[];
  counters: Counters;
  random: { base: number; counter: number };
  momentShapes: Record<string, number[]>;
}

/** Writes models, optimizer state and the GPU random state into `folder`, atomically. */
export async function saveCheckpoint(
  folder: string,
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
): Promise<void> {
  const names = Object.keys(models);
  if (names.join() !== optimizer.modelNames.join()) {
    throw new Error(
      `saveCheckpoint: models [${names}] differ from the optimizer's [${optimizer.modelNames}]`,
    );
  }
  const state = await optimizer.stateDict();
  const random = kernelSeedState();
  const temporary = `${folder}.tmp-${crypto.randomUUID()}`;
  await Deno.mkdir(temporary, { recursive: true });
  try {
    for (const name of names) await savePretrained(models[name], `${temporary}/models/${name}`);
    const tensors: [string, HostTensor][] = [
      ["control", { shape: [state.control.length], data: state.control }],
      ["loss_ring", { shape: [state.lossRing.length], data: state.lossRing }],
    ];
    const momentShapes: Record<string, number[]> = {};
    for (const [key, entry] of Object.entries(state.moments)) {
      momentShapes[key] = entry.shape;
      tensors.push([`exp_avg/${key}`, { shape: entry.shape, data: entry.expAvg }]);
      tensors.push([`exp_avg_sq/${key}`, { shape: entry.shape, data: entry.expAvgSq }]);
      if (entry.pendingGrad) {
        tensors.push([`pending_grad/${key}`, { shape: entry.shape, data: entry.pendingGrad }]);
      }
    }
    await writeSafetensors(`${temporary}/optimizer.safetensors`, tensors);
    const json: OptimizerJson = {
      format: state.format,
      models: state.models,
      counters: state.counters,
      random,
      momentShapes,
    };
    await Deno.writeTextFile(`${temporary}/optimizer.json`, JSON.stringify(json, null, 2) + "\n");
    const previous = `${folder}.old-${crypto.randomUUID()}`;
    const exists = await Deno.stat(folder).then(() => true, () => false);
    if (exists) await Deno.rename(folder, previous);
    await Deno.rename(temporary, folder);
    if (exists) await Deno.remove(previous, { recursive: true });
  } catch (error) {
    await Deno.remove(temporary, { recursive: true }).catch(() => {});
    throw error;
  }
}

/**
 * Restores a checkpoint written by {@linkcode saveCheckpoint} into models and an optimizer built
 * like the saved ones. Every file is read and checked before anything is written.
 */
export async function loadCheckpoint(
  folder: string,
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
): Promise<void> {
  const jsonPath = `${folder}/optimizer.json`;
  const json = JSON.parse(await Deno.readTextFile(jsonPath)) as OptimizerJson;
  if (json.models?.join() !== Object.keys(models).join()) {
    throw new Error(`${jsonPath}: checkpoint of models [${json.models}], given [${Object.keys(models)}]`);
  }
  const weights = await Promise.all(
    json.models.map(async (name) =>
      (await readSafetensors(`${folder}/models/${name}/model.safetensors`)).tensors
    ),
  );
  const tensorsPath = `${folder}/optimizer.safetensors`;
  const { tensors } = await readSafetensors(tensorsPath);
  const take = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (!t || !(t.data instanceof Float32Array)) throw new Error(`${tensorsPath}: no float tensor "${name}"`);
    return t.data;
  };
  const moments: OptimizerState["moments"] = {};
  for (const [key, shape] of Object.entries(json.momentShapes)) {
    const [expAvg, expAvgSq] = MOMENT_KINDS.map((kind) => take(`${kind}/${key}`));
    moments[key] = { shape, expAvg, expAvgSq };
    if (tensors.has(`pending_grad/${key}`)) moments[key].pendingGrad = take(`pending_grad/${key}`);
  }
  const state: OptimizerState = {
    format: json.format,
    models: json.models,
    counters: json.counters,
    control: take("control"),
    lossRing: take("loss_ring"),
    moments,
  };
  // The weights are checked first, the optimizer state is checked before it writes, and only then are weights written.
  const checked = json.models.map((name, i) =>
    checkWeights(models[name], weights[i], `${folder}/models/${name}/model.safetensors`)
  );
  optimizer.loadStateDict(state);
  for (const c of checked) c.apply();
  setKernelSeedState(json.random);
}

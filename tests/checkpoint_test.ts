import { manualSeed } from "../engine/random.ts";
import { readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { loadCheckpoint, saveCheckpoint } from "../optim/checkpoint.ts";
import { MultiModelOptimizer, type MultiModelOptimizerOptions } from "../optim/multimodel.ts";
import { assertBitwiseEqual, setup, thrownMessage } from "./helpers.ts";

await setup();

const SIZE = {
  hiddenSize: 16,
  numHeads: 2,
  intermediateSize: 32,
  vocabSize: 30,
  maxPositions: 12,
  hiddenDropout: 0.1,
};
const OPTIONS: Omit<MultiModelOptimizerOptions, "models"> = {
  lr: 1e-2,
  weightDecay: 0.01,
  gradientAccumulationSteps: 2,
  clipGradNorm: 1,
  schedule: { warmupSteps: 2, totalSteps: 20 },
  gradientSharing: { ratio: 0.2 },
  parameterSync: { ratio: 0.1, every: 2 },
  adaptiveLr: { window: 3 },
};

function build(seed: number): Record<string, TransformerModel> {
  const layers: Record<ModelFamily, number> = { bert: 2, gpt2: 1, roberta: 2 };
  return Object.fromEntries((Object.keys(layers) as ModelFamily[]).map((family, i) => [
    family,
    new TransformerModel(modelConfig(family, { ...SIZE, numLayers: layers[family] }), {
      name: family,
      task: "sequence-classification",
      seed: seed + i,
    }),
  ]));
}

/** One micro-batch step of the seed's loop on a batch determined by `step`; returns the losses. */
function trainStep(
  models: Record<string, TransformerModel>,
  optimizer: MultiModelOptimizer,
  step: number,
): Tensor[] {
  return tidy(() => {
    const inputIds = tensor(Int32Array.from({ length: 4 * 8 }, (_, i) => 3 + ((i * 7 + step * 5) % 25)), {
      shape: [4, 8],
    });
    const labels = tensor(Int32Array.from({ length: 4 }, (_, i) => (i + step) % 2));
    optimizer.zeroGrad();
    const losses: Record<string, Tensor> = {};
    for (const [name, model] of Object.entries(models)) {
      losses[name] = model.forward({ inputIds, labels }).loss!;
      losses[name].backward();
    }
    optimizer.logMetrics(losses);
    optimizer.step();
    return Object.values(losses);
  });
}

Deno.test("resuming from a checkpoint reproduces the next 10 steps bit for bit", async () => {
  const folder = `${await Deno.makeTempDir({ dir: "/tmp" })}/run`;
  manualSeed(5);
  const models = build(1);
  const optimizer = new MultiModelOptimizer({ models, ...OPTIONS });
  for (let step = 0; step < 5; step++) trainStep(models, optimizer, step); // mid-accumulation after 5 micro-batches
  await saveCheckpoint(folder, optimizer, models);
  const expected: Float32Array[] = [];
  for (let step = 5; step < 15; step++) {
    expected.push(...(await readAll(trainStep(models, optimizer, step))) as Float32Array[]);
  }
  const expectedParameters = await readAll(
    Object.values(models).flatMap((m) => m.parameters.map((p) => p.value)),
  );
  optimizer.dispose();

  manualSeed(99); // overwritten by the checkpoint's random state
  const resumedModels = build(50); // different initial weights, overwritten too
  const resumed = new MultiModelOptimizer({ models: resumedModels, ...OPTIONS });
  await loadCheckpoint(folder, resumed, resumedModels);
  const got: Float32Array[] = [];
  for (let step = 5; step < 15; step++) {
    got.push(...(await readAll(trainStep(resumedModels, resumed, step))) as Float32Array[]);
  }
  got.forEach((loss, i) => assertBitwiseEqual(loss, expected[i], `loss ${i}`));
  const parameters = await readAll(
    Object.values(resumedModels).flatMap((m) => m.parameters.map((p) => p.value)),
  );
  parameters.forEach((p, i) => assertBitwiseEqual(p, expectedParameters[i], `parameter ${i}`));
  resumed.dispose();
  await Deno.remove(folder.replace(/\/run$/, ""), { recursive: true });
});

Deno.test("a checkpoint is replaced atomically and leaves no temporary folder", async () => {
  const parent = await Deno.makeTempDir({ dir: "/tmp" });
  const models = build(3);
  const optimizer = new MultiModelOptimizer({ models, ...OPTIONS });
  await saveCheckpoint(`${parent}/ckpt`, optimizer, models);
  trainStep(models, optimizer, 0);
  trainStep(models, optimizer, 1);
  // Extra files (a tokenizer beside a model) are written with it; paths outside it or onto its own files are refused.
  const bytes = new TextEncoder().encode("{}\n");
  await saveCheckpoint(`${parent}/ckpt`, optimizer, models, { "models/bert/tokenizer.json": bytes });
  if ((await Deno.readTextFile(`${parent}/ckpt/models/bert/tokenizer.json`)) !== "{}\n") {
    throw new Error("extra file");
  }
  for (const path of ["../outside.json", "models/bert/config.json", "/abs.json", "a//b.json"]) {
    const refused = await thrownMessage(() =>
      saveCheckpoint(`${parent}/ckpt`, optimizer, models, { [path]: bytes })
    );
    if (
      !refused.includes(
        `saveCheckpoint: extra file "${path}" is not a new relative path inside the checkpoint`,
      )
    ) {
      throw new Error(refused);
    }
  }
  const entries = [];
  for await (const e of Deno.readDir(parent)) entries.push(e.name);
  if (entries.join() !== "ckpt") throw new Error(`left behind: ${entries}`);
  const json = JSON.parse(await Deno.readTextFile(`${parent}/ckpt/optimizer.json`));
  if (json.counters.updates !== 1) throw new Error(`saved ${json.counters.updates} updates`);
  let message = await thrownMessage(() => loadCheckpoint(`${parent}/ckpt`, optimizer, { bert: models.bert }));
  if (!message.includes("loadCheckpoint: models [bert] differ from the optimizer's [bert,gpt2,roberta]")) {
    throw new Error(message);
  }
  optimizer.dispose();
  const one = { bert: models.bert };
  const bertOnly = new MultiModelOptimizer({ models: one, ...OPTIONS });
  message = await thrownMessage(() => loadCheckpoint(`${parent}/ckpt`, bertOnly, one));
  if (!message.includes("checkpoint of models [bert,gpt2,roberta], given [bert]")) throw new Error(message);
  bertOnly.dispose();
  await Deno.remove(parent, { recursive: true });
});

Deno.test("a checkpoint records the optimizer's options: other options are refused before anything is written", async () => {
  const parent = await Deno.makeTempDir({ dir: "/tmp" });
  const models = build(7);
  const optimizer = new MultiModelOptimizer({ models, ...OPTIONS });
  for (let step = 0; step < 2; step++) trainStep(models, optimizer, step);
  await saveCheckpoint(`${parent}/run`, optimizer, models);
  optimizer.dispose();
  const json = JSON.parse(await Deno.readTextFile(`${parent}/run/optimizer.json`));
  if (json.options?.lr !== OPTIONS.lr || json.options?.schedule?.totalSteps !== 20) {
    throw new Error(`options saved: ${JSON.stringify(json.options)}`);
  }

  const otherModels = build(60);
  const other = new MultiModelOptimizer({
    models: otherModels,
    ...OPTIONS,
    schedule: { warmupSteps: 2, totalSteps: 40 },
  });
  const before = await readAll(otherModels.bert.parameters.map((p) => p.value));
  // Models the optimizer does not train are named before the options it differs in.
  let message = await thrownMessage(() => loadCheckpoint(`${parent}/run`, other, models));
  if (!message.includes('loadCheckpoint: model "bert" is not the one this optimizer trains')) {
    throw new Error(message);
  }
  message = await thrownMessage(() => loadCheckpoint(`${parent}/run`, other, otherModels));
  if (!message.includes("optimizer.json: the state was saved by an optimizer with other options: schedule")) {
    throw new Error(message);
  }
  const after = await readAll(otherModels.bert.parameters.map((p) => p.value));
  after.forEach((values, i) => assertBitwiseEqual(values, before[i], `parameter ${i} unchanged`));
  await loadCheckpoint(`${parent}/run`, other, otherModels, { keepCurrentOptions: true });
  other.dispose();

  // A checkpoint written before the options were recorded loads as before.
  delete json.options;
  await Deno.writeTextFile(`${parent}/run/optimizer.json`, JSON.stringify(json));
  const sameModels = build(61);
  const same = new MultiModelOptimizer({ models: sameModels, ...OPTIONS });
  await loadCheckpoint(`${parent}/run`, same, sameModels);
  same.dispose();
  await Deno.remove(parent, { recursive: true });
});

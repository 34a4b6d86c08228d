// What async code sees: every read (a readback, metrics, a state, a checkpoint, saved weights) holds
// the values of its call whatever is recorded before it settles, and what cannot interleave says so.
import { poolStats, setMemoryBudget } from "../engine/pool.ts";
import { timeKernels } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor, tidy, writeTensor } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { loadPretrained, savePretrained } from "../models/pretrained.ts";
import { loadCheckpoint, saveCheckpoint } from "../optim/checkpoint.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { assertBitwiseEqual, setup, thrownMessage } from "./helpers.ts";

await setup();

const SIZE = {
  hiddenSize: 8,
  numHeads: 2,
  numLayers: 1,
  intermediateSize: 16,
  vocabSize: 20,
  maxPositions: 12,
};

function build(): Record<string, TransformerModel> {
  return {
    bert: new TransformerModel(modelConfig("bert", { ...SIZE, hiddenDropout: 0 }), {
      task: "sequence-classification",
      seed: 1,
    }),
    gpt2: new TransformerModel(modelConfig("gpt2", { ...SIZE, hiddenDropout: 0 }), {
      task: "sequence-classification",
      seed: 2,
    }),
  };
}

/** One step: zeroGrad, each model's forward and backward, losses, update; `gpt2Labels` may be bad. */
function step(
  models: Record<string, TransformerModel>,
  optimizer: MultiModelOptimizer,
  gpt2Labels = Int32Array.of(0, 1),
): void {
  tidy(() => {
    const inputIds = tensor(Int32Array.of(3, 4, 5, 6, 7, 8, 9, 10), { shape: [2, 4] });
    optimizer.zeroGrad();
    const losses: Record<string, Tensor> = {};
    for (const [name, model] of Object.entries(models)) {
      const labels = tensor(name === "gpt2" ? gpt2Labels : Int32Array.of(0, 1));
      losses[name] = model.forward({ inputIds, labels }).loss!;
      losses[name].backward();
    }
    optimizer.logMetrics(losses);
    optimizer.step();
  });
}

function parameters(models: Record<string, TransformerModel>): Tensor[] {
  return Object.values(models).flatMap((m) => m.parameters.map((p) => p.value));
}

Deno.test("a readback over several 64 MiB batches holds the values of its call", async () => {
  const n = 10_000_000; // two 40 MB tensors: two batches
  const a = tensor(new Float32Array(n).fill(1));
  const b = tensor(new Float32Array(n).fill(1));
  const pending = readAll([a, b]);
  writeTensor(b, new Float32Array(n).fill(2));
  const [readA, readB] = await pending;
  if (readA[n - 1] !== 1 || readB[0] !== 1 || readB[n - 1] !== 1) {
    throw new Error(`a write after the call showed through: ${readA[n - 1]}, ${readB[0]}, ${readB[n - 1]}`);
  }
  // A tensor disposed while its read waits, its buffer taken by another: still the values of the call.
  const read = readAll([a, b]);
  b.dispose();
  const reuse = tensor(new Float32Array(n).fill(3));
  const [, again] = await read;
  if (again[0] !== 2 || again[n - 1] !== 2) throw new Error(`read ${again[0]}, ${again[n - 1]} after reuse`);
  // A read the memory budget refuses (its second batch's buffer) holds nothing and records nothing.
  const held = poolStats().liveBytes;
  setMemoryBudget(held + 2 ** 20);
  try {
    const refused = await thrownMessage(() => readAll([a, reuse]));
    if (!refused.includes('buffer "readback')) throw new Error(refused);
    if (poolStats().liveBytes !== held) throw new Error(`${poolStats().liveBytes - held} bytes left held`);
  } finally {
    setMemoryBudget(null);
  }
  const created = poolStats().buffersCreated;
  const [last] = await readAll([a]);
  if (last[0] !== 1) throw new Error(`after the refusal: ${last[0]}`);
  if (poolStats().buffersCreated !== created) throw new Error("the refused read kept its first buffer");
  for (const t of [a, reuse]) t.dispose();
});

Deno.test("metrics() and stateDict() called before a step and awaited after it describe the call", async () => {
  const models = build();
  const optimizer = new MultiModelOptimizer({ models, lr: 1e-2, adaptiveLr: { window: 4 } });
  step(models, optimizer);
  step(models, optimizer);
  const metrics = optimizer.metrics();
  const state = optimizer.stateDict();
  step(models, optimizer);
  const m = await metrics;
  if (m.updates !== 2 || m.models.bert.updates !== 2 || m.models.bert.recentLosses.length !== 2) {
    throw new Error(
      `metrics: ${m.updates} updates, bert ${m.models.bert.updates}, ${m.models.bert.recentLosses}`,
    );
  }
  const s = await state;
  if (s.counters.updates !== 2) throw new Error(`state: ${s.counters.updates} updates`);
  // The state is consistent: it loads into a fresh optimizer.
  const fresh = build();
  const other = new MultiModelOptimizer({ models: fresh, lr: 1e-2, adaptiveLr: { window: 4 } });
  other.loadStateDict(s);
  other.dispose();
  optimizer.dispose();
});

Deno.test("a checkpoint saved while training goes on is the state of its call, and loads", async () => {
  const folder = `${await Deno.makeTempDir({ dir: "/tmp" })}/checkpoint`;
  const models = build();
  const optimizer = new MultiModelOptimizer({ models, lr: 1e-2, adaptiveLr: { window: 4 } });
  step(models, optimizer);
  step(models, optimizer);
  const expected = await readAll(parameters(models));
  const saving = saveCheckpoint(folder, optimizer, models);
  step(models, optimizer);
  await saving;
  const resumedModels = build();
  const resumed = new MultiModelOptimizer({ models: resumedModels, lr: 1e-2, adaptiveLr: { window: 4 } });
  await loadCheckpoint(folder, resumed, resumedModels);
  const got = await readAll(parameters(resumedModels));
  got.forEach((values, i) => assertBitwiseEqual(values, expected[i], `parameter ${i}`));
  if ((await resumed.metrics()).updates !== 2) throw new Error("the resumed optimizer's update count");
  // Saves into one folder land in the order of their calls, none failing, also through a link to its folder.
  const link = `${folder.replace(/\/checkpoint$/, "")}/link`;
  // ln rather than Deno.symlink, which needs unscoped write permission (the suite writes under /tmp only).
  await new Deno.Command("ln", { args: ["-s", folder.replace(/\/checkpoint$/, ""), link] }).output();
  step(models, optimizer);
  const saves = [
    saveCheckpoint(folder, optimizer, models),
    saveCheckpoint(`${link}/checkpoint`, optimizer, models),
  ];
  step(models, optimizer);
  saves.push(saveCheckpoint(folder, optimizer, models));
  await Promise.all(saves);
  const json = JSON.parse(await Deno.readTextFile(`${folder}/optimizer.json`));
  if (json.counters.updates !== 5) throw new Error(`the last save holds ${json.counters.updates} updates`);
  for (const o of [optimizer, resumed]) o.dispose();
  await Deno.remove(folder.replace(/\/checkpoint$/, ""), { recursive: true });
});

Deno.test("savePretrained saves the weights of its call; saves into one folder do not collide", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  const models = build();
  const optimizer = new MultiModelOptimizer({ models, lr: 1e-2 });
  const expected = await readAll(models.bert.parameters.map((p) => p.value));
  const saves = [savePretrained(models.bert, folder), savePretrained(models.bert, folder)];
  step(models, optimizer);
  await Promise.all(saves);
  const loaded = await loadPretrained(folder);
  const got = await readAll(loaded.parameters.map((p) => p.value));
  got.forEach((values, i) => assertBitwiseEqual(values, expected[i], `parameter ${i}`));
  loaded.dispose();
  optimizer.dispose();
  await Deno.remove(folder, { recursive: true });
});

Deno.test("a refused logMetrics() leaves the loss window as it was", async () => {
  const models = build();
  const optimizer = new MultiModelOptimizer({ models, lr: 1e-2, adaptiveLr: { window: 4 } });
  step(models, optimizer);
  const pair = tensor(Float32Array.of(1, 2));
  const message = await thrownMessage(() => optimizer.logMetrics({ bert: 0.5, gpt2: pair }));
  if (!message.includes(`logMetrics: the loss of "gpt2" must be one float32 value`)) throw new Error(message);
  const stale = tensor(Float32Array.of(1));
  stale.dispose();
  await thrownMessage(() => optimizer.logMetrics({ bert: 0.5, gpt2: stale }));
  const { models: after } = await optimizer.metrics();
  if (after.bert.recentLosses.length !== 1 || after.gpt2.recentLosses.length !== 1) {
    throw new Error(`windows ${after.bert.recentLosses} / ${after.gpt2.recentLosses}`);
  }
  pair.dispose();
  optimizer.dispose();
});

Deno.test("zeroGrad() after a micro-batch abandoned before its step() clears its gradients", async () => {
  const models = build();
  const optimizer = new MultiModelOptimizer({ models, lr: 1e-2 });
  step(models, optimizer);
  // gpt2's labels do not match its batch: bert's backward has run when its forward throws.
  await thrownMessage(() => step(models, optimizer, Int32Array.of(0, 1, 1)));
  optimizer.zeroGrad();
  const grads = await readAll(models.bert.parameters.map((p) => p.value.grad!));
  if (grads.some((g) => g.some((v) => v !== 0))) {
    throw new Error("the abandoned micro-batch's gradients stayed");
  }
  // Mid-cycle, zeroGrad() still keeps the counted micro-batches.
  const accumulated = build();
  const accumulating = new MultiModelOptimizer({
    models: accumulated,
    lr: 1e-2,
    gradientAccumulationSteps: 2,
  });
  step(accumulated, accumulating);
  accumulating.zeroGrad();
  const kept = await readAll(accumulated.bert.parameters.map((p) => p.value.grad!));
  if (kept.every((g) => g.every((v) => v === 0))) {
    throw new Error("zeroGrad() discarded a counted micro-batch");
  }
  for (const o of [optimizer, accumulating]) o.dispose();
});

Deno.test("a second timeKernels() before the first settles is refused; tidy(async) ends quietly", async () => {
  const x = tensor(Float32Array.of(1, 2, 3));
  const first = timeKernels(async () => {
    await readAll([x]);
  });
  const message = await thrownMessage(() => timeKernels(() => {}));
  const times = await first;
  if (times !== null && !message.includes("timeKernels: another timeKernels() call has not settled")) {
    throw new Error(message);
  }
  // The async function's own failure after the refusal (x2 was freed) is not an unhandled rejection.
  const refusal = await thrownMessage(() =>
    tidy(async () => {
      const x2 = tensor(Float32Array.of(1));
      await null;
      return x2.describe() + String(await readAll([x2]));
    })
  );
  if (!refusal.includes("tidy() takes a synchronous function")) throw new Error(refusal);
  await new Promise((resolve) => setTimeout(resolve, 10));
  x.dispose();
});

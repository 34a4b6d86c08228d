import { Arena } from "../engine/arena.ts";
import { poolStats, setMemoryBudget, trimPool } from "../engine/pool.ts";
import { emptyTensor, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import type { Batch } from "../models/inputs.ts";
import { estimateMemory } from "../models/memory.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { exp } from "../kernels/elementwise.ts";
import { assertClose, expectError, setup, withProfile } from "./helpers.ts";

await setup();

const SMALL = {
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  intermediateSize: 256,
  vocabSize: 500,
  maxPositions: 40,
};

function batchFor(task: Task, B: number, T: number): Batch {
  const ids = new Int32Array(B * T).map((_, i) => 3 + (i * 7) % 400);
  const batch: Batch = { inputIds: tensor(ids, { shape: [B, T] }) };
  if (task === "causal-lm" || task === "token-classification") {
    batch.labels = tensor(ids.map((x) => x % 2), { shape: [B, T] });
  }
  return batch;
}

Deno.test("the activation estimate is within 15% below what a training forward pass holds", () => {
  const [B, T] = [2, 16];
  for (const family of ["bert", "gpt2", "roberta"] as ModelFamily[]) {
    for (const task of ["base", "causal-lm", "token-classification"] as Task[]) {
      const model = new TransformerModel(modelConfig(family, SMALL), { task });
      const batch = batchFor(task, B, T);
      const before = poolStats().inUseBytes;
      let held = 0;
      tidy(() => {
        model.forward(batch);
        held = poolStats().inUseBytes - before;
      });
      const estimate = estimateMemory({ m: model }, { batch: B, length: T }).models.m.activations;
      // The pool rounds each buffer up to a size class, which the estimate leaves out.
      if (!(estimate <= held && estimate >= 0.85 * held)) {
        throw new Error(`${family} ${task}: estimated ${estimate} bytes, the forward pass holds ${held}`);
      }
      model.dispose();
    }
  }
});

Deno.test("activations and backward peak are within 15% below what a training step takes from the pool", () => {
  // A vocabulary large against the activations (a language-model head's logits dominate its backward) and
  // a batch of 4 x 32 tokens, so that activations outweigh the pool's small fixed-size buffers, as at real
  // sizes. No dense vocabulary-sized parameter gradient is made: they go straight into the arena.
  const config = { ...SMALL, vocabSize: 5000 };
  const [B, T] = [4, 32];
  for (
    const [family, task] of [
      ["gpt2", "causal-lm"],
      ["bert", "masked-lm"],
      ["bert", "sequence-classification"],
      ["roberta", "token-classification"],
    ] as [ModelFamily, Task][]
  ) {
    const model = new TransformerModel(modelConfig(family, config), { task });
    trimPool();
    const before = poolStats().pooledBytes;
    tidy(() => {
      const batch = batchFor(task, B, T);
      if (task === "sequence-classification") {
        batch.labels = tensor(new Int32Array(B).fill(1), { shape: [B] });
      }
      if (task === "masked-lm") batch.labels = batch.inputIds;
      model.forward(batch).loss!.backward();
    });
    // A trimmed pool grows by the most the step held at once (freed buffers are reused).
    const taken = poolStats().pooledBytes - before;
    const m = estimateMemory({ m: model }, { batch: B, length: T }).models.m;
    const estimate = m.activations + m.backwardPeak;
    if (!(estimate <= taken && estimate >= 0.85 * taken)) {
      throw new Error(`${family} ${task}: estimated ${estimate} bytes, the step took ${taken} from the pool`);
    }
    model.dispose();
  }
});

Deno.test("trimPool keeps work recorded on a buffer whose tensor was disposed before it ran", async () => {
  const x = tensor([0, 1, 2]);
  const y = exp(x);
  x.dispose(); // x's buffer is free, and y's recorded dispatch still reads it
  trimPool();
  assertClose(await y.data(), [1, Math.E, Math.E ** 2], { atol: 1e-5 }, "exp after trimPool");
  y.dispose();
});

Deno.test("parameters, gradients and moments are the arena's bytes; the total sums the models", () => {
  const models = {
    a: new TransformerModel(modelConfig("gpt2", SMALL), { task: "causal-lm" }),
    b: new TransformerModel(modelConfig("bert", SMALL), { task: "sequence-classification", numLabels: 3 }),
  };
  const plain = estimateMemory(models, { batch: 1, length: 8 });
  const amsgrad = estimateMemory(models, { batch: 1, length: 8, amsgrad: true });
  for (const [name, model] of Object.entries(models)) {
    const arenaBytes = model.parameterSet.arena.length * 4;
    const m = plain.models[name];
    if (m.parameters !== arenaBytes || m.gradients !== arenaBytes || m.optimizerState !== 2 * arenaBytes) {
      throw new Error(`${name}: ${JSON.stringify(m)} for an arena of ${arenaBytes} bytes`);
    }
    if (amsgrad.models[name].optimizerState !== 3 * arenaBytes) throw new Error(`${name}: AMSGrad state`);
    const parts = m.parameters + m.gradients + m.optimizerState + m.activations + m.backwardPeak;
    if (m.total !== parts) throw new Error(`${name}: total ${m.total}, parts ${parts}`);
    model.dispose();
  }
  if (plain.total.total !== plain.models.a.total + plain.models.b.total) {
    throw new Error("total of the models");
  }
  expectError(
    () => estimateMemory(models, { batch: 0, length: 8 }),
    "estimateMemory: batch and length must be positive integers, got 0 x 8",
  );
});

Deno.test("a memory budget refuses what does not fit, saying what is needed and left", () => {
  const before = poolStats();
  const model = new TransformerModel(modelConfig("gpt2", SMALL), { task: "causal-lm" });
  const arenaBytes = model.parameterSet.arena.length * 4;
  const held = poolStats();
  if (held.liveBytes - before.liveBytes < 2 * arenaBytes) throw new Error("values and gradients are counted");
  if (held.peakLiveBytes < held.liveBytes) throw new Error("the peak is at least what is held");
  model.dispose();
  if (poolStats().liveBytes !== held.liveBytes - 2 * arenaBytes) {
    throw new Error("a disposed arena is uncounted");
  }
  trimPool(); // free buffers would give way to the model first
  setMemoryBudget(poolStats().liveBytes + 1024);
  try {
    let message = "";
    try {
      new TransformerModel(modelConfig("gpt2", SMALL), { task: "causal-lm" });
    } catch (e) {
      message = (e as Error).message;
    }
    if (
      !/^buffer "gpt2 parameters values 0" needs .* but only 1\.00 KiB of the .* memory budget are left/.test(
        message,
      )
    ) {
      throw new Error(`got "${message}"`);
    }
  } finally {
    setMemoryBudget(null);
  }
});

Deno.test("the optimizer says what it allocated, and refuses models beyond the budget with what they need", () => {
  const models = {
    gpt2: new TransformerModel(modelConfig("gpt2", SMALL), { task: "causal-lm" }),
    bert: new TransformerModel(modelConfig("bert", SMALL), { task: "masked-lm" }),
  };
  const estimate = estimateMemory(models, { batch: 1, length: 8, amsgrad: true });
  const before = poolStats().liveBytes;
  const optimizer = new MultiModelOptimizer({ models, amsgrad: true });
  const memory = optimizer.memory();
  for (const name of ["gpt2", "bert"] as const) {
    const [held, estimated] = [memory.models[name], estimate.models[name]];
    if (held.parameters !== estimated.parameters || held.optimizerState !== estimated.optimizerState) {
      throw new Error(`${name}: holds ${JSON.stringify(held)}, estimated ${JSON.stringify(estimated)}`);
    }
  }
  const grown = poolStats().liveBytes - before;
  // The joint arena replaced the models' own (values and gradients), so the growth is the moments,
  // the tables and the values and gradients of the padding between models.
  const padding = memory.parameters - Object.values(memory.models).reduce((sum, m) => sum + m.parameters, 0);
  if (grown !== memory.optimizerState + memory.tables + 2 * padding) {
    throw new Error(`live bytes grew by ${grown}, the optimizer reports ${JSON.stringify(memory)}`);
  }
  optimizer.dispose();
  for (const model of Object.values(models)) model.dispose();
  const fresh = { gpt2: new TransformerModel(modelConfig("gpt2", SMALL), { task: "causal-lm" }) };
  setMemoryBudget(poolStats().liveBytes + 4096);
  try {
    let message = "";
    try {
      new MultiModelOptimizer({ models: fresh });
    } catch (e) {
      message = (e as Error).message;
    }
    if (
      !/^MultiModelOptimizer over \[gpt2\] needs .* \(values and gradients .* then AdamW moments .*\), but only 4\.00 KiB/
        .test(message)
    ) {
      throw new Error(`got "${message}"`);
    }
  } finally {
    setMemoryBudget(null);
    fresh.gpt2.dispose();
  }
});

Deno.test("a size the device can hold is served although its size class is above maxBufferSize", async () => {
  await withProfile({ maxBufferBytes: 300_003 }, () => {
    const before = poolStats();
    const x = emptyTensor([74_750]); // 299 000 bytes: size class 327 680, above the 300 003 allowed
    if (x.storage.buffer.size !== 300_000) throw new Error(`buffer of ${x.storage.buffer.size} bytes`);
    x.dispose();
    // A refused allocation changes no count.
    expectError(
      () => emptyTensor([80_000]),
      "pooled 327680: 327680 bytes exceed the device's maxBufferSize of 300003 bytes",
    );
    const after = poolStats();
    if (after.inUseBytes !== before.inUseBytes || after.pooledBytes !== before.pooledBytes + 300_000) {
      throw new Error(`counts: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    }
  });
  trimPool();
});

Deno.test("an arena refused part-way destroys the buffers it had made", async () => {
  await withProfile({ maxBufferBytes: 65_536 }, () => {
    const shapes = [[16_000], [16_000]];
    const probe = new Arena(shapes, "probe"); // two chunks, a values and a gradients buffer each
    const chunkBytes = probe.chunks[1].length * 4;
    probe.destroy();
    const before = poolStats().liveBytes;
    setMemoryBudget(before + 3.5 * chunkBytes);
    let message = "";
    try {
      new Arena(shapes, "leak");
    } catch (e) {
      message = (e as Error).message;
    } finally {
      setMemoryBudget(null);
    }
    if (!message.startsWith('buffer "leak grads 1" needs')) throw new Error(`got "${message}"`);
    if (poolStats().liveBytes !== before) {
      throw new Error(`${poolStats().liveBytes - before} bytes left behind`);
    }
  });
  // The work recorded before the refusal still runs: nothing submitted later binds a destroyed buffer.
  const values = Array.from(await tensor([1, 2, 3]).data());
  if (String(values) !== "1,2,3") throw new Error(`read back ${values}`);
});

/**
 * Who owns a parameter's memory: a model until an optimizer adopts it, then the optimizer until its
 * dispose() hands the parameters back. Every misuse is an error naming the object.
 */
import { readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { assertBitwiseEqual, expectError, setup } from "./helpers.ts";

await setup();

function models(): Record<ModelFamily, TransformerModel> {
  const size = {
    hiddenSize: 8,
    numHeads: 2,
    numLayers: 1,
    intermediateSize: 16,
    vocabSize: 20,
    maxPositions: 12,
  };
  return {
    bert: new TransformerModel(modelConfig("bert", size), { task: "sequence-classification", seed: 1 }),
    gpt2: new TransformerModel(modelConfig("gpt2", size), { task: "sequence-classification", seed: 2 }),
    roberta: new TransformerModel(modelConfig("roberta", size), { task: "sequence-classification", seed: 3 }),
  };
}

const batch = () => ({
  inputIds: tensor(Int32Array.of(3, 4, 5, 6, 7, 8, 9, 10), { shape: [2, 4] }),
  labels: tensor(Int32Array.of(0, 1)),
});

function backward(all: Record<string, TransformerModel>): void {
  tidy(() => {
    const b = batch();
    for (const model of Object.values(all)) model.forward(b).loss!.backward();
  });
}

async function gradients(model: TransformerModel): Promise<Float32Array[]> {
  return (await readAll(model.parameters.map((p) => p.value.grad!))) as Float32Array[];
}

Deno.test("a model's zeroGrad clears its own gradients only, also inside an optimizer's joint arena", async () => {
  const all = models();
  const optimizer = new MultiModelOptimizer({ models: all });
  backward(all);
  all.bert.zeroGrad();
  for (const g of await gradients(all.bert)) {
    if (g.some((v) => v !== 0)) throw new Error("bert's gradients were not cleared");
  }
  for (const name of ["gpt2", "roberta"] as const) {
    if ((await gradients(all[name])).every((g) => g.every((v) => v === 0))) {
      throw new Error(`${name}'s gradients were cleared by bert.zeroGrad()`);
    }
  }
  optimizer.dispose();
});

Deno.test("a model belongs to one optimizer at a time", () => {
  const all = models();
  const first = new MultiModelOptimizer({ models: all });
  expectError(
    () => new MultiModelOptimizer({ models: { bert: all.bert } }),
    'MultiModelOptimizer: model "bert" already belongs to the MultiModelOptimizer over [bert, gpt2, roberta]; ' +
      "a model can be trained by one optimizer at a time (dispose() that one first)",
  );
  expectError(
    () => all.gpt2.dispose(),
    "gpt2: its parameters belong to the MultiModelOptimizer over [bert, gpt2, roberta]; dispose() that first",
  );
  first.dispose();
  // Handed back: a new optimizer may take the model now.
  new MultiModelOptimizer({ models: { bert: all.bert } }).dispose();
});

Deno.test("an optimizer used after dispose() throws naming it; its models keep working with their values", async () => {
  const all = models();
  const optimizer = new MultiModelOptimizer({ models: all, lr: 0.1 });
  for (let i = 0; i < 2; i++) {
    optimizer.zeroGrad();
    backward(all);
    optimizer.step();
  }
  const lossBefore = await tidy(() => all.roberta.eval().forward(batch()).loss!).item();
  const valuesBefore = await readAll(all.roberta.parameters.map((p) => p.value));
  const stale: Tensor = all.roberta.parameters[0].value;
  optimizer.dispose();
  const prefix = "MultiModelOptimizer over [bert, gpt2, roberta]: ";
  expectError(() => optimizer.step(), `${prefix}step() called after dispose()`);
  expectError(() => optimizer.zeroGrad(), `${prefix}zeroGrad() called after dispose()`);
  expectError(() => optimizer.logMetrics({ bert: 1 }), `${prefix}logMetrics() called after dispose()`);
  let message = "";
  await optimizer.stateDict().catch((e: Error) => (message = e.message));
  if (message !== `${prefix}stateDict() called after dispose()`) throw new Error(message);
  const valuesAfter = await readAll(all.roberta.parameters.map((p) => p.value));
  valuesAfter.forEach((v, i) =>
    assertBitwiseEqual(v, valuesBefore[i], `roberta parameter ${i} after dispose`)
  );
  const lossAfter = await tidy(() => all.roberta.forward(batch()).loss!).item();
  if (lossAfter !== lossBefore) throw new Error(`loss ${lossAfter} after dispose, ${lossBefore} before`);
  // A reference taken before is stale; its error says why, since the user never disposed it.
  expectError(
    () => stale.range(),
    `tensor "${
      all.roberta.parameters[0].info.name
    }" float32[20, 8] was used after dispose() (the optimizer ` +
      "holding its model's parameters was disposed and handed them back to the model: read " +
      "model.parameters[i].value again)",
  );
  all.roberta.dispose();
  expectError(() => all.roberta.forward(batch()), "roberta: used after dispose()");
});

Deno.test("freezing a parameter with requiresGrad = false is refused at the forward and the step, not ignored", async () => {
  const all = models();
  const model = all.bert;
  const frozen = model.parameters.find((p) => p.info.name.endsWith("word_embeddings.weight"))!;
  frozen.value.requiresGrad = false;
  let message = "";
  try {
    tidy(() => model.forward({ inputIds: tensor(Int32Array.of(3, 4, 5), { shape: [1, 3] }) }));
  } catch (e) {
    message = (e as Error).message;
  }
  if (
    !message.includes(
      `parameter "bert.embeddings.word_embeddings.weight" has requiresGrad false, but freezing`,
    )
  ) {
    throw new Error(message);
  }
  // Set before an optimizer adopts the model (PyTorch's order), the setting survives the move to its arena.
  const optimizer = new MultiModelOptimizer({ models: { bert: model } });
  if (frozen.value.requiresGrad) throw new Error("the optimizer's arena dropped requiresGrad = false");
  let adopted = "";
  try {
    tidy(() => model.forward({ inputIds: tensor(Int32Array.of(3, 4, 5), { shape: [1, 3] }) }));
  } catch (e) {
    adopted = (e as Error).message;
  }
  if (!adopted.includes("has requiresGrad false, but freezing")) throw new Error(adopted);
  // A model of one's own reads parameters' values, not slots: step() refuses to move a frozen one.
  const before = (await readAll([frozen.value]))[0];
  expectError(
    () => optimizer.step(),
    `MultiModelOptimizer.step: parameter "bert.embeddings.word_embeddings.weight" of "bert" has requiresGrad ` +
      "false, but freezing parameters is not supported: AdamW would still move it (its moments and weight decay)",
  );
  frozen.value.requiresGrad = true;
  const stepped = optimizer.step();
  assertBitwiseEqual(
    (await readAll([frozen.value]))[0],
    before,
    "a zero gradient without decay moves nothing",
  );
  if (!stepped || (await optimizer.metrics()).models.bert.updates !== 1) {
    throw new Error("the refused step() was counted");
  }
  optimizer.dispose();
  for (const m of Object.values(all)) m.dispose();
});

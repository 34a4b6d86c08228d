/** Loading a checkpoint into another head with allowNewHead follows Hugging Face's rule for the pooler. */
import { modelConfig } from "../models/config.ts";
import { loadPretrained, loadWeights, savePretrained } from "../models/checkpoint.ts";
import { TransformerModel } from "../models/model.ts";
import { readSafetensors } from "../models/safetensors.ts";
import { setup } from "./helpers.ts";

await setup();

const SIZE = {
  hiddenSize: 8,
  numHeads: 2,
  numLayers: 1,
  intermediateSize: 16,
  vocabSize: 20,
  maxPositions: 12,
};

Deno.test("a masked-LM BERT becomes a sequence classifier with a new pooler and head, and back", async () => {
  const folder = await Deno.makeTempDir({ prefix: "heads-" });
  const lm = new TransformerModel(modelConfig("bert", SIZE), { task: "masked-lm", seed: 1 });
  await savePretrained(lm, `${folder}/lm`);
  const classifier = await loadPretrained(`${folder}/lm`, {
    task: "sequence-classification",
    allowNewHead: true,
  });
  const fresh = new TransformerModel(modelConfig("bert", SIZE), { task: "sequence-classification" });
  const { tensors } = await readSafetensors(`${folder}/lm/model.safetensors`);
  const report = loadWeights(fresh, tensors, "lm", { allowNewHead: true });
  const expected = [
    "bert.pooler.dense.weight",
    "bert.pooler.dense.bias",
    "classifier.weight",
    "classifier.bias",
  ];
  if (report.newlyInitialized.join() !== expected.join()) throw new Error(`new: ${report.newlyInitialized}`);
  if (!report.ignored.every((n) => n.startsWith("cls."))) throw new Error(`ignored: ${report.ignored}`);
  // Without allowNewHead the strict check stays.
  let message = "";
  try {
    loadWeights(
      new TransformerModel(modelConfig("bert", SIZE), { task: "sequence-classification" }),
      tensors,
      "lm",
    );
  } catch (e) {
    message = (e as Error).message;
  }
  if (!message.startsWith("lm: tensors do not match the expected set (4 missing, 5 unexpected")) {
    throw new Error(message);
  }
  await savePretrained(classifier, `${folder}/classifier`);
  const back = await readSafetensors(`${folder}/classifier/model.safetensors`);
  const lmAgain = new TransformerModel(modelConfig("bert", SIZE), { task: "masked-lm" });
  const reverse = loadWeights(lmAgain, back.tensors, "classifier", { allowNewHead: true });
  if (!reverse.ignored.includes("bert.pooler.dense.weight")) throw new Error(`ignored: ${reverse.ignored}`);
  for (const m of [lm, classifier, fresh, lmAgain]) m.dispose();
  await Deno.remove(folder, { recursive: true });
});

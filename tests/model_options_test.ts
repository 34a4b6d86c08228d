/**
 * Model options at their boundaries: each dropout field of the configuration acts where Hugging Face
 * applies it, and nowhere else (all at 0, train mode equals eval mode bit for bit; each alone at 0.3,
 * it changes what it should); and numLabels at 1 (the regression head: HF's MSE loss of the single
 * logit against float labels), 2 (default), many, and past its bounds. The values of LayerNorm eps and
 * the activations are in model_reference_test.ts, the regression head against Hugging Face in
 * heads_parity_test.ts; docs/reliability.md lists which test covers each option.
 */
import { manualSeed } from "../engine/random.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { type ModelConfig, modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { type ModelOutput, TransformerModel } from "../models/model.ts";
import { loadPretrained, savePretrained } from "../models/pretrained.ts";
import { assertBitwiseEqual, assertClose, setup } from "./helpers.ts";

await setup();

const SMALL = {
  hiddenSize: 16,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 24,
  vocabSize: 50,
  maxPositions: 20,
};

type DropoutField = "hiddenDropout" | "embeddingDropout" | "attentionDropout" | "classifierDropout";
const FIELDS: DropoutField[] = ["hiddenDropout", "embeddingDropout", "attentionDropout", "classifierDropout"];

function ids(values: number[][]): Tensor {
  return tensor(Int32Array.from(values.flat()), { shape: [values.length, values[0].length] });
}

/** The logits of one batch in train mode (dropout seeded) and in eval mode. */
async function trainAndEval(config: ModelConfig, task: Task): Promise<[Float32Array, Float32Array]> {
  const model = new TransformerModel(config, { task, numLabels: 3, seed: 4 });
  const batch = { inputIds: ids([[3, 7, 9, 4, 11, 2], [5, 8, 6, 12, 10, 13]]) };
  const logits = (o: ModelOutput) => o.logits!;
  manualSeed(21);
  const train = logits(model.train().forward(batch));
  const evaluated = logits(model.eval().forward(batch));
  const [a, b] = await readAll([train, evaluated]);
  model.dispose();
  return [a as Float32Array, b as Float32Array];
}

/** Each family's configuration with every dropout field 0 except `field` (none: all 0). */
function configWith(family: ModelFamily, field: DropoutField | null, p = 0.3): ModelConfig {
  const zero = { hiddenDropout: 0, embeddingDropout: 0, attentionDropout: 0, classifierDropout: 0 };
  return modelConfig(family, { ...SMALL, ...zero, ...(field ? { [field]: p } : {}) });
}

/**
 * Where each field acts per family and head (Hugging Face's modules): BERT and RoBERTa drop after the
 * embeddings with hidden_dropout_prob (embeddingDropout follows it unless set), GPT-2 with embd_pdrop;
 * sequence classification uses classifier dropout in BERT and RoBERTa but none in GPT-2, whose token
 * classifier does.
 */
const ACTS: Record<ModelFamily, Record<DropoutField, boolean>> = {
  bert: { hiddenDropout: true, embeddingDropout: false, attentionDropout: true, classifierDropout: true },
  roberta: { hiddenDropout: true, embeddingDropout: false, attentionDropout: true, classifierDropout: true },
  gpt2: { hiddenDropout: true, embeddingDropout: true, attentionDropout: true, classifierDropout: true },
};

for (const family of ["bert", "gpt2", "roberta"] as const) {
  Deno.test(`${family}: each dropout field acts where Hugging Face applies it; all at 0, train equals eval`, async () => {
    const task: Task = family === "gpt2" ? "token-classification" : "sequence-classification";
    const [train, evaluated] = await trainAndEval(configWith(family, null), task);
    assertBitwiseEqual(train, evaluated, `${family}: every dropout 0`);
    for (const field of FIELDS) {
      const [t, e] = await trainAndEval(configWith(family, field), task);
      const changed = t.some((v, i) => v !== e[i]);
      if (changed !== ACTS[family][field]) {
        throw new Error(
          `${family}: ${field} 0.3 alone ${changed ? "changed" : "left"} the train-mode logits`,
        );
      }
    }
  });
}

Deno.test("GPT-2's sequence classifier has no dropout of its own; its token classifier uses 0.1 when unset", async () => {
  const unset = modelConfig("gpt2", {
    ...SMALL,
    hiddenDropout: 0,
    embeddingDropout: 0,
    attentionDropout: 0,
    classifierDropout: null,
  });
  const [seqTrain, seqEval] = await trainAndEval(unset, "sequence-classification");
  assertBitwiseEqual(seqTrain, seqEval, "sequence classification");
  const [tokTrain, tokEval] = await trainAndEval(unset, "token-classification");
  if (tokTrain.every((v, i) => v === tokEval[i])) throw new Error("token classifier: no dropout with null");
});

Deno.test("numLabels 1 is regression: the loss is the mean squared error of the logit against float labels", async () => {
  for (const family of ["bert", "gpt2", "roberta"] as const) {
    const config = modelConfig(family, { ...SMALL, ...(family === "gpt2" ? { padTokenId: 0 } : {}) });
    const model = new TransformerModel(config, { task: "sequence-classification", numLabels: 1, seed: 8 })
      .eval();
    const labels = Float32Array.of(0.25, -1.5, 3);
    const out = model.forward({
      inputIds: ids([[3, 7, 9, 4], [5, 8, 6, 12], [2, 14, 3, 9]]),
      labels: tensor(labels, { shape: [3] }),
    });
    const [logits, loss] = await readAll([out.logits!, out.loss!]);
    if (logits.length !== 3) throw new Error(`${family}: logits of ${logits.length} values, expected [3, 1]`);
    const mse = labels.reduce((s, t, i) => s + (logits[i] - t) ** 2, 0) / 3;
    assertClose(loss, [mse], { atol: 1e-5 * Math.max(1, mse) }, `${family}: MSE`);
    model.dispose();
  }
});

Deno.test("labels name the classes: saved as Hugging Face's id2label and label2id, read back, dropped by a new head", async () => {
  const config = modelConfig("bert", SMALL);
  const unnamed = new TransformerModel(config, { task: "sequence-classification", allocate: false });
  if (unnamed.labels !== null) throw new Error(`default labels ${unnamed.labels}`);
  const labels = ["negative", "neutral", "positive"];
  const named = new TransformerModel(config, { task: "sequence-classification", labels });
  if (named.numLabels !== 3 || named.labels?.join() !== labels.join()) {
    throw new Error(`labels: ${named.numLabels} ${named.labels}`);
  }
  const folder = await Deno.makeTempDir({ prefix: "labels-" });
  await savePretrained(named, folder);
  named.dispose();
  const json = JSON.parse(await Deno.readTextFile(`${folder}/config.json`));
  const expected = {
    id2label: { 0: "negative", 1: "neutral", 2: "positive" },
    label2id: { negative: 0, neutral: 1, positive: 2 },
  };
  if (
    JSON.stringify([json.id2label, json.label2id]) !== JSON.stringify([expected.id2label, expected.label2id])
  ) {
    throw new Error(`config.json: ${JSON.stringify([json.id2label, json.label2id])}`);
  }
  const loaded = await loadPretrained(folder);
  if (loaded.labels?.join() !== labels.join()) throw new Error(`loaded labels ${loaded.labels}`);
  loaded.dispose();
  // Into a head of another count the file's names do not fit: none.
  const other = await loadPretrained(folder, {
    task: "token-classification",
    numLabels: 5,
    allowNewHead: true,
    ignoreMismatchedSizes: true,
  });
  if (other.labels !== null) throw new Error(`labels of a new head: ${other.labels}`);
  other.dispose();
  // Names given for a new head size it, as from_pretrained(id2label=...) does.
  const four = ["a", "b", "c", "d"];
  const renamed = await loadPretrained(folder, {
    labels: four,
    allowNewHead: true,
    ignoreMismatchedSizes: true,
  });
  if (renamed.numLabels !== 4 || renamed.labels?.join() !== four.join()) {
    throw new Error(`given labels: ${renamed.numLabels} ${renamed.labels}`);
  }
  renamed.dispose();
  // A head without classes takes no names from the file, even one that happens to fit (numLabels 1).
  const json1 = { ...json, num_labels: 1, id2label: { 0: "LABEL_0" }, label2id: { LABEL_0: 0 } };
  await Deno.writeTextFile(`${folder}/config.json`, JSON.stringify(json1));
  const qa = await loadPretrained(folder, {
    task: "question-answering",
    numLabels: 1,
    allowNewHead: true,
    ignoreMismatchedSizes: true,
  });
  if (qa.labels !== null) throw new Error(`a QA head's labels: ${qa.labels}`);
  qa.dispose();
  await Deno.remove(folder, { recursive: true });
  let message = "";
  try {
    new TransformerModel(config, { name: "m", numLabels: 2, labels, allocate: false });
  } catch (e) {
    message = (e as Error).message;
  }
  let duplicate = "";
  try {
    new TransformerModel(config, { name: "m", labels: ["a", "a"], allocate: false });
  } catch (e) {
    duplicate = (e as Error).message;
  }
  if (!duplicate.startsWith("m: labels must be 2 distinct names")) {
    throw new Error(`duplicates: "${duplicate}"`);
  }
  if (message !== 'm: labels must be 2 distinct names (numLabels), got ["negative","neutral","positive"]') {
    throw new Error(message);
  }
});

Deno.test("numLabels: default 2, many classes (1000), and 0, 1.5 and 2^20 + 1 refused by name", async () => {
  const config = modelConfig("bert", SMALL);
  const two = new TransformerModel(config, { task: "sequence-classification" });
  if (two.numLabels !== 2) throw new Error(`default numLabels ${two.numLabels}`);
  two.dispose();
  const many = new TransformerModel(config, { task: "token-classification", numLabels: 1000 }).eval();
  const out = many.forward({
    inputIds: ids([[3, 7, 9]]),
    labels: tensor(Int32Array.of(999, -100, 0), { shape: [1, 3] }),
  });
  const [logits, loss] = await readAll([out.logits!, out.loss!]);
  if (logits.length !== 3000 || !Number.isFinite(loss[0])) {
    throw new Error(`1000 labels: ${logits.length}, ${loss}`);
  }
  many.dispose();
  for (const numLabels of [0, 1.5, 2 ** 20 + 1]) {
    let message = "";
    try {
      new TransformerModel(config, {
        name: "m",
        task: "sequence-classification",
        numLabels,
        allocate: false,
      });
    } catch (e) {
      message = (e as Error).message;
    }
    if (message !== `m: numLabels must be an integer in [1, ${2 ** 20}], got ${numLabels}`) {
      throw new Error(`numLabels ${numLabels}: "${message}"`);
    }
  }
});

Deno.test("misspelt model options and configuration fields are refused, naming the accepted ones", async () => {
  const refusals: [() => unknown, string][] = [
    [
      () =>
        new TransformerModel(modelConfig("bert", { hiddenSize: 8, numHeads: 2 }), { num_labels: 5 } as never),
      'TransformerModel: unknown option "num_labels" (did you mean "numLabels"?); accepted: name, task, numLabels, labels, seed, allocate',
    ],
    [
      () => modelConfig("bert", { hidden_size: 32 } as never),
      'modelConfig: unknown field "hidden_size" (fields: ',
    ],
    [
      () => modelConfig("bert", { constructor: 1 } as never),
      'modelConfig: unknown field "constructor" (fields: ',
    ],
  ];
  for (const [build, expected] of refusals) {
    let message = "";
    try {
      build();
    } catch (e) {
      message = (e as Error).message;
    }
    if (!message.startsWith(expected)) throw new Error(`expected "${expected}...", got "${message}"`);
  }
  let message = "";
  await loadPretrained("tests/fixtures/hf/bert", { allow_new_head: true } as never).catch((e) =>
    message = e.message
  );
  if (
    !message.startsWith(
      'loadPretrained: unknown option "allow_new_head" (did you mean "allowNewHead"?); accepted: name, task, numLabels',
    )
  ) {
    throw new Error(message);
  }
});

/**
 * Loading a checkpoint into another head: Hugging Face's rule under allowNewHead, the strict check
 * without it, label counts that differ, the warnings, configs without `architectures`, and
 * `is_decoder`. tests/load_matrix_test.ts holds every pair of heads against transformers itself.
 */
import { readAll, tensor } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { loadWarnings, loadWeights } from "../models/checkpoint.ts";
import { loadPretrainedWithReport, savePretrained } from "../models/pretrained.ts";
import { TransformerModel } from "../models/model.ts";
import { serializeSafetensors } from "../models/safetensors.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { assertBitwiseEqual, setup, thrownMessage } from "./helpers.ts";

await setup();

const HEADS = new URL("./fixtures/hf/heads/", import.meta.url).pathname;

const SIZE = {
  hiddenSize: 8,
  numHeads: 2,
  numLayers: 1,
  intermediateSize: 16,
  vocabSize: 20,
  maxPositions: 12,
};

/** A copy of a head folder's config.json and weights, with the config changed by `edit`. */
async function copyHead(name: string, edit: (config: Record<string, unknown>) => void): Promise<string> {
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: `${name}-` });
  const config = JSON.parse(await Deno.readTextFile(`${HEADS}${name}/config.json`));
  edit(config);
  await Deno.writeTextFile(`${folder}/config.json`, JSON.stringify(config));
  await Deno.copyFile(`${HEADS}${name}/model.safetensors`, `${folder}/model.safetensors`);
  return folder;
}

Deno.test("a masked-LM BERT becomes a sequence classifier with a new pooler and head, and back", async () => {
  const folder = await Deno.makeTempDir({ prefix: "heads-" });
  const lm = new TransformerModel(modelConfig("bert", SIZE), { task: "masked-lm", seed: 1 });
  await savePretrained(lm, `${folder}/lm`);
  const { model: classifier, report } = await loadPretrainedWithReport(`${folder}/lm`, {
    task: "sequence-classification",
    allowNewHead: true,
  });
  const expected = [
    "bert.pooler.dense.weight",
    "bert.pooler.dense.bias",
    "classifier.weight",
    "classifier.bias",
  ];
  if (report.newlyInitialized.join() !== expected.join()) throw new Error(`new: ${report.newlyInitialized}`);
  if (report.ignored.length !== 5 || !report.ignored.every((n) => n.startsWith("cls."))) {
    throw new Error(`ignored: ${report.ignored}`);
  }
  const warnings = loadWarnings(report, classifier, "lm");
  if (
    warnings.length !== 2 ||
    !warnings[0].startsWith(
      "Some weights of the model checkpoint at lm were not used when initializing BertForSequenceClassification: ['cls.",
    ) ||
    !warnings[1].startsWith(
      "Some weights of BertForSequenceClassification were not initialized from the model checkpoint at lm " +
        "and are newly initialized: ['bert.pooler.dense.weight', ",
    )
  ) {
    throw new Error(warnings.join("\n"));
  }
  // Without allowNewHead the strict check stays.
  const { tensors } = await readSafetensors(`${folder}/lm/model.safetensors`);
  const strict = new TransformerModel(modelConfig("bert", SIZE), { task: "sequence-classification" });
  const refused = await thrownMessage(() => loadWeights(strict, tensors, "lm"));
  if (
    !refused.startsWith("lm: tensors do not match the expected set (4 missing, 5 unexpected") ||
    !refused.endsWith(
      "\nallowNewHead initialises a head the file does not hold (Hugging Face's from_pretrained does, with a warning)",
    )
  ) {
    throw new Error(refused);
  }
  await savePretrained(classifier, `${folder}/classifier`);
  const back = await readSafetensors(`${folder}/classifier/model.safetensors`);
  const lmAgain = new TransformerModel(modelConfig("bert", SIZE), { task: "masked-lm" });
  const reverse = loadWeights(lmAgain, back.tensors, "classifier", { allowNewHead: true });
  if (
    reverse.ignored.join() !==
      "bert.pooler.dense.weight,bert.pooler.dense.bias,classifier.weight,classifier.bias"
  ) {
    throw new Error(`ignored: ${reverse.ignored}`);
  }
  if (loadWarnings(loadWeights(lmAgain, tensors, "lm"), lmAgain, "lm").length !== 0) {
    throw new Error("a complete load warns");
  }
  for (const m of [lm, classifier, strict, lmAgain]) m.dispose();
  await Deno.remove(folder, { recursive: true });
});

Deno.test("buffers Hugging Face never loads are ignored quietly, even by the strict check", async () => {
  const { tensors } = await readSafetensors(`${HEADS}bert-sequence-classification/model.safetensors`);
  tensors.set("bert.embeddings.position_ids", { shape: [1, 40], data: new Int32Array(40) });
  const { model } = await loadPretrainedWithReport(`${HEADS}bert-sequence-classification`);
  const report = loadWeights(model, tensors, "file");
  if (report.ignored.length + report.newlyInitialized.length !== 0) throw new Error(JSON.stringify(report));
  model.dispose();
  const gpt2 = (await readSafetensors(`${HEADS}gpt2-base/model.safetensors`)).tensors;
  gpt2.set("h.0.attn.bias", { shape: [1, 1, 40, 40], data: new Float32Array(1600) });
  const decoder = (await loadPretrainedWithReport(`${HEADS}gpt2-base`)).model;
  if (loadWeights(decoder, gpt2, "gpt2").ignored.length !== 0) throw new Error("attn.bias reported");
  decoder.dispose();
});

Deno.test("older LayerNorm.gamma / .beta names load as weight and bias, as transformers renames them", async () => {
  const { tensors } = await readSafetensors(`${HEADS}bert-base/model.safetensors`);
  const legacy = new Map(
    [...tensors].map((
      [name, t],
    ) => [
      name.replace(/LayerNorm\.weight$/, "LayerNorm.gamma").replace(/LayerNorm\.bias$/, "LayerNorm.beta"),
      t,
    ]),
  );
  if ([...legacy.keys()].filter((n) => n.endsWith("LayerNorm.gamma")).length === 0) {
    throw new Error("no LayerNorm");
  }
  const { model } = await loadPretrainedWithReport(`${HEADS}bert-base`);
  const report = loadWeights(model, legacy, "legacy file");
  if (report.ignored.length + report.newlyInitialized.length !== 0) throw new Error(JSON.stringify(report));
  model.dispose();
});

Deno.test("untied language-model decoders and GPT-2's other attention scales are refused, naming the field", async () => {
  const untied = await copyHead("gpt2-causal-lm", (c) => (c.tie_word_embeddings = false));
  const lost = await thrownMessage(() => loadPretrainedWithReport(untied));
  if (!lost.includes(`${untied}/config.json: field "tie_word_embeddings" is false`)) throw new Error(lost);
  // Into another head the decoder is not used, so the folder loads.
  (await loadPretrainedWithReport(untied, { task: "base", allowNewHead: true })).model.dispose();
  for (
    const [key, value] of [["scale_attn_weights", false], ["scale_attn_by_inverse_layer_idx", true]] as const
  ) {
    const folder = await copyHead("gpt2-base", (c) => (c[key] = value));
    const refused = await thrownMessage(() => loadPretrainedWithReport(folder));
    if (!refused.includes(`field "${key}" is ${value}`)) throw new Error(refused);
    await Deno.remove(folder, { recursive: true });
  }
  await Deno.remove(untied, { recursive: true });
});

Deno.test("a BERT causal LM is saved as transformers' BertLMHeadModel", async () => {
  const model = new TransformerModel(modelConfig("bert", { ...SIZE, isDecoder: true }), {
    task: "causal-lm",
  });
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  await savePretrained(model, folder);
  const config = JSON.parse(await Deno.readTextFile(`${folder}/config.json`));
  if (config.architectures.join() !== "BertLMHeadModel") {
    throw new Error(`architectures ${config.architectures}`);
  }
  const { model: loaded } = await loadPretrainedWithReport(folder);
  if (loaded.task !== "causal-lm") throw new Error(`loaded as ${loaded.task}`);
  [model, loaded].forEach((m) => m.dispose());
  await Deno.remove(folder, { recursive: true });
});

Deno.test("allowNewHead still refuses a file of another model, and a tensor given under both names", async () => {
  const { model } = await loadPretrainedWithReport(`${HEADS}bert-base`);
  const gpt2 = (await readSafetensors(`${HEADS}gpt2-base/model.safetensors`)).tensors;
  const foreign = await thrownMessage(() => loadWeights(model, gpt2, "gpt2 file", { allowNewHead: true }));
  if (foreign !== 'gpt2 file: holds none of the body tensors of "bert": not a bert checkpoint') {
    throw new Error(foreign);
  }
  const { tensors } = await readSafetensors(`${HEADS}bert-base/model.safetensors`);
  tensors.set("bert.pooler.dense.bias", tensors.get("pooler.dense.bias")!);
  const twice = await thrownMessage(() => loadWeights(model, tensors, "file", { allowNewHead: true }));
  if (
    twice !== 'file: "pooler.dense.bias" and "bert.pooler.dense.bias" are the same tensor "pooler.dense.bias"'
  ) {
    throw new Error(twice);
  }
  model.dispose();
});

Deno.test("a classifier of another label count is refused, naming both shapes, or re-initialised on request", async () => {
  const folder = `${HEADS}bert-sequence-classification`;
  const refused = await thrownMessage(() =>
    loadPretrainedWithReport(folder, { numLabels: 2, allowNewHead: true })
  );
  for (
    const fragment of [
      `${folder}/model.safetensors`,
      'wrong shape "classifier.weight": expected [2, 32], found [3, 32]',
      'wrong shape "classifier.bias": expected [2], found [3]',
      "ignoreMismatchedSizes",
    ]
  ) {
    if (!refused.includes(fragment)) throw new Error(`"${fragment}" not in: ${refused}`);
  }
  const { model, report } = await loadPretrainedWithReport(folder, {
    numLabels: 2,
    ignoreMismatchedSizes: true,
  });
  const mismatched = report.mismatched.map((m) => `${m.name} ${m.found} ${m.expected}`).join("; ");
  if (
    mismatched !== "classifier.weight 3,32 2,32; classifier.bias 3 2" || report.newlyInitialized.length > 0
  ) {
    throw new Error(JSON.stringify(report));
  }
  const warnings = loadWarnings(report, model, "f");
  if (
    warnings.length !== 1 ||
    !warnings[0].endsWith(
      "because the shapes did not match: classifier.weight: found shape [3, 32] in the checkpoint and " +
        "[2, 32] in the model; classifier.bias: found shape [3] in the checkpoint and [2] in the model",
    )
  ) {
    throw new Error(warnings.join("\n"));
  }
  const [weight] = await readAll([model.parameters.find((p) => p.info.name === "classifier.weight")!.value]);
  if (weight.length !== 64) throw new Error(`classifier.weight has ${weight.length} values`);
  model.dispose();
});

const INFERRED: Record<string, [string, number]> = {
  "base": ["base", 2],
  "sequence-classification": ["sequence-classification", 3],
  "regression": ["sequence-classification", 1],
  "token-classification": ["token-classification", 3],
  "question-answering": ["question-answering", 2],
  "causal-lm": ["causal-lm", 2],
  "masked-lm": ["masked-lm", 2],
};

Deno.test("configs without architectures load every head from its tensor names", async () => {
  const names = (await Array.fromAsync(Deno.readDir(HEADS))).filter((e) => e.isDirectory).map((e) => e.name);
  if (names.length !== 20) throw new Error(`${names.length} head folders`);
  for (const name of names) {
    const folder = await copyHead(name, (config) => delete config.architectures);
    const { model, report } = await loadPretrainedWithReport(folder);
    const [task, labels] = INFERRED[name.slice(name.indexOf("-") + 1)];
    const classifier = task === "sequence-classification" || task === "token-classification";
    if (model.task !== task || (classifier && model.numLabels !== labels)) {
      throw new Error(`${name}: loaded as ${model.task} with ${model.numLabels} labels`);
    }
    if (report.newlyInitialized.length + report.ignored.length > 0) throw new Error(`${name}: ${report}`);
    model.dispose();
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("a bare BERT without its pooler is still a bare BERT: the pooler is newly initialised, or missing", async () => {
  const folder = await copyHead("bert-base", (config) => delete config.architectures);
  const { tensors } = await readSafetensors(`${folder}/model.safetensors`);
  for (const name of [...tensors.keys()]) if (name.startsWith("pooler.")) tensors.delete(name);
  await Deno.writeFile(`${folder}/model.safetensors`, serializeSafetensors(tensors));
  const strict = await thrownMessage(() => loadPretrainedWithReport(folder));
  if (!strict.includes('missing "pooler.dense.weight"')) throw new Error(strict);
  const { model, report } = await loadPretrainedWithReport(folder, { allowNewHead: true });
  if (model.task !== "base" || report.newlyInitialized.join() !== "pooler.dense.weight,pooler.dense.bias") {
    throw new Error(`${model.task}: ${JSON.stringify(report)}`);
  }
  model.dispose();
  await Deno.remove(folder, { recursive: true });
});

/** The last hidden state for two batches that differ only in their last token. */
async function withLastTokenChanged(model: TransformerModel): Promise<[Float32Array, Float32Array]> {
  const run = (last: number) =>
    model.forward({ inputIds: tensor(Int32Array.of(2, 17, 33, 9, 41, last), { shape: [1, 6] }) })
      .lastHiddenState;
  const [a, b] = await readAll([run(50), run(60)]);
  return [a as Float32Array, b as Float32Array];
}

Deno.test("is_decoder makes BERT and RoBERTa attention causal whatever the head, as in Hugging Face", async () => {
  const C = 32;
  for (const family of ["bert", "roberta"]) {
    // The causal LM's config says is_decoder: loaded as a bare body it stays causal, and computes the LM's body.
    const decoder = await loadPretrainedWithReport(`${HEADS}${family}-causal-lm`, {
      task: "base",
      allowNewHead: true,
    });
    if (!decoder.model.config.isDecoder) throw new Error(`${family}: is_decoder not read`);
    const [a, b] = await withLastTokenChanged(decoder.model);
    assertBitwiseEqual(a.subarray(0, 5 * C), b.subarray(0, 5 * C), `${family} decoder: earlier positions`);
    const lm = await loadPretrainedWithReport(`${HEADS}${family}-causal-lm`);
    const [lmHidden] = await withLastTokenChanged(lm.model);
    assertBitwiseEqual(a, lmHidden, `${family}: the bare decoder computes the causal LM's body`);
    // The masked LM's is not a decoder: every position sees the last token.
    const encoder = await loadPretrainedWithReport(`${HEADS}${family}-masked-lm`, {
      task: "base",
      allowNewHead: true,
    });
    const [c, d] = await withLastTokenChanged(encoder.model);
    if (c.subarray(0, C).every((v, i) => v === d[i])) {
      throw new Error(`${family} encoder: the first position is blind`);
    }
    for (const m of [decoder.model, lm.model, encoder.model]) m.dispose();
  }
  // A model built in code with isDecoder saves is_decoder: true, and loads back causal.
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "decoder-" });
  const built = new TransformerModel(modelConfig("bert", { ...SIZE, isDecoder: true }), {
    task: "sequence-classification",
  });
  await savePretrained(built, folder);
  const json = JSON.parse(await Deno.readTextFile(`${folder}/config.json`));
  const again = await loadPretrainedWithReport(folder);
  if (json.is_decoder !== true || !again.model.config.isDecoder) throw new Error("is_decoder not saved");
  for (const m of [built, again.model]) m.dispose();
  await Deno.remove(folder, { recursive: true });
});

Deno.test("a config naming a head this library lacks is refused unless a task is given", async () => {
  const folder = await copyHead(
    "bert-sequence-classification",
    (c) => (c.architectures = ["BertForMultipleChoice"]),
  );
  const message = await thrownMessage(() => loadPretrainedWithReport(folder));
  if (
    !message.includes(
      `${folder}/config.json: field "architectures" names BertForMultipleChoice, a head this`,
    ) ||
    !message.includes("pass a task (")
  ) {
    throw new Error(message);
  }
  const { model } = await loadPretrainedWithReport(folder, { task: "sequence-classification" });
  model.dispose();
  await Deno.remove(folder, { recursive: true });
  // An empty list names no architecture: the tensors decide, as without the field.
  const unnamed = await copyHead("bert-sequence-classification", (c) => (c.architectures = []));
  const loaded = await loadPretrainedWithReport(unnamed);
  if (loaded.model.task !== "sequence-classification") throw new Error(loaded.model.task);
  loaded.model.dispose();
  await Deno.remove(unnamed, { recursive: true });
});

Deno.test("a bad num_labels or a folder where the weights file should be is named", async () => {
  const folder = await copyHead("bert-sequence-classification", (c) => {
    delete c.id2label;
    c.num_labels = -1;
  });
  const labels = await thrownMessage(() => loadPretrainedWithReport(folder));
  if (!labels.includes(`${folder}/config.json: field "num_labels" must be a positive integer, got -1`)) {
    throw new Error(labels);
  }
  await Deno.remove(`${folder}/model.safetensors`);
  await Deno.mkdir(`${folder}/model.safetensors`);
  for (
    const read of [
      () => readSafetensors(`${folder}/model.safetensors`),
      () => loadPretrainedWithReport(folder),
    ]
  ) {
    const message = await thrownMessage(read);
    if (!message.includes(`${folder}/model.safetensors: `)) throw new Error(message);
  }
  await Deno.remove(folder, { recursive: true });
});

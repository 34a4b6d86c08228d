/**
 * Configurations: every size is bounded, impossible values are refused with the file and the
 * Hugging Face field in the error, and a folder whose weights do not fit its configuration fails
 * before the model allocates GPU memory.
 */
import { poolStats } from "../engine/pool.ts";
import { loadPretrained, modelFromConfigFile, savePretrained } from "../models/pretrained.ts";
import {
  configFromHf,
  configToHf,
  type ModelConfig,
  modelConfig,
  type ModelFamily,
} from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { expectError, setup } from "./helpers.ts";

await setup();

const SMALL = {
  hiddenSize: 16,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 24,
  vocabSize: 50,
  maxPositions: 20,
};

function hfJson(family: ModelFamily, overrides: Partial<ModelConfig> = {}): Record<string, unknown> {
  return configToHf(modelConfig(family, { ...SMALL, ...overrides }));
}

/** The message of the error `fn` throws (or rejects with); fails when it does not throw. */
async function errorOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("nothing was thrown");
}

async function expectFragments(fn: () => unknown, fragments: string[]): Promise<void> {
  const message = await errorOf(fn);
  for (const f of fragments) if (!message.includes(f)) throw new Error(`expected "${f}" in "${message}"`);
}

Deno.test("a configuration of 1e9 layers fails at once, from a file or from code", async () => {
  const started = performance.now();
  await expectFragments(
    () => configFromHf({ ...hfJson("bert"), num_hidden_layers: 1e9 }, "huge/config.json"),
    [
      "huge/config.json",
      'field "num_hidden_layers" must be an integer in [1, 1024], got 1000000000',
    ],
  );
  await expectFragments(() => modelConfig("gpt2", { numLayers: 1e9 }), ['field "numLayers"', "1000000000"]);
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  await Deno.writeTextFile(`${folder}/config.json`, JSON.stringify({ ...hfJson("gpt2"), n_layer: 1e9 }));
  await expectFragments(() => modelFromConfigFile(`${folder}/config.json`), [
    `${folder}/config.json`,
    'field "n_layer"',
  ]);
  await expectFragments(() => loadPretrained(folder), [`${folder}/config.json`, 'field "n_layer"']);
  await Deno.remove(folder, { recursive: true });
  const elapsed = performance.now() - started;
  if (elapsed > 500) throw new Error(`took ${elapsed.toFixed(0)} ms`);
});

Deno.test("every size is bounded and every impossible value is refused, naming the file and the field", async () => {
  const cases: [ModelFamily, Record<string, unknown>, string][] = [
    ["bert", { num_hidden_layers: 0 }, 'field "num_hidden_layers" must be an integer in [1, 1024], got 0'],
    ["bert", { num_hidden_layers: 2.5 }, 'field "num_hidden_layers" must be an integer'],
    ["bert", { num_hidden_layers: "12" }, 'field "num_hidden_layers" must be a number, got "12"'],
    ["bert", { hidden_size: 2 ** 20 }, 'field "hidden_size" must be an integer in [1, 65536]'],
    ["bert", { num_attention_heads: 5 }, 'field "num_attention_heads" must divide "hidden_size"'],
    ["bert", { hidden_size: 1024, num_attention_heads: 2, intermediate_size: 64 }, "heads of 512 > 256"],
    ["bert", { intermediate_size: 1e7 }, 'field "intermediate_size" must be an integer in [1, 262144]'],
    ["bert", { vocab_size: 2 ** 25 }, 'field "vocab_size" must be an integer in [1, 16777216]'],
    ["bert", { max_position_embeddings: 1e7 }, 'field "max_position_embeddings" must be an integer'],
    ["bert", { type_vocab_size: 0 }, 'field "type_vocab_size" must be an integer in [1, 1024], got 0'],
    ["bert", { layer_norm_eps: 0 }, 'field "layer_norm_eps" must be positive and finite in float32, got 0'],
    ["bert", { layer_norm_eps: -1e-5 }, 'field "layer_norm_eps" must be positive'],
    ["bert", { layer_norm_eps: 1e-50 }, 'field "layer_norm_eps" must be positive and finite in float32'],
    ["bert", { hidden_dropout_prob: 1 }, 'field "hidden_dropout_prob" must be in [0, 1), got 1'],
    [
      "bert",
      { attention_probs_dropout_prob: -0.1 },
      'field "attention_probs_dropout_prob" must be in [0, 1)',
    ],
    ["bert", { classifier_dropout: 1.5 }, 'field "classifier_dropout" must be in [0, 1)'],
    ["bert", { classifier_dropout: "0.1" }, 'field "classifier_dropout" must be a number or null'],
    ["bert", { hidden_act: "swish" }, 'field "hidden_act": unsupported activation "swish"'],
    ["bert", { pad_token_id: 50 }, 'field "pad_token_id" must be null or a token id in [0, 50), got 50'],
    ["bert", { pad_token_id: -1 }, 'field "pad_token_id" must be null or a token id'],
    ["bert", { initializer_range: -0.02 }, 'field "initializer_range" must be finite and non-negative'],
    ["bert", { vocab_size: 2 ** 24, hidden_size: 1024, num_attention_heads: 16 }, "more than 4294967296"],
    ["roberta", { pad_token_id: null }, 'field "pad_token_id" is needed by RoBERTa'],
    [
      "roberta",
      { max_position_embeddings: 2 },
      'field "max_position_embeddings" must exceed "pad_token_id" + 1',
    ],
    ["gpt2", { n_layer: 2000 }, 'field "n_layer" must be an integer in [1, 1024], got 2000'],
    ["gpt2", { n_head: 3 }, 'field "n_head" must divide "n_embd"'],
    ["gpt2", { layer_norm_epsilon: 0 }, 'field "layer_norm_epsilon" must be positive'],
    ["gpt2", { resid_pdrop: 1 }, 'field "resid_pdrop" must be in [0, 1)'],
    ["gpt2", { activation_function: "swish" }, 'field "activation_function": unsupported activation'],
  ];
  for (const [family, fields, fragment] of cases) {
    const source = `${family}/config.json`;
    await expectFragments(() => configFromHf({ ...hfJson(family), ...fields }, source), [source, fragment]);
  }
  for (const family of ["bert", "gpt2", "roberta"] as const) configFromHf(hfJson(family), family);
});

Deno.test("modelConfig refuses impossible overrides, naming the field", async () => {
  const cases: [Partial<ModelConfig>, string][] = [
    [{ layerNormEps: 0 }, 'field "layerNormEps" must be positive and finite in float32, got 0'],
    [{ layerNormEps: NaN }, 'field "layerNormEps" must be positive and finite in float32, got NaN'],
    [{ hiddenDropout: 1 }, 'field "hiddenDropout" must be in [0, 1), got 1'],
    [{ hiddenAct: "swish" as ModelConfig["hiddenAct"] }, 'field "hiddenAct" must be gelu, gelu_new or relu'],
    [{ padTokenId: 50 }, 'field "padTokenId" must be null or a token id in [0, 50)'],
    [{ vocabSize: 1.5 }, 'field "vocabSize" must be an integer'],
  ];
  for (const [overrides, fragment] of cases) {
    await expectFragments(() => modelConfig("bert", { ...SMALL, ...overrides }), [
      "bert configuration",
      fragment,
    ]);
  }
});

Deno.test("a folder whose weights do not fit its configuration fails before any GPU buffer is created", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  await savePretrained(new TransformerModel(modelConfig("bert", SMALL), { seed: 1 }), folder);
  await Deno.writeTextFile(`${folder}/config.json`, JSON.stringify(hfJson("bert", { numLayers: 3 })));
  const before = poolStats().buffersCreated;
  await expectFragments(() => loadPretrained(folder), [
    `${folder}/model.safetensors`,
    'missing "encoder.layer.2.attention.self.query.weight"',
  ]);
  if (poolStats().buffersCreated !== before) {
    throw new Error(`${poolStats().buffersCreated - before} GPU buffers created before the check failed`);
  }
  await Deno.writeTextFile(`${folder}/config.json`, '{"model_type": "bert",');
  await expectFragments(() => loadPretrained(folder), [`${folder}/config.json`, "not valid JSON"]);
  await Deno.remove(folder, { recursive: true });
});

Deno.test("a configuration built in code is checked by the model's constructor before any allocation", () => {
  const config = { ...modelConfig("bert", { hiddenSize: 8, numHeads: 2 }), numLayers: 1e9 };
  const started = performance.now();
  expectError(
    () => new TransformerModel(config),
    'bert configuration: field "numLayers" must be an integer in [1, 1024], got 1000000000',
  );
  if (performance.now() - started > 500) throw new Error("the check took too long");
  expectError(
    () => new TransformerModel(modelConfig("gpt2", { hiddenSize: 8, numHeads: 2 }), { numLabels: 0 }),
    "gpt2: numLabels must be an integer in [1, 1048576], got 0",
  );
});

Deno.test("a GPT-2 config.json names its bos and eos ids, none where the vocabulary lacks GPT-2's <|endoftext|>", () => {
  // GPT2Config would otherwise take 50256 for both, outside the vocabulary (transformers warns).
  const small = hfJson("gpt2");
  if (!("bos_token_id" in small) || small.bos_token_id !== null || small.eos_token_id !== null) {
    throw new Error(`small vocabulary: ${JSON.stringify(small)}`);
  }
  const full = hfJson("gpt2", { vocabSize: 50257 });
  if ("bos_token_id" in full || "eos_token_id" in full) {
    throw new Error(`GPT-2's own vocabulary: ${JSON.stringify(full)}`);
  }
  // A trained tokenizer's <s> and </s>: written, and read back; a file without them means none.
  const named = hfJson("gpt2", { bosTokenId: 0, eosTokenId: 2 });
  if (named.bos_token_id !== 0 || named.eos_token_id !== 2) throw new Error(JSON.stringify(named));
  const read = configFromHf(named, "named.json");
  if (read.bosTokenId !== 0 || read.eosTokenId !== 2) throw new Error(JSON.stringify(read));
  const { bos_token_id: _, eos_token_id: __, ...older } = named;
  const none = configFromHf(older, "older.json");
  if (none.bosTokenId !== null || none.eosTokenId !== null) throw new Error(JSON.stringify(none));
  if (configFromHf(hfJson("gpt2", { vocabSize: 50257 }), "gpt2.json").eosTokenId !== 50256) {
    throw new Error("GPT-2's own vocabulary keeps <|endoftext|>");
  }
  // A list (transformers stops at any of its ids) gives its first; GPT2Config's default saved with a smaller
  // vocabulary (transformers only warns) means none; a configuration without the fields writes none.
  if (configFromHf({ ...named, eos_token_id: [2, 3] }, "list.json").eosTokenId !== 2) {
    throw new Error("a list of eos ids");
  }
  const { bosTokenId: _b, eosTokenId: _e, ...unnamed } = modelConfig("gpt2", { vocabSize: 50 });
  const written = configToHf(unnamed as typeof named & ReturnType<typeof modelConfig>);
  if (written.bos_token_id !== null || written.eos_token_id !== null) {
    throw new Error(JSON.stringify(written));
  }
  expectError(
    () => modelConfig("roberta", { bosTokenId: 0 }),
    'roberta configuration: field "bosTokenId" is GPT-2\'s only (null for BERT and RoBERTa), got 0',
  );
  const outside = configFromHf({ ...named, bos_token_id: 50256, eos_token_id: 50256 }, "tiny.json");
  if (outside.bosTokenId !== null || outside.eosTokenId !== null) throw new Error(JSON.stringify(outside));
  expectError(
    () => modelConfig("gpt2", { vocabSize: 50, eosTokenId: 50 }),
    'gpt2 configuration: field "eosTokenId" must be null or a token id in [0, 50), got 50',
  );
});

Deno.test("a GPT-2 config.json keeps a classifier dropout that is set, as its token classifier reads it", () => {
  // GPT2Config has no such field; GPT2ForTokenClassification takes `classifier_dropout` when present, else 0.1.
  const set = hfJson("gpt2", { classifierDropout: 0.2 });
  if (set.classifier_dropout !== 0.2 || configFromHf(set, "set.json").classifierDropout !== 0.2) {
    throw new Error(`set: ${JSON.stringify(set)}`);
  }
  const unset = hfJson("gpt2");
  if ("classifier_dropout" in unset || configFromHf(unset, "unset.json").classifierDropout !== null) {
    throw new Error(`unset: ${JSON.stringify(unset)}`);
  }
});

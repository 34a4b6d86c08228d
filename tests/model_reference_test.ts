/**
 * The GPU models against a float64 reference forward written from Hugging Face's definitions, on
 * configurations unlike the shipped fixtures: odd widths, head sizes 5, 6 and 8, three layers,
 * several padding patterns in one batch, batch 1, sequences longer than the kernels' blocks, and
 * LayerNorm eps and activations other than each family's defaults.
 */
import { Random } from "../engine/random.ts";
import { readAll, tensor, writeTensor } from "../engine/tensor.ts";
import { type ModelConfig, modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { referenceForward } from "../models/reference.ts";
import { assertClose, maxAbs, setup } from "./helpers.ts";

await setup();

interface Case {
  name: string;
  config: ModelConfig;
  batch: number;
  length: number;
  /** Tokens per row (the rest is padding). */
  lengths: number[];
}

const CASES: Case[] = [
  {
    name: "BERT, width 20, 4 heads of 5, 3 layers, three padding patterns",
    config: modelConfig("bert", {
      hiddenSize: 20,
      numHeads: 4,
      numLayers: 3,
      intermediateSize: 36,
      vocabSize: 31,
      maxPositions: 20,
    }),
    batch: 3,
    length: 13,
    lengths: [13, 9, 4],
  },
  {
    name: "GPT-2, width 24, 3 heads of 8, 2 layers, T 37 with right padding",
    config: modelConfig("gpt2", {
      hiddenSize: 24,
      numHeads: 3,
      numLayers: 2,
      vocabSize: 29,
      maxPositions: 40,
    }),
    batch: 2,
    length: 37,
    lengths: [37, 30],
  },
  {
    name: "RoBERTa, width 12, 2 heads of 6, batch 1, padded",
    config: modelConfig("roberta", {
      hiddenSize: 12,
      numHeads: 2,
      numLayers: 2,
      vocabSize: 23,
      maxPositions: 16,
    }),
    batch: 1,
    length: 11,
    lengths: [8],
  },
  // Options away from each family's defaults: a large LayerNorm eps (where its place in the formula
  // and its source, the configuration, both show) and each family with another family's activation.
  {
    name: "BERT with layerNormEps 0.5 and ReLU",
    config: modelConfig("bert", {
      hiddenSize: 16,
      numHeads: 2,
      numLayers: 2,
      vocabSize: 19,
      maxPositions: 12,
      layerNormEps: 0.5,
      hiddenAct: "relu",
    }),
    batch: 2,
    length: 7,
    lengths: [7, 5],
  },
  {
    name: "GPT-2 with layerNormEps 0.3 and the erf GELU",
    config: modelConfig("gpt2", {
      hiddenSize: 16,
      numHeads: 4,
      numLayers: 2,
      vocabSize: 19,
      maxPositions: 12,
      layerNormEps: 0.3,
      hiddenAct: "gelu",
    }),
    batch: 2,
    length: 9,
    lengths: [9, 6],
  },
  {
    name: "RoBERTa with layerNormEps 1e-12 and the tanh GELU",
    config: modelConfig("roberta", {
      hiddenSize: 12,
      numHeads: 3,
      numLayers: 1,
      vocabSize: 23,
      maxPositions: 16,
      layerNormEps: 1e-12,
      hiddenAct: "gelu_new",
    }),
    batch: 2,
    length: 6,
    lengths: [6, 3],
  },
];

for (const c of CASES) {
  Deno.test(`matches the float64 reference forward: ${c.name}`, async () => {
    const model = new TransformerModel(c.config, { seed: 17 }).eval();
    // Weights large enough that activations reach the nonlinear range, and 1-D parameters moved
    // off their 0/1 initial values (as in the Hugging Face fixtures), so every formula shows.
    const random = new Random(23);
    for (const p of model.parameters) {
      const values = random.normals(p.value.size, p.info.shape.length > 1 ? 0.4 : 0.1);
      if (p.info.role === "norm_gamma") values.forEach((v, i) => (values[i] = 1 + v));
      writeTensor(p.value, values);
    }
    const pad = c.config.padTokenId ?? 0;
    const ids = new Int32Array(c.batch * c.length);
    const mask = new Int32Array(c.batch * c.length);
    const types = new Int32Array(c.batch * c.length);
    for (let b = 0; b < c.batch; b++) {
      for (let t = 0; t < c.length; t++) {
        const real = t < c.lengths[b];
        // Ids avoid the pad id inside the sequence, as a tokenizer's would.
        ids[b * c.length + t] = real ? 2 + ((b * 7 + t * 5) % (c.config.vocabSize - 2)) : pad;
        mask[b * c.length + t] = real ? 1 : 0;
        types[b * c.length + t] = c.config.typeVocabSize > 1 && t >= 5 ? 1 : 0;
      }
    }
    const shape = [c.batch, c.length];
    const out = model.forward({
      inputIds: tensor(ids, { shape }),
      attentionMask: tensor(mask, { shape }),
      tokenTypeIds: c.config.family === "gpt2" ? undefined : tensor(types, { shape }),
    });
    const values = await readAll(model.parameters.map((p) => p.value));
    const weights = new Map(model.parameters.map((p, i) => [p.info.name, Float64Array.from(values[i])]));
    const expected = referenceForward(c.config, weights, {
      batch: c.batch,
      length: c.length,
      ids,
      mask,
      types,
    });
    const [hidden] = await readAll([out.lastHiddenState]);
    assertClose(
      hidden,
      expected.hidden,
      { atol: 2e-5 * Math.max(1, maxAbs(expected.hidden)) },
      `${c.name}: hidden`,
    );
    if (expected.pooled && c.config.family !== "gpt2") {
      const [pooled] = await readAll([out.poolerOutput!]);
      assertClose(pooled, expected.pooled, { atol: 2e-5 }, `${c.name}: pooler`);
    }
  });
}

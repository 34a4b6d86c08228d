/**
 * Training steps of BERT, GPT-2 and RoBERTa for sequence classification at one size: the joint
 * step (the three forwards and backwards, then one MultiModelOptimizer step with its default
 * sharing, sync and adaptive rates) and each model's step alone with its own optimizer (AdamW only);
 * "sequential" in the table is the sum of the three single-model steps.
 *
 * The check loads PyTorch's weights (Hugging Face folders `model-<size>-<family>` written by
 * torch_side.py, with noise on every 1-D parameter so that a dropped bias shows), runs the three
 * models inside the joint optimizer's arena without dropout, and compares each model's loss,
 * logits, gradients and gradient norm with Hugging Face's (file `model-<size>`: `<family>/loss`,
 * `<family>/logits`, `<family>/grad_norm`, `<family>/grad/<parameter>`). The dry run builds the
 * models from seeds and compares with the same models run standalone, before the optimizer adopts
 * them: the arena, the gradients' places in it and the comparison itself, not the model math, which
 * tests/models_test.ts checks against Hugging Face.
 *
 * @module
 */
import { readAll, tensor, tidy } from "../../engine/tensor.ts";
import { loadPretrained } from "../../models/pretrained.ts";
import { type ModelConfig, modelConfig, type ModelFamily } from "../../models/config.ts";
import type { Batch } from "../../models/inputs.ts";
import { TransformerModel } from "../../models/model.ts";
import { MultiModelOptimizer } from "../../optim/multimodel.ts";
import {
  compare,
  compareScalar,
  type Comparison,
  type Expected,
  maxAbs,
  need,
  type Source,
  TOLERANCE,
} from "./check.ts";
import { type ModelSize, type ModelsSpec, streamInts } from "./inputs.ts";
import { measure, type Measurement, type TimingOptions } from "./timing.ts";
import type { Workload } from "./workload.ts";

/** The families, in the order of every loop and of the joint optimizer. */
export const FAMILIES: readonly ModelFamily[] = ["bert", "gpt2", "roberta"];

/** Padding ids: BERT's and RoBERTa's own; GPT-2 needs one for batched classification in Hugging Face. */
const PAD_ID: Record<ModelFamily, number> = { bert: 0, gpt2: 0, roberta: 1 };

/** The configuration torch_side.py gives Hugging Face, for models built in code (the dry run). */
function benchConfig(family: ModelFamily, size: ModelSize, dropout: number): ModelConfig {
  return modelConfig(family, {
    vocabSize: size.vocab,
    hiddenSize: size.hidden,
    numLayers: size.layers,
    numHeads: size.heads,
    intermediateSize: size.intermediate,
    // RoBERTa numbers positions from pad + 2; the same table size everywhere keeps the families alike.
    maxPositions: size.tokens + 2,
    padTokenId: PAD_ID[family],
    hiddenDropout: dropout,
    embeddingDropout: dropout,
    attentionDropout: dropout,
  });
}

type Models = Record<string, TransformerModel>;

async function loadModels(size: ModelSize, spec: ModelsSpec, source: Source): Promise<Models> {
  const models: Models = {};
  for (const [i, family] of FAMILIES.entries()) {
    models[family] = source.folder
      ? await loadPretrained(`${source.folder}/model-${size.id}-${family}`, { name: family })
      : new TransformerModel(benchConfig(family, size, spec.dropout), {
        name: family,
        task: "sequence-classification",
        numLabels: 2,
        seed: i + 1,
      });
  }
  return models;
}

/**
 * Token ids in [2, vocab) (never a padding id) and binary labels, from the shared streams; `copies`
 * stacks that batch along the batch axis.
 */
function benchBatch(size: ModelSize, copies = 1): Batch {
  const repeat = (values: Int32Array) => {
    const stacked = new Int32Array(values.length * copies);
    for (let c = 0; c < copies; c++) stacked.set(values, c * values.length);
    return stacked;
  };
  const ids = repeat(streamInts("model.ids", size.batch * size.tokens, 2, size.vocab));
  return {
    inputIds: tensor(ids, { shape: [copies * size.batch, size.tokens] }),
    labels: tensor(repeat(streamInts("model.labels", size.batch, 0, 2))),
  };
}

/** One forward and backward without dropout; returns what the check compares, named as in PyTorch's file. */
async function outputsAndGradients(name: string, model: TransformerModel, batch: Batch): Promise<Expected> {
  model.eval();
  const { loss, logits } = tidy(() => {
    const out = model.forward(batch);
    out.loss!.backward();
    return { loss: out.loss!, logits: out.logits! };
  });
  const [lossValue, logitValues, ...grads] = await readAll([
    loss,
    logits,
    ...model.parameters.map((p) => p.value.grad!),
  ]);
  loss.dispose();
  logits.dispose();
  let squares = 0;
  for (const g of grads) for (const v of g) squares += v * v;
  const found: Expected = new Map<string, ArrayLike<number>>([
    [`${name}/loss`, lossValue],
    [`${name}/logits`, logitValues],
    [`${name}/grad_norm`, [Math.sqrt(squares)]],
  ]);
  model.parameters.forEach((p, i) => found.set(`${name}/grad/${p.info.name}`, grads[i]));
  return found;
}

/** Compares one model's outputs and every gradient the reference holds. */
function compareModel(workload: string, name: string, ours: Expected, expected: Expected, file: string) {
  const key = (what: string) => `${name}/${what}`;
  const scalar = (what: string, tolerance: number) =>
    compareScalar(
      workload,
      key(what),
      need(ours, file, key(what))[0],
      need(expected, file, key(what))[0],
      tolerance,
    );
  const gradients = [...expected.keys()].filter((k) => k.startsWith(`${name}/grad/`));
  if (gradients.length === 0) throw new Error(`${file}: no gradient of ${name} to compare`);
  const floor = TOLERANCE.gradientFloor * Math.max(...gradients.map((k) => maxAbs(expected.get(k)!)));
  return [
    scalar("loss", TOLERANCE.loss),
    compare(
      workload,
      key("logits"),
      need(ours, file, key("logits")),
      need(expected, file, key("logits")),
      TOLERANCE.logits,
    ),
    scalar("grad_norm", TOLERANCE.gradientNorm),
    ...gradients.map((k) => {
      const actual = ours.get(k);
      if (!actual) throw new Error(`${file}: gradient "${k}" names no parameter of our ${name}`);
      return compare(workload, k, actual, expected.get(k)!, TOLERANCE.gradient, floor);
    }),
  ];
}

/**
 * The three models at one size; rows `model/<size>/joint`, `model/<size>/<family>` and
 * `model/<size>/bert-x3`: BERT's step alone over three batches stacked into one. That is the work of
 * three same-shaped models fused op by op across models (horizontal fusion, which the engine does not
 * do) in one model's dispatches, so against three BERT steps it bounds what such a fusion could buy.
 */
export async function modelsWorkload(size: ModelSize, spec: ModelsSpec, source: Source): Promise<Workload> {
  const id = `model/${size.id}`, file = `model-${size.id}`;
  const models = await loadModels(size, spec, source);
  const batch = benchBatch(size);
  const settings = { lr: spec.lr, weightDecay: spec.weightDecay };
  let joint: MultiModelOptimizer | null = null;
  const jointOptimizer = () => (joint ??= new MultiModelOptimizer({ models, ...settings }));
  return {
    id,
    async check(): Promise<Comparison[]> {
      // In the dry run the expected values are the standalone models', so they come before the adoption.
      const expected = await source.expected(file, async () => {
        const all: Expected = new Map();
        for (const [name, model] of Object.entries(models)) {
          for (const entry of await outputsAndGradients(name, model, batch)) all.set(...entry);
        }
        return all;
      });
      jointOptimizer().zeroGrad();
      const comparisons: Comparison[] = [];
      for (const [name, model] of Object.entries(models)) {
        const ours = await outputsAndGradients(name, model, batch);
        comparisons.push(...compareModel(id, name, ours, expected, file));
      }
      return comparisons;
    },
    async time(timing: TimingOptions): Promise<Measurement[]> {
      for (const model of Object.values(models)) model.train();
      const optimizer = jointOptimizer();
      const measurements: Measurement[] = [
        await measure(`${id}/joint`, () =>
          tidy(() => {
            optimizer.zeroGrad();
            const losses = Object.fromEntries(
              Object.entries(models).map(([name, model]) => {
                const loss = model.forward(batch).loss!;
                loss.backward();
                return [name, loss];
              }),
            );
            optimizer.logMetrics(losses);
            optimizer.step();
          }), timing),
      ];
      optimizer.dispose();
      joint = null;
      for (const [name, model] of Object.entries(models)) {
        const single = new MultiModelOptimizer({
          models: { [name]: model },
          ...settings,
          gradientSharing: false,
          parameterSync: false,
          adaptiveLr: false,
        });
        const step = (input: Batch) => () =>
          tidy(() => {
            single.zeroGrad();
            model.forward(input).loss!.backward();
            single.step();
          });
        measurements.push(await measure(`${id}/${name}`, step(batch), timing));
        if (name === "bert") {
          const stacked = benchBatch(size, 3);
          measurements.push(await measure(`${id}/bert-x3`, step(stacked), timing));
          stacked.inputIds.dispose();
          stacked.labels!.dispose();
        }
        single.dispose();
      }
      return measurements;
    },
    dispose() {
      joint?.dispose();
      for (const model of Object.values(models)) model.dispose();
      batch.inputIds.dispose();
      batch.labels!.dispose();
    },
  };
}

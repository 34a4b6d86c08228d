/**
 * Everything a run prepares before its first step: the data set, the tokenizer(s), the models and
 * the run folder, and the {@linkcode TaskRunner} that turns examples into batches (per tokenizer and
 * objective, padded to the longest example of the batch) and scores evaluations.
 *
 * @module
 */
import type { EncodedBatch } from "../data/encode.ts";
import { type Dataset, describeDataset, loadDataset } from "../data/datasets.ts";
import { Tokenizer, trainTokenizer } from "../data/tokenizer.ts";
import { gpu } from "../engine/device.ts";
import { Random } from "../engine/random.ts";
import type { Tensor } from "../engine/tensor.ts";
import project from "../deno.json" with { type: "json" };
import type { Batch } from "../models/inputs.ts";
import type { ModelOutput, TransformerModel } from "../models/model.ts";
import { buildModel, headFor, loadModel } from "./models.ts";
import type { TrainOptions } from "./options.ts";
import { latestCheckpoint, type RunFacts, RunFolder } from "./run.ts";
import { type DistillationPart, type Encoder, type TaskKind, taskKind } from "./task_kinds.ts";

/** Examples per evaluation batch. */
const EVALUATION_BATCH = 64;

/** A run ready to train: options, data and batches, models, folder. */
export interface PreparedRun {
  /** The run's options (from config.json when resuming). */
  options: TrainOptions;
  /** Batches and scores. */
  runner: TaskRunner;
  /** The models, by name. */
  models: Record<string, TransformerModel>;
  /** The run folder. */
  folder: RunFolder;
}

/** Copies of a batch's [B, T] arrays cut to its longest example, so no step computes on padding columns. */
export function trimBatch(encoded: EncodedBatch): EncodedBatch {
  const { batch: B, length: T } = encoded;
  let longest = 1;
  for (let b = 0; b < B; b++) {
    for (let t = T - 1; t >= longest; t--) {
      if (encoded.attentionMask[b * T + t] === 1) {
        longest = t + 1;
        break;
      }
    }
  }
  if (longest === T) return encoded;
  const cut = (values: Int32Array | undefined, width = 1) => {
    if (!values || values.length !== B * T * width) return values;
    const out = new Int32Array(B * longest * width);
    for (let b = 0; b < B; b++) {
      out.set(values.subarray(b * T * width, (b * T + longest) * width), b * longest * width);
    }
    return out;
  };
  return {
    ...encoded,
    length: longest,
    inputIds: cut(encoded.inputIds)!,
    attentionMask: cut(encoded.attentionMask)!,
    labels: cut(encoded.labels),
    tokenTypeIds: cut(encoded.tokenTypeIds),
    wordIds: cut(encoded.wordIds),
    contextOffsets: cut(encoded.contextOffsets, 2),
  };
}

/** Tokens of a batch that are not padding. */
function realTokens(encoded: EncodedBatch): number {
  return encoded.attentionMask.reduce((s, v) => s + v, 0);
}

/** The batches of a run and their scoring, for models that may differ in tokenizer and objective. */
export class TaskRunner {
  /** Training examples. */
  readonly trainSize: number;
  readonly #encoders = new Map<string, Encoder>();
  /** Models sharing a tokenizer and an objective share their batches: the group key of each model. */
  readonly #groups = new Map<string, string>();
  #current: { index: number; encoded: Map<string, EncodedBatch> } | null = null;
  readonly #evaluation = new Map<string, EncodedBatch[]>();
  /** Training examples with their labels permuted, for the models of `shuffledLabels` (a placebo). */
  readonly #shuffled: unknown[] | null = null;

  /** A runner over `dataset` for models with the given encoders. */
  constructor(
    readonly kind: TaskKind<unknown>,
    readonly dataset: Dataset<unknown>,
    encoders: Record<string, Encoder>,
    readonly options: TrainOptions,
  ) {
    this.trainSize = dataset.train.length;
    const tokenizerIds = new Map<Tokenizer, number>();
    for (const [name, encoder] of Object.entries(encoders)) {
      if (!tokenizerIds.has(encoder.tokenizer)) tokenizerIds.set(encoder.tokenizer, tokenizerIds.size);
      this.#encoders.set(name, encoder);
      const placebo = options.shuffledLabels.includes(name) ? "/shuffled" : "";
      this.#groups.set(name, `${tokenizerIds.get(encoder.tokenizer)}/${encoder.objective}${placebo}`);
    }
    if (options.shuffledLabels.length > 0) {
      const train = dataset.train as { label?: number }[];
      if (train.some((e) => typeof e.label !== "number")) {
        throw new Error(
          `train: shuffled labels need a classification task (sentiment, spam), not ${options.task}`,
        );
      }
      const order = shuffledOrder(train.length, options.seed + 99_991, 0);
      this.#shuffled = train.map((e, i) => ({ ...e, label: train[order[i]].label }));
    }
  }

  /** The headline metric, its key and direction. */
  get metricName(): string {
    return this.kind.metricName;
  }

  /** The metric key that ranks models. */
  get primaryMetric(): string {
    return this.kind.primaryMetric;
  }

  #encoder(name: string): Encoder {
    const encoder = this.#encoders.get(name);
    if (!encoder) throw new Error(`train: no model "${name}"`);
    return encoder;
  }

  #encodeGroups(indices: readonly number[], seed: number): Map<string, EncodedBatch> {
    const out = new Map<string, EncodedBatch>();
    for (const [name, group] of this.#groups) {
      if (out.has(group)) continue;
      const source = group.endsWith("/shuffled") ? this.#shuffled! : this.dataset.train;
      const examples = indices.map((i) => source[i]);
      out.set(
        group,
        trimBatch(this.kind.encode(examples, this.#encoder(name), this.options.maxLength, seed)),
      );
    }
    return out;
  }

  /**
   * The epoch's batches in a seeded order, from batch `skip` on (a resumed run); each yielded batch is encoded for every model before the
   * loop asks for its tensors ({@linkcode trainBatch}). `tokens` counts the first group's real tokens.
   */
  *trainBatches(epoch: number, batchSize: number, skip = 0): Generator<{ index: number; tokens: number }> {
    const order = shuffledOrder(this.trainSize, this.options.seed, epoch);
    for (let index = skip; index * batchSize < order.length; index++) {
      const indices = order.slice(index * batchSize, (index + 1) * batchSize);
      const encoded = this.#encodeGroups(indices, this.options.seed * 1_000_003 + epoch * 10_007 + index);
      this.#current = { index, encoded };
      yield { index, tokens: realTokens(encoded.values().next().value!) };
    }
  }

  #currentBatch(name: string, index: number): EncodedBatch {
    if (this.#current?.index !== index) throw new Error(`train: batch ${index} is not the current batch`);
    return this.#current.encoded.get(this.#groups.get(name)!)!;
  }

  /** The tensors of the current training batch for a model. */
  trainBatch(name: string, index: number): Batch {
    return this.kind.batch(this.#currentBatch(name, index), this.#encoder(name));
  }

  /** What mutual distillation compares for a model's output on the current batch. */
  distillationInputs(name: string, output: ModelOutput, index: number): DistillationPart[] {
    return this.kind.distillation(output, this.#currentBatch(name, index));
  }

  #evaluationBatches(name: string, split: "validation" | "test"): EncodedBatch[] {
    const key = `${split}/${this.#groups.get(name)}`;
    let batches = this.#evaluation.get(key);
    if (!batches) {
      const examples = this.dataset[split];
      batches = [];
      for (let first = 0; first < examples.length; first += EVALUATION_BATCH) {
        const part = examples.slice(first, first + EVALUATION_BATCH);
        // A fixed seed per batch: every evaluation masks the same tokens.
        batches.push(
          trimBatch(this.kind.encode(part, this.#encoder(name), this.options.maxLength, first + 1)),
        );
      }
      this.#evaluation.set(key, batches);
    }
    return batches;
  }

  /** Evaluation batches of a split. */
  evalBatchCount(split: "validation" | "test"): number {
    return Math.ceil(this.dataset[split].length / EVALUATION_BATCH);
  }

  /** The tensors of evaluation batch `index` of a split for a model. */
  evalBatch(name: string, split: "validation" | "test", index: number): Batch {
    return this.kind.batch(this.#evaluationBatches(name, split)[index], this.#encoder(name));
  }

  /** The outputs of an evaluation batch to read back. */
  evalOutputs(name: string, output: ModelOutput, split: "validation" | "test", index: number): Tensor[] {
    return this.kind.evaluationOutputs(
      output,
      this.#evaluationBatches(name, split)[index],
      this.#encoder(name),
    );
  }

  /** The task's metrics for a model from the read-back outputs of every batch of a split. */
  score(
    name: string,
    split: "validation" | "test",
    values: (Float32Array | Int32Array)[][],
  ): Record<string, number> {
    const batches = this.#evaluationBatches(name, split).map((encoded, i) => ({
      encoded,
      values: values[i],
    }));
    return this.kind.score(this.dataset[split], batches, this.#encoder(name));
  }

  /** The no-transformer baseline on validation and test (with the first model's tokenizer for lm). */
  baseline(): { name: string; validation: Record<string, number>; test: Record<string, number> } {
    const encoder = { ...this.#encoders.values().next().value!, objective: "causal" as const };
    const encode = (examples: readonly unknown[]) => {
      const out: EncodedBatch[] = [];
      for (let first = 0; first < examples.length; first += EVALUATION_BATCH) {
        out.push(
          this.kind.encode(
            examples.slice(first, first + EVALUATION_BATCH),
            encoder,
            this.options.maxLength,
            0,
          ),
        );
      }
      return out;
    };
    return this.kind.baseline(this.dataset, encode, encoder.tokenizer.vocabSize);
  }
}

/** The language-modelling objective of a model's head, or null outside lm. */
function objectiveOf(
  options: TrainOptions,
  family: TransformerModel["config"]["family"],
): Encoder["objective"] {
  if (options.task !== "lm") return null;
  return headFor(options.task, family) === "causal-lm" ? "causal" : "masked";
}

/**
 * Loads the data, prepares tokenizers and models and opens the run folder (a new one, or the
 * run being resumed, whose options then replace `requested`).
 */
export async function prepareRun(
  requested: TrainOptions,
  info: (line: string) => void,
  resume?: string,
): Promise<PreparedRun> {
  const opened = resume ? await RunFolder.open(resume) : null;
  const options = opened ? { ...opened.options, quiet: requested.quiet } : requested;
  const dataset = await loadDataset(options.task, options.limit ? { limit: options.limit } : {});
  if (options.evalLimit !== null) {
    dataset.validation = dataset.validation.slice(0, options.evalLimit);
    dataset.test = dataset.test.slice(0, options.evalLimit);
  }
  info(describeDataset(dataset));
  const kind = taskKind(options.task, dataset.labels);
  const earlierRun = options.from["*"];
  const tokenizers: Record<string, Tokenizer> = {};
  const savedShared = opened
    ? `${opened.path}/tokenizer.json`
    : earlierRun
    ? `${earlierRun}/tokenizer.json`
    : null;
  let shared: Tokenizer | null = savedShared && (await exists(savedShared))
    ? await Tokenizer.fromFile(savedShared)
    : null;
  for (const spec of options.models) {
    const folder = options.from[spec.name];
    const own = opened
      ? `${opened.path}/tokenizers/${spec.name}.json`
      : folder
      ? `${folder}/tokenizer.json`
      : null;
    if (own && (await exists(own))) tokenizers[spec.name] = await Tokenizer.fromFile(own);
    else if (folder && !opened) {
      throw new Error(`--from ${spec.name}=${folder}: no tokenizer.json in the folder`);
    } else {
      shared ??= trainTokenizer(dataset.train.flatMap((e) => kind.texts(e)), {
        vocabSize: options.vocabSize,
      });
      tokenizers[spec.name] = shared;
    }
  }
  const distinct = new Set(Object.values(tokenizers));
  if (options.distill > 0 && distinct.size > 1 && !["sentiment", "spam"].includes(options.task)) {
    throw new Error(
      "train: --distill compares predictions token by token here, which needs one tokenizer for every model; " +
        "these models have different tokenizers (only sentiment and spam allow that)",
    );
  }
  const numLabels = dataset.labels.length;
  const models: Record<string, TransformerModel> = {};
  const checkpoint = earlierRun && !opened ? await latestCheckpoint(earlierRun) : null;
  for (const [index, spec] of options.models.entries()) {
    const tokenizer = tokenizers[spec.name];
    const folder = opened
      ? null
      : options.from[spec.name] ?? (checkpoint ? `${checkpoint}/models/${spec.name}` : null);
    models[spec.name] = folder ? await loadModel(spec, folder, options.task, numLabels) : buildModel(
      spec,
      options,
      { vocabSize: tokenizer.vocabSize, padId: tokenizer.special.pad },
      numLabels,
      index,
    );
  }
  const folder = opened ?? (await RunFolder.create(options, runFacts(dataset)));
  if (!opened) {
    if (distinct.size === 1) await [...distinct][0].save(`${folder.path}/tokenizer.json`);
    else {
      await Deno.mkdir(`${folder.path}/tokenizers`, { recursive: true });
      for (const [name, tokenizer] of Object.entries(tokenizers)) {
        await tokenizer.save(`${folder.path}/tokenizers/${name}.json`);
      }
    }
  }
  const encoders = Object.fromEntries(options.models.map((spec) => [spec.name, {
    tokenizer: tokenizers[spec.name],
    objective: objectiveOf(options, spec.family),
    family: spec.family,
  }]));
  return { options, runner: new TaskRunner(kind, dataset, encoders, options), models, folder };
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

function runFacts(dataset: Dataset<unknown>): RunFacts {
  return {
    adapter: gpu().profile.name,
    versions: { deno: Deno.version.deno, multimodel: project.version, data: dataset.source },
    counts: { train: dataset.train.length, validation: dataset.validation.length, test: dataset.test.length },
    started: new Date().toISOString(),
  };
}

/** A seeded permutation of 0..n-1 (Fisher-Yates): the same for the same seed and epoch, resumed or not. */
export function shuffledOrder(n: number, seed: number, epoch: number): number[] {
  const random = new Random(seed * 7919 + epoch + 1);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

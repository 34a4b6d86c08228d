/**
 * The {@linkcode TaskRunner}: a run's examples turned into batches (per tokenizer and objective, in a
 * seeded order per epoch, padded to the longest example of the batch) and its evaluations scored. It
 * works on a data set in memory, so the web page and `deno task train` share it.
 *
 * @module
 */
import type { Dataset } from "../data/datasets.ts";
import type { EncodedBatch } from "../data/encode.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { Random } from "../engine/random.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { Batch } from "../models/inputs.ts";
import type { ModelOutput } from "../models/model.ts";
import type { TrainOptions } from "./options.ts";
import type { DistillationPart, Encoder, TaskKind } from "./task_kinds.ts";

/** Examples per evaluation batch. */
const EVALUATION_BATCH = 64;

/** Copies of a batch's [B, T] arrays cut to its longest example, so no step computes on padding columns. */
function trimBatch(encoded: EncodedBatch): EncodedBatch {
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
        trimBatch(this.kind.encode(examples, this.#encoder(name), this.options, seed)),
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
          trimBatch(this.kind.encode(part, this.#encoder(name), this.options, first + 1)),
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
            this.options,
            0,
          ),
        );
      }
      return out;
    };
    return this.kind.baseline(this.dataset, encode, encoder.tokenizer.vocabSize);
  }
}

/** A seeded permutation of 0..n-1 (Fisher-Yates): the same for the same seed and epoch, resumed or not. */
function shuffledOrder(n: number, seed: number, epoch: number): number[] {
  const random = new Random(seed * 7919 + epoch + 1);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * What differs between the tasks of `deno task train`: how examples become model inputs, which
 * outputs are read back at evaluation and how they are scored, what mutual distillation compares,
 * and the no-transformer baseline. Four kinds: classification (sentiment, spam), tagging (ner, pos),
 * question answering (qa) and language modelling (lm, causal for GPT-2 and masked for the encoders).
 *
 * @module
 */
import { type Tensor, tensor } from "../engine/tensor.ts";
import { gatherRows } from "../kernels/embedding.ts";
import type {
  Dataset,
  LmExample,
  QaExample,
  TaggedExample,
  TaskName,
  TextExample,
} from "../data/datasets.ts";
import {
  encodeClassification,
  type EncodedBatch,
  encodeLm,
  encodeQa,
  encodeTagging,
  IGNORE_INDEX,
} from "../data/encode.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import type { TrainOptions } from "./options.ts";
import type { ModelFamily } from "../models/config.ts";
import type { Batch } from "../models/inputs.ts";
import type { ModelOutput } from "../models/model.ts";
import {
  bagOfWordsBaseline,
  mostFrequentTagBaseline,
  nameSpanBaseline,
  unigramPerplexity,
} from "./baseline.ts";
import {
  accuracy,
  argmaxRows,
  bestSpan,
  maskedLmAccuracy,
  perplexity,
  spanF1,
  squadScores,
  tokenAccuracy,
} from "./metrics.ts";

/** What the inputs of a model depend on besides the examples: its tokenizer and its objective. */
export interface Encoder {
  /** Tokenizer. */
  tokenizer: Tokenizer;
  /** Language-modelling objective of the model's head (null outside lm). */
  objective: "causal" | "masked" | null;
  /** Family (BERT alone uses token types). */
  family: ModelFamily;
}

/** The rows mutual distillation compares, with their weights. */
export interface DistillationPart {
  /** Logits whose last axis is a distribution. */
  logits: Tensor;
  /** Row weights (tokens that carry a label), or none for every row. */
  rowWeights?: { weights: Tensor; total: number };
}

/** The per-task behaviour the loop needs. */
export interface TaskKind<E> {
  /** The headline metric in words. */
  metricName: string;
  /** The key of the metrics that ranks models. */
  primaryMetric: string;
  /** Whether larger is better. */
  higherIsBetter: boolean;
  /** Texts a tokenizer is trained on. */
  texts(example: E): string[];
  /** Host inputs of a batch of examples (padded to `maxLength`; qa windows by `docStride`); `seed` drives masking. */
  encode(
    examples: readonly E[],
    encoder: Encoder,
    shape: Pick<TrainOptions, "maxLength" | "docStride">,
    seed: number,
  ): EncodedBatch;
  /** The tensors a forward pass takes. */
  batch(encoded: EncodedBatch, encoder: Encoder): Batch;
  /** The outputs mutual distillation compares. */
  distillation(output: ModelOutput, encoded: EncodedBatch): DistillationPart[];
  /** The tensors read back at evaluation. */
  evaluationOutputs(output: ModelOutput, encoded: EncodedBatch, encoder: Encoder): Tensor[];
  /** Metrics from the read-back outputs of every batch of a split. */
  score(
    examples: readonly E[],
    batches: readonly { encoded: EncodedBatch; values: (Float32Array | Int32Array)[] }[],
    encoder: Encoder,
  ): Record<string, number>;
  /** The baseline's name and metrics on validation and test; `encode` gives causal-LM batches. */
  baseline(dataset: Dataset<E>, encode: (examples: readonly E[]) => EncodedBatch[], vocabSize: number): {
    name: string;
    validation: Record<string, number>;
    test: Record<string, number>;
  };
}

/**
 * The scores, or every one of them NaN when a logit read back is NaN: a faulted model's predictions
 * are no predictions, while argmax would pick the first class of every NaN row and report that
 * class's share as a plausible score.
 */
function unlessNaN(
  logits: readonly ArrayLike<number>[],
  scores: Record<string, number>,
): Record<string, number> {
  const faulted = logits.some((values) => Array.prototype.some.call(values, Number.isNaN));
  return faulted ? Object.fromEntries(Object.keys(scores).map((key) => [key, NaN])) : scores;
}

const ids = (values: Int32Array, encoded: EncodedBatch) =>
  tensor(values, { shape: [encoded.batch, encoded.length] });

function common(encoded: EncodedBatch): Batch {
  return { inputIds: ids(encoded.inputIds, encoded), attentionMask: ids(encoded.attentionMask, encoded) };
}

const classification: TaskKind<TextExample> = {
  metricName: "accuracy",
  primaryMetric: "accuracy",
  higherIsBetter: true,
  texts: (e) => [e.text],
  encode: (examples, encoder, { maxLength }) => encodeClassification(examples, encoder.tokenizer, maxLength),
  batch: (encoded) => ({ ...common(encoded), labels: tensor(encoded.labels!) }),
  distillation: (output) => [{ logits: output.logits! }],
  evaluationOutputs: (output) => [output.logits!],
  score(_examples, batches) {
    const predicted: number[] = [];
    const gold: number[] = [];
    for (const { encoded, values: [logits] } of batches) {
      predicted.push(...argmaxRows(logits, logits.length / encoded.batch));
      gold.push(...encoded.labels!);
    }
    return unlessNaN(batches.map((b) => b.values[0]), { accuracy: accuracy(predicted, gold) });
  },
  baseline(dataset) {
    return {
      name: "bag-of-words logistic regression",
      validation: { accuracy: bagOfWordsBaseline(dataset.train, dataset.validation).accuracy },
      test: { accuracy: bagOfWordsBaseline(dataset.train, dataset.test).accuracy },
    };
  },
};

/**
 * Tag ids per word from token logits: each word takes the prediction of its first token; words cut off
 * by truncation take `cutOff`.
 */
function wordPredictions(
  examples: readonly TaggedExample[],
  batches: Parameters<TaskKind<TaggedExample>["score"]>[1],
  cutOff: number,
) {
  const out: number[][] = [];
  for (const { encoded, values: [logits] } of batches) {
    const classes = logits.length / (encoded.batch * encoded.length);
    const argmax = argmaxRows(logits, classes);
    for (let b = 0; b < encoded.batch; b++) {
      const words = examples[out.length].words.length;
      const tags = new Array<number>(words).fill(cutOff);
      for (let t = 0; t < encoded.length; t++) {
        const at = b * encoded.length + t;
        if (encoded.labels![at] !== IGNORE_INDEX) tags[encoded.wordIds![at]] = argmax[at];
      }
      out.push(tags);
    }
  }
  return out;
}

function tagging(names: readonly string[], spans: boolean): TaskKind<TaggedExample> {
  return {
    metricName: spans ? "span F1" : "accuracy",
    primaryMetric: spans ? "f1" : "accuracy",
    higherIsBetter: true,
    texts: (e) => [e.words.join(" ")],
    encode: (examples, encoder, { maxLength }) => encodeTagging(examples, encoder.tokenizer, maxLength),
    batch: (encoded) => ({ ...common(encoded), labels: ids(encoded.labels!, encoded) }),
    distillation(output, encoded) {
      const weights = Float32Array.from(encoded.labels!, (l) => (l === IGNORE_INDEX ? 0 : 1));
      const total = weights.reduce((s, v) => s + v, 0);
      return [{
        logits: output.logits!,
        rowWeights: total > 0 ? { weights: tensor(weights), total } : undefined,
      }];
    },
    evaluationOutputs: (output) => [output.logits!],
    score(examples, batches): Record<string, number> {
      // The baseline tags every word, so a word cut off by truncation counts: as "O" for names (a
      // missed name, if it was one), as no tag at all for parts of speech (tag 0 would credit every cut-off VERB).
      const predicted = wordPredictions(examples, batches, spans ? 0 : -1);
      const gold = examples.map((e) => e.tags);
      const logits = batches.map((b) => b.values[0]);
      if (!spans) return unlessNaN(logits, { accuracy: tokenAccuracy(predicted, gold) });
      const name = (tags: readonly number[]) => tags.map((t) => names[t]);
      const scores = spanF1(predicted.map(name), gold.map(name));
      return unlessNaN(logits, { f1: scores.f1, precision: scores.precision, recall: scores.recall });
    },
    baseline(dataset) {
      const run = (split: TaggedExample[]): Record<string, number> => {
        const result = mostFrequentTagBaseline(dataset.train, split, spans ? names : undefined);
        return spans
          ? { f1: result.span!.f1, precision: result.span!.precision, recall: result.span!.recall }
          : { accuracy: result.tokenAccuracy };
      };
      return {
        name: "most frequent tag per word",
        validation: run(dataset.validation),
        test: run(dataset.test),
      };
    },
  };
}

const questionAnswering: TaskKind<QaExample> = {
  metricName: "exact match / F1",
  primaryMetric: "f1",
  higherIsBetter: true,
  texts: (e) => [e.context, e.question],
  encode: (examples, encoder, { maxLength, docStride }) =>
    encodeQa(examples, encoder.tokenizer, maxLength, docStride === null ? {} : { stride: docStride }),
  batch: (encoded, encoder) => ({
    ...common(encoded),
    ...(encoder.family === "bert" ? { tokenTypeIds: ids(encoded.tokenTypeIds!, encoded) } : {}),
    startPositions: tensor(encoded.startPositions!),
    endPositions: tensor(encoded.endPositions!),
  }),
  distillation: (output) => [{ logits: output.startLogits! }, { logits: output.endLogits! }],
  evaluationOutputs: (output) => [output.startLogits!, output.endLogits!],
  score(examples, batches) {
    // An example's answer is the best span over all its windows (Hugging Face's postprocessing):
    // the highest start + end logit, the earlier window on a tie.
    const best: ({ score: number; text: string } | null)[] = examples.map(() => null);
    let first = 0; // index of the batch's first example in the split
    for (const { encoded, values: [start, end] } of batches) {
      const T = encoded.length;
      for (let b = 0; b < encoded.batch; b++) {
        const offsets = encoded.contextOffsets!.subarray(2 * b * T, 2 * (b + 1) * T);
        const allowed = Array.from({ length: T }, (_, t) => offsets[2 * t] >= 0);
        const span = bestSpan(
          start.subarray(b * T, (b + 1) * T),
          end.subarray(b * T, (b + 1) * T),
          allowed,
          30,
        );
        const example = first + encoded.exampleIndex![b];
        if (span && (best[example] === null || span.score > best[example]!.score)) {
          const text = examples[example].context.slice(offsets[2 * span.start], offsets[2 * span.end + 1]);
          best[example] = { score: span.score, text };
        }
      }
      first += encoded.exampleIndex![encoded.batch - 1] + 1;
    }
    const predictions = best.map((span) => span?.text ?? "");
    const scores = squadScores(predictions, examples.map((e) => [e.answer.text]));
    return unlessNaN(batches.flatMap((b) => b.values), { ...scores });
  },
  baseline(dataset) {
    const run = (split: QaExample[]) => {
      const { exactMatch, f1 } = nameSpanBaseline(split);
      return { exactMatch, f1 };
    };
    return {
      name: "most frequent name in the context",
      validation: run(dataset.validation),
      test: run(dataset.test),
    };
  },
};

/** Rows of the masked positions in the flattened [B*T] batch (the logits read back for masked accuracy). */
function maskedRows(encoded: EncodedBatch): Int32Array {
  const rows: number[] = [];
  encoded.labels!.forEach((l, i) => l !== IGNORE_INDEX && rows.push(i));
  return Int32Array.from(rows);
}

/** Tokens whose loss a causal LM takes: every labelled position but each row's first. */
function causalTokens(encoded: EncodedBatch): number {
  let count = 0;
  for (let b = 0; b < encoded.batch; b++) {
    for (let t = 1; t < encoded.length; t++) {
      if (encoded.labels![b * encoded.length + t] !== IGNORE_INDEX) count++;
    }
  }
  return count;
}

const languageModelling: TaskKind<LmExample> = {
  metricName: "perplexity",
  primaryMetric: "perplexity",
  higherIsBetter: false,
  texts: (e) => [e.text],
  encode: (examples, encoder, { maxLength }, seed) =>
    encodeLm(examples, encoder.tokenizer, maxLength, encoder.objective ?? "causal", seed),
  batch: (encoded) => ({ ...common(encoded), labels: ids(encoded.labels!, encoded) }),
  distillation: () => {
    throw new Error("distillation is not defined for language modelling");
  },
  evaluationOutputs(output, encoded, encoder) {
    const rows = maskedRows(encoded);
    if (encoder.objective !== "masked" || rows.length === 0) return [output.loss!];
    // Only the masked positions' logits are read back for masked accuracy ([M, V], not [B, T, V]).
    const logits = output.logits!;
    return [output.loss!, gatherRows(logits.reshape([-1, logits.shape[logits.rank - 1]]), tensor(rows))];
  },
  score(_examples, batches, encoder) {
    let weighted = 0;
    let tokens = 0;
    const predicted: number[] = [];
    const gold: number[] = [];
    for (const { encoded, values } of batches) {
      const count = encoder.objective === "masked" ? maskedRows(encoded).length : causalTokens(encoded);
      if (count === 0) continue;
      weighted += values[0][0] * count;
      tokens += count;
      if (encoder.objective === "masked") {
        const rows = maskedRows(encoded);
        predicted.push(...argmaxRows(values[1], values[1].length / rows.length));
        gold.push(...Array.from(rows, (r) => encoded.labels![r]));
      }
    }
    const scores: Record<string, number> = { perplexity: perplexity(weighted / tokens) };
    if (encoder.objective !== "masked") return scores;
    const masked = unlessNaN(batches.filter((b) => b.values.length > 1).map((b) => b.values[1]), {
      maskedAccuracy: maskedLmAccuracy(predicted, gold),
    });
    return { ...scores, ...masked };
  },
  baseline(dataset, encode, vocabSize) {
    // Scored on the tokens a causal model predicts (each row's first is never a target), as the models are.
    const labels = (batches: EncodedBatch[]) =>
      batches.map((b) => {
        const targets = Int32Array.from(b.labels!);
        for (let row = 0; row < b.batch; row++) targets[row * b.length] = IGNORE_INDEX;
        return targets;
      });
    const train = labels(encode(dataset.train));
    const run = (split: LmExample[]) => ({
      perplexity: unigramPerplexity(train, labels(encode(split)), vocabSize).perplexity,
    });
    return { name: "add-one unigram model", validation: run(dataset.validation), test: run(dataset.test) };
  },
};

/** The kind of a task; `labels` are the data set's class or tag names. */
export function taskKind(task: TaskName, labels: readonly string[]): TaskKind<unknown> {
  switch (task) {
    case "sentiment":
    case "spam":
      return classification as TaskKind<unknown>;
    case "ner":
      return tagging(labels, true) as TaskKind<unknown>;
    case "pos":
      return tagging(labels, false) as TaskKind<unknown>;
    case "qa":
      return questionAnswering as TaskKind<unknown>;
    case "lm":
      return languageModelling as TaskKind<unknown>;
  }
}

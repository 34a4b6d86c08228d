/**
 * The models and optimizers of a training run: built from scratch (sizes from the run's options, the
 * vocabulary from its tokenizer) with the head each task needs (tasks.ts loads them from Hugging Face
 * folders instead), and either one joint MultiModelOptimizer or one plain AdamW per model (`independent`).
 *
 * @module
 */
import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import type { OptimizerOptions } from "../optim/options.ts";
import type { TaskName } from "../data/datasets.ts";
import type { ModelSpec, TrainOptions } from "./options.ts";

/** The head a task trains on a family: language modelling is causal for GPT-2 and masked for the encoders. */
export function headFor(task: TaskName, family: ModelFamily): Task {
  switch (task) {
    case "sentiment":
    case "spam":
      return "sequence-classification";
    case "ner":
    case "pos":
      return "token-classification";
    case "qa":
      return "question-answering";
    case "lm":
      return family === "gpt2" ? "causal-lm" : "masked-lm";
  }
}

/** What a model's tokenizer contributes to its configuration. */
export interface VocabularyFacts {
  /** Entries of the vocabulary. */
  vocabSize: number;
  /** Id of the padding token. */
  padId: number;
  /**
   * Ids of the tokens every text starts and ends with (the tokenizer's cls and sep), which a GPT-2's
   * config.json names as its bos and eos ids, so that Hugging Face's `generate` stops at the end of a text.
   */
  textIds?: { start: number; end: number };
}

/** The seed of the initial weights of the run's `index`-th model (a loaded model's new head too). */
export function modelSeed(seed: number, index: number): number {
  return seed * 1009 + index;
}

/**
 * Builds one model from scratch, sized by its spec, for the task's head; `labels` are the data set's
 * class names (none for qa and lm), which its saved config.json names as Hugging Face's `id2label`.
 */
export function buildModel(
  spec: ModelSpec,
  options: Pick<TrainOptions, "task" | "maxLength" | "seed" | "dropout">,
  vocabulary: VocabularyFacts,
  labels: readonly string[],
  index: number,
): TransformerModel {
  if (!Array.isArray(labels)) {
    throw new Error(`buildModel: labels must be the data set's class names (an array), got ${labels}`);
  }
  // RoBERTa numbers positions from pad + 1, so it needs pad + 1 more position embeddings.
  const positions = options.maxLength + (spec.family === "roberta" ? vocabulary.padId + 1 : 0);
  const config = modelConfig(spec.family, {
    vocabSize: vocabulary.vocabSize,
    hiddenSize: spec.hiddenSize,
    numLayers: spec.numLayers,
    numHeads: spec.numHeads,
    intermediateSize: spec.intermediateSize,
    maxPositions: positions,
    // GPT-2 has no pad id of its own; the tokenizer's, in its config.json, lets Hugging Face's
    // GPT2ForSequenceClassification find each row's last token in a padded batch (rows are padded on
    // the right, so it is the attention mask's last position, which the model took without a pad id).
    padTokenId: vocabulary.padId,
    ...(spec.family === "gpt2" && vocabulary.textIds && vocabulary.textIds.start >= 0 &&
        vocabulary.textIds.end >= 0
      ? { bosTokenId: vocabulary.textIds.start, eosTokenId: vocabulary.textIds.end }
      : {}),
    hiddenDropout: options.dropout,
    embeddingDropout: options.dropout,
    attentionDropout: options.dropout,
    // Set, not left to the family's rule: GPT-2's (as Hugging Face's) would be 0.1 whatever --dropout says.
    classifierDropout: options.dropout,
  });
  return new TransformerModel(config, {
    name: spec.name,
    task: headFor(options.task, spec.family),
    numLabels: Math.max(1, labels.length),
    ...(labels.length > 0 ? { labels } : {}),
    seed: modelSeed(options.seed, index),
  });
}

/** The optimizer settings of a run, for `updates` updates in total. */
export function optimizerOptions(options: TrainOptions, updates: number): OptimizerOptions {
  const warmupSteps = Math.floor(options.warmup * updates);
  return {
    lr: options.lr,
    weightDecay: options.weightDecay,
    decayBiasesAndNorms: options.decayBiasesAndNorms,
    clipGradNorm: options.clip,
    gradientAccumulationSteps: options.accumulate,
    schedule: updates > warmupSteps ? { warmupSteps, totalSteps: updates, minRatio: 0.1 } : "constant",
    gradientSharing: options.independent || options.sharing === false ? false : { ratio: options.sharing },
    parameterSync: options.independent || options.sync === false ? false : { ratio: options.sync },
    adaptiveLr: options.independent || !options.adaptive ? false : {},
    alignInitialization: !options.independent && options.alignInit,
    // Models the weights do not name weigh 1, as "equal" weighs every model.
    ...(options.weights && !options.independent
      ? {
        modelWeights: Object.fromEntries(options.models.map((m) => [m.name, options.weights![m.name] ?? 1])),
      }
      : {}),
  };
}

/**
 * The optimizers of a run: one joint MultiModelOptimizer over every model, or with `independent`
 * one per model, each plain AdamW with the same schedule (the baseline of an experiment).
 */
export function buildOptimizers(
  models: Record<string, TransformerModel>,
  options: TrainOptions,
  updates: number,
): MultiModelOptimizer[] {
  const settings = optimizerOptions(options, updates);
  if (!options.independent) return [new MultiModelOptimizer({ models, ...settings })];
  return Object.entries(models).map(([name, model]) =>
    new MultiModelOptimizer({ models: { [name]: model }, ...settings })
  );
}

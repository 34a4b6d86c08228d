/**
 * What the page trains: BERT-, GPT-2- and RoBERTa-style models, small enough for a software WebGPU
 * adapter, jointly on the sentiment data set, with the optimizer's mechanisms switched by the page's
 * toggles. The browser test imports this module under Deno too, so the page and Deno run the same
 * preparation and the same steps.
 *
 * @module
 */
import type { Dataset, TextExample } from "../data/datasets.ts";
import { defaultOptions, parseModels, type TrainOptions } from "../train/options.ts";
import { prepareSession, TrainingSession } from "../train/session.ts";

/** The optimizer mechanisms and the distillation the page can switch off and on. */
export interface Toggles {
  /** Gradient sharing (ratio 0.2) between corresponding parameters. */
  sharing: boolean;
  /** Soft parameter sync (ratio 0.1, every 10 updates). */
  sync: boolean;
  /** Convergence-aware learning-rate multipliers. */
  adaptive: boolean;
  /** Mutual distillation (weight 0.5). */
  distill: boolean;
}

/** The toggles a page starts with: the optimizer's defaults, distillation off. */
export const DEFAULT_TOGGLES: Toggles = { sharing: true, sync: true, adaptive: true, distill: false };

/** The model size the page trains: a few seconds per hundred steps on a software adapter. */
const PAGE_SIZE = { hiddenSize: 32, numLayers: 2, numHeads: 2, intermediateSize: 64 };

/** The run options of the page: three small models, three epochs of sentiment, a line every 2 steps. */
export function pageOptions(toggles: Toggles, seed = 0, steps: number | null = null): TrainOptions {
  return {
    ...defaultOptions("sentiment"),
    models: parseModels("bert,gpt2,roberta", PAGE_SIZE),
    vocabSize: 512,
    maxLength: 48,
    batchSize: 16,
    epochs: 3,
    steps,
    lr: 2e-3,
    dropout: 0.1,
    seed,
    sharing: toggles.sharing ? 0.2 : false,
    sync: toggles.sync ? 0.1 : false,
    adaptive: toggles.adaptive,
    distill: toggles.distill ? 0.5 : 0,
    logEvery: 2,
    evalEvery: steps === null ? 37 : Math.max(2, Math.ceil(steps / 4)),
    out: "",
    quiet: true,
  };
}

/** Checks that a parsed JSON value is a sentiment data set (what `deno task build` writes as web/sentiment.json). */
export function sentimentDataset(json: unknown): Dataset<TextExample> {
  const data = json as Dataset<TextExample>;
  const isText = (e: TextExample) => typeof e?.text === "string" && Number.isInteger(e?.label);
  if (
    data?.task !== "sentiment" || !Array.isArray(data.train) || !Array.isArray(data.validation) ||
    !Array.isArray(data.test) || !data.train.every(isText) || !data.validation.every(isText)
  ) {
    throw new Error("sentiment.json is not a sentiment data set (run `deno task build` again)");
  }
  return data;
}

/** Prepares the page's run (tokenizer trained on the training split, models built) and opens its session. */
export async function openPageSession(
  dataset: Dataset<TextExample>,
  options: TrainOptions,
): Promise<TrainingSession> {
  return await TrainingSession.open(await prepareSession(options, dataset));
}

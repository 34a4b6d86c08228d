/**
 * What the page trains: BERT-, GPT-2- and RoBERTa-style models, small enough for a software WebGPU
 * adapter, jointly on the sentiment data set, with the optimizer's mechanisms switched by the page's
 * toggles. The browser test imports this module under Deno too, so the page and Deno run the same
 * preparation and the same steps.
 *
 * @module
 */
import type { Dataset, TextExample } from "../data/datasets.ts";
import { checkTrainOptions, defaultOptions, parseModels, type TrainOptions } from "../train/options.ts";
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

/** What the page's URL asks for (see {@linkcode pageParameters}). */
export interface PageParameters {
  /** Seed of weights, data order and dropout. */
  seed: number;
  /** A fixed number of steps instead of three epochs, or null. */
  steps: number | null;
  /** Whether training starts once the page is ready. */
  autostart: boolean;
  /** The toggles' initial states. */
  toggles: Toggles;
}

/**
 * Reads the page's URL parameters: `seed` (an integer >= 0, default 0), `steps` (an integer >= 1),
 * `autostart` (present, `1` or `0`) and the toggles `sharing`, `sync`, `adaptive`, `distill` (`0` or
 * `1`). A value of another form is an error naming the parameter; other parameters are ignored.
 */
export function pageParameters(search: URLSearchParams): PageParameters {
  const fail = (name: string, expected: string): never => {
    throw new Error(`URL parameter ${name}=${search.get(name)}: expected ${expected}`);
  };
  const integer = (name: string, min: number) => {
    const text = search.get(name)!;
    const value = Number(text);
    return /^\d+$/.test(text) && Number.isSafeInteger(value) && value >= min
      ? value
      : fail(name, `an integer >= ${min}`);
  };
  const flag = (name: string, absent: boolean, bare?: boolean) => {
    const value = search.get(name);
    if (value === null) return absent;
    if (value === "" && bare !== undefined) return bare;
    return value === "1"
      ? true
      : value === "0"
      ? false
      : fail(name, bare === undefined ? "0 or 1" : "1, 0 or no value");
  };
  return {
    seed: search.has("seed") ? integer("seed", 0) : 0,
    steps: search.has("steps") ? integer("steps", 1) : null,
    autostart: flag("autostart", false, true),
    toggles: Object.fromEntries(
      (Object.keys(DEFAULT_TOGGLES) as (keyof Toggles)[]).map((
        name,
      ) => [name, flag(name, DEFAULT_TOGGLES[name])]),
    ) as unknown as Toggles,
  };
}

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
  const isText = (e: TextExample) =>
    typeof e?.text === "string" && Number.isInteger(e?.label) && e.label >= 0 && e.label < data.labels.length;
  const splits = [data?.train, data?.validation, data?.test];
  if (
    data?.task !== "sentiment" || !Array.isArray(data.labels) || data.labels.length < 2 ||
    !data.labels.every((label) => typeof label === "string") ||
    !splits.every((split) => Array.isArray(split) && split.every(isText))
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
  checkTrainOptions(options);
  return await TrainingSession.open(await prepareSession(options, dataset));
}

/**
 * Settings of a training run (`deno task train`): the task, the models and their sizes, the schedule,
 * the coordination mechanisms, and where results go. Plain values with defaults and two presets, so a
 * run is described completely by its JSON (`config.json`).
 *
 * @module
 */
import { TASK_NAMES, type TaskName } from "../data/datasets.ts";
import { checkOptions } from "../engine/options.ts";
import type { ModelFamily } from "../models/config.ts";

/** One model of a run: its name, family and size. */
export interface ModelSpec {
  /** Name (the optimizer's key, the report's row); unique in a run. */
  name: string;
  /** Architecture family. */
  family: ModelFamily;
  /** Width. */
  hiddenSize: number;
  /** Transformer layers. */
  numLayers: number;
  /** Attention heads (divides hiddenSize). */
  numHeads: number;
  /** Feed-forward width. */
  intermediateSize: number;
}

/** Everything a run needs; {@linkcode defaultOptions} gives the defaults, {@linkcode checkTrainOptions} checks values. */
export interface TrainOptions {
  /** Task. */
  task: TaskName;
  /** The models, trained together. */
  models: ModelSpec[];
  /** Passes over the training split (ignored when `steps` is set). */
  epochs: number;
  /**
   * Training steps, each an update over `accumulate` batches (as Hugging Face's `max_steps`); null
   * trains `epochs` epochs.
   */
  steps: number | null;
  /** Examples per batch (qa: questions, each with every window of its context). */
  batchSize: number;
  /** Longest sequence in tokens, special tokens included; batches are padded to their longest example. */
  maxLength: number;
  /**
   * qa: tokens of context that consecutive windows of a long context share (Hugging Face's
   * `doc_stride`), a row per window, so every answer is within some row; null cuts each context at
   * maxLength instead (one row per question, as runs before windows did), and for every other task.
   */
  docStride: number | null;
  /** Subword vocabulary of a tokenizer trained from scratch. */
  vocabSize: number;
  /** Base learning rate (peak of the warmup-cosine schedule). */
  lr: number;
  /** Fraction of the steps spent in linear warmup. */
  warmup: number;
  /** Decoupled weight decay. */
  weightDecay: number;
  /**
   * Whether weight decay applies to biases and LayerNorm weights too (as `torch.optim.AdamW`); false
   * exempts them, as Hugging Face's `Trainer` does.
   */
  decayBiasesAndNorms: boolean;
  /** Dropout of models built from scratch: embeddings, hidden states, attention probabilities, classifier. */
  dropout: number;
  /** Per-model gradient-norm bound, or null. */
  clip: number | null;
  /** Seed of initial weights, data order, dropout and masking. */
  seed: number;
  /** Gradient sharing ratio, or false. */
  sharing: number | false;
  /** Soft parameter sync ratio (every 10 updates), or false. */
  sync: number | false;
  /** Convergence-aware learning-rate multipliers. */
  adaptive: boolean;
  /** Per-model weights (relative priorities), or null for equal weights. */
  weights: Record<string, number> | null;
  /** Give each sharing group's members the same initial values. */
  alignInit: boolean;
  /**
   * Micro-batches per update; their gradients are averaged, each batch weighing the same (Hugging Face's
   * `Trainer` weighs a token task's batches by their labelled tokens).
   */
  accumulate: number;
  /** Mutual distillation weight lambda (0: off). */
  distill: number;
  /** One plain AdamW per model and no mechanism (the baseline condition of an experiment). */
  independent: boolean;
  /**
   * Models trained on the training labels permuted at random (classification only): partners with
   * the same shapes and gradient norms but no knowledge of the task, the placebo of an experiment.
   */
  shuffledLabels: string[];
  /** Start each model from a Hugging Face folder, by model name, or from an earlier run (key "*"). */
  from: Record<string, string>;
  /** Training steps between logged lines of metrics.jsonl. */
  logEvery: number;
  /** Training steps between evaluations (each followed by a checkpoint); null evaluates after every epoch. */
  evalEvery: number | null;
  /** Cap on examples per split (for tests and quick looks); null uses everything. */
  limit: number | null;
  /** Cap on validation and test examples (spread evenly over each split, which is fixed); null uses them all. */
  evalLimit: number | null;
  /** How many checkpoints are kept, the newest (Hugging Face's `save_total_limit`); null keeps every evaluation's. */
  saveLimit: number | null;
  /** Output folder of the run. */
  out: string;
  /** Plain progress lines instead of a live bar. */
  quiet: boolean;
}

/** Sizes of the two presets: `cpu` finishes in minutes on a 2-core software adapter, `gpu` is larger. */
export const PRESETS = {
  cpu: {
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    intermediateSize: 256,
    epochs: 4,
    batchSize: 32,
    vocabSize: 4096,
    dropout: 0.2,
  },
  gpu: {
    hiddenSize: 256,
    numLayers: 4,
    numHeads: 4,
    intermediateSize: 1024,
    epochs: 10,
    batchSize: 32,
    vocabSize: 8192,
    dropout: 0.1,
  },
} as const;

/** Name of a preset. */
export type PresetName = keyof typeof PRESETS;

/**
 * How long each task trains on the `cpu` preset, so that every default run takes minutes on two
 * cores: the small sentiment set trains for epochs; the large corpora get a step budget, three
 * evaluations, and validation and test cut to evenly spaced examples.
 */
const CPU_BUDGET: Record<TaskName, { steps: number | null; evalLimit: number | null }> = {
  sentiment: { steps: null, evalLimit: null },
  spam: { steps: 300, evalLimit: null },
  ner: { steps: 300, evalLimit: 1000 },
  pos: { steps: 300, evalLimit: 1000 },
  qa: { steps: 200, evalLimit: 500 },
  lm: { steps: 300, evalLimit: 500 },
};

/**
 * Longest sequence per task (the tasks' texts differ in length). Brown's sentences take 96 tokens so
 * that 0.4% of validation words are cut off (64 cut 3.1%, each scored as a wrong tag); Moby-Dick's
 * chunks are made to fit 64.
 */
export const TASK_MAX_LENGTH: Record<TaskName, number> = {
  sentiment: 64,
  spam: 128,
  ner: 96,
  pos: 96,
  qa: 256,
  lm: 64,
};

/**
 * Context tokens a qa row keeps beside the longest question (half the row) and the most special
 * tokens a pair layout adds (RoBERTa's 4): windows must share fewer than this.
 */
export function windowRoom(maxLength: number, specialTokens = 4): number {
  return maxLength - Math.floor(maxLength / 2) - specialTokens;
}

/**
 * Context tokens that consecutive qa windows share by default: a quarter of the row (64 of qa's 256
 * tokens), less where a short row has no room for that, and no windows (null) where it has none.
 * Cloze answers are names of a few tokens, so a small overlap keeps each whole in some window; more
 * overlap adds rows (at 256 tokens, 2.1 rows per validation question at 64, 2.0 at 32).
 */
export function defaultDocStride(maxLength: number): number | null {
  const room = windowRoom(maxLength);
  return room >= 1 ? Math.min(Math.floor(maxLength / 4), room - 1) : null;
}

/** Builds model specs from `family[:HIDDENxLAYERS]` entries, naming repeats `bert`, `bert-2`, ... */
export function parseModels(
  list: string,
  defaults: Omit<ModelSpec, "name" | "family">,
): ModelSpec[] {
  const families: readonly string[] = ["bert", "gpt2", "roberta"];
  const specs: ModelSpec[] = [];
  for (const raw of list.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const match = /^(?:([a-z][\w-]*)=)?(bert|gpt2|roberta)(?::(\d+)x(\d+))?$/.exec(raw);
    if (!match || !families.includes(match[2])) {
      throw new Error(
        `--models: cannot read "${raw}"; expected family[:HIDDENxLAYERS] or name=family[:HIDDENxLAYERS], ` +
          "family one of bert, gpt2, roberta",
      );
    }
    const [, givenName, family, hidden, layers] = match;
    if (Number(hidden) === 0 || Number(layers) === 0) {
      throw new Error(`--models: "${raw}": the hidden size and the layer count must be positive integers`);
    }
    const hiddenSize = hidden ? Number(hidden) : defaults.hiddenSize;
    const repeats = specs.filter((s) => s.family === family).length;
    specs.push({
      name: givenName ?? (repeats === 0 ? family : `${family}-${repeats + 1}`),
      family: family as ModelFamily,
      hiddenSize,
      numLayers: layers ? Number(layers) : defaults.numLayers,
      numHeads: hidden
        ? Math.max(1, Math.round(hiddenSize / (defaults.hiddenSize / defaults.numHeads)))
        : defaults.numHeads,
      intermediateSize: hidden ? 4 * hiddenSize : defaults.intermediateSize,
    });
  }
  if (specs.length === 0) throw new Error("--models: no model given");
  const names = specs.map((s) => s.name);
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated) throw new Error(`--models: the name "${repeated}" is used twice`);
  return specs;
}

/** The default run of a preset for a task: the three families, jointly, with the optimizer's default mechanisms. */
export function defaultOptions(task: TaskName = "sentiment", preset: PresetName = "cpu"): TrainOptions {
  if (!(TASK_NAMES as readonly string[]).includes(task)) {
    throw new Error(`defaultOptions: unknown task "${task}"; valid tasks: ${TASK_NAMES.join(", ")}`);
  }
  if (!Object.hasOwn(PRESETS, preset)) {
    throw new Error(
      `defaultOptions: unknown preset "${preset}"; valid presets: ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  const p = PRESETS[preset];
  const size = {
    hiddenSize: p.hiddenSize,
    numLayers: p.numLayers,
    numHeads: p.numHeads,
    intermediateSize: p.intermediateSize,
  };
  const budget = preset === "cpu" ? CPU_BUDGET[task] : { steps: null, evalLimit: null };
  return {
    task,
    models: parseModels("bert,gpt2,roberta", size),
    epochs: p.epochs,
    steps: budget.steps,
    batchSize: p.batchSize,
    maxLength: TASK_MAX_LENGTH[task],
    docStride: task === "qa" ? defaultDocStride(TASK_MAX_LENGTH.qa) : null,
    vocabSize: p.vocabSize,
    lr: 1e-3,
    warmup: 0.06,
    weightDecay: 0.01,
    decayBiasesAndNorms: true,
    dropout: p.dropout,
    clip: 1,
    seed: 0,
    sharing: 0.2,
    sync: 0.1,
    adaptive: true,
    weights: null,
    alignInit: false,
    accumulate: 1,
    distill: 0,
    independent: false,
    shuffledLabels: [],
    from: {},
    logEvery: 10,
    evalEvery: budget.steps === null ? null : Math.ceil(budget.steps / 3),
    limit: null,
    evalLimit: budget.evalLimit,
    saveLimit: null,
    out: "",
    quiet: false,
  };
}

/** Checks a run's options; errors name the option and the value. */
export function checkTrainOptions(o: TrainOptions): void {
  const fail = (message: string): never => {
    throw new Error(`train: ${message}`);
  };
  if (typeof o !== "object" || o === null) {
    fail("options must be an object (start from defaultOptions(task))");
  }
  // Every option is needed (a plain object from JavaScript may lack some or misspell one): the full
  // set is defaultOptions(task)'s, of which a misspelt or Hugging Face name would be ignored in silence.
  const known = Object.keys(defaultOptions());
  const missing = known.filter((key) => !(key in o));
  if (missing.length > 0) {
    fail(`options ${missing.join(", ")} missing: start from {...defaultOptions(task), ...yours}`);
  }
  checkOptions("train", Object.fromEntries(Object.keys(o).map((key) => [key, true])), known);
  if (!(TASK_NAMES as readonly string[]).includes(o.task)) {
    fail(`unknown task "${o.task}"; valid tasks: ${TASK_NAMES.join(", ")}`);
  }
  const positiveInteger = (name: string, v: number | null) => {
    if (v !== null && !(Number.isSafeInteger(v) && v >= 1)) {
      fail(`${name} must be a positive integer, got ${v}`);
    }
  };
  positiveInteger("epochs", o.epochs);
  positiveInteger("steps", o.steps);
  positiveInteger("batch", o.batchSize);
  positiveInteger("accumulate", o.accumulate);
  positiveInteger("log-every", o.logEvery);
  positiveInteger("limit", o.limit);
  positiveInteger("eval-every", o.evalEvery);
  positiveInteger("eval-limit", o.evalLimit);
  positiveInteger("save-limit", o.saveLimit);
  if (!(o.maxLength >= 8 && Number.isInteger(o.maxLength))) {
    fail(`max-length must be an integer >= 8, got ${o.maxLength}`);
  }
  if (o.docStride !== null && o.task !== "qa") fail(`doc-stride applies to qa only, not ${o.task}`);
  if (o.docStride !== null) {
    const room = windowRoom(o.maxLength);
    if (!(Number.isSafeInteger(o.docStride) && o.docStride >= 0 && o.docStride < room)) {
      fail(
        `doc-stride must be an integer in [0, ${room}) with max-length ${o.maxLength} (the context ` +
          `tokens a row keeps beside the longest question), got ${o.docStride}`,
      );
    }
  }
  if (!(o.vocabSize >= 261 && Number.isInteger(o.vocabSize))) {
    fail(`vocab must be an integer >= 261 (256 bytes and 5 special tokens), got ${o.vocabSize}`);
  }
  if (!(o.lr > 0 && Number.isFinite(o.lr))) fail(`lr must be a positive number, got ${o.lr}`);
  if (!(o.warmup >= 0 && o.warmup < 1)) fail(`warmup must be in [0, 1), got ${o.warmup}`);
  if (!(o.weightDecay >= 0 && Number.isFinite(o.weightDecay))) {
    fail(`weight-decay must be >= 0, got ${o.weightDecay}`);
  }
  if (o.clip !== null && !(o.clip > 0)) fail(`clip must be > 0, got ${o.clip}`);
  if (!(o.dropout >= 0 && o.dropout < 1)) fail(`dropout must be in [0, 1), got ${o.dropout}`);
  if (!Number.isSafeInteger(o.seed) || o.seed < 0) fail(`seed must be an integer >= 0, got ${o.seed}`);
  for (const [name, ratio] of [["sharing", o.sharing], ["sync", o.sync]] as const) {
    if (ratio !== false && !(ratio >= 0 && ratio <= 1)) {
      fail(`${name} must be a ratio in [0, 1] or off, got ${ratio}`);
    }
  }
  if (!(o.distill >= 0 && Number.isFinite(o.distill))) fail(`distill must be >= 0, got ${o.distill}`);
  if (o.distill > 0 && o.models.length < 2) fail("distill needs at least two models");
  if (o.distill > 0 && o.task === "lm") {
    fail("distill is not defined for lm: causal and masked models predict different tokens");
  }
  if (o.independent && (o.distill > 0)) fail("independent trains each model alone; it excludes distill");
  if (o.independent && o.weights) fail("independent trains each model alone; it excludes weights");
  if (o.independent && o.alignInit) fail("independent trains each model alone; it excludes align-init");
  if (o.shuffledLabels.length > 0 && o.task !== "sentiment" && o.task !== "spam") {
    fail(`shuffled-labels needs a classification task (sentiment, spam), not ${o.task}`);
  }
  for (const name of Object.keys(o.weights ?? {})) {
    if (!o.models.some((m) => m.name === name)) fail(`weights name "${name}", which is not a model`);
  }
  for (const name of o.shuffledLabels) {
    if (!o.models.some((m) => m.name === name)) fail(`shuffled-labels names "${name}", which is not a model`);
  }
  for (const name of Object.keys(o.from)) {
    if (name !== "*" && !o.models.some((m) => m.name === name)) {
      fail(`from names "${name}", which is not a model`);
    }
  }
  for (const m of o.models) {
    if (m.hiddenSize % m.numHeads !== 0) {
      fail(`model "${m.name}": ${m.numHeads} heads do not divide hidden size ${m.hiddenSize}`);
    }
  }
}

/**
 * The protocol of `deno task experiment`: which runs measure the seed's three claims, with the same
 * data, steps, batch, schedule and tuning budget for every condition.
 *
 * 1. grid: each condition's learning rate is chosen from the same small grid by mean validation score
 *    (one seed per grid point), then
 * 2. main: independent vs joint at their chosen rates, on sentiment, ner and qa, over the seeds;
 * 3. ablation (sentiment): joint minus one mechanism at a time, joint plus mutual distillation, and
 *    distillation alone;
 * 4. placebo (sentiment): joint training in which each model's partners learn from permuted labels;
 * 5. pretrained (sentiment): independent vs joint starting from a short joint language-model
 *    pretraining on Moby-Dick (a common ancestor, which weight averaging assumes);
 * 6. compute: time per step of independent sequential, independent parallel and joint training.
 *
 * "Joint" is every mechanism on: gradient sharing (0.2), soft sync (0.1 every 10 updates), adaptive
 * rates, the seed's model weights (bert 1.0, gpt2 0.8, roberta 1.2) and aligned initialisation.
 *
 * @module
 */
import type { TaskName } from "../data/datasets.ts";
import { defaultOptions, parseModels, type TrainOptions } from "../train/options.ts";

/** Sizes and budgets of an experiment. */
export interface ExperimentScale {
  /** Name, recorded with the results. */
  name: "cpu" | "quick" | "gpu";
  /** Tasks of the main comparison. */
  tasks: TaskName[];
  /** Seeds of every cell (the grid uses the first). */
  seeds: number[];
  /** Learning rates tried per condition. */
  lrGrid: number[];
  /** Model size. */
  size: { hiddenSize: number; numLayers: number; numHeads: number; intermediateSize: number };
  /** Training steps per run, per task. */
  steps: Partial<Record<TaskName, number>> & { default: number };
  /** Examples per step. */
  batchSize: number;
  /** Validation evaluations per run (the learning curves). */
  evaluations: number;
  /**
   * Validation evaluations per main run: their curves give the steps to the target, which is only known
   * to lie between two evaluations, so they are evaluated more often (evaluation changes no training step).
   */
  mainEvaluations: number;
  /** Validation and test examples used. */
  evalLimit: number;
  /** Steps of the language-model pretraining (0: no pretrained comparison). */
  pretrainSteps: number;
  /** Which groups run. */
  groups: ReadonlySet<RunGroup>;
  /** Tokenizer vocabulary. */
  vocabSize: number;
  /** Cap on examples per split (for tests); absent uses the whole data sets. */
  limit?: number;
  /** Steps timed per compute case, and repeats of each case (for an interval). */
  compute: { steps: number; repeats: number };
}

/** The kinds of runs. */
export type RunGroup = "grid" | "main" | "ablation" | "placebo" | "pretrained" | "compute";

/** The full protocol on this machine's software adapter, the quick check, and a larger GPU preset. */
export const SCALES: Record<ExperimentScale["name"], ExperimentScale> = {
  cpu: {
    name: "cpu",
    tasks: ["sentiment", "ner", "qa"],
    seeds: [1, 2, 3, 4, 5],
    // A first full run over 3e-4..3e-3 chose its largest rate for every task and condition.
    lrGrid: [1e-3, 3e-3, 1e-2, 3e-2],
    size: { hiddenSize: 32, numLayers: 1, numHeads: 2, intermediateSize: 128 },
    steps: { default: 120, qa: 80 },
    batchSize: 32,
    evaluations: 4,
    mainEvaluations: 12,
    evalLimit: 300,
    pretrainSteps: 150,
    groups: new Set(["grid", "main", "ablation", "placebo", "pretrained", "compute"]),
    vocabSize: 1024,
    compute: { steps: 20, repeats: 10 },
  },
  quick: {
    name: "quick",
    tasks: ["sentiment"],
    seeds: [1, 2],
    lrGrid: [1e-3, 3e-3],
    size: { hiddenSize: 32, numLayers: 1, numHeads: 2, intermediateSize: 128 },
    steps: { default: 40 },
    batchSize: 32,
    evaluations: 2,
    mainEvaluations: 4,
    evalLimit: 200,
    pretrainSteps: 0,
    groups: new Set(["grid", "main", "ablation", "placebo", "compute"]),
    vocabSize: 1024,
    compute: { steps: 10, repeats: 2 },
  },
  gpu: {
    name: "gpu",
    tasks: ["sentiment", "ner", "qa"],
    seeds: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    lrGrid: [1e-4, 3e-4, 1e-3, 3e-3],
    size: { hiddenSize: 256, numLayers: 4, numHeads: 4, intermediateSize: 1024 },
    steps: { default: 2000 },
    batchSize: 32,
    evaluations: 10,
    mainEvaluations: 20,
    evalLimit: 5000,
    pretrainSteps: 3000,
    groups: new Set(["grid", "main", "ablation", "placebo", "pretrained", "compute"]),
    vocabSize: 8192,
    compute: { steps: 50, repeats: 5 },
  },
};

/** The conditions a run may train under. */
const CONDITIONS = [
  "independent",
  "joint",
  "joint-no-sharing",
  "joint-no-sync",
  "joint-no-adaptive",
  "joint-no-weights",
  "joint-no-align",
  "joint+distill",
  "distill-only",
  "placebo",
] as const;

/** One of {@linkcode CONDITIONS}. */
export type Condition = (typeof CONDITIONS)[number];

/** The seed's model weights, used by the joint condition. */
const SEED_WEIGHTS: Record<string, number> = { bert: 1.0, gpt2: 0.8, roberta: 1.2 };

/** Mutual distillation weight of the distillation conditions (Deep Mutual Learning's 1). */
const DISTILL_WEIGHT = 1;

/** A run to do: its unique key, what it measures and its training options (without `out`). */
export interface PlannedRun {
  /** Unique key, e.g. "main/sentiment/joint/seed=2". */
  key: string;
  /** Group. */
  group: RunGroup;
  /** Task. */
  task: TaskName;
  /** Condition. */
  condition: Condition;
  /** Learning rate. */
  lr: number;
  /** Seed. */
  seed: number;
  /** For placebo runs: the one model trained on real labels (the others are its placebo partners). */
  target?: string;
  /** Options for train(); `out` is filled in by the runner. */
  options: TrainOptions;
}

/** The training options of a condition. */
export function conditionOptions(
  scale: ExperimentScale,
  task: TaskName,
  condition: Condition,
  lr: number,
  seed: number,
): TrainOptions {
  const base = defaultOptions(task, "cpu");
  const steps = scale.steps[task] ?? scale.steps.default;
  const options: TrainOptions = {
    ...base,
    models: parseModels("bert,gpt2,roberta", scale.size),
    steps,
    evalEvery: Math.max(1, Math.ceil(steps / scale.evaluations)),
    evalLimit: scale.evalLimit,
    batchSize: scale.batchSize,
    vocabSize: scale.vocabSize,
    lr,
    seed,
    quiet: true,
    limit: scale.limit ?? null,
    logEvery: Math.max(1, Math.ceil(steps / 10)),
    sharing: 0.2,
    sync: 0.1,
    adaptive: true,
    weights: { ...SEED_WEIGHTS },
    alignInit: true,
    distill: 0,
    independent: false,
  };
  switch (condition) {
    case "independent":
      return { ...options, independent: true, weights: null, alignInit: false };
    case "joint":
    case "placebo":
      return options;
    case "joint-no-sharing":
      return { ...options, sharing: false };
    case "joint-no-sync":
      return { ...options, sync: false };
    case "joint-no-adaptive":
      return { ...options, adaptive: false };
    case "joint-no-weights":
      return { ...options, weights: null };
    case "joint-no-align":
      return { ...options, alignInit: false };
    case "joint+distill":
      return { ...options, distill: DISTILL_WEIGHT };
    case "distill-only":
      return {
        ...options,
        sharing: false,
        sync: false,
        adaptive: false,
        weights: null,
        alignInit: false,
        distill: DISTILL_WEIGHT,
      };
  }
}

/** The learning-rate grid: every condition of the main comparison and the ablations, one seed each. */
export function gridRuns(scale: ExperimentScale): PlannedRun[] {
  const runs: PlannedRun[] = [];
  const seed = scale.seeds[0];
  for (const task of scale.tasks) {
    for (const condition of ["independent", "joint"] as const) {
      for (const lr of scale.lrGrid) {
        runs.push({
          key: `grid/${task}/${condition}/lr=${lr}/seed=${seed}`,
          group: "grid",
          task,
          condition,
          lr,
          seed,
          options: conditionOptions(scale, task, condition, lr, seed),
        });
      }
    }
  }
  return runs;
}

/**
 * The runs after the grid, given each (task, condition)'s chosen learning rate (`lrOf`); ablations
 * and the placebo use the joint condition's rate, distillation alone the independent one's.
 */
export function laterRuns(
  scale: ExperimentScale,
  lrOf: (task: TaskName, condition: "independent" | "joint") => number,
  pretrained: string | null,
): PlannedRun[] {
  const runs: PlannedRun[] = [];
  const add = (
    group: RunGroup,
    task: TaskName,
    condition: Condition,
    seed: number,
    extra: Partial<TrainOptions> = {},
    target?: string,
  ) => {
    const lr = lrOf(
      task,
      condition === "independent" || condition === "distill-only" ? "independent" : "joint",
    );
    runs.push({
      key: `${group}/${task}/${condition}${target ? `/${target}` : ""}/seed=${seed}`,
      group,
      task,
      condition,
      lr,
      seed,
      target,
      options: {
        ...conditionOptions(scale, task, condition, lr, seed),
        ...evaluations(group, task),
        ...extra,
      },
    });
  };
  const evaluations = (group: RunGroup, task: TaskName): Partial<TrainOptions> => {
    const steps = scale.steps[task] ?? scale.steps.default;
    return group === "main" ? { evalEvery: Math.max(1, Math.ceil(steps / scale.mainEvaluations)) } : {};
  };
  for (const seed of scale.seeds) {
    if (scale.groups.has("main")) {
      for (const task of scale.tasks) {
        add("main", task, "independent", seed);
        add("main", task, "joint", seed);
      }
    }
    if (scale.groups.has("ablation")) {
      for (
        const condition of [
          "joint-no-sharing",
          "joint-no-sync",
          "joint-no-adaptive",
          "joint-no-weights",
          "joint-no-align",
          "joint+distill",
          "distill-only",
        ] as const
      ) {
        add("ablation", "sentiment", condition, seed);
      }
    }
    if (scale.groups.has("placebo")) {
      for (const target of ["bert", "gpt2", "roberta"]) {
        add("placebo", "sentiment", "placebo", seed, {
          shuffledLabels: ["bert", "gpt2", "roberta"].filter((m) => m !== target),
        }, target);
      }
    }
    if (pretrained && scale.groups.has("pretrained")) {
      add("pretrained", "sentiment", "independent", seed, { from: { "*": pretrained } });
      add("pretrained", "sentiment", "joint", seed, { from: { "*": pretrained }, alignInit: false });
    }
  }
  return runs;
}

/** The short joint language-model pretraining on Moby-Dick the pretrained comparison starts from. */
export function pretrainingOptions(scale: ExperimentScale): TrainOptions {
  const options = conditionOptions(scale, "lm", "joint", 1e-3, scale.seeds[0]);
  return {
    ...options,
    steps: scale.pretrainSteps,
    evalEvery: scale.pretrainSteps,
    logEvery: Math.max(1, Math.ceil(scale.pretrainSteps / 10)),
    // The sentiment runs reuse this tokenizer, so it is trained on Moby-Dick with the same vocabulary size.
    maxLength: 64,
  };
}

/**
 * Options of the multi-model optimizer, their defaults and validation, the learning-rate schedule,
 * and the model-weight formula.
 *
 * @module
 */
import { checkOptions } from "../engine/options.ts";

/** Linear warmup, then cosine decay to `minRatio` of the base rate, held there after `totalSteps`. */
export interface ScheduleOptions {
  /** Updates of linear warmup (rate (u + 1) / warmupSteps of the base at update u). */
  warmupSteps: number;
  /** Update at which the cosine reaches `minRatio`; the rate stays there afterwards. */
  totalSteps: number;
  /** Final fraction of the base rate; default 0. */
  minRatio?: number;
}

/** Gradient sharing: `g <- (1 - ratio) g + ratio * weighted mean of the group's gradients`. */
export interface SharingOptions {
  /** Mixing ratio a in [0, 1]; default 0.2. */
  ratio?: number;
  /** Share on every k-th update; default 1. */
  every?: number;
}

/** Soft parameter sync: `p <- (1 - ratio) p + ratio * weighted mean of the group's parameters`. */
export interface SyncOptions {
  /** Mixing ratio b in [0, 1]; default 0.1. */
  ratio?: number;
  /** Synchronise after every k-th update; default 10. */
  every?: number;
}

/** Convergence-aware learning-rate multipliers (see optim/plan.ts for the rule). */
export interface AdaptiveLrOptions {
  /** Logged losses the trend is fitted over; default 20. */
  window?: number;
  /** Smallest multiplier; default 0.5. */
  min?: number;
  /** Largest multiplier; default 1.5. */
  max?: number;
  /** Fraction of the way a multiplier moves towards its target per update; default 0.1. */
  smoothing?: number;
}

/** Everything the optimizer takes besides the models. */
export interface OptimizerOptions {
  /** Base learning rate; default 1e-3. */
  lr?: number;
  /** Adam's (beta1, beta2); default (0.9, 0.999). */
  betas?: readonly [number, number];
  /** Adam's epsilon; default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (AdamW); default 0. */
  weightDecay?: number;
  /**
   * Whether weight decay applies to biases and LayerNorm weights too: true (default) decays every
   * parameter, as `torch.optim.AdamW` does; false exempts them, as Hugging Face's `Trainer` does.
   */
  decayBiasesAndNorms?: boolean;
  /**
   * AMSGrad (PyTorch's `amsgrad`): divide by the running maximum of the second moment, a third
   * moment buffer on the GPU; default false.
   */
  amsgrad?: boolean;
  /** Positive weight per model; default 1 each. See {@linkcode modelLrFactors}. */
  modelWeights?: Record<string, number>;
  /** Micro-batches whose gradients add up (and are averaged) per update; default 1. */
  gradientAccumulationSteps?: number;
  /** Per-model global gradient-norm bound, or null for none (default). */
  clipGradNorm?: number | null;
  /** Learning-rate schedule; default "constant". */
  schedule?: ScheduleOptions | "constant";
  /** Gradient sharing, or false; default { ratio: 0.2, every: 1 }. */
  gradientSharing?: SharingOptions | false;
  /** Soft parameter sync, or false; default { ratio: 0.1, every: 10 }. */
  parameterSync?: SyncOptions | false;
  /** Adaptive learning-rate multipliers, or false; default { window: 20, min: 0.5, max: 1.5, smoothing: 0.1 }. */
  adaptiveLr?: AdaptiveLrOptions | false;
  /** Give the members of each group the first member's initial values (aligned initialisation); default false. */
  alignInitialization?: boolean;
}

/** Options with every default filled in and every value checked. */
export interface ResolvedOptions {
  /** Base learning rate. */
  lr: number;
  /** Adam's betas. */
  betas: [number, number];
  /** Adam's epsilon. */
  eps: number;
  /** Decoupled weight decay. */
  weightDecay: number;
  /** Whether biases and LayerNorm weights decay too. */
  decayBiasesAndNorms: boolean;
  /** AMSGrad. */
  amsgrad: boolean;
  /** Weight per model, in model order. */
  modelWeights: number[];
  /** Micro-batches per update. */
  gradientAccumulationSteps: number;
  /** Clipping bound, or null. */
  clipGradNorm: number | null;
  /** Schedule, or null for constant. */
  schedule: Required<ScheduleOptions> | null;
  /** Sharing, or null. */
  gradientSharing: Required<SharingOptions> | null;
  /** Sync, or null. */
  parameterSync: Required<SyncOptions> | null;
  /** Adaptive multipliers, or null. */
  adaptiveLr: Required<AdaptiveLrOptions> | null;
  /** Aligned initialisation. */
  alignInitialization: boolean;
}

/** Most models one optimizer drives (the kernels keep per-model state in fixed-size tables). */
export const MAX_MODELS = 8;

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`MultiModelOptimizer: ${message}`);
}

/** The names each options object takes (a misspelt one would otherwise be ignored in silence). */
const OPTION_NAMES: Record<string, readonly string[]> = {
  options: [
    "models",
    "lr",
    "betas",
    "eps",
    "weightDecay",
    "decayBiasesAndNorms",
    "amsgrad",
    "modelWeights",
    "gradientAccumulationSteps",
    "clipGradNorm",
    "schedule",
    "gradientSharing",
    "parameterSync",
    "adaptiveLr",
    "alignInitialization",
  ],
  schedule: ["warmupSteps", "totalSteps", "minRatio"],
  gradientSharing: ["ratio", "every"],
  parameterSync: ["ratio", "every"],
  adaptiveLr: ["window", "min", "max", "smoothing"],
};

/** Fills in defaults and validates; errors name the option and the offending value. */
export function resolveOptions(modelNames: readonly string[], options: OptimizerOptions): ResolvedOptions {
  checkOptions("MultiModelOptimizer", options, OPTION_NAMES.options);
  for (const nested of ["schedule", "gradientSharing", "parameterSync", "adaptiveLr"] as const) {
    // null or false turns a mechanism off; other values that are not objects are refused below.
    if (typeof options[nested] === "object" && options[nested] !== null) {
      checkOptions(`MultiModelOptimizer: ${nested}`, options[nested], OPTION_NAMES[nested]);
    }
  }
  check(modelNames.length >= 1, "no models given");
  check(modelNames.length <= MAX_MODELS, `at most ${MAX_MODELS} models, got ${modelNames.length}`);
  const lr = options.lr ?? 1e-3;
  const betas: [number, number] = [...(options.betas ?? [0.9, 0.999])] as [number, number];
  const eps = options.eps ?? 1e-8;
  const weightDecay = options.weightDecay ?? 0;
  check(lr >= 0 && Number.isFinite(lr), `lr must be a finite number >= 0, got ${lr}`);
  check(
    betas.length === 2 && betas.every((b) => b >= 0 && b < 1),
    `betas must be two numbers in [0, 1), got [${betas}]`,
  );
  check(eps > 0 && Number.isFinite(eps), `eps must be a finite number > 0, got ${eps}`);
  check(
    weightDecay >= 0 && Number.isFinite(weightDecay),
    `weightDecay must be a finite number >= 0, got ${weightDecay}`,
  );
  const decayBiasesAndNorms = options.decayBiasesAndNorms ?? true;
  check(
    typeof decayBiasesAndNorms === "boolean",
    `decayBiasesAndNorms must be true or false, got ${JSON.stringify(decayBiasesAndNorms)}`,
  );
  const amsgrad = options.amsgrad ?? false;
  check(typeof amsgrad === "boolean", `amsgrad must be true or false, got ${JSON.stringify(amsgrad)}`);
  const weights = options.modelWeights ?? {};
  for (const name of Object.keys(weights)) {
    check(
      modelNames.includes(name),
      `modelWeights names "${name}", which is not a model (${modelNames.join(", ")})`,
    );
  }
  const modelWeights = modelNames.map((name) => {
    const w = weights[name] ?? (options.modelWeights ? undefined : 1);
    check(w !== undefined, `modelWeights has no weight for model "${name}"`);
    check(Number.isFinite(w!) && w! > 0, `the weight of model "${name}" must be a positive number, got ${w}`);
    return w!;
  });
  const accumulation = options.gradientAccumulationSteps ?? 1;
  check(
    Number.isInteger(accumulation) && accumulation >= 1,
    `gradientAccumulationSteps must be an integer >= 1`,
  );
  const clip = options.clipGradNorm ?? null;
  check(clip === null || clip > 0, `clipGradNorm must be > 0 or null, got ${clip}`);
  let schedule: Required<ScheduleOptions> | null = null;
  if (options.schedule && options.schedule !== "constant") {
    const s = { minRatio: 0, ...options.schedule };
    check(
      Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0,
      "schedule.warmupSteps must be an integer >= 0",
    );
    check(
      Number.isInteger(s.totalSteps) && s.totalSteps > s.warmupSteps,
      "schedule.totalSteps must exceed warmupSteps",
    );
    check(s.minRatio >= 0 && s.minRatio <= 1, `schedule.minRatio must be in [0, 1], got ${s.minRatio}`);
    schedule = s;
  }
  const mixing = <T extends { ratio?: number; every?: number }>(
    value: T | false | undefined,
    ratio: number,
    every: number,
    what: string,
  ) => {
    if (value === false) return null;
    const resolved = { ratio: value?.ratio ?? ratio, every: value?.every ?? every };
    check(
      resolved.ratio >= 0 && resolved.ratio <= 1,
      `${what}.ratio must be in [0, 1], got ${resolved.ratio}`,
    );
    check(Number.isInteger(resolved.every) && resolved.every >= 1, `${what}.every must be an integer >= 1`);
    return resolved;
  };
  let adaptiveLr: Required<AdaptiveLrOptions> | null = null;
  if (options.adaptiveLr !== false) {
    adaptiveLr = { window: 20, min: 0.5, max: 1.5, smoothing: 0.1, ...options.adaptiveLr };
    const a = adaptiveLr;
    check(
      Number.isInteger(a.window) && a.window >= 3 && a.window <= 256,
      "adaptiveLr.window must be an integer in [3, 256]",
    );
    check(
      a.min > 0 && a.min <= 1 && a.max >= 1,
      `adaptiveLr needs 0 < min <= 1 <= max, got [${a.min}, ${a.max}]`,
    );
    check(a.smoothing > 0 && a.smoothing <= 1, `adaptiveLr.smoothing must be in (0, 1], got ${a.smoothing}`);
  }
  return {
    lr,
    betas,
    eps,
    weightDecay,
    decayBiasesAndNorms,
    amsgrad,
    modelWeights,
    gradientAccumulationSteps: accumulation,
    clipGradNorm: clip,
    schedule,
    gradientSharing: mixing(options.gradientSharing, 0.2, 1, "gradientSharing"),
    parameterSync: mixing(options.parameterSync, 0.1, 10, "parameterSync"),
    adaptiveLr,
    alignInitialization: options.alignInitialization ?? false,
  };
}

/**
 * The schedule's factor of the base rate at update `u` (0-based): (u + 1) / warmup during warmup,
 * then minRatio + (1 - minRatio) * (1 + cos(pi * progress)) / 2 with progress clamped to [0, 1].
 */
export function scheduleFactor(schedule: Required<ScheduleOptions> | null, u: number): number {
  if (!schedule) return 1;
  const { warmupSteps, totalSteps, minRatio } = schedule;
  if (u < warmupSteps) return (u + 1) / warmupSteps;
  const progress = Math.min(1, (u - warmupSteps) / (totalSteps - warmupSteps));
  return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/**
 * Learning-rate factor of each model from its weight: w_m / mean(w). Weights are relative
 * priorities: with equal weights every model trains at the base rate, and the average rate over
 * the models is always the base rate. The same weights scale each model's share in group means.
 */
export function modelLrFactors(weights: readonly number[]): number[] {
  const mean = weights.reduce((s, w) => s + w, 0) / weights.length;
  return weights.map((w) => w / mean);
}

/**
 * The saved state of a MultiModelOptimizer: its format, the counters kept on the host, and the check
 * every loaded state passes before anything is written.
 *
 * @module
 */
import { CONTROL, CONTROL_STRIDE, SkipReason } from "./kernels.ts";
import type { ResolvedOptions } from "./options.ts";

/**
 * The options a state is saved with: every resolved option but aligned initialisation, which acts
 * once, when the optimizer is built.
 */
export type SavedOptions = Omit<ResolvedOptions, "alignInitialization">;

/** How a state is loaded. */
export interface LoadStateOptions {
  /**
   * Load a state saved with other options and go on with this optimizer's (its learning rate,
   * schedule, mechanisms...); default false, which refuses such a state naming what differs.
   */
  keepCurrentOptions?: boolean;
}

/** The options of `options` that a state records. */
export function savedOptions(options: ResolvedOptions): SavedOptions {
  const { alignInitialization: _, ...saved } = structuredClone(options);
  return saved;
}

/** Options added after states recorded options, at the values every earlier state was saved with. */
const OPTIONS_ADDED_LATER: Partial<SavedOptions> = { decayBiasesAndNorms: true };

/**
 * Throws unless `saved` (a state's options) equals `current` (the loading optimizer's), naming every
 * option that differs with both values. PyTorch's `load_state_dict` replaces the optimizer's
 * hyperparameters with the saved ones and optax keeps the new ones; neither silently here.
 */
export function checkSavedOptions(saved: unknown, current: ResolvedOptions, prefix: string): void {
  const expected = savedOptions(current) as unknown as Record<string, unknown>;
  if (typeof saved !== "object" || saved === null || Array.isArray(saved)) {
    throw new Error(`${prefix}: options must be an object, got ${JSON.stringify(saved)}`);
  }
  const record = { ...OPTIONS_ADDED_LATER, ...saved } as Record<string, unknown>;
  const names = new Set([...Object.keys(expected), ...Object.keys(record)]);
  const differences: string[] = [];
  for (const name of names) {
    const [was, is] = [canonicalJson(record[name]), canonicalJson(expected[name])];
    if (was !== is) differences.push(`${name} ${was} (this optimizer: ${is})`);
  }
  if (differences.length > 0) {
    throw new Error(
      `${prefix}: the state was saved by an optimizer with other options: ${differences.join("; ")}. ` +
        "Build the optimizer with the saved options, or load with { keepCurrentOptions: true } to go on " +
        "with this optimizer's options",
    );
  }
}

/** JSON with object keys sorted ("absent" for undefined), so that equal options compare equal. */
function canonicalJson(value: unknown): string {
  if (value === undefined) return "absent";
  return JSON.stringify(
    value,
    (_, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
        : v,
  );
}

/** Host-side counters saved in state dicts. */
export interface Counters {
  /** Updates performed. */
  updates: number;
  /** Micro-batches accumulated towards the next update. */
  microBatches: number;
  /** Whether the next zeroGrad() clears (an update happened since the last clear). */
  gradientsStale: boolean;
  /** Next loss-window slot per model. */
  ringPositions: number[];
  /** Losses logged per model. */
  ringCounts: number[];
}

/** What a state must fit: the optimizer's models, loss window, accumulation and parameters. */
export interface ExpectedState {
  /** Model names, in order. */
  modelNames: readonly string[];
  /** Loss-window length. */
  window: number;
  /** Micro-batches per update. */
  accumulation: number;
  /** Whether the state holds AMSGrad's maximum of the second moment. */
  amsgrad: boolean;
  /** Every parameter: its "model/parameter" key, shape and element count. */
  parameters: readonly { key: string; shape: readonly number[]; size: number }[];
  /** The optimizer's options, which the state's must equal; null accepts any. */
  options: ResolvedOptions | null;
}

const SKIP_CODES = new Set<number>(Object.values(SkipReason));

/**
 * Throws, naming the field, unless `state` is a complete, consistent state of an optimizer with the
 * given models, options (when the state records them and `expected.options` is given), loss window,
 * accumulation and parameters: counters in range and consistent with each
 * other and with the control rows, finite moments and non-negative second moments (AMSGrad's
 * maximum present exactly when the optimizer uses it, and never below the second moment).
 */
export function checkState(state: OptimizerState, expected: ExpectedState): void {
  const fail = (message: string): never => {
    throw new Error(`loadStateDict: ${message}`);
  };
  const models = expected.modelNames.length;
  const isCount = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (state?.format !== STATE_FORMAT) fail(`unknown format ${JSON.stringify(state?.format)}`);
  if (!Array.isArray(state.models) || state.models.join() !== expected.modelNames.join()) {
    fail(`state is for models [${state.models}], this optimizer has [${expected.modelNames}]`);
  }
  if (state.options !== undefined && expected.options) {
    checkSavedOptions(state.options, expected.options, "loadStateDict");
  }
  const c = state.counters;
  if (!c || typeof c !== "object") fail("counters are missing");
  if (!isCount(c.updates)) fail(`counters.updates must be an integer >= 0, got ${c.updates}`);
  if (!isCount(c.microBatches) || c.microBatches >= expected.accumulation) {
    fail(
      `counters.microBatches must be an integer in [0, ${expected.accumulation}), ` +
        `got ${c.microBatches}`,
    );
  }
  if (typeof c.gradientsStale !== "boolean") fail("counters.gradientsStale must be true or false");
  for (const field of ["ringPositions", "ringCounts"] as const) {
    const values = c[field];
    if (!Array.isArray(values) || values.length !== models || !values.every(isCount)) {
      fail(`counters.${field} must hold ${models} integers >= 0, got ${JSON.stringify(values)}`);
    }
  }
  c.ringPositions.forEach((position, m) => {
    if (position !== c.ringCounts[m] % expected.window) {
      fail(
        `counters.ringPositions[${m}] is ${position}, but ${c.ringCounts[m]} losses in a window of ` +
          `${expected.window} put the next at ${c.ringCounts[m] % expected.window}`,
      );
    }
  });
  // A state that went through JSON.stringify has plain objects where its typed arrays were.
  if (!(state.control instanceof Float32Array) || !(state.lossRing instanceof Float32Array)) {
    fail(
      "control and lossRing must be Float32Arrays (a state through JSON.stringify loses its typed arrays; " +
        "saveCheckpoint and loadCheckpoint keep them)",
    );
  }
  if (state.control.length !== models * CONTROL_STRIDE) {
    fail(
      `control table has the wrong size: ${state.control.length} values, ${models} models take ` +
        `${models * CONTROL_STRIDE}`,
    );
  }
  if (state.lossRing.length !== models * expected.window) {
    fail(
      `loss ring has ${state.lossRing.length} values; ${models} models with this optimizer's loss window of ` +
        `${expected.window} take ${models * expected.window}`,
    );
  }
  expected.modelNames.forEach((name, m) => {
    const field = (key: keyof typeof CONTROL) => state.control[m * CONTROL_STRIDE + CONTROL[key]];
    const check = (key: keyof typeof CONTROL, ok: (v: number) => boolean, what: string) => {
      if (!ok(field(key))) fail(`control of "${name}": ${key} must be ${what}, got ${field(key)}`);
    };
    check("steps", isCount, "an integer >= 0");
    check("skipped", isCount, "an integer >= 0");
    if (field("steps") + field("skipped") !== c.updates) {
      fail(
        `control of "${name}": ${field("steps")} updates and ${field("skipped")} skipped ` +
          `do not add up to counters.updates ${c.updates}`,
      );
    }
    check("biasCorrection1", (v) => v >= 0 && v <= 1, "in [0, 1]");
    check("biasCorrection2", (v) => v >= 0 && v <= 1, "in [0, 1]");
    check("multiplier", (v) => Number.isFinite(v) && v > 0, "a positive number");
    check("lossFinite", (v) => v === 0 || v === 1, "0 or 1");
    check("fault", (v) => v === 0 || v === 1, "0 or 1");
    check("skip", (v) => SKIP_CODES.has(v), "a skip reason code");
    for (const key of ["lr", "gradScale", "trend"] as const) check(key, Number.isFinite, "finite");
  });
  const keys = new Set(expected.parameters.map((p) => p.key));
  if (!state.moments || typeof state.moments !== "object") fail("moments are missing");
  for (const key of Object.keys(state.moments)) {
    if (!keys.has(key)) fail(`unexpected parameter "${key}"`);
  }
  for (const p of expected.parameters) {
    const key = p.key;
    const entry = state.moments[key];
    if (!entry) fail(`no moments for "${key}"`);
    // Same element count, other shape (a [2, 3] state for a [3, 2] parameter) would load moments into the wrong places.
    if (!Array.isArray(entry.shape) || entry.shape.join() !== p.shape.join()) {
      fail(`"${key}" was saved with shape [${entry.shape}], the parameter has shape [${p.shape}]`);
    }
    if ((entry.maxExpAvgSq !== undefined) !== expected.amsgrad) {
      fail(
        `"${key}" ${entry.maxExpAvgSq ? "has" : "lacks"} max_exp_avg_sq, and this optimizer ` +
          `${expected.amsgrad ? "uses" : "does not use"} AMSGrad`,
      );
    }
    const lengths = [
      entry.expAvg,
      entry.expAvgSq,
      ...(entry.maxExpAvgSq ? [entry.maxExpAvgSq] : []),
      entry.pendingGrad ?? entry.expAvg,
    ]
      .map((a) => a?.length);
    if (lengths.some((n) => n !== p.size)) {
      fail(`state of "${key}" has [${lengths}] values, the parameter has ${p.size}`);
    }
    if (!entry.pendingGrad !== c.gradientsStale) {
      fail(`"${key}" ${entry.pendingGrad ? "has" : "lacks"} the gradients of an open accumulation cycle`);
    }
    // Pending gradients may hold a NaN (that micro-batch's update will be skipped); moments never may.
    const bad = (values: ArrayLike<number>, ok: (v: number) => boolean) =>
      Array.prototype.findIndex.call(values, (v: number) => !ok(v));
    const first = bad(entry.expAvg, Number.isFinite);
    if (first >= 0) fail(`exp_avg of "${key}" holds ${entry.expAvg[first]} at ${first}`);
    const second = bad(entry.expAvgSq, (v) => Number.isFinite(v) && v >= 0);
    if (second >= 0) {
      fail(`exp_avg_sq of "${key}" holds ${entry.expAvgSq[second]} at ${second} (must be finite and >= 0)`);
    }
    // AMSGrad's maximum never falls below the moment it is the maximum of.
    const top = entry.maxExpAvgSq;
    const third = top ? bad(top, (v) => Number.isFinite(v) && v >= 0) : -1;
    if (third >= 0) {
      fail(`max_exp_avg_sq of "${key}" holds ${top![third]} at ${third} (must be finite and >= 0)`);
    }
    const below = top
      ? Array.prototype.findIndex.call(top, (v: number, i: number) => v < entry.expAvgSq[i])
      : -1;
    if (below >= 0) {
      fail(
        `max_exp_avg_sq of "${key}" is ${top![below]} at ${below}, below exp_avg_sq ${entry.expAvgSq[below]}`,
      );
    }
  }
}

/** The format tag of optimizer state dicts. */
export const STATE_FORMAT = "multimodel-optimizer/1";

/** The state of a {@linkcode MultiModelOptimizer}, as returned by `stateDict()`. */
export interface OptimizerState {
  /** Format tag. */
  format: typeof STATE_FORMAT;
  /** Model names, in order. */
  models: string[];
  /**
   * The options of the optimizer that saved it (absent from states saved before they were recorded,
   * which load without that check).
   */
  options?: SavedOptions;
  /** Host-side counters: updates, pending micro-batches, loss-window positions. */
  counters: Counters;
  /** Per-model control rows (see optim/kernels.ts CONTROL). */
  control: Float32Array;
  /** Per-model loss windows. */
  lossRing: Float32Array;
  /**
   * Per "model/parameter": both moments, AMSGrad's maximum of the second (with AMSGrad only),
   * and the gradient accumulated so far when the state was taken inside an accumulation cycle
   * (between zeroGrad() and the updating step()).
   */
  moments: Record<
    string,
    {
      shape: number[];
      expAvg: Float32Array;
      expAvgSq: Float32Array;
      maxExpAvgSq?: Float32Array;
      pendingGrad?: Float32Array;
    }
  >;
}

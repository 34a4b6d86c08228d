/**
 * MultiModelOptimizer: joint AdamW over several models with gradient sharing, soft parameter
 * synchronisation, convergence-aware learning rates and per-model weights, as a few fused GPU
 * kernels over one arena (in as many buffers as it needs) that holds every model's parameters,
 * gradients and moments.
 *
 * The training loop of the seed works as written, including with gradient accumulation:
 *
 * ```ts
 * import {
 *   initGpu,
 *   modelConfig,
 *   MultiModelOptimizer,
 *   type Tensor,
 *   tensor,
 *   TransformerModel,
 * } from "@multimodel/multimodel";
 * await initGpu();
 * const size = { hiddenSize: 32, numHeads: 2, numLayers: 1, vocabSize: 100 };
 * const models = {
 *   bert: new TransformerModel(modelConfig("bert", size), { task: "sequence-classification" }),
 *   gpt2: new TransformerModel(modelConfig("gpt2", size), { task: "sequence-classification" }),
 * };
 * const optimizer = new MultiModelOptimizer({ models, lr: 1e-3, gradientAccumulationSteps: 2 });
 * const batches = [0, 1, 2, 3].map((i) => ({
 *   inputIds: tensor(Int32Array.of(5 + i, 6, 7, 8), { shape: [1, 4] }),
 *   labels: tensor(Int32Array.of(i % 2)),
 * }));
 * for (const batch of batches) {
 *   optimizer.zeroGrad();             // a no-op once a micro-batch of this update is counted
 *   const losses: Record<string, Tensor> = {};
 *   for (const [name, model] of Object.entries(models)) {
 *     const loss = model.forward(batch).loss!;
 *     loss.backward();                // gradients add up over micro-batches
 *     losses[name] = loss;
 *   }
 *   optimizer.logMetrics(losses);     // GPU scalars, no readback
 *   optimizer.step();                 // updates every N-th call, with the mean gradient
 * }
 * ```
 *
 * @module
 */
import { alignedLength } from "../engine/arena.ts";
import { gpu } from "../engine/device.ts";
import { assertFitsBudget, createBuffer, destroyBuffer, formatBinary, makeRoom } from "../engine/pool.ts";
import { checkOptions } from "../engine/options.ts";
import { shapeSize } from "../engine/shape.ts";
import {
  type BufferRange,
  clearBuffer,
  copyBuffer,
  flush,
  readRanges,
  submitStep,
  upload,
} from "../engine/recorder.ts";
import type { Tensor } from "../engine/tensor.ts";
import type { ParameterSet } from "../models/parameters.ts";
import { buildGroups, type ParameterGroup } from "./groups.ts";
import {
  CONTROL,
  CONTROL_STRIDE,
  recordAdamw,
  recordLosses,
  recordMix,
  recordTileNorms,
  SkipReason,
  TILE,
  TILE_PARTIAL,
} from "./kernels.ts";
import {
  MAX_MODELS,
  modelLrFactors,
  type OptimizerOptions,
  type ResolvedOptions,
  resolveOptions,
  scheduleFactor,
} from "./options.ts";
import { JointArena } from "./placement.ts";
import { PlanPhase, recordPlan } from "./plan.ts";
import {
  checkState,
  type Counters,
  type LoadStateOptions,
  type OptimizerState,
  type SavedOptions,
  savedOptions,
  STATE_FORMAT,
} from "./state.ts";
import {
  type ChunkedBuffer,
  type MixWindow,
  mixWindows,
  recordWindowedMix,
  type TileWindow,
  tileWindows,
} from "./windows.ts";

export { type Counters, type LoadStateOptions, type OptimizerState, type SavedOptions, STATE_FORMAT };

/** What the optimizer needs of a model: its parameters with metadata, in an arena it may move. */
export interface OptimizableModel {
  /** The model's parameters. */
  readonly parameterSet: ParameterSet;
}

/** Constructor options: the models by name, and everything of {@linkcode OptimizerOptions}. */
export interface MultiModelOptimizerOptions extends OptimizerOptions {
  /** The models, by name (the names used by modelWeights, logMetrics and metrics). */
  models: Record<string, OptimizableModel>;
}

/** Why a model sat an update out; see {@linkcode ModelMetrics.lastSkip}. */
export type SkipCause = "loss" | "gradient" | "parameters" | "overflow";

const SKIP_CAUSES: Record<number, SkipCause> = {
  [SkipReason.Loss]: "loss",
  [SkipReason.Gradient]: "gradient",
  [SkipReason.Parameters]: "parameters",
  [SkipReason.Overflow]: "overflow",
};

/** Per-model figures of {@linkcode MultiModelOptimizer.metrics}. */
export interface ModelMetrics {
  /** Updates applied to the model. */
  updates: number;
  /** Updates the model sat out (see {@linkcode ModelMetrics.lastSkip}). */
  skipped: number;
  /**
   * Why the model sat the last update out, or null if it took part: `loss` (a logged loss was NaN
   * or infinite), `gradient` (a gradient element was), `parameters` (a parameter was, found before
   * sharing), `overflow` (finite, but an element above 1e19, whose square float32 moments cannot
   * hold). A skipped model's parameters and moments stay as they were, and it neither contributes
   * to nor receives sharing or sync.
   */
  lastSkip: SkipCause | null;
  /**
   * True when the last update's AdamW produced a non-finite parameter or moment for this model
   * (the model then took no part in that update's sync; its next update will be skipped).
   */
  faulted: boolean;
  /** Adaptive learning-rate multiplier. */
  lrMultiplier: number;
  /** Learning rate of its last update (schedule x weight factor x multiplier). */
  lr: number;
  /**
   * Global norm of its last averaged gradient, before clipping (after sharing when it took part),
   * computed without overflow; NaN when the gradient was not finite.
   */
  gradNorm: number;
  /** Largest |element| of its last averaged gradient, before sharing. */
  gradMax: number;
  /** t-statistic of its loss trend at the last adaptive update. */
  lossTrend: number;
  /** Its logged losses still in the window, oldest first. */
  recentLosses: number[];
}

/** Figures of {@linkcode MultiModelOptimizer.metrics}. */
export interface OptimizerMetrics {
  /** Updates performed (step() calls that completed an accumulation cycle). */
  updates: number;
  /** Micro-batches accumulated towards the next update. */
  pendingMicroBatches: number;
  /** Figures per model. */
  models: Record<string, ModelMetrics>;
}

/** `value` with it and every object inside frozen. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Joint AdamW over several models with sharing, sync, adaptive rates and model weights; see the module docs. */
export class MultiModelOptimizer {
  /** Model names, in order. */
  readonly modelNames: readonly string[];
  /**
   * Resolved options, frozen: the kernels and tables are built from them once (assigning to one throws
   * rather than half-applying; a changing rate is a `schedule`).
   */
  readonly options: Readonly<ResolvedOptions>;
  /** The groups that share and synchronise. */
  readonly groups: readonly ParameterGroup[];
  readonly #joint: JointArena;
  readonly #values: ChunkedBuffer;
  readonly #grads: ChunkedBuffer;
  readonly #expAvg: ChunkedBuffer;
  readonly #expAvgSq: ChunkedBuffer;
  /** AMSGrad's running maximum of exp_avg_sq; null without AMSGrad. */
  readonly #maxExpAvgSq: ChunkedBuffer | null;
  readonly #control: GPUBuffer;
  readonly #partials: GPUBuffer;
  readonly #ring: GPUBuffer;
  readonly #latest: GPUBuffer;
  readonly #groupTable: GPUBuffer | null;
  /** Which arena blocks decay (see `recordAdamw`); null when every parameter does, or none. */
  readonly #decayMask: GPUBuffer | null;
  readonly #groupBlocks: number;
  /** Every group member starts on a vec4 (the vec4 mix may run). */
  readonly #groupsAligned: boolean;
  /** Runs of whole norm tiles of at most one storage binding each (one when the arena fits). */
  readonly #tileWindows: TileWindow[];
  /** Windows of the mix when the arena exceeds one storage binding or one buffer; null when one binding holds it. */
  readonly #mixWindows: MixWindow[] | null;
  readonly #window: number;
  readonly #models: Record<string, OptimizableModel>;
  #counters: Counters;
  #disposed = false;

  /** Moves every model's parameters into one arena and prepares the state; see {@linkcode OptimizerOptions}. */
  constructor(options: MultiModelOptimizerOptions) {
    if (Array.isArray(options.models)) {
      throw new Error(
        "MultiModelOptimizer: models must be an object of models by name, e.g. { bert, gpt2 }, not an array",
      );
    }
    const sets = Object.values(options.models ?? {}).map((m) => m?.parameterSet);
    this.modelNames = Object.keys(options.models ?? {});
    this.#models = { ...options.models };
    this.options = deepFreeze(resolveOptions(this.modelNames, options));
    sets.forEach((set, i) => {
      if (!set) {
        throw new Error(`MultiModelOptimizer: "${this.modelNames[i]}" is not a model (no parameterSet)`);
      }
    });
    if (new Set(sets).size !== sets.length) {
      throw new Error("MultiModelOptimizer: the same model is given twice");
    }
    sets.forEach((set, i) => {
      if (set.owner !== null) {
        throw new Error(
          `MultiModelOptimizer: model "${this.modelNames[i]}" already belongs to ${set.owner}; ` +
            "a model can be trained by one optimizer at a time (dispose() that one first)",
        );
      }
    });
    this.#assertFits(sets);
    this.#joint = new JointArena(
      this.modelNames,
      sets,
      `the MultiModelOptimizer over [${this.modelNames.join(", ")}]`,
    );
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#values = this.#joint.chunked("values");
    this.#grads = this.#joint.chunked("grads");
    const moment = (label: string): ChunkedBuffer =>
      this.#values.map((chunk, k) => {
        const buffer = createBuffer(chunk.length * 4, storage, `optimizer ${label} ${k}`);
        clearBuffer(this.#range(buffer));
        return { ...chunk, buffer };
      });
    this.#expAvg = moment("exp_avg");
    this.#expAvgSq = moment("exp_avg_sq");
    this.#maxExpAvgSq = this.options.amsgrad ? moment("max_exp_avg_sq") : null;
    this.#control = createBuffer(MAX_MODELS * CONTROL_STRIDE * 4, storage, "optimizer control");
    this.#window = this.options.adaptiveLr?.window ?? 3;
    this.#ring = createBuffer(MAX_MODELS * this.#window * 4, storage, "optimizer loss ring");
    this.#latest = createBuffer(MAX_MODELS * 4, storage, "optimizer latest losses");
    this.#partials = createBuffer(
      Math.max(1, this.#joint.layout.tiles[this.#joint.layout.models]) * TILE_PARTIAL * 4,
      storage,
      "optimizer partials",
    );
    upload(this.#range(this.#control), this.#initialControl());
    clearBuffer(this.#range(this.#ring));
    this.groups = buildGroups(
      sets.map((set, m) => set.parameters.map((p) => ({ ...p.info, model: this.modelNames[m] }))),
    );
    const table = this.#joint.groupTable(this.groups);
    this.#groupBlocks = table.blocks;
    this.#groupsAligned = table.aligned;
    const bindingElements = Math.floor(gpu().profile.maxStorageBindingBytes / 4);
    const { chunkStarts } = this.#joint;
    this.#tileWindows = tileWindows(this.#joint.layout, TILE, bindingElements, chunkStarts);
    this.#mixWindows = chunkStarts.length > 1 || this.#joint.arena.length > bindingElements
      ? mixWindows(table.groups, this.modelNames.length, bindingElements, chunkStarts)
      : null;
    this.#groupTable = this.groups.length > 0
      ? createBuffer(Math.max(16, table.words.byteLength), storage, "optimizer groups")
      : null;
    if (this.#groupTable) {
      upload({ buffer: this.#groupTable, offset: 0, size: table.words.byteLength }, table.words);
    }
    this.#decayMask = null;
    if (!this.options.decayBiasesAndNorms && this.options.weightDecay > 0) {
      const mask = this.#joint.decayMask();
      this.#decayMask = createBuffer(mask.byteLength, storage, "optimizer decay mask");
      upload(this.#range(this.#decayMask), mask);
    }
    if (this.options.alignInitialization) this.#joint.alignInitialValues(this.groups);
    this.#counters = {
      updates: 0,
      microBatches: 0,
      gradientsStale: true,
      ringPositions: this.modelNames.map(() => 0),
      ringCounts: this.modelNames.map(() => 0),
    };
  }

  /**
   * Refuses, before allocating anything, models whose joint arena and moments do not fit the memory
   * budget (`setMemoryBudget`). The joint arena of values and gradients replaces the models' own
   * arenas, which are freed as they move in, so the peak adds the larger of it and the moments.
   */
  #assertFits(sets: readonly ParameterSet[]): void {
    const arena = 4 * sets.reduce(
      (sum, set) =>
        sum +
        set.specs.reduce((s, spec) => s + alignedLength(shapeSize(spec.shape)), 0),
      0,
    );
    const moments = (this.options.amsgrad ? 3 : 2) * arena;
    makeRoom(Math.max(2 * arena, moments));
    assertFitsBudget(
      `MultiModelOptimizer over [${this.modelNames.join(", ")}]`,
      Math.max(2 * arena, moments),
      `values and gradients ${
        formatBinary(2 * arena)
      } replacing the models' own arenas, then AdamW moments ` +
        formatBinary(moments),
    );
  }

  /**
   * Bytes of GPU memory the optimizer holds: per model and in total, its parameters and gradients in
   * the joint arena and its AdamW moments; `tables` counts the control table, loss ring, norm partials,
   * group table and decay mask. The totals include the arena's padding between models and chunks
   * (models start on whole norm tiles of 4 KiB), which the per-model figures leave out.
   */
  memory(): {
    models: Record<string, { parameters: number; gradients: number; optimizerState: number }>;
    parameters: number;
    gradients: number;
    optimizerState: number;
    tables: number;
    total: number;
  } {
    this.#assertAlive("memory");
    const moments = this.#maxExpAvgSq ? 3 : 2;
    const models: Record<string, { parameters: number; gradients: number; optimizerState: number }> = {};
    this.modelNames.forEach((name, m) => {
      const bytes = this.#joint.modelElements[m] * 4;
      models[name] = { parameters: bytes, gradients: bytes, optimizerState: moments * bytes };
    });
    const arena = this.#joint.arena.length * 4;
    const tables = [
      this.#control,
      this.#ring,
      this.#latest,
      this.#partials,
      this.#groupTable,
      this.#decayMask,
    ]
      .reduce((sum, buffer) => sum + (buffer?.size ?? 0), 0);
    const total = 2 * arena + moments * arena + tables;
    return { models, parameters: arena, gradients: arena, optimizerState: moments * arena, tables, total };
  }

  #range(buffer: GPUBuffer): BufferRange {
    return { buffer, offset: 0, size: buffer.size };
  }

  #initialControl(): Float32Array {
    const control = new Float32Array(MAX_MODELS * CONTROL_STRIDE);
    for (let m = 0; m < MAX_MODELS; m++) {
      control[m * CONTROL_STRIDE + CONTROL.multiplier] = 1;
      control[m * CONTROL_STRIDE + CONTROL.lossFinite] = 1;
    }
    return control;
  }

  /**
   * Zeroes the gradients of every model (one command) when no micro-batch of an accumulation cycle
   * has been counted yet, as PyTorch's `zero_grad()` (so a cycle's first micro-batch abandoned before
   * its `step()` leaves nothing in the next update); between the counted micro-batches of one update
   * it does nothing, so no gradient is discarded (a micro-batch abandoned there stays in its cycle).
   */
  zeroGrad(): void {
    this.#assertAlive("zeroGrad");
    if (this.#counters.microBatches > 0) return;
    this.#joint.arena.zeroGrads();
    this.#counters.gradientsStale = false;
  }

  /**
   * Records each model's loss (a number, or a one-element GPU tensor: no readback) for the adaptive
   * learning rate and the non-finite check. Names must be models; models may be left out.
   */
  logMetrics(losses: Record<string, number | Tensor>): void {
    this.#assertAlive("logMetrics");
    // Every entry is checked before anything is recorded: a refused call leaves the loss window as it was.
    for (const [name, loss] of Object.entries(losses)) {
      if (!this.modelNames.includes(name)) {
        throw new Error(`logMetrics: "${name}" is not a model (${this.modelNames.join(", ")})`);
      }
      if (typeof loss === "number") continue;
      loss.range(); // a disposed loss throws here, naming itself
      if (loss.size !== 1 || loss.dtype !== "float32") {
        throw new Error(
          `logMetrics: the loss of "${name}" must be one float32 value, got ${loss.describe()}`,
        );
      }
    }
    let present = 0;
    const slots = this.modelNames.map(() => 0);
    for (const [name, loss] of Object.entries(losses)) {
      const m = this.modelNames.indexOf(name);
      const target = { buffer: this.#latest, offset: m * 4, size: 4 };
      if (typeof loss === "number") upload(target, Float32Array.of(loss));
      else copyBuffer(loss.range(), target);
      present |= 1 << m;
      slots[m] = this.#counters.ringPositions[m];
      this.#counters.ringPositions[m] = (this.#counters.ringPositions[m] + 1) % this.#window;
      this.#counters.ringCounts[m]++;
    }
    if (present === 0) return;
    recordLosses(present, slots, this.#window, {
      latest: this.#range(this.#latest),
      ring: this.#range(this.#ring),
      control: this.#range(this.#control),
    });
  }

  /**
   * Counts a micro-batch; on the last one of an accumulation cycle, records the update of every
   * model (sharing, clipping, adaptive rates, AdamW, sync) and returns true. `closeCycle` makes this
   * micro-batch the cycle's last even when the cycle holds fewer than `gradientAccumulationSteps`
   * (at an epoch's end or a run's last batch, as Hugging Face's Trainer does): the update then uses
   * the mean of the micro-batches it holds. A model whose loss or gradients are not finite keeps its
   * parameters and moments; `metrics()` counts it as skipped. Either way it then submits everything
   * recorded (the step's forwards, backwards and update) as one command buffer, without a readback,
   * so the device runs it while the caller records the next.
   */
  step(options: { closeCycle?: boolean } = {}): boolean {
    this.#assertAlive("step");
    if (typeof options === "function") {
      throw new TypeError(
        "MultiModelOptimizer.step: takes no closure (PyTorch's step(closure)): compute the loss first",
      );
    }
    checkOptions("MultiModelOptimizer.step", options, ["closeCycle"]);
    this.#refuseFrozen();
    const updated = this.#recordStep(options.closeCycle === true);
    submitStep();
    return updated;
  }

  /**
   * Refuses a parameter set `requiresGrad = false` (PyTorch's way to freeze it): AdamW runs over
   * every element of the arena, so the parameter would still move by its moments and weight decay.
   */
  #refuseFrozen(): void {
    for (const [name, model] of Object.entries(this.#models)) {
      const frozen = model.parameterSet.parameters.find((p) => !p.value.requiresGrad);
      if (frozen) {
        throw new Error(
          `MultiModelOptimizer.step: parameter "${frozen.info.name}" of "${name}" has requiresGrad false, but ` +
            "freezing parameters is not supported: AdamW would still move it (its moments and weight decay)",
        );
      }
    }
  }

  #recordStep(closeCycle: boolean): boolean {
    const o = this.options;
    const c = this.#counters;
    // 1. Accumulate: only the last micro-batch of a cycle updates.
    c.microBatches++;
    if (c.microBatches < o.gradientAccumulationSteps && !closeCycle) return false;
    const microBatches = c.microBatches;
    c.microBatches = 0;
    const update = c.updates++;
    const sharing = o.gradientSharing !== null && this.#groupTable !== null &&
      (update + 1) % o.gradientSharing.every === 0;
    const syncing = o.parameterSync !== null && this.#groupTable !== null &&
      (update + 1) % o.parameterSync.every === 0;
    // 2. Guard: each model's gradient norm and whether it sits the update out. Parameters are checked
    // only before sharing, the one place they could spread from before AdamW, which checks what it writes.
    this.#recordNorms(sharing);
    if (sharing) {
      this.#recordPlan(PlanPhase.Flag, update, microBatches);
      // 3. Share: mix each group's gradients, then measure the norms again.
      this.#recordMix(this.#grads, o.gradientSharing!.ratio);
      this.#recordNorms(false);
    }
    // 4-5. Clip and rate: clip factors, adaptive multipliers, learning rates and bias corrections.
    this.#recordPlan(sharing ? PlanPhase.Finish : PlanPhase.FlagAndFinish, update, microBatches);
    // 6. AdamW over every element of every model that takes part.
    recordAdamw(this.#joint.layout, this.#tileWindows, {
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      weightDecay: o.weightDecay,
    }, {
      values: this.#values,
      grads: this.#grads,
      expAvg: this.#expAvg,
      expAvgSq: this.#expAvgSq,
      control: this.#range(this.#control),
      ...(this.#maxExpAvgSq ? { maxExpAvgSq: this.#maxExpAvgSq } : {}),
      ...(this.#decayMask ? { decayMask: this.#range(this.#decayMask) } : {}),
    });
    // 7. Sync: mix each group's parameters.
    if (syncing) this.#recordMix(this.#values, o.parameterSync!.ratio);
    c.gradientsStale = true;
    return true;
  }

  #recordNorms(checkValues: boolean): void {
    recordTileNorms(
      this.#joint.layout,
      this.#tileWindows,
      {
        grads: this.#grads,
        values: this.#values,
        partials: this.#range(this.#partials),
      },
      checkValues,
    );
  }

  #recordMix(target: ChunkedBuffer, ratio: number): void {
    if (this.#mixWindows) {
      recordWindowedMix(
        target,
        this.#range(this.#groupTable!),
        this.#range(this.#control),
        this.#joint.layout,
        this.#mixWindows,
        { count: this.groups.length, aligned: this.#groupsAligned },
        ratio,
        this.options.modelWeights,
      );
      return;
    }
    recordMix(
      this.#range(target[0].buffer),
      this.#range(this.#groupTable!),
      this.#range(this.#control),
      {
        models: this.modelNames.length,
        count: this.groups.length,
        blocks: this.#groupBlocks,
        aligned: this.#groupsAligned,
      },
      ratio,
      this.options.modelWeights,
    );
  }

  #recordPlan(phase: PlanPhase, update: number, microBatches: number): void {
    const o = this.options;
    const c = this.#counters;
    const adaptive = o.adaptiveLr;
    recordPlan(
      this.#joint.layout,
      {
        phase,
        lr: o.lr * scheduleFactor(o.schedule, update),
        inverseAccumulation: 1 / microBatches,
        clip: o.clipGradNorm ?? 0,
        oneMinusBeta1: 1 - o.betas[0],
        oneMinusBeta2: 1 - o.betas[1],
        adaptive: adaptive ? 1 : 0,
        window: this.#window,
        min: adaptive?.min ?? 1,
        max: adaptive?.max ?? 1,
        smoothing: adaptive?.smoothing ?? 0,
        validMask: c.ringCounts.reduce((mask, n, m) => (n >= this.#window ? mask | (1 << m) : mask), 0),
        ringHeads: c.ringPositions,
        lrFactors: modelLrFactors(o.modelWeights),
      },
      this.#range(this.#partials),
      this.#range(this.#ring),
      this.#range(this.#control),
    );
  }

  /** Reads the optimizer's figures back from the GPU (one round trip; call it between steps, not inside one). */
  async metrics(): Promise<OptimizerMetrics> {
    this.#assertAlive("metrics");
    // The counters of the call, as the values read: a step recorded while the read waits is not in either.
    const counters = structuredClone(this.#counters);
    const [controlBytes, ringBytes] = await readRanges([this.#range(this.#control), this.#range(this.#ring)]);
    const control = new Float32Array(controlBytes);
    const ring = new Float32Array(ringBytes);
    const models: Record<string, ModelMetrics> = {};
    this.modelNames.forEach((name, m) => {
      const row = m * CONTROL_STRIDE;
      const count = Math.min(counters.ringCounts[m], this.#window);
      const head = (counters.ringPositions[m] - count + this.#window) % this.#window;
      models[name] = {
        updates: control[row + CONTROL.steps],
        skipped: control[row + CONTROL.skipped],
        lastSkip: SKIP_CAUSES[control[row + CONTROL.skip]] ?? null,
        faulted: control[row + CONTROL.fault] > 0.5,
        lrMultiplier: control[row + CONTROL.multiplier],
        lr: control[row + CONTROL.lr],
        gradNorm: control[row + CONTROL.gradNorm],
        gradMax: control[row + CONTROL.gradMax],
        lossTrend: control[row + CONTROL.trend],
        recentLosses: Array.from(
          { length: count },
          (_, t) => ring[m * this.#window + (head + t) % this.#window],
        ),
      };
    });
    return { updates: counters.updates, pendingMicroBatches: counters.microBatches, models };
  }

  /** The groups as a table: role, shape and members (model and Hugging Face parameter name). */
  describeGroups(): ParameterGroup[] {
    return this.groups.map((g) => ({
      role: g.role,
      shape: [...g.shape],
      members: g.members.map((m) => ({ ...m })),
    }));
  }

  /**
   * Frees the optimizer's GPU memory (moments, tables, the joint arena) after handing every model
   * its parameters back in an arena of its own, with their current values: the models stay usable
   * (and can be given to another optimizer); this optimizer cannot be used again.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    // Moments and tables go first (after the work that uses them is submitted), so that the models'
    // own arenas, allocated as they are handed back, take their place rather than add to the peak.
    flush();
    const moments = [this.#expAvg, this.#expAvgSq, this.#maxExpAvgSq ?? []].flat();
    const tables = [this.#control, this.#ring, this.#latest, this.#partials];
    for (const buffer of [...moments.map((chunk) => chunk.buffer), ...tables]) destroyBuffer(buffer);
    for (const table of [this.#groupTable, this.#decayMask]) if (table) destroyBuffer(table);
    for (const model of Object.values(this.#models)) model.parameterSet.release();
    this.#joint.arena.destroy({
      what: "the optimizer holding its model's parameters was disposed and handed them back to the model",
      remedy: "read model.parameters[i].value again",
      afterForward: "run the forward after the optimizer's dispose()",
    });
  }

  /**
   * Throws, naming `caller`, unless `models` are this optimizer's own models under the same names, in
   * the same order: another model's weights saved or restored beside these moments would resume silently
   * wrong.
   */
  assertOwnModels(models: Record<string, OptimizableModel>, caller: string): void {
    const names = Object.keys(models);
    if (names.join() !== this.modelNames.join()) {
      throw new Error(`${caller}: models [${names}] differ from the optimizer's [${this.modelNames}]`);
    }
    const stranger = names.find((name) => models[name]?.parameterSet !== this.#models[name].parameterSet);
    if (stranger !== undefined) {
      throw new Error(
        `${caller}: model "${stranger}" is not the one this optimizer trains (another model of that name)`,
      );
    }
  }

  #assertAlive(method: string): void {
    if (this.#disposed) {
      throw new Error(
        `MultiModelOptimizer over [${this.modelNames.join(", ")}]: ${method}() called after dispose()`,
      );
    }
  }

  /**
   * The optimizer's state: counters, per-model control rows (steps, skips, multipliers), the loss
   * window and both moments of every parameter (keyed "model/parameter"), with AMSGrad's maximum
   * of the second. A fresh copy: changing it changes nothing here. It holds the state of the call, read
   * through readback buffers as large as the state (see `readAll`).
   */
  async stateDict(): Promise<OptimizerState> {
    this.#assertAlive("stateDict");
    // The counters of the call, as the values read: a step recorded while the read waits is not in either.
    const counters = structuredClone(this.#counters);
    // Gradients belong to the state while a cycle is open (micro-batches accumulated, no update yet).
    const withGradients = !counters.gradientsStale;
    const arenaBuffers = [this.#expAvg, this.#expAvgSq];
    if (this.#maxExpAvgSq) arenaBuffers.push(this.#maxExpAvgSq);
    if (withGradients) arenaBuffers.push(this.#grads);
    const placed = this.#joint.placed;
    const [controlBytes, ringBytes, ...parameterBytes] = await readRanges([
      this.#range(this.#control),
      this.#range(this.#ring),
      ...placed.flatMap((p) => arenaBuffers.map((buffer) => this.#joint.rangeOf(buffer, p))),
    ]);
    const moments: OptimizerState["moments"] = {};
    placed.forEach((p, i) => {
      const [expAvg, expAvgSq, ...rest] = arenaBuffers.map((_, j) =>
        new Float32Array(parameterBytes[i * arenaBuffers.length + j])
      );
      moments[this.#joint.key(p)] = {
        shape: [...p.parameter.info.shape],
        expAvg,
        expAvgSq,
        ...(this.#maxExpAvgSq ? { maxExpAvgSq: rest.shift()! } : {}),
        ...(withGradients ? { pendingGrad: rest.shift()! } : {}),
      };
    });
    return {
      format: STATE_FORMAT,
      models: [...this.modelNames],
      options: savedOptions(this.options),
      counters,
      control: new Float32Array(controlBytes).slice(0, this.modelNames.length * CONTROL_STRIDE),
      lossRing: new Float32Array(ringBytes).slice(0, this.modelNames.length * this.#window),
      moments,
    };
  }

  /**
   * Restores a state from {@linkcode stateDict} (of an optimizer over models with the same names and
   * parameters, built with the same options: a state saved with other options is refused, naming
   * them, unless `keepCurrentOptions` continues with this optimizer's). Every entry is checked before
   * anything is written; the argument is not modified and can be loaded again.
   */
  loadStateDict(state: OptimizerState, loading: LoadStateOptions = {}): void {
    this.#assertAlive("loadStateDict");
    checkState(state, {
      modelNames: this.modelNames,
      options: loading.keepCurrentOptions ? null : this.options,
      window: this.#window,
      accumulation: this.options.gradientAccumulationSteps,
      amsgrad: this.options.amsgrad,
      parameters: this.#joint.placed.map((p) => ({
        key: this.#joint.key(p),
        shape: p.parameter.info.shape,
        size: p.size,
      })),
    });
    const control = this.#initialControl();
    control.set(state.control);
    upload(this.#range(this.#control), control);
    const ring = new Float32Array(this.#ring.size / 4);
    ring.set(state.lossRing);
    upload(this.#range(this.#ring), ring);
    this.#joint.arena.zeroGrads();
    for (const p of this.#joint.placed) {
      const entry = state.moments[this.#joint.key(p)];
      const at = (buffer: ChunkedBuffer) => this.#joint.rangeOf(buffer, p);
      upload(at(this.#expAvg), Float32Array.from(entry.expAvg));
      upload(at(this.#expAvgSq), Float32Array.from(entry.expAvgSq));
      if (this.#maxExpAvgSq) upload(at(this.#maxExpAvgSq), Float32Array.from(entry.maxExpAvgSq!));
      if (entry.pendingGrad) upload(at(this.#grads), Float32Array.from(entry.pendingGrad));
    }
    this.#counters = structuredClone(state.counters);
  }
}

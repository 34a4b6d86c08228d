/**
 * Float64 reference of the multi-model optimizer's whole step, written plainly over host arrays
 * per parameter: the trusted version the fused WGSL step is tested against.
 *
 * @module
 */
import { updateMultipliers } from "./plan.ts";
import type { ParameterGroup } from "./groups.ts";
import type { ResolvedOptions } from "./options.ts";

/**
 * The schedule's factor at update u, written here from the README's words (linear warmup, then cosine to
 * minRatio, held after totalSteps) rather than taken from optim/options.ts, which the GPU path uses: a
 * reference shares no code with what it checks.
 */
function schedule(s: ResolvedOptions["schedule"], u: number): number {
  if (!s) return 1;
  if (u < s.warmupSteps) return (u + 1) / s.warmupSteps;
  const progress = Math.min(1, (u - s.warmupSteps) / (s.totalSteps - s.warmupSteps));
  return s.minRatio + (1 - s.minRatio) * (1 + Math.cos(Math.PI * progress)) / 2;
}

/** A parameter of the reference: its model, name and float64 values. */
export interface ReferenceParameter {
  /** Model name. */
  model: string;
  /** Parameter name. */
  name: string;
  /** Values (updated in place). */
  values: Float64Array;
  /** A bias or a norm's weight, which `decayBiasesAndNorms: false` exempts from weight decay; default false. */
  biasOrNorm?: boolean;
}

/** Why a model sat an update out in the reference (the GPU's SkipCause, written independently). */
export type ReferenceSkip = "loss" | "gradient" | "parameters" | "overflow";

/** Largest |averaged gradient element| an update accepts: its square must fit float32 (3.4e38). */
const GRADIENT_LIMIT = 1e19;

interface ModelState {
  steps: number;
  skipped: number;
  multiplier: number;
  lossFinite: boolean;
  losses: number[];
  /** Why it sat the last update out, or null. */
  lastSkip: ReferenceSkip | null;
  /** Whether the last update's AdamW produced a value float32 cannot hold. */
  faulted: boolean;
  /** Global norm of the last averaged gradient before clipping (after sharing when it took part). */
  gradNorm: number;
}

/** The reference optimizer: same options, groups and semantics as MultiModelOptimizer. */
export class ReferenceOptimizer {
  /** Gradients accumulated since the last clear, per "model/name". */
  readonly grads = new Map<string, Float64Array>();
  /** First moments per "model/name". */
  readonly expAvg = new Map<string, Float64Array>();
  /** Second moments per "model/name". */
  readonly expAvgSq = new Map<string, Float64Array>();
  /** AMSGrad's running maximum of the second moment per "model/name" (kept, unused, without AMSGrad). */
  readonly maxExpAvgSq = new Map<string, Float64Array>();
  /** Per-model counters, in model order. */
  readonly state: ModelState[];
  readonly #byKey = new Map<string, ReferenceParameter>();
  #updates = 0;
  #microBatches = 0;

  /**
   * @param modelNames models in order
   * @param parameters every parameter (values are updated in place)
   * @param groups sharing groups
   * @param options resolved options
   */
  constructor(
    readonly modelNames: readonly string[],
    readonly parameters: readonly ReferenceParameter[],
    readonly groups: readonly ParameterGroup[],
    readonly options: ResolvedOptions,
  ) {
    for (const p of parameters) {
      const key = `${p.model}/${p.name}`;
      this.#byKey.set(key, p);
      this.grads.set(key, new Float64Array(p.values.length));
      this.expAvg.set(key, new Float64Array(p.values.length));
      this.expAvgSq.set(key, new Float64Array(p.values.length));
      this.maxExpAvgSq.set(key, new Float64Array(p.values.length));
    }
    this.state = modelNames.map(() => ({
      steps: 0,
      skipped: 0,
      multiplier: 1,
      lossFinite: true,
      losses: [],
      lastSkip: null,
      faulted: false,
      gradNorm: 0,
    }));
    if (options.alignInitialization) {
      for (const g of groups) {
        const [first, ...rest] = g.members.map((m) => this.#values(m.model, m.parameter));
        for (const values of rest) values.set(first);
      }
    }
  }

  #values(model: string, name: string): Float64Array {
    return this.#byKey.get(`${model}/${name}`)!.values;
  }

  /** Clears the gradients while no micro-batch of a cycle is counted (a no-op mid-cycle). */
  zeroGrad(): void {
    if (this.#microBatches > 0) return;
    for (const g of this.grads.values()) g.fill(0);
  }

  /** Adds one micro-batch's gradient of a parameter. */
  addGradient(model: string, name: string, grad: ArrayLike<number>): void {
    const g = this.grads.get(`${model}/${name}`)!;
    for (let i = 0; i < g.length; i++) g[i] += grad[i];
  }

  /** Logs losses, like MultiModelOptimizer.logMetrics. */
  logMetrics(losses: Record<string, number>): void {
    for (const [name, loss] of Object.entries(losses)) {
      const s = this.state[this.modelNames.indexOf(name)];
      s.losses.push(Math.fround(loss));
      if (!Number.isFinite(loss)) s.lossFinite = false;
    }
  }

  #parametersOf(m: number): ReferenceParameter[] {
    return this.parameters.filter((p) => p.model === this.modelNames[m]);
  }

  /** Norm of model m's averaged gradient (float64 holds squares up to 1e308: no scaling needed). */
  #gradNorm(m: number): number {
    let sum = 0;
    for (const p of this.#parametersOf(m)) {
      for (const v of this.grads.get(`${p.model}/${p.name}`)!) sum += v * v;
    }
    return Math.sqrt(sum) / this.options.gradientAccumulationSteps;
  }

  #skipCause(m: number, checkParameters: boolean): ReferenceSkip | null {
    if (!this.state[m].lossFinite) return "loss";
    const grads = this.#parametersOf(m).map((p) => this.grads.get(`${p.model}/${p.name}`)!);
    if (grads.some((g) => g.some((v) => !Number.isFinite(v)))) return "gradient";
    if (checkParameters && this.#parametersOf(m).some((p) => p.values.some((v) => !Number.isFinite(v)))) {
      return "parameters";
    }
    const largest = Math.max(0, ...grads.map((g) => g.reduce((s, v) => Math.max(s, Math.abs(v)), 0)));
    if (largest / this.options.gradientAccumulationSteps > GRADIENT_LIMIT) return "overflow";
    return null;
  }

  #mix(target: Map<string, Float64Array> | "values", ratio: number, skip: readonly boolean[]): void {
    const weights = this.options.modelWeights;
    for (const g of this.groups) {
      const members = g.members
        .map((m) => ({ m: this.modelNames.indexOf(m.model), key: `${m.model}/${m.parameter}` }))
        .filter(({ m }) => !skip[m]);
      if (members.length === 0) continue;
      const arrays = members.map((
        { key },
      ) => (target === "values" ? this.#byKey.get(key)!.values : target.get(key)!));
      const weightSum = members.reduce((s, { m }) => s + weights[m], 0);
      for (let e = 0; e < arrays[0].length; e++) {
        let total = 0;
        members.forEach(({ m }, k) => (total += weights[m] * arrays[k][e]));
        const mean = total / weightSum;
        for (const a of arrays) a[e] = (1 - ratio) * a[e] + ratio * mean;
      }
    }
  }

  /** One step, like MultiModelOptimizer.step; returns whether an update happened. */
  step(): boolean {
    const o = this.options;
    if (++this.#microBatches < o.gradientAccumulationSteps) return false;
    this.#microBatches = 0;
    const update = this.#updates++;
    const models = this.modelNames.map((_, m) => m);
    const sharing = o.gradientSharing !== null && (update + 1) % o.gradientSharing.every === 0;
    const causes = models.map((m) => this.#skipCause(m, sharing));
    const skip = causes.map((c) => c !== null);
    models.forEach((m) => {
      this.state[m].lastSkip = causes[m];
      this.state[m].faulted = false;
      if (skip[m]) this.state[m].gradNorm = causes[m] === "gradient" ? NaN : this.#gradNorm(m);
    });
    if (sharing) this.#mix(this.grads, o.gradientSharing!.ratio, skip);
    if (o.adaptiveLr) {
      const W = o.adaptiveLr.window;
      const windows = this.state.map((s) => (s.losses.length >= W ? s.losses.slice(-W) : null));
      const next = updateMultipliers(this.state.map((s) => s.multiplier), windows, o.adaptiveLr, skip);
      this.state.forEach((s, m) => (s.multiplier = next[m]));
    }
    const meanWeight = o.modelWeights.reduce((sum, w) => sum + w, 0) / o.modelWeights.length;
    const [beta1, beta2] = o.betas;
    for (const m of models) {
      const s = this.state[m];
      s.lossFinite = true;
      if (skip[m]) {
        s.skipped++;
        continue;
      }
      const norm = this.#gradNorm(m);
      s.gradNorm = norm;
      const clip = o.clipGradNorm === null ? 1 : Math.min(1, o.clipGradNorm / (norm + 1e-6));
      const scale = clip / o.gradientAccumulationSteps;
      const lr = o.lr * schedule(o.schedule, update) * (o.modelWeights[m] / meanWeight) * s.multiplier;
      s.steps++;
      const bc1 = 1 - beta1 ** s.steps;
      const bc2Sqrt = Math.sqrt(1 - beta2 ** s.steps);
      for (const p of this.parameters) {
        if (p.model !== this.modelNames[m]) continue;
        const key = `${p.model}/${p.name}`;
        const [g, mom, vel] = [this.grads.get(key)!, this.expAvg.get(key)!, this.expAvgSq.get(key)!];
        const top = this.maxExpAvgSq.get(key)!;
        const decay = p.biasOrNorm && !o.decayBiasesAndNorms ? 0 : o.weightDecay;
        for (let i = 0; i < g.length; i++) {
          const grad = g[i] * scale;
          p.values[i] *= 1 - lr * decay;
          mom[i] += (grad - mom[i]) * (1 - beta1);
          vel[i] = vel[i] * beta2 + grad * grad * (1 - beta2);
          // AMSGrad (PyTorch's order): the maximum is updated, then divided by in place of vel.
          top[i] = Math.max(top[i], vel[i]);
          const second = o.amsgrad ? top[i] : vel[i];
          p.values[i] -= (lr / bc1) * mom[i] / (Math.sqrt(second) / bc2Sqrt + o.eps);
          const float32 = [p.values[i], mom[i], vel[i]].map(Math.fround);
          if (!float32.every(Number.isFinite)) s.faulted = true;
        }
      }
    }
    if (o.parameterSync && (update + 1) % o.parameterSync.every === 0) {
      this.#mix("values", o.parameterSync.ratio, models.map((m) => skip[m] || this.state[m].faulted));
    }
    return true;
  }
}

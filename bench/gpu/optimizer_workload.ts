/**
 * The fused optimizer step over about 100 M parameters in three models, against
 * `torch.optim.AdamW(fused=True)` over three parameter groups holding the same tensors.
 *
 * Each model has `layers` layers of two [width, width] weights and two [width] biases, declared in
 * that order; element i of the concatenation of every parameter (models in order) starts at the
 * hash value i of stream `optimizer.p`, and its gradients of the check's two steps are elements i of
 * `optimizer.g1` and `optimizer.g2`. The check compares every `sampleEvery`-th element (and the last)
 * after the two steps, and the norm of all parameters, with PyTorch's (file `optimizer`: `index`,
 * `p`, `norm`); the dry run computes them with AdamW in float64. Timing then repeats the step over the
 * last gradients: with every mechanism off, and with sharing, sync and adaptive rates every step.
 *
 * @module
 */
import { readAll, writeTensor } from "../../engine/tensor.ts";
import { ParameterSet } from "../../models/parameters.ts";
import { MultiModelOptimizer } from "../../optim/multimodel.ts";
import {
  compare,
  compareScalar,
  type Comparison,
  type Expected,
  need,
  type Source,
  TOLERANCE,
} from "./check.ts";
import { type OptimizerSpec, streamValues } from "./inputs.ts";
import { measure, type Measurement, type TimingOptions } from "./timing.ts";
import type { Workload } from "./workload.ts";

/** Adam's defaults, as in PyTorch and in the optimizer. */
const BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8;

type Models = Record<string, { parameterSet: ParameterSet }>;

/** The three models of the workload, allocated (zero values). */
function buildModels(s: OptimizerSpec): Models {
  const models: Models = {};
  for (let m = 0; m < s.models; m++) {
    const set = new ParameterSet(`model${m}`);
    for (let layer = 0; layer < s.layers; layer++) {
      const at = { site: "ffn", layer, layerCount: s.layers };
      for (const [role, part] of [["ffn_in", "in"], ["ffn_out", "out"]] as const) {
        set.declare(
          {
            ...at,
            role,
            kind: "weight",
            name: `${layer}.${part}.weight`,
            shape: [s.width, s.width],
            layout: "out_in",
          },
          { kind: "zeros" },
        );
      }
      for (const [role, part] of [["ffn_in", "in"], ["ffn_out", "out"]] as const) {
        set.declare(
          { ...at, role, kind: "bias", name: `${layer}.${part}.bias`, shape: [s.width], layout: "vector" },
          { kind: "zeros" },
        );
      }
    }
    set.allocate(0);
    models[`model${m}`] = { parameterSet: set };
  }
  return models;
}

function parametersOf(models: Models) {
  return Object.values(models).flatMap((m) => m.parameterSet.parameters);
}

/** Writes stream `name` over the concatenation of every parameter's values (or gradients). */
function writeStream(models: Models, name: string, target: "value" | "grad"): void {
  let start = 0;
  for (const p of parametersOf(models)) {
    const t = target === "value" ? p.value : p.value.grad!;
    writeTensor(t, streamValues(name, t.size, start));
    start += t.size;
  }
}

/** PyTorch's AdamW (decoupled weight decay, bias-corrected moments) for two steps, in float64. */
function adamwTwoSteps(s: OptimizerSpec, count: number): Float64Array {
  const p = Float64Array.from(streamValues("optimizer.p", count));
  const m = new Float64Array(count), v = new Float64Array(count);
  ["optimizer.g1", "optimizer.g2"].forEach((stream, step) => {
    const g = streamValues(stream, count);
    const c1 = 1 - BETA1 ** (step + 1), c2 = 1 - BETA2 ** (step + 1);
    for (let i = 0; i < count; i++) {
      p[i] *= 1 - s.lr * s.weightDecay;
      m[i] = BETA1 * m[i] + (1 - BETA1) * g[i];
      v[i] = BETA2 * v[i] + (1 - BETA2) * g[i] * g[i];
      p[i] -= (s.lr / c1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(c2) + EPS);
    }
  });
  return p;
}

/** Indices compared by the check: every `sampleEvery`-th element and the last. */
function sampleIndices(count: number, every: number): number[] {
  const indices: number[] = [];
  for (let i = 0; i < count; i += every) indices.push(i);
  if (indices.at(-1) !== count - 1) indices.push(count - 1);
  return indices;
}

/** The optimizer workload; rows `optimizer/off` and `optimizer/on`. */
export function optimizerWorkload(s: OptimizerSpec, source: Source): Workload {
  const id = "optimizer", file = "optimizer";
  const models = buildModels(s);
  const count = parametersOf(models).reduce((sum, p) => sum + p.value.size, 0);
  const common = { models, lr: s.lr, weightDecay: s.weightDecay, betas: [BETA1, BETA2] as const, eps: EPS };
  let optimizer: MultiModelOptimizer | null = new MultiModelOptimizer({
    ...common,
    gradientSharing: false,
    parameterSync: false,
    adaptiveLr: false,
  });
  return {
    id,
    async check(): Promise<Comparison[]> {
      writeStream(models, "optimizer.p", "value");
      for (const stream of ["optimizer.g1", "optimizer.g2"]) {
        writeStream(models, stream, "grad");
        optimizer!.step();
      }
      const values = await readAll(parametersOf(models).map((p) => p.value));
      const all = new Float32Array(count);
      let at = 0;
      for (const v of values) {
        all.set(v, at);
        at += v.length;
      }
      const expected: Expected = await source.expected(file, () => {
        const p = adamwTwoSteps(s, count);
        const index = sampleIndices(count, s.sampleEvery);
        return new Map<string, ArrayLike<number>>([
          ["index", index],
          ["p", index.map((i) => p[i])],
          ["norm", [Math.hypot(...norms(p))]],
        ]);
      });
      const index = need(expected, file, "index");
      const sampled = Array.from(index, (i) => all[i]);
      // The scale is max(|p|, 1) = 1 (parameters stay below 1): the error is absolute.
      const p = compare(id, "p (sampled)", sampled, need(expected, file, "p"), TOLERANCE.optimizerValue, 1);
      const norm = compareScalar(
        id,
        "norm",
        Math.hypot(...norms(all)),
        need(expected, file, "norm")[0],
        TOLERANCE.optimizerNorm,
      );
      return [p, norm];
    },
    async time(timing: TimingOptions): Promise<Measurement[]> {
      const off = await measure("optimizer/off", () => optimizer!.step(), timing);
      optimizer!.dispose();
      optimizer = new MultiModelOptimizer({
        ...common,
        gradientSharing: { every: 1 },
        parameterSync: { every: 1 },
        adaptiveLr: { window: 3 },
      });
      const losses = Object.fromEntries(Object.keys(models).map((name) => [name, 1]));
      const on = await measure("optimizer/on", () => {
        optimizer!.logMetrics(losses);
        optimizer!.step();
      }, timing);
      return [off, on];
    },
    dispose() {
      optimizer?.dispose();
      optimizer = null;
      for (const m of Object.values(models)) m.parameterSet.dispose();
    },
  };
}

/** Partial sums of squares in blocks (Math.hypot over 100 M arguments would overflow the stack). */
function norms(values: ArrayLike<number>): number[] {
  const block = 1 << 16;
  const out: number[] = [];
  for (let start = 0; start < values.length; start += block) {
    let sum = 0;
    for (let i = start; i < Math.min(values.length, start + block); i++) sum += values[i] * values[i];
    out.push(Math.sqrt(sum));
  }
  return out;
}

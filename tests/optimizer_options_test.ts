/**
 * Every MultiModelOptimizer option at its boundaries and at values the other optimizer tests do not
 * use, against the float64 reference (optim/reference.ts) and, where one exists, a closed form: lr 0,
 * betas 0, a large eps, strong weight decay, clipping that always, never or sometimes bites,
 * accumulation 1 and 3 where Adam's scale invariance cannot hide the average, sharing and sync ratios
 * 0 and 1, sync at its default period, adaptive rates pinned to 1 and at their smallest window, one
 * model, extreme weights, schedules without warmup or decay, and every default pinned to its documented
 * value (the reference reads resolved options too). docs/reliability.md lists which test
 * covers each option at its default, a non-default value and its boundaries.
 */
import { Random } from "../engine/random.ts";
import { readAll, tensor, tidy, writeTensor } from "../engine/tensor.ts";
import { mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { ParameterSet } from "../models/parameters.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { type OptimizerOptions, resolveOptions } from "../optim/options.ts";
import { ReferenceOptimizer, type ReferenceParameter } from "../optim/reference.ts";
import { assertBitwiseEqual, assertClose, maxAbs, setup } from "./helpers.ts";

await setup();

type Models = Record<string, { parameterSet: ParameterSet }>;

/**
 * A model of three vectors: 37 elements shared with every other model, 700 (three norm tiles) shared
 * too, and one of its own length `5 + index`, which no group takes.
 */
function smallModel(name: string, index: number): { parameterSet: ParameterSet } {
  const set = new ParameterSet(name);
  const vector = (name: string, role: "ffn_out" | "norm_gamma", site: string, length: number) =>
    set.declare({
      role,
      kind: role === "ffn_out" ? "bias" : "weight",
      site,
      layer: null,
      layerCount: 1,
      name,
      shape: [length],
      layout: "vector",
    }, { kind: "zeros" });
  vector("shared", "ffn_out", "ffn", 37);
  vector("wide", "norm_gamma", "final", 700);
  vector("own", "ffn_out", "head.output", 5 + index);
  set.allocate(0);
  const random = new Random(100 + index);
  for (const p of set.parameters) writeTensor(p.value, random.normals(p.value.size));
  return { parameterSet: set };
}

function smallModels(count = 3): Models {
  const names = ["a", "b", "c"].slice(0, count);
  return Object.fromEntries(names.map((n, i) => [n, smallModel(n, i)]));
}

/** Adds host gradients (by "model/parameter") through backward of sum(slot * G). */
function addGradients(models: Models, grads: Map<string, Float32Array>): void {
  tidy(() => {
    for (const [name, model] of Object.entries(models)) {
      const set = model.parameterSet;
      let index = 0;
      set.specs.forEach((spec, i) => {
        const slot = set.slot(i);
        const values = new Float32Array(slot.size);
        for (const member of spec.members) {
          const p = set.parameters[index++];
          values.set(grads.get(`${name}/${p.info.name}`)!, member.offset);
        }
        sum(mul(slot, tensor(values, { shape: slot.shape }))).backward();
      });
    }
  });
}

async function parameterValues(models: Models): Promise<Map<string, Float32Array>> {
  const entries = Object.entries(models).flatMap(([name, m]) =>
    m.parameterSet.parameters.map((p) => [name, p] as const)
  );
  const values = await readAll(entries.map(([, p]) => p.value));
  return new Map(entries.map(([name, p], i) => [`${name}/${p.info.name}`, values[i] as Float32Array]));
}

/** How a run draws its data: gradient std per model and micro-batches per update. */
interface Drive {
  updates: number;
  /** Gradient standard deviation per model (default 0.5 each). */
  gradStd?: Record<string, number>;
  models?: number;
}

/** The optimizer's run next to the reference's: parameters after every update, and the final metrics. */
async function againstReference(options: OptimizerOptions, drive: Drive) {
  const models = smallModels(drive.models);
  const optimizer = new MultiModelOptimizer({ models, ...options });
  const names = Object.keys(models);
  const start = await parameterValues(models);
  const parameters: ReferenceParameter[] = [...start].map(([key, values]) => {
    const [model, name] = key.split("/");
    return { model, name, values: Float64Array.from(values) };
  });
  const reference = new ReferenceOptimizer(
    names,
    parameters,
    optimizer.groups,
    resolveOptions(names, options),
  );
  const accumulation = options.gradientAccumulationSteps ?? 1;
  const random = new Random(9);
  const trend: Record<string, number> = { a: 0.05, b: 0.01, c: -0.02 };
  let microBatch = 0;
  for (let update = 0; update < drive.updates; update++) {
    for (let k = 0; k < accumulation; k++, microBatch++) {
      optimizer.zeroGrad();
      reference.zeroGrad();
      const grads = new Map<string, Float32Array>();
      for (const p of parameters) {
        const g = random.normals(p.values.length, drive.gradStd?.[p.model] ?? 0.5);
        grads.set(`${p.model}/${p.name}`, g);
        reference.addGradient(p.model, p.name, g);
      }
      addGradients(models, grads);
      const losses = Object.fromEntries(
        names.map((n) => [n, 3 * Math.exp(-trend[n] * microBatch) + 0.05 * random.normal()]),
      );
      optimizer.logMetrics(losses);
      reference.logMetrics(losses);
      if (optimizer.step() !== reference.step()) throw new Error(`step() at micro-batch ${microBatch}`);
    }
    const ours = await parameterValues(models);
    for (const p of parameters) {
      const key = `${p.model}/${p.name}`;
      const atol = 1e-5 * Math.max(maxAbs(p.values), 1e-3);
      assertClose(
        ours.get(key)!,
        p.values,
        { atol },
        `${JSON.stringify(options)} update ${update + 1}: ${key}`,
      );
    }
  }
  const metrics = await optimizer.metrics();
  reference.state.forEach((s, m) => {
    const got = metrics.models[names[m]];
    const label = `${JSON.stringify(options)} ${names[m]}`;
    if (got.updates !== s.steps || got.skipped !== s.skipped) {
      throw new Error(
        `${label}: ${got.updates} updates / ${got.skipped} skipped, reference ${s.steps} / ${s.skipped}`,
      );
    }
    assertClose([got.gradNorm], [s.gradNorm], { atol: 1e-5 * Math.max(1, s.gradNorm) }, `${label} gradNorm`);
    assertClose([got.lrMultiplier], [s.multiplier], { atol: 1e-5 }, `${label} multiplier`);
  });
  const final = await parameterValues(models);
  optimizer.dispose();
  return { start, final, metrics };
}

/** Options that switch every mechanism off, for checks of one option alone. */
const PLAIN: OptimizerOptions = { gradientSharing: false, parameterSync: false, adaptiveLr: false };

Deno.test("lr 0 leaves every parameter bit for bit, with weight decay; lr 0.05 matches the reference", async () => {
  const frozen = await againstReference({ ...PLAIN, lr: 0, weightDecay: 0.1 }, { updates: 3 });
  for (const [key, values] of frozen.start) {
    assertBitwiseEqual(frozen.final.get(key)!, values, `lr 0: ${key}`);
  }
  await againstReference({ lr: 0.05 }, { updates: 4 });
});

Deno.test("betas at 0 (no momentum, no averaging) and unusual betas match the reference", async () => {
  for (const betas of [[0, 0], [0, 0.999], [0.5, 0.3]] as [number, number][]) {
    await againstReference({ ...PLAIN, lr: 0.01, betas }, { updates: 4 });
  }
});

Deno.test("a large eps (0.5, added outside the square root after bias correction) matches the reference", async () => {
  // At eps 1e-8 the place of eps changes nothing measurable; at 0.5 it dominates the denominator.
  await againstReference({ ...PLAIN, lr: 0.01, eps: 0.5 }, { updates: 4 });
  await againstReference({ ...PLAIN, lr: 0.01, eps: 0.5, betas: [0.9, 0.99] }, { updates: 4 });
});

Deno.test("weight decay 0 and 0.5 match the reference", async () => {
  for (const weightDecay of [0, 0.5]) {
    await againstReference({ ...PLAIN, lr: 0.1, weightDecay }, { updates: 3 });
  }
});

Deno.test("clipping that always, never or for one model only bites matches the reference", async () => {
  // Gradient norms are about 0.5 * sqrt(742) = 14 at std 0.5: model a's 0.7, b's 14, c's 280.
  const gradStd = { a: 0.025, b: 0.5, c: 10 };
  for (const clipGradNorm of [1e-3, 1e6, 5]) {
    await againstReference({ ...PLAIN, lr: 0.01, eps: 0.1, clipGradNorm }, { updates: 3, gradStd });
  }
});

Deno.test("accumulation 1 and 3 average the micro-batches (visible where eps is large and nothing clips)", async () => {
  // Adam divides the gradient's scale out, so a sum in place of a mean shows only through eps, clipping
  // or the reported norm: all three are checked here.
  for (const gradientAccumulationSteps of [1, 3]) {
    await againstReference({ ...PLAIN, lr: 0.01, eps: 0.5, gradientAccumulationSteps }, { updates: 3 });
    await againstReference({ lr: 0.01, clipGradNorm: 5, gradientAccumulationSteps }, { updates: 3 });
  }
});

Deno.test("sharing ratio 0 equals no sharing bit for bit; ratio 1 and every 3 match the reference", async () => {
  const off = await againstReference({ ...PLAIN, lr: 0.01 }, { updates: 3 });
  const zero = await againstReference({ ...PLAIN, lr: 0.01, gradientSharing: { ratio: 0 } }, { updates: 3 });
  for (const [key, values] of off.final) assertBitwiseEqual(zero.final.get(key)!, values, `ratio 0: ${key}`);
  await againstReference({ ...PLAIN, lr: 0.01, gradientSharing: { ratio: 1 } }, { updates: 3 });
  await againstReference({ ...PLAIN, lr: 0.01, gradientSharing: { ratio: 0.5, every: 3 } }, { updates: 6 });
});

Deno.test("sync ratio 0 equals no sync bit for bit; ratio 1 makes a group one weighted mean; the default period is 10", async () => {
  const off = await againstReference({ ...PLAIN, lr: 0.01 }, { updates: 2 });
  const zero = await againstReference({ ...PLAIN, lr: 0.01, parameterSync: { ratio: 0, every: 1 } }, {
    updates: 2,
  });
  for (const [key, values] of off.final) assertBitwiseEqual(zero.final.get(key)!, values, `ratio 0: ${key}`);
  const modelWeights = { a: 1, b: 2, c: 5 };
  const full = await againstReference(
    { ...PLAIN, lr: 0.01, modelWeights, parameterSync: { ratio: 1, every: 1 } },
    { updates: 2 },
  );
  for (const name of ["shared", "wide"]) {
    const [a, b, c] = ["a", "b", "c"].map((m) => full.final.get(`${m}/${name}`)!);
    assertClose(b, a, { atol: 1e-6 }, `ratio 1: b/${name} equals a/${name}`);
    assertClose(c, a, { atol: 1e-6 }, `ratio 1: c/${name} equals a/${name}`);
  }
  // Default { ratio: 0.1, every: 10 }: sync after update 10, not 9 or 11.
  await againstReference({ lr: 0.01, gradientSharing: false, adaptiveLr: false, parameterSync: {} }, {
    updates: 11,
  });
});

Deno.test("adaptive rates pinned by min = max = 1 stay 1; window 3, with smoothing 1 or the defaults, matches the reference", async () => {
  const pinned = await againstReference({ lr: 0.01, adaptiveLr: { min: 1, max: 1, window: 3 } }, {
    updates: 5,
  });
  for (const m of Object.values(pinned.metrics.models)) {
    if (m.lrMultiplier !== 1) throw new Error(`pinned multiplier ${m.lrMultiplier}`);
  }
  const fast = await againstReference({ lr: 0.01, adaptiveLr: { window: 3, smoothing: 1 } }, { updates: 6 });
  const multipliers = Object.values(fast.metrics.models).map((m) => m.lrMultiplier);
  if (multipliers.every((m) => m === 1)) throw new Error("window 3 never moved a multiplier");
  // Window 3 with the default bounds and smoothing (0.5, 1.5, 0.1).
  await againstReference({ lr: 0.01, adaptiveLr: { window: 3 } }, { updates: 6 });
  // Defaults (window 20) with fewer losses than the window: every multiplier stays 1.
  const early = await againstReference({ lr: 0.01 }, { updates: 5 });
  for (const m of Object.values(early.metrics.models)) {
    if (m.lrMultiplier !== 1) throw new Error(`multiplier ${m.lrMultiplier} before a full window`);
  }
});

Deno.test("one model alone, and weights 1 : 1000 : 0.001, match the reference", async () => {
  await againstReference({ lr: 0.01, parameterSync: { every: 1 } }, { updates: 3, models: 1 });
  await againstReference({
    lr: 0.01,
    modelWeights: { a: 1, b: 1000, c: 0.001 },
    gradientSharing: { ratio: 0.5 },
    parameterSync: { ratio: 0.5, every: 1 },
  }, { updates: 3 });
});

Deno.test("schedules without warmup, without decay (minRatio 1), and past totalSteps match the reference", async () => {
  for (
    const schedule of [
      { warmupSteps: 0, totalSteps: 4 },
      { warmupSteps: 2, totalSteps: 4, minRatio: 1 },
      { warmupSteps: 1, totalSteps: 2, minRatio: 0.3 },
    ]
  ) {
    await againstReference({ ...PLAIN, lr: 0.05, schedule }, { updates: 5 });
  }
});

Deno.test("every option left out takes its documented default", () => {
  // The reference reads resolved options too, so a changed default would move both: pin them here.
  const expected = {
    lr: 1e-3,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 0,
    decayBiasesAndNorms: true,
    amsgrad: false,
    modelWeights: [1, 1],
    gradientAccumulationSteps: 1,
    clipGradNorm: null,
    schedule: null,
    gradientSharing: { ratio: 0.2, every: 1 },
    parameterSync: { ratio: 0.1, every: 10 },
    adaptiveLr: { window: 20, min: 0.5, max: 1.5, smoothing: 0.1 },
    alignInitialization: false,
  };
  const got = JSON.stringify(resolveOptions(["a", "b"], {}));
  if (got !== JSON.stringify(expected)) throw new Error(`defaults ${got}`);
  const partial = resolveOptions(["a", "b"], {
    gradientSharing: { every: 3 },
    parameterSync: { ratio: 0.5 },
  });
  if (
    JSON.stringify([partial.gradientSharing, partial.parameterSync]) !==
      JSON.stringify([{ ratio: 0.2, every: 3 }, { ratio: 0.5, every: 10 }])
  ) {
    throw new Error(`partial mechanisms ${JSON.stringify([partial.gradientSharing, partial.parameterSync])}`);
  }
});

Deno.test("values at and past each option's boundary are accepted or refused, naming the option", () => {
  const names = ["a", "b"];
  const accepted: OptimizerOptions[] = [
    { lr: 0 },
    { betas: [0, 0] },
    { weightDecay: 0 },
    { eps: 1e-30 },
    { gradientAccumulationSteps: 1 },
    { gradientSharing: { ratio: 0, every: 1 } },
    { gradientSharing: { ratio: 1 } },
    { parameterSync: { ratio: 0, every: 1 } },
    { parameterSync: { ratio: 1 } },
    { adaptiveLr: { window: 3, min: 1, max: 1, smoothing: 1 } },
    { adaptiveLr: { window: 256 } },
    { schedule: { warmupSteps: 0, totalSteps: 1, minRatio: 1 } },
  ];
  for (const options of accepted) resolveOptions(names, options);
  const refused: [OptimizerOptions, string][] = [
    [{ lr: -1e-9 }, "lr must be a finite number >= 0, got -1e-9"],
    [{ lr: Infinity }, "lr must be a finite number >= 0, got Infinity"],
    [{ betas: [1, 0.999] }, "betas must be two numbers in [0, 1), got [1,0.999]"],
    [{ betas: [0.9, -0.1] }, "betas must be two numbers in [0, 1), got [0.9,-0.1]"],
    [{ betas: [0.9] as unknown as [number, number] }, "betas must be two numbers in [0, 1), got [0.9]"],
    [{ eps: 0 }, "eps must be a finite number > 0, got 0"],
    [{ eps: Infinity }, "eps must be a finite number > 0, got Infinity"],
    [{ weightDecay: -0.1 }, "weightDecay must be a finite number >= 0, got -0.1"],
    [{ weightDecay: Infinity }, "weightDecay must be a finite number >= 0, got Infinity"],
    [{ clipGradNorm: 0 }, "clipGradNorm must be > 0 or null, got 0"],
    [{ gradientAccumulationSteps: 1.5 }, "gradientAccumulationSteps must be an integer >= 1"],
    [{ gradientSharing: { ratio: 1.01 } }, "gradientSharing.ratio must be in [0, 1], got 1.01"],
    [{ gradientSharing: { every: 0 } }, "gradientSharing.every must be an integer >= 1"],
    [{ parameterSync: { ratio: -0.5 } }, "parameterSync.ratio must be in [0, 1], got -0.5"],
    [{ parameterSync: { every: 2.5 } }, "parameterSync.every must be an integer >= 1"],
    [{ adaptiveLr: { window: 2 } }, "adaptiveLr.window must be an integer in [3, 256]"],
    [{ adaptiveLr: { window: 257 } }, "adaptiveLr.window must be an integer in [3, 256]"],
    [{ adaptiveLr: { min: 0 } }, "adaptiveLr needs 0 < min <= 1 <= max, got [0, 1.5]"],
    [{ adaptiveLr: { max: 0.9 } }, "adaptiveLr needs 0 < min <= 1 <= max, got [0.5, 0.9]"],
    [{ adaptiveLr: { smoothing: 0 } }, "adaptiveLr.smoothing must be in (0, 1], got 0"],
    [{ schedule: { warmupSteps: 3, totalSteps: 3 } }, "schedule.totalSteps must exceed warmupSteps"],
    [{ schedule: { warmupSteps: 0, totalSteps: 3, minRatio: 1.5 } }, "schedule.minRatio must be in [0, 1]"],
    [
      { modelWeights: { a: 1, b: Infinity } },
      'the weight of model "b" must be a positive number, got Infinity',
    ],
    [
      { weight_decay: 0.01 } as OptimizerOptions,
      'unknown option "weight_decay" (did you mean "weightDecay"?); accepted: models, lr, betas',
    ],
    [{ lR: 0.1 } as OptimizerOptions, 'unknown option "lR"; accepted: models, lr'],
    [
      { schedule: { warmup: 2, totalSteps: 10 } } as unknown as OptimizerOptions,
      'schedule: unknown option "warmup"; accepted: warmupSteps, totalSteps, minRatio',
    ],
  ];
  for (const [options, expected] of refused) {
    let message = "";
    try {
      resolveOptions(names, options);
    } catch (e) {
      message = (e as Error).message;
    }
    if (
      message !== `MultiModelOptimizer: ${expected}` &&
      !message.startsWith(`MultiModelOptimizer: ${expected}`)
    ) {
      throw new Error(`${JSON.stringify(options)}: expected "${expected}", got "${message}"`);
    }
  }
});

Deno.test("models given as an array are refused: the optimizer names models by their keys", () => {
  let message = "";
  try {
    new MultiModelOptimizer({ models: [] as unknown as Record<string, never> });
  } catch (e) {
    message = (e as Error).message;
  }
  if (!message.startsWith("MultiModelOptimizer: models must be an object of models by name")) {
    throw new Error(message);
  }
});

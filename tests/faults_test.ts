/**
 * Faults stay inside the model that has them: with every mechanism of the optimizer on, a NaN or
 * an infinity in one model's loss, gradients or parameters (or a gradient too large for float32
 * moments) leaves every other model's parameters and moments bit-identical to a run in which that
 * model sat the update out, and the faulty model's own state untouched.
 */
import { Random } from "../engine/random.ts";
import { readAll, tensor, tidy, writeTensor } from "../engine/tensor.ts";
import { mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { ParameterSet } from "../models/parameters.ts";
import { MultiModelOptimizer, type OptimizerState } from "../optim/multimodel.ts";
import type { OptimizerOptions } from "../optim/options.ts";
import { assertBitwiseEqual, assertClose, setup } from "./helpers.ts";
import { withKernels } from "../engine/variants.ts";

await setup();

type Models = Record<string, { parameterSet: ParameterSet }>;

const OPTIONS: OptimizerOptions = {
  lr: 1e-2,
  weightDecay: 0.01,
  modelWeights: { bert: 1, gpt2: 0.8, roberta: 1.2 },
  gradientAccumulationSteps: 2,
  clipGradNorm: 1,
  gradientSharing: { ratio: 0.3, every: 1 },
  parameterSync: { ratio: 0.2, every: 1 },
  adaptiveLr: { window: 3, smoothing: 0.5 },
  alignInitialization: true,
};

function tinyModels(): Record<string, TransformerModel> {
  const size = { hiddenSize: 16, numHeads: 2, intermediateSize: 32, vocabSize: 40, maxPositions: 24 };
  return {
    bert: new TransformerModel(modelConfig("bert", { ...size, numLayers: 2 }), { name: "bert", seed: 1 }),
    gpt2: new TransformerModel(modelConfig("gpt2", { ...size, numLayers: 2 }), { name: "gpt2", seed: 2 }),
    roberta: new TransformerModel(modelConfig("roberta", { ...size, numLayers: 1 }), {
      name: "roberta",
      seed: 3,
    }),
  };
}

/** Adds host gradients (per "model/parameter") through backward of sum(slot * G). */
function addGradients(
  models: Models,
  grads: (model: string, parameter: string, size: number) => Float32Array,
) {
  tidy(() => {
    for (const [name, model] of Object.entries(models)) {
      const set = model.parameterSet;
      let index = 0;
      set.specs.forEach((spec, i) => {
        const slot = set.slot(i);
        const values = new Float32Array(slot.size);
        for (const member of spec.members) {
          const p = set.parameters[index++];
          values.set(grads(name, p.info.name, p.value.size), member.offset);
        }
        sum(mul(slot, tensor(values, { shape: slot.shape }))).backward();
      });
    }
  });
}

interface Snapshot {
  parameters: Map<string, Float32Array>;
  state: OptimizerState;
}

async function snapshot(models: Models, optimizer: MultiModelOptimizer): Promise<Snapshot> {
  const entries = Object.entries(models).flatMap(([name, m]) =>
    m.parameterSet.parameters.map((p) => [`${name}/${p.info.name}`, p.value] as const)
  );
  const values = await readAll(entries.map(([, v]) => v));
  return {
    parameters: new Map(entries.map(([key], i) => [key, values[i] as Float32Array])),
    state: await optimizer.stateDict(),
  };
}

function assertModelEqual(a: Snapshot, b: Snapshot, model: string, label: string): void {
  for (const [key, values] of a.parameters) {
    if (!key.startsWith(`${model}/`)) continue;
    assertBitwiseEqual(values, b.parameters.get(key)!, `${label}: parameter ${key}`);
    assertBitwiseEqual(a.state.moments[key].expAvg, b.state.moments[key].expAvg, `${label}: exp_avg ${key}`);
    assertBitwiseEqual(
      a.state.moments[key].expAvgSq,
      b.state.moments[key].expAvgSq,
      `${label}: exp_avg_sq ${key}`,
    );
  }
}

/** What goes wrong in model "bert" during the faulty update. */
interface Fault {
  /** Loss logged in the first micro-batch. */
  loss?: number;
  /** Value written into one element of a shared gradient (the word embeddings) in the first micro-batch. */
  gradient?: number;
  /** Value written into one element of a shared parameter before the update. */
  parameter?: number;
}

const FAULTY_UPDATE = 3;

/** Trains three updates cleanly, then one with `fault` in bert; returns the state before and after it. */
async function run(
  fault: Fault,
): Promise<{ before: Snapshot; after: Snapshot; optimizer: MultiModelOptimizer }> {
  const models = tinyModels();
  const optimizer = new MultiModelOptimizer({ models, ...OPTIONS });
  const random = new Random(5);
  let before: Snapshot | null = null;
  for (let update = 0; update <= FAULTY_UPDATE; update++) {
    const faulty = update === FAULTY_UPDATE;
    if (faulty) {
      before = await snapshot(models, optimizer);
      if (fault.parameter !== undefined) {
        const p = models.bert.parameters.find((p) => p.info.name.endsWith("word_embeddings.weight"))!;
        const values = before.parameters.get(`bert/${p.info.name}`)!.slice();
        values[7] = fault.parameter;
        writeTensor(p.value, values);
      }
    }
    for (let micro = 0; micro < 2; micro++) {
      optimizer.zeroGrad();
      addGradients(models, (model, parameter, size) => {
        const g = random.normals(size, 0.5);
        if (faulty && micro === 0 && model === "bert" && parameter.endsWith("word_embeddings.weight")) {
          if (fault.gradient !== undefined) g[3] = fault.gradient;
        }
        return g;
      });
      const losses: Record<string, number> = { bert: 3 - update * 0.2, gpt2: 3 - update * 0.1, roberta: 3 };
      if (faulty && micro === 0 && fault.loss !== undefined) losses.bert = fault.loss;
      optimizer.logMetrics(losses);
      optimizer.step();
    }
  }
  return { before: before!, after: await snapshot(models, optimizer), optimizer };
}

Deno.test("a fault in one model leaves the others bit-identical to a run in which it sat the update out", async () => {
  // The run in which bert sits the update out: a NaN loss, the documented way to skip.
  const satOut = await run({ loss: NaN });
  const metricsOut = await satOut.optimizer.metrics();
  if (metricsOut.models.bert.lastSkip !== "loss") throw new Error(JSON.stringify(metricsOut.models.bert));
  satOut.optimizer.dispose();
  const cases: [string, Fault, string][] = [
    ["infinite loss", { loss: Infinity }, "loss"],
    ["NaN gradient", { gradient: NaN }, "gradient"],
    ["infinite gradient", { gradient: -Infinity }, "gradient"],
    ["finite gradient too large for float32 moments", { gradient: 1e25 }, "overflow"],
    ["NaN parameter", { parameter: NaN }, "parameters"],
    ["infinite parameter", { parameter: Infinity }, "parameters"],
  ];
  for (const [label, fault, cause] of cases) {
    const { before, after, optimizer } = await run(fault);
    for (const other of ["gpt2", "roberta"]) {
      assertModelEqual(after, satOut.after, other, `${label}, ${other}`);
    }
    const metrics = await optimizer.metrics();
    const bert = metrics.models.bert;
    if (bert.lastSkip !== cause || bert.skipped !== 1 || metrics.models.gpt2.lastSkip !== null) {
      throw new Error(`${label}: metrics ${JSON.stringify(metrics.models)}`);
    }
    if (fault.parameter === undefined) assertModelEqual(after, before, "bert", `${label}, bert untouched`);
    if (fault.gradient === 1e25) {
      // Reported as it was: a finite norm near 1e25 / 2 micro-batches, not 0 or infinity.
      assertClose([bert.gradNorm / 5e24], [1], { rtol: 1e-3 }, `${label}: reported norm`);
      assertClose([bert.gradMax / 5e24], [1], { rtol: 1e-6 }, `${label}: reported largest element`);
    }
    if (fault.gradient !== undefined && !Number.isFinite(fault.gradient) && !Number.isNaN(bert.gradNorm)) {
      throw new Error(`${label}: a non-finite gradient reported norm ${bert.gradNorm}`);
    }
    optimizer.dispose();
  }
});

Deno.test("the GPU-shaped norm kernels isolate faults the same way", async () => {
  await withKernels("mm_tile_norms:tree", async () => {
    const satOut = await run({ loss: NaN });
    satOut.optimizer.dispose();
    for (const fault of [{ gradient: NaN }, { parameter: Infinity }, { gradient: 3e24 }]) {
      const { after, optimizer } = await run(fault);
      for (const other of ["gpt2", "roberta"]) {
        assertModelEqual(after, satOut.after, other, JSON.stringify(fault));
      }
      optimizer.dispose();
    }
  });
});

function vectorModel(name: string, values: number[]): { parameterSet: ParameterSet } {
  const set = new ParameterSet(name);
  set.declare({
    role: "ffn_out",
    kind: "bias",
    site: "ffn",
    layer: null,
    layerCount: 1,
    name: "w",
    shape: [values.length],
    layout: "vector",
  }, { kind: "zeros" });
  set.allocate(0);
  writeTensor(set.parameters[0].value, Float32Array.from(values));
  return { parameterSet: set };
}

Deno.test("gradient norms never overflow: 4096 elements of 1e18 report a norm of 6.4e19 and clip", async () => {
  const size = 4096;
  for (const variant of ["serial", "tree"]) {
    await withKernels(`mm_tile_norms:${variant}`, async () => {
      const models = { a: vectorModel("a", new Array(size).fill(0)) };
      const optimizer = new MultiModelOptimizer({ models, lr: 0.1, clipGradNorm: 1, adaptiveLr: false });
      optimizer.zeroGrad();
      addGradients(models, () => new Float32Array(size).fill(1e18));
      optimizer.step();
      const { a } = (await optimizer.metrics()).models;
      assertClose([a.gradNorm / 6.4e19], [1], { rtol: 1e-5 }, "norm of 4096 x 1e18");
      if (a.lastSkip !== null || a.updates !== 1) throw new Error(JSON.stringify(a));
      const [w] = await readAll([models.a.parameterSet.parameters[0].value]);
      // The first AdamW step moves every coordinate by lr against the gradient's sign.
      assertClose(w.slice(0, 4), [-0.1, -0.1, -0.1, -0.1], { atol: 1e-6 }, "clipped update");
      optimizer.dispose();
    });
  }
});

Deno.test("a model whose AdamW update overflows is marked faulted and left out of that update's sync", async () => {
  // The first AdamW step moves every coordinate by lr = 1e37: a starts at 3.4e38 and overflows, b does not.
  const build = () => ({ a: vectorModel("a", [3.4e38, 1, 2]), b: vectorModel("b", [0, 0, 0]) });
  const options: OptimizerOptions = {
    lr: 1e37,
    adaptiveLr: false,
    gradientSharing: false,
    parameterSync: { ratio: 0.5, every: 1 },
  };
  const faulty = build();
  const optimizer = new MultiModelOptimizer({ models: faulty, ...options });
  optimizer.zeroGrad();
  addGradients(faulty, () => Float32Array.of(-1, -1, -1));
  optimizer.step();
  const metrics = await optimizer.metrics();
  if (!metrics.models.a.faulted || metrics.models.b.faulted) throw new Error(JSON.stringify(metrics.models));
  const satOut = build();
  const baseline = new MultiModelOptimizer({ models: satOut, ...options });
  baseline.zeroGrad();
  addGradients(satOut, () => Float32Array.of(-1, -1, -1));
  baseline.logMetrics({ a: NaN });
  baseline.step();
  const [b, bOut] = await readAll([
    faulty.b.parameterSet.parameters[0].value,
    satOut.b.parameterSet.parameters[0].value,
  ]);
  assertBitwiseEqual(b, bOut, "b after a's overflow");
  // The next update marks a again (its parameters are infinite) and still leaves it out of sync.
  optimizer.zeroGrad();
  addGradients(faulty, () => Float32Array.of(-1, -1, -1));
  optimizer.step();
  const [bNext] = await readAll([faulty.b.parameterSet.parameters[0].value]);
  if (!(await optimizer.metrics()).models.a.faulted || !bNext.every(Number.isFinite)) {
    throw new Error(`b after a second faulty update: [${bNext}]`);
  }
  optimizer.dispose();
  baseline.dispose();
});

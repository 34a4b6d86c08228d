/**
 * AMSGrad (`amsgrad: true`): torch.optim.AdamW(amsgrad=True) trajectories to 1e-6 relative, the fused
 * step against the float64 reference with every mechanism on, the same number of dispatches as
 * AdamW, and the running maximum in state dicts and checkpoints, checked like the other moments.
 */
import { manualSeed, Random } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor, tidy, writeTensor } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { ParameterSet } from "../models/parameters.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { loadCheckpoint, saveCheckpoint } from "../optim/checkpoint.ts";
import { MultiModelOptimizer, type MultiModelOptimizerOptions } from "../optim/multimodel.ts";
import { type OptimizerOptions, resolveOptions } from "../optim/options.ts";
import { ADAMW_TOLERANCE, checkAdamwFolder } from "../optim/parity.ts";
import { ReferenceOptimizer, type ReferenceParameter } from "../optim/reference.ts";
import { assertBitwiseEqual, assertClose, maxAbs, setup } from "./helpers.ts";

await setup();

const FIXTURES = new URL("./fixtures/hf/", import.meta.url).pathname;

Deno.test("AMSGrad matches torch.optim.AdamW(amsgrad=True) trajectories to 1e-6 relative", async () => {
  const result = await checkAdamwFolder(`${FIXTURES}amsgrad`);
  if (!result.pass) throw new Error(`worst relative error ${result.worstRelativeError} at ${result.worstAt}`);
  console.log(`worst relative error ${result.worstRelativeError.toExponential(2)} at ${result.worstAt}`);
});

Deno.test("the AMSGrad trajectories tell AMSGrad from AdamW: plain AdamW fails them by far", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "amsgrad-" });
  const cases = JSON.parse(await Deno.readTextFile(`${FIXTURES}amsgrad/cases.json`));
  for (const c of Object.values(cases)) (c as { amsgrad: boolean }).amsgrad = false;
  await Deno.writeTextFile(`${folder}/cases.json`, JSON.stringify(cases));
  await Deno.copyFile(`${FIXTURES}amsgrad/adamw.safetensors`, `${folder}/adamw.safetensors`);
  const plain = await checkAdamwFolder(folder);
  await Deno.remove(folder, { recursive: true });
  if (plain.pass || plain.worstRelativeError < 100 * ADAMW_TOLERANCE) {
    throw new Error(`plain AdamW is off by only ${plain.worstRelativeError} (${plain.worstAt})`);
  }
});

/** Three models of two vector parameters each (sizes that are not multiples of 4), grouped by role. */
function vectorModels(): Record<string, { parameterSet: ParameterSet }> {
  const random = new Random(3);
  return Object.fromEntries(["a", "b", "c"].map((name) => {
    const set = new ParameterSet(name);
    for (const [parameter, size] of [["u", 37], ["w", 130]] as const) {
      set.declare({
        role: parameter === "u" ? "ffn_in" : "ffn_out",
        kind: "bias",
        site: "ffn",
        layer: null,
        layerCount: 1,
        name: parameter,
        shape: [size],
        layout: "vector",
      }, { kind: "zeros" });
    }
    set.allocate(0);
    for (const p of set.parameters) writeTensor(p.value, random.normals(p.info.shape[0]));
    return [name, { parameterSet: set }];
  }));
}

const MECHANISMS: OptimizerOptions = {
  lr: 2e-2,
  betas: [0.9, 0.9],
  weightDecay: 0.01,
  amsgrad: true,
  modelWeights: { a: 1, b: 0.8, c: 1.2 },
  gradientAccumulationSteps: 2,
  clipGradNorm: 4,
  schedule: { warmupSteps: 2, totalSteps: 12, minRatio: 0.1 },
  gradientSharing: { ratio: 0.3 },
  parameterSync: { ratio: 0.2, every: 3 },
  adaptiveLr: { window: 3, smoothing: 0.5 },
};

Deno.test("the fused AMSGrad step matches the float64 reference with every mechanism on and a skipped model", async () => {
  const models = vectorModels();
  const names = Object.keys(models);
  const optimizer = new MultiModelOptimizer({ models, ...MECHANISMS });
  const parameters = names.flatMap((name) => models[name].parameterSet.parameters.map((p) => ({ name, p })));
  const start = await readAll(parameters.map(({ p }) => p.value));
  const reference: ReferenceParameter[] = parameters.map(({ name, p }, i) => ({
    model: name,
    name: p.info.name,
    values: Float64Array.from(start[i]),
  }));
  const ref = new ReferenceOptimizer(names, reference, optimizer.groups, resolveOptions(names, MECHANISMS));
  const random = new Random(9);
  // Large gradients first, then small ones: the second moment falls and its maximum holds.
  const scales = [1, 3, 0.5, 0.1, 0.05, 2, 0.02, 0.01, 0.5, 0.01];
  for (const [update, scale] of scales.entries()) {
    const sums = parameters.map(({ p }) => new Float32Array(p.info.shape[0]));
    for (let k = 0; k < 2; k++) {
      optimizer.zeroGrad();
      ref.zeroGrad();
      parameters.forEach(({ name, p }, i) => {
        const g = random.normals(sums[i].length, scale);
        // Model b's gradient is poisoned once: it sits update 4 out, in both.
        if (update === 4 && name === "b" && p.info.name === "w") g[5] = NaN;
        sums[i] = sums[i].map((s, j) => s + g[j]);
        writeTensor(p.value.grad!, sums[i]);
        ref.addGradient(name, p.info.name, g);
      });
      const losses = { a: 2 - 0.1 * update, b: 2, c: 2 + 0.05 * update + 0.01 * k };
      optimizer.logMetrics(losses);
      ref.logMetrics(losses);
      if (optimizer.step() !== ref.step()) throw new Error(`step() at update ${update}`);
    }
    const ours = await readAll(parameters.map(({ p }) => p.value));
    reference.forEach((r, i) => {
      assertClose(
        ours[i],
        r.values,
        { atol: 1e-5 * maxAbs(r.values) },
        `update ${update + 1}: ${r.model}/${r.name}`,
      );
    });
  }
  const state = await optimizer.stateDict();
  for (const r of reference) {
    const key = `${r.model}/${r.name}`;
    const top = ref.maxExpAvgSq.get(key)!;
    assertClose(state.moments[key].maxExpAvgSq!, top, { atol: 1e-5 * maxAbs(top) }, `${key} max_exp_avg_sq`);
    // The maximum binds: somewhere it is well above the moment it is the maximum of.
    const v = ref.expAvgSq.get(key)!;
    if (!top.some((t, i) => t > 1.05 * v[i])) {
      throw new Error(`${key}: the maximum never differs from exp_avg_sq`);
    }
  }
  const metrics = await optimizer.metrics();
  if (metrics.models.b.skipped !== 1 || ref.state[1].skipped !== 1) {
    throw new Error("the skip was not counted");
  }
  optimizer.dispose();
});

Deno.test("AMSGrad adds no dispatch: an update is as many kernels as AdamW's, one of them AMSGrad's", () => {
  const counts = [false, true].map((amsgrad) => {
    const models = vectorModels();
    const optimizer = new MultiModelOptimizer({
      models,
      ...MECHANISMS,
      amsgrad,
      parameterSync: { every: 1 },
    });
    const step = () => {
      optimizer.zeroGrad();
      optimizer.logMetrics({ a: 1, b: 1, c: 1 });
      optimizer.step();
      optimizer.zeroGrad();
      optimizer.logMetrics({ a: 1, b: 1, c: 1 });
      optimizer.step();
    };
    step();
    const { dispatches } = traceDispatches(step);
    optimizer.dispose();
    for (const m of Object.values(models)) m.parameterSet.dispose();
    return dispatches.map((d) => d.kernel);
  });
  if (counts[0].length !== counts[1].length) {
    throw new Error(`dispatches: ${counts[0].length} vs ${counts[1].length}`);
  }
  if (!counts[1].includes("mm_adamw_amsgrad") || counts[1].includes("mm_adamw")) {
    throw new Error(`${counts[1]}`);
  }
});

Deno.test("the state dict holds AMSGrad's maximum; a state without it, or with it below the moment, is refused", async () => {
  const models = vectorModels();
  const optimizer = new MultiModelOptimizer({ models, ...MECHANISMS });
  const random = new Random(4);
  for (let i = 0; i < 4; i++) {
    optimizer.zeroGrad();
    for (const m of Object.values(models)) {
      for (const p of m.parameterSet.parameters) {
        writeTensor(p.value.grad!, random.normals(p.info.shape[0], 2 - i));
      }
    }
    optimizer.step();
  }
  const state = await optimizer.stateDict();
  const plain = new MultiModelOptimizer({ models: vectorModels(), ...MECHANISMS, amsgrad: false });
  const message = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      return (e as Error).message;
    }
    return "nothing was thrown";
  };
  const cases: [() => void, string][] = [
    [
      () => plain.loadStateDict(state),
      "saved by an optimizer with other options: amsgrad true (this optimizer: false)",
    ],
    // Keeping this optimizer's options does not load moments it has no room for.
    [
      () => plain.loadStateDict(state, { keepCurrentOptions: true }),
      '"a/u" has max_exp_avg_sq, and this optimizer does not use AMSGrad',
    ],
    [() => {
      const moments = structuredClone(state.moments);
      delete moments["b/w"].maxExpAvgSq;
      optimizer.loadStateDict({ ...state, moments });
    }, '"b/w" lacks max_exp_avg_sq, and this optimizer uses AMSGrad'],
    [() => {
      const moments = structuredClone(state.moments);
      moments["c/u"].maxExpAvgSq![3] = moments["c/u"].expAvgSq[3] / 2;
      optimizer.loadStateDict({ ...state, moments });
    }, 'max_exp_avg_sq of "c/u" is'],
    [() => {
      const moments = structuredClone(state.moments);
      moments["a/w"].maxExpAvgSq![0] = NaN;
      optimizer.loadStateDict({ ...state, moments });
    }, 'max_exp_avg_sq of "a/w" holds NaN at 0'],
  ];
  for (const [load, expected] of cases) {
    const got = message(load);
    if (!got.includes(expected)) throw new Error(`expected "${expected}", got "${got}"`);
  }
  // A state loads back whole, and the argument is not modified.
  const copy = structuredClone(state);
  optimizer.loadStateDict(state);
  const again = await optimizer.stateDict();
  for (const [key, entry] of Object.entries(copy.moments)) {
    assertBitwiseEqual(again.moments[key].maxExpAvgSq!, entry.maxExpAvgSq!, key);
    assertBitwiseEqual(state.moments[key].maxExpAvgSq!, entry.maxExpAvgSq!, `${key} argument`);
  }
  optimizer.dispose();
  plain.dispose();
});

const SIZE = {
  hiddenSize: 16,
  numHeads: 2,
  numLayers: 1,
  intermediateSize: 32,
  vocabSize: 30,
  maxPositions: 12,
};
const OPTIONS: Omit<MultiModelOptimizerOptions, "models"> = {
  lr: 1e-2,
  amsgrad: true,
  adaptiveLr: { window: 3 },
};

function build(seed: number): Record<string, TransformerModel> {
  return {
    bert: new TransformerModel(modelConfig("bert", SIZE), {
      name: "bert",
      task: "sequence-classification",
      seed,
    }),
    gpt2: new TransformerModel(modelConfig("gpt2", SIZE), {
      name: "gpt2",
      task: "sequence-classification",
      seed,
    }),
  };
}

function trainStep(
  models: Record<string, TransformerModel>,
  optimizer: MultiModelOptimizer,
  step: number,
): Tensor[] {
  return tidy(() => {
    const inputIds = tensor(Int32Array.from({ length: 16 }, (_, i) => 3 + ((i * 7 + step * 5) % 25)), {
      shape: [2, 8],
    });
    const labels = tensor(Int32Array.from({ length: 2 }, (_, i) => (i + step) % 2));
    optimizer.zeroGrad();
    const losses: Record<string, Tensor> = {};
    for (const [name, model] of Object.entries(models)) {
      losses[name] = model.forward({ inputIds, labels }).loss!;
      losses[name].backward();
    }
    optimizer.logMetrics(losses);
    optimizer.step();
    return Object.values(losses);
  });
}

Deno.test("an AMSGrad checkpoint resumes bit for bit, and only into an AMSGrad optimizer", async () => {
  const parent = await Deno.makeTempDir({ dir: "/tmp", prefix: "amsgrad-ckpt-" });
  manualSeed(5);
  const models = build(1);
  const optimizer = new MultiModelOptimizer({ models, ...OPTIONS });
  for (let step = 0; step < 4; step++) trainStep(models, optimizer, step);
  await saveCheckpoint(`${parent}/run`, optimizer, models);
  const saved = (await readSafetensors(`${parent}/run/optimizer.safetensors`)).tensors;
  if (![...saved.keys()].some((n) => n.startsWith("max_exp_avg_sq/bert/"))) {
    throw new Error("no maximum saved");
  }
  for (let step = 4; step < 8; step++) trainStep(models, optimizer, step);
  const expected = await readAll(Object.values(models).flatMap((m) => m.parameters.map((p) => p.value)));
  optimizer.dispose();

  const resumedModels = build(50);
  const resumed = new MultiModelOptimizer({ models: resumedModels, ...OPTIONS });
  await loadCheckpoint(`${parent}/run`, resumed, resumedModels);
  for (let step = 4; step < 8; step++) trainStep(resumedModels, resumed, step);
  const got = await readAll(Object.values(resumedModels).flatMap((m) => m.parameters.map((p) => p.value)));
  got.forEach((values, i) => assertBitwiseEqual(values, expected[i], `parameter ${i}`));
  resumed.dispose();

  const plainModels = build(50);
  const plain = new MultiModelOptimizer({ models: plainModels, ...OPTIONS, amsgrad: false });
  const failure = async (keepCurrentOptions: boolean) => {
    try {
      await loadCheckpoint(`${parent}/run`, plain, plainModels, { keepCurrentOptions });
    } catch (e) {
      return (e as Error).message;
    }
    return "nothing was thrown";
  };
  let message = await failure(false);
  if (
    !message.includes("optimizer.json: the state was saved by an optimizer with other options: amsgrad true")
  ) {
    throw new Error(message);
  }
  message = await failure(true);
  if (!message.includes("optimizer.safetensors") || !message.includes('unexpected "max_exp_avg_sq/bert/')) {
    throw new Error(message);
  }
  plain.dispose();
  await Deno.remove(parent, { recursive: true });
});

/** loadStateDict validates every field before writing anything. */
import { tensor, tidy } from "../engine/tensor.ts";
import { mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { ParameterSet } from "../models/parameters.ts";
import { MultiModelOptimizer, type OptimizerState } from "../optim/multimodel.ts";
import { assertBitwiseEqual, setup } from "./helpers.ts";

await setup();

function vectorModel(name: string): { parameterSet: ParameterSet } {
  const set = new ParameterSet(name);
  set.declare({
    role: "ffn_out",
    kind: "bias",
    site: "ffn",
    layer: null,
    layerCount: 1,
    name: "w",
    shape: [5],
    layout: "vector",
  }, { kind: "normal", std: 1 });
  set.allocate(name.length);
  return { parameterSet: set };
}

function trained(): MultiModelOptimizer {
  const models = { a: vectorModel("a"), bb: vectorModel("bb") };
  const optimizer = new MultiModelOptimizer({
    models,
    adaptiveLr: { window: 3 },
    gradientAccumulationSteps: 2,
  });
  for (let i = 0; i < 5; i++) {
    optimizer.zeroGrad();
    tidy(() => {
      for (const model of Object.values(models)) {
        const w = model.parameterSet.slot(0);
        sum(mul(w, tensor(Float32Array.of(1, -2, 3, -4, 5 + i)))).backward();
      }
    });
    optimizer.logMetrics({ a: 2 - i * 0.1, bb: 2 });
    optimizer.step();
  }
  return optimizer;
}

Deno.test("loadStateDict rejects bad moments and counters, naming the field, and writes nothing", async () => {
  const optimizer = trained();
  const good = await optimizer.stateDict();
  const cases: [string, (s: OptimizerState) => void, string][] = [
    ["NaN second moment", (s) => (s.moments["a/w"].expAvgSq[2] = NaN), 'exp_avg_sq of "a/w" holds NaN at 2'],
    ["negative second moment", (s) => (s.moments["bb/w"].expAvgSq[0] = -1), 'exp_avg_sq of "bb/w" holds -1'],
    [
      "infinite first moment",
      (s) => (s.moments["a/w"].expAvg[4] = Infinity),
      'exp_avg of "a/w" holds Infinity',
    ],
    ["short moment", (s) => (s.moments["a/w"].expAvg = new Float32Array(3)), 'state of "a/w" has [3,5,5]'],
    [
      "same size, other shape",
      (s) => (s.moments["a/w"].shape = [1, 5]),
      '"a/w" was saved with shape [1,5], the parameter has shape [5]',
    ],
    [
      "missing ring positions",
      (s) => delete (s.counters as Partial<OptimizerState["counters"]>).ringPositions,
      "counters.ringPositions must hold 2 integers",
    ],
    ["short ring positions", (s) => (s.counters.ringPositions = [0]), "counters.ringPositions must hold 2"],
    [
      "ring position inconsistent with the count",
      (s) => (s.counters.ringPositions = [1, 2]),
      "counters.ringPositions[0] is 1, but 5 losses",
    ],
    ["fractional count", (s) => (s.counters.ringCounts = [1.5, 2]), "counters.ringCounts must hold 2"],
    ["micro-batches beyond the cycle", (s) => (s.counters.microBatches = 2), "counters.microBatches"],
    ["negative updates", (s) => (s.counters.updates = -1), "counters.updates must be an integer >= 0"],
    ["updates that do not add up", (s) => (s.counters.updates = 9), "do not add up to counters.updates 9"],
    [
      "non-boolean flag",
      (s) => ((s.counters as { gradientsStale: unknown }).gradientsStale = 1),
      "gradientsStale",
    ],
    ["NaN multiplier", (s) => (s.control[8] = NaN), 'control of "a": multiplier must be a positive number'],
    ["bias correction above 1", (s) => (s.control[16 + 4] = 2), 'control of "bb": biasCorrection2'],
    ["unknown skip code", (s) => (s.control[2] = 7), 'control of "a": skip must be a skip reason code'],
    [
      "through JSON",
      (s) => Object.assign(s, JSON.parse(JSON.stringify({ control: s.control, lossRing: s.lossRing }))),
      "control and lossRing must be Float32Arrays (a state through JSON.stringify loses its typed arrays",
    ],
  ];
  for (const [label, corrupt, expected] of cases) {
    const state = structuredClone(good);
    corrupt(state);
    let message = "";
    try {
      optimizer.loadStateDict(state);
    } catch (e) {
      message = (e as Error).message;
    }
    if (!message.startsWith("loadStateDict: ") || !message.includes(expected)) {
      throw new Error(`${label}: expected "${expected}", got "${message}"`);
    }
    const after = await optimizer.stateDict();
    assertBitwiseEqual(after.control, good.control, `${label}: control unchanged`);
    for (const [key, entry] of Object.entries(good.moments)) {
      assertBitwiseEqual(after.moments[key].expAvgSq, entry.expAvgSq, `${label}: ${key} unchanged`);
    }
    if (JSON.stringify(after.counters) !== JSON.stringify(good.counters)) {
      throw new Error(`${label}: counters`);
    }
  }
  optimizer.loadStateDict(good);
  optimizer.dispose();
});

Deno.test("a state records its optimizer's options; other options are refused by name unless kept on purpose", async () => {
  const optimizer = trained();
  const state = await optimizer.stateDict();
  const { alignInitialization: _, ...expected } = optimizer.options;
  if (JSON.stringify(state.options) !== JSON.stringify(expected)) {
    throw new Error(`options recorded: ${JSON.stringify(state.options)}`);
  }
  const models = { a: vectorModel("a"), bb: vectorModel("bb") };
  const other = new MultiModelOptimizer({
    models,
    lr: 3e-3,
    adaptiveLr: { window: 3 },
    gradientAccumulationSteps: 2,
    gradientSharing: false,
  });
  const before = await other.stateDict();
  let message = "";
  try {
    other.loadStateDict(state);
  } catch (e) {
    message = (e as Error).message;
  }
  for (
    const part of [
      "loadStateDict: the state was saved by an optimizer with other options",
      "lr 0.001 (this optimizer: 0.003)",
      'gradientSharing {"every":1,"ratio":0.2} (this optimizer: null)',
      "keepCurrentOptions",
    ]
  ) {
    if (!message.includes(part)) throw new Error(`expected "${part}" in "${message}"`);
  }
  if (message.includes("betas") || message.includes("adaptiveLr")) {
    throw new Error(`only what differs: ${message}`);
  }
  const after = await other.stateDict();
  assertBitwiseEqual(after.moments["a/w"].expAvg, before.moments["a/w"].expAvg, "nothing written");
  // Kept on purpose: the moments and counters load, the options stay this optimizer's.
  other.loadStateDict(state, { keepCurrentOptions: true });
  const kept = await other.stateDict();
  assertBitwiseEqual(kept.moments["a/w"].expAvg, state.moments["a/w"].expAvg, "moments loaded");
  if (kept.counters.updates !== state.counters.updates || kept.options!.lr !== 3e-3) {
    throw new Error(`counters ${kept.counters.updates}, lr ${kept.options!.lr}`);
  }
  // A state saved before options were recorded loads as before.
  const { options: _options, ...older } = state;
  other.loadStateDict(older as OptimizerState);
  other.dispose();
  optimizer.dispose();
});

Deno.test("a state saved before decayBiasesAndNorms existed loads as one that decays everything", async () => {
  const optimizer = trained();
  const state = await optimizer.stateDict();
  const { decayBiasesAndNorms: _, ...older } = state.options!;
  const olderState = { ...state, options: older } as OptimizerState;
  optimizer.loadStateDict(olderState);
  optimizer.dispose();
  const exempting = new MultiModelOptimizer({
    models: { a: vectorModel("a"), bb: vectorModel("bb") },
    adaptiveLr: { window: 3 },
    gradientAccumulationSteps: 2,
    decayBiasesAndNorms: false,
  });
  let message = "";
  try {
    exempting.loadStateDict(olderState);
  } catch (e) {
    message = (e as Error).message;
  }
  if (!message.includes("decayBiasesAndNorms true (this optimizer: false)")) throw new Error(message);
  exempting.dispose();
});

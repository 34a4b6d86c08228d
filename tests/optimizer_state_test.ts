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

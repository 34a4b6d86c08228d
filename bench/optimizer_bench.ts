/**
 * The fused multi-model step over three models, against the AdamW memory floor of 28 bytes per
 * parameter (read p, g, m, v; write p, m, v), at 1, 10 and 100 M parameters.
 */
import { traceDispatches } from "../engine/recorder.ts";
import { ParameterSet } from "../models/parameters.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { benchGpu } from "./harness.ts";

/** Three models of `total` parameters together, each 12 layers of two weight matrices and two biases. */
function models(total: number): Record<string, { parameterSet: ParameterSet }> {
  const width = Math.floor(Math.sqrt(total / 3 / 24));
  const out: Record<string, { parameterSet: ParameterSet }> = {};
  for (const name of ["bert", "gpt2", "roberta"]) {
    const set = new ParameterSet(name);
    for (let layer = 0; layer < 12; layer++) {
      const at = { site: "ffn", layer, layerCount: 12, layout: "out_in" as const };
      set.declare({
        ...at,
        role: "ffn_in",
        kind: "weight",
        name: `${layer}.in.weight`,
        shape: [width, width],
      }, {
        kind: "zeros",
      });
      set.declare({
        ...at,
        role: "ffn_out",
        kind: "weight",
        name: `${layer}.out.weight`,
        shape: [width, width],
      }, {
        kind: "zeros",
      });
      set.declare({
        ...at,
        role: "ffn_in",
        kind: "bias",
        name: `${layer}.in.bias`,
        shape: [width],
        layout: "vector",
      }, {
        kind: "zeros",
      });
      set.declare({
        ...at,
        role: "ffn_out",
        kind: "bias",
        name: `${layer}.out.bias`,
        shape: [width],
        layout: "vector",
      }, {
        kind: "zeros",
      });
    }
    set.allocate(0);
    out[name] = { parameterSet: set };
  }
  return out;
}

// 100 M parameters exceed one storage binding of a software adapter (128 MiB): the update then runs in windows.
for (const total of [1e6, 1e7, 1e8]) {
  const label = `${total / 1e6}M parameters over three models`;
  for (const mechanisms of ["AdamW only", "sharing + sync + adaptive"] as const) {
    let optimizer: MultiModelOptimizer;
    let count = 0;
    benchGpu({
      name: `step, ${label}, ${mechanisms}`,
      group: label,
      bytes: 28 * total,
      reps: total >= 1e7 ? 3 : 20,
      setup() {
        const all = mechanisms === "AdamW only";
        const built = models(total);
        count = Object.values(built).reduce((s, m) => s + m.parameterSet.count, 0);
        optimizer = new MultiModelOptimizer({
          models: built,
          gradientSharing: all ? false : { every: 1 },
          parameterSync: all ? false : { every: 1 },
          adaptiveLr: all ? false : { window: 4 },
        });
        const { dispatches } = traceDispatches(() => {
          optimizer.logMetrics({ bert: 1, gpt2: 1, roberta: 1 });
          optimizer.step();
        });
        console.log(`${label}, ${mechanisms}: ${count} values, ${dispatches.length} dispatches per step`);
      },
      run() {
        optimizer.step();
      },
    });
  }
}

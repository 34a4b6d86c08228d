/**
 * `deno task scale [--steps N] [--batch B] [--length T] [--max-buffer BYTES] [--small]`: the seed's
 * scenario at its real size. Builds bert-base (masked LM), gpt2 (causal LM) and roberta-base (masked
 * LM) at their Hugging Face sizes, prints what training them takes (estimateMemory), trains them
 * jointly with one MultiModelOptimizer for a few steps and prints each step's losses and time, whether
 * every model's parameters changed, and the peak memory (the process's resident set and the bytes held
 * in GPU buffers). `--max-buffer` lowers the adapter's largest buffer (a browser's 256 MiB, say), so
 * that the joint arena and its moments span several buffers.
 *
 * First it checks agreement at a size where all paths fit: the same three families, shrunk, trained
 * for the same steps with the adapter's limits, again with a forced 1 MiB binding limit (the joint
 * arena, about 2 MB, and the optimizer's moments then run in windows; at this size no activation or
 * single parameter exceeds 1 MiB, so activation windows are checked by tests/*_windows_test.ts instead),
 * and again with 1 MiB buffers as well (the joint arena then spans several buffers); losses and
 * parameters must be bit-identical.
 * `--small` runs only that check. On a software adapter the memory budget is the machine's available
 * memory, so a configuration that cannot fit stops with what it needs and has.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import type { DeviceProfile } from "../engine/device.ts";
import { formatBinary, poolStats, setMemoryBudget } from "../engine/pool.ts";
import { readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { estimateMemory } from "../models/memory.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { parseCommand, positiveInteger } from "./args.ts";
import { openGpuOrExit } from "../engine/start.ts";

const MODELS: { name: string; family: ModelFamily; task: Task }[] = [
  { name: "bert", family: "bert", task: "masked-lm" },
  { name: "gpt2", family: "gpt2", task: "causal-lm" },
  { name: "roberta", family: "roberta", task: "masked-lm" },
];

/** The shrunk size of the agreement check: everything fits one binding, and 1 MiB forces windows. */
const SMALL = {
  vocabSize: 1000,
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  intermediateSize: 256,
  maxPositions: 64,
};

/** What one run reports. */
interface RunResult {
  losses: number[][];
  /** Every parameter's final values (read only when asked: at full size they would double the memory). */
  parameters: Float32Array[];
  changed: boolean[];
  seconds: number[];
  /** Buffers the joint arena's values take. */
  chunks: number;
}

function buildModels(small: boolean): Record<string, TransformerModel> {
  const models: Record<string, TransformerModel> = {};
  for (const { name, family, task } of MODELS) {
    // Dropout off: the agreement check compares two runs element by element.
    const config = modelConfig(family, {
      ...(small ? SMALL : {}),
      hiddenDropout: 0,
      embeddingDropout: 0,
      attentionDropout: 0,
    });
    models[name] = new TransformerModel(config, { task, name, seed: 1 });
  }
  return models;
}

function tokens(batch: number, length: number, vocab: number, step: number): Int32Array {
  // Ids from 3 avoid every family's special tokens; different per step so the two steps differ.
  return Int32Array.from(
    { length: batch * length },
    (_, i) => 3 + ((i + 1) * 7919 + step * 104729) % (vocab - 3),
  );
}

/** Trains the models jointly for `steps` steps; losses and parameters are read back between steps only. */
async function train(
  models: Record<string, TransformerModel>,
  steps: number,
  batch: number,
  length: number,
  log: (line: string) => void,
  readParameters = false,
): Promise<RunResult> {
  // Sharing and sync on every update, so the mixing of groups across the arena runs in every step.
  const optimizer = new MultiModelOptimizer({
    models,
    lr: 1e-4,
    schedule: "constant",
    adaptiveLr: false,
    gradientSharing: { every: 1 },
    parameterSync: { every: 1 },
  });
  const chunks = Object.values(models)[0].parameterSet.arena.chunks.length;
  log(
    `optimizer built: GPU buffers ${formatBinary(poolStats().liveBytes)} live, peak so far ${
      formatBinary(poolStats().peakLiveBytes)
    }`,
  );
  // Whether training changed a model is read on its smallest parameter: reading the embedding table
  // back would keep readback buffers as large as it (256 MiB over the three models) in the peak.
  const probes = Object.values(models).map((m) =>
    m.parameters.reduce((small, p) => p.value.size < small.value.size ? p : small).value
  );
  const firstValues = await readAll(probes);
  const losses: number[][] = [];
  const seconds: number[] = [];
  for (let step = 0; step < steps; step++) {
    const started = performance.now();
    const stepLosses = tidy(() => {
      optimizer.zeroGrad();
      const out: Record<string, Tensor> = {};
      for (const [name, model] of Object.entries(models)) {
        const ids = tensor(tokens(batch, length, model.config.vocabSize, step), { shape: [batch, length] });
        const loss = model.forward({ inputIds: ids, labels: ids }).loss!;
        loss.backward();
        out[name] = loss;
      }
      optimizer.logMetrics(out);
      optimizer.step();
      return Object.values(out);
    });
    const values = (await readAll(stepLosses)).map((v) => v[0]);
    for (const t of stepLosses) t.dispose();
    seconds.push((performance.now() - started) / 1000);
    losses.push(values);
    log(
      `step ${step + 1}: ${
        Object.keys(models).map((n, i) => `${n} loss ${values[i].toFixed(4)}`).join(", ")
      } (${seconds.at(-1)!.toFixed(1)} s; GPU buffers ${formatBinary(poolStats().liveBytes)} live, ${
        formatBinary(poolStats().pooledBytes)
      } of them the activation pool; peak so far ${formatBinary(poolStats().peakLiveBytes)})`,
    );
  }
  const parameters = readParameters
    ? (await readAll(Object.values(models).flatMap((m) => m.parameters.map((p) => p.value))))
      .map((v) => v as Float32Array)
    : [];
  const lastValues = await readAll(probes);
  const changed = lastValues.map((v, i) => v.some((x, j) => x !== firstValues[i][j]));
  optimizer.dispose();
  for (const model of Object.values(models)) model.dispose();
  return { losses, parameters, changed, seconds, chunks };
}

type Limits = Partial<Pick<DeviceProfile, "maxStorageBindingBytes" | "maxBufferBytes">>;

/** Runs `fn` with the adapter's storage-binding and buffer limits replaced (the windowed and chunked paths). */
async function withLimits<T>(limits: Limits, fn: () => Promise<T>): Promise<T> {
  const profile = gpu().profile as { -readonly [K in keyof DeviceProfile]: DeviceProfile[K] };
  const saved = { ...profile };
  Object.assign(profile, limits);
  try {
    return await fn();
  } finally {
    Object.assign(profile, saved);
  }
}

async function agreement(steps: number): Promise<boolean> {
  console.log(
    `agreement at a small size (${JSON.stringify(SMALL)}), ${steps} step${
      steps === 1 ? "" : "s"
    }, batch 2 x 16:`,
  );
  const quiet = () => {};
  const whole = await train(buildModels(true), steps, 2, 16, quiet, true);
  console.log(`  losses ${whole.losses.map((l) => l.map((v) => v.toFixed(4)).join("/")).join(", ")}`);
  let agreed = whole.losses.flat().every(Number.isFinite);
  const cases: [string, Limits][] = [
    ["1 MiB binding limit", { maxStorageBindingBytes: 1 << 20 }],
    ["1 MiB binding and buffer limits", { maxStorageBindingBytes: 1 << 20, maxBufferBytes: 1 << 20 }],
  ];
  for (const [label, limits] of cases) {
    const other = await withLimits(limits, () => train(buildModels(true), steps, 2, 16, quiet, true));
    const sameLosses = whole.losses.flat().every((v, i) => Object.is(v, other.losses.flat()[i]));
    const sameParameters = whole.parameters.every((p, i) =>
      p.every((v, j) => Object.is(v, other.parameters[i][j]))
    );
    console.log(
      `  ${label} vs the adapter's (${other.chunks} arena buffers): losses ${
        sameLosses ? "bit-identical" : "DIFFER"
      }, parameters ${sameParameters ? "bit-identical" : "DIFFER"}`,
    );
    agreed &&= sameLosses && sameParameters;
  }
  return agreed;
}

async function main(): Promise<void> {
  const { flags } = parseCommand({
    name: "scale",
    operands: "",
    positionals: [0, 0],
    summary: "Trains bert-base, gpt2 and roberta-base jointly at their Hugging Face sizes for a few steps, " +
      "printing losses, time and peak memory, after checking windowed against whole bindings at a small size.",
    flags: {
      steps: { type: "string", value: "N", default: "2", description: "joint training steps" },
      batch: { type: "string", value: "N", default: "1", description: "sequences per batch" },
      length: { type: "string", value: "N", default: "16", description: "tokens per sequence" },
      "max-buffer": {
        type: "string",
        value: "BYTES",
        default: "0",
        description: "largest buffer at full size (0: the adapter's maxBufferSize)",
      },
      small: { type: "boolean", default: false, description: "run only the small agreement check" },
    },
  });
  const steps = positiveInteger("scale", "steps", flags.steps);
  const batch = positiveInteger("scale", "batch", flags.batch);
  const length = positiveInteger("scale", "length", flags.length);
  const maxBuffer = flags["max-buffer"] === "0"
    ? 0
    : positiveInteger("scale", "max-buffer", flags["max-buffer"]);
  await openGpuOrExit();
  const profile = gpu().profile;
  // A software adapter allocates from the machine's memory, so what is available is its budget.
  // Deno 2 reports it in bytes (Deno 1 gave kilobytes).
  if (profile.isSoftware) setMemoryBudget(Deno.systemMemoryInfo().available);
  // openGpuOrExit named the adapter; its limits decide the windows and chunks.
  console.log(
    `limits: maxStorageBufferBindingSize ${formatBinary(profile.maxStorageBindingBytes)}, ` +
      `maxBufferSize ${formatBinary(profile.maxBufferBytes)}`,
  );
  const agreed = await agreement(steps);
  if (flags.small) Deno.exit(agreed ? 0 : 1);
  const limits: Limits = maxBuffer > 0 ? { maxBufferBytes: maxBuffer } : {};
  if (maxBuffer > 0) console.log(`full size with maxBufferSize lowered to ${formatBinary(maxBuffer)}`);
  let agreedAndTrained = false;
  try {
    agreedAndTrained = await withLimits(limits, () => fullSize(steps, batch, length));
  } catch (error) {
    // A buffer limit below the models' largest tensor, or the memory budget: one line, no stack trace.
    console.error(`scale: ${(error as Error).message}`);
  }
  Deno.exit(agreed && agreedAndTrained ? 0 : 1);
}

/** Builds and trains the base models; true when every loss was finite and every model's parameters changed. */
async function fullSize(steps: number, batch: number, length: number): Promise<boolean> {
  let peakRss = Deno.memoryUsage().rss;
  const sampler = setInterval(() => peakRss = Math.max(peakRss, Deno.memoryUsage().rss), 50);
  const models = buildModels(false);
  const estimate = estimateMemory(models, { batch, length });
  for (const [name, m] of Object.entries(estimate.models)) {
    const count = models[name].parameterSet.count;
    console.log(
      `${name}: ${(count / 1e6).toFixed(1)} M parameters; estimate: parameters ${
        formatBinary(m.parameters)
      }, ` +
        `gradients ${formatBinary(m.gradients)}, AdamW ${formatBinary(m.optimizerState)}, ` +
        `activations ${formatBinary(m.activations + m.backwardPeak)}`,
    );
  }
  console.log(`estimated total: ${formatBinary(estimate.total.total)}`);
  const started = performance.now();
  const result = await train(models, steps, batch, length, console.log);
  clearInterval(sampler);
  const finite = result.losses.flat().every(Number.isFinite);
  console.log(
    `joint arena in ${result.chunks} buffer(s); parameters updated: ${
      MODELS.map((m, i) => `${m.name} ${result.changed[i] ? "yes" : "NO"}`).join(", ")
    }; losses ${finite ? "finite" : "NOT FINITE"}`,
  );
  console.log(
    `peak memory: ${formatBinary(peakRss)} resident (Deno.memoryUsage().rss, sampled every 50 ms), ` +
      `${formatBinary(poolStats().peakLiveBytes)} held in GPU buffers at most; ` +
      `total ${((performance.now() - started) / 1000).toFixed(0)} s`,
  );
  return finite && result.changed.every((c) => c);
}

if (import.meta.main) await main();

/**
 * Checkpoint files: a corrupt checkpoint is refused before anything is written, and a save that
 * fails after any file operation leaves the previous or the new checkpoint loadable.
 */
import { kernelSeedState, manualSeed, setKernelSeedState } from "../engine/random.ts";
import { readAll, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { serializeSafetensors } from "../models/safetensors.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { checkpointFiles, loadCheckpoint, saveCheckpoint } from "../optim/checkpoint.ts";
import { MultiModelOptimizer, type OptimizerState } from "../optim/multimodel.ts";
import { setup } from "./helpers.ts";

await setup();

const SIZE = {
  hiddenSize: 16,
  numHeads: 2,
  intermediateSize: 32,
  vocabSize: 30,
  maxPositions: 12,
  numLayers: 1,
};
const OPTIONS = { lr: 1e-2, gradientAccumulationSteps: 2, adaptiveLr: { window: 3 } };

interface Run {
  models: Record<string, TransformerModel>;
  optimizer: MultiModelOptimizer;
}

function build(seed: number): Run {
  const models = {
    bert: new TransformerModel(modelConfig("bert", { ...SIZE, hiddenDropout: 0.1 }), {
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
  return { models, optimizer: new MultiModelOptimizer({ models, ...OPTIONS }) };
}

/** Frees a run: the optimizer hands the parameters back to the models, which then free them. */
function dispose({ models, optimizer }: Run): void {
  optimizer.dispose();
  Object.values(models).forEach((m) => m.dispose());
}

function trainStep({ models, optimizer }: Run, step: number): void {
  tidy(() => {
    const inputIds = tensor(Int32Array.from({ length: 16 }, (_, i) => 3 + ((i * 7 + step * 5) % 25)), {
      shape: [2, 8],
    });
    const labels = tensor(Int32Array.from({ length: 2 }, (_, i) => (i + step) % 2));
    optimizer.zeroGrad();
    const losses = Object.fromEntries(
      Object.entries(models).map(([name, model]) => [name, model.forward({ inputIds, labels }).loss!]),
    );
    Object.values(losses).forEach((loss) => loss.backward());
    optimizer.logMetrics(losses);
    optimizer.step();
  });
}

/** Everything a checkpoint restores: parameters, the optimizer's state and the GPU random state. */
interface Snapshot {
  parameters: Float32Array[];
  state: OptimizerState;
  random: { base: number; counter: number };
}

async function snapshot({ models, optimizer }: Run): Promise<Snapshot> {
  const values = await readAll(Object.values(models).flatMap((m) => m.parameters.map((p) => p.value)));
  return {
    parameters: values as Float32Array[],
    state: await optimizer.stateDict(),
    random: kernelSeedState(),
  };
}

function sameBits(a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined): boolean {
  if (!a || !b) return a === b;
  return a.length === b.length && Array.prototype.every.call(a, (v: number, i: number) => Object.is(v, b[i]));
}

/** The first difference between two snapshots, bit for bit, or null. */
function difference(a: Snapshot, b: Snapshot): string | null {
  const p = a.parameters.findIndex((values, i) => !sameBits(values, b.parameters[i]));
  if (p >= 0) return `parameter ${p}`;
  if (JSON.stringify(a.random) !== JSON.stringify(b.random)) return "random state";
  if (JSON.stringify(a.state.counters) !== JSON.stringify(b.state.counters)) return "counters";
  if (!sameBits(a.state.control, b.state.control)) return "control";
  if (!sameBits(a.state.lossRing, b.state.lossRing)) return "loss ring";
  if (Object.keys(a.state.moments).join() !== Object.keys(b.state.moments).join()) return "moment keys";
  for (const [key, m] of Object.entries(a.state.moments)) {
    const other = b.state.moments[key];
    if (!sameBits(m.expAvg, other.expAvg) || !sameBits(m.expAvgSq, other.expAvgSq)) {
      return `moments of ${key}`;
    }
    if (!sameBits(m.pendingGrad, other.pendingGrad)) return `pending gradient of ${key}`;
  }
  return null;
}

async function copyFolder(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) await copyFolder(`${from}/${entry.name}`, `${to}/${entry.name}`);
    else await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

async function listFolder(folder: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(folder)) names.push(entry.name);
  return names.sort();
}

async function editJson(path: string, edit: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await Deno.readTextFile(path));
  edit(json);
  await Deno.writeTextFile(path, JSON.stringify(json));
}

async function editTensors(
  path: string,
  edit: (tensors: Map<string, { shape: number[]; data: Float32Array | Int32Array }>) => void,
): Promise<void> {
  const { tensors, metadata } = await readSafetensors(path);
  edit(tensors);
  await Deno.writeFile(path, serializeSafetensors(tensors, metadata));
}

async function rejection(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("nothing was thrown");
}

Deno.test("a corrupt checkpoint is refused, naming the file and field, and changes nothing", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  manualSeed(5);
  const source = build(1);
  for (let step = 0; step < 3; step++) trainStep(source, step); // an accumulation cycle is open
  const saved = await snapshot(source);
  await saveCheckpoint(`${dir}/good`, source.optimizer, source.models);

  manualSeed(77);
  const target = build(50);
  for (let step = 10; step < 12; step++) trainStep(target, step);
  const before = await snapshot(target);
  const bertQuery = "bert/bert.encoder.layer.0.attention.self.query.weight";
  const json = (edit: (j: Record<string, unknown>) => void) => (f: string) =>
    editJson(`${f}/optimizer.json`, edit);
  const counters = (edit: (c: Record<string, unknown>) => void) =>
    json((j) => edit(j.counters as Record<string, unknown>));
  const cases: [string, (folder: string) => Promise<void>, string][] = [
    ["optimizer.json", json((j) => delete j.random), 'field "random" is missing'],
    [
      "optimizer.json",
      json((j) => (j.random = { base: -1, counter: 0 })),
      'field "random.base" must be an integer',
    ],
    ["optimizer.json", json((j) => (j.random = { base: 1, counter: "2" })), 'field "random.counter" must be'],
    [
      "optimizer.json",
      json((j) => (j.format = "other/2")),
      'field "format" must be "multimodel-optimizer/1"',
    ],
    ["optimizer.json", json((j) => (j.models = "bert")), 'field "models" must be an array'],
    ["optimizer.json", json((j) => (j.extra = 1)), 'field "extra" is not part of the format'],
    [
      "optimizer.json",
      counters((c) => delete c.gradientsStale),
      'field "counters.gradientsStale" is missing',
    ],
    [
      "optimizer.json",
      counters((c) => (c.gradientsStale = 0)),
      'field "counters.gradientsStale" must be true',
    ],
    ["optimizer.json", counters((c) => (c.updates = 1.5)), 'field "counters.updates" must be an integer'],
    [
      "optimizer.json",
      counters((c) => (c.microBatches = 2)),
      'field "counters.microBatches" must be an integer in [0, 1]',
    ],
    [
      "optimizer.json",
      counters((c) => (c.ringPositions = [0])),
      'field "counters.ringPositions" must have 2 entries',
    ],
    [
      "optimizer.json",
      counters((c) => (c.ringCounts = [3, -1])),
      'field "counters.ringCounts[1]" must be an integer',
    ],
    ["optimizer.json", counters((c) => (c.ringPositions = [1, 1])), "counters.ringPositions[0] is 1"],
    [
      "optimizer.json",
      json((j) => delete (j.momentShapes as Record<string, unknown>)[bertQuery]),
      `"momentShapes.${bertQuery}" is missing`,
    ],
    [
      "optimizer.json",
      json((j) => ((j.momentShapes as Record<string, unknown>)[bertQuery] = [16, 15])),
      `"momentShapes.${bertQuery}" must be the parameter's shape [16,16]`,
    ],
    ["optimizer.json", (f) => Deno.writeTextFile(`${f}/optimizer.json`, '{"format": '), "not valid JSON"],
    ["optimizer.json", (f) => Deno.remove(`${f}/optimizer.json`), "cannot read"],
    [
      "optimizer.safetensors",
      (f) => editTensors(`${f}/optimizer.safetensors`, (t) => t.delete(`pending_grad/${bertQuery}`)),
      `missing "pending_grad/${bertQuery}"`,
    ],
    [
      "optimizer.safetensors",
      (f) =>
        editTensors(
          `${f}/optimizer.safetensors`,
          (t) => t.set("control", { shape: [3], data: new Float32Array(3) }),
        ),
      "control table has the wrong size",
    ],
    [
      "optimizer.safetensors",
      (f) =>
        editTensors(`${f}/optimizer.safetensors`, (t) => t.get(`exp_avg_sq/${bertQuery}`)!.data.fill(-1)),
      `exp_avg_sq of "${bertQuery}" holds -1`,
    ],
    [
      "optimizer.safetensors",
      (f) =>
        editTensors(
          `${f}/optimizer.safetensors`,
          (t) => t.set("loss_ring", { shape: [5], data: new Float32Array(5) }),
        ),
      "loss ring has 5 values; 2 models with this optimizer's loss window of 3 take 6",
    ],
    [
      "optimizer.safetensors",
      async (f) => await Deno.truncate(`${f}/optimizer.safetensors`, 100),
      "optimizer.safetensors",
    ],
    [
      "models/gpt2/model.safetensors",
      (f) => editTensors(`${f}/models/gpt2/model.safetensors`, (t) => t.delete("score.weight")),
      'missing "score.weight"',
    ],
    [
      "models/bert/config.json",
      (f) => editJson(`${f}/models/bert/config.json`, (j) => (j.num_hidden_layers = 2)),
      'field "num_hidden_layers" is 2, the model "bert" has 1',
    ],
    [
      "models/bert/config.json",
      (f) => editJson(`${f}/models/bert/config.json`, (j) => (j.layer_norm_eps = 0)),
      'field "layer_norm_eps" must be positive',
    ],
    [
      "models/gpt2/config.json",
      (f) => Deno.writeTextFile(`${f}/models/gpt2/config.json`, "{"),
      "not valid JSON",
    ],
  ];
  for (const [i, [file, corrupt, fragment]] of cases.entries()) {
    const folder = `${dir}/case${i}`;
    await copyFolder(`${dir}/good`, folder);
    await corrupt(folder);
    const message = await rejection(() => loadCheckpoint(folder, target.optimizer, target.models));
    // Errors from the optimizer's own checks name the checkpoint folder rather than one file.
    const where = message.includes(`${folder}/${file}`) || message.startsWith(`${folder}: loadStateDict`);
    if (!where || !message.includes(fragment)) {
      throw new Error(`case ${i} (${file}, ${fragment}): "${message}"`);
    }
    const changed = difference(before, await snapshot(target));
    if (changed) throw new Error(`case ${i} (${fragment}): the ${changed} changed`);
  }
  // Models of the same names that another optimizer trains: their weights beside these moments would resume wrong.
  for (
    const [label, attempt] of [
      ["save", () => saveCheckpoint(`${dir}/stranger`, source.optimizer, target.models)],
      ["load", () => loadCheckpoint(`${dir}/good`, target.optimizer, source.models)],
    ] as const
  ) {
    const message = await rejection(attempt);
    if (!message.includes('model "bert" is not the one this optimizer trains')) {
      throw new Error(`${label} with another optimizer's models: "${message}"`);
    }
  }
  if (await checkpointFiles.stat(`${dir}/stranger`)) throw new Error("a refused save wrote a folder");
  if (difference(before, await snapshot(target))) throw new Error("a refused load changed the target");
  // Non-finite parameters (a model its own update broke, or a corrupt file) load, and are said.
  await copyFolder(`${dir}/good`, `${dir}/nan`);
  await editTensors(`${dir}/nan/models/bert/model.safetensors`, (t) => {
    t.get("bert.encoder.layer.0.attention.self.query.weight")!.data[3] = NaN;
  });
  const warned: string[] = [];
  const warn = console.warn;
  console.warn = (line: string) => warned.push(line);
  try {
    await loadCheckpoint(`${dir}/nan`, target.optimizer, target.models);
  } finally {
    console.warn = warn;
  }
  if (
    warned.length !== 1 ||
    !warned[0].includes('model "bert" holds 1 non-finite parameter value (the first in')
  ) {
    throw new Error(`warnings: ${warned.join(" | ")}`);
  }
  await loadCheckpoint(`${dir}/good`, target.optimizer, target.models);
  const loaded = difference(saved, await snapshot(target));
  if (loaded) throw new Error(`the valid checkpoint restored a different ${loaded}`);
  [source, target].forEach(dispose);
  await Deno.remove(dir, { recursive: true });
});

/**
 * Makes the file operations of checkpoints fail after the first `completed` ones: `crash` makes
 * every later one fail, like a process that died; otherwise only the next one fails. Returns a
 * function that counts the operations and restores them.
 */
function injectFailure(completed: number, crash: boolean): () => number {
  const files = checkpointFiles as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const originals = { ...files };
  let count = 0;
  for (const [name, original] of Object.entries(originals)) {
    files[name] = async (...args: unknown[]) => {
      if (count++ === completed || (crash && count > completed)) {
        throw new Error(`injected failure of ${name}`);
      }
      return await original(...args);
    };
  }
  return () => {
    Object.assign(files, originals);
    return count;
  };
}

Deno.test("a save syncs every folder it creates, deepest first, before the rename publishes them", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  manualSeed(4);
  const run = build(3);
  trainStep(run, 0);
  const files = checkpointFiles as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const originals = { ...files };
  const calls: string[] = [];
  for (const name of ["mkdir", "syncFolder", "rename"]) {
    files[name] = (...args: unknown[]) => {
      calls.push(`${name} ${args[0]}`);
      return originals[name](...args);
    };
  }
  try {
    await saveCheckpoint(`${dir}/ckpt`, run.optimizer, run.models);
  } finally {
    Object.assign(files, originals);
  }
  const temporary = calls.find((c) => c.startsWith("mkdir "))!.slice(6).replace(/\/models\/.*$|\/?$/, "");
  const publish = calls.indexOf(`rename ${temporary}`);
  const synced = calls.slice(0, publish).filter((c) => c.startsWith("syncFolder ")).map((c) => c.slice(11));
  const expected = [
    ...Object.keys(run.models).map((name) => `${temporary}/models/${name}`),
    `${temporary}/models`,
    temporary,
  ];
  if (publish < 0 || synced.join() !== expected.join()) {
    throw new Error(`synced before the rename: [${synced}], expected [${expected}]`);
  }
  dispose(run);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a save that fails after any file operation leaves the previous or the new checkpoint loadable", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  manualSeed(3);
  const run = build(2);
  trainStep(run, 0);
  const previous = await snapshot(run);
  await saveCheckpoint(`${dir}/previous`, run.optimizer, run.models);
  for (let step = 1; step < 4; step++) trainStep(run, step);
  const next = await snapshot(run);
  const target = build(9);
  const prepare = async (parent: string) => {
    // A previous checkpoint, and the leftovers of a save that died just before its cleanup.
    await copyFolder(`${dir}/previous`, `${parent}/ckpt`);
    await copyFolder(`${dir}/previous`, `${parent}/ckpt.old-${crypto.randomUUID()}`);
    await Deno.mkdir(`${parent}/ckpt.tmp-${crypto.randomUUID()}/models`, { recursive: true });
  };
  await prepare(`${dir}/count`);
  const restore = injectFailure(Infinity, false);
  await saveCheckpoint(`${dir}/count/ckpt`, run.optimizer, run.models);
  const operations = restore();
  const outcomes = new Set<string>();
  for (const crash of [true, false]) {
    for (let completed = 0; completed < operations; completed++) {
      const parent = `${dir}/${crash ? "crash" : "error"}${completed}`;
      await prepare(parent);
      setKernelSeedState(next.random);
      const restore = injectFailure(completed, crash);
      const message = await rejection(() => saveCheckpoint(`${parent}/ckpt`, run.optimizer, run.models))
        .finally(
          restore,
        );
      if (!message.startsWith("injected failure")) throw new Error(`after ${completed}: ${message}`);
      await loadCheckpoint(`${parent}/ckpt`, target.optimizer, target.models);
      const loaded = await snapshot(target);
      const which = difference(previous, loaded) === null
        ? "previous"
        : difference(next, loaded) === null
        ? "new"
        : "";
      if (!which) {
        throw new Error(`${crash ? "crash" : "error"} after ${completed} operations: neither checkpoint`);
      }
      outcomes.add(which);
      setKernelSeedState(next.random);
      await saveCheckpoint(`${parent}/ckpt/`, run.optimizer, run.models);
      const left = await listFolder(parent);
      if (left.join() !== "ckpt") throw new Error(`after ${completed} operations and a save: ${left}`);
      await loadCheckpoint(`${parent}/ckpt`, target.optimizer, target.models);
      if (difference(next, await snapshot(target))) {
        throw new Error(`after ${completed}: the save did not restore`);
      }
    }
  }
  if (outcomes.size !== 2) throw new Error(`only ${[...outcomes]} checkpoints were seen`);
  [run, target].forEach(dispose);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a save refuses to replace a file or a foreign folder, and accepts an empty folder and a trailing /", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  const run = build(4);
  await Deno.writeTextFile(`${dir}/notes`, "precious");
  await Deno.mkdir(`${dir}/photos`);
  await Deno.writeTextFile(`${dir}/photos/a.jpg`, "jpeg");
  for (const [path, what] of [[`${dir}/notes`, "not a folder"], [`${dir}/photos/`, "a folder without"]]) {
    const message = await rejection(() => saveCheckpoint(path, run.optimizer, run.models));
    const fragment = `${path.replace(/\/$/, "")} exists and is not a checkpoint (${what}`;
    if (!message.includes(fragment)) throw new Error(message);
  }
  if ((await Deno.readTextFile(`${dir}/notes`)) !== "precious") throw new Error("the file changed");
  if ((await listFolder(`${dir}/photos`)).join() !== "a.jpg") throw new Error("the folder changed");
  await Deno.mkdir(`${dir}/empty`);
  await saveCheckpoint(`${dir}/empty`, run.optimizer, run.models);
  await saveCheckpoint(`${dir}/slash/`, run.optimizer, run.models);
  trainStep(run, 0);
  const saved = await snapshot(run);
  await saveCheckpoint(`${dir}/slash/`, run.optimizer, run.models);
  if ((await listFolder(dir)).join() !== "empty,notes,photos,slash") {
    throw new Error(`${await listFolder(dir)}`);
  }
  const target = build(5);
  await loadCheckpoint(`${dir}/slash/`, target.optimizer, target.models);
  const changed = difference(saved, await snapshot(target));
  if (changed) throw new Error(`the ${changed} differs`);
  [run, target].forEach(dispose);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a save stopped between its two renames leaves a checkpoint that loads, and the next save cleans up", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp" });
  const run = build(6);
  trainStep(run, 0);
  const saved = await snapshot(run);
  await saveCheckpoint(`${dir}/ckpt`, run.optimizer, run.models);
  // What a crash after renaming the checkpoint away, before renaming the new one in, leaves.
  await Deno.rename(`${dir}/ckpt`, `${dir}/ckpt.old-${crypto.randomUUID()}`);
  await Deno.mkdir(`${dir}/ckpt.tmp-${crypto.randomUUID()}`);
  const target = build(7);
  await loadCheckpoint(`${dir}/ckpt`, target.optimizer, target.models);
  const changed = difference(saved, await snapshot(target));
  if (changed) throw new Error(`the ${changed} differs`);
  await saveCheckpoint(`${dir}/ckpt`, run.optimizer, run.models);
  if ((await listFolder(dir)).join() !== "ckpt") throw new Error(`left: ${await listFolder(dir)}`);
  [run, target].forEach(dispose);
  await Deno.remove(dir, { recursive: true });
});

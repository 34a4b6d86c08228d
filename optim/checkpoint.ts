/**
 * Training checkpoints: every model as a Hugging Face folder (`models/<name>/config.json` and
 * `model.safetensors`), the optimizer's tensors (moments, AMSGrad's maximum of the second, and the
 * gradients of an open accumulation cycle) in `optimizer.safetensors` and the rest (format, model names, counters, the GPU random
 * state, the moments' shapes) in `optimizer.json`. Resuming reproduces the following steps bit for
 * bit.
 *
 * Saving is crash-safe at every point. Everything is serialized in memory first; the checkpoint is
 * written into `<folder>.tmp-<uuid>` (each file, then each new folder, synced); the checkpoint at `<folder>`, if any, is
 * renamed to `<folder>.old-<uuid>`; the new one is renamed to `<folder>` (and the parent folder
 * synced); and only then are the old one and the leftovers of interrupted saves (`<folder>.tmp-*`,
 * `<folder>.old-*`) removed. A crash
 * before the second rename leaves the previous checkpoint at `<folder>` or, between the two
 * renames, as the only complete `<folder>.old-*`, where {@linkcode loadCheckpoint} finds it (stale
 * `.old-*` folders are removed before a checkpoint is renamed away, so there is never more than
 * one). Saving refuses to replace anything but a checkpoint or an empty folder.
 *
 * Loading reads and checks every file (`optimizer.json` against its schema, each `config.json` and
 * each tensor against the model or optimizer it is loaded into) before it writes anything, so a bad
 * checkpoint changes no parameter, no optimizer state and no random state.
 *
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { kernelSeedState, setKernelSeedState } from "../engine/random.ts";
import { checkWeights, pretrainedContents } from "../models/checkpoint.ts";
import { checkConfigFile } from "../models/pretrained.ts";
import type { TransformerModel } from "../models/model.ts";
import { checkTensorSet, type HostTensor, serializeSafetensors } from "../models/safetensors.ts";
import { inCallOrder, readSafetensors } from "../models/safetensors_file.ts";
import { type Counters, type MultiModelOptimizer, type OptimizerState, STATE_FORMAT } from "./multimodel.ts";
import { checkSavedOptions, type LoadStateOptions, type SavedOptions } from "./state.ts";

const MOMENT_KINDS = ["exp_avg", "exp_avg_sq"] as const;
const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

interface OptimizerJson {
  format: OptimizerState["format"];
  models: string[];
  options?: SavedOptions;
  counters: Counters;
  random: { base: number; counter: number };
  momentShapes: Record<string, number[]>;
}

/**
 * The file operations of saving and of finding a checkpoint, in one object so that tests can make
 * any of them fail. Internal: not part of the public API (mod.ts does not export it).
 *
 * @internal
 */
export const checkpointFiles = {
  /** Creates a folder and its parents. */
  mkdir: (path: string): Promise<void> => Deno.mkdir(path, { recursive: true }),
  /** Writes a new file and syncs its data to disk. */
  async writeFile(path: string, data: Uint8Array): Promise<void> {
    const file = await Deno.open(path, { write: true, createNew: true });
    try {
      for (let written = 0; written < data.length;) written += await file.write(data.subarray(written));
      await file.syncData();
    } finally {
      file.close();
    }
  },
  /** Flushes a folder's entries (renames into it) to disk; skipped on Windows, which cannot open folders. */
  async syncFolder(path: string): Promise<void> {
    if (Deno.build.os === "windows") return;
    const folder = await Deno.open(path, { read: true });
    try {
      await folder.sync();
    } finally {
      folder.close();
    }
  },
  /** Renames a file or folder. */
  rename: (from: string, to: string): Promise<void> => Deno.rename(from, to),
  /** Removes a file, or a folder with its contents. */
  remove: (path: string): Promise<void> => Deno.remove(path, { recursive: true }),
  /** What is at `path`, or null when nothing is. */
  async stat(path: string): Promise<Deno.FileInfo | null> {
    try {
      return await Deno.stat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  },
  /** The names in a folder; none when the folder does not exist. */
  async readDir(path: string): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(path)) names.push(entry.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return names;
  },
  /** A file's text. */
  readTextFile: (path: string): Promise<string> => Deno.readTextFile(path),
};

/** The absolute path of a checkpoint folder: a trailing `/` or a `..` changes nothing. */
function checkpointPath(folder: string, op: string): string {
  const path = resolve(folder);
  if (dirname(path) === path) throw new Error(`${op}: "${folder}" cannot hold a checkpoint`);
  return path;
}

/** Whether `folder` holds an `optimizer.json` of this format (written last into every checkpoint). */
async function isCheckpoint(folder: string): Promise<boolean> {
  try {
    return JSON.parse(await checkpointFiles.readTextFile(`${folder}/optimizer.json`))?.format ===
      STATE_FORMAT;
  } catch (e) {
    if (
      e instanceof SyntaxError || e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory
    ) {
      return false;
    }
    throw e;
  }
}

/** The `<folder>.tmp-<uuid>` and `<folder>.old-<uuid>` folders that saves leave beside `folder`. */
async function leftovers(folder: string): Promise<{ temporary: string[]; previous: string[] }> {
  const base = basename(folder).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = new RegExp(`^${base}\\.(tmp|old)-${UUID}$`);
  const found = { temporary: [] as string[], previous: [] as string[] };
  for (const name of await checkpointFiles.readDir(dirname(folder))) {
    const match = pattern.exec(name);
    if (match) found[match[1] === "tmp" ? "temporary" : "previous"].push(`${dirname(folder)}/${name}`);
  }
  return found;
}

/** Removes every `.tmp-*` and `.old-*` folder of `folder`. */
async function removeLeftovers(folder: string): Promise<void> {
  const { temporary, previous } = await leftovers(folder);
  for (const path of [...temporary, ...previous]) await checkpointFiles.remove(path);
}

/**
 * Whether `folder` holds a checkpoint ("checkpoint"), nothing ("missing") or an empty folder
 * ("empty"); anything else is an error, so that a save never deletes what it did not write.
 */
async function replaceable(folder: string): Promise<"checkpoint" | "missing" | "empty"> {
  const info = await checkpointFiles.stat(folder);
  if (!info) return "missing";
  if (info.isDirectory) {
    if (await isCheckpoint(folder)) return "checkpoint";
    if ((await checkpointFiles.readDir(folder)).length === 0) return "empty";
  }
  const what = info.isDirectory
    ? `a folder without an optimizer.json of format "${STATE_FORMAT}"`
    : "not a folder";
  throw new Error(`saveCheckpoint: ${folder} exists and is not a checkpoint (${what}); it was left as it is`);
}

/**
 * Every file of a checkpoint, by path inside it, serialized (optimizer.json last): the state at the
 * call, whose reads are all recorded before its first `await`, so a step recorded meanwhile is in none.
 */
async function checkpointContents(
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
): Promise<[string, Uint8Array][]> {
  const random = kernelSeedState();
  const [state, ...modelContents] = await Promise.all([
    optimizer.stateDict(),
    ...optimizer.modelNames.map((name) => pretrainedContents(models[name])),
  ]);
  const text = (value: unknown) => new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n");
  const files: [string, Uint8Array][] = [];
  state.models.forEach((name, m) => {
    const { config, tensors } = modelContents[m];
    files.push([`models/${name}/model.safetensors`, serializeSafetensors(tensors, { format: "pt" })]);
    files.push([`models/${name}/config.json`, text(config)]);
  });
  const tensors: [string, HostTensor][] = [
    ["control", { shape: [state.control.length], data: state.control }],
    ["loss_ring", { shape: [state.lossRing.length], data: state.lossRing }],
  ];
  const momentShapes: Record<string, number[]> = {};
  for (const [key, entry] of Object.entries(state.moments)) {
    momentShapes[key] = entry.shape;
    tensors.push([`exp_avg/${key}`, { shape: entry.shape, data: entry.expAvg }]);
    tensors.push([`exp_avg_sq/${key}`, { shape: entry.shape, data: entry.expAvgSq }]);
    if (entry.maxExpAvgSq) {
      tensors.push([`max_exp_avg_sq/${key}`, { shape: entry.shape, data: entry.maxExpAvgSq }]);
    }
    if (entry.pendingGrad) {
      tensors.push([`pending_grad/${key}`, { shape: entry.shape, data: entry.pendingGrad }]);
    }
  }
  files.push(["optimizer.safetensors", serializeSafetensors(tensors)]);
  const json: OptimizerJson = {
    format: state.format,
    models: state.models,
    options: state.options,
    counters: state.counters,
    random,
    momentShapes,
  };
  files.push(["optimizer.json", text(json)]);
  return files;
}

/**
 * Writes models, optimizer state and the GPU random state into `folder`, crash-safe at every point
 * (see the module docs). What it saves is the state at the call, as a readback reads: training may
 * go on before the promise settles (the state is read through readback buffers as large as it).
 * `folder` must be missing, a checkpoint or an empty folder.
 * `extraFiles` are written with them, by path inside the checkpoint (say, each model's tokenizer
 * beside its config.json, where Hugging Face's `from_pretrained` looks); loading does not read them.
 * Saves into one folder from this process are written in the order of their calls; another process
 * must not save into the same folder at the same time.
 */
export async function saveCheckpoint(
  folder: string,
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
  extraFiles: Readonly<Record<string, Uint8Array>> = {},
): Promise<void> {
  const target = checkpointPath(folder, "saveCheckpoint");
  optimizer.assertOwnModels(models, "saveCheckpoint");
  const names = Object.keys(models);
  // Model names become folder names: one that is not a plain name would write elsewhere.
  const unsafe = names.find((name) => !/^[^/\\]+$/.test(name) || name === "." || name === "..");
  if (unsafe !== undefined) throw new Error(`saveCheckpoint: model name "${unsafe}" cannot be a folder name`);
  const contents = checkpointContents(optimizer, models);
  // Its error, if any, is the save's, reported when the save's turn comes.
  contents.catch(() => {});
  await inCallOrder(target, async () => writeCheckpoint(target, await contents, extraFiles));
}

/** {@linkcode saveCheckpoint}'s writing, once the files are serialized. */
async function writeCheckpoint(
  target: string,
  files: [string, Uint8Array][],
  extraFiles: Readonly<Record<string, Uint8Array>>,
): Promise<void> {
  for (const [path, bytes] of Object.entries(extraFiles)) {
    const parts = path.split("/");
    if (
      parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\")) ||
      files.some(([n]) => n === path)
    ) {
      throw new Error(
        `saveCheckpoint: extra file "${path}" is not a new relative path inside the checkpoint`,
      );
    }
    files.splice(files.length - 1, 0, [path, bytes]);
  }
  const found = await replaceable(target);
  // Leftovers are stale once a complete checkpoint is in place; removing them now keeps at most one
  // complete `.old-*` around while the folder is renamed away below.
  if (found === "checkpoint") await removeLeftovers(target);
  const temporary = `${target}.tmp-${crypto.randomUUID()}`;
  try {
    const folders = new Set([temporary]);
    for (const [name, bytes] of files) {
      const folder = dirname(`${temporary}/${name}`);
      await checkpointFiles.mkdir(folder);
      await checkpointFiles.writeFile(`${temporary}/${name}`, bytes);
      for (let f = folder; f !== temporary; f = dirname(f)) folders.add(f);
    }
    // The new folders' entries must be on disk before the rename publishes them: deepest first.
    const deepestFirst = [...folders].sort((a, b) => b.split("/").length - a.split("/").length);
    for (const folder of deepestFirst) await checkpointFiles.syncFolder(folder);
  } catch (error) {
    // The original error is the one to report; what remains is removed by the next save.
    await checkpointFiles.remove(temporary).catch(() => {});
    throw error;
  }
  if (found !== "missing") await checkpointFiles.rename(target, `${target}.old-${crypto.randomUUID()}`);
  await checkpointFiles.rename(temporary, target);
  // The new name must be on disk before the previous checkpoint is deleted, even on power loss.
  await checkpointFiles.syncFolder(dirname(target));
  await removeLeftovers(target);
}

/** How many values of `tensors` are NaN or infinite, and the first tensor holding one; null when none is. */
function nonFiniteValues(tensors: Map<string, HostTensor>): { count: number; first: string } | null {
  let count = 0;
  let first = "";
  for (const [name, { data }] of tensors) {
    // x - x is 0 for every finite x and NaN otherwise: a plain loop, as a BERT-base model has 110 M values.
    for (let i = 0; i < data.length; i++) {
      if (data[i] - data[i] !== 0) {
        count++;
        first ||= name;
      }
    }
  }
  return count > 0 ? { count, first } : null;
}

/**
 * The folder to load for `folder`: itself, or, when a save was interrupted between its two renames,
 * the complete `<folder>.old-*` it left.
 */
async function locateCheckpoint(folder: string): Promise<string> {
  if (await checkpointFiles.stat(folder)) return folder;
  const complete: string[] = [];
  for (const path of (await leftovers(folder)).previous) if (await isCheckpoint(path)) complete.push(path);
  if (complete.length === 1) return complete[0];
  const more = complete.length > 1 ? `; several interrupted saves left ${complete.join(", ")}` : "";
  throw new Error(`loadCheckpoint: there is no checkpoint at ${folder}${more}`);
}

/** Checks parsed JSON field by field; errors name the file and the field (`counters.ringCounts[2]`). */
class JsonFields {
  constructor(readonly source: string) {}

  fail(field: string, problem: string, value: unknown): never {
    const shown = value === undefined ? "nothing" : JSON.stringify(value);
    throw new Error(`${this.source}: field "${field}" ${problem}, got ${shown}`);
  }

  /** An object with exactly `keys` (no field missing, none unknown); `field` "" is the whole file. */
  object(value: unknown, field: string, keys: readonly string[]): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      if (field === "") throw new Error(`${this.source}: the file must hold a JSON object`);
      this.fail(field, "must be an object", value);
    }
    const record = value as Record<string, unknown>;
    const path = (key: string) => (field === "" ? key : `${field}.${key}`);
    for (const key of keys) {
      if (!(key in record)) throw new Error(`${this.source}: field "${path(key)}" is missing`);
    }
    for (const key of Object.keys(record)) {
      if (!keys.includes(key)) {
        throw new Error(`${this.source}: field "${path(key)}" is not part of the format`);
      }
    }
    return record;
  }

  integer(value: unknown, field: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
      this.fail(field, `must be an integer in [${min}, ${max}]`, value);
    }
    return value as number;
  }

  /** An array of `length` entries (any length when undefined), each checked by `item`. */
  array<T>(value: unknown, field: string, item: (v: unknown, field: string) => T, length?: number): T[] {
    if (!Array.isArray(value)) this.fail(field, "must be an array", value);
    const values = value as unknown[];
    if (length !== undefined && values.length !== length) {
      this.fail(field, `must have ${length} entries`, value);
    }
    return values.map((v, i) => item(v, `${field}[${i}]`));
  }
}

/**
 * Parses and checks `optimizer.json`: every field, its type and range, the model names against
 * `models`, and the moments' shapes against their parameters.
 */
function readOptimizerJson(
  text: string,
  path: string,
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
  loading: LoadStateOptions,
): OptimizerJson {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  const f = new JsonFields(path);
  // Checkpoints saved before the options were recorded lack them.
  const optional = typeof parsed === "object" && parsed !== null && "options" in parsed ? ["options"] : [];
  const json = f.object(parsed, "", ["format", "models", ...optional, "counters", "random", "momentShapes"]);
  if (json.format !== STATE_FORMAT) f.fail("format", `must be "${STATE_FORMAT}"`, json.format);
  const names = f.array(json.models, "models", (v, field) => {
    if (typeof v !== "string") f.fail(field, "must be a string", v);
    return v as string;
  });
  if (names.join() !== Object.keys(models).join()) {
    throw new Error(`${path}: checkpoint of models [${names}], given [${Object.keys(models)}]`);
  }
  const c = f.object(json.counters, "counters", [
    "updates",
    "microBatches",
    "gradientsStale",
    "ringPositions",
    "ringCounts",
  ]);
  const count = (v: unknown, field: string) => f.integer(v, field);
  const counters: Counters = {
    updates: f.integer(c.updates, "counters.updates"),
    microBatches: f.integer(
      c.microBatches,
      "counters.microBatches",
      0,
      optimizer.options.gradientAccumulationSteps - 1,
    ),
    gradientsStale: typeof c.gradientsStale === "boolean"
      ? c.gradientsStale
      : f.fail("counters.gradientsStale", "must be true or false", c.gradientsStale),
    ringPositions: f.array(c.ringPositions, "counters.ringPositions", count, names.length),
    ringCounts: f.array(c.ringCounts, "counters.ringCounts", count, names.length),
  };
  const r = f.object(json.random, "random", ["base", "counter"]);
  const random = {
    base: f.integer(r.base, "random.base", 0, 2 ** 32 - 1),
    counter: f.integer(r.counter, "random.counter"),
  };
  const expected = new Map(
    names.flatMap((name) =>
      models[name].parameters.map((p) => [`${name}/${p.info.name}`, p.info.shape] as const)
    ),
  );
  const shapes = f.object(json.momentShapes, "momentShapes", [...expected.keys()]);
  const momentShapes: Record<string, number[]> = {};
  for (const [key, shape] of expected) {
    const field = `momentShapes.${key}`;
    momentShapes[key] = f.array(shapes[key], field, count);
    if (momentShapes[key].join() !== shape.join()) {
      f.fail(field, `must be the parameter's shape [${shape}]`, shapes[key]);
    }
  }
  if (json.options !== undefined && !loading.keepCurrentOptions) {
    checkSavedOptions(json.options, optimizer.options, path);
  }
  const options = json.options as SavedOptions | undefined;
  return {
    format: STATE_FORMAT,
    models: names,
    ...(options ? { options } : {}),
    counters,
    random,
    momentShapes,
  };
}

/**
 * Reads `optimizer.safetensors` and checks its tensors against the moments' shapes, the counters and
 * whether the optimizer uses AMSGrad (whose maximum of the second moment it then holds).
 */
async function readOptimizerTensors(
  path: string,
  json: OptimizerJson,
  amsgrad: boolean,
): Promise<OptimizerState> {
  const { tensors } = await readSafetensors(path);
  const take = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (!t || !(t.data instanceof Float32Array)) throw new Error(`${path}: no float tensor "${name}"`);
    return t.data;
  };
  const [control, lossRing] = ["control", "loss_ring"].map((name) => {
    const data = take(name);
    if (tensors.get(name)!.shape.length !== 1) throw new Error(`${path}: tensor "${name}" must be 1-D`);
    return data;
  });
  // Gradients are saved exactly when an accumulation cycle is open (see stateDict).
  const kinds: string[] = [...MOMENT_KINDS];
  if (amsgrad) kinds.push("max_exp_avg_sq");
  if (!json.counters.gradientsStale) kinds.push("pending_grad");
  const expected = new Map(
    Object.entries(json.momentShapes).flatMap(([key, shape]) =>
      kinds.map((kind) => [`${kind}/${key}`, shape])
    ),
  );
  checkTensorSet(path, expected, tensors, {
    allowUnexpected: (name) => name === "control" || name === "loss_ring",
  });
  const moments: OptimizerState["moments"] = {};
  for (const [key, shape] of Object.entries(json.momentShapes)) {
    const [expAvg, expAvgSq] = MOMENT_KINDS.map((kind) => take(`${kind}/${key}`));
    moments[key] = { shape, expAvg, expAvgSq };
    if (amsgrad) moments[key].maxExpAvgSq = take(`max_exp_avg_sq/${key}`);
    if (!json.counters.gradientsStale) moments[key].pendingGrad = take(`pending_grad/${key}`);
  }
  return {
    format: json.format,
    models: json.models,
    ...(json.options ? { options: json.options } : {}),
    counters: json.counters,
    control,
    lossRing,
    moments,
  };
}

/**
 * Restores a checkpoint written by {@linkcode saveCheckpoint} into models and an optimizer built
 * like the saved ones, with the same options unless `loading.keepCurrentOptions` (see
 * `MultiModelOptimizer.loadStateDict`); after a save interrupted between its renames, the previous
 * checkpoint it left. Every file is read and checked before anything is written: on any error the parameters,
 * the optimizer's state and the GPU random state are as they were, and the error names the file
 * and the field or tensor.
 */
export async function loadCheckpoint(
  folder: string,
  optimizer: MultiModelOptimizer,
  models: Record<string, TransformerModel>,
  loading: LoadStateOptions = {},
): Promise<void> {
  // The arguments first: a checkpoint's differences mean little for models the optimizer does not train.
  optimizer.assertOwnModels(models, "loadCheckpoint");
  const root = await locateCheckpoint(checkpointPath(folder, "loadCheckpoint"));
  const jsonPath = `${root}/optimizer.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(jsonPath);
  } catch (e) {
    throw new Error(`${jsonPath}: cannot read: ${(e as Error).message}`);
  }
  const json = readOptimizerJson(text, jsonPath, optimizer, models, loading);
  const weights = [];
  const warnings: string[] = [];
  for (const name of json.models) {
    await checkConfigFile(models[name], `${root}/models/${name}/config.json`);
    const weightsPath = `${root}/models/${name}/model.safetensors`;
    const { tensors } = await readSafetensors(weightsPath);
    // A model whose own update broke it keeps its non-finite values and resumes with them; a corrupt
    // file would look the same, so either is said rather than refused.
    const broken = nonFiniteValues(tensors);
    if (broken) {
      warnings.push(
        `loadCheckpoint: model "${name}" holds ${broken.count} non-finite parameter ` +
          `${broken.count === 1 ? "value" : "values"} (the first in "${broken.first}" of ${weightsPath}); ` +
          "metrics() says how its updates take them (faulted, or skipped)",
      );
    }
    weights.push(checkWeights(models[name], tensors, weightsPath));
  }
  const state = await readOptimizerTensors(`${root}/optimizer.safetensors`, json, optimizer.options.amsgrad);
  try {
    optimizer.loadStateDict(state, loading); // checks every value before it writes any
  } catch (e) {
    throw new Error(`${root}: ${(e as Error).message}`, { cause: e });
  }
  // Everything was checked above: nothing below can fail half-way.
  for (const w of weights) w.apply();
  setKernelSeedState(json.random);
  for (const line of warnings) console.warn(line);
}

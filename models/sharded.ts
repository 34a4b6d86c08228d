/**
 * The weights of a Hugging Face folder: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {name: file}}`), as
 * `save_pretrained` writes large models. Reading checks the index and every shard's header before
 * any value is read; writing splits tensors into shards as Hugging Face does. Deno only.
 *
 * @module
 */
import { shapeSize } from "../engine/shape.ts";
import type { HostTensor, TensorHeader } from "./safetensors.ts";
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from "./safetensors_file.ts";

/** The single weights file of a folder. */
export const WEIGHTS_FILE = "model.safetensors";

/** The index of a sharded folder. */
export const SHARD_INDEX_FILE = "model.safetensors.index.json";

/** Shard names as Hugging Face writes them: `model-00001-of-00003.safetensors`. */
const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;

/** A folder's weights, located and with every header checked. */
export interface WeightFiles {
  /** The path errors name: `model.safetensors`, or the index of a sharded folder. */
  source: string;
  /** The safetensors files, in the index's order. */
  files: string[];
  /** Every tensor of every file, as the headers describe it. */
  headers: Map<string, TensorHeader>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Finds a folder's weights - `model.safetensors` first, as Hugging Face prefers it, else the
 * shards of `model.safetensors.index.json` - and reads every header. A sharded folder is checked
 * whole: the index's form, that each shard is a plain file of the folder, that each shard holds
 * exactly the tensors the index maps to it, and that no tensor is in two shards.
 */
export async function locateWeights(folder: string): Promise<WeightFiles> {
  const single = `${folder}/${WEIGHTS_FILE}`;
  const indexPath = `${folder}/${SHARD_INDEX_FILE}`;
  if (await exists(single) || !(await exists(indexPath))) {
    if (!(await exists(single))) {
      throw new Error(`${folder}: no weights (neither ${WEIGHTS_FILE} nor ${SHARD_INDEX_FILE})`);
    }
    return { source: single, files: [single], headers: (await readSafetensorsHeader(single)).tensors };
  }
  const weightMap = await readShardIndex(indexPath);
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of weightMap) {
    if (!byShard.has(shard)) byShard.set(shard, new Set());
    byShard.get(shard)!.add(name);
  }
  const headers = new Map<string, TensorHeader>();
  const files: string[] = [];
  const problems: string[] = [];
  for (const [shard, listed] of byShard) {
    const path = `${folder}/${shard}`;
    if (!(await exists(path))) {
      throw new Error(`${indexPath}: shard ${shard}, which holds ${listed.size} of the tensors, is missing`);
    }
    const found = (await readSafetensorsHeader(path)).tensors;
    for (const name of listed) {
      if (!found.has(name)) problems.push(`  "${name}" is mapped to ${shard}, which does not hold it`);
    }
    for (const [name, header] of found) {
      if (!listed.has(name)) {
        problems.push(`  ${shard} holds "${name}", which the index maps elsewhere or not at all`);
      }
      headers.set(name, header);
    }
    files.push(path);
  }
  if (problems.length > 0) {
    throw new Error(`${indexPath}: the index and its shards disagree:\n${problems.join("\n")}`);
  }
  return { source: indexPath, files, headers };
}

/** Reads and checks an index: its `weight_map` as a map from tensor names to shard file names. */
async function readShardIndex(path: string): Promise<Map<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`${path}: cannot read the shard index: ${(e as Error).message}`);
  }
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObject(json) || !isObject(json.weight_map)) {
    throw new Error(`${path}: a shard index must be a JSON object with a "weight_map" object`);
  }
  if (json.metadata !== undefined && !isObject(json.metadata)) {
    throw new Error(`${path}: field "metadata" must be an object, got ${JSON.stringify(json.metadata)}`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(json.weight_map)) {
    // A name with a path in it would read outside the folder.
    if (typeof shard !== "string" || !/^[^/\\]+\.safetensors$/.test(shard)) {
      throw new Error(
        `${path}: "weight_map" maps "${name}" to ${
          JSON.stringify(shard)
        }, not a .safetensors file of the folder`,
      );
    }
    map.set(name, shard);
  }
  if (map.size === 0) throw new Error(`${path}: "weight_map" lists no tensor`);
  return map;
}

/** Reads the values of every file of {@linkcode locateWeights} (their headers were checked). */
export async function readWeights(weights: WeightFiles): Promise<Map<string, HostTensor>> {
  const tensors = new Map<string, HostTensor>();
  for (const file of weights.files) {
    for (const [name, tensor] of (await readSafetensors(file)).tensors) tensors.set(name, tensor);
  }
  return tensors;
}

/**
 * Splits tensors into shards of at most `maxBytes` bytes of data, in order, as Hugging Face's
 * `split_torch_state_dict_into_shards` does: a tensor larger than a shard is a shard of its own,
 * placed before the shard being filled.
 */
export function planShards<T extends readonly [string, HostTensor]>(
  entries: readonly T[],
  maxBytes: number,
): T[][] {
  const shards: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const entry of entries) {
    const bytes = entry[1].data.byteLength;
    if (bytes > maxBytes) {
      shards.push([entry]);
      continue;
    }
    if (size + bytes > maxBytes && current.length > 0) {
      shards.push(current);
      [current, size] = [[], 0];
    }
    current.push(entry);
    size += bytes;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/** Options of {@linkcode writeWeights}. */
export interface ShardOptions {
  /** Largest data size of one file in bytes (Hugging Face's `max_shard_size`); default: one file. */
  maxShardBytes?: number;
}

/**
 * Writes tensors into `folder` as `model.safetensors`, or, when they exceed `maxShardBytes`, as
 * shards `model-0000i-of-0000N.safetensors` and their index, as Hugging Face writes them: tensors
 * in name order, the same files and index (`metadata.total_size` and `total_parameters`,
 * `weight_map` sorted by name) for the same weights. Each file is
 * written atomically, and the files of an earlier save that the new one replaces are removed last.
 * An earlier index is removed first, so an interrupted save leaves the earlier weights or none,
 * never shards of two saves under one index.
 */
export async function writeWeights(
  folder: string,
  tensors: readonly (readonly [string, HostTensor])[],
  options: ShardOptions = {},
): Promise<void> {
  const max = options.maxShardBytes ?? Infinity;
  if (!(max > 0)) throw new Error(`savePretrained: maxShardBytes must be positive, got ${max}`);
  // Hugging Face shards the state dict in name order, so the same weights give the same files.
  const byName = [...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const shards = planShards(byName, max);
  const indexPath = `${folder}/${SHARD_INDEX_FILE}`;
  const previous: string[] = [];
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isFile && (SHARD_NAME.test(entry.name) || entry.name === WEIGHTS_FILE)) {
      previous.push(entry.name);
    }
  }
  if (shards.length <= 1) {
    await writeSafetensors(`${folder}/${WEIGHTS_FILE}`, tensors, { format: "pt" });
    await Deno.remove(indexPath).catch(ignoreNotFound);
    for (const name of previous.filter((n) => n !== WEIGHTS_FILE)) await Deno.remove(`${folder}/${name}`);
    return;
  }
  await Deno.remove(indexPath).catch(ignoreNotFound);
  const count = String(shards.length).padStart(5, "0");
  const names = shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${count}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    await writeSafetensors(`${folder}/${names[i]}`, shard, { format: "pt" });
    for (const [name] of shard) weightMap[name] = names[i];
  }
  const index = {
    metadata: {
      total_parameters: tensors.reduce((sum, [, t]) => sum + shapeSize(t.shape), 0),
      total_size: tensors.reduce((sum, [, t]) => sum + t.data.byteLength, 0),
    },
    weight_map: weightMap, // in name order, as the shards are
  };
  const temporary = `${indexPath}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(temporary, JSON.stringify(index, null, 2) + "\n");
  await Deno.rename(temporary, indexPath);
  for (const name of previous.filter((n) => !names.includes(n))) await Deno.remove(`${folder}/${name}`);
}

function ignoreNotFound(e: unknown): void {
  if (!(e instanceof Deno.errors.NotFound)) throw e;
}

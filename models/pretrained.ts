/**
 * Hugging Face folders on disk (Deno only): `config.json` and `model.safetensors` (or its shards),
 * loaded like `from_pretrained` - every file checked against the model before anything is allocated
 * or written - and saved like `save_pretrained`. What they hold, checked and converted, is
 * `checkpoint.ts`, which runs anywhere.
 *
 * @module
 */
import { resolve } from "node:path";
import { checkOptions } from "../engine/options.ts";
import {
  architectureName,
  checkTensors,
  fileLabels,
  inferTask,
  isDecoder,
  isFloatHeader,
  type LoadOptions,
  type LoadReport,
  loadWarnings,
  loadWeights,
  pretrainedContents,
} from "./checkpoint.ts";
import { configFromHf, configToHf } from "./config.ts";
import { type ModelOptions, TransformerModel } from "./model.ts";
import { inCallOrder } from "./safetensors_file.ts";
import { locateWeights, readWeights, type ShardOptions, writeWeights } from "./sharded.ts";

/** Reads a `config.json` as a JSON object; errors name the file. */
async function readConfigJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read the configuration: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: the configuration is not valid JSON: ${(e as Error).message}`);
  }
  if (!json || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${path}: the configuration is not a JSON object`);
  }
  return json as Record<string, unknown>;
}

/** Reads `config.json` of a folder and builds an untrained model of that configuration (checked and bounded first). */
export async function modelFromConfigFile(
  path: string,
  options: ModelOptions = {},
): Promise<TransformerModel> {
  return new TransformerModel(configFromHf(await readConfigJson(path), path), options);
}

/**
 * Checks that a `config.json` describes the architecture of `model` (every field {@linkcode configToHf}
 * writes, and the task's architecture name); throws an error naming the file and each differing
 * field. Nothing is written.
 */
export async function checkConfigFile(model: TransformerModel, path: string): Promise<void> {
  const json = await readConfigJson(path);
  const found: Record<string, unknown> = {
    ...configToHf(configFromHf(json, path)),
    architectures: Array.isArray(json.architectures) ? json.architectures[0] : json.architectures,
  };
  const expected: Record<string, unknown> = {
    ...configToHf(model.config),
    architectures: architectureName(model),
  };
  if (model.config.family !== "gpt2") expected.is_decoder = isDecoder(model);
  const differences = Object.keys(expected)
    .filter((key) => JSON.stringify(found[key]) !== JSON.stringify(expected[key]))
    .map((key) =>
      `field "${key}" is ${JSON.stringify(found[key])}, the model "${model.name}" has ${
        JSON.stringify(expected[key])
      }`
    );
  if (differences.length > 0) throw new Error(`${path}: ${differences.join("; ")}`);
}

/** A loaded model and what loading did besides writing values. */
export interface LoadedModel {
  /** The model, in eval mode. */
  model: TransformerModel;
  /** Newly initialised, ignored and mismatched tensors (see {@linkcode LoadReport}). */
  report: LoadReport;
  /** The path of the weights: `model.safetensors`, or the index of a sharded folder. */
  source: string;
}

/**
 * Loads a Hugging Face folder (`config.json` and `model.safetensors`, or the shards of
 * `model.safetensors.index.json`) into a model in eval mode, like `from_pretrained`, and says what
 * was newly initialised or ignored. The task comes from `options.task`, else from the checkpoint
 * ({@linkcode inferTask}, which refuses an `architectures` entry naming a head this library lacks);
 * the number of labels of a classifier from `options.numLabels`, else `options.labels`, else its
 * weight's shape, else the config's `id2label`, and a classifier's class names (`model.labels`) from
 * `options.labels`, else the config's `id2label` when it has that many. The configuration is checked,
 * and every file's header compared with the model it describes, before the model allocates its
 * weights or any value is read: a mismatched folder fails at once.
 */
export async function loadPretrainedWithReport(
  folder: string,
  options: Omit<ModelOptions, "allocate"> & LoadOptions = {},
): Promise<LoadedModel> {
  const configPath = `${folder}/config.json`;
  const json = await readConfigJson(configPath);
  const config = configFromHf(json, configPath);
  const weights = await locateWeights(folder);
  const task = options.task ?? inferTask(json, weights.headers.keys(), configPath).task;
  // The language-model heads here tie their decoder to the word embeddings; an untied one would be dropped.
  if ((task === "causal-lm" || task === "masked-lm") && json.tie_word_embeddings === false) {
    throw new Error(
      `${configPath}: field "tie_word_embeddings" is false: this library's ${task} head ties its decoder to ` +
        "the word embeddings, so the checkpoint's own decoder would be lost (load it into another head)",
    );
  }
  const labelsWeight = [...weights.headers].find(([n]) =>
    /(^|\.)(classifier|classifier\.out_proj|score)\.weight$/.test(n)
  );
  if (
    json.num_labels !== undefined && !(Number.isSafeInteger(json.num_labels) && Number(json.num_labels) >= 1)
  ) {
    throw new Error(
      `${configPath}: field "num_labels" must be a positive integer, got ${JSON.stringify(json.num_labels)}`,
    );
  }
  const labelled = json.id2label && typeof json.id2label === "object"
    ? Object.keys(json.id2label).length
    : typeof json.num_labels === "number"
    ? json.num_labels
    : undefined;
  const numLabels = options.numLabels ?? options.labels?.length ?? labelsWeight?.[1].shape[0] ?? labelled;
  checkOptions(
    "loadPretrained",
    options,
    ["name", "task", "numLabels", "labels", "seed", "allowNewHead", "ignoreMismatchedSizes"],
  );
  const { allowNewHead: _allowNewHead, ignoreMismatchedSizes: _ignoreMismatchedSizes, ...rest } = options;
  // The file's class names go with its classes; a head of another count (a new head) has none.
  const named = task === "sequence-classification" || task === "token-classification"
    ? fileLabels(json)
    : undefined;
  const labels = options.labels ?? (named && named.length === (numLabels ?? 2) ? named : undefined);
  const modelOptions = { ...rest, task, numLabels, ...(labels ? { labels } : {}) };
  checkTensors(
    new TransformerModel(config, { ...modelOptions, allocate: false }),
    weights.headers,
    weights.source,
    options,
    isFloatHeader,
  );
  const tensors = await readWeights(weights);
  const model = new TransformerModel(config, modelOptions);
  const report = loadWeights(model, tensors, weights.source, options);
  return { model: model.eval(), report, source: weights.source };
}

/**
 * {@linkcode loadPretrainedWithReport} that returns the model and prints, on stderr, the warnings
 * Hugging Face prints when a tensor was newly initialised or ignored ({@linkcode loadWarnings}).
 */
export async function loadPretrained(
  folder: string,
  options: Omit<ModelOptions, "allocate"> & LoadOptions = {},
): Promise<TransformerModel> {
  const { model, report, source } = await loadPretrainedWithReport(folder, options);
  for (const line of loadWarnings(report, model, source)) console.warn(line);
  return model;
}

/** Options of {@linkcode savePretrained}. */
export type SaveOptions = ShardOptions;

/**
 * Writes `config.json` and the weights (Hugging Face names, F32) into `folder`, each file
 * atomically: `model.safetensors`, or with `maxShardBytes` shards and their index when the weights
 * exceed it, as Hugging Face's `save_pretrained(max_shard_size=...)` does. The weights are those of
 * the call, as a readback reads them (training may go on before the promise settles); saves into one
 * folder from this process are written in the order of their calls.
 */
export async function savePretrained(
  model: TransformerModel,
  folder: string,
  options: SaveOptions = {},
): Promise<void> {
  const contents = pretrainedContents(model);
  // Its error, if any, is the save's, reported when the save's turn comes.
  contents.catch(() => {});
  await inCallOrder(resolve(folder), async () => {
    const { config, tensors } = await contents;
    await Deno.mkdir(folder, { recursive: true });
    await writeWeights(folder, tensors, options);
    const temporary = `${folder}/config.json.${crypto.randomUUID()}.tmp`;
    await Deno.writeTextFile(temporary, JSON.stringify(config, null, 2) + "\n");
    await Deno.rename(temporary, `${folder}/config.json`);
  });
}

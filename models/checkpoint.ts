/**
 * Hugging Face checkpoints: a folder with `config.json` and `model.safetensors`. Loading checks the
 * whole file against the model before writing anything, so a bad file never half-loads a model;
 * saving writes files that Hugging Face's `from_pretrained` loads.
 *
 * @module
 */
import { readAll, writeTensor } from "../engine/tensor.ts";
import { configFromHf, configToHf, type ModelFamily } from "./config.ts";
import type { Task } from "./heads.ts";
import { type ModelOptions, TransformerModel } from "./model.ts";
import {
  checkTensorSet,
  type HostTensor,
  readSafetensors,
  readSafetensorsHeader,
  type TensorHeader,
  writeSafetensors,
} from "./safetensors.ts";

/** Tensors Hugging Face may store that are tied to another one (decoders tied to the word embeddings). */
const TIED_NAMES =
  /^(lm_head\.weight|lm_head\.decoder\.(weight|bias)|cls\.predictions\.decoder\.(weight|bias))$/;

/** Options of {@linkcode loadWeights}. */
export interface LoadOptions {
  /**
   * Accept a file without the head's tensors or the pooler (they keep their initial values) and ignore
   * tensors of other heads and an unused pooler, as Hugging Face loads a checkpoint into another head.
   */
  allowNewHead?: boolean;
}

/** What {@linkcode loadWeights} did besides loading. */
export interface LoadReport {
  /** Head parameters the file did not have (kept at their initial values). */
  newlyInitialized: string[];
  /** Tensors of the file the model does not use (other heads, tied copies). */
  ignored: string[];
}

function isBodyName(name: string, family: ModelFamily): boolean {
  const body = family === "gpt2"
    ? /^(transformer\.)?(wte|wpe|h\.\d+|ln_f)\./
    : /^(bert\.|roberta\.)?(embeddings|encoder|pooler)\./;
  return body.test(name);
}

/** Adds or strips the body prefix of a file's names to match the model's naming (BertModel vs BertFor...). */
function alignNames<T>(model: TransformerModel, tensors: Map<string, T>): Map<string, T> {
  const expected = new Set(model.parameterSet.infos.map((p) => p.name));
  const prefix = { bert: "bert.", roberta: "roberta.", gpt2: "transformer." }[model.config.family];
  const aligned = new Map<string, T>();
  for (const [name, value] of tensors) {
    let target = name;
    if (!expected.has(name) && isBodyName(name, model.config.family)) {
      if (name.startsWith(prefix) && expected.has(name.slice(prefix.length))) {
        target = name.slice(prefix.length);
      } else if (expected.has(prefix + name)) target = prefix + name;
    }
    aligned.set(target, value);
  }
  return aligned;
}

/** Values checked by {@linkcode checkWeights}, ready to be written. */
export interface CheckedWeights {
  /** What loading will do besides writing values. */
  report: LoadReport;
  /** Writes the values into the model's parameters. */
  apply: () => void;
}

/**
 * Checks names, shapes and element types against the model's parameter metadata (available
 * before the model allocates its weights); returns the tensors under the model's names.
 */
function checkTensors<T extends { readonly shape: readonly number[] }>(
  model: TransformerModel,
  tensors: Map<string, T>,
  source: string,
  options: LoadOptions,
  isFloat: (tensor: T) => boolean,
): { aligned: Map<string, T>; report: LoadReport } {
  const aligned = alignNames(model, tensors);
  const infos = model.parameterSet.infos;
  const expected = new Map(infos.map((p) => [p.name, p.shape] as const));
  // As Hugging Face does, a new head may come with or without a pooler: a missing pooler is newly
  // initialised and an unused one ignored (a masked-LM checkpoint has none, a classifier's has one).
  const heads = infos.filter((p) => p.site.startsWith("head") || p.role === "pooler").map((p) => p.name);
  const ignored = [...aligned.keys()].filter((n) =>
    !expected.has(n) &&
    (TIED_NAMES.test(n) ||
      (options.allowNewHead && (!isBodyName(n, model.config.family) || /(^|\.)pooler\./.test(n))))
  );
  checkTensorSet(source, expected, aligned, {
    allowMissing: options.allowNewHead ? heads : [],
    allowUnexpected: (name) => ignored.includes(name),
  });
  for (const p of infos) {
    const found = aligned.get(p.name);
    if (found && !isFloat(found)) throw new Error(`${source}: tensor "${p.name}" is not floating point`);
  }
  const newlyInitialized = infos.filter((p) => !aligned.has(p.name)).map((p) => p.name);
  return { aligned, report: { newlyInitialized, ignored } };
}

/**
 * Checks Hugging Face tensors against a model without writing anything: one error naming `source`
 * and listing every missing, unexpected and misshapen tensor. Body names with or without the task
 * prefix (`bert.`, `roberta.`, `transformer.`) are accepted; tied decoder copies are ignored.
 */
export function checkWeights(
  model: TransformerModel,
  tensors: Map<string, HostTensor>,
  source: string,
  options: LoadOptions = {},
): CheckedWeights {
  const { aligned, report } = checkTensors(
    model,
    tensors,
    source,
    options,
    (t) => t.data instanceof Float32Array,
  );
  const writes = model.parameters.flatMap((p) => {
    const found = aligned.get(p.info.name);
    return found ? [[p, found.data as Float32Array] as const] : [];
  });
  return { report, apply: () => writes.forEach(([p, data]) => writeTensor(p.value, data)) };
}

/** Checks (see {@linkcode checkWeights}) and then loads Hugging Face tensors into a model: a bad file changes nothing. */
export function loadWeights(
  model: TransformerModel,
  tensors: Map<string, HostTensor>,
  source: string,
  options: LoadOptions = {},
): LoadReport {
  const checked = checkWeights(model, tensors, source, options);
  checked.apply();
  return checked.report;
}

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
  const differences = Object.keys(expected)
    .filter((key) => JSON.stringify(found[key]) !== JSON.stringify(expected[key]))
    .map((key) =>
      `field "${key}" is ${JSON.stringify(found[key])}, the model "${model.name}" has ${
        JSON.stringify(expected[key])
      }`
    );
  if (differences.length > 0) throw new Error(`${path}: ${differences.join("; ")}`);
}

/** Infers the task of a checkpoint from its `architectures` entry or, failing that, its tensor names. */
export function inferTask(
  config: Record<string, unknown>,
  names: Iterable<string>,
): { task: Task; numLabels?: number } {
  const architecture = Array.isArray(config.architectures) ? String(config.architectures[0]) : "";
  const byArchitecture: [RegExp, Task][] = [
    [/ForSequenceClassification$/, "sequence-classification"],
    [/ForTokenClassification$/, "token-classification"],
    [/ForQuestionAnswering$/, "question-answering"],
    [/(LMHeadModel|ForCausalLM)$/, "causal-lm"],
    [/ForMaskedLM$/, "masked-lm"],
  ];
  for (const [pattern, task] of byArchitecture) if (pattern.test(architecture)) return { task };
  const all = [...names];
  if (all.some((n) => n.startsWith("qa_outputs."))) return { task: "question-answering" };
  if (all.some((n) => /^(classifier|score)\./.test(n))) return { task: "sequence-classification" };
  if (all.some((n) => n.startsWith("cls.predictions.") || n.startsWith("lm_head."))) {
    return { task: config.model_type === "gpt2" ? "causal-lm" : "masked-lm" };
  }
  return { task: "base" };
}

/**
 * Loads a Hugging Face folder (`config.json` + `model.safetensors`) into a model in eval mode,
 * like `from_pretrained`. The task comes from `options.task`, else from the checkpoint; the
 * number of labels of a classifier from its weight's shape. The configuration is checked, and the
 * file's header compared with the model it describes, before the model allocates its weights or
 * the file's values are read: a mismatched folder fails at once.
 */
export async function loadPretrained(
  folder: string,
  options: ModelOptions & LoadOptions = {},
): Promise<TransformerModel> {
  const configPath = `${folder}/config.json`;
  const weightsPath = `${folder}/model.safetensors`;
  const json = await readConfigJson(configPath);
  const config = configFromHf(json, configPath);
  const header = (await readSafetensorsHeader(weightsPath)).tensors;
  const task = options.task ?? inferTask(json, header.keys()).task;
  const labelsWeight = [...header].find(([n]) =>
    /(^|\.)(classifier|classifier\.out_proj|score)\.weight$/.test(n)
  );
  const numLabels = options.numLabels ?? (labelsWeight ? labelsWeight[1].shape[0] : undefined);
  const modelOptions = { ...options, task, numLabels };
  checkTensors(
    new TransformerModel(config, { ...modelOptions, allocate: false }),
    header,
    weightsPath,
    options,
    isFloatHeader,
  );
  const { tensors } = await readSafetensors(weightsPath);
  const model = new TransformerModel(config, modelOptions);
  loadWeights(model, tensors, weightsPath, options);
  return model.eval();
}

/** Whether a tensor of the header loads as float32 (the other dtypes load as int32). */
function isFloatHeader(tensor: TensorHeader): boolean {
  return ["F64", "F32", "F16", "BF16"].includes(tensor.dtype);
}

/**
 * The contents of a Hugging Face folder for `model`, as {@linkcode savePretrained} writes them: the
 * `config.json` object and the tensors of `model.safetensors` (Hugging Face names, F32).
 */
export async function pretrainedContents(
  model: TransformerModel,
): Promise<{ config: Record<string, unknown>; tensors: [string, HostTensor][] }> {
  const values = await readAll(model.parameters.map((p) => p.value));
  const tensors = model.parameters.map((p, i): [string, HostTensor] => [
    p.info.name,
    { shape: [...p.info.shape], data: values[i] },
  ]);
  const config = { ...configToHf(model.config), architectures: [architectureName(model)] };
  if (model.task === "sequence-classification" || model.task === "token-classification") {
    Object.assign(config, { num_labels: model.numLabels });
  }
  // BertLMHeadModel and RobertaForCausalLM attend causally only when the config says so.
  if (model.task === "causal-lm" && model.config.family !== "gpt2") {
    Object.assign(config, { is_decoder: true });
  }
  return { config, tensors };
}

/** Writes `config.json` and `model.safetensors` (Hugging Face names, F32) into `folder`, each file atomically. */
export async function savePretrained(model: TransformerModel, folder: string): Promise<void> {
  await Deno.mkdir(folder, { recursive: true });
  const { config, tensors } = await pretrainedContents(model);
  await writeSafetensors(`${folder}/model.safetensors`, tensors, { format: "pt" });
  const temporary = `${folder}/config.json.tmp`;
  await Deno.writeTextFile(temporary, JSON.stringify(config, null, 2) + "\n");
  await Deno.rename(temporary, `${folder}/config.json`);
}

function architectureName(model: TransformerModel): string {
  const family = { bert: "Bert", roberta: "Roberta", gpt2: "GPT2" }[model.config.family];
  const suffix: Record<Task, string> = {
    "base": "Model",
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "causal-lm": model.config.family === "gpt2" ? "LMHeadModel" : "ForCausalLM",
    "masked-lm": "ForMaskedLM",
  };
  return family + suffix[model.task];
}

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
import type { Parameter } from "./parameters.ts";
import { checkTensorSet, type HostTensor, readSafetensors, writeSafetensors } from "./safetensors.ts";

/** Tensors Hugging Face may store that are tied to another one (decoders tied to the word embeddings). */
const TIED_NAMES =
  /^(lm_head\.weight|lm_head\.decoder\.(weight|bias)|cls\.predictions\.decoder\.(weight|bias))$/;

/** Options of {@linkcode loadWeights}. */
export interface LoadOptions {
  /** Accept a file without the head's tensors (they keep their initial values) and ignore tensors of other heads. */
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
function alignNames(model: TransformerModel, tensors: Map<string, HostTensor>): Map<string, HostTensor> {
  const expected = new Set(model.parameters.map((p) => p.info.name));
  const prefix = { bert: "bert.", roberta: "roberta.", gpt2: "transformer." }[model.config.family];
  const aligned = new Map<string, HostTensor>();
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
  const aligned = alignNames(model, tensors);
  const expected = new Map(model.parameters.map((p) => [p.info.name, p.info.shape] as const));
  const heads = model.parameters.filter((p) => p.info.role === "head").map((p) => p.info.name);
  const ignored = [...aligned.keys()].filter((n) =>
    !expected.has(n) && (TIED_NAMES.test(n) || (options.allowNewHead && !isBodyName(n, model.config.family)))
  );
  checkTensorSet(source, expected, aligned, {
    allowMissing: options.allowNewHead ? heads : [],
    allowUnexpected: (name) => ignored.includes(name),
  });
  const writes: [Parameter, Float32Array][] = [];
  const newlyInitialized: string[] = [];
  for (const p of model.parameters) {
    const found = aligned.get(p.info.name);
    if (!found) newlyInitialized.push(p.info.name);
    else if (found.data instanceof Int32Array) {
      throw new Error(`${source}: tensor "${p.info.name}" is not floating point`);
    } else writes.push([p, found.data]);
  }
  return {
    report: { newlyInitialized, ignored },
    apply: () => writes.forEach(([p, data]) => writeTensor(p.value, data)),
  };
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

/** Reads `config.json` of a folder and builds an untrained model of that configuration. */
export async function modelFromConfigFile(
  path: string,
  options: ModelOptions = {},
): Promise<TransformerModel> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`${path}: cannot read the configuration: ${(e as Error).message}`);
  }
  if (!json || typeof json !== "object") throw new Error(`${path}: the configuration is not a JSON object`);
  return new TransformerModel(configFromHf(json as Record<string, unknown>, path), options);
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
 * number of labels of a classifier from its weight's shape.
 */
export async function loadPretrained(
  folder: string,
  options: ModelOptions & LoadOptions = {},
): Promise<TransformerModel> {
  const configPath = `${folder}/config.json`;
  const weightsPath = `${folder}/model.safetensors`;
  const json = JSON.parse(await Deno.readTextFile(configPath)) as Record<string, unknown>;
  const { tensors } = await readSafetensors(weightsPath);
  const task = options.task ?? inferTask(json, tensors.keys()).task;
  const labelsWeight = [...tensors].find(([n]) =>
    /(^|\.)(classifier|classifier\.out_proj|score)\.weight$/.test(n)
  );
  const numLabels = options.numLabels ?? (labelsWeight ? labelsWeight[1].shape[0] : undefined);
  const model = new TransformerModel(configFromHf(json, configPath), { ...options, task, numLabels });
  loadWeights(model, tensors, weightsPath, options);
  return model.eval();
}

/** Writes `config.json` and `model.safetensors` (Hugging Face names, F32) into `folder`, each file atomically. */
export async function savePretrained(model: TransformerModel, folder: string): Promise<void> {
  await Deno.mkdir(folder, { recursive: true });
  const values = await readAll(model.parameters.map((p) => p.value));
  const tensors = model.parameters.map((p, i): [string, HostTensor] => [
    p.info.name,
    { shape: [...p.info.shape], data: values[i] },
  ]);
  await writeSafetensors(`${folder}/model.safetensors`, tensors, { format: "pt" });
  const config = { ...configToHf(model.config), architectures: [architectureName(model)] };
  if (model.task === "sequence-classification" || model.task === "token-classification") {
    Object.assign(config, { num_labels: model.numLabels });
  }
  // BertLMHeadModel and RobertaForCausalLM attend causally only when the config says so.
  if (model.task === "causal-lm" && model.config.family !== "gpt2") {
    Object.assign(config, { is_decoder: true });
  }
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

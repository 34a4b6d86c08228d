/**
 * Hugging Face checkpoints as data: weights checked against a model before anything is written, so a
 * bad file never half-loads a model, and loaded into a model of another head by Hugging Face's rule
 * ({@linkcode LoadOptions}); the config.json object and tensors of a model as `save_pretrained`
 * writes them; the task a checkpoint was saved for. Folders on disk are `pretrained.ts` (Deno only).
 *
 * @module
 */
import { formatShape, sameShape } from "../engine/shape.ts";
import { readAll, writeTensor } from "../engine/tensor.ts";
import { configToHf, type ModelFamily } from "./config.ts";
import { type Task, TASKS } from "./heads.ts";
import type { TransformerModel } from "./model.ts";
import { checkTensorSet, type HostTensor, type TensorHeader } from "./safetensors.ts";

/**
 * Tensors Hugging Face stores that are tied to another one: LM decoders tied to the word embeddings
 * (and BERT's and RoBERTa's decoder bias to the head's bias). A model with that head holds them
 * once, under the other name.
 */
const TIED_NAMES =
  /^(lm_head\.weight|lm_head\.decoder\.(weight|bias)|cls\.predictions\.decoder\.(weight|bias))$/;

/**
 * Buffers some checkpoints hold that Hugging Face never loads (`_keys_to_ignore_on_load_unexpected`
 * and the `position_ids` rule of transformers 5): ignored without a word, as there.
 */
const IGNORED_BUFFERS: Record<ModelFamily, RegExp> = {
  bert: /(^|\.)position_ids$/,
  roberta: /(^|\.)position_ids$/,
  gpt2: /attn.bias|crossattention.bias/,
};

const BODY_PREFIX: Record<ModelFamily, string> = { bert: "bert.", roberta: "roberta.", gpt2: "transformer." };

/** Options of {@linkcode loadWeights}. */
export interface LoadOptions {
  /**
   * Load into a model of another head, by Hugging Face's rule: what the model needs and the file
   * lacks keeps its initial values (newly initialised: a new head, a pooler), what the file holds
   * and the model does not use is ignored; both are reported. Without it every tensor must match.
   */
  allowNewHead?: boolean;
  /**
   * Re-initialise tensors whose shape differs from the file's (a classifier of another number of
   * labels), as Hugging Face's `ignore_mismatched_sizes`; without it they are an error naming both shapes.
   */
  ignoreMismatchedSizes?: boolean;
}

/** A tensor the file holds in another shape than the model's. */
export interface MismatchedTensor {
  /** The model's name of the tensor. */
  name: string;
  /** Its shape in the file. */
  found: number[];
  /** Its shape in the model. */
  expected: number[];
}

/** What {@linkcode loadWeights} did besides loading: Hugging Face's missing, unexpected and mismatched keys. */
export interface LoadReport {
  /** Parameters the file lacks, by the model's names: they keep their initial values. */
  newlyInitialized: string[];
  /** Tensors of the file the model does not use, by the file's names. */
  ignored: string[];
  /** Parameters re-initialised because the file's shape differs (with `ignoreMismatchedSizes`). */
  mismatched: MismatchedTensor[];
}

/**
 * The model's name for a file's tensor, by Hugging Face's rule: the name itself, or with the body
 * prefix (`bert.`, `roberta.`, `transformer.`) stripped or added where that names a parameter of
 * the model (bare-model and head-model checkpoints load into each other).
 */
function modelName(file: string, expected: ReadonlyMap<string, unknown>, prefix: string): string {
  // Older checkpoints name LayerNorm's parameters gamma and beta, which transformers renames on load.
  const name = file.replace(/LayerNorm\.gamma$/, "LayerNorm.weight").replace(
    /LayerNorm\.beta$/,
    "LayerNorm.bias",
  );
  if (expected.has(name)) return name;
  if (name.startsWith(prefix) && expected.has(name.slice(prefix.length))) return name.slice(prefix.length);
  if (expected.has(prefix + name)) return prefix + name;
  return name;
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
 * before the model allocates its weights); returns the tensors to load under the model's names.
 */
export function checkTensors<T extends { readonly shape: readonly number[] }>(
  model: TransformerModel,
  tensors: Map<string, T>,
  source: string,
  options: LoadOptions,
  isFloat: (tensor: T) => boolean,
): { aligned: Map<string, T>; report: LoadReport } {
  const family = model.config.family;
  const infos = model.parameterSet.infos;
  const expected = new Map(infos.map((p) => [p.name, p.shape] as const));
  // A language model holds its decoder once, tied: the file's copy is not a tensor it leaves unused.
  const holdsTied = model.task === "causal-lm" || model.task === "masked-lm";
  const aligned = new Map<string, T>();
  const fileNames = new Map<string, string>();
  const ignored: string[] = [];
  for (const [name, tensor] of tensors) {
    const target = modelName(name, expected, BODY_PREFIX[family]);
    if (expected.has(target)) {
      if (aligned.has(target)) {
        throw new Error(
          `${source}: "${fileNames.get(target)}" and "${name}" are the same tensor "${target}"`,
        );
      }
      aligned.set(target, tensor);
      fileNames.set(target, name);
    } else if (!IGNORED_BUFFERS[family].test(name) && !(holdsTied && TIED_NAMES.test(name))) {
      ignored.push(name);
    }
  }
  const mismatched = infos.filter((p) =>
    aligned.has(p.name) && !sameShape(aligned.get(p.name)!.shape, p.shape)
  )
    .map((p) => ({ name: p.name, found: [...aligned.get(p.name)!.shape], expected: [...p.shape] }));
  const found = new Map(aligned);
  if (options.ignoreMismatchedSizes) { for (const { name } of mismatched) found.delete(name); }
  // Without allowNewHead a tied copy is still no error (a bare model loads an LM's file), as before.
  const strictUnexpected = ignored.filter((name) => !TIED_NAMES.test(name));
  if (!options.allowNewHead) { for (const name of strictUnexpected) found.set(name, tensors.get(name)!); }
  const headMissing = !options.allowNewHead &&
    infos.some((p) =>
      p.site.startsWith("head") && !found.has(p.name) && !mismatched.some((m) => m.name === p.name)
    );
  checkTensorSet(source, expected, found, {
    allowMissing: options.allowNewHead ? [...expected.keys()] : mismatched.map((m) => m.name),
    notes: [
      ...(mismatched.length > 0 && !options.ignoreMismatchedSizes
        ? [
          "ignoreMismatchedSizes re-initialises tensors whose shape differs (Hugging Face's ignore_mismatched_sizes)",
        ]
        : []),
      ...(headMissing
        ? [
          "allowNewHead initialises a head the file does not hold (Hugging Face's from_pretrained does, with a warning)",
        ]
        : []),
    ],
  });
  if (options.allowNewHead && !infos.some((p) => !p.site.startsWith("head") && found.has(p.name))) {
    throw new Error(
      `${source}: holds none of the body tensors of "${model.name}": not a ${family} checkpoint`,
    );
  }
  for (const [name, tensor] of found) {
    if (!isFloat(tensor)) throw new Error(`${source}: tensor "${name}" is not floating point`);
  }
  const newlyInitialized = infos.filter((p) => !aligned.has(p.name)).map((p) => p.name);
  return { aligned: found, report: { newlyInitialized, ignored, mismatched } };
}

/**
 * Checks Hugging Face tensors against a model without writing anything: one error naming `source`
 * and listing every missing, unexpected and misshapen tensor (see {@linkcode LoadOptions} for what
 * loading into another head allows). Body names with or without the task prefix (`bert.`,
 * `roberta.`, `transformer.`) are accepted; tied decoder copies and buffers Hugging Face never loads
 * are ignored.
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

/**
 * The warnings Hugging Face prints for a load report, one line per kind (none when everything
 * loaded): tensors of the file not used, parameters newly initialised, and those re-initialised
 * because their shape differs.
 */
export function loadWarnings(report: LoadReport, model: TransformerModel, source: string): string[] {
  const architecture = architectureName(model);
  const list = (names: string[]) => `[${names.map((n) => `'${n}'`).join(", ")}]`;
  const lines: string[] = [];
  if (report.ignored.length > 0) {
    lines.push(
      `Some weights of the model checkpoint at ${source} were not used when initializing ${architecture}: ` +
        list(report.ignored),
    );
  }
  if (report.newlyInitialized.length > 0) {
    lines.push(
      `Some weights of ${architecture} were not initialized from the model checkpoint at ${source} and are ` +
        `newly initialized: ${list(report.newlyInitialized)}`,
    );
  }
  if (report.mismatched.length > 0) {
    const shapes = report.mismatched.map((m) =>
      `${m.name}: found shape ${formatShape(m.found)} in the checkpoint and ${
        formatShape(m.expected)
      } in the model`
    );
    lines.push(
      `Some weights of ${architecture} were not initialized from the model checkpoint at ${source} and are ` +
        `newly initialized because the shapes did not match: ${shapes.join("; ")}`,
    );
  }
  return lines;
}

/** Whether a model attends causally as a BERT or RoBERTa decoder: `is_decoder` in its config.json. */
export function isDecoder(model: TransformerModel): boolean {
  return model.config.isDecoder || model.task === "causal-lm";
}

const ARCHITECTURE_TASKS: [RegExp, Task][] = [
  [/ForSequenceClassification$/, "sequence-classification"],
  [/ForTokenClassification$/, "token-classification"],
  [/ForQuestionAnswering$/, "question-answering"],
  [/(LMHeadModel|ForCausalLM)$/, "causal-lm"],
  [/ForMaskedLM$/, "masked-lm"],
  [/^(Bert|Roberta|GPT2)Model$/, "base"],
];

/** The class names of a config's `id2label` in id order, or undefined when it has none or not one name per id 0..n-1. */
export function fileLabels(json: Record<string, unknown>): string[] | undefined {
  const map = json.id2label;
  if (!map || typeof map !== "object" || Array.isArray(map)) return undefined;
  const entries = Object.entries(map as Record<string, unknown>);
  const names = entries.map((_, i) => (map as Record<string, unknown>)[String(i)]);
  return names.every((name) => typeof name === "string") ? names as string[] : undefined;
}

/**
 * Infers the task of a checkpoint from its `architectures` entry or, when it has none (hand-written
 * and older files), from its tensor names: the head's own tensors decide, never a missing pooler
 * (masked LMs and RoBERTa's classifiers have none). Two heads share their names: BERT's sequence
 * and token classifiers, told apart by the pooler only the first has; and a masked LM from a
 * causal one, which `is_decoder` marks. GPT-2's causal LM saves its body under `transformer.`
 * without the decoder it ties to the embeddings. A head this library lacks (`BertForMultipleChoice`,
 * `BertForPreTraining`, `GPT2DoubleHeadsModel`...) is refused, naming `configPath`: its tensors
 * could pass for one of ours (a multiple-choice scorer for a one-label regression).
 */
export function inferTask(
  config: Record<string, unknown>,
  names: Iterable<string>,
  configPath: string,
): { task: Task; numLabels?: number } {
  const first = Array.isArray(config.architectures) ? config.architectures[0] : undefined;
  const architecture = typeof first === "string" ? first : "";
  for (const [pattern, task] of ARCHITECTURE_TASKS) if (pattern.test(architecture)) return { task };
  if (architecture !== "") {
    throw new Error(
      `${configPath}: field "architectures" names ${architecture}, a head this library does not have; ` +
        `pass a task (${TASKS.join(", ")}) to load its body into that task's head`,
    );
  }
  const all = [...names];
  const has = (pattern: RegExp) => all.some((n) => pattern.test(n));
  if (has(/^qa_outputs\./)) return { task: "question-answering" };
  if (config.model_type === "gpt2") {
    if (has(/^score\./)) return { task: "sequence-classification" };
    if (has(/^classifier\./)) return { task: "token-classification" };
    return { task: has(/^(lm_head|transformer)\./) ? "causal-lm" : "base" };
  }
  if (has(/^classifier\.(dense|out_proj)\./)) return { task: "sequence-classification" };
  if (has(/^classifier\./)) {
    const pooled = config.model_type === "bert" && has(/^(bert\.)?pooler\./);
    return { task: pooled ? "sequence-classification" : "token-classification" };
  }
  if (has(/^(cls\.predictions|lm_head)\./)) {
    return { task: config.is_decoder === true ? "causal-lm" : "masked-lm" };
  }
  return { task: "base" };
}

/** Whether a tensor of the header loads as float32 (the other dtypes load as int32). */
export function isFloatHeader(tensor: TensorHeader): boolean {
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
  if (model.labels) {
    Object.assign(config, {
      id2label: Object.fromEntries(model.labels.map((label, i) => [String(i), label])),
      label2id: Object.fromEntries(model.labels.map((label, i) => [label, i])),
    });
  }
  // BertLMHeadModel and RobertaForCausalLM attend causally only when the config says so.
  if (model.config.family !== "gpt2") Object.assign(config, { is_decoder: isDecoder(model) });
  return { config, tensors };
}

/** The Hugging Face class of a model's family and head, as config.json's `architectures` names it. */
export function architectureName(model: TransformerModel): string {
  const family = { bert: "Bert", roberta: "Roberta", gpt2: "GPT2" }[model.config.family];
  const suffix: Record<Task, string> = {
    "base": "Model",
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    // Transformers' own names: BertLMHeadModel and GPT2LMHeadModel, but RobertaForCausalLM.
    "causal-lm": model.config.family === "roberta" ? "ForCausalLM" : "LMHeadModel",
    "masked-lm": "ForMaskedLM",
  };
  return family + suffix[model.task];
}

/**
 * `deno task describe <config.json | folder | bert | gpt2 | roberta> [--task T] [--batch B] [--length T] [--json]`:
 * prints the structural metadata of every parameter of a model (role, kind, site, layer, shape,
 * layout) - what the multi-model optimizer groups by - and the memory training it takes: bytes of
 * parameters, gradients, AdamW state and the activations of a B x T batch (models/memory.ts).
 * Builds metadata only; no weights are allocated.
 * Exits 2, with one line, on a bad flag, an unknown task or a source that is neither a family
 * nor a readable, valid config.json.
 *
 * @module
 */
import { dirname } from "node:path";
import { TASK_NAMES, type TaskName } from "../data/datasets.ts";
import { inferTask } from "../models/checkpoint.ts";
import { modelFromConfigFile } from "../models/pretrained.ts";
import { usablePositions } from "../models/inputs.ts";
import type { TensorHeader } from "../models/safetensors.ts";
import { locateWeights, SHARD_INDEX_FILE, WEIGHTS_FILE } from "../models/sharded.ts";
import { headFor } from "../train/models.ts";
import { formatBinary } from "../engine/pool.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { type Task, TASKS } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import { estimateMemory, type MemoryModel, type ModelMemory } from "../models/memory.ts";
import type { ParameterInfo } from "../models/parameters.ts";
import { exitWithUsageError, parseCommand, positiveInteger } from "./args.ts";

const FAMILIES = ["bert", "gpt2", "roberta"];

/**
 * Builds a model's metadata (no weights) from a family name, a Hugging Face config.json path, or a
 * folder holding one. `task` is a head, a `train --task` (the head that task trains for the family),
 * or absent: the folder's own head as loading infers it (the config's `architectures` entry, refused
 * when it names a head this library lacks, else its weights' names; the label count from the
 * classifier's rows, else the config), else the base model.
 */
async function describedModel(source: string, task?: string): Promise<TransformerModel> {
  const isTrainTask = (TASK_NAMES as readonly string[]).includes(task ?? "");
  if (task && !isTrainTask && !(TASKS as readonly string[]).includes(task)) {
    throw new Error(
      `unknown task "${task}"; valid: a head (${TASKS.join(", ")}) or a train task (${
        TASK_NAMES.join(", ")
      })`,
    );
  }
  const headOf = (family: ModelFamily): Task =>
    isTrainTask ? headFor(task as TaskName, family) : task as Task;
  if (FAMILIES.includes(source)) {
    const family = source as ModelFamily;
    return new TransformerModel(modelConfig(family), {
      task: task ? headOf(family) : "base",
      allocate: false,
    });
  }
  const isFolder = await Deno.stat(source).then((s) => s.isDirectory, () => false);
  const path = isFolder ? `${source}/config.json` : source;
  // A run's folder holds a config.json of its own (the run's options), not a model's.
  const text = await Deno.readTextFile(path).catch(() => null);
  let json = null;
  try {
    json = text === null ? null : JSON.parse(text);
  } catch (error) {
    throw new Error(`${path}: the configuration is not valid JSON: ${(error as Error).message}`);
  }
  if (json && typeof json === "object" && "options" in json && !("model_type" in json)) {
    throw new Error(
      `${path} is a training run's settings, not a model's: describe one of its models, ` +
        `${isFolder ? source : "<run>"}/checkpoints/step-N/models/<name>`,
    );
  }
  const base = await modelFromConfigFile(path, { task: "base", allocate: false });
  // The weights' names decide the head where the config names no architecture, as loading does; their
  // headers (not their values) are read, and a folder without weights has only its config to go by.
  const folder = isFolder ? source : dirname(path);
  const weighed = await Promise.all(
    [WEIGHTS_FILE, SHARD_INDEX_FILE].map((name) =>
      Deno.stat(`${folder}/${name}`).then(() => true, () => false)
    ),
  );
  // Weights that are there but broken (a missing shard, a bad header) are an error, as in loading.
  const headers = weighed.some((found) => found)
    ? (await locateWeights(folder)).headers
    : new Map<string, TensorHeader>();
  const classifier = [...headers].find(([n]) =>
    /(^|\.)(classifier|classifier\.out_proj|score)\.weight$/.test(n)
  );
  // The label count: the classifier's rows, else the config's.
  const labels = classifier?.[1].shape[0] ??
    (json.id2label && typeof json.id2label === "object"
      ? Object.keys(json.id2label).length
      : typeof json.num_labels === "number"
      ? json.num_labels
      : undefined);
  const head = task ? headOf(base.config.family) : inferTask(json, headers.keys(), path).task;
  return new TransformerModel(base.config, { task: head, numLabels: labels, allocate: false });
}

/** The memory lines of `describe`: what training the model takes at a batch of `batch` x `length` tokens. */
function memoryLines(name: string, model: MemoryModel, batch: number, length: number): string {
  const m: ModelMemory = estimateMemory({ [name]: model }, { batch, length }).models[name];
  const rows: [string, number][] = [
    ["parameters", m.parameters],
    ["gradients", m.gradients],
    ["optimizer state (AdamW moments)", m.optimizerState],
    [`activations (batch ${batch} x ${length})`, m.activations],
    ["backward peak (the two largest activation gradients and one N x C)", m.backwardPeak],
    ["total", m.total],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, bytes]) => `${label.padEnd(width)}  ${formatBinary(bytes)}`).join("\n");
}

/** Formats metadata as an aligned text table. */
function metadataTable(infos: readonly ParameterInfo[]): string {
  const rows = infos.map((p) => [
    p.name,
    p.role,
    p.kind,
    p.site,
    p.layer === null ? "-" : `${p.layer}/${p.layerCount}`,
    `[${p.shape.join(", ")}]`,
    p.layout,
  ]);
  const header = ["parameter", "role", "kind", "site", "layer", "shape", "layout"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

if (import.meta.main) {
  const { flags, positionals: [source] } = parseCommand({
    name: "describe",
    operands: `<config.json | folder | ${FAMILIES.join(" | ")}>`,
    positionals: [1, 1],
    summary:
      "Prints the structural metadata of every parameter of a model and the memory training it takes, " +
      "without allocating weights.",
    flags: {
      task: {
        type: "string",
        short: "t",
        value: "task",
        default: "auto",
        description: `the head to build: ${TASKS.join(", ")}, or a train --task (${
          TASK_NAMES.join(", ")
        }) for the head it trains; auto: a folder's own head, the base model of a family`,
      },
      batch: {
        type: "string",
        value: "N",
        default: "1",
        description: "sequences per batch, for the memory estimate",
      },
      length: {
        type: "string",
        value: "N",
        default: "128",
        description: "tokens per sequence, for the memory estimate (at most the model's positions)",
      },
      json: { type: "boolean", default: false, description: "print the parameter metadata as JSON" },
    },
  });
  const batch = positiveInteger("describe", "batch", flags.batch);
  let length = positiveInteger("describe", "length", flags.length);
  if (flags.json && (flags.batch !== "1" || flags.length !== "128")) {
    exitWithUsageError(
      "describe",
      "--batch and --length size the memory estimate, which --json does not print",
    );
  }
  let model: TransformerModel;
  try {
    model = await describedModel(source, flags.task === "auto" ? undefined : flags.task);
  } catch (error) {
    // Building metadata reads only the arguments, so every failure here is a bad argument: an
    // unknown task, or a config.json that is missing or not a model configuration.
    exitWithUsageError("describe", (error as Error).message);
  }
  // The default length is cut to the positions a smaller model can use (RoBERTa's start after its pad
  // id); a length given is checked against them.
  const usable = usablePositions(model.config);
  if (flags.length === "128") length = Math.min(length, usable);
  if (length > usable) {
    exitWithUsageError(
      "describe",
      `--length ${length} exceeds the ${usable} positions the model can use (maxPositions ${model.config.maxPositions})`,
    );
  }
  const infos = model.parameterSet.infos;
  const count = infos.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  if (flags.json) console.log(JSON.stringify(infos, null, 2));
  else {
    console.log(`${metadataTable(infos)}\n\n${infos.length} tensors, ${count} parameters\n`);
    console.log(`training memory, AdamW, float32:\n${memoryLines(model.name, model, batch, length)}`);
  }
}

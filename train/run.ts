/**
 * A run's folder, `runs/<id>/`: `config.json` (every setting, the adapter, the versions),
 * `metrics.jsonl` (one line per logged interval of steps and per evaluation), a checkpoint after each
 * evaluation (models as Hugging Face folders and the optimizer state, written atomically by saveCheckpoint),
 * `state.json` (which checkpoint is the latest, written after it; with `saveLimit`, older checkpoints
 * are then removed), the tokenizer(s) and `report.md`.
 * `--resume` reads state.json, loads that checkpoint and drops metric lines written after it, so a
 * resumed run continues bit for bit.
 *
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";
import type { Tokenizer } from "../data/tokenizer.ts";
import { tokenizerConfig, tokenizerText, writeTokenizer } from "../data/tokenizer_file.ts";
import { usablePositions } from "../models/inputs.ts";
import type { Task } from "../models/heads.ts";
import type { TransformerModel } from "../models/model.ts";
import { checkpointFiles, loadCheckpoint, saveCheckpoint } from "../optim/checkpoint.ts";
import type { MultiModelOptimizer } from "../optim/multimodel.ts";
import { headFor } from "./models.ts";
import { jsonLine, parseJsonLine } from "./json_lines.ts";
import { checkTrainOptions, defaultOptions, type TrainOptions } from "./options.ts";
import { renderReport, type RunRecord } from "./report.ts";
import type { EvaluationLine, StepLine } from "./session.ts";

/** Names a run writes in its folder (besides config.json): an --out that holds one is not taken. */
const RUN_FILES = ["metrics.jsonl", "state.json", "checkpoints", "tokenizer.json", "tokenizers", "report.md"];

/** The transformers pipeline task each head serves (transformers 5 has none for question answering). */
const HF_PIPELINES: Record<Task, string | null> = {
  "base": "feature-extraction",
  "sequence-classification": "text-classification",
  "token-classification": "token-classification",
  "question-answering": null,
  "causal-lm": "text-generation",
  "masked-lm": "fill-mask",
};

/** Whether anything (a link included) is at `path`. */
function lstatOk(path: string): Promise<boolean> {
  return Deno.lstat(path).then(() => true, () => false);
}

/** What `state.json` holds: the latest complete checkpoint. */
interface RunState {
  step: number;
  seconds: number;
}

/**
 * The layout of config.json and the run's counts: 2 counts a step as an update (`accumulate` batches);
 * the runs before it (no `format`) counted each batch as a step.
 */
const RUN_FORMAT = 2;

/** Facts about the run recorded beside the options in config.json. */
export interface RunFacts {
  /** Adapter name. */
  adapter: string;
  /** Versions: deno, the data package, the project and, in a git checkout, its commit. */
  versions: Record<string, string>;
  /** Dataset sizes per split. */
  counts: Record<string, number>;
  /** When the run started (ISO 8601). */
  started: string;
}

/**
 * What each option added since the first runs (whose config.json held every other) means for a run
 * saved before it: what that run did.
 */
const OPTIONS_BEFORE_THEY_EXISTED: Partial<TrainOptions> = {
  evalEvery: null,
  evalLimit: null,
  saveLimit: null,
  dropout: 0.1,
  shuffledLabels: [],
  docStride: null,
  decayBiasesAndNorms: true,
};

/** The folder of one run and the files in it. */
export class RunFolder {
  #seconds = 0;
  /** What this process created (paths), newest last: what {@linkcode RunFolder.discard} may remove. */
  readonly #created: string[] = [];
  #logged = false;

  /** A run folder at `path` (created by {@linkcode RunFolder.create}). */
  constructor(readonly path: string, readonly options: TrainOptions, readonly facts: RunFacts) {}

  /** Creates the folder of a new run and writes config.json; refuses a folder that already holds a run. */
  static async create(options: TrainOptions, facts: RunFacts): Promise<RunFolder> {
    const exists = (file: string) => lstatOk(`${options.out}/${file}`);
    if (await exists("config.json")) {
      const json = await Deno.readTextFile(`${options.out}/config.json`).then(JSON.parse).catch(() => null);
      throw new Error(
        !json?.options?.task
          ? `train: ${options.out} holds a config.json that is not a run's (a model's folder?); use another --out`
          : await exists("state.json")
          ? `train: ${options.out} already holds a run (use --resume ${options.out} or another --out)`
          : `train: ${options.out} holds a run with no checkpoint (it stopped, or has not reached its first ` +
            `evaluation), so there is nothing to resume: once it is not running, remove the folder ` +
            `(rm -r ${options.out}) or use another --out`,
      );
    }
    // A run writes these names: a folder that already holds one is someone else's, never overwritten.
    const taken = [];
    for (const name of RUN_FILES) if (await exists(name)) taken.push(name);
    if (taken.length > 0) {
      throw new Error(
        `train: ${options.out} already holds ${taken.join(", ")}, which a run would write; use another --out`,
      );
    }
    // Every folder of the path the run makes, outermost first, so that discard removes them innermost first.
    const made: string[] = [];
    for (let path = resolve(options.out); !(await lstatOk(path)); path = dirname(path)) made.unshift(path);
    await Deno.mkdir(options.out, { recursive: true });
    const folder = new RunFolder(options.out, options, facts);
    folder.#created.push(...made);
    await folder.#write(
      "config.json",
      (path) =>
        writeAtomically(path, JSON.stringify({ format: RUN_FORMAT, options, ...facts }, null, 2) + "\n"),
    );
    await folder.#write("metrics.jsonl", (path) => Deno.writeTextFile(path, ""));
    return folder;
  }

  /** Writes a new run's tokenizers: tokenizer.json when the models share one, else tokenizers/<name>.json. */
  async writeTokenizers(tokenizers: Record<string, Tokenizer>): Promise<void> {
    const distinct = new Set(Object.values(tokenizers));
    if (distinct.size === 1) {
      await this.#write("tokenizer.json", (path) => writeTokenizer([...distinct][0], path));
      return;
    }
    await this.#write("tokenizers", Deno.mkdir);
    for (const [name, tokenizer] of Object.entries(tokenizers)) {
      await this.#write(`tokenizers/${name}.json`, (path) => writeTokenizer(tokenizer, path));
    }
  }

  /** Writes `name` (not there before: see {@linkcode RunFolder.create}) with `write` and records it as this run's. */
  async #write(name: string, write: (path: string) => Promise<void>): Promise<void> {
    const path = `${this.path}/${name}`;
    await write(path);
    this.#created.push(path);
  }

  /** Opens an earlier run: its options (those added since it was written as it ran) and facts from config.json. */
  static async open(path: string): Promise<RunFolder> {
    const file = `${path}/config.json`;
    let json: { format?: number; options: TrainOptions } & RunFacts;
    try {
      json = JSON.parse(await Deno.readTextFile(file));
    } catch (error) {
      throw new Error(`train: cannot read ${file}: ${(error as Error).message}`);
    }
    if (!json?.options?.task || !Array.isArray(json.options.models)) {
      throw new Error(`train: ${file} is not the config.json of a run (no options.task / options.models)`);
    }
    if ((json.format ?? 1) < RUN_FORMAT && json.options.accumulate > 1) {
      throw new Error(
        `train: ${file} is a run from before a step counted its --accumulate batches as one update, and ` +
          `its checkpoints count batches; resume it with the version that wrote it (${
            json.versions?.commit ?? "see its versions"
          })`,
      );
    }
    if ((json.format ?? 1) > RUN_FORMAT) {
      throw new Error(
        `train: ${file} has format ${json.format}, newer than this version reads (${RUN_FORMAT})`,
      );
    }
    // A run from before an option existed goes on as it began: without the mechanism, limit or window
    // the option added (qa's runs cut contexts, every parameter decayed, at the decay then fixed).
    const options = { ...OPTIONS_BEFORE_THEY_EXISTED, ...json.options, out: path };
    // Before --independent refused them, it ignored --weights and --align-init: such runs go on without.
    if (options.independent) Object.assign(options, { weights: null, alignInit: false });
    const missing = Object.keys(defaultOptions()).filter((key) => !(key in options));
    if (missing.length > 0) {
      throw new Error(
        `train: ${file} has no ${missing.join(", ")}: resume it with the version that wrote it (${
          json.versions?.commit ?? "see its versions"
        })`,
      );
    }
    // The options go on as they were checked when the run began; a file changed since then must not
    // train on values a new run would refuse (a batch of 1.5 trains, silently otherwise).
    try {
      checkTrainOptions(options);
    } catch (error) {
      throw new Error(`train: ${file}: ${(error as Error).message.replace(/^train: /, "")}`);
    }
    return new RunFolder(path, options, json);
  }

  /**
   * Removes what this process created in the folder (config.json, metrics.jsonl, the tokenizers, and
   * the folder itself when it made it), newest first: for a new run that failed before it logged or
   * saved anything, so that its `--out` can be used again. Nothing else is touched, and a folder that
   * still holds anything stays.
   */
  async discard(): Promise<void> {
    // Not recursive: a folder that holds anything else stays.
    for (const path of this.#created.splice(0).reverse()) await Deno.remove(path).catch(() => {});
  }

  /** Whether this process appended anything to metrics.jsonl (then a failed run keeps its folder, to debug). */
  get logged(): boolean {
    return this.#logged;
  }

  /** Appends logged training steps to metrics.jsonl. */
  async appendSteps(lines: readonly StepLine[]): Promise<void> {
    await this.#append(lines.map((l) => ({ type: "step", ...l })));
  }

  /** Appends evaluations to metrics.jsonl. */
  async appendEvaluations(lines: readonly EvaluationLine[]): Promise<void> {
    await this.#append(lines.map((l) => ({ type: "evaluation", ...l })));
  }

  async #append(records: readonly object[]): Promise<void> {
    if (records.length === 0) return;
    this.#logged = true;
    const text = records.map(jsonLine).join("");
    await Deno.writeTextFile(`${this.path}/metrics.jsonl`, text, { append: true });
  }

  /**
   * Saves the checkpoint after `step` (one per optimizer), then records it in state.json (and, with
   * `saveLimit`, removes the older ones beyond it). Each model's
   * folder gets its tokenizer (`tokenizer.json` and Hugging Face's `tokenizer_config.json`), so that it
   * is a Hugging Face folder on its own (`from_pretrained` of model and tokenizer, or `--from name=`).
   */
  async checkpoint(
    step: number,
    optimizers: readonly MultiModelOptimizer[],
    models: Record<string, TransformerModel>,
    seconds: number,
    tokenizers: Record<string, Tokenizer> = {},
  ): Promise<void> {
    const folder = checkpointFolder(this.path, step);
    const encode = (text: string) => new TextEncoder().encode(text);
    for (const optimizer of optimizers) {
      const own = Object.fromEntries(optimizer.modelNames.map((n) => [n, models[n]]));
      const files: Record<string, Uint8Array> = {};
      for (const name of optimizer.modelNames.filter((n) => tokenizers[n])) {
        const { config } = models[name];
        files[`models/${name}/tokenizer.json`] = encode(tokenizerText(tokenizers[name]));
        const hfConfig = tokenizerConfig(tokenizers[name], config.family, usablePositions(config));
        files[`models/${name}/tokenizer_config.json`] = encode(JSON.stringify(hfConfig, null, 2) + "\n");
      }
      await saveCheckpoint(
        optimizers.length === 1 ? folder : `${folder}/${optimizer.modelNames[0]}`,
        optimizer,
        own,
        files,
      );
    }
    await writeAtomically(
      `${this.path}/state.json`,
      JSON.stringify({ step, seconds } satisfies RunState) + "\n",
    );
    if (this.options.saveLimit !== null) await this.#pruneCheckpoints(this.options.saveLimit);
  }

  /**
   * Removes all but the newest `kept` checkpoints (and what interrupted saves of the removed steps left
   * beside them), once state.json naming the newest is on disk. A `step-N` folder that holds no
   * checkpoint (no optimizer.json in it or in its models' folders) is the user's and stays.
   */
  async #pruneCheckpoints(kept: number): Promise<void> {
    const folder = `${this.path}/checkpoints`;
    const checkpoints: { step: number; name: string }[] = [];
    const leftovers: { step: number; name: string }[] = [];
    for await (const entry of Deno.readDir(folder)) {
      const match = /^step-(\d+)(\.(tmp|old)-[0-9a-f-]{36})?$/.exec(entry.name);
      if (!match || !entry.isDirectory) continue;
      const found = { step: Number(match[1]), name: entry.name };
      if (match[2]) leftovers.push(found);
      else if (await holdsCheckpoint(`${folder}/${entry.name}`)) checkpoints.push(found);
    }
    const newest = new Set(checkpoints.map((c) => c.step).sort((a, b) => b - a).slice(0, kept));
    for (const { step, name } of [...checkpoints, ...leftovers]) {
      if (!newest.has(step)) await Deno.remove(`${folder}/${name}`, { recursive: true });
    }
  }

  /** Seconds the run spent before this session (0 for a new run). */
  get previousSeconds(): number {
    return this.#seconds;
  }

  /**
   * Loads the latest checkpoint into the models and optimizers and drops metric lines written after
   * it; returns the step to continue from.
   */
  async restore(
    optimizers: readonly MultiModelOptimizer[],
    models: Record<string, TransformerModel>,
  ): Promise<number> {
    const state = await readState(this.path);
    const folder = checkpointFolder(this.path, state.step);
    for (const optimizer of optimizers) {
      const own = Object.fromEntries(optimizer.modelNames.map((n) => [n, models[n]]));
      await loadCheckpoint(
        optimizers.length === 1 ? folder : `${folder}/${optimizer.modelNames[0]}`,
        optimizer,
        own,
      );
    }
    const kept = (await this.#lines()).filter((l) =>
      (l.step as number) <= state.step && (l.type === "step" || l.split === "validation")
    );
    await Deno.writeTextFile(
      `${this.path}/metrics.jsonl`,
      kept.map(jsonLine).join(""),
    );
    this.#seconds = state.seconds;
    return state.step;
  }

  /** The records of metrics.jsonl; a line that is not a JSON object is an error naming the file and line. */
  async #lines(): Promise<Record<string, unknown>[]> {
    const file = `${this.path}/metrics.jsonl`;
    const text = await Deno.readTextFile(file).catch(() => "");
    const lines = text.split("\n");
    // A crash while appending leaves a last line without its newline: never a complete record.
    if (!text.endsWith("\n")) lines.pop();
    return lines.flatMap((line, i) => {
      if (line.trim() === "") return [];
      let value: unknown;
      try {
        value = parseJsonLine(line);
      } catch {
        value = undefined;
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new Error(`train: ${file}: line ${i + 1} is not a JSON object: ${line.slice(0, 80)}`);
      }
      return [value as Record<string, unknown>];
    });
  }

  /** Everything the report needs, from metrics.jsonl and config.json. */
  async record(
    extra: {
      baseline: RunRecord["baseline"];
      seconds: number;
      title: string;
      metricName: string;
      higherIsBetter: boolean;
    },
  ): Promise<RunRecord> {
    const lines = await this.#lines();
    const steps: RunRecord["steps"] = [];
    const total = { steps: 0, seconds: 0, tokens: 0 };
    const skippedBefore: Record<string, number> = {};
    const updates: Record<string, { updates: number; skipped: number }> = {};
    for (const line of lines.filter((l) => l.type === "step") as unknown as StepLine[]) {
      total.steps += line.steps;
      total.seconds += line.seconds;
      total.tokens += line.tokens;
      for (const [model, m] of Object.entries(line.models)) {
        const skipped = m.skipped > (skippedBefore[model] ?? 0);
        skippedBefore[model] = m.skipped;
        updates[model] = { updates: m.updates, skipped: m.skipped };
        steps.push({
          step: line.step,
          model,
          loss: m.loss,
          lr: m.lr,
          lrMultiplier: m.lrMultiplier,
          gradNorm: m.gradNorm,
          skipped,
        });
      }
    }
    const seconds = Math.max(total.seconds, 1e-9);
    const checkpoint = await latestCheckpoint(this.path).catch(() => null);
    const modelFolders: RunRecord["modelFolders"] = {};
    for (const spec of this.options.models) {
      const folder = checkpoint ? await checkpointModel(checkpoint, spec.name) : null;
      if (!folder) continue;
      const head = headFor(this.options.task, spec.family);
      modelFolders[spec.name] = { folder: relative(this.path, folder), pipeline: HF_PIPELINES[head] };
    }
    return {
      title: extra.title,
      config: { ...this.options, versions: this.facts.versions, counts: this.facts.counts } as Record<
        string,
        unknown
      >,
      adapter: this.facts.adapter,
      started: this.facts.started,
      durationSeconds: extra.seconds,
      models: this.options.models.map((m) => m.name),
      metricName: extra.metricName,
      higherIsBetter: extra.higherIsBetter,
      steps,
      updates,
      evaluations: lines.filter((l) => l.type === "evaluation") as unknown as RunRecord["evaluations"],
      baseline: extra.baseline,
      throughput: { stepsPerSecond: total.steps / seconds, tokensPerSecond: total.tokens / seconds },
      modelFolders,
    };
  }
}

/** The folder of the checkpoint taken after `step`. */
function checkpointFolder(run: string, step: number): string {
  return `${run}/checkpoints/step-${step}`;
}

/**
 * The Hugging Face folder of model `name` in a checkpoint: `models/<name>`, or `<name>/models/<name>`
 * where each model had an optimizer of its own (`--independent`); null when it holds no such model.
 */
export async function checkpointModel(checkpoint: string, name: string): Promise<string | null> {
  for (const folder of [`${checkpoint}/models/${name}`, `${checkpoint}/${name}/models/${name}`]) {
    if (await Deno.stat(`${folder}/config.json`).then(() => true, () => false)) return folder;
  }
  return null;
}

/** Whether a checkpoint folder of a run holds a checkpoint: an optimizer.json, or one per model (independent runs). */
async function holdsCheckpoint(folder: string): Promise<boolean> {
  const has = (path: string) => Deno.stat(path).then((info) => info.isFile, () => false);
  if (await has(`${folder}/optimizer.json`)) return true;
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isDirectory && await has(`${folder}/${entry.name}/optimizer.json`)) return true;
  }
  return false;
}

/** The latest complete checkpoint of a run, from its state.json. */
async function readState(run: string): Promise<RunState> {
  try {
    const state = JSON.parse(await Deno.readTextFile(`${run}/state.json`));
    if (Number.isSafeInteger(state.step) && state.step >= 0 && Number.isFinite(state.seconds)) return state;
  } catch {
    // Reported below, naming the run.
  }
  throw new Error(`train: ${run} has no complete checkpoint (no valid state.json)`);
}

/** The folder of a run's latest checkpoint (for `--from <run>` and `--resume`). */
export async function latestCheckpoint(run: string): Promise<string> {
  const { step } = await readState(run);
  const folder = checkpointFolder(run, step);
  if (!(await Deno.stat(folder).then(() => true, () => false))) {
    throw new Error(
      `train: ${run}/state.json names the checkpoint of step ${step}, but ${folder} is missing`,
    );
  }
  return folder;
}

/**
 * Writes a small file through a temporary name and a rename, so readers never see half of it; the
 * data and the rename are on disk when it returns (state.json must be before checkpoints are pruned).
 */
async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.tmp-${crypto.randomUUID()}`;
  await checkpointFiles.writeFile(temporary, new TextEncoder().encode(text));
  await Deno.rename(temporary, path);
  await checkpointFiles.syncFolder(dirname(path));
}

/**
 * Writes `report.md` and the SVG plots it embeds into `folder` (created if missing) and returns the
 * paths written. Needs `--allow-write` for the folder.
 */
export async function writeReport(folder: string, run: RunRecord): Promise<string[]> {
  await Deno.mkdir(folder, { recursive: true });
  const written: string[] = [];
  for (const [name, text] of Object.entries(renderReport(run))) {
    const path = join(folder, name);
    await Deno.writeTextFile(path, text);
    written.push(path);
  }
  return written;
}

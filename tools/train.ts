/**
 * `deno task train [options]`: trains BERT-, GPT-2- and RoBERTa-style models together on a real task
 * and writes `runs/<id>/` (config.json, metrics.jsonl, checkpoints, tokenizer, report.md). With no
 * flags: the three families, small and from scratch, jointly on `sentiment`. `--help` lists every flag.
 *
 * @module
 */
import {
  checkTrainOptions,
  defaultDocStride,
  defaultOptions,
  parseModels,
  type PresetName,
  PRESETS,
  TASK_MAX_LENGTH,
  type TrainOptions,
} from "../train/options.ts";
import { TASK_NAMES, type TaskName } from "../data/datasets.ts";
import { train } from "../train/loop.ts";
import { exitWithUsageError, parseCommand, positiveInteger } from "./args.ts";
import { openGpuOrExit } from "../engine/start.ts";

const NAME = "train";

const spec = {
  name: NAME,
  operands: "",
  positionals: [0, 0] as const,
  summary: "Trains several transformer models together on a real task and writes runs/<id>/report.md.",
  flags: {
    task: {
      type: "string",
      default: "sentiment",
      value: "name",
      description: `task: ${TASK_NAMES.join(", ")}`,
    },
    models: {
      type: "string",
      default: "bert,gpt2,roberta",
      value: "list",
      description: "models: family[:HIDDENxLAYERS] or name=family[:HIDDENxLAYERS], comma-separated",
    },
    preset: {
      type: "string",
      default: "cpu",
      value: "name",
      description: "sizes and epochs: cpu (minutes on 2 cores) or gpu",
    },
    hidden: { type: "string", default: "preset", value: "n", description: "hidden size of every model" },
    layers: { type: "string", default: "preset", value: "n", description: "layers of every model" },
    heads: { type: "string", default: "preset", value: "n", description: "attention heads of every model" },
    epochs: { type: "string", default: "preset", value: "n", description: "passes over the training split" },
    steps: {
      type: "string",
      default: "preset",
      value: "n",
      description:
        "training steps, each an update of --accumulate batches (overrides --epochs; the cpu preset gives " +
        "ner, pos, spam, qa and lm a budget)",
    },
    "eval-every": {
      type: "string",
      default: "preset",
      value: "n|epoch",
      description:
        "steps between evaluations and checkpoints, or epoch (preset: every epoch, or a third of the " +
        "run with --steps or a step budget)",
    },
    "log-every": {
      type: "string",
      default: "10",
      value: "n",
      description: "steps between reads of the losses (a step itself reads nothing back)",
    },
    "eval-limit": {
      type: "string",
      default: "preset",
      value: "n|all",
      description: "validation and test examples used (n spread evenly over each split)",
    },
    "save-limit": {
      type: "string",
      default: "all",
      value: "n|all",
      description: "checkpoints kept, the newest n (all: one per evaluation)",
    },
    batch: { type: "string", default: "preset", value: "n", description: "examples per batch" },
    lr: {
      type: "string",
      default: "1e-3",
      value: "rate",
      description: "peak learning rate (warmup then cosine to 10%)",
    },
    seed: {
      type: "string",
      default: "0",
      value: "n",
      description: "seed of weights, data order, dropout and masking",
    },
    "max-length": {
      type: "string",
      default: "per task",
      value: "n",
      description: "longest sequence in tokens",
    },
    "doc-stride": {
      type: "string",
      default: "max-length/4",
      value: "n|off",
      description:
        "qa: context tokens shared by a long context's windows, a row each (2.1 rows per question at 256 " +
        "tokens, 18 at 64; off: cut at --max-length)",
    },
    vocab: {
      type: "string",
      default: "preset",
      value: "n",
      description: "vocabulary of the tokenizer trained on the data",
    },
    sharing: { type: "string", default: "0.2", value: "ratio|off", description: "gradient sharing ratio" },
    sync: {
      type: "string",
      default: "0.1",
      value: "ratio|off",
      description: "soft parameter sync ratio (every 10 updates)",
    },
    adaptive: {
      type: "string",
      default: "on",
      value: "on|off",
      description: "convergence-aware learning-rate multipliers",
    },
    weights: {
      type: "string",
      default: "equal",
      value: "name=w,...",
      description: "per-model weights (models not named weigh 1)",
    },
    "align-init": {
      type: "boolean",
      default: false,
      description: "give each sharing group one initial value",
    },
    dropout: {
      type: "string",
      default: "preset",
      value: "p",
      description: "dropout of models built from scratch",
    },
    accumulate: {
      type: "string",
      default: "1",
      value: "n",
      description:
        "batches per step (update), their gradients averaged (each batch weighs the same); an epoch's last step may have fewer",
    },
    "weight-decay": {
      type: "string",
      default: "0.01",
      value: "w",
      description: "AdamW's decoupled weight decay",
    },
    "decay-biases-and-norms": {
      type: "string",
      default: "on",
      value: "on|off",
      description:
        "weight decay on biases and LayerNorm weights too, as torch.optim.AdamW (off: exempt, as Hugging Face's Trainer)",
    },
    clip: { type: "string", default: "1", value: "norm|off", description: "per-model gradient-norm bound" },
    distill: {
      type: "string",
      default: "0",
      value: "lambda",
      description: "mutual distillation weight (0: off)",
    },
    independent: { type: "boolean", default: false, description: "one plain AdamW per model, no mechanism" },
    "shuffled-labels": {
      type: "string",
      default: "none",
      value: "name,...",
      description: "models trained on permuted labels (a placebo partner; classification)",
    },
    from: {
      type: "string",
      default: "none",
      value: "run|name=folder,...",
      description: "start from an earlier run's last checkpoint, or models from Hugging Face folders",
    },
    resume: {
      type: "string",
      default: "none",
      value: "run",
      description: "continue an interrupted run bit for bit",
    },
    out: { type: "string", default: "runs/<time>-<task>", value: "folder", description: "the run's folder" },
    limit: { type: "string", default: "none", value: "n", description: "at most n examples per split" },
    quiet: { type: "boolean", default: false, description: "plain progress lines instead of a live line" },
  },
} as const;

function ratioOrOff(flag: string, value: string): number | false {
  if (value === "off") return false;
  const n = Number(value);
  if (value.trim() === "" || !(n >= 0 && n <= 1)) {
    exitWithUsageError(NAME, `--${flag} must be a ratio in [0, 1] or off, got "${value}"`);
  }
  return n;
}

function positiveNumber(flag: string, value: string, allowZero = false): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    exitWithUsageError(
      NAME,
      `--${flag} must be a ${allowZero ? "number >= 0" : "positive number"}, got "${value}"`,
    );
  }
  return n;
}

/** Builds a run's options from the command line (exits 2 with one line on a bad value). */
export function optionsFromArgs(args: readonly string[]): { options: TrainOptions; resume: string | null } {
  const { flags } = parseCommand(spec, args);
  if (flags.resume !== "none") {
    // A resumed run continues with its own options (config.json): any other would be silently ignored.
    const given = (Object.keys(spec.flags) as (keyof typeof flags)[]).filter((flag) =>
      flag !== "resume" && flag !== "quiet" && flags[flag] !== spec.flags[flag].default
    );
    if (given.length) {
      exitWithUsageError(
        NAME,
        `--resume continues the run with its own options; --${given[0]} cannot change them`,
      );
    }
  }
  if (!(TASK_NAMES as readonly string[]).includes(flags.task)) {
    exitWithUsageError(NAME, `unknown task "${flags.task}"; valid tasks: ${TASK_NAMES.join(", ")}`);
  }
  if (!(flags.preset in PRESETS)) exitWithUsageError(NAME, `unknown preset "${flags.preset}" (cpu, gpu)`);
  const task = flags.task as TaskName;
  const options = defaultOptions(task, flags.preset as PresetName);
  const preset = PRESETS[flags.preset as PresetName];
  const int = (flag: keyof typeof flags, fallback: number) => {
    const value = flags[flag] as string;
    return value === spec.flags[flag].default ? fallback : positiveInteger(NAME, flag, value);
  };
  const size = {
    hiddenSize: int("hidden", preset.hiddenSize),
    numLayers: int("layers", preset.numLayers),
    numHeads: int("heads", preset.numHeads),
    intermediateSize: 4 * int("hidden", preset.hiddenSize),
  };
  try {
    options.models = parseModels(flags.models, size);
  } catch (error) {
    exitWithUsageError(NAME, (error as Error).message);
  }
  if (flags.epochs !== "preset") {
    options.epochs = positiveInteger(NAME, "epochs", flags.epochs);
    options.steps = null;
    options.evalEvery = null;
  }
  if (flags.steps !== "preset") {
    options.steps = positiveInteger(NAME, "steps", flags.steps);
    // Three evaluations over the run, as the presets' budgets have (--eval-every below overrides).
    options.evalEvery = Math.ceil(options.steps / 3);
  }
  if (flags["eval-every"] !== "preset") {
    options.evalEvery = flags["eval-every"] === "epoch"
      ? null
      : positiveInteger(NAME, "eval-every", flags["eval-every"]);
  }
  if (flags["eval-limit"] !== "preset") {
    options.evalLimit = flags["eval-limit"] === "all"
      ? null
      : positiveInteger(NAME, "eval-limit", flags["eval-limit"]);
  }
  if (flags["save-limit"] !== "all") {
    options.saveLimit = positiveInteger(NAME, "save-limit", flags["save-limit"]);
  }
  options.logEvery = positiveInteger(NAME, "log-every", flags["log-every"]);
  options.batchSize = int("batch", preset.batchSize);
  options.maxLength = int("max-length", TASK_MAX_LENGTH[task]);
  const docStride = flags["doc-stride"];
  if (task === "qa") options.docStride = defaultDocStride(options.maxLength);
  if (docStride !== spec.flags["doc-stride"].default) {
    if (task !== "qa") exitWithUsageError(NAME, `--doc-stride applies to qa only, not ${task}`);
    if (docStride !== "off" && !/^\d+$/.test(docStride)) {
      exitWithUsageError(NAME, `--doc-stride must be an integer >= 0 or off, got "${docStride}"`);
    }
    options.docStride = docStride === "off" ? null : Number(docStride);
  }
  options.vocabSize = int("vocab", preset.vocabSize);
  options.lr = positiveNumber("lr", flags.lr);
  options.seed = flags.seed === "0" ? 0 : positiveInteger(NAME, "seed", flags.seed);
  options.sharing = ratioOrOff("sharing", flags.sharing);
  options.sync = ratioOrOff("sync", flags.sync);
  if (flags.adaptive !== "on" && flags.adaptive !== "off") {
    exitWithUsageError(NAME, `--adaptive must be on or off, got "${flags.adaptive}"`);
  }
  options.adaptive = flags.adaptive === "on";
  options.alignInit = flags["align-init"];
  options.weightDecay = positiveNumber("weight-decay", flags["weight-decay"], true);
  const decayBiasesAndNorms = flags["decay-biases-and-norms"];
  if (decayBiasesAndNorms !== "on" && decayBiasesAndNorms !== "off") {
    exitWithUsageError(NAME, `--decay-biases-and-norms must be on or off, got "${decayBiasesAndNorms}"`);
  }
  options.decayBiasesAndNorms = decayBiasesAndNorms === "on";
  options.accumulate = positiveInteger(NAME, "accumulate", flags.accumulate);
  if (flags.dropout !== "preset") options.dropout = positiveNumber("dropout", flags.dropout, true);
  options.clip = flags.clip === "off" ? null : positiveNumber("clip", flags.clip);
  options.distill = positiveNumber("distill", flags.distill, true);
  options.independent = flags.independent;
  // Values that agree with --independent (off) are accepted; one that turns a mechanism on is not.
  const mechanisms = (["sharing", "sync"] as const).filter((name) =>
    flags[name] !== spec.flags[name].default && flags[name] !== "off"
  );
  if (flags.independent && mechanisms.length > 0) {
    exitWithUsageError(
      NAME,
      `--independent trains each model alone; it excludes --${mechanisms.join(", --")}`,
    );
  }
  if (flags["shuffled-labels"] !== "none") options.shuffledLabels = flags["shuffled-labels"].split(",");
  options.quiet = flags.quiet;
  options.limit = flags.limit === "none" ? null : positiveInteger(NAME, "limit", flags.limit);
  if (flags.weights !== "equal") {
    options.weights = {};
    for (const entry of flags.weights.split(",")) {
      const [name, value] = entry.split("=");
      if (!name || value === undefined) {
        exitWithUsageError(NAME, `--weights: cannot read "${entry}"; expected name=weight`);
      }
      if (name in options.weights) exitWithUsageError(NAME, `--weights names "${name}" twice`);
      options.weights[name] = positiveNumber("weights", value);
    }
  }
  if (flags.from !== "none") {
    options.from = flags.from.includes("=")
      ? Object.fromEntries(
        flags.from.split(",").map((entry) => {
          const [name, ...folder] = entry.split("=");
          return [name, folder.join("=")];
        }),
      )
      : { "*": flags.from };
  }
  const loaded = options.models.filter((m) => "*" in options.from || m.name in options.from);
  if (loaded.length === options.models.length) {
    const sizes = (["hidden", "layers", "heads", "vocab", "dropout"] as const)
      .filter((flag) => flags[flag] !== spec.flags[flag].default).map((flag) => `--${flag}`);
    if (flags.models.includes(":")) sizes.push("--models sizes");
    if (sizes.length > 0) {
      exitWithUsageError(
        NAME,
        `--from loads every model with the sizes, dropout and tokenizer it was saved with; ${
          sizes[0]
        } would change none`,
      );
    }
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  options.out = flags.out === spec.flags.out.default ? `runs/${stamp}-${task}` : flags.out;
  return { options, resume: flags.resume === "none" ? null : flags.resume };
}

/** The results as an aligned table: one row per model and the baseline, validation and test metrics. */
function resultsTable(
  results: Record<string, { validation: Record<string, number>; test: Record<string, number> }>,
): string {
  const keys = [...new Set(Object.values(results).flatMap((r) => Object.keys(r.validation)))];
  const format = (
    v: number | undefined,
  ) => (v === undefined ? "-" : Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4));
  const header = ["model", ...keys.map((k) => `validation ${k}`), ...keys.map((k) => `test ${k}`)];
  const rows = Object.entries(results).map(([name, r]) => [
    name,
    ...keys.map((k) => format(r.validation[k])),
    ...keys.map((k) => format(r.test[k])),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  return [header, ...rows].map((row) => row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join(
    "\n",
  );
}

if (import.meta.main) {
  const { options, resume } = optionsFromArgs(Deno.args);
  // Settings that cannot work together are usage errors, found before the GPU opens.
  if (resume === null) {
    try {
      checkTrainOptions(options);
    } catch (error) {
      exitWithUsageError(NAME, (error as Error).message.replace(/^train: /, ""));
    }
  }
  await openGpuOrExit();
  try {
    const result = await train(options, {}, resume ?? undefined);
    console.log(resultsTable(result.results));
    console.log(
      `\n${result.steps} steps in ${result.seconds.toFixed(0)} s; report: ${result.folder}/report.md`,
    );
  } catch (error) {
    const message = (error as Error).message;
    console.error(message.startsWith(`${NAME}: `) ? message : `${NAME}: ${message}`);
    Deno.exit(1);
  }
}

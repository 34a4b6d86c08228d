/**
 * Everything `deno task train` prepares before its first step, from files: the data set from its npm
 * package, the tokenizers and models of earlier runs or Hugging Face folders, and the run folder.
 * What it prepares in memory (tokenizers trained, models built, batches) is `prepareSession`'s, in
 * session.ts, which the web page uses too. Deno only.
 *
 * @module
 */
import { type Dataset, describeDataset } from "../data/datasets.ts";
import { loadDataset } from "../data/load.ts";
import { evenlySpaced } from "../data/splits.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { readTokenizer } from "../data/tokenizer_file.ts";
import { gpu } from "../engine/device.ts";
import project from "../deno.json" with { type: "json" };
import { loadWarnings } from "../models/checkpoint.ts";
import { loadPretrainedWithReport } from "../models/pretrained.ts";
import type { TransformerModel } from "../models/model.ts";
import { checkoutCommit } from "./checkout.ts";
import { headFor, modelSeed } from "./models.ts";
import type { ModelSpec, TrainOptions } from "./options.ts";
import { checkpointModel, latestCheckpoint, type RunFacts, RunFolder } from "./run.ts";
import { type PreparedSession, prepareSession } from "./session.ts";

/** A run ready to train: options, data and batches, models, tokenizers, folder. */
export interface PreparedRun extends PreparedSession {
  /** The run folder. */
  folder: RunFolder;
}

/**
 * Loads the data, prepares tokenizers and models and opens the run folder (a new one, or the
 * run being resumed, whose options then replace `requested`).
 */
export async function prepareRun(
  requested: TrainOptions,
  info: (line: string) => void,
  resume?: string,
): Promise<PreparedRun> {
  const opened = resume ? await RunFolder.open(resume) : null;
  const options = opened ? { ...opened.options, quiet: requested.quiet } : requested;
  const dataset = await loadDataset(options.task, options.limit ? { limit: options.limit } : {});
  if (options.evalLimit !== null) {
    dataset.validation = evenlySpaced(dataset.validation, options.evalLimit);
    dataset.test = evenlySpaced(dataset.test, options.evalLimit);
  }
  info(describeDataset(dataset));
  const earlierRun = options.from["*"];
  const savedShared = opened
    ? `${opened.path}/tokenizer.json`
    : earlierRun
    ? `${earlierRun}/tokenizer.json`
    : null;
  const shared = savedShared && (await exists(savedShared)) ? await readTokenizer(savedShared) : null;
  const tokenizers: Record<string, Tokenizer> = {};
  for (const spec of options.models) {
    const folder = options.from[spec.name];
    // A run whose models had tokenizers of their own keeps them as tokenizers/<name>.json.
    const own = opened
      ? `${opened.path}/tokenizers/${spec.name}.json`
      : folder
      ? `${folder}/tokenizer.json`
      : earlierRun
      ? `${earlierRun}/tokenizers/${spec.name}.json`
      : null;
    if (own && (await exists(own))) tokenizers[spec.name] = await readTokenizer(own);
    else if (folder && !opened) {
      throw new Error(
        `--from ${spec.name}=${folder}: no tokenizer.json in the folder (older checkpoints keep theirs in the ` +
          "run's folder: start from the run with --from RUN, or copy its tokenizer.json beside config.json)",
      );
    }
  }
  if (earlierRun && !opened && !(await exists(`${earlierRun}/state.json`))) {
    if (await exists(`${earlierRun}/config.json`) && !(await exists(`${earlierRun}/metrics.jsonl`))) {
      throw new Error(
        `--from ${earlierRun}: a model's folder, not a run's: name the model it starts, --from bert=${earlierRun}`,
      );
    }
  }
  const checkpoint = earlierRun && !opened ? await latestCheckpoint(earlierRun) : null;
  // The folders of the models that start from a checkpoint (the earlier run's, or the resumed run's own).
  const resumed = opened ? await latestCheckpoint(opened.path) : null;
  const checkpointModels = new Map<string, string>();
  for (const spec of options.models) {
    const from = resumed ?? (options.from[spec.name] ? null : checkpoint);
    if (!from) continue;
    const folder = await checkpointModel(from, spec.name);
    if (!folder) {
      throw new Error(
        `${
          opened ? `--resume ${opened.path}` : `--from ${earlierRun}`
        }: the checkpoint ${from} holds no model "${spec.name}"`,
      );
    }
    checkpointModels.set(spec.name, folder);
  }
  // Resuming, every model is rebuilt from the run's own latest checkpoint, whose config.json holds the
  // architecture (and dropout) it trained with, whatever this version builds by default (a GPT-2 from
  // before pad ids were given to it has none); restoring then sets its values.
  const prepared = await prepareSession(options, dataset, {
    tokenizers,
    shared,
    loadModel: (spec, index) => {
      const checkpointed = checkpointModels.get(spec.name);
      const folder = checkpointed ?? (opened ? null : options.from[spec.name] ?? null);
      // Errors name the flag that chose the folder.
      const origin = !checkpointed
        ? `--from ${spec.name}=${folder}`
        : opened
        ? `--resume ${opened.path}`
        : `--from ${earlierRun}`;
      return folder
        ? loadModel(spec, folder, origin, options.task, dataset.labels, modelSeed(options.seed, index))
        : Promise.resolve(null);
    },
  });
  // The run's config.json records each model's real size, also for the models loaded from a folder.
  const specs = prepared.options.models.map((spec) => {
    const { hiddenSize, numLayers, numHeads, intermediateSize } = prepared.models[spec.name].config;
    return { ...spec, hiddenSize, numLayers, numHeads, intermediateSize };
  });
  const recorded = { ...options, models: specs };
  const folder = opened ?? (await RunFolder.create(recorded, runFacts(dataset)));
  if (!opened) {
    await folder.writeTokenizers(prepared.tokenizers).catch(async (error) => {
      await folder.discard();
      throw error;
    });
  }
  return { ...prepared, folder };
}

/**
 * Loads one model from a Hugging Face folder into the task's head (a new head is initialised, as HF
 * does, from `seed`: runs of other seeds start from other heads, as models built from scratch do).
 * Errors start with `origin`, the flag that named the folder.
 */
async function loadModel(
  spec: ModelSpec,
  folder: string,
  origin: string,
  task: TrainOptions["task"],
  labels: readonly string[],
  seed: number,
): Promise<TransformerModel> {
  const { model, report, source } = await loadPretrainedWithReport(folder, {
    name: spec.name,
    seed,
    task: headFor(task, spec.family),
    numLabels: Math.max(1, labels.length),
    ...(labels.length > 0 ? { labels } : {}),
    // Starting another task, the head is new: a classifier of another label count is re-initialised,
    // as Hugging Face's ignore_mismatched_sizes does; a body tensor of another shape is refused below.
    allowNewHead: true,
    ignoreMismatchedSizes: true,
  });
  const sites = new Map(model.parameterSet.infos.map((p) => [p.name, p.site]));
  const body = report.mismatched.find((m) => !sites.get(m.name)?.startsWith("head"));
  if (body) {
    model.dispose();
    throw new Error(
      `${origin}: ${source} holds "${body.name}" as [${body.found}], its config.json ` +
        `makes it [${body.expected}]`,
    );
  }
  for (const line of loadWarnings(report, model, source)) console.warn(line);
  if (model.config.family !== spec.family) {
    model.dispose();
    throw new Error(
      `${origin}: ${folder} holds a ${model.config.family} model, not ${spec.family}`,
    );
  }
  return model.train();
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

function runFacts(dataset: Dataset<unknown>): RunFacts {
  const commit = checkoutCommit();
  return {
    adapter: gpu().profile.name,
    versions: {
      deno: Deno.version.deno,
      multimodel: project.version,
      data: dataset.source,
      ...(commit ? { commit } : {}),
    },
    counts: { train: dataset.train.length, validation: dataset.validation.length, test: dataset.test.length },
    started: new Date().toISOString(),
  };
}

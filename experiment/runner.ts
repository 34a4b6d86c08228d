/**
 * Runs the experiment's protocol (experiment/protocol.ts) and appends one JSON line per finished run
 * to the results file as it goes, so an interrupted experiment resumes where it stopped: runs whose
 * key is already in the file are skipped. Each run trains in this process with train() and its
 * folder is removed once its line is written (the pretraining's folder is kept: later runs start
 * from it).
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import type { TrainOptions } from "../train/options.ts";
import { jsonLine, parseJsonLine } from "../train/json_lines.ts";
import { train } from "../train/loop.ts";
import { measureCompute } from "./compute.ts";
import { type ExperimentRun, parseRuns, validationScore } from "./runs.ts";
import {
  type ExperimentScale,
  gridRuns,
  laterRuns,
  type PlannedRun,
  pretrainingOptions,
} from "./protocol.ts";

/** Where results go and what to say while running. */
export interface RunnerSettings {
  /** The JSON-lines results file (appended to). */
  resultsFile: string;
  /** Folder for the runs' own folders (removed as they finish) and the pretraining. */
  workFolder: string;
  /** The command line, recorded with every run. */
  command: string;
  /** Progress lines. */
  info: (line: string) => void;
  /** The commit of the code that runs, recorded with every run (absent outside a git checkout). */
  commit?: string;
}

/**
 * Reads the results file (a missing file is an empty one); broken lines (an interrupted write) are
 * skipped and reported to `warn`.
 */
export async function readRuns(
  file: string,
  warn: (line: string) => void = () => {},
): Promise<ExperimentRun[]> {
  const { runs, problems } = parseRuns(await Deno.readTextFile(file).catch(() => ""));
  for (const problem of problems) warn(`${file}: ${problem}`);
  return runs;
}

async function append(file: string, run: ExperimentRun): Promise<void> {
  await Deno.writeTextFile(file, jsonLine(run), { append: true });
}

/** The grid's choice: per task and condition, the learning rate with the best mean validation score. */
export function chooseRates(runs: readonly ExperimentRun[]): Map<string, number> {
  const best = new Map<string, { lr: number; score: number }>();
  for (const run of runs.filter((r) => r.group === "grid")) {
    const key = `${run.task}/${run.condition}`;
    const sign = run.higherIsBetter ? 1 : -1;
    const score = sign * validationScore(run);
    const current = best.get(key);
    if (!current || score > current.score || (Number.isNaN(current.score) && !Number.isNaN(score))) {
      best.set(key, { lr: run.lr, score });
    }
  }
  return new Map([...best].map(([key, { lr }]) => [key, lr]));
}

/** The fields of the run's metrics.jsonl lines that its run line takes. */
interface MetricsLine {
  type: string;
  split?: string;
  model: string;
  step: number;
  metrics: Record<string, number>;
}

async function execute(planned: PlannedRun, settings: RunnerSettings): Promise<ExperimentRun> {
  const out = `${settings.workFolder}/${planned.key.replaceAll("/", "_")}`;
  await Deno.remove(out, { recursive: true }).catch(() => {});
  const options: TrainOptions = { ...planned.options, out };
  const started = performance.now();
  const result = await train(options, { info: () => {} });
  const seconds = (performance.now() - started) / 1000;
  const lines = (await Deno.readTextFile(`${out}/metrics.jsonl`)).split("\n").filter((l) => l !== "")
    .map((l) => parseJsonLine(l) as MetricsLine);
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  const models = planned.target ? [planned.target] : options.models.map((m) => m.name);
  const evaluation = lines.find((l) => l.type === "evaluation");
  const run: ExperimentRun = {
    key: planned.key,
    group: planned.group,
    task: planned.task,
    condition: planned.condition,
    lr: planned.lr,
    seed: planned.seed,
    metricName: result.metric.name,
    primaryMetric: result.metric.key,
    higherIsBetter: result.metric.higherIsBetter,
    models,
    final: Object.fromEntries(models.map((m) => [m, result.results[m]])),
    curve: lines.filter((l) =>
      l.type === "evaluation" && l.split === "validation" && models.includes(l.model)
    )
      .map((l) => ({ step: l.step, model: l.model, metrics: l.metrics })),
    stepsPerEpoch: result.stepsPerEpoch,
    totalSteps: options.steps ?? 0,
    seconds,
    command: settings.command,
    adapter: config.adapter,
    date: new Date().toISOString(),
    ...(settings.commit ? { commit: settings.commit } : {}),
  };
  if (!evaluation) throw new Error(`experiment: run ${planned.key} wrote no evaluation`);
  await Deno.remove(out, { recursive: true });
  return run;
}

/**
 * Runs every planned run of `scale` not yet in the results file, in protocol order, appending each
 * as it finishes. Returns every run in the file afterwards.
 */
export async function runExperiment(
  scale: ExperimentScale,
  settings: RunnerSettings,
): Promise<ExperimentRun[]> {
  await Deno.mkdir(settings.workFolder, { recursive: true });
  // Broken lines are reported once, here; the later reads skip them quietly.
  const done = new Set((await readRuns(settings.resultsFile, settings.info)).map((r) => r.key));
  const runAll = async (planned: readonly PlannedRun[]) => {
    const todo = planned.filter((p) => !done.has(p.key));
    for (const [i, p] of todo.entries()) {
      const started = performance.now();
      const run = await execute(p, settings);
      await append(settings.resultsFile, run);
      done.add(p.key);
      const score = validationScore(run);
      settings.info(
        `${p.key}: validation ${run.primaryMetric} ${score.toFixed(4)} (${
          ((performance.now() - started) / 1000).toFixed(0)
        } s, ` +
          `${i + 1}/${todo.length} of this phase)`,
      );
    }
  };
  if (scale.groups.has("grid")) await runAll(gridRuns(scale));
  const rates = chooseRates(await readRuns(settings.resultsFile));
  const lrOf = (task: string, condition: "independent" | "joint") =>
    rates.get(`${task}/${condition}`) ?? 1e-3;
  let pretrained: string | null = null;
  if (scale.groups.has("pretrained") && scale.pretrainSteps > 0) {
    pretrained = `${settings.workFolder}/pretraining`;
    const exists = await Deno.stat(`${pretrained}/state.json`).then(() => true, () => false);
    // Pretraining is needed by the pretrained runs alone: once they are all in the file, it is not repeated.
    const needed = laterRuns(scale, lrOf, pretrained).some((r) =>
      r.group === "pretrained" && !done.has(r.key)
    );
    if (needed && !exists) {
      settings.info(`pretraining: joint language modelling on Moby-Dick, ${scale.pretrainSteps} steps`);
      await Deno.remove(pretrained, { recursive: true }).catch(() => {});
      await train({ ...pretrainingOptions(scale), out: pretrained }, { info: () => {} });
    }
  }
  // Question answering's runs take most of the time: the compute timings come before them, so an
  // experiment stopped during its last hours still has every table but question answering's cells.
  const later = laterRuns(scale, lrOf, pretrained);
  await runAll(later.filter((r) => r.task !== "qa"));
  if (scale.groups.has("compute")) {
    // Repeats of each condition, interleaved, so Table 3 has an interval and drifts in the machine's load cancel.
    for (let repeat = 1; repeat <= scale.compute.repeats; repeat++) {
      for (const condition of ["sequential", "parallel", "joint"] as const) {
        const key = `compute/sentiment/${condition}/repeat=${repeat}`;
        if (done.has(key)) continue;
        const timing = await measureCompute(scale, condition);
        await append(settings.resultsFile, {
          key,
          group: "compute",
          task: "sentiment",
          condition,
          lr: 1e-3,
          seed: repeat,
          metricName: "",
          primaryMetric: "",
          higherIsBetter: true,
          models: ["bert", "gpt2", "roberta"],
          final: {},
          curve: [],
          stepsPerEpoch: 0,
          totalSteps: timing.steps,
          seconds: timing.seconds,
          timing: {
            forwardBackwardMs: timing.forwardBackwardMs,
            optimizerMs: timing.optimizerMs,
            stepMs: timing.stepMs,
            gpuMs: timing.gpuMs,
          },
          command: settings.command,
          adapter: gpu().profile.name,
          date: new Date().toISOString(),
          ...(settings.commit ? { commit: settings.commit } : {}),
        });
        settings.info(`${key}: ${timing.stepMs.toFixed(1)} ms per step`);
      }
    }
  }
  await runAll(later.filter((r) => r.task === "qa"));
  return await readRuns(settings.resultsFile);
}

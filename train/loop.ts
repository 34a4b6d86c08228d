/**
 * The training loop of `deno task train`, readable top to bottom: load the task's data, train or load
 * the tokenizers, build the models and their optimizer(s), then take the session's steps (train/session.ts:
 * shuffled batches, a logged line every few steps, a validation evaluation per epoch or every
 * `evalEvery` steps), writing each
 * line to the run folder and saving a checkpoint after every evaluation; finally evaluate on the test
 * split, run the baseline and write the report. Deno only: this is where the loop meets files.
 *
 * @module
 */
import { createProgress } from "./log.ts";
import { checkTrainOptions, type TrainOptions } from "./options.ts";
import { writeReport } from "./run.ts";
import { prepareRun } from "./tasks.ts";
import { describeEvaluation, formatMetrics, TrainingSession } from "./session.ts";

/** What {@linkcode train} returns: the run folder and the final figures per model. */
export interface TrainResult {
  /** The run's folder (config.json, metrics.jsonl, checkpoints, tokenizer, report.md). */
  folder: string;
  /** Final validation and test metrics per model, and the baseline's. */
  results: Record<string, { validation: Record<string, number>; test: Record<string, number> }>;
  /** Training steps taken in this call (not counting steps before a resume). */
  steps: number;
  /** Seconds spent in this call. */
  seconds: number;
  /** The task's headline metric: in words, its key in the metrics, and its direction. */
  metric: { name: string; key: string; higherIsBetter: boolean };
  /** Training steps per epoch. */
  stepsPerEpoch: number;
}

/** Where to write progress and messages (the command prints to stderr; tests collect lines). */
export interface TrainHooks {
  /** One line of information (dataset counts, evaluations, where the report is). */
  info?: (line: string) => void;
}

/** Trains the models of `options` on its task, or resumes the run in folder `resume` (its options then apply). */
export async function train(
  options: TrainOptions,
  hooks: TrainHooks = {},
  resume?: string,
): Promise<TrainResult> {
  checkTrainOptions(options);
  if (!resume && !options.out) throw new Error("train: options.out names no folder for the run");
  const started = performance.now();
  const write = (text: string) => Deno.stderr.writeSync(new TextEncoder().encode(text));
  const run = await prepareRun(options, hooks.info ?? ((line) => write(`${line}\n`)), resume);
  const { runner, models, folder } = run;
  const settings = run.options;
  const names = Object.keys(models);
  let session: TrainingSession;
  try {
    session = await TrainingSession.open(
      run,
      resume ? (optimizers) => folder.restore(optimizers, models) : undefined,
    );
  } catch (error) {
    // A new run that could not start (its optimizer refused) has nothing to resume: its folder goes.
    if (!resume) await folder.discard();
    throw error;
  }
  const { stepsPerEpoch, totalSteps } = session;
  const startStep = session.step;
  const progress = createProgress({
    total: totalSteps,
    quiet: settings.quiet || hooks.info !== undefined,
    isTerminal: Deno.stderr.isTerminal(),
    every: settings.logEvery * Math.max(1, Math.round(totalSteps / 20 / settings.logEvery)),
    write: hooks.info ? () => {} : write,
  });
  const info = (line: string) => {
    progress.finish();
    (hooks.info ?? ((l: string) => write(`${l}\n`)))(line);
  };
  if (session.done) {
    info(`the run had finished (step ${session.step}): evaluating it on the test split again`);
  }
  let checkpointed = resume !== undefined;
  try {
    while (!session.done) {
      const { step, logged, evaluated } = await session.advance();
      if (logged) {
        await folder.appendSteps([logged]);
        progress.update({
          step,
          losses: Object.fromEntries(names.map((n) => [n, logged.models[n].loss])),
          stepsPerSecond: logged.steps / logged.seconds,
          tokensPerSecond: logged.tokens / logged.seconds,
        });
      }
      if (evaluated) {
        for (const line of evaluated) info(describeEvaluation(line));
        await folder.appendEvaluations(evaluated);
        const seconds = folder.previousSeconds + elapsed(started);
        await folder.checkpoint(step, session.optimizers, models, seconds, run.tokenizers);
        checkpointed = true;
      }
    }
  } catch (error) {
    // A new run that failed before it logged or saved anything has nothing to resume or read: what it
    // wrote goes, so that its --out can be used again. One that logged keeps its folder, to debug.
    if (!checkpointed && !folder.logged) await folder.discard();
    throw error;
  }
  progress.finish();
  const step = session.step;
  const testLines = await session.evaluate("test");
  for (const line of testLines) info(describeEvaluation(line));
  await folder.appendEvaluations(testLines);
  const baseline = runner.baseline();
  info(
    `baseline (${baseline.name}): validation ${formatMetrics(baseline.validation)}, test ${
      formatMetrics(baseline.test)
    }`,
  );
  const record = await folder.record({
    baseline,
    seconds: folder.previousSeconds + elapsed(started),
    title: `${settings.task} - ${names.join(", ")} (${settings.independent ? "independent" : "joint"})`,
    metricName: runner.metricName,
    higherIsBetter: runner.kind.higherIsBetter,
  });
  await writeReport(folder.path, { ...record, primaryMetric: runner.primaryMetric });
  info(`report: ${folder.path}/report.md`);
  session.dispose();
  const results: TrainResult["results"] = {};
  for (const name of names) {
    results[name] = {
      validation: record.evaluations.findLast((e) => e.model === name && e.split === "validation")?.metrics ??
        {},
      test: testLines.find((e) => e.model === name)?.metrics ?? {},
    };
  }
  results[`baseline (${baseline.name})`] = { validation: baseline.validation, test: baseline.test };
  return {
    folder: folder.path,
    results,
    steps: step - startStep,
    seconds: elapsed(started),
    metric: {
      name: runner.metricName,
      key: runner.primaryMetric,
      higherIsBetter: runner.kind.higherIsBetter,
    },
    stepsPerEpoch,
  };
}

/** Seconds since `since` (a performance.now() reading). */
function elapsed(since: number): number {
  return (performance.now() - since) / 1000;
}

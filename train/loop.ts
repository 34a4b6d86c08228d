/**
 * The training loop of `deno task train`, readable top to bottom: load the task's data, train or load
 * the tokenizers, build the models and their optimizer(s), then per epoch train on shuffled batches,
 * evaluate on the validation split and save a checkpoint; finally evaluate on the test split, run
 * the baseline and write the report.
 *
 * A step never reads GPU memory back: losses are kept on the GPU and read in one round trip every
 * `logEvery` steps, together with the optimizer's figures; evaluation reads its outputs once per split.
 *
 * @module
 */
import { manualSeed } from "../engine/random.ts";
import { keep, readAll, type Tensor, tidy } from "../engine/tensor.ts";
import { mutualDistillation } from "../kernels/distillation.ts";
import { add, scale } from "../kernels/elementwise.ts";
import type { MultiModelOptimizer } from "../optim/multimodel.ts";
import { createProgress } from "./log.ts";
import { buildOptimizers } from "./models.ts";
import { checkTrainOptions, type TrainOptions } from "./options.ts";
import type { EvaluationLine, StepLine } from "./run.ts";
import { type PreparedRun, prepareRun } from "./tasks.ts";
import { writeReport } from "./report.ts";

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
  const started = performance.now();
  const write = (text: string) => Deno.stderr.writeSync(new TextEncoder().encode(text));
  const run = await prepareRun(options, hooks.info ?? ((line) => write(`${line}\n`)), resume);
  const { runner, models, folder } = run;
  const settings = run.options;
  const names = Object.keys(models);
  const stepsPerEpoch = Math.ceil(runner.trainSize / settings.batchSize);
  const totalSteps = settings.steps ?? settings.epochs * stepsPerEpoch;
  const optimizers = buildOptimizers(models, settings, Math.ceil(totalSteps / settings.accumulate));
  let step = 0;
  if (resume) step = await folder.restore(optimizers, models);
  else manualSeed(settings.seed);
  const startStep = step;
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
  // Evaluation (then a checkpoint) after every epoch, or every evalEvery steps, and after the last step.
  const evaluationDue = (at: number, epochEnd: boolean) =>
    at === totalSteps || (settings.evalEvery === null ? epochEnd : at % settings.evalEvery === 0);
  const pending: { step: number; losses: Record<string, Tensor>; tokens: number }[] = [];
  let windowStart = performance.now();
  while (step < totalSteps) {
    const epoch = Math.floor(step / stepsPerEpoch);
    for (const batch of runner.trainBatches(epoch, settings.batchSize, step % stepsPerEpoch)) {
      pending.push({ step: step + 1, losses: trainStep(run, optimizers, batch.index), tokens: batch.tokens });
      step++;
      const evaluating = evaluationDue(step, step % stepsPerEpoch === 0);
      // Logged intervals end at multiples of logEvery and at checkpoints, so a resumed run logs the same lines.
      if (step % settings.logEvery === 0 || evaluating) {
        // The readback waits for the interval's GPU work, so the interval's time is measured after it.
        const line = await logSteps(pending.splice(0), optimizers, names, () => elapsed(windowStart));
        await folder.appendSteps([line]);
        progress.update({
          step,
          losses: Object.fromEntries(names.map((n) => [n, line.models[n].loss])),
          stepsPerSecond: line.steps / line.seconds,
          tokensPerSecond: line.tokens / line.seconds,
        });
        windowStart = performance.now();
      }
      if (evaluating) {
        const evaluation = await evaluate(run, "validation", step / stepsPerEpoch, step);
        for (const line of evaluation) info(describeEvaluation(line));
        await folder.appendEvaluations(evaluation);
        await folder.checkpoint(step, optimizers, models, folder.previousSeconds + elapsed(started));
        windowStart = performance.now();
      }
      if (step === totalSteps) break;
    }
  }
  progress.finish();
  const testLines = await evaluate(run, "test", step / stepsPerEpoch, step);
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
  for (const optimizer of optimizers) optimizer.dispose();
  for (const model of Object.values(models)) model.dispose();
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

/**
 * One training step over batch `index` of the epoch's order: forward every model, add the mutual
 * distillation terms, backward, log the losses and update. Returns the task losses (kept on the GPU).
 */
function trainStep(
  run: PreparedRun,
  optimizers: MultiModelOptimizer[],
  index: number,
): Record<string, Tensor> {
  const { runner, models, options } = run;
  return tidy(() => {
    for (const optimizer of optimizers) optimizer.zeroGrad();
    const names = Object.keys(models);
    const outputs = names.map((name) => {
      const model = models[name].train();
      return model.forward(runner.trainBatch(name, index));
    });
    const losses = outputs.map((o) => o.loss!);
    const totals = options.distill > 0
      ? losses.map((loss, i) => {
        const own = runner.distillationInputs(names[i], outputs[i], index);
        const terms = own.map((part, k) =>
          mutualDistillation(
            part.logits,
            outputs.flatMap((
              o,
              j,
            ) => (j === i ? [] : [runner.distillationInputs(names[j], o, index)[k].logits])),
            part.rowWeights ? { rowWeights: part.rowWeights } : {},
          )
        );
        return add(loss, scale(terms.reduce((s, t) => add(s, t)), options.distill / terms.length));
      })
      : losses;
    for (const total of totals) total.backward();
    const byName = Object.fromEntries(names.map((n, i) => [n, losses[i]]));
    for (const optimizer of optimizers) {
      optimizer.logMetrics(Object.fromEntries(optimizer.modelNames.map((n) => [n, byName[n]])));
      optimizer.step();
    }
    return Object.fromEntries(names.map((n, i) => [n, keep(losses[i])]));
  });
}

/** Reads the pending steps' losses and the optimizers' figures in one round trip each; one line per logged interval. */
async function logSteps(
  pending: { step: number; losses: Record<string, Tensor>; tokens: number }[],
  optimizers: MultiModelOptimizer[],
  names: readonly string[],
  seconds: () => number,
): Promise<StepLine> {
  const tensors = pending.flatMap((p) => names.map((n) => p.losses[n]));
  const values = await readAll(tensors);
  const interval = seconds();
  for (const t of tensors) t.dispose();
  const figures = Object.assign(
    {},
    ...(await Promise.all(optimizers.map((o) => o.metrics()))).map((m) => m.models),
  );
  const mean = (name: string) => {
    const k = names.indexOf(name);
    const losses = pending.map((_, i) => values[i * names.length + k][0]);
    return losses.reduce((s, v) => s + v, 0) / losses.length;
  };
  return {
    step: pending.at(-1)!.step,
    steps: pending.length,
    seconds: interval,
    tokens: pending.reduce((s, p) => s + p.tokens, 0),
    models: Object.fromEntries(names.map((name) => [name, {
      loss: mean(name),
      lr: figures[name].lr,
      lrMultiplier: figures[name].lrMultiplier,
      gradNorm: figures[name].gradNorm,
      updates: figures[name].updates,
      skipped: figures[name].skipped,
    }])),
  };
}

/** Evaluates every model on a split: forward in eval mode, one readback per model, the task's metrics. */
async function evaluate(
  run: PreparedRun,
  split: "validation" | "test",
  epoch: number,
  step: number,
): Promise<EvaluationLine[]> {
  const { runner, models } = run;
  const lines: EvaluationLine[] = [];
  for (const [name, model] of Object.entries(models)) {
    model.eval();
    const kept: Tensor[][] = [];
    for (let index = 0; index < runner.evalBatchCount(split); index++) {
      kept.push(
        tidy(() =>
          runner.evalOutputs(name, model.forward(runner.evalBatch(name, split, index)), split, index).map(
            keep,
          )
        ),
      );
    }
    const values = await readAll(kept.flat());
    for (const t of kept.flat()) t.dispose();
    let offset = 0;
    const perBatch = kept.map((list) => values.slice(offset, offset += list.length));
    lines.push({ step, epoch, split, model: name, metrics: runner.score(name, split, perBatch) });
    model.train();
  }
  return lines;
}

function formatMetrics(metrics: Record<string, number>): string {
  return Object.entries(metrics).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(4)}`).join(", ");
}

function describeEvaluation(line: EvaluationLine): string {
  return `epoch ${line.epoch.toFixed(1)} step ${line.step} ${line.split} ${line.model}: ${
    formatMetrics(line.metrics)
  }`;
}

/**
 * The compute comparison of the experiment (the seed's third claim): time per training step of the
 * three models trained (a) independently one after another, (b) independently in one process, the
 * three recorded together each step with separate optimizers, and (c) jointly with the fused
 * MultiModelOptimizer; each also timed as forward + backward alone and as the optimizers' updates
 * alone (over the last step's gradients). Every case runs on the same
 * sentiment batches in this process, after a warm-up that fills the adaptive rates' loss window (so
 * that joint's trend fit runs in every timed step), each step logging its losses as training does,
 * timed by the wall clock around a GPU synchronisation, each call submitted as it ends (as an optimizer's step() does), so that the device
 * runs one while the next is recorded in every case; the GPU time of a whole step is the sum of its
 * kernels' times from timestamp queries, over as many further steps (each dispatch then runs in a
 * compute pass of its own).
 *
 * @module
 */
import { submitStep, synchronize, timeKernels } from "../engine/recorder.ts";
import { type Tensor, tidy } from "../engine/tensor.ts";
import type { TransformerModel } from "../models/model.ts";
import { buildOptimizers } from "../train/models.ts";
import { prepareRun } from "../train/tasks.ts";
import { conditionOptions, type ExperimentScale } from "./protocol.ts";

/** Per-step times of one condition (milliseconds), over `steps` steps. */
export interface ComputeTiming {
  /** Forward and backward of the three models. */
  forwardBackwardMs: number;
  /** The optimizers' updates alone, over the gradients of the last timed step. */
  optimizerMs: number;
  /** A whole step. */
  stepMs: number;
  /** GPU time of a whole step: its kernels' times summed (absent where the adapter has no timestamps). */
  gpuMs?: number;
  /** Steps timed per case. */
  steps: number;
  /** Wall time of the measurement. */
  seconds: number;
}

/** How the three models are trained in a compute case. */
export type ComputeCondition = "sequential" | "parallel" | "joint";

/** GPU milliseconds per call over `steps` further calls of `step`; undefined without timestamp queries. */
async function gpuTimeOfSteps(steps: number, step: (index: number) => void): Promise<number | undefined> {
  const times = await timeKernels(() => {
    for (let i = 1; i <= steps; i++) step(i);
  });
  return times ? times.totalMs / steps : undefined;
}

/**
 * Times `steps` calls of `step` after `warmup` warm-up calls; returns ms per call. Each call's work is
 * submitted when it returns, also where no optimizer step ends it (forward and backward alone), so
 * that the split of a step into its parts compares like with like.
 */
async function timeSteps(steps: number, step: (index: number) => void, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) step(0);
  await synchronize();
  const started = performance.now();
  for (let i = 1; i <= steps; i++) {
    step(i);
    submitStep();
  }
  await synchronize();
  return (performance.now() - started) / steps;
}

/** Measures one compute condition on sentiment batches with the scale's model size. */
export async function measureCompute(
  scale: ExperimentScale,
  condition: ComputeCondition,
): Promise<ComputeTiming> {
  const started = performance.now();
  const steps = scale.compute.steps;
  const options = {
    ...conditionOptions(
      scale,
      "sentiment",
      condition === "joint" ? "joint" : "independent",
      1e-3,
      scale.seeds[0],
    ),
    out: await Deno.makeTempDir({ prefix: "experiment-compute-" }),
  };
  const run = await prepareRun(options, () => {});
  const { runner, models } = run;
  const names = Object.keys(models);
  // Every case trains on the epoch's first batch, so all three see the same sequence lengths.
  const batch = runner.trainBatches(0, options.batchSize).next().value!.index;
  const forward = (model: TransformerModel): Tensor => {
    const loss = model.forward(runner.trainBatch(model.name, batch)).loss!;
    loss.backward();
    return loss;
  };
  // Sized generously: the schedule's shape changes no step's cost.
  const optimizers = buildOptimizers(models, options, 2 * steps + 1000);
  // The trend fit of the adaptive rates runs once the loss window is full, as in a training run's steady state.
  const warmup = (optimizers[0].options.adaptiveLr?.window ?? 0) + 1;
  let forwardBackwardMs: number;
  let optimizerMs: number;
  let stepMs: number;
  let gpuMs: number | undefined;
  if (condition === "sequential") {
    // One model after another: each trains its steps alone, then the next.
    forwardBackwardMs = 0;
    optimizerMs = 0;
    stepMs = 0;
    gpuMs = 0;
    for (const [m, name] of names.entries()) {
      const model = models[name];
      forwardBackwardMs += await timeSteps(steps, () => tidy(() => void forward(model)));
      const step = () =>
        tidy(() => {
          optimizers[m].zeroGrad();
          optimizers[m].logMetrics({ [name]: forward(model) });
          optimizers[m].step();
        });
      stepMs += await timeSteps(steps, step, warmup);
      const gpu = await gpuTimeOfSteps(steps, step);
      gpuMs = gpu === undefined ? undefined : gpuMs! + gpu;
      // The updates alone, over the last step's gradients (step() leaves them; zeroGrad() clears them).
      optimizerMs += await timeSteps(steps, () => void optimizers[m].step());
    }
  } else {
    const all = (): Record<string, Tensor> => {
      const losses: Record<string, Tensor> = {};
      for (const name of names) losses[name] = models[name].forward(runner.trainBatch(name, batch)).loss!;
      for (const loss of Object.values(losses)) loss.backward();
      return losses;
    };
    forwardBackwardMs = await timeSteps(steps, () => tidy(() => void all()));
    const step = () =>
      tidy(() => {
        for (const o of optimizers) o.zeroGrad();
        const losses = all();
        for (const o of optimizers) {
          o.logMetrics(Object.fromEntries(o.modelNames.map((n) => [n, losses[n]])));
          o.step();
        }
      });
    stepMs = await timeSteps(steps, step, warmup);
    gpuMs = await gpuTimeOfSteps(steps, step);
    optimizerMs = await timeSteps(steps, () => {
      for (const o of optimizers) o.step();
    });
  }
  for (const o of optimizers) o.dispose();
  for (const model of Object.values(models)) model.dispose();
  await Deno.remove(options.out, { recursive: true });
  return {
    forwardBackwardMs,
    optimizerMs,
    stepMs,
    gpuMs,
    steps,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * How the Deno half times a workload. A repetition is recorded (no readback), submitted in groups of
 * about 64 dispatches so the GPU runs one group while the host records the next, and the GPU is
 * waited for once at the end. Deno's wait costs a fixed latency (it polls the device: about 11 ms on an
 * H100), measured once and subtracted, and the repetitions are many enough that the measured span
 * is about `targetMs`; the result is the median over `trials` such spans, per repetition. A quarter
 * of a trial's repetitions more are then profiled with timestamp queries: the GPU time of each kernel.
 *
 * @module
 */
import { flush, synchronize, timeKernels, traceDispatches } from "../../engine/recorder.ts";
import { zeros } from "../../engine/tensor.ts";

/** How long to measure. */
export interface TimingOptions {
  /** Wall-clock span of one trial, in ms. */
  targetMs: number;
  /** Trials; the median is reported. */
  trials: number;
  /** Most repetitions per trial. */
  maxReps: number;
}

/** The GPU run: spans of 400 ms, median of 3. */
export const FULL_TIMING: TimingOptions = { targetMs: 400, trials: 3, maxReps: 20000 };

/** The dry run: a few repetitions, only to run the code path. */
export const DRY_TIMING: TimingOptions = { targetMs: 1, trials: 1, maxReps: 2 };

/** One timed workload. */
export interface Measurement {
  /** Row id (`matmul/square-4096`, `model/small/joint`...). */
  id: string;
  /** Median time per repetition, ms. */
  ms: number;
  /** Repetitions per trial. */
  reps: number;
  /** Time per repetition of every trial, ms. */
  trials: number[];
  /** Dispatches one repetition records. */
  dispatches: number;
  /** Where a repetition's GPU time goes; null where the adapter has no timestamp queries. */
  gpu: KernelProfile | null;
}

/** The GPU time of one repetition, by kernel, from timestamp queries ({@linkcode timeKernels}). */
export interface KernelProfile {
  /** Sum of the kernels' times per repetition, ms. */
  ms: number;
  /** Repetitions profiled. */
  reps: number;
  /** Per kernel name: dispatches and ms per repetition, largest time first. */
  kernels: { name: string; dispatches: number; ms: number }[];
}

/** Most dispatches one profile times (each is a compute pass of its own with two timestamps). */
const PROFILE_DISPATCHES = 20000;

/**
 * Times the kernels of `reps` further repetitions of `run` with timestamp queries (the measure of
 * `MM_DEBUG=4`); null where the adapter has none. Each dispatch then runs in a compute pass of its
 * own, so this is done apart from the timed trials.
 */
async function profile(run: () => void, reps: number): Promise<KernelProfile | null> {
  const times = await timeKernels(() => {
    for (let i = 0; i < reps; i++) run();
  });
  if (!times) return null;
  const kernels = [...times.byKernel].map(([name, k]) => ({
    name,
    dispatches: k.count / reps,
    ms: k.ms / reps,
  })).sort((a, b) => b.ms - a.ms);
  return { ms: times.totalMs / reps, reps, kernels };
}

/** Dispatches per submitted command buffer, so that submission costs little and overlaps recording. */
const DISPATCHES_PER_SUBMIT = 64;

let syncLatency: number | undefined;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * The median wall time of submitting one tiny command and waiting for it: the fixed cost of a trial
 * (measured once per process; `deno task bench` subtracts it too).
 */
export async function measureSyncLatency(): Promise<number> {
  if (syncLatency !== undefined) return syncLatency;
  const scratch = zeros([1]);
  await synchronize();
  const samples: number[] = [];
  for (let i = 0; i < 7; i++) {
    const start = performance.now();
    zeros([1]).dispose();
    await synchronize();
    samples.push(performance.now() - start);
  }
  scratch.dispose();
  syncLatency = median(samples);
  return syncLatency;
}

/**
 * Times `run` (which records one repetition and must leave nothing alive between calls) as
 * described in the module comment; the first call compiles pipelines and fills the buffer pool
 * and is not timed.
 */
export async function measure(id: string, run: () => void, options: TimingOptions): Promise<Measurement> {
  const latency = await measureSyncLatency();
  const dispatches = traceDispatches(run).dispatches.length;
  await synchronize();
  const group = Math.max(1, Math.ceil(DISPATCHES_PER_SUBMIT / Math.max(1, dispatches)));
  const span = async (reps: number): Promise<number> => {
    const start = performance.now();
    for (let i = 0; i < reps; i++) {
      run();
      if ((i + 1) % group === 0) flush();
    }
    await synchronize();
    return Math.max(performance.now() - start - latency, 1e-3);
  };
  let reps = 1;
  let work = await span(reps);
  while (work < options.targetMs / 8 && reps < options.maxReps) {
    reps = Math.min(options.maxReps, reps * (work < options.targetMs / 64 ? 8 : 2));
    work = await span(reps);
  }
  reps = Math.min(options.maxReps, Math.max(1, Math.round(reps * options.targetMs / work)));
  const trials: number[] = [];
  for (let t = 0; t < options.trials; t++) trials.push(await span(reps) / reps);
  // A quarter of a trial's repetitions is enough to see where the time goes.
  const profiled = Math.max(
    1,
    Math.min(Math.ceil(reps / 4), Math.floor(PROFILE_DISPATCHES / Math.max(1, dispatches))),
  );
  // The trials are the measurement: a profile that fails (timestamp queries on an unusual driver) loses
  // only the breakdown, not the time.
  let gpu: KernelProfile | null = null;
  try {
    gpu = await profile(run, profiled);
  } catch (error) {
    console.error(`bench/gpu: ${id}: kernel profile failed, time kept: ${(error as Error).message}`);
  }
  return { id, ms: median(trials), reps, trials, dispatches, gpu };
}

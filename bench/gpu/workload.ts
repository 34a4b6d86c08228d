/**
 * What every workload of the side-by-side benchmark provides: a check against the expected outputs,
 * run before anything is timed, then its timings, then the release of its GPU memory.
 *
 * @module
 */
import type { Tensor } from "../../engine/tensor.ts";
import type { Comparison } from "./check.ts";
import type { Measurement, TimingOptions } from "./timing.ts";

/** One workload (a kernel case, the optimizer, or the three models at one size). */
export interface Workload {
  /** Id, and prefix of the ids of its table rows (`matmul/square-4096`, `model/small`). */
  readonly id: string;
  /** Runs our side once and compares with the expected outputs. */
  check(): Promise<Comparison[]>;
  /** Times our side; one measurement per table row it feeds. */
  time(options: TimingOptions): Promise<Measurement[]>;
  /** Frees its tensors, models and optimizers. */
  dispose(): void;
}

/** Drops the gradients of leaf tensors, so that a repetition writes them anew instead of adding. */
export function clearGrads(...tensors: Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

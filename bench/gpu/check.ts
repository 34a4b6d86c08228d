/**
 * The correctness check that runs before anything is timed: where the expected outputs come from
 * (PyTorch's files, or float64 references in the dry run), the tolerances, and the comparison,
 * which names the workload, the tensor and the worst element when a tolerance is exceeded.
 *
 * @module
 */
import type { HostTensor } from "../../models/safetensors.ts";
import { readSafetensors } from "../../models/safetensors_file.ts";

/**
 * Tolerances, as the largest |ours - expected| over a tensor divided by the tensor's largest
 * |expected| (its scale). Both sides compute in float32 with different summation orders, so these
 * sit one to two orders of magnitude above the differences seen between PyTorch on a CPU and our
 * kernels on llvmpipe; a wrong kernel gives errors of order 1.
 */
export const TOLERANCE = {
  /** Matrix products, attention outputs and gradients, LayerNorm outputs and gradients, the chain. */
  kernel: 1e-4,
  /** Parameters after two AdamW steps, absolute (parameters are at most 0.5, each step moves about 1e-3). */
  optimizerValue: 1e-6,
  /** Norm of all parameters after two AdamW steps, relative. */
  optimizerNorm: 1e-6,
  /** A model's loss, relative. */
  loss: 1e-4,
  /** A model's logits, relative to their largest |value|. */
  logits: 1e-3,
  /** A gradient tensor, relative to its scale (see `gradientFloor`). */
  gradient: 2e-3,
  /**
   * A gradient's scale is at least this fraction of the model's largest |gradient|: gradients that
   * cancel to nearly zero (the attention key bias) cannot be matched relatively in float32.
   */
  gradientFloor: 1e-3,
  /** The global norm of a model's gradients, relative. */
  gradientNorm: 1e-3,
} as const;

/** One compared tensor. */
export interface Comparison {
  /** The workload (`matmul/square-4096`). */
  workload: string;
  /** The tensor (`dq`, `bert/grad/classifier.weight`). */
  tensor: string;
  /** max |ours - expected| / scale. */
  error: number;
  /** The tolerance it is held to. */
  tolerance: number;
  /** Where the worst element is and its two values, for the failure message. */
  worst: string;
}

/** Whether a comparison is within its tolerance (NaN never is). */
export function passes(c: Comparison): boolean {
  return c.error <= c.tolerance;
}

/** The failure message of a comparison: workload, tensor, error, tolerance and the worst element. */
export function describeFailure(c: Comparison): string {
  return `${c.workload}: ${c.tensor}: error ${c.error.toExponential(2)} exceeds the tolerance ` +
    `${c.tolerance.toExponential(0)} (${c.worst})`;
}

/** Largest |value|. */
export function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

/**
 * Compares `actual` with `expected` elementwise: the error is max |a - e| / scale, where scale is
 * max |e| raised to at least `floor` (and to the smallest normal float32, so that an all-zero
 * tensor compares absolutely). A length mismatch or a NaN is an infinite error.
 */
export function compare(
  workload: string,
  tensor: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tolerance: number,
  floor = 0,
): Comparison {
  if (actual.length !== expected.length) {
    return {
      workload,
      tensor,
      error: Infinity,
      tolerance,
      worst: `${actual.length} values, expected ${expected.length}`,
    };
  }
  const scale = Math.max(maxAbs(expected), floor, 1.2e-38);
  let worst = -1, largest = 0;
  for (let i = 0; i < actual.length; i++) {
    const difference = Math.abs(actual[i] - expected[i]);
    if (!(difference <= largest)) {
      largest = Number.isNaN(difference) ? Infinity : difference;
      worst = i;
      if (largest === Infinity) break;
    }
  }
  const where = worst < 0
    ? "all equal"
    : `element ${worst}: ours ${actual[worst]}, expected ${expected[worst]}`;
  return {
    workload,
    tensor,
    error: largest / scale,
    tolerance,
    worst: `${where}, scale ${scale.toPrecision(3)}`,
  };
}

/** Compares two scalars relatively. */
export function compareScalar(
  workload: string,
  tensor: string,
  actual: number,
  expected: number,
  tolerance: number,
): Comparison {
  const error = Math.abs(actual - expected) / Math.max(Math.abs(expected), 1e-30);
  return {
    workload,
    tensor,
    error: Number.isNaN(error) ? Infinity : error,
    tolerance,
    worst: `ours ${actual}, expected ${expected}`,
  };
}

/** The expected tensors of one reference file, by name. */
export type Expected = Map<string, ArrayLike<number>>;

/**
 * Where expected outputs come from: PyTorch's folder (`<folder>/<file>.safetensors`) or, in the
 * dry run, `compute` (float64 references, or a standalone run for the models).
 */
export interface Source {
  /** What the expected values are, for the log. */
  readonly label: string;
  /** PyTorch's folder, or null in the dry run. */
  readonly folder: string | null;
  /** The expected tensors of `file`. */
  expected(file: string, compute: () => Expected | Promise<Expected>): Promise<Expected>;
}

/** Expected values read from a folder that torch_side.py wrote. */
export function folderSource(folder: string): Source {
  return {
    label: "PyTorch's outputs",
    folder,
    async expected(file: string): Promise<Expected> {
      const path = `${folder}/${file}.safetensors`;
      const { tensors } = await readSafetensors(path).catch((error: Error) => {
        throw new Error(`${path}: ${error.message} (did torch_side.py run this workload?)`);
      });
      return new Map([...tensors].map(([name, t]: [string, HostTensor]) => [name, t.data]));
    },
  };
}

/** Expected values computed in this process (the dry run). */
export function computedSource(): Source {
  return {
    label: "float64 references (the models: standalone runs)",
    folder: null,
    expected: async (_file, compute) => await compute(),
  };
}

/** The named tensor of a reference file; throws naming the file and the tensor when it is missing. */
export function need(expected: Expected, file: string, name: string): ArrayLike<number> {
  const found = expected.get(name);
  if (!found) throw new Error(`${file}: no tensor "${name}" in the reference`);
  return found;
}

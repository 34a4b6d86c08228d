/**
 * Kernel variants: every kernel family with more than one implementation, the names of its variants,
 * and the choice among them. Each family's automatic choice (per adapter, and for matmul per problem
 * size) lives beside its kernels and is passed to {@linkcode kernelVariant}; `MM_KERNELS` (read once at
 * startup) or {@linkcode withKernels} (tests, benchmarks) overrides it, so every variant can be run,
 * validated and timed on any adapter:
 *
 * ```sh
 * MM_KERNELS=matmul:tiled128,attention:tiled deno task bench
 * ```
 *
 * Kernel names carry their variant (`matmul_direct`, `attention_forward_rows`, `softmax_rows_tree`), so
 * `MM_DEBUG` output and traced dispatches show which one ran.
 *
 * @module
 */
import { readEnv } from "./debug.ts";

/** Every kernel family with more than one implementation: its variants, and what each one is. */
export const KERNEL_VARIANTS = {
  matmul: {
    tiled128:
      "128x128 output tiles, 8x8 per invocation, slices staged in workgroup memory (large problems on GPUs)",
    tiled64: "64x64 output tiles, 4x4 per invocation, staged (medium problems on GPUs)",
    tiled32: "32x32 output tiles, 4x4 per invocation, staged (small problems on GPUs)",
    direct: "32x64 output tiles, 16x16 per invocation, operands read directly (software adapters)",
    texel:
      "16x64 output tiles, 8x16 per invocation, operands copied into textures (software adapters; direct where rows are not whole texels)",
    texel_narrow: "texel with 32x32 output tiles (software adapters, products of at most 32 columns)",
  },
  attention: {
    tiled: "query and key blocks staged in workgroup memory, a micro-tile per thread (GPUs)",
    tiled_small: "the tiled kernels with small blocks, cheap to compile on a software adapter",
    rows: "whole rows per invocation in private arrays, no workgroup memory (software adapters' fallback)",
    texel:
      "rows per invocation in registers, inputs read through textures (software adapters; rows where D % 4 != 0)",
  },
  elementwise: {
    scalar: "an element per invocation, inputs read from storage buffers (GPUs)",
    texel:
      "a vec4 per invocation, inputs read through textures, kernel names end in _texel (software adapters from 8192 elements; scalar for other shapes)",
  },
  rows: {
    tree: "softmax, log-softmax and layerNorm rows split over invocations, combined by a tree (GPUs)",
    serial: "one invocation walks a whole row, no barrier (software adapters)",
    texel:
      "serial, with the inputs read through textures (softmax, log-softmax, layerNorm; software adapters from 8192 floats; serial for RMSNorm and rows whose length is not a multiple of 4)",
  },
  layernorm_column_sums: {
    tree: "layerNorm's parameter gradients: 8 lanes per column and a tree (GPUs)",
    serial: "one lane walks each column's block of rows, no barrier (software adapters' fallback)",
    texel:
      "serial, with the row inputs read through textures (software adapters from 8192 floats; serial where rows are not a multiple of 4 floats)",
  },
  cross_entropy: {
    tree: "rows split over up to 256 invocations, backward in 256-column blocks (GPUs)",
    serial: "a row per invocation, backward walks the whole row (software adapters)",
  },
  accumulate: {
    scalar: "gradients added into .grad (and fan-out sums) an element per invocation (GPUs)",
    texel:
      "a vec4 per invocation, both operands read through textures (software adapters from 8192 elements; scalar where a window is not whole texels)",
  },
  dropout: {
    scalar: "an element per invocation, read from a storage buffer (GPUs)",
    texel:
      "a vec4 per invocation, read through a texture (software adapters from 8192 elements; scalar where the input is not whole texels)",
  },
  reduce_strided: {
    scalar: "sums over a strided axis, an output per invocation (GPUs)",
    texel:
      "four neighbouring outputs per invocation, the input read through a texture (software adapters from 8192 input elements; scalar where the inner size is not a multiple of 4 or the input exceeds a binding)",
  },
  gather_rows_backward: {
    block256: "embedding gradient in workgroups of 256 (id, column) pairs (GPUs)",
    block64: "workgroups of 64 (id, column) pairs, keeping every CPU core busy (software adapters)",
  },
  mm_mix: {
    scalar:
      "optimizer sharing and sync: an element per lane and step (where a group member does not start on a vec4)",
    vec4:
      "a vec4 per lane and step, the same arithmetic (every adapter, where every group member starts on a vec4)",
  },
  mm_tile_norms: {
    tree: "optimizer gradient norms: a workgroup reduces each tile with a tree (GPUs)",
    serial: "one invocation walks each tile (software adapters)",
  },
} as const;

/** A kernel family with variants. */
export type KernelFamily = keyof typeof KERNEL_VARIANTS;

/** The variant names of a family. */
export type KernelVariant<F extends KernelFamily> = keyof (typeof KERNEL_VARIANTS)[F] & string;

type Choices = Partial<Record<KernelFamily, string>>;

/** Parses "family:variant,..." into choices; throws naming the bad part and the accepted names. */
export function parseKernelChoices(spec: string, source = "MM_KERNELS"): Choices {
  const choices: Choices = {};
  for (const part of spec.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const [family, variant, ...rest] = part.split(":").map((s) => s.trim());
    if (!Object.hasOwn(KERNEL_VARIANTS, family)) {
      throw new Error(
        `${source}: unknown kernel family "${family}" in "${part}"; families: ${acceptedNames()}`,
      );
    }
    const variants = Object.keys(KERNEL_VARIANTS[family as KernelFamily]);
    if (variant === undefined || rest.length > 0 || !variants.includes(variant)) {
      throw new Error(
        `${source}: unknown variant "${variant ?? ""}" of ${family} in "${part}"; accepted: ${
          variants.join(", ")
        }`,
      );
    }
    choices[family as KernelFamily] = variant;
  }
  return choices;
}

/** "family (variant, variant), ..." for error messages. */
function acceptedNames(): string {
  return Object.entries(KERNEL_VARIANTS).map(([family, variants]) =>
    `${family} (${Object.keys(variants).join(", ")})`
  ).join(", ");
}

/** What was wrong with `MM_KERNELS`: raised by initGpu, not at import, so that a command can print it as one line. */
let environmentError: Error | null = null;

function readEnvironment(): Choices {
  try {
    return parseKernelChoices(readEnv("MM_KERNELS"));
  } catch (error) {
    environmentError = error as Error;
    return {};
  }
}

let choices: Choices = readEnvironment();

/** Throws the error `MM_KERNELS` gave when it was read, if any (initGpu calls it). */
export function checkKernelEnvironment(): void {
  if (environmentError) throw environmentError;
}

/**
 * The variant of `family` to run: the one `MM_KERNELS` or {@linkcode withKernels} names, otherwise
 * `automatic()`, the family's own choice for the adapter and problem.
 */
export function kernelVariant<F extends KernelFamily>(
  family: F,
  automatic: () => KernelVariant<F>,
): KernelVariant<F> {
  return (choices[family] as KernelVariant<F> | undefined) ?? automatic();
}

/** The variants forced by `MM_KERNELS` and {@linkcode withKernels}, as "family:variant,..." ("" when none). */
export function forcedKernels(): string {
  return Object.entries(choices).map(([family, variant]) => `${family}:${variant}`).join(",");
}

/**
 * Runs `fn` with the variants of `spec` ("family:variant,...", the syntax of `MM_KERNELS`) forced on
 * top of the current ones, then restores them; tests use it to run a GPU's kernels on a CPU adapter.
 */
export async function withKernels<T>(spec: string, fn: () => T | Promise<T>): Promise<T> {
  const saved = choices;
  choices = { ...choices, ...parseKernelChoices(spec, "withKernels") };
  try {
    return await fn();
  } finally {
    choices = saved;
  }
}

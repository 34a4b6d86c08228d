/**
 * Building blocks shared by the model families: declaring Linear, Conv1D, LayerNorm and embedding
 * parameters with their metadata and Hugging Face initialisation, applying them, and the
 * feed-forward activations.
 *
 * @module
 */
import type { Tensor } from "../engine/tensor.ts";
import { gelu, relu } from "../kernels/elementwise.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { matmul } from "../kernels/matmul.ts";
import type { Activation } from "./config.ts";
import type { ParameterRole, ParameterSet } from "./parameters.ts";

/** Where a declared block sits: the metadata shared by its weight and bias. */
export interface Placement {
  /** Role of the block's parameters. */
  readonly role: ParameterRole;
  /** Site refining the role (embeddings, attention, ffn, final, pooler, head.output...). */
  readonly site: string;
  /** Layer index, or null. */
  readonly layer: number | null;
  /** Number of layers of the model. */
  readonly layerCount: number;
}

/** Slots of a dense projection. */
export interface DenseSlots {
  /** Weight slot. */
  readonly weight: number;
  /** Bias slot, or null for a projection without bias. */
  readonly bias: number | null;
  /** True for GPT-2's Conv1D layout [in, out]; false for PyTorch Linear [out, in]. */
  readonly inOut: boolean;
}

/** Slots of a LayerNorm. */
export interface NormSlots {
  /** Gamma (HF `weight`). */
  readonly gamma: number;
  /** Beta (HF `bias`). */
  readonly beta: number;
}

/**
 * Declares a projection `name` from `inputs` to `outputs` features: a PyTorch Linear (weight
 * [out, in]) or, with `inOut`, GPT-2's Conv1D (weight [in, out]); weights ~ N(0, std), bias zero.
 */
export function declareDense(
  set: ParameterSet,
  name: string,
  inputs: number,
  outputs: number,
  at: Placement,
  options: { std: number; inOut?: boolean; bias?: boolean },
): DenseSlots {
  const inOut = options.inOut ?? false;
  const weight = set.declare({
    ...at,
    name: `${name}.weight`,
    kind: "weight",
    shape: inOut ? [inputs, outputs] : [outputs, inputs],
    layout: inOut ? "in_out" : "out_in",
  }, { kind: "normal", std: options.std });
  const bias = options.bias === false ? null : set.declare({
    ...at,
    name: `${name}.bias`,
    kind: "bias",
    shape: [outputs],
    layout: "vector",
  }, { kind: "zeros" });
  return { weight, bias, inOut };
}

/** Declares a LayerNorm `name` over `width` features (gamma 1, beta 0). */
export function declareNorm(
  set: ParameterSet,
  name: string,
  width: number,
  site: string,
  at: Omit<Placement, "role" | "site">,
): NormSlots {
  const gamma = set.declare({
    ...at,
    site,
    role: "norm_gamma",
    name: `${name}.weight`,
    kind: "weight",
    shape: [width],
    layout: "vector",
  }, { kind: "ones" });
  const beta = set.declare({
    ...at,
    site,
    role: "norm_beta",
    name: `${name}.bias`,
    kind: "bias",
    shape: [width],
    layout: "vector",
  }, { kind: "zeros" });
  return { gamma, beta };
}

/** Declares an embedding table [rows, width] ~ N(0, std), with the padding row zero when given. */
export function declareEmbedding(
  set: ParameterSet,
  name: string,
  rows: number,
  width: number,
  role: ParameterRole,
  layerCount: number,
  options: { std: number; paddingRow?: number | null },
): number {
  return set.declare({
    role,
    site: "embeddings",
    layer: null,
    layerCount,
    name: `${name}.weight`,
    kind: "weight",
    shape: [rows, width],
    layout: "table",
  }, { kind: "normal", std: options.std, zeroRow: options.paddingRow ?? undefined });
}

/** Applies a declared projection to x [..., in] -> [..., out], with the bias in the matmul epilogue. */
export function applyDense(set: ParameterSet, slots: DenseSlots, x: Tensor): Tensor {
  const bias = slots.bias === null ? undefined : set.slot(slots.bias);
  return matmul(x, set.slot(slots.weight), { transposeB: !slots.inOut, bias });
}

/** Applies a declared LayerNorm over the last axis. */
export function applyNorm(set: ParameterSet, slots: NormSlots, x: Tensor, eps: number): Tensor {
  return layerNorm(x, set.slot(slots.gamma), set.slot(slots.beta), eps);
}

/** Applies the feed-forward activation named in the configuration. */
export function activate(x: Tensor, activation: Activation): Tensor {
  if (activation === "relu") return relu(x);
  return gelu(x, activation === "gelu" ? "erf" : "tanh");
}

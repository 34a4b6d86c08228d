/**
 * Memory accounting: what training a set of models needs, per model, before anything is allocated -
 * parameters, gradients, optimizer state and the activations of a batch - derived from the
 * configurations alone, so a user can see whether a joint run fits an adapter before starting it.
 *
 * The activation figure counts every float32 tensor the forward pass of a training step creates
 * (they all live until backward has run), from the model's own operations:
 *
 * - embeddings: GPT-2 4·N·C (token rows, position rows, their sum, dropout); BERT and RoBERTa
 *   6·N·C + 2·N (three tables' rows, sum, LayerNorm with its two row statistics, dropout);
 * - each layer: 11·N·C + 2·N·I + 4·N + N·H (the QKV projection 3·N·C, attention output N·C and
 *   its logsumexp N·H, output projection, dropout and residual N·C each, two LayerNorms N·C + 2·N
 *   each, the feed-forward input and its activation N·I each, its output, dropout and residual);
 * - GPT-2's final LayerNorm N·C + 2·N; a pooler 3·B·C;
 * - heads: a language-model head N·V logits plus 3·N for the loss (BERT's and RoBERTa's also
 *   3·N·C + 2·N for the transform), token classification N·labels, question answering 2·N, sequence
 *   classification a few B·C.
 *
 * with N = batch x length tokens, C the width, I the feed-forward width, H heads, V the vocabulary.
 * Backward then holds the gradient of one activation at a time on top, at its peak those of the two
 * largest and the N·C gradient arriving at them (measured: 9·N·C at the feed-forward's GELU, I = 4·C):
 * `backwardPeak`. Parameter gradients take no memory beyond the arena: matmul (weights and biases),
 * the embedding backward, LayerNorm and RMSNorm add them straight into the arena's `.grad`, so no dense
 * V·C gradient is ever made. Pooled buffers round up to size classes (at most 12.5%), which the
 * figures leave out. Parameters, gradients and each AdamW moment take the model's arena: every tensor padded
 * to 64 elements (256 bytes).
 *
 * @module
 */
import { alignedLength } from "../engine/arena.ts";
import { shapeSize } from "../engine/shape.ts";
import type { ModelConfig } from "./config.ts";
import type { Task } from "./heads.ts";
import { TransformerModel } from "./model.ts";

/** A model to account for: a configuration and its head; a `TransformerModel` is one. */
export interface MemoryModel {
  /** The architecture. */
  readonly config: ModelConfig;
  /** The head; "base" when omitted. */
  readonly task?: Task;
  /** Classes of a classification head; 2 when omitted. */
  readonly numLabels?: number;
}

/** The batch and optimizer an estimate is for. */
export interface MemoryOptions {
  /** Sequences per batch. */
  batch: number;
  /** Tokens per sequence. */
  length: number;
  /** AdamW's third buffer (the running maximum of exp_avg_sq); default false. */
  amsgrad?: boolean;
}

/** Bytes one model needs for training, by kind. */
export interface ModelMemory {
  /** Parameter values in the arena, alignment padding included. */
  parameters: number;
  /** Gradients, the same size as the parameters. */
  gradients: number;
  /** AdamW's moments: two (three with AMSGrad) arena-sized buffers. */
  optimizerState: number;
  /** Tensors the forward pass of one batch keeps for backward (see the module docs). */
  activations: number;
  /** What backward holds on top of the activations at its peak: the two largest activation gradients and an N·C one. */
  backwardPeak: number;
  /** The sum of all of the above. */
  total: number;
}

/** An estimate per model, and the sum over the models. */
export interface MemoryEstimate {
  /** Per model, by name. */
  models: Record<string, ModelMemory>;
  /** The sum over the models. */
  total: ModelMemory;
}

/** Elements of a model's parameter arena: every tensor padded to whole alignment units ({@linkcode alignedLength}). */
function arenaElements(model: MemoryModel): number {
  const metadata = new TransformerModel(model.config, {
    task: model.task,
    numLabels: model.numLabels,
    allocate: false,
  });
  return metadata.parameterSet.specs.reduce(
    (sum, spec) => sum + alignedLength(shapeSize(spec.shape)),
    0,
  );
}

/** The float32 activations of one model's training forward pass, and its two largest ones (module docs). */
function activationElements(model: MemoryModel, batch: number, length: number): {
  total: number;
  largest: [number, number];
} {
  const c = model.config;
  const task = model.task ?? "base";
  const N = batch * length, C = c.hiddenSize, I = c.intermediateSize, H = c.numHeads;
  const gpt2 = c.family === "gpt2";
  let total = gpt2 ? 4 * N * C : 6 * N * C + 2 * N;
  total += c.numLayers * (11 * N * C + 2 * N * I + 4 * N + N * H);
  if (gpt2) total += N * C + 2 * N;
  if (!gpt2 && (task === "base" || (task === "sequence-classification" && c.family === "bert"))) {
    total += 3 * batch * C;
  }
  let head = 0;
  if (task === "causal-lm" || task === "masked-lm") {
    head = N * c.vocabSize;
    total += head + 3 * N + (gpt2 ? 0 : 3 * N * C + 2 * N);
  } else if (task === "token-classification") total += N * (model.numLabels ?? 2) + 3 * N;
  else if (task === "question-answering") total += 2 * N + 6 * batch;
  else if (task === "sequence-classification") total += 3 * batch * C + 3 * batch;
  const [first, second] = [head, N * I, N * I].sort((a, b) => b - a);
  return { total, largest: [first, second] };
}

/**
 * Bytes each model needs to train jointly on batches of `options.batch` x `options.length` tokens
 * with AdamW: parameters, gradients, optimizer state and activations, from the configurations
 * alone (nothing is allocated; see the module docs for the activation formula). Models are given
 * by name, as the MultiModelOptimizer takes them.
 */
export function estimateMemory(
  models: Record<string, MemoryModel>,
  options: MemoryOptions,
): MemoryEstimate {
  const { batch, length } = options;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(length) || length < 1) {
    throw new Error(`estimateMemory: batch and length must be positive integers, got ${batch} x ${length}`);
  }
  const moments = options.amsgrad ? 3 : 2;
  const total: ModelMemory = emptyMemory();
  const perModel: Record<string, ModelMemory> = {};
  for (const [name, model] of Object.entries(models)) {
    const arena = arenaElements(model) * 4;
    const activations = activationElements(model, batch, length);
    const memory: ModelMemory = {
      parameters: arena,
      gradients: arena,
      optimizerState: moments * arena,
      activations: activations.total * 4,
      backwardPeak:
        (activations.largest[0] + activations.largest[1] + batch * length * model.config.hiddenSize) *
        4,
      total: 0,
    };
    memory.total = memory.parameters + memory.gradients + memory.optimizerState + memory.activations +
      memory.backwardPeak;
    perModel[name] = memory;
    for (const key of Object.keys(total) as (keyof ModelMemory)[]) total[key] += memory[key];
  }
  return { models: perModel, total };
}

function emptyMemory(): ModelMemory {
  return { parameters: 0, gradients: 0, optimizerState: 0, activations: 0, backwardPeak: 0, total: 0 };
}

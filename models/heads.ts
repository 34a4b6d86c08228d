/**
 * Task heads for every family, with Hugging Face's parameter names and losses: sequence
 * classification, token classification, extractive question answering, causal LM and masked LM.
 *
 * @module
 */
import { type Tensor, tensor } from "../engine/tensor.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { dropout } from "../kernels/dropout.ts";
import { fused, scale, tanh } from "../kernels/elementwise.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { narrow } from "../kernels/layout.ts";
import { matmul } from "../kernels/matmul.ts";
import { mean } from "../kernels/reduce.ts";
import { formatShape } from "../engine/shape.ts";
import type { ModelConfig } from "./config.ts";
import { type Batch, type BodyInputs, hostIds } from "./inputs.ts";
import {
  activate,
  applyDense,
  applyNorm,
  declareDense,
  declareNorm,
  type DenseSlots,
  type NormSlots,
} from "./layers.ts";
import type { ParameterSet } from "./parameters.ts";

/** Every task a model can be built for, in the order error messages and `--help` list them. */
export const TASKS = [
  "base",
  "sequence-classification",
  "token-classification",
  "question-answering",
  "causal-lm",
  "masked-lm",
] as const;

/** The tasks a model can be built for. */
export type Task = typeof TASKS[number];

/** What a head adds to the model's output. */
export interface HeadOutput {
  /** Class logits [B, labels], token logits [B, T, labels], or vocabulary logits [B, T, V]. */
  logits?: Tensor;
  /** Question answering: start logits [B, T]. */
  startLogits?: Tensor;
  /** Question answering: end logits [B, T]. */
  endLogits?: Tensor;
  /** The task loss when the batch has labels. */
  loss?: Tensor;
}

/** The state a head reads besides the hidden state. */
export interface HeadContext {
  /** Body inputs (token rows, batch and length). */
  readonly inputs: BodyInputs;
  /** The user's batch (labels). */
  readonly batch: Batch;
  /** Dropout on or off. */
  readonly training: boolean;
  /** The pooler output, when the body has a pooler. */
  readonly pooled: Tensor | null;
  /** The word-embedding table, for tied LM decoders. */
  readonly wordEmbeddings: Tensor;
}

/** A task head. */
export interface Head {
  /** Computes logits (and the loss when labels are present) from the hidden state [B, T, C]. */
  forward(hidden: Tensor, context: HeadContext): HeadOutput;
}

/** Declares the head for `task` in `set` (after the body) and returns it. */
export function createHead(
  config: ModelConfig,
  set: ParameterSet,
  task: Task,
  numLabels: number,
): Head | null {
  // The type does not reach JavaScript callers or names read from a command line; without this an
  // unknown name would fall through the switch and build a headless model.
  if (!(TASKS as readonly string[]).includes(task)) {
    throw new Error(`unknown task ${JSON.stringify(task)}; valid tasks: ${TASKS.join(", ")}`);
  }
  set.namePrefix = "";
  switch (task) {
    case "base":
      return null;
    case "sequence-classification":
      return new SequenceClassificationHead(config, set, numLabels);
    case "token-classification":
      return new TokenClassificationHead(config, set, numLabels);
    case "question-answering":
      return new QuestionAnsweringHead(config, set);
    case "causal-lm":
    case "masked-lm":
      return new LanguageModelHead(config, set, task === "causal-lm");
  }
}

function place(config: ModelConfig, site: string) {
  return { role: "head" as const, site, layer: null, layerCount: config.numLayers };
}

function classifierDropout(config: ModelConfig): number {
  return config.classifierDropout ?? (config.family === "gpt2" ? 0.1 : config.hiddenDropout);
}

function rowsOf(hidden: Tensor, inputs: BodyInputs): Tensor {
  return hidden.reshape([inputs.batch * inputs.length, -1]);
}

/**
 * Sequence classification. BERT: dropout + `classifier` on the pooler output. RoBERTa: `classifier.dense`,
 * tanh and `classifier.out_proj` on the first token. GPT-2: `score` (no bias) on the last non-padding
 * token. Loss: cross-entropy, or mean squared error when numLabels is 1 (regression), as in Hugging Face.
 */
class SequenceClassificationHead implements Head {
  readonly #dense: DenseSlots | null = null;
  readonly #output: DenseSlots;

  constructor(readonly config: ModelConfig, readonly set: ParameterSet, readonly numLabels: number) {
    const C = config.hiddenSize;
    const std = config.initializerRange;
    if (config.family === "roberta") {
      this.#dense = declareDense(set, "classifier.dense", C, C, place(config, "head.dense"), { std });
      this.#output = declareDense(set, "classifier.out_proj", C, numLabels, place(config, "head.output"), {
        std,
      });
    } else if (config.family === "gpt2") {
      this.#output = declareDense(set, "score", C, numLabels, place(config, "head.output"), {
        std,
        bias: false,
      });
    } else {
      this.#output = declareDense(set, "classifier", C, numLabels, place(config, "head.output"), { std });
    }
  }

  forward(hidden: Tensor, { inputs, batch, training, pooled }: HeadContext): HeadOutput {
    const p = classifierDropout(this.config);
    let features: Tensor;
    if (this.config.family === "bert") {
      features = dropout(pooled!, p, { training });
    } else if (this.config.family === "roberta") {
      const first = dropout(gatherRows(rowsOf(hidden, inputs), inputs.firstTokenRows), p, { training });
      features = dropout(tanh(applyDense(this.set, this.#dense!, first)), p, { training });
    } else {
      features = gatherRows(rowsOf(hidden, inputs), inputs.lastTokenRows);
    }
    const logits = applyDense(this.set, this.#output, features);
    if (!batch.labels) return { logits };
    if (this.numLabels === 1) {
      const labels = batch.labels.reshape([inputs.batch, 1]);
      return {
        logits,
        loss: mean(fused([logits, labels], (y, t) => y.sub(t).mul(y.sub(t)), "squared_error")),
      };
    }
    return { logits, loss: crossEntropy(logits, batch.labels) };
  }
}

/** Token classification: dropout + `classifier` on every token; cross-entropy ignoring label -100. */
class TokenClassificationHead implements Head {
  readonly #output: DenseSlots;

  constructor(readonly config: ModelConfig, readonly set: ParameterSet, numLabels: number) {
    this.#output = declareDense(
      set,
      "classifier",
      config.hiddenSize,
      numLabels,
      place(config, "head.output"),
      {
        std: config.initializerRange,
      },
    );
  }

  forward(hidden: Tensor, { inputs, batch, training }: HeadContext): HeadOutput {
    const logits = applyDense(
      this.set,
      this.#output,
      dropout(hidden, classifierDropout(this.config), { training }),
    );
    if (!batch.labels) return { logits };
    if (batch.labels.size !== inputs.batch * inputs.length) {
      throw new Error(
        `labels: expected [${inputs.batch}, ${inputs.length}] (a tag per token), got ${
          formatShape(batch.labels.shape)
        }`,
      );
    }
    const flat = logits.reshape([inputs.batch * inputs.length, -1]);
    return { logits, loss: crossEntropy(flat, batch.labels.reshape([-1]), { ignoreIndex: -100 }) };
  }
}

/**
 * Extractive QA: `qa_outputs` gives start and end logits per token; the loss is the mean of the two
 * cross-entropies, with positions clamped to [0, T] and T ignored (Hugging Face's rule).
 */
class QuestionAnsweringHead implements Head {
  readonly #output: DenseSlots;

  constructor(readonly config: ModelConfig, readonly set: ParameterSet) {
    this.#output = declareDense(set, "qa_outputs", config.hiddenSize, 2, place(config, "head.output"), {
      std: config.initializerRange,
    });
  }

  forward(hidden: Tensor, { inputs, batch }: HeadContext): HeadOutput {
    const { batch: B, length: T } = inputs;
    const logits = applyDense(this.set, this.#output, hidden);
    const startLogits = narrow(logits, 2, 0, 1).reshape([B, T]);
    const endLogits = narrow(logits, 2, 1, 1).reshape([B, T]);
    if (!batch.startPositions || !batch.endPositions) return { startLogits, endLogits };
    const clamp = (t: Tensor, what: string) => {
      const values = hostIds(t, what);
      if (values.length !== B) {
        throw new Error(`${what}: expected ${B} positions, got ${formatShape(t.shape)}`);
      }
      return tensor(Int32Array.from(values, (v) => Math.min(Math.max(v, 0), T)));
    };
    const start = crossEntropy(startLogits, clamp(batch.startPositions, "startPositions"), {
      ignoreIndex: T,
    });
    const end = crossEntropy(endLogits, clamp(batch.endPositions, "endPositions"), { ignoreIndex: T });
    return { startLogits, endLogits, loss: scale(fused([start, end], (s, e) => s.add(e), "qa_loss"), 0.5) };
  }
}

/**
 * Language-model heads with the decoder tied to the word embeddings. GPT-2: `lm_head` alone.
 * BERT: `cls.predictions.transform` (dense, activation, LayerNorm) and `cls.predictions.bias`.
 * RoBERTa: `lm_head.dense`, GELU, `lm_head.layer_norm` and `lm_head.bias`. Causal LM predicts
 * token t+1 from position t; masked LM predicts each labelled position; -100 is ignored.
 */
class LanguageModelHead implements Head {
  readonly #transform: { dense: DenseSlots; norm: NormSlots } | null = null;
  readonly #bias: number | null = null;

  constructor(readonly config: ModelConfig, readonly set: ParameterSet, readonly causal: boolean) {
    const C = config.hiddenSize;
    const std = config.initializerRange;
    if (config.family === "gpt2") return;
    const prefix = config.family === "bert" ? "cls.predictions" : "lm_head";
    const dense = declareDense(
      set,
      config.family === "bert" ? `${prefix}.transform.dense` : `${prefix}.dense`,
      C,
      C,
      place(config, "head.dense"),
      { std },
    );
    const norm = declareNorm(
      set,
      config.family === "bert" ? `${prefix}.transform.LayerNorm` : `${prefix}.layer_norm`,
      C,
      "head.dense",
      { layer: null, layerCount: config.numLayers },
    );
    this.#transform = { dense, norm };
    this.#bias = set.declare({
      ...place(config, "head.output"),
      name: `${prefix}.bias`,
      kind: "bias",
      shape: [config.vocabSize],
      layout: "vector",
    }, { kind: "zeros" });
  }

  forward(hidden: Tensor, { inputs, batch, wordEmbeddings }: HeadContext): HeadOutput {
    let features = hidden;
    if (this.#transform) {
      const activation = this.config.family === "roberta" ? "gelu" : this.config.hiddenAct;
      const dense = activate(applyDense(this.set, this.#transform.dense, hidden), activation);
      features = applyNorm(this.set, this.#transform.norm, dense, this.config.layerNormEps);
    }
    const bias = this.#bias === null ? undefined : this.set.slot(this.#bias);
    const logits = matmul(features, wordEmbeddings, { transposeB: true, bias });
    if (!batch.labels) return { logits };
    const { batch: B, length: T } = inputs;
    const labels = hostIds(batch.labels, "labels");
    if (labels.length !== B * T) {
      throw new Error(`labels: expected [${B}, ${T}], got ${formatShape(batch.labels.shape)}`);
    }
    const targets = this.causal
      ? tensor(Int32Array.from({ length: B * T }, (_, i) => (i % T === T - 1 ? -100 : labels[i + 1])))
      : batch.labels.reshape([B * T]);
    return { logits, loss: crossEntropy(logits.reshape([B * T, -1]), targets, { ignoreIndex: -100 }) };
  }
}

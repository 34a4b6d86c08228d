/**
 * A transformer model of any family with any task head: its parameters (with metadata, in an
 * arena), its forward pass, and train/eval modes.
 *
 * @module
 */
import { checkOptions } from "../engine/options.ts";
import type { Tensor } from "../engine/tensor.ts";
import { BertEncoder } from "./bert.ts";
import { type ModelConfig, validateConfig } from "./config.ts";
import { Gpt2Decoder } from "./gpt2.ts";
import { createHead, type Head, type Task } from "./heads.ts";
import { type Batch, bodyInputs } from "./inputs.ts";
import { type Parameter, ParameterSet } from "./parameters.ts";

/** The names {@linkcode ModelOptions} has (a misspelt one would otherwise be ignored in silence). */
const MODEL_OPTIONS: readonly string[] = ["name", "task", "numLabels", "labels", "seed", "allocate"];

/** Options of {@linkcode TransformerModel}. */
export interface ModelOptions {
  /** Name of the model (recorded in parameter metadata; the optimizer's key). Default: the family. */
  name?: string;
  /** Task head; default "base" (the bare body, like BertModel / GPT2Model / RobertaModel). */
  task?: Task;
  /** Classes of a classification head; default 2 (or the count of `labels`). */
  numLabels?: number;
  /**
   * The classes' names, in order (Hugging Face's `id2label`, which a saved `config.json` holds, so that
   * its pipelines name their predictions); default none.
   */
  labels?: readonly string[];
  /** Seed of the initial weights; default 0. */
  seed?: number;
  /** Allocate and initialise the weights (default); false builds the metadata only, for describing a model. */
  allocate?: boolean;
}

/** What a forward pass returns (Hugging Face's output field names). */
export interface ModelOutput {
  /** Final hidden state [B, T, C]. */
  lastHiddenState: Tensor;
  /** BERT/RoBERTa pooler output [B, C], when the model has a pooler. */
  poolerOutput?: Tensor;
  /** Head logits. */
  logits?: Tensor;
  /** QA start logits [B, T]. */
  startLogits?: Tensor;
  /** QA end logits [B, T]. */
  endLogits?: Tensor;
  /** Loss, when the batch carries labels. */
  loss?: Tensor;
}

/** Most classes a classification head may have. */
const MAX_LABELS = 1 << 20;

const BODY_PREFIX = { bert: "bert.", roberta: "roberta.", gpt2: "transformer." } as const;

/** A BERT-, GPT-2- or RoBERTa-style model, optionally with a task head. */
export class TransformerModel {
  /** The model's name. */
  readonly name: string;
  /** Task of the head. */
  readonly task: Task;
  /** Classes of a classification head (2 when unused). */
  readonly numLabels: number;
  /** The classes' names, or null when none were given. */
  readonly labels: readonly string[] | null;
  /** Parameters and their arena. */
  readonly parameterSet: ParameterSet;
  /** Dropout is active while true (`train()` / `eval()`). */
  training = true;
  readonly #body: BertEncoder | Gpt2Decoder;
  readonly #head: Head | null;

  /** Builds the model and initialises its weights like Hugging Face (normal(0, initializer_range), zero biases, unit norms). */
  constructor(readonly config: ModelConfig, options: ModelOptions = {}) {
    checkOptions("TransformerModel", options, MODEL_OPTIONS);
    this.name = options.name ?? config.family;
    this.task = options.task ?? "base";
    this.labels = options.labels ? [...options.labels] : null;
    this.numLabels = options.numLabels ?? this.labels?.length ?? 2;
    const names = this.labels;
    if (
      names &&
      (names.length !== this.numLabels || !names.every((l) => typeof l === "string") ||
        new Set(names).size !== names.length)
    ) {
      throw new Error(
        `${this.name}: labels must be ${this.numLabels} distinct names (numLabels), got ${
          JSON.stringify(names)
        }`,
      );
    }
    // Configurations built in code skip modelConfig's checks; a size like 1e9 layers must fail here, not in allocation.
    validateConfig(config, `${this.name} configuration`);
    if (!Number.isInteger(this.numLabels) || this.numLabels < 1 || this.numLabels > MAX_LABELS) {
      throw new Error(
        `${this.name}: numLabels must be an integer in [1, ${MAX_LABELS}], got ${this.numLabels}`,
      );
    }
    const set = new ParameterSet(this.name);
    set.namePrefix = this.task === "base" ? "" : BODY_PREFIX[config.family];
    // Hugging Face builds a pooler only for the bare BERT/RoBERTa model and BERT's sequence classifier.
    const pooler = config.family !== "gpt2" &&
      (this.task === "base" || (this.task === "sequence-classification" && config.family === "bert"));
    this.#body = config.family === "gpt2" ? new Gpt2Decoder(config, set) : new BertEncoder(config, set, {
      pooler,
      causal: this.task === "causal-lm" || config.isDecoder === true,
    });
    this.#head = createHead(config, set, this.task, this.numLabels);
    if (options.allocate !== false) set.allocate(options.seed ?? 0);
    this.parameterSet = set;
  }

  /** Every parameter with its metadata, in state-dict order. */
  get parameters(): readonly Parameter[] {
    return this.parameterSet.parameters;
  }

  /** Switches dropout on. Returns the model. */
  train(): this {
    this.training = true;
    return this;
  }

  /** Switches dropout off. Returns the model. */
  eval(): this {
    this.training = false;
    return this;
  }

  /** Zeroes this model's parameter gradients (and no other model's, when an optimizer holds several). */
  zeroGrad(): void {
    this.parameterSet.zeroGrad();
  }

  /**
   * Frees the model's parameters; using the model afterwards is an error. While an optimizer owns
   * them (it adopted the model), dispose the optimizer first: it hands the parameters back.
   */
  dispose(): void {
    this.parameterSet.dispose();
  }

  /**
   * Runs the model; with labels in the batch the output carries the task loss. In a loop, run it
   * inside `tidy()`: the tensors it makes, those saved for backward too, otherwise live until disposed.
   */
  forward(batch: Batch): ModelOutput {
    const inputs = bodyInputs(this.config, batch);
    const hidden = this.#body.forward(inputs, this.training);
    const pooled = this.#body instanceof BertEncoder && this.#body.hasPooler
      ? this.#body.pool(hidden, inputs)
      : null;
    const output: ModelOutput = { lastHiddenState: hidden };
    if (pooled) output.poolerOutput = pooled;
    if (!this.#head) return output;
    return {
      ...output,
      ...this.#head.forward(hidden, {
        inputs,
        batch,
        training: this.training,
        pooled,
        wordEmbeddings: this.#body.wordEmbeddings,
      }),
    };
  }
}

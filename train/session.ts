/**
 * The training loop's core, readable top to bottom and free of files: {@linkcode prepareSession} turns
 * a data set in memory into tokenizers, models and batches, and a {@linkcode TrainingSession} runs
 * their steps one at a time, reading losses back every `logEvery` steps and evaluating on the
 * validation split after every epoch (or every `evalEvery` steps). `deno task train` drives it and
 * writes what it returns to the run folder (train/loop.ts); the web page drives it and draws it.
 *
 * A step never reads GPU memory back: losses are kept on the GPU and read in one round trip every
 * `logEvery` steps, together with the optimizer's figures; evaluation reads its outputs once per split.
 *
 * @module
 */
import type { Dataset } from "../data/datasets.ts";
import { pairSpecialTokens } from "../data/encode.ts";
import { type Tokenizer, trainTokenizer } from "../data/tokenizer.ts";
import { manualSeed } from "../engine/random.ts";
import { keep, readAll, type Tensor, tidy } from "../engine/tensor.ts";
import { mutualDistillation } from "../kernels/distillation.ts";
import { add, scale } from "../kernels/elementwise.ts";
import { usablePositions } from "../models/inputs.ts";
import type { TransformerModel } from "../models/model.ts";
import type { MultiModelOptimizer } from "../optim/multimodel.ts";
import { buildModel, buildOptimizers, headFor } from "./models.ts";
import { type ModelSpec, type TrainOptions, windowRoom } from "./options.ts";
import { TaskRunner } from "./runner.ts";
import { type Encoder, taskKind } from "./task_kinds.ts";

/** One logged interval of training steps: the mean task loss and the optimizer's figures per model. */
export interface StepLine {
  /** The last step of the interval (1-based). */
  step: number;
  /** Steps in the interval. */
  steps: number;
  /** Wall-clock seconds of the interval's steps. */
  seconds: number;
  /** Non-padding tokens seen in the interval. */
  tokens: number;
  /** Per model. */
  models: Record<
    string,
    { loss: number; lr: number; lrMultiplier: number; gradNorm: number; updates: number; skipped: number }
  >;
}

/** One evaluation of one model on a split. */
export interface EvaluationLine {
  /** Training steps done. */
  step: number;
  /** Epochs done. */
  epoch: number;
  /** Split. */
  split: "validation" | "test";
  /** Model name. */
  model: string;
  /** The task's metrics. */
  metrics: Record<string, number>;
}

/** What a session trains: its options, its batches and scores, its models by name. */
export interface PreparedSession {
  /** The run's options. */
  options: TrainOptions;
  /** Batches and scores. */
  runner: TaskRunner;
  /** The models, by name. */
  models: Record<string, TransformerModel>;
  /** Each model's tokenizer, by model name (models may share one). */
  tokenizers: Record<string, Tokenizer>;
}

/** What a run starts from besides the data set; everything not given is trained or built from scratch. */
export interface SessionSources {
  /** Tokenizers read for some models (from their folders or an earlier run), by model name. */
  tokenizers?: Record<string, Tokenizer>;
  /** The shared tokenizer of the other models, when one was read; otherwise it is trained on the training split. */
  shared?: Tokenizer | null;
  /** A model's starting weights (a Hugging Face folder, a checkpoint), or null to build it from scratch. */
  loadModel?: (spec: ModelSpec, index: number) => Promise<TransformerModel | null>;
}

/** The language-modelling objective of a model's head, or null outside lm. */
function objectiveOf(options: TrainOptions, family: ModelSpec["family"]): Encoder["objective"] {
  if (options.task !== "lm") return null;
  return headFor(options.task, family) === "causal-lm" ? "causal" : "masked";
}

/**
 * Prepares a run over a data set in memory: each model's tokenizer (given, or one byte-level BPE shared
 * by the rest and trained on the training split), the models (loaded, or built from scratch with the
 * run's seed) and the {@linkcode TaskRunner}.
 */
export async function prepareSession(
  options: TrainOptions,
  dataset: Dataset<unknown>,
  sources: SessionSources = {},
): Promise<PreparedSession> {
  const kind = taskKind(options.task, dataset.labels);
  const tokenizers: Record<string, Tokenizer> = {};
  let shared = sources.shared ?? null;
  for (const spec of options.models) {
    const own = sources.tokenizers?.[spec.name];
    if (own) tokenizers[spec.name] = own;
    else {
      shared ??= trainTokenizer(dataset.train.flatMap((e) => kind.texts(e)), {
        vocabSize: options.vocabSize,
      });
      tokenizers[spec.name] = shared;
    }
  }
  const distinct = new Set(Object.values(tokenizers));
  if (options.docStride !== null) {
    // checkTrainOptions allows for 4 special tokens in a pair; a tokenizer read from a folder may add more.
    for (const [name, tokenizer] of Object.entries(tokenizers)) {
      const specials = pairSpecialTokens(tokenizer);
      const room = windowRoom(options.maxLength, specials);
      if (options.docStride >= room) {
        throw new Error(
          `train: doc-stride must be below ${room} with max-length ${options.maxLength} and ${name}'s ` +
            `tokenizer (${specials} special tokens in a pair), got ${options.docStride}`,
        );
      }
    }
  }
  if (options.distill > 0 && distinct.size > 1 && !["sentiment", "spam"].includes(options.task)) {
    throw new Error(
      "train: --distill compares predictions token by token here, which needs one tokenizer for every model; " +
        "these models have different tokenizers (only sentiment and spam allow that)",
    );
  }
  const models: Record<string, TransformerModel> = {};
  for (const [index, spec] of options.models.entries()) {
    const tokenizer = tokenizers[spec.name];
    models[spec.name] = (await sources.loadModel?.(spec, index)) ?? buildModel(
      spec,
      options,
      {
        vocabSize: tokenizer.vocabSize,
        padId: tokenizer.special.pad,
        textIds: { start: tokenizer.special.cls, end: tokenizer.special.sep },
      },
      dataset.labels,
      index,
    );
  }
  for (const [name, model] of Object.entries(models)) {
    const usable = usablePositions(model.config);
    const ids = tokenizers[name].vocabSize;
    // A loaded model's tokenizer comes from a file beside it: one that gives ids past its embeddings
    // would fail at the first batch, naming neither.
    const problem = usable < options.maxLength
      ? `reads at most ${usable} tokens, fewer than --max-length ${options.maxLength} ` +
        `(a loaded model keeps its positions: pass --max-length ${usable})`
      : ids > model.config.vocabSize
      ? `has ${model.config.vocabSize} token embeddings, fewer than its tokenizer's ${ids} ids ` +
        "(a tokenizer.json that is not the one the model was trained with)"
      : null;
    if (problem) {
      for (const built of Object.values(models)) built.dispose();
      throw new Error(`train: model "${name}" ${problem}`);
    }
  }
  const encoders = Object.fromEntries(options.models.map((spec) => [spec.name, {
    tokenizer: tokenizers[spec.name],
    objective: objectiveOf(options, spec.family),
    family: spec.family,
  }]));
  return { options, runner: new TaskRunner(kind, dataset, encoders, options), models, tokenizers };
}

/** What one {@linkcode TrainingSession.advance} did besides its step. */
export interface StepReport {
  /** The step just taken (1-based). */
  step: number;
  /** The logged interval this step closed, or null. */
  logged: StepLine | null;
  /** The validation evaluation after this step, or null. */
  evaluated: EvaluationLine[] | null;
}

/** One batch trained but not yet logged: the step it belongs to and its losses, kept on the GPU. */
interface PendingBatch {
  step: number;
  losses: Record<string, Tensor>;
  tokens: number;
}

/** A prepared run's steps, one {@linkcode advance} at a time, with its optimizers and evaluations. */
export class TrainingSession {
  /** The optimizers: one joint MultiModelOptimizer, or one per model when independent. */
  readonly optimizers: MultiModelOptimizer[];
  /** Batches per epoch. */
  readonly batchesPerEpoch: number;
  /**
   * Training steps per epoch. A step is an update, as in Hugging Face's `Trainer`: `accumulate` batches,
   * fewer in an epoch's last step when they do not divide its batches.
   */
  readonly stepsPerEpoch: number;
  /** Training steps (updates) of the whole run (`steps`, or `epochs` epochs). */
  readonly totalSteps: number;
  /** The models' names, in the run's order. */
  readonly names: readonly string[];
  #step = 0;
  #batches: Generator<{ index: number; tokens: number }> | null = null;
  readonly #pending: PendingBatch[] = [];
  #windowStart = 0;

  private constructor(readonly run: PreparedSession) {
    const { options, runner, models } = run;
    this.names = Object.keys(models);
    this.batchesPerEpoch = Math.ceil(runner.trainSize / options.batchSize);
    this.stepsPerEpoch = Math.ceil(this.batchesPerEpoch / options.accumulate);
    this.totalSteps = options.steps ?? options.epochs * this.stepsPerEpoch;
    this.optimizers = buildOptimizers(models, options, this.totalSteps);
  }

  /**
   * A session over a prepared run: builds its optimizers, then either seeds the GPU's randomness with
   * the run's seed, or calls `restore` (which loads a checkpoint into the optimizers and returns the
   * step it was taken after) to continue from there.
   */
  static async open(
    run: PreparedSession,
    restore?: (optimizers: readonly MultiModelOptimizer[]) => Promise<number>,
  ): Promise<TrainingSession> {
    const session = new TrainingSession(run);
    if (restore) session.#step = await restore(session.optimizers);
    else manualSeed(run.options.seed);
    return session;
  }

  /** Steps taken so far (a resumed session counts the steps before it too). */
  get step(): number {
    return this.#step;
  }

  /** Whether every step of the run has been taken. */
  get done(): boolean {
    return this.#step >= this.totalSteps;
  }

  /**
   * Takes the next training step (its `accumulate` batches, then the update); when it closes a logged
   * interval (every `logEvery` steps and at each evaluation), reads its losses and figures back, and
   * when an evaluation is due (after every epoch, or every `evalEvery` steps, and after the last step),
   * evaluates every model on the validation split.
   */
  async advance(): Promise<StepReport> {
    if (this.done) throw new Error(`train: the session has taken all ${this.totalSteps} steps`);
    const { runner, options } = this.run;
    // An interval's time runs from its first step to the readback that closes it.
    if (this.#pending.length === 0) this.#windowStart = performance.now();
    const first = (this.#step % this.stepsPerEpoch) * options.accumulate;
    const count = Math.min(options.accumulate, this.batchesPerEpoch - first);
    const step = this.#step + 1;
    for (let k = 0; k < count; k++) {
      let next = this.#batches?.next();
      if (!next || next.done) {
        const epoch = Math.floor(this.#step / this.stepsPerEpoch);
        this.#batches = runner.trainBatches(epoch, options.batchSize, first + k);
        next = this.#batches.next();
      }
      const batch = next.value!;
      // The step's last batch closes its cycle: an epoch's shorter last cycle updates with the mean of its batches.
      const losses = trainBatch(this.run, this.optimizers, batch.index, k === count - 1);
      this.#pending.push({ step, losses, tokens: batch.tokens });
    }
    this.#step = step;
    const evaluating = step === this.totalSteps ||
      (options.evalEvery === null ? step % this.stepsPerEpoch === 0 : step % options.evalEvery === 0);
    // Logged intervals end at multiples of logEvery and at evaluations, so a resumed run logs the same lines.
    const logged = step % options.logEvery === 0 || evaluating
      ? await logSteps(this.#pending.splice(0), this.optimizers, this.names, this.#windowStart)
      : null;
    const evaluated = evaluating ? await this.evaluate("validation") : null;
    return { step, logged, evaluated };
  }

  /** Evaluates every model on a split: forward in eval mode, one readback per model, the task's metrics. */
  async evaluate(split: "validation" | "test"): Promise<EvaluationLine[]> {
    const { runner, models } = this.run;
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
      lines.push({
        step: this.#step,
        epoch: this.#step / this.stepsPerEpoch,
        split,
        model: name,
        metrics: runner.score(name, split, perBatch),
      });
      model.train();
    }
    return lines;
  }

  /** Frees the losses not yet read, the optimizers (which hand the models their parameters back), then the models. */
  dispose(): void {
    for (const pending of this.#pending.splice(0)) {
      for (const loss of Object.values(pending.losses)) loss.dispose();
    }
    for (const optimizer of this.optimizers) optimizer.dispose();
    for (const model of Object.values(this.run.models)) model.dispose();
  }
}

/**
 * One batch of a training step, batch `index` of the epoch's order: forward every model, add the
 * mutual distillation terms, backward, log the losses and step the optimizers, which update on the
 * step's last batch (`closeCycle`). Returns the task losses (kept on the GPU).
 */
function trainBatch(
  run: PreparedSession,
  optimizers: readonly MultiModelOptimizer[],
  index: number,
  closeCycle: boolean,
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
      optimizer.step({ closeCycle });
    }
    return Object.fromEntries(names.map((n, i) => [n, keep(losses[i])]));
  });
}

/**
 * Reads the pending batches' losses and the optimizers' figures in one round trip each; one line per
 * logged interval (its loss the mean over its batches), timed from `since` (a performance.now()
 * reading) to the end of the readback.
 */
async function logSteps(
  pending: readonly PendingBatch[],
  optimizers: readonly MultiModelOptimizer[],
  names: readonly string[],
  since: number,
): Promise<StepLine> {
  const tensors = pending.flatMap((p) => names.map((n) => p.losses[n]));
  const values = await readAll(tensors);
  // The readback waits for the interval's GPU work, so the interval's time is measured after it.
  const interval = (performance.now() - since) / 1000;
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
    steps: pending.at(-1)!.step - pending[0].step + 1,
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

/** Metrics as `key value, ...`, integers as they are and fractions to four decimals. */
export function formatMetrics(metrics: Record<string, number>): string {
  return Object.entries(metrics).map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(4)}`).join(", ");
}

/** One evaluation as the line `deno task train` prints: epoch, step, split, model and metrics. */
export function describeEvaluation(line: EvaluationLine): string {
  return `epoch ${line.epoch.toFixed(1)} step ${line.step} ${line.split} ${line.model}: ${
    formatMetrics(line.metrics)
  }`;
}

/**
 * The model check against Hugging Face transformers: a reference folder (layout of
 * tests/fixtures/hf, see its README) holds `config.json`, `model.safetensors`, `io.safetensors`
 * (inputs, outputs, `loss`, and the weights `R`/`Rp`/`R_<output>` of a linear loss) and
 * `grads.safetensors`. {@linkcode checkModelFolder} loads the model, runs forward and backward and
 * compares outputs, loss and every parameter gradient, with tolerances chosen by the weights' scale
 * and an absolute bound for gradients that are zero in exact arithmetic. The AdamW check is
 * optim/parity.ts; `deno task parity` (tools/parity.ts) runs either on folders.
 *
 * @module
 */
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { add, mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { loadPretrained } from "./pretrained.ts";
import type { Task } from "./heads.ts";
import type { Batch } from "./inputs.ts";
import type { ModelOutput } from "./model.ts";
import type { ParameterInfo } from "./parameters.ts";
import type { HostTensor } from "./safetensors.ts";
import { readSafetensors } from "./safetensors_file.ts";

/** Tolerances of the model check at one weight scale. */
export interface ModelTolerance {
  /** Max absolute error of every output. */
  output: number;
  /** Relative error of the loss. */
  loss: number;
  /** Max absolute gradient error, relative to the largest |gradient| of the tensor. */
  gradient: number;
}

/**
 * Tolerances by the scale of the weights, the folder's `initializer_range`, each about ten times the
 * largest error the engine showed on the fixtures of that scale (tests/fixtures/hf, on Mesa's
 * llvmpipe; each line ends with what was measured, and where). 0.02 is Hugging Face's own
 * initialisation (`bert`, `gpt2`, `roberta`, `heads/`): activations stay near zero, and so do the
 * errors, except relative ones of gradients that partly cancel (question answering's query biases).
 * 0.25 is `heads-std0.25/`, where pre-activations are of order 1 and a wrong formula shows: with
 * BERT's and RoBERTa's erf GELU computed in the tanh form, every BERT and RoBERTa folder there fails,
 * by 6.7e-4 to 2.3e-3 in the outputs and 9.8e-4 to 3.2e-3 in the gradients, while `bert` and
 * `roberta` (0.02) pass, off by at most 1.9e-6 and 8.1e-5. A folder of any other scale is held to the
 * larger of the two tolerances of each quantity.
 */
export const MODEL_TOLERANCE: Readonly<Record<"0.02" | "0.25", ModelTolerance>> = {
  // 9.5e-7 (bert, roberta), 4.9e-6 (heads/bert-base), 1.1e-5 (heads/bert-question-answering)
  "0.02": { output: 1e-5, loss: 5e-5, gradient: 1.1e-4 },
  // 3.2e-6, 7.4e-7 and 2.9e-6 (heads-std0.25/bert-masked-lm, bert-base, bert-masked-lm)
  "0.25": { output: 3.2e-5, loss: 7.5e-6, gradient: 3e-5 },
};

/** The tolerances for a model initialised with standard deviation `initializerRange`. */
function toleranceFor(initializerRange: number): ModelTolerance {
  const known = MODEL_TOLERANCE[String(initializerRange) as keyof typeof MODEL_TOLERANCE];
  if (known) return known;
  const [a, b] = Object.values(MODEL_TOLERANCE);
  return {
    output: Math.max(a.output, b.output),
    loss: Math.max(a.loss, b.loss),
    gradient: Math.max(a.gradient, b.gradient),
  };
}

/**
 * Gradients that are zero in exact arithmetic cannot be judged relative to themselves: float32 gives
 * cancellation noise, float64 (Hugging Face's) about 1e9 times less. Each such bias gradient
 * is the sum over positions of its layer's output gradients, db = sum_j dy_j, which cancels exactly,
 * while its companion weight's gradient sums the same terms weighted by the layer's input,
 * dW = sum_j dy_j x_j^T, and does not (x_j, a normalised activation of order 1, varies over
 * positions). So max |dW| is the size of what cancels in db, and float32 resolves such a sum to a few
 * machine epsilons of it: |ours - reference| <= factor * eps * max |reference dW|. Measured: up to
 * 6.6 eps * max |dW| on the fixtures (heads/roberta-question-answering), 21 on a std-0.25 RoBERTa
 * question-answering model drawn while choosing them, 1.5 typically; the factor is ten times the
 * largest. A wrong gradient, say one that misses the softmax's shift invariance, is off by about
 * max |dW| itself, 4e4 times the bound.
 */
const ZERO_GRADIENT_BOUND = {
  /** Float32 machine epsilon, the spacing of floats at 1. */
  eps: 2 ** -23,
  /** Multiple of eps * max |companion gradient| allowed. */
  factor: 200,
};

/**
 * The parameters whose gradient is zero in exact arithmetic, each with its companion weight (see
 * {@linkcode ZERO_GRADIENT_BOUND}), found by structure: every attention key bias (softmax ignores a
 * shift of a query's scores, and the key bias shifts them all by q.b), and in question answering
 * the output bias and the bias of the norm under the head (the start and end softmaxes ignore a
 * shift of all positions, which each of them adds). GPT-2 packs its key bias with the query and
 * value biases in `c_attn.bias`, whose gradient is not zero: it is judged relatively.
 */
function zeroGradientParameters(
  infos: readonly ParameterInfo[],
  task: Task,
): Map<ParameterInfo, ParameterInfo> {
  const zero = infos.filter((p) => p.role === "attention_key" && p.kind === "bias");
  if (task === "question-answering") {
    zero.push(...infos.filter((p) => p.site === "head.output" && p.kind === "bias"));
    const underHead = infos.findLast((p) => p.role === "norm_beta" && !p.site.startsWith("head"));
    if (underHead) zero.push(underHead);
  }
  const pairs = new Map<ParameterInfo, ParameterInfo>();
  for (const bias of zero) {
    const role = bias.role === "norm_beta" ? "norm_gamma" : bias.role;
    const weight = infos.find((p) =>
      p.kind === "weight" && p.role === role && p.site === bias.site && p.layer === bias.layer
    );
    if (!weight) throw new Error(`parity: no weight beside "${bias.name}" to scale its zero gradient`);
    pairs.set(bias, weight);
  }
  return pairs;
}

/** The result of checking one model folder. */
export interface ModelParity {
  /** The folder. */
  folder: string;
  /** Model family and task. */
  model: string;
  /** The tolerances applied (by the weights' scale, `initializer_range`). */
  tolerance: ModelTolerance;
  /** Relative error of the loss. */
  lossError: number;
  /** Largest absolute error over the outputs, and which output. */
  maxOutputError: number;
  /** The output with the largest error. */
  worstOutput: string;
  /** Largest gradient error relative to its tensor's scale (tensors with a nonzero gradient). */
  worstGradientError: number;
  /** The tensor with the worst gradient error. */
  worstGradientTensor: string;
  /** Tensors whose gradient is zero in exact arithmetic, judged by the absolute bound. */
  zeroGradientTensors: string[];
  /** Largest error of a zero gradient as a fraction of its bound (at most 1 to pass). */
  worstZeroGradientError: number;
  /** The zero-gradient tensor nearest its bound. */
  worstZeroGradientTensor: string;
  /** Whether every tolerance held. */
  pass: boolean;
}

const OUTPUTS: Record<string, keyof ModelOutput> = {
  last_hidden_state: "lastHiddenState",
  pooler_output: "poolerOutput",
  logits: "logits",
  start_logits: "startLogits",
  end_logits: "endLogits",
};

function upload(h: HostTensor): Tensor {
  return tensor(h.data, { shape: h.shape });
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Largest |a - b|; Infinity when the lengths differ or a value is NaN, so neither can pass. */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** Checks one model folder: outputs, loss and every parameter gradient against Hugging Face's. */
export async function checkModelFolder(folder: string): Promise<ModelParity> {
  const model = await loadPretrained(folder);
  for (const file of ["io.safetensors", "grads.safetensors"]) {
    if (!(await Deno.stat(`${folder}/${file}`).then(() => true, () => false))) {
      throw new Error(
        `${folder}: not a reference folder: it lacks ${file} (tests/fixtures/generate_hf.py writes them)`,
      );
    }
  }
  const io = (await readSafetensors(`${folder}/io.safetensors`)).tensors;
  const grads = (await readSafetensors(`${folder}/grads.safetensors`)).tensors;
  const input = (name: string) => (io.has(name) ? upload(io.get(name)!) : undefined);
  const batch: Batch = {
    inputIds: input("input_ids")!,
    attentionMask: input("attention_mask"),
    tokenTypeIds: input("token_type_ids"),
    labels: input("labels"),
    startPositions: input("start_positions"),
    endPositions: input("end_positions"),
  };
  if (!batch.inputIds) throw new Error(`${folder}/io.safetensors: no input_ids`);
  model.zeroGrad();
  const output = model.forward(batch);
  const compared = Object.entries(OUTPUTS).filter(([name, field]) => io.has(name) && output[field]);
  let loss = output.loss ?? null;
  for (const [name, field] of compared) {
    const weight = io.get(name === "last_hidden_state" ? "R" : name === "pooler_output" ? "Rp" : `R_${name}`);
    if (!weight) continue;
    const term = sum(mul(output[field] as Tensor, upload(weight)));
    loss = loss ? add(loss, term) : term;
  }
  if (!loss) throw new Error(`${folder}: io.safetensors defines no loss (labels, R, Rp or R_<output>)`);
  loss.backward();
  const values = await readAll([loss, ...compared.map(([, field]) => output[field] as Tensor)]);
  const gradValues = await readAll(model.parameters.map((p) => p.value.grad!));
  const expectedLoss = io.get("loss")!.data[0];
  const lossError = Math.abs(values[0][0] - expectedLoss) / Math.max(Math.abs(expectedLoss), 1e-30);
  let maxOutputError = 0;
  let worstOutput = "";
  compared.forEach(([name], i) => {
    const error = maxAbsDiff(values[i + 1], io.get(name)!.data);
    if (error >= maxOutputError) [maxOutputError, worstOutput] = [error, name];
  });
  const reference = (name: string) => {
    const found = grads.get(name);
    if (!found) throw new Error(`${folder}/grads.safetensors: no gradient for "${name}"`);
    return found.data;
  };
  const zero = zeroGradientParameters(model.parameters.map((p) => p.info), model.task);
  let worstGradientError = 0;
  let worstGradientTensor = "";
  let worstZeroGradientError = 0;
  let worstZeroGradientTensor = "";
  model.parameters.forEach((p, i) => {
    const expected = reference(p.info.name);
    const error = maxAbsDiff(gradValues[i], expected);
    const companion = zero.get(p.info);
    if (companion) {
      const bound = ZERO_GRADIENT_BOUND.factor * ZERO_GRADIENT_BOUND.eps * maxAbs(reference(companion.name));
      const fraction = error === 0 ? 0 : error / bound;
      if (fraction >= worstZeroGradientError) {
        [worstZeroGradientError, worstZeroGradientTensor] = [fraction, p.info.name];
      }
      return;
    }
    const scale = maxAbs(expected);
    // A gradient that is zero without being known to be is matched only by zero.
    const relative = error === 0 ? 0 : error / scale;
    if (relative >= worstGradientError) [worstGradientError, worstGradientTensor] = [relative, p.info.name];
  });
  const tolerance = toleranceFor(model.config.initializerRange);
  return {
    folder,
    model: `${model.config.family}/${model.task}`,
    tolerance,
    lossError,
    maxOutputError,
    worstOutput,
    worstGradientError,
    worstGradientTensor,
    zeroGradientTensors: [...zero.keys()].map((p) => p.name),
    worstZeroGradientError,
    worstZeroGradientTensor,
    pass: lossError <= tolerance.loss && maxOutputError <= tolerance.output &&
      worstGradientError <= tolerance.gradient && worstZeroGradientError <= 1,
  };
}

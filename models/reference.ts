/**
 * Float64 reference forward of the bare models (BertModel, GPT2Model, RobertaModel), written from
 * Hugging Face's definitions with the kernels' float64 references and plain loops. Tests run it on
 * configurations unlike the shipped fixtures (odd widths and head sizes, several padding patterns)
 * to show that nothing in the GPU models depends on the fixtures' shapes.
 *
 * @module
 */
import { type Array64, array64 } from "../kernels/reference/array.ts";
import { attentionForward } from "../kernels/reference/attention.ts";
import { geluErf, geluTanh, relu } from "../kernels/reference/elementwise.ts";
import { gatherRowsForward } from "../kernels/reference/embedding.ts";
import { layerNormForward } from "../kernels/reference/layernorm.ts";
import { matmul } from "../kernels/reference/matmul.ts";
import type { ModelConfig } from "./config.ts";

/** Inputs of the reference: ids, mask and token types, row-major [batch, length]. */
export interface ReferenceInputs {
  /** Batch size. */
  batch: number;
  /** Sequence length. */
  length: number;
  /** Token ids. */
  ids: Int32Array;
  /** 1 for tokens, 0 for padding; all ones when omitted. */
  mask?: Int32Array;
  /** Token types; zeros when omitted. */
  types?: Int32Array;
}

/** What the reference returns: the last hidden state [B, T, C] and, for BERT/RoBERTa, the pooler output [B, C]. */
export interface ReferenceOutput {
  /** Last hidden state. */
  hidden: Float64Array;
  /** Pooler output. */
  pooled?: Float64Array;
}

type Weights = Map<string, Float64Array>;

function weight(weights: Weights, name: string, shape: number[]): Array64 {
  const values = weights.get(name);
  if (!values) throw new Error(`reference: no weight "${name}"`);
  return array64(shape, values);
}

function rows(x: Float64Array, cols: number): Array64 {
  return array64([x.length / cols, cols], x);
}

/** x [N, in] times a Linear weight [out, in] (or a Conv1D weight [in, out]) plus bias. */
function dense(
  weights: Weights,
  name: string,
  x: Float64Array,
  inputs: number,
  outputs: number,
  conv1d: boolean,
) {
  const w = weight(weights, `${name}.weight`, conv1d ? [inputs, outputs] : [outputs, inputs]);
  const bias = weight(weights, `${name}.bias`, [outputs]);
  return matmul(rows(x, inputs), w, { transposeB: !conv1d, bias }).data;
}

function norm(weights: Weights, name: string, x: Float64Array, width: number, eps: number): Float64Array {
  return layerNormForward(rows(x, width), weights.get(`${name}.weight`)!, weights.get(`${name}.bias`)!, eps).y
    .data;
}

/** Attention over q, k, v of shape [B*T, C] each (heads side by side), merged back to [B*T, C]. */
function attend(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  c: ModelConfig,
  inputs: ReferenceInputs,
  causal: boolean,
) {
  const { batch: B, length: T } = inputs;
  const H = c.numHeads;
  const D = c.hiddenSize / H;
  const split = (x: Float64Array) => {
    const out = new Float64Array(x.length);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < H; h++) {
          for (let d = 0; d < D; d++) {
            out[((b * H + h) * T + t) * D + d] = x[(b * T + t) * c.hiddenSize + h * D + d];
          }
        }
      }
    }
    return out;
  };
  const shape = { batch: B, heads: H, queries: T, keys: T, dim: D };
  const heads = attentionForward(split(q), split(k), split(v), shape, { causal, keyMask: inputs.mask });
  const merged = new Float64Array(q.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          merged[(b * T + t) * c.hiddenSize + h * D + d] = heads[((b * H + h) * T + t) * D + d];
        }
      }
    }
  }
  return merged;
}

const add = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);

/** Position ids as the models compute them (RoBERTa: cumulative count of non-pad tokens after the pad id). */
function positions(c: ModelConfig, inputs: ReferenceInputs): Int32Array {
  const { batch: B, length: T, ids } = inputs;
  const out = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let count = 0;
    for (let t = 0; t < T; t++) {
      if (c.family !== "roberta") out[b * T + t] = t;
      else if (ids[b * T + t] === c.padTokenId) out[b * T + t] = c.padTokenId;
      else out[b * T + t] = ++count + c.padTokenId!;
    }
  }
  return out;
}

/** The reference forward of a bare model from its weights (Hugging Face names, float64). */
export function referenceForward(c: ModelConfig, weights: Weights, inputs: ReferenceInputs): ReferenceOutput {
  const C = c.hiddenSize;
  const F = c.intermediateSize;
  const activation = { gelu: geluErf.f, gelu_new: geluTanh.f, relu: relu.f }[c.hiddenAct];
  const embed = (name: string, ids: Int32Array) => gatherRowsForward(weights.get(`${name}.weight`)!, C, ids);
  if (c.family === "gpt2") {
    let x = add(embed("wte", inputs.ids), embed("wpe", positions(c, inputs)));
    for (let i = 0; i < c.numLayers; i++) {
      const h = norm(weights, `h.${i}.ln_1`, x, C, c.layerNormEps);
      const qkv = dense(weights, `h.${i}.attn.c_attn`, h, C, 3 * C, true);
      const part = (p: number) => rows(qkv, 3 * C).data.filter((_, j) => Math.floor((j % (3 * C)) / C) === p);
      const context = attend(part(0), part(1), part(2), c, inputs, true);
      x = add(x, dense(weights, `h.${i}.attn.c_proj`, context, C, C, true));
      const inner = dense(
        weights,
        `h.${i}.mlp.c_fc`,
        norm(weights, `h.${i}.ln_2`, x, C, c.layerNormEps),
        C,
        F,
        true,
      );
      x = add(x, dense(weights, `h.${i}.mlp.c_proj`, inner.map(activation), F, C, true));
    }
    return { hidden: norm(weights, "ln_f", x, C, c.layerNormEps) };
  }
  const types = inputs.types ?? new Int32Array(inputs.ids.length);
  const summed = add(
    add(
      embed("embeddings.word_embeddings", inputs.ids),
      embed("embeddings.position_embeddings", positions(c, inputs)),
    ),
    embed("embeddings.token_type_embeddings", types),
  );
  let x = norm(weights, "embeddings.LayerNorm", summed, C, c.layerNormEps);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `encoder.layer.${i}`;
    const [q, k, v] = ["query", "key", "value"].map((n) =>
      dense(weights, `${p}.attention.self.${n}`, x, C, C, false)
    );
    const context = attend(q, k, v, c, inputs, false);
    const attended = dense(weights, `${p}.attention.output.dense`, context, C, C, false);
    x = norm(weights, `${p}.attention.output.LayerNorm`, add(attended, x), C, c.layerNormEps);
    const inner = dense(weights, `${p}.intermediate.dense`, x, C, F, false).map(activation);
    x = norm(
      weights,
      `${p}.output.LayerNorm`,
      add(dense(weights, `${p}.output.dense`, inner, F, C, false), x),
      C,
      c.layerNormEps,
    );
  }
  const first = new Float64Array(inputs.batch * C);
  for (let b = 0; b < inputs.batch; b++) {
    first.set(x.subarray(b * inputs.length * C, b * inputs.length * C + C), b * C);
  }
  return { hidden: x, pooled: dense(weights, "pooler.dense", first, C, C, false).map(Math.tanh) };
}

/**
 * The GPT-2 decoder: pre-LN causal transformer layers over token + position embeddings, a final
 * LayerNorm, Hugging Face's parameter names and its Conv1D weights stored [in, out]. The fused
 * `c_attn` projection feeds the fused attention kernel directly.
 *
 * @module
 */
import type { Tensor } from "../engine/tensor.ts";
import { fusedQkvAttention } from "../kernels/attention.ts";
import { dropout } from "../kernels/dropout.ts";
import { add, fused } from "../kernels/elementwise.ts";
import { gatherRows } from "../kernels/embedding.ts";
import type { ModelConfig } from "./config.ts";
import type { BodyInputs } from "./inputs.ts";
import {
  activate,
  applyDense,
  applyNorm,
  declareDense,
  declareEmbedding,
  declareNorm,
  type DenseSlots,
  type NormSlots,
} from "./layers.ts";
import type { ParameterRole, ParameterSet } from "./parameters.ts";

interface DecoderLayer {
  norm1: NormSlots;
  qkv: DenseSlots;
  attentionOutput: DenseSlots;
  norm2: NormSlots;
  ffnIn: DenseSlots;
  ffnOut: DenseSlots;
}

/** GPT-2's embeddings, decoder layers and final LayerNorm (`wte`, `wpe`, `h.N.*`, `ln_f`). */
export class Gpt2Decoder {
  readonly #tokens: number;
  readonly #positions: number;
  readonly #layers: DecoderLayer[] = [];
  readonly #finalNorm: NormSlots;

  /**
   * Declares the parameters in `set`. Like Hugging Face, the residual projections (`c_proj`) are
   * initialised with std / sqrt(2 * layers).
   */
  constructor(readonly config: ModelConfig, readonly set: ParameterSet) {
    const c = config;
    const L = c.numLayers;
    const C = c.hiddenSize;
    const std = c.initializerRange;
    const residualStd = std / Math.sqrt(2 * L);
    this.#tokens = declareEmbedding(set, "wte", c.vocabSize, C, "token_embedding", L, { std });
    this.#positions = declareEmbedding(set, "wpe", c.maxPositions, C, "position_embedding", L, { std });
    for (let i = 0; i < L; i++) {
      const at = (role: ParameterRole, site: string) => ({ role, site, layer: i, layerCount: L });
      const norm = (name: string, site: string) =>
        declareNorm(set, `h.${i}.${name}`, C, site, { layer: i, layerCount: L });
      this.#layers.push({
        norm1: norm("ln_1", "attention"),
        qkv: declareDense(set, `h.${i}.attn.c_attn`, C, 3 * C, at("attention_qkv", "attention"), {
          std,
          inOut: true,
        }),
        attentionOutput: declareDense(set, `h.${i}.attn.c_proj`, C, C, at("attention_output", "attention"), {
          std: residualStd,
          inOut: true,
        }),
        norm2: norm("ln_2", "ffn"),
        ffnIn: declareDense(set, `h.${i}.mlp.c_fc`, C, c.intermediateSize, at("ffn_in", "ffn"), {
          std,
          inOut: true,
        }),
        ffnOut: declareDense(set, `h.${i}.mlp.c_proj`, c.intermediateSize, C, at("ffn_out", "ffn"), {
          std: residualStd,
          inOut: true,
        }),
      });
    }
    this.#finalNorm = declareNorm(set, "ln_f", C, "final", { layer: null, layerCount: L });
  }

  /** Runs the decoder: the final-normalised hidden state [B, T, C]. */
  forward(inputs: BodyInputs, training: boolean): Tensor {
    const { set, config: c } = this;
    const tokens = gatherRows(set.slot(this.#tokens), inputs.ids);
    const positions = gatherRows(set.slot(this.#positions), inputs.positions);
    let x = dropout(fused([tokens, positions], (t, p) => t.add(p), "embeddings_sum"), c.embeddingDropout, {
      training,
    });
    for (const layer of this.#layers) {
      const qkv = applyDense(set, layer.qkv, applyNorm(set, layer.norm1, x, c.layerNormEps));
      const context = fusedQkvAttention(qkv, c.numHeads, {
        causal: true,
        keyMask: inputs.keyMask ?? undefined,
        dropout: training ? c.attentionDropout : 0,
      });
      x = add(x, dropout(applyDense(set, layer.attentionOutput, context), c.hiddenDropout, { training }));
      const inner = activate(
        applyDense(set, layer.ffnIn, applyNorm(set, layer.norm2, x, c.layerNormEps)),
        c.hiddenAct,
      );
      x = add(x, dropout(applyDense(set, layer.ffnOut, inner), c.hiddenDropout, { training }));
    }
    return applyNorm(set, this.#finalNorm, x, c.layerNormEps);
  }

  /** The token-embedding table (tied to the LM head). */
  get wordEmbeddings(): Tensor {
    return this.set.slot(this.#tokens);
  }
}

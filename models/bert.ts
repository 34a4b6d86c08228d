/**
 * The BERT encoder, also RoBERTa's: post-LN transformer layers over word + position + token-type
 * embeddings, with Hugging Face's parameter names. Query, key and value of a layer are packed in
 * one slot so their projection is a single matmul feeding the fused attention kernel.
 *
 * @module
 */
import type { Tensor } from "../engine/tensor.ts";
import { fusedQkvAttention } from "../kernels/attention.ts";
import { dropout } from "../kernels/dropout.ts";
import { add, fused, tanh } from "../kernels/elementwise.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { matmul } from "../kernels/matmul.ts";
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

interface EncoderLayer {
  qkvWeight: number;
  qkvBias: number;
  attentionOutput: DenseSlots;
  attentionNorm: NormSlots;
  ffnIn: DenseSlots;
  ffnOut: DenseSlots;
  outputNorm: NormSlots;
}

/** BERT/RoBERTa embeddings, encoder layers and optional pooler. */
export class BertEncoder {
  /** Whether attention is causal. */
  readonly causal: boolean;
  readonly #words: number;
  readonly #positions: number;
  readonly #types: number;
  readonly #embeddingNorm: NormSlots;
  readonly #layers: EncoderLayer[] = [];
  readonly #pooler: DenseSlots | null;

  /**
   * Declares the parameters in `set` under Hugging Face's names (`embeddings.*`, `encoder.layer.N.*`,
   * `pooler.dense.*`). `causal` makes the attention causal (a decoder, for causal-LM heads).
   */
  constructor(
    readonly config: ModelConfig,
    readonly set: ParameterSet,
    options: { pooler: boolean; causal: boolean },
  ) {
    const c = config;
    const L = c.numLayers;
    const std = c.initializerRange;
    const isRoberta = c.family === "roberta";
    this.causal = options.causal;
    this.#words = declareEmbedding(
      set,
      "embeddings.word_embeddings",
      c.vocabSize,
      c.hiddenSize,
      "token_embedding",
      L,
      {
        std,
        paddingRow: c.padTokenId,
      },
    );
    this.#positions = declareEmbedding(
      set,
      "embeddings.position_embeddings",
      c.maxPositions,
      c.hiddenSize,
      "position_embedding",
      L,
      { std, paddingRow: isRoberta ? c.padTokenId : null },
    );
    this.#types = declareEmbedding(
      set,
      "embeddings.token_type_embeddings",
      c.typeVocabSize,
      c.hiddenSize,
      "type_embedding",
      L,
      { std },
    );
    this.#embeddingNorm = declareNorm(set, "embeddings.LayerNorm", c.hiddenSize, "embeddings", {
      layer: null,
      layerCount: L,
    });
    for (let i = 0; i < L; i++) this.#layers.push(declareLayer(set, c, i));
    this.#pooler = options.pooler
      ? declareDense(set, "pooler.dense", c.hiddenSize, c.hiddenSize, {
        role: "pooler",
        site: "pooler",
        layer: null,
        layerCount: L,
      }, { std })
      : null;
  }

  /** Whether the encoder has a pooler. */
  get hasPooler(): boolean {
    return this.#pooler !== null;
  }

  /** Runs the encoder: the last hidden state [B, T, C]. */
  forward(inputs: BodyInputs, training: boolean): Tensor {
    const { set, config: c } = this;
    // Hugging Face's embeddings have padding_idx: the padding row gets no gradient.
    const padding = { paddingIndex: c.padTokenId };
    const words = gatherRows(set.slot(this.#words), inputs.ids, padding);
    const positions = gatherRows(
      set.slot(this.#positions),
      inputs.positions,
      c.family === "roberta" ? padding : {},
    );
    const types = gatherRows(set.slot(this.#types), inputs.types!);
    const summed = fused([words, positions, types], (w, p, t) => w.add(p).add(t), "embeddings_sum");
    let x = dropout(applyNorm(set, this.#embeddingNorm, summed, c.layerNormEps), c.hiddenDropout, {
      training,
    });
    for (const layer of this.#layers) {
      const qkv = matmul(x, set.slot(layer.qkvWeight), { transposeB: true, bias: set.slot(layer.qkvBias) });
      const context = fusedQkvAttention(qkv, c.numHeads, {
        keyMask: inputs.keyMask ?? undefined,
        causal: this.causal,
        dropout: training ? c.attentionDropout : 0,
      });
      const attended = dropout(applyDense(set, layer.attentionOutput, context), c.hiddenDropout, {
        training,
      });
      x = applyNorm(set, layer.attentionNorm, add(attended, x), c.layerNormEps);
      const inner = activate(applyDense(set, layer.ffnIn, x), c.hiddenAct);
      const output = dropout(applyDense(set, layer.ffnOut, inner), c.hiddenDropout, { training });
      x = applyNorm(set, layer.outputNorm, add(output, x), c.layerNormEps);
    }
    return x;
  }

  /** The pooler: tanh(dense(h[:, 0])) -> [B, C]. */
  pool(hidden: Tensor, inputs: BodyInputs): Tensor {
    if (!this.#pooler) throw new Error(`${this.set.model}: this encoder was built without a pooler`);
    const first = gatherRows(hidden.reshape([inputs.batch * inputs.length, -1]), inputs.firstTokenRows);
    return tanh(applyDense(this.set, this.#pooler, first));
  }

  /** The word-embedding table (tied to masked-LM decoders). */
  get wordEmbeddings(): Tensor {
    return this.set.slot(this.#words);
  }
}

function declareLayer(set: ParameterSet, c: ModelConfig, i: number): EncoderLayer {
  const C = c.hiddenSize;
  const L = c.numLayers;
  const std = c.initializerRange;
  const prefix = `encoder.layer.${i}`;
  const at = (role: ParameterRole, site: string) => ({ role, site, layer: i, layerCount: L });
  const parts = [["query", "attention_query"], ["key", "attention_key"], [
    "value",
    "attention_value",
  ]] as const;
  const qkvWeight = set.declarePacked(
    [3 * C, C],
    { kind: "normal", std },
    parts.map(([name, role], k) => ({
      offset: k * C * C,
      info: {
        ...at(role, "attention"),
        name: `${prefix}.attention.self.${name}.weight`,
        kind: "weight",
        shape: [C, C],
        layout: "out_in",
      },
    })),
  );
  const qkvBias = set.declarePacked(
    [3 * C],
    { kind: "zeros" },
    parts.map(([name, role], k) => ({
      offset: k * C,
      info: {
        ...at(role, "attention"),
        name: `${prefix}.attention.self.${name}.bias`,
        kind: "bias",
        shape: [C],
        layout: "vector",
      },
    })),
  );
  return {
    qkvWeight,
    qkvBias,
    attentionOutput: declareDense(
      set,
      `${prefix}.attention.output.dense`,
      C,
      C,
      at("attention_output", "attention"),
      {
        std,
      },
    ),
    attentionNorm: declareNorm(set, `${prefix}.attention.output.LayerNorm`, C, "attention", {
      layer: i,
      layerCount: L,
    }),
    ffnIn: declareDense(set, `${prefix}.intermediate.dense`, C, c.intermediateSize, at("ffn_in", "ffn"), {
      std,
    }),
    ffnOut: declareDense(set, `${prefix}.output.dense`, c.intermediateSize, C, at("ffn_out", "ffn"), { std }),
    outputNorm: declareNorm(set, `${prefix}.output.LayerNorm`, C, "ffn", { layer: i, layerCount: L }),
  };
}

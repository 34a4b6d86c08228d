/**
 * Model configuration: one shape for the three families, read from Hugging Face `config.json`
 * fields or written directly for models trained from scratch.
 *
 * @module
 */

/** The model families. */
export type ModelFamily = "bert" | "gpt2" | "roberta";

/** Activation functions of the feed-forward block, by their Hugging Face names. */
export type Activation = "gelu" | "gelu_new" | "relu";

/** Everything that determines a model's architecture and its dropout. */
export interface ModelConfig {
  /** Architecture family. */
  family: ModelFamily;
  /** Token vocabulary size. */
  vocabSize: number;
  /** Model width (HF `hidden_size`, `n_embd`). */
  hiddenSize: number;
  /** Transformer layers (HF `num_hidden_layers`, `n_layer`). */
  numLayers: number;
  /** Attention heads per layer; must divide `hiddenSize`. */
  numHeads: number;
  /** Width of the feed-forward block (HF `intermediate_size`, `n_inner`, default 4 x hidden). */
  intermediateSize: number;
  /** Feed-forward activation: "gelu" (erf form), "gelu_new" (tanh form) or "relu". */
  hiddenAct: Activation;
  /** LayerNorm epsilon (HF `layer_norm_eps`, `layer_norm_epsilon`). */
  layerNormEps: number;
  /** Number of position embeddings (HF `max_position_embeddings`, `n_positions`). */
  maxPositions: number;
  /** Padding token id, or null when the model has none (GPT-2). */
  padTokenId: number | null;
  /** Token-type vocabulary (BERT 2, RoBERTa 1, GPT-2 0). */
  typeVocabSize: number;
  /** Dropout after embeddings and on residual branches (HF `hidden_dropout_prob`, `resid_pdrop`). */
  hiddenDropout: number;
  /** Dropout after the embeddings where it differs (GPT-2 `embd_pdrop`); else hiddenDropout. */
  embeddingDropout: number;
  /** Dropout on attention probabilities (HF `attention_probs_dropout_prob`, `attn_pdrop`). */
  attentionDropout: number;
  /** Dropout before classification heads (HF `classifier_dropout`); null means hiddenDropout. */
  classifierDropout: number | null;
  /** Standard deviation of the normal initialisation of weights. */
  initializerRange: number;
}

const DEFAULTS: Record<ModelFamily, ModelConfig> = {
  bert: {
    family: "bert",
    vocabSize: 30522,
    hiddenSize: 768,
    numLayers: 12,
    numHeads: 12,
    intermediateSize: 3072,
    hiddenAct: "gelu",
    layerNormEps: 1e-12,
    maxPositions: 512,
    padTokenId: 0,
    typeVocabSize: 2,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
  },
  roberta: {
    family: "roberta",
    vocabSize: 50265,
    hiddenSize: 768,
    numLayers: 12,
    numHeads: 12,
    intermediateSize: 3072,
    hiddenAct: "gelu",
    layerNormEps: 1e-5,
    maxPositions: 514,
    padTokenId: 1,
    typeVocabSize: 1,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
  },
  gpt2: {
    family: "gpt2",
    vocabSize: 50257,
    hiddenSize: 768,
    numLayers: 12,
    numHeads: 12,
    intermediateSize: 3072,
    hiddenAct: "gelu_new",
    layerNormEps: 1e-5,
    maxPositions: 1024,
    padTokenId: null,
    typeVocabSize: 0,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
  },
};

/**
 * A configuration for a model built in code: the family's base-size defaults (bert-base-uncased,
 * roberta-base, gpt2) with `overrides` applied; the intermediate size follows the hidden size
 * (4x) unless given. Throws on an inconsistent result.
 */
export function modelConfig(family: ModelFamily, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const base = DEFAULTS[family];
  if (!base) throw new Error(`modelConfig: unknown family "${family}" (bert, gpt2 or roberta)`);
  const hidden = overrides.hiddenSize ?? base.hiddenSize;
  const config: ModelConfig = {
    ...base,
    intermediateSize: 4 * hidden,
    embeddingDropout: overrides.hiddenDropout ?? base.embeddingDropout,
    ...overrides,
    family,
  };
  validateConfig(config, `${family} configuration`);
  return config;
}

function activation(value: unknown, source: string): Activation {
  if (value === "gelu" || value === "relu") return value;
  if (value === "gelu_new" || value === "gelu_pytorch_tanh" || value === "gelu_fast") return "gelu_new";
  throw new Error(`${source}: unsupported activation ${JSON.stringify(value)} (gelu, gelu_new, relu)`);
}

function numberField(
  json: Record<string, unknown>,
  keys: string[],
  source: string,
  fallback?: number,
): number {
  for (const key of keys) {
    const value = json[key];
    if (typeof value === "number") return value;
  }
  if (fallback !== undefined) return fallback;
  throw new Error(`${source}: missing numeric field ${keys.map((k) => `"${k}"`).join(" or ")}`);
}

/**
 * Reads a Hugging Face `config.json` object (model_type bert, gpt2 or roberta); `source` names the
 * file in errors. Missing optional fields take Hugging Face's defaults.
 */
export function configFromHf(json: Record<string, unknown>, source: string): ModelConfig {
  const family = json.model_type;
  if (family !== "bert" && family !== "gpt2" && family !== "roberta") {
    throw new Error(`${source}: model_type ${JSON.stringify(family)} is not bert, gpt2 or roberta`);
  }
  const base = DEFAULTS[family];
  const hidden = numberField(json, ["hidden_size", "n_embd"], source);
  const isGpt2 = family === "gpt2";
  const classifierDropout = json.classifier_dropout;
  const config: ModelConfig = {
    family,
    vocabSize: numberField(json, ["vocab_size"], source),
    hiddenSize: hidden,
    numLayers: numberField(json, ["num_hidden_layers", "n_layer"], source),
    numHeads: numberField(json, ["num_attention_heads", "n_head"], source),
    intermediateSize: numberField(json, ["intermediate_size", "n_inner"], source, 4 * hidden),
    hiddenAct: activation(json.hidden_act ?? json.activation_function ?? base.hiddenAct, source),
    layerNormEps: numberField(json, ["layer_norm_eps", "layer_norm_epsilon"], source, base.layerNormEps),
    maxPositions: numberField(json, ["max_position_embeddings", "n_positions"], source, base.maxPositions),
    padTokenId: typeof json.pad_token_id === "number" ? json.pad_token_id : isGpt2 ? null : base.padTokenId,
    typeVocabSize: isGpt2 ? 0 : numberField(json, ["type_vocab_size"], source, base.typeVocabSize),
    hiddenDropout: numberField(json, ["hidden_dropout_prob", "resid_pdrop"], source, base.hiddenDropout),
    embeddingDropout: numberField(json, ["embd_pdrop", "hidden_dropout_prob"], source, base.embeddingDropout),
    attentionDropout: numberField(
      json,
      ["attention_probs_dropout_prob", "attn_pdrop"],
      source,
      base.attentionDropout,
    ),
    classifierDropout: typeof classifierDropout === "number" ? classifierDropout : null,
    initializerRange: numberField(json, ["initializer_range"], source, base.initializerRange),
  };
  validateConfig(config, source);
  return config;
}

/** The Hugging Face `config.json` object for a configuration (what `save` writes beside the weights). */
export function configToHf(config: ModelConfig): Record<string, unknown> {
  if (config.family === "gpt2") {
    return {
      model_type: "gpt2",
      architectures: ["GPT2LMHeadModel"],
      vocab_size: config.vocabSize,
      n_embd: config.hiddenSize,
      n_layer: config.numLayers,
      n_head: config.numHeads,
      n_inner: config.intermediateSize,
      activation_function: config.hiddenAct,
      layer_norm_epsilon: config.layerNormEps,
      n_positions: config.maxPositions,
      resid_pdrop: config.hiddenDropout,
      embd_pdrop: config.embeddingDropout,
      attn_pdrop: config.attentionDropout,
      initializer_range: config.initializerRange,
      pad_token_id: config.padTokenId,
      tie_word_embeddings: true,
    };
  }
  return {
    model_type: config.family,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    intermediate_size: config.intermediateSize,
    hidden_act: config.hiddenAct,
    layer_norm_eps: config.layerNormEps,
    max_position_embeddings: config.maxPositions,
    pad_token_id: config.padTokenId,
    type_vocab_size: config.typeVocabSize,
    hidden_dropout_prob: config.hiddenDropout,
    attention_probs_dropout_prob: config.attentionDropout,
    classifier_dropout: config.classifierDropout,
    initializer_range: config.initializerRange,
    tie_word_embeddings: true,
  };
}

/** Throws an error naming `source` and the field when a configuration cannot describe a model. */
export function validateConfig(config: ModelConfig, source: string): void {
  const positive = [
    "vocabSize",
    "hiddenSize",
    "numLayers",
    "numHeads",
    "intermediateSize",
    "maxPositions",
  ] as const;
  for (const key of positive) {
    if (!Number.isInteger(config[key]) || config[key] <= 0) {
      throw new Error(`${source}: ${key} must be a positive integer, got ${config[key]}`);
    }
  }
  if (config.hiddenSize % config.numHeads !== 0) {
    throw new Error(
      `${source}: hiddenSize ${config.hiddenSize} is not divisible by numHeads ${config.numHeads}`,
    );
  }
  for (const key of ["hiddenDropout", "embeddingDropout", "attentionDropout"] as const) {
    if (!(config[key] >= 0 && config[key] < 1)) {
      throw new Error(`${source}: ${key} must be in [0, 1), got ${config[key]}`);
    }
  }
  if (config.family === "roberta" && config.padTokenId === null) {
    throw new Error(`${source}: RoBERTa needs a pad_token_id (position ids start after it)`);
  }
  if (config.family !== "gpt2" && config.typeVocabSize < 1) {
    throw new Error(`${source}: ${config.family} needs type_vocab_size >= 1`);
  }
}

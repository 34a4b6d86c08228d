/**
 * Model configuration: one shape for the three families, read from Hugging Face `config.json`
 * fields or written directly for models trained from scratch.
 *
 * @module
 */

import { MAX_HEAD_DIM } from "../kernels/attention.ts";

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
  /**
   * GPT-2: the id of the token a text starts with (HF `bos_token_id`), and of the one it ends with, at
   * which Hugging Face's `generate` stops (`eos_token_id`): GPT-2's own `<|endoftext|>` (50256) for
   * both, a trained tokenizer's `<s>` and `</s>`, null for a vocabulary without them. Null for BERT and
   * RoBERTa, whose Hugging Face configurations keep their own defaults.
   */
  bosTokenId: number | null;
  /** See {@linkcode ModelConfig.bosTokenId}. */
  eosTokenId: number | null;
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
  /**
   * BERT and RoBERTa: attend causally whatever the head (HF `is_decoder`), as Hugging Face does. A
   * causal-LM head attends causally either way; GPT-2 always does.
   */
  isDecoder: boolean;
}

/** GPT-2's `<|endoftext|>` id, which Hugging Face's GPT2Config takes as its bos and eos ids by default. */
const GPT2_END_OF_TEXT = 50256;

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
    bosTokenId: null,
    eosTokenId: null,
    typeVocabSize: 2,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
    isDecoder: false,
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
    bosTokenId: null,
    eosTokenId: null,
    typeVocabSize: 1,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
    isDecoder: false,
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
    bosTokenId: GPT2_END_OF_TEXT,
    eosTokenId: GPT2_END_OF_TEXT,
    typeVocabSize: 0,
    hiddenDropout: 0.1,
    embeddingDropout: 0.1,
    attentionDropout: 0.1,
    classifierDropout: null,
    initializerRange: 0.02,
    isDecoder: false,
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
  // A misspelt field (hidden_size, a Hugging Face name) would otherwise leave the default in silence.
  const unknown = Object.keys(overrides).find((key) => !Object.hasOwn(base, key));
  if (unknown !== undefined) {
    throw new Error(
      `modelConfig: unknown field "${unknown}" (fields: ${Object.keys(base).join(", ")}; ` +
        "configFromHf reads Hugging Face's names)",
    );
  }
  const hidden = overrides.hiddenSize ?? base.hiddenSize;
  // GPT-2's <|endoftext|> is an id of its own vocabulary only.
  const endOfText = family === "gpt2" && (overrides.vocabSize ?? base.vocabSize) > GPT2_END_OF_TEXT
    ? GPT2_END_OF_TEXT
    : null;
  const config: ModelConfig = {
    ...base,
    intermediateSize: 4 * hidden,
    embeddingDropout: overrides.hiddenDropout ?? base.embeddingDropout,
    bosTokenId: endOfText,
    eosTokenId: endOfText,
    ...overrides,
    family,
  };
  validateConfig(config, `${family} configuration`);
  return config;
}

/**
 * A GPT-2 config.json's bos or eos id: absent means GPT2Config's default, 50256; a list (transformers
 * stops generating at any of them) its first; an id outside the vocabulary (that default saved with a
 * smaller one, which transformers only warns about), or anything else, none.
 */
function textId(json: Record<string, unknown>, key: string): number | null {
  const value = json[key] === undefined ? GPT2_END_OF_TEXT : json[key];
  const id = Array.isArray(value) ? value[0] : value;
  const vocabulary = typeof json.vocab_size === "number" ? json.vocab_size : 0;
  return Number.isInteger(id) && id >= 0 && id < vocabulary ? id : null;
}

function activation(value: unknown, source: string, field: string): Activation {
  if (value === "gelu" || value === "relu") return value;
  if (value === "gelu_new" || value === "gelu_pytorch_tanh" || value === "gelu_fast") return "gelu_new";
  throw new Error(
    `${source}: field "${field}": unsupported activation ${JSON.stringify(value)} (gelu, gelu_new, relu)`,
  );
}

/** Reads `config.json` fields and remembers which Hugging Face name supplied each configuration field. */
class HfFields {
  /** The Hugging Face name each configuration field came from (for errors). */
  readonly names: FieldNames = {};

  constructor(readonly json: Record<string, unknown>, readonly source: string) {}

  /**
   * The first of `keys` that is present (null counts as absent, as in Hugging Face); a value of
   * another type than number is an error rather than silently replaced by the default.
   */
  number(field: keyof ModelConfig, keys: string[], fallback?: number): number {
    this.names[field] = keys[0];
    for (const key of keys) {
      const value = this.json[key];
      if (value === undefined || value === null) continue;
      this.names[field] = key;
      if (typeof value !== "number") {
        throw new Error(`${this.source}: field "${key}" must be a number, got ${JSON.stringify(value)}`);
      }
      return value;
    }
    if (fallback !== undefined) return fallback;
    throw new Error(`${this.source}: missing numeric field ${keys.map((k) => `"${k}"`).join(" or ")}`);
  }

  /** A true/false field; absent or null is false, as in Hugging Face. */
  boolean(field: keyof ModelConfig, key: string): boolean {
    const value = this.json[key];
    this.names[field] = key;
    if (value === undefined || value === null) return false;
    if (typeof value !== "boolean") {
      throw new Error(`${this.source}: field "${key}" must be true or false, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  /**
   * A field that may be null (pad_token_id, classifier_dropout): null means none, as in Hugging
   * Face, and only an absent field takes the default.
   */
  nullableNumber(field: keyof ModelConfig, key: string, fallback: number | null): number | null {
    const value = this.json[key];
    this.names[field] = key;
    if (value === undefined) return fallback;
    if (value === null) return null;
    if (typeof value !== "number") {
      throw new Error(
        `${this.source}: field "${key}" must be a number or null, got ${JSON.stringify(value)}`,
      );
    }
    return value;
  }
}

/**
 * Reads a Hugging Face `config.json` object (model_type bert, gpt2 or roberta); `source` names the
 * file in errors, which name the Hugging Face field too. Missing optional fields take Hugging
 * Face's defaults; every value is checked as in {@linkcode validateConfig}.
 */
export function configFromHf(json: Record<string, unknown>, source: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${source}: the configuration is not a JSON object`);
  }
  const family = json.model_type;
  if (family !== "bert" && family !== "gpt2" && family !== "roberta") {
    throw new Error(`${source}: model_type ${JSON.stringify(family)} is not bert, gpt2 or roberta`);
  }
  const base = DEFAULTS[family];
  const isGpt2 = family === "gpt2";
  // GPT-2 options that change the attention's scale: refused, not silently computed the default way.
  const unsupported: [string, unknown][] = [["scale_attn_weights", false], [
    "scale_attn_by_inverse_layer_idx",
    true,
  ]];
  for (const [key, value] of isGpt2 ? unsupported : []) {
    if (json[key] === value) {
      throw new Error(
        `${source}: field "${key}" is ${value}: attention here is scaled by 1/sqrt(head size) only`,
      );
    }
  }
  const f = new HfFields(json, source);
  const hidden = f.number("hiddenSize", ["hidden_size", "n_embd"]);
  const actKey = json.hidden_act != null ? "hidden_act" : "activation_function";
  const config: ModelConfig = {
    family,
    vocabSize: f.number("vocabSize", ["vocab_size"]),
    hiddenSize: hidden,
    numLayers: f.number("numLayers", ["num_hidden_layers", "n_layer"]),
    numHeads: f.number("numHeads", ["num_attention_heads", "n_head"]),
    intermediateSize: f.number("intermediateSize", ["intermediate_size", "n_inner"], 4 * hidden),
    hiddenAct: activation(json[actKey] ?? base.hiddenAct, source, actKey),
    layerNormEps: f.number("layerNormEps", ["layer_norm_eps", "layer_norm_epsilon"], base.layerNormEps),
    maxPositions: f.number("maxPositions", ["max_position_embeddings", "n_positions"], base.maxPositions),
    padTokenId: f.nullableNumber("padTokenId", "pad_token_id", isGpt2 ? null : base.padTokenId),
    bosTokenId: isGpt2 ? textId(json, "bos_token_id") : null,
    eosTokenId: isGpt2 ? textId(json, "eos_token_id") : null,
    typeVocabSize: isGpt2 ? 0 : f.number("typeVocabSize", ["type_vocab_size"], base.typeVocabSize),
    hiddenDropout: f.number("hiddenDropout", ["hidden_dropout_prob", "resid_pdrop"], base.hiddenDropout),
    embeddingDropout: f.number(
      "embeddingDropout",
      ["embd_pdrop", "hidden_dropout_prob"],
      base.embeddingDropout,
    ),
    attentionDropout: f.number(
      "attentionDropout",
      ["attention_probs_dropout_prob", "attn_pdrop"],
      base.attentionDropout,
    ),
    classifierDropout: f.nullableNumber("classifierDropout", "classifier_dropout", null),
    initializerRange: f.number("initializerRange", ["initializer_range"], base.initializerRange),
    isDecoder: !isGpt2 && f.boolean("isDecoder", "is_decoder"),
  };
  validateConfig(config, source, f.names);
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
      // Not a GPT2Config field, but its token classifier reads it (else 0.1): written when set.
      ...(config.classifierDropout !== null ? { classifier_dropout: config.classifierDropout } : {}),
      // GPT2Config defaults both to 50256, GPT-2's own <|endoftext|>, written only when they differ.
      ...(config.bosTokenId !== GPT2_END_OF_TEXT || config.eosTokenId !== GPT2_END_OF_TEXT
        ? { bos_token_id: config.bosTokenId ?? null, eos_token_id: config.eosTokenId ?? null }
        : {}),
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
    is_decoder: config.isDecoder,
    tie_word_embeddings: true,
  };
}

/**
 * The largest sizes a configuration may ask for: far above any BERT, GPT-2 or RoBERTa checkpoint
 * (the largest tokenizers have about 2^18 tokens, the widest of these models 1600 dimensions and
 * 48 layers), but finite, so that a corrupt or hostile `config.json` (say, 1e9 layers) fails at
 * once with an error instead of exhausting memory while the model is built. `parameters` bounds the
 * body's total, 2^32 float32 values (16 GiB), more than a single device of this engine holds.
 */
const CONFIG_LIMITS = {
  vocabSize: 16_777_216, // 2^24
  hiddenSize: 65536,
  numLayers: 1024,
  numHeads: 65536,
  intermediateSize: 262144,
  maxPositions: 1_048_576, // 2^20
  typeVocabSize: 1024,
  parameters: 4_294_967_296, // 2^32
} as const;

/** The name of each field in errors: its Hugging Face name when the configuration came from a file. */
export type FieldNames = Partial<Record<keyof ModelConfig, string>>;

/**
 * The number of parameters of the body (embeddings, layers, final norm): a lower bound of the
 * whole model's, enough to refuse a configuration no device could hold.
 */
function bodyParameters(c: ModelConfig): number {
  const C = c.hiddenSize, I = c.intermediateSize;
  const embeddings = (c.vocabSize + c.maxPositions + c.typeVocabSize) * C + 2 * C;
  const layer = 4 * C * C + 4 * C + 2 * C * I + I + C + 4 * C;
  return embeddings + c.numLayers * layer;
}

/**
 * Throws an error naming `source` and the field (`names` maps fields to the names to report, such
 * as Hugging Face's) when a configuration cannot describe a model: a size that is not an integer
 * or exceeds {@linkcode CONFIG_LIMITS}, heads that do not divide the width or exceed the attention
 * kernels' head dimension, a LayerNorm epsilon that is not positive in float32, a dropout outside
 * [0, 1), an unknown activation, a padding id outside the vocabulary.
 */
export function validateConfig(config: ModelConfig, source: string, names: FieldNames = {}): void {
  const fail = (field: keyof ModelConfig, problem: string): never => {
    const value = config[field];
    const shown = typeof value === "number" ? String(value) : JSON.stringify(value);
    throw new Error(`${source}: field "${names[field] ?? field}" ${problem}, got ${shown}`);
  };
  if (!(config.family in DEFAULTS)) fail("family", "must be bert, gpt2 or roberta");
  const sizes = [
    "numLayers",
    "hiddenSize",
    "numHeads",
    "intermediateSize",
    "vocabSize",
    "maxPositions",
  ] as const;
  for (const field of sizes) {
    const value = config[field];
    if (!Number.isInteger(value) || value < 1 || value > CONFIG_LIMITS[field]) {
      fail(field, `must be an integer in [1, ${CONFIG_LIMITS[field]}]`);
    }
  }
  // GPT-2 has no token types; BERT and RoBERTa need at least one.
  const minTypes = config.family === "gpt2" ? 0 : 1;
  if (
    !Number.isInteger(config.typeVocabSize) || config.typeVocabSize < minTypes ||
    config.typeVocabSize > CONFIG_LIMITS.typeVocabSize
  ) {
    fail("typeVocabSize", `must be an integer in [${minTypes}, ${CONFIG_LIMITS.typeVocabSize}]`);
  }
  if (config.hiddenSize % config.numHeads !== 0) {
    fail(
      "numHeads",
      `must divide "${names.hiddenSize ?? "hiddenSize"}" (${config.hiddenSize} is not divisible by it)`,
    );
  }
  if (config.hiddenSize / config.numHeads > MAX_HEAD_DIM) {
    fail("numHeads", `gives heads of ${config.hiddenSize / config.numHeads} > ${MAX_HEAD_DIM} dimensions`);
  }
  if (!["gelu", "gelu_new", "relu"].includes(config.hiddenAct)) {
    fail("hiddenAct", "must be gelu, gelu_new or relu");
  }
  // The kernels take epsilon as a float32 uniform: it must stay positive and finite there.
  const eps = typeof config.layerNormEps === "number" ? Math.fround(config.layerNormEps) : NaN;
  if (!(eps > 0 && eps < Infinity)) fail("layerNormEps", "must be positive and finite in float32");
  for (
    const field of ["hiddenDropout", "embeddingDropout", "attentionDropout", "classifierDropout"] as const
  ) {
    const p = config[field];
    if ((p !== null || field !== "classifierDropout") && !(typeof p === "number" && p >= 0 && p < 1)) {
      fail(field, "must be in [0, 1)");
    }
  }
  // Configurations saved before the field existed lack it; they mean false.
  if (config.isDecoder !== undefined && typeof config.isDecoder !== "boolean") {
    fail("isDecoder", "must be true or false");
  }
  const std = config.initializerRange;
  if (!(typeof std === "number" && std >= 0 && std < Infinity)) {
    fail("initializerRange", "must be finite and non-negative");
  }
  const pad = config.padTokenId;
  for (const field of ["bosTokenId", "eosTokenId"] as const) {
    // Only GPT-2's config.json names them here; another family's would be dropped in silence.
    if (config.family !== "gpt2" && config[field] != null) {
      fail(field, "is GPT-2's only (null for BERT and RoBERTa)");
    }
  }
  for (const field of ["padTokenId", "bosTokenId", "eosTokenId"] as const) {
    const id = config[field];
    // Configurations saved before bos and eos existed lack them (undefined): they mean none.
    if (id !== null && id !== undefined && !(Number.isInteger(id) && id >= 0 && id < config.vocabSize)) {
      fail(field, `must be null or a token id in [0, ${config.vocabSize})`);
    }
  }
  if (config.family === "roberta") {
    // RoBERTa's position ids start after the padding id, so the table needs a row beyond it.
    if (pad === null) fail("padTokenId", "is needed by RoBERTa (position ids start after it)");
    if (config.maxPositions <= pad! + 1) {
      fail("maxPositions", `must exceed "${names.padTokenId ?? "padTokenId"}" + 1 = ${pad! + 1} for RoBERTa`);
    }
  }
  const parameters = bodyParameters(config);
  if (parameters > CONFIG_LIMITS.parameters) {
    throw new Error(
      `${source}: the configuration describes at least ${parameters} parameters, more than ${CONFIG_LIMITS.parameters}`,
    );
  }
}

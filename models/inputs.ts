/**
 * Model inputs: the batch a user passes (Hugging Face's argument names), and the derived index
 * tensors a forward pass needs, computed on the host from the batch's host values so that a
 * training step never reads GPU memory back.
 *
 * @module
 */
import { Tensor, tensor } from "../engine/tensor.ts";
import { formatShape } from "../engine/shape.ts";
import type { ModelConfig } from "./config.ts";

/** A batch, named like Hugging Face's forward arguments; id tensors are int32 created from host arrays. */
export interface Batch {
  /** Token ids, int32 [B, T]. */
  inputIds: Tensor;
  /** 1 for real tokens, 0 for padding, int32 [B, T]; all ones when omitted. */
  attentionMask?: Tensor;
  /** Segment ids, int32 [B, T]; zeros when omitted (BERT, RoBERTa). */
  tokenTypeIds?: Tensor;
  /** Task labels: class ids [B] (sequence classification; float32 [B] when numLabels is 1), token labels [B, T] (-100 ignored). */
  labels?: Tensor;
  /** Question answering: answer start positions, int32 [B]. */
  startPositions?: Tensor;
  /** Question answering: answer end positions, int32 [B]. */
  endPositions?: Tensor;
}

/** What the transformer body consumes, derived from a {@linkcode Batch}. */
export interface BodyInputs {
  /** Batch size B. */
  readonly batch: number;
  /** Sequence length T. */
  readonly length: number;
  /** Token ids [B, T]. */
  readonly ids: Tensor;
  /** Position ids [B, T]. */
  readonly positions: Tensor;
  /** Token-type ids [B, T], or null for GPT-2. */
  readonly types: Tensor | null;
  /** float32 [B, T] key mask for attention, or null when nothing is padded. */
  readonly keyMask: Tensor | null;
  /** Rows b*T of the flattened [B*T, C] hidden state (the first token of each sequence). */
  readonly firstTokenRows: Tensor;
  /** Rows of the last non-padding token of each sequence in the flattened hidden state. */
  readonly lastTokenRows: Tensor;
}

/**
 * The host copy of an int32 tensor of ids or labels (models read them on the CPU to derive positions,
 * masks and rows); `what` names it in the error when the tensor was not made from host values.
 */
export function hostIds(t: Tensor, what: string): Int32Array {
  if (t.dtype !== "int32" || !t.hostValues) {
    throw new Error(
      `${what}: expected an int32 tensor created from host values (tensor(Int32Array)), got ${t.describe()}`,
    );
  }
  return t.hostValues;
}

/** The longest sequence a model reads: RoBERTa's positions start after the pad id, so pad + 1 of its position embeddings are never used. */
export function usablePositions(config: ModelConfig): number {
  return config.maxPositions - (config.family === "roberta" ? config.padTokenId! + 1 : 0);
}

/** The fields a {@linkcode Batch} may have. */
const BATCH_FIELDS = [
  "inputIds",
  "attentionMask",
  "tokenTypeIds",
  "labels",
  "startPositions",
  "endPositions",
];

/**
 * Throws naming a field a batch should not have, or its missing inputIds: a misspelt field (say,
 * Hugging Face's `attention_mask`) would otherwise be ignored in silence.
 */
function checkBatchFields(batch: Batch): void {
  if (typeof batch !== "object" || batch === null || batch instanceof Tensor) {
    throw new Error(`forward: the batch must be an object with inputIds ({ inputIds, ... }), got ${batch}`);
  }
  for (const field of Object.keys(batch)) {
    if (BATCH_FIELDS.includes(field) || (batch as unknown as Record<string, unknown>)[field] === undefined) {
      continue;
    }
    const camel = field.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const hint = camel !== field && BATCH_FIELDS.includes(camel)
      ? ` (Hugging Face's ${field} is ${camel} here)`
      : "";
    throw new Error(`forward: unknown batch field "${field}"${hint}; accepted: ${BATCH_FIELDS.join(", ")}`);
  }
  if (!batch.inputIds) throw new Error("forward: the batch has no inputIds");
}

/**
 * Derives position ids (BERT and GPT-2: 0..T-1; RoBERTa: `cumsum(ids != pad) * (ids != pad) + pad`),
 * token types, the float key mask and the first/last token rows from a batch.
 */
export function bodyInputs(config: ModelConfig, batch: Batch): BodyInputs {
  checkBatchFields(batch);
  const ids = batch.inputIds;
  if (ids.rank !== 2) {
    throw new Error(`forward: inputIds must be [batch, length], got ${formatShape(ids.shape)}`);
  }
  const [B, T] = ids.shape;
  // An empty batch would otherwise surface deep inside the body as a matmul or gather shape error.
  if (B === 0 || T === 0) {
    const shape = formatShape(ids.shape);
    throw new Error(`forward: inputIds ${shape} is empty; batch size and sequence length must be at least 1`);
  }
  const idValues = hostIds(ids, "forward inputIds");
  const usable = usablePositions(config);
  if (T > usable) {
    throw new Error(
      `forward: inputIds ${formatShape(ids.shape)}: sequence length ${T} exceeds the ${usable} positions ` +
        `the model can use (maxPositions ${config.maxPositions})`,
    );
  }
  // Checked for every family: GPT-2 ignores token types, but a wrong shape is still a wrong batch.
  const companions = { attentionMask: batch.attentionMask, tokenTypeIds: batch.tokenTypeIds };
  for (const [field, t] of Object.entries(companions)) {
    if (t && t.shape.join() !== ids.shape.join()) {
      throw new Error(
        `forward: ${field} ${formatShape(t.shape)} does not match inputIds ${formatShape(ids.shape)}`,
      );
    }
  }
  const maskValues = batch.attentionMask ? hostIds(batch.attentionMask, "forward attentionMask") : null;
  const positions = new Int32Array(B * T);
  if (config.family === "roberta") {
    const pad = config.padTokenId!;
    for (let b = 0; b < B; b++) {
      let count = 0;
      for (let t = 0; t < T; t++) {
        const real = idValues[b * T + t] !== pad;
        if (real) count++;
        positions[b * T + t] = real ? count + pad : pad;
      }
    }
  } else {
    for (let i = 0; i < B * T; i++) positions[i] = i % T;
  }
  let types: Tensor | null = null;
  if (config.family !== "gpt2") {
    types = batch.tokenTypeIds ?? tensor(new Int32Array(B * T), { shape: [B, T] });
  }
  const padded = maskValues !== null && maskValues.some((m) => m === 0);
  const keyMask = padded
    ? tensor(Float32Array.from(maskValues!, (m) => (m === 0 ? 0 : 1)), { shape: [B, T] })
    : null;
  const first = Int32Array.from({ length: B }, (_, b) => b * T);
  const last = Int32Array.from(
    { length: B },
    (_, b) => b * T + lastTokenIndex(config, idValues, maskValues, b, T),
  );
  return {
    batch: B,
    length: T,
    ids,
    positions: tensor(positions, { shape: [B, T] }),
    types,
    keyMask,
    firstTokenRows: tensor(first),
    lastTokenRows: tensor(last),
  };
}

/**
 * The last non-padding position of sequence b, as GPT2ForSequenceClassification picks it: the last
 * token whose id is not the pad id. Without a pad id, the attention mask's last kept position (T-1
 * without a mask); Hugging Face takes T-1 then and refuses batches of more than one row.
 */
function lastTokenIndex(
  config: ModelConfig,
  ids: Int32Array,
  mask: Int32Array | null,
  b: number,
  T: number,
): number {
  const pad = config.padTokenId;
  for (let t = T - 1; t >= 0; t--) {
    const isPad = pad !== null ? ids[b * T + t] === pad : mask !== null && mask[b * T + t] === 0;
    if (!isPad) return t;
  }
  return pad === null ? T - 1 : 0;
}

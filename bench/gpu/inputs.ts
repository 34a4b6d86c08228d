/**
 * The workloads of the side-by-side benchmark (bench/gpu/workloads.json, which torch_side.py reads
 * too) and the inputs both halves compute instead of exchanging them: an integer hash of the element
 * index, so that a 100 M-parameter optimizer state or a 4096² matrix never travels through a file.
 *
 * @module
 */
import spec from "./workloads.json" with { type: "json" };

/** The benchmark sizes: "full" for the GPU run, "tiny" for the dry run and the CPU smoke check. */
export type Size = "full" | "tiny";

/** One matrix product: a [m, k] times b [k, n], or times b [n, k]ᵀ (the Linear weight layout). */
export interface MatmulSpec {
  /** Row id in the table (`matmul/<id>`). */
  id: string;
  /** Rows of the output. */
  m: number;
  /** Columns of the output. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** b is stored [n, k]. */
  transposeB: boolean;
}

/** One attention case of {@linkcode AttentionSpec}. */
export interface AttentionCase {
  /** Row id in the table (`attention/<id>`). */
  id: string;
  /** Sequence length T (queries and keys). */
  tokens: number;
  /** Causal mask, or key padding (see {@linkcode validLengths}). */
  mask: "causal" | "padded";
}

/** Attention forward + backward, q, k, v [batch, heads, T, dim]. */
export interface AttentionSpec {
  /** Batch size. */
  batch: number;
  /** Heads. */
  heads: number;
  /** Head dimension. */
  dim: number;
  /** Sequence lengths and masks. */
  cases: AttentionCase[];
}

/** The AdamW workload: `models` models of `layers` layers of two [width, width] weights and two [width] biases. */
export interface OptimizerSpec {
  /** Models. */
  models: number;
  /** Layers per model. */
  layers: number;
  /** Width of every weight. */
  width: number;
  /** Learning rate. */
  lr: number;
  /** Decoupled weight decay. */
  weightDecay: number;
  /** Stride of the parameters compared after the check's two steps (1: all). */
  sampleEvery: number;
}

/** One model size of the training-step workload. */
export interface ModelSize {
  /** "small" or "large". */
  id: string;
  /** Hidden size. */
  hidden: number;
  /** Layers. */
  layers: number;
  /** Attention heads. */
  heads: number;
  /** Feed-forward width. */
  intermediate: number;
  /** Vocabulary. */
  vocab: number;
  /** Sequence length. */
  tokens: number;
  /** Batch size. */
  batch: number;
}

/** The training-step workload. */
export interface ModelsSpec {
  /** Learning rate of every optimizer. */
  lr: number;
  /** Weight decay of every optimizer. */
  weightDecay: number;
  /** Dropout of the timed steps (the check runs without). */
  dropout: number;
  /** PyTorch saves every gradient of a model with at most this many parameters, else a subset. */
  gradientsOfAllUpTo: number;
  /** The sizes. */
  sizes: ModelSize[];
}

/** Every workload of one size. */
export interface Workloads {
  /** Matrix products. */
  matmul: MatmulSpec[];
  /** Attention. */
  attention: AttentionSpec;
  /** LayerNorm forward + backward over [rows, cols]. */
  layernorm: { rows: number; cols: number; eps: number };
  /** gelu(x + bias) + residual over [rows, cols]. */
  chain: { rows: number; cols: number };
  /** The fused optimizer step. */
  optimizer: OptimizerSpec;
  /** Training steps of the three models. */
  models: ModelsSpec;
}

/** How one input tensor is drawn. */
interface Stream {
  stream: number;
  scale: number;
  offset: number;
}

const streams: Record<string, Stream> = spec.streams;

/** The workloads of `size`. */
export function workloads(size: Size): Workloads {
  return spec[size] as Workloads;
}

/** Odd multipliers below 2^31, so that PyTorch's int64 products stay exact. */
const MULTIPLIER_A = 0x2c1b3c6d;
const MULTIPLIER_B = 0x297a2d39;
const GOLDEN = 0x9e3779b9;

function streamOf(name: string): Stream {
  const found = streams[name];
  if (!found) throw new Error(`bench/gpu/workloads.json: no stream "${name}"`);
  return found;
}

/** The 32-bit hash of element `index` of stream `stream` (torch_side.py's `hash32`). */
export function hash32(index: number, stream: number): number {
  const seed = Math.imul(stream, GOLDEN) >>> 0;
  let x = (Math.imul(index, MULTIPLIER_A) + seed) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, MULTIPLIER_B) >>> 0;
  return (x ^ (x >>> 13)) >>> 0;
}

/**
 * `count` values of the named stream starting at element `start`: (hash / 2^32 - 0.5) * scale +
 * offset, exact in float64 (power-of-two scales, dyadic offsets), then rounded once to float32.
 */
export function streamValues(name: string, count: number, start = 0): Float32Array {
  const { stream, scale, offset } = streamOf(name);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (hash32(start + i, stream) / 4294967296 - 0.5) * scale + offset;
  return out;
}

/** `count` integers `low + hash mod (high - low)` of the named stream: token ids and labels. */
export function streamInts(name: string, count: number, low: number, high: number): Int32Array {
  const { stream } = streamOf(name);
  return Int32Array.from({ length: count }, (_, i) => low + hash32(i, stream) % (high - low));
}

/** Real tokens per sequence of a padded attention batch: T - floor(b T / (2 B)), from T down to about T/2. */
export function validLengths(batch: number, tokens: number): number[] {
  return Array.from({ length: batch }, (_, b) => tokens - Math.floor((b * tokens) / (2 * batch)));
}

/**
 * Float64 reference of scaled-dot-product attention (kernels/attention.ts): the full score matrix,
 * masks, softmax, the dropout mask rebuilt from the kernel's seed, and the backward pass written
 * out directly (dS = P * (dP - rowsum(P * dP)), without the kernels' D_i = rowsum(dO * O) shortcut).
 *
 * @module
 */
import { randomUniform } from "./random.ts";

/** Sizes of a reference attention problem: q [B, H, Tq, D], k and v [B, H, Tk, D]. */
export interface AttentionShape {
  /** Batch size B. */
  readonly batch: number;
  /** Heads H. */
  readonly heads: number;
  /** Query rows Tq. */
  readonly queries: number;
  /** Key rows Tk. */
  readonly keys: number;
  /** Head dimension D. */
  readonly dim: number;
}

/** Options of the reference, as in `AttentionOptions`, with the dropout seed the kernel drew. */
export interface AttentionReferenceOptions {
  /** Query i attends only keys j <= i. */
  readonly causal?: boolean;
  /** [B, Tk] row-major: 0 = padding. */
  readonly keyMask?: ArrayLike<number>;
  /** Multiplier of q·k; default 1/sqrt(D). */
  readonly scale?: number;
  /** Dropout probability; default 0. */
  readonly dropout?: number;
  /** Seed of the dropout mask (the kernel's `nextKernelSeed()`). */
  readonly seed?: number;
}

/** Gradients of the reference with respect to q, k and v. */
export interface AttentionGradients {
  /** [B, H, Tq, D] */
  readonly dq: Float64Array;
  /** [B, H, Tk, D] */
  readonly dk: Float64Array;
  /** [B, H, Tk, D] */
  readonly dv: Float64Array;
}

/** The dropout multiplier of probability (i, j) of head `stream`: 0 or 1/(1-p), as the kernels draw it. */
function dropoutFactor(seed: number, stream: number, index: number, dropout: number): number {
  if (dropout <= 0) return 1;
  return randomUniform(seed, stream, index) >= dropout ? 1 / (1 - dropout) : 0;
}

/**
 * Softmax probabilities P [Tq, Tk] of one head (zero where masked; an all-masked row stays zero)
 * and the dropout multipliers Z.
 */
function headProbabilities(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  s: AttentionShape,
  b: number,
  h: number,
  o: AttentionReferenceOptions,
): { p: Float64Array; z: Float64Array } {
  const { queries: tq, keys: tk, dim } = s;
  const scale = o.scale ?? 1 / Math.sqrt(dim);
  const qBase = (b * s.heads + h) * tq * dim, kBase = (b * s.heads + h) * tk * dim;
  const p = new Float64Array(tq * tk), z = new Float64Array(tq * tk);
  for (let i = 0; i < tq; i++) {
    let max = -Infinity;
    for (let j = 0; j < tk; j++) {
      const attended = (!o.causal || j <= i) && (!o.keyMask || o.keyMask[b * tk + j] !== 0);
      let score = -Infinity;
      if (attended) {
        score = 0;
        for (let d = 0; d < dim; d++) score += q[qBase + i * dim + d] * k[kBase + j * dim + d];
        score *= scale;
      }
      p[i * tk + j] = score;
      max = Math.max(max, score);
    }
    let total = 0;
    for (let j = 0; j < tk; j++) {
      const e = max === -Infinity ? 0 : Math.exp(p[i * tk + j] - max);
      p[i * tk + j] = e;
      total += e;
    }
    for (let j = 0; j < tk; j++) {
      if (total > 0) p[i * tk + j] /= total;
      z[i * tk + j] = dropoutFactor(o.seed ?? 0, b * s.heads + h, i * tk + j, o.dropout ?? 0);
    }
  }
  return { p, z };
}

/** Attention output [B, H, Tq, D] in float64. */
export function attentionForward(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: AttentionShape,
  o: AttentionReferenceOptions = {},
): Float64Array {
  const { queries: tq, keys: tk, dim } = s;
  const out = new Float64Array(s.batch * s.heads * tq * dim);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      const { p, z } = headProbabilities(q, k, s, b, h, o);
      const oBase = (b * s.heads + h) * tq * dim, vBase = (b * s.heads + h) * tk * dim;
      for (let i = 0; i < tq; i++) {
        for (let j = 0; j < tk; j++) {
          const w = p[i * tk + j] * z[i * tk + j];
          for (let d = 0; d < dim; d++) out[oBase + i * dim + d] += w * v[vBase + j * dim + d];
        }
      }
    }
  }
  return out;
}

/** Gradients of sum(attentionForward(q, k, v) * outGrad) with respect to q, k and v. */
export function attentionBackward(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  outGrad: ArrayLike<number>,
  s: AttentionShape,
  o: AttentionReferenceOptions = {},
): AttentionGradients {
  const { queries: tq, keys: tk, dim } = s;
  const scale = o.scale ?? 1 / Math.sqrt(dim);
  const dq = new Float64Array(s.batch * s.heads * tq * dim);
  const dk = new Float64Array(s.batch * s.heads * tk * dim);
  const dv = new Float64Array(s.batch * s.heads * tk * dim);
  const dp = new Float64Array(tk);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      const { p, z } = headProbabilities(q, k, s, b, h, o);
      const qBase = (b * s.heads + h) * tq * dim, kBase = (b * s.heads + h) * tk * dim;
      for (let i = 0; i < tq; i++) {
        let rowDot = 0;
        for (let j = 0; j < tk; j++) {
          let g = 0;
          for (let d = 0; d < dim; d++) g += outGrad[qBase + i * dim + d] * v[kBase + j * dim + d];
          dp[j] = g * z[i * tk + j];
          rowDot += p[i * tk + j] * dp[j];
        }
        for (let j = 0; j < tk; j++) {
          const pij = p[i * tk + j];
          const ds = pij * (dp[j] - rowDot) * scale;
          for (let d = 0; d < dim; d++) {
            dq[qBase + i * dim + d] += ds * k[kBase + j * dim + d];
            dk[kBase + j * dim + d] += ds * q[qBase + i * dim + d];
            dv[kBase + j * dim + d] += pij * z[i * tk + j] * outGrad[qBase + i * dim + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * Float64 reference of LayerNorm over the last axis, forward and backward.
 *
 * @module
 */
import type { Array64 } from "./array.ts";

/** Outputs of {@linkcode layerNormForward}. */
export interface LayerNormForward {
  /** The normalised, scaled and shifted values, with x's shape. */
  readonly y: Array64;
  /** Mean of every row, [rows]. */
  readonly mean: Float64Array;
  /** 1 / sqrt(biased variance + eps) of every row, [rows]. */
  readonly rstd: Float64Array;
}

/** Gradients returned by {@linkcode layerNormBackward}. */
export interface LayerNormGradients {
  /** Gradient of x, with x's shape. */
  readonly dx: Array64;
  /** Gradient of gamma, [C]. */
  readonly dgamma: Float64Array;
  /** Gradient of beta, [C]. */
  readonly dbeta: Float64Array;
}

function rowsOf(x: Array64): [number, number] {
  const cols = x.shape[x.shape.length - 1];
  return [x.data.length / cols, cols];
}

/** y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis, var biased (divided by C). */
export function layerNormForward(
  x: Array64,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  eps: number,
): LayerNormForward {
  const [rows, cols] = rowsOf(x);
  const y = new Float64Array(x.data.length);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = x.data.subarray(r * cols, (r + 1) * cols);
    let s = 0;
    for (const v of row) s += v;
    const mu = s / cols;
    let q = 0;
    for (const v of row) q += (v - mu) ** 2;
    const inv = 1 / Math.sqrt(q / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = (row[j] - mu) * inv * gamma[j] + beta[j];
    mean[r] = mu;
    rstd[r] = inv;
  }
  return { y: { shape: [...x.shape], data: y }, mean, rstd };
}

/** Gradients of sum(dy * layerNorm(x, gamma, beta, eps)) with respect to x, gamma and beta. */
export function layerNormBackward(
  x: Array64,
  gamma: ArrayLike<number>,
  dy: ArrayLike<number>,
  eps: number,
): LayerNormGradients {
  const [rows, cols] = rowsOf(x);
  const { mean, rstd } = layerNormForward(x, gamma, new Float64Array(cols), eps);
  const dx = new Float64Array(x.data.length);
  const dgamma = new Float64Array(cols);
  const dbeta = new Float64Array(cols);
  const xhat = new Float64Array(cols);
  const g = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    let sumG = 0;
    let sumGXhat = 0;
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      xhat[j] = (x.data[i] - mean[r]) * rstd[r];
      g[j] = dy[i] * gamma[j];
      sumG += g[j];
      sumGXhat += g[j] * xhat[j];
      dgamma[j] += dy[i] * xhat[j];
      dbeta[j] += dy[i];
    }
    for (let j = 0; j < cols; j++) {
      dx[r * cols + j] = rstd[r] * (g[j] - sumG / cols - xhat[j] * sumGXhat / cols);
    }
  }
  return { dx: { shape: [...x.shape], data: dx }, dgamma, dbeta };
}

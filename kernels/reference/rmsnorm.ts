/**
 * Float64 reference of RMSNorm over the last axis, forward and backward, written from the formula
 * (Zhang & Sennrich 2019; `torch.nn.functional.rms_norm(x, [C], gamma, eps)`), not from the WGSL.
 *
 * @module
 */
import type { Array64 } from "./array.ts";

/** Outputs of {@linkcode rmsNormForward}. */
export interface RmsNormForward {
  /** The normalised and scaled values, with x's shape. */
  readonly y: Array64;
  /** 1 / sqrt(mean(x^2) + eps) of every row, [rows]. */
  readonly rstd: Float64Array;
}

/** Gradients returned by {@linkcode rmsNormBackward}. */
export interface RmsNormGradients {
  /** Gradient of x, with x's shape. */
  readonly dx: Array64;
  /** Gradient of gamma, [C]. */
  readonly dgamma: Float64Array;
}

/** y = x / sqrt(mean(x^2) + eps) * gamma over the last axis. */
export function rmsNormForward(x: Array64, gamma: ArrayLike<number>, eps: number): RmsNormForward {
  const cols = x.shape[x.shape.length - 1];
  const rows = x.data.length / cols;
  const y = new Float64Array(x.data.length);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let squares = 0;
    for (let j = 0; j < cols; j++) squares += x.data[r * cols + j] ** 2;
    rstd[r] = 1 / Math.sqrt(squares / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = x.data[r * cols + j] * rstd[r] * gamma[j];
  }
  return { y: { shape: [...x.shape], data: y }, rstd };
}

/**
 * Gradients of sum(dy * rmsNorm(x, gamma, eps)): with xhat = x * rstd and g = dy * gamma,
 * dx = rstd * (g - xhat * mean(g * xhat)) per row, dgamma = sum over rows of dy * xhat.
 */
export function rmsNormBackward(
  x: Array64,
  gamma: ArrayLike<number>,
  dy: ArrayLike<number>,
  eps: number,
): RmsNormGradients {
  const cols = x.shape[x.shape.length - 1];
  const rows = x.data.length / cols;
  const { rstd } = rmsNormForward(x, gamma, eps);
  const dx = new Float64Array(x.data.length);
  const dgamma = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    let gxhat = 0;
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      gxhat += dy[i] * gamma[j] * x.data[i] * rstd[r];
      dgamma[j] += dy[i] * x.data[i] * rstd[r];
    }
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      dx[i] = rstd[r] * (dy[i] * gamma[j] - x.data[i] * rstd[r] * gxhat / cols);
    }
  }
  return { dx: { shape: [...x.shape], data: dx }, dgamma };
}

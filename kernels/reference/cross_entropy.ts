/**
 * Float64 reference of cross-entropy with hard and soft targets, forward and backward. Logits are
 * [N, C] row-major; reductions follow PyTorch ("mean" over counted rows, NaN when none is counted).
 *
 * @module
 */

/** How per-row losses are combined. */
export type Reduction = "mean" | "sum" | "none";

/** log_softmax of row `n`. */
function logSoftmaxRow(logits: ArrayLike<number>, cols: number, n: number): Float64Array {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) max = Math.max(max, logits[n * cols + c]);
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += Math.exp(logits[n * cols + c] - max);
  const logSum = Math.log(sum);
  return Float64Array.from({ length: cols }, (_, c) => logits[n * cols + c] - max - logSum);
}

/** Combines per-row losses; `counted` is the number of rows that take part in the mean. */
function reduce(losses: Float64Array, counted: number, reduction: Reduction): Float64Array {
  if (reduction === "none") return losses;
  const total = losses.reduce((s, v) => s + v, 0);
  return Float64Array.of(reduction === "sum" ? total : total / counted);
}

/** Per-row factor of the upstream gradient: g per row ("none"), g ("sum") or g / counted ("mean"). */
function rowScale(g: ArrayLike<number>, n: number, counted: number, reduction: Reduction): number {
  if (reduction === "none") return g[n];
  return reduction === "sum" ? g[0] : g[0] / counted;
}

/** Hard-target loss: -log_softmax(z)[target] per row, 0 for rows whose target is `ignoreIndex`. */
export function crossEntropyForward(
  logits: ArrayLike<number>,
  cols: number,
  targets: ArrayLike<number>,
  reduction: Reduction = "mean",
  ignoreIndex = -100,
): Float64Array {
  const losses = new Float64Array(targets.length);
  let counted = 0;
  for (let n = 0; n < targets.length; n++) {
    if (targets[n] === ignoreIndex) continue;
    losses[n] = -logSoftmaxRow(logits, cols, n)[targets[n]];
    counted++;
  }
  return reduce(losses, counted, reduction);
}

/** d loss / d logits = (softmax - onehot) * scale for counted rows, 0 for ignored rows. */
export function crossEntropyBackward(
  logits: ArrayLike<number>,
  cols: number,
  targets: ArrayLike<number>,
  g: ArrayLike<number>,
  reduction: Reduction = "mean",
  ignoreIndex = -100,
): Float64Array {
  const grad = new Float64Array(targets.length * cols);
  const counted = Array.from(targets).filter((t) => t !== ignoreIndex).length;
  for (let n = 0; n < targets.length; n++) {
    if (targets[n] === ignoreIndex) continue;
    const logProbs = logSoftmaxRow(logits, cols, n);
    const scale = rowScale(g, n, counted, reduction);
    for (let c = 0; c < cols; c++) {
      grad[n * cols + c] = (Math.exp(logProbs[c]) - (c === targets[n] ? 1 : 0)) * scale;
    }
  }
  return grad;
}

/** Soft-target loss: -sum_c t_c * log_softmax(z)_c per row; "mean" divides by the row count. */
export function softCrossEntropyForward(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  cols: number,
  reduction: Reduction = "mean",
): Float64Array {
  const rows = logits.length / cols;
  const losses = new Float64Array(rows);
  for (let n = 0; n < rows; n++) {
    const logProbs = logSoftmaxRow(logits, cols, n);
    for (let c = 0; c < cols; c++) losses[n] -= targets[n * cols + c] * logProbs[c];
  }
  return reduce(losses, rows, reduction);
}

/**
 * Gradients of the soft-target loss: d/dz = (softmax(z) * sum_c t_c - t) * scale and
 * d/dt = -log_softmax(z) * scale.
 */
export function softCrossEntropyBackward(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  cols: number,
  g: ArrayLike<number>,
  reduction: Reduction = "mean",
): { logits: Float64Array; targets: Float64Array } {
  const rows = logits.length / cols;
  const dLogits = new Float64Array(logits.length);
  const dTargets = new Float64Array(logits.length);
  for (let n = 0; n < rows; n++) {
    const logProbs = logSoftmaxRow(logits, cols, n);
    const scale = rowScale(g, n, rows, reduction);
    let total = 0;
    for (let c = 0; c < cols; c++) total += targets[n * cols + c];
    for (let c = 0; c < cols; c++) {
      const i = n * cols + c;
      dLogits[i] = (Math.exp(logProbs[c]) * total - targets[i]) * scale;
      dTargets[i] = -logProbs[c] * scale;
    }
  }
  return { logits: dLogits, targets: dTargets };
}

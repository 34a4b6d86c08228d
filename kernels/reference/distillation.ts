/**
 * Float64 reference of mutual distillation: the loss mean_j sum_r w_r KL(q_j,r || p_r) / sum_r w_r
 * over [rows, C] logits and its gradient with respect to the logits (peers held constant). A peer
 * row holding NaN or an infinity contributes 0 to both (its row stays counted in sum_r w_r, the peer
 * in the mean over peers).
 *
 * @module
 */

function softmaxRow(logits: ArrayLike<number>, cols: number, r: number): Float64Array {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) max = Math.max(max, logits[r * cols + c]);
  const e = Float64Array.from({ length: cols }, (_, c) => Math.exp(logits[r * cols + c] - max));
  const total = e.reduce((s, v) => s + v, 0);
  return e.map((v) => v / total);
}

/** Whether row r of [rows, cols] values is finite throughout. */
function finiteRow(values: ArrayLike<number>, cols: number, r: number): boolean {
  for (let c = 0; c < cols; c++) if (!Number.isFinite(values[r * cols + c])) return false;
  return true;
}

function rowWeights(rows: number, weights?: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: rows }, (_, r) => (weights ? weights[r] : 1));
}

/** The distillation loss of `logits` [rows, cols] towards `peers` (same shape); non-finite peer rows add 0. */
export function distillationForward(
  logits: ArrayLike<number>,
  peers: readonly ArrayLike<number>[],
  cols: number,
  weights?: ArrayLike<number>,
): number {
  const rows = logits.length / cols;
  const w = rowWeights(rows, weights);
  const total = w.reduce((s, v) => s + v, 0);
  let loss = 0;
  for (const peer of peers) {
    for (let r = 0; r < rows; r++) {
      if (!finiteRow(peer, cols, r)) continue;
      const p = softmaxRow(logits, cols, r);
      const q = softmaxRow(peer, cols, r);
      let kl = 0;
      for (let c = 0; c < cols; c++) if (q[c] > 0) kl += q[c] * (Math.log(q[c]) - Math.log(p[c]));
      loss += (w[r] * kl) / total;
    }
  }
  return loss / peers.length;
}

/** d loss / d logits: (softmax(logits) - softmax(peer)) w_r / sum w, averaged over peers (0 from non-finite peer rows). */
export function distillationBackward(
  logits: ArrayLike<number>,
  peers: readonly ArrayLike<number>[],
  cols: number,
  weights?: ArrayLike<number>,
): Float64Array {
  const rows = logits.length / cols;
  const w = rowWeights(rows, weights);
  const total = w.reduce((s, v) => s + v, 0);
  const grad = new Float64Array(logits.length);
  for (const peer of peers) {
    for (let r = 0; r < rows; r++) {
      if (!finiteRow(peer, cols, r)) continue;
      const p = softmaxRow(logits, cols, r);
      const q = softmaxRow(peer, cols, r);
      for (let c = 0; c < cols; c++) grad[r * cols + c] += ((p[c] - q[c]) * w[r]) / total / peers.length;
    }
  }
  return grad;
}

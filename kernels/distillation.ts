/**
 * Mutual distillation (Deep Mutual Learning, Zhang et al. 2018): the term a model adds to its loss so
 * that its predictions move towards its peers' on the same examples,
 *
 *   mean_j [ sum_r w_r KL(q_j,r || p_r) / sum_r w_r ],   p = softmax(logits), q_j = softmax(peer_j),
 *
 * over rows r of [..., C] logits (classes, or a token's vocabulary, or QA start/end positions), with
 * the peers' predictions held constant. Built from softmax and soft-target cross-entropy: KL(q || p)
 * is H(q, p) - H(q), and H(q) = H(q, q) is computed without gradient, so the gradient with respect to
 * the logits is (p - q_j) w_r / sum_r w_r averaged over peers. Float64 reference:
 * `kernels/reference/distillation.ts`.
 *
 * @module
 */
import { formatShape, sameShape } from "../engine/shape.ts";
import { noGrad, type Tensor } from "../engine/tensor.ts";
import { softCrossEntropy } from "./cross_entropy.ts";
import { add, mul, scale, sub } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";
import { softmax } from "./softmax.ts";

/** Options of {@linkcode mutualDistillation}. */
export interface DistillationOptions {
  /**
   * Weight of each row, float32 [rows] (e.g. 1 for tokens that carry a label, 0 for padding), and
   * their sum, known on the host so that no readback is needed; every row counts once by default.
   */
  rowWeights?: { weights: Tensor; total: number };
}

/**
 * The mean over peers of the weighted mean over rows of KL(softmax(peer) || softmax(logits)), a
 * scalar whose gradient flows into `logits` only. `peers` have the logits' shape.
 */
export function mutualDistillation(
  logits: Tensor,
  peers: readonly Tensor[],
  options: DistillationOptions = {},
): Tensor {
  if (peers.length === 0) throw new Error("mutualDistillation: no peers given");
  const cols = logits.shape[logits.rank - 1];
  const rows = logits.size / cols;
  for (const peer of peers) {
    if (!sameShape(peer.shape, logits.shape)) {
      throw new Error(
        `mutualDistillation: peer ${peer.describe()} does not match logits ${formatShape(logits.shape)}`,
      );
    }
  }
  const weights = options.rowWeights;
  if (weights && (weights.weights.size !== rows || !(weights.total > 0))) {
    throw new Error(
      `mutualDistillation: row weights ${weights.weights.describe()} with total ${weights.total} for ${rows} rows`,
    );
  }
  const flat = logits.reshape([rows, cols]);
  const terms = peers.map((peer) => {
    const [targets, entropy] = noGrad(() => {
      const peerRows = peer.detach().reshape([rows, cols]);
      const q = softmax(peerRows);
      return [q, softCrossEntropy(peerRows, q, { reduction: "none" })];
    });
    const divergence = sub(softCrossEntropy(flat, targets, { reduction: "none" }), entropy);
    return weights
      ? scale(sum(mul(divergence, weights.weights.reshape([rows]))), 1 / weights.total)
      : mean(divergence);
  });
  const total = terms.reduce((s, t) => add(s, t));
  return terms.length === 1 ? total : scale(total, 1 / terms.length);
}

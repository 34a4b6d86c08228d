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
 * A faulted peer stays in its own model: a peer row that holds any NaN or infinite value contributes
 * nothing, neither to the loss nor to the gradient (exactly 0 from that peer for that row, so a
 * partner of a model whose parameters went non-finite keeps a finite gradient and keeps training).
 * The sums keep their denominators: the row is still counted in sum_r w_r and the peer in the mean
 * over peers, its term just being 0. The check runs on the GPU, without a readback: each peer row's
 * non-finite values are counted (a bit test, as WGSL may assume no NaN or Inf), the peer's
 * non-finite values are replaced by 0 (a `select`, since NaN * 0 is NaN) and the rows that held any
 * are zeroed, so q_j is finite, and those rows' KL terms are multiplied by 0. Rows of a finite peer
 * are multiplied by 1, which changes no bit of the loss or the gradient.
 *
 * @module
 */
import { formatShape, sameShape } from "../engine/shape.ts";
import { checkOptions } from "../engine/options.ts";
import { noGrad, type Tensor, tidy } from "../engine/tensor.ts";
import { softCrossEntropy } from "./cross_entropy.ts";
import { add, fused, mul, scale } from "./elementwise.ts";
import { binary, unary } from "./elementwise_ops.ts";
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
 * scalar whose gradient flows into `logits` only. `peers` have the logits' shape. A peer row holding
 * NaN or Inf adds 0 to the loss and exactly 0 to the gradient; the denominators are unchanged. So a peer
 * row masked with -Infinity (the masking idiom) is left out whole: mask with a large negative finite value
 * (-1e9) to keep the row with those classes at probability 0.
 */
export function mutualDistillation(
  logits: Tensor,
  peers: readonly Tensor[],
  options: DistillationOptions = {},
): Tensor {
  checkOptions("mutualDistillation", options, ["rowWeights"]);
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
    const [targets, entropy, finiteRows] = noGrad(() => tidy(() => finitePeerTargets(peer, rows, cols)));
    // KL per row, times 1 where the peer row is finite and 0 where it was not: no gradient flows
    // from such a row (its q is finite, so (p - q) * 0 is 0), and x * 1 leaves every other bit alone.
    const divergence = fused(
      [softCrossEntropy(flat, targets, { reduction: "none" }), entropy, finiteRows],
      (crossEntropy, h, finite) => crossEntropy.sub(h).mul(finite),
      "distillation_divergence",
    );
    return weights
      ? scale(sum(mul(divergence, weights.weights.reshape([rows]))), 1 / weights.total)
      : mean(divergence);
  });
  const total = terms.reduce((s, t) => add(s, t));
  return terms.length === 1 ? total : scale(total, 1 / terms.length);
}

/**
 * The peer's predictions q = softmax(peer) over [rows, cols], their entropies H(q) [rows] and a
 * [rows] mask, 1 where the peer row is finite and 0 where it holds NaN or Inf; such a row is replaced
 * by zeros before the softmax (uniform q, finite entropy), so that the caller's product with the
 * mask is exactly 0. Finite rows pass through bit for bit (x * 1).
 */
function finitePeerTargets(peer: Tensor, rows: number, cols: number): [Tensor, Tensor, Tensor] {
  const peerRows = peer.detach().reshape([rows, cols]);
  const nonFinite = sum(fused([peerRows], (x) => binary("sub", 1, unary("is_finite", x)), "non_finite"), 1);
  const finiteRows = fused([nonFinite], (count) => binary("sub", 1, unary("step", count)), "finite_rows");
  const safe = fused(
    [peerRows, finiteRows.reshape([rows, 1])],
    (x, finite) => unary("finite_or_zero", x).mul(finite),
    "finite_peer",
  );
  const q = softmax(safe);
  return [q, softCrossEntropy(safe, q, { reduction: "none" }), finiteRows];
}

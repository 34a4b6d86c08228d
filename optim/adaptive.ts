/**
 * Convergence-aware learning-rate multipliers: the rule, in float64. The optimizer's GPU plan
 * kernel computes the same rule in float32 (optim/kernels.ts), and the reference step uses this.
 *
 * For each model with a full window of finite losses, fit a least-squares line to its last W
 * losses. The evidence that the loss is falling is the line's slope divided by its standard error,
 * z = -slope / se(slope) (a t-statistic: large when the loss falls steadily, near 0 when it is flat
 * or the fall is lost in noise, negative when it rises). A model's multiplier moves towards
 *
 *   target = 1 + d (max - 1) for d >= 0,   1 + d (1 - min) for d < 0,   d = tanh((z - zMean) / (1 + |zMean|))
 *
 * where zMean is the mean z of the models with a full window that take part in this update (a model
 * sitting an update out influences no one): learning rates shift towards the
 * models whose loss falls more convincingly than the others', and the bounds keep a slow model
 * from stalling. Because only the difference from the mean counts, one model alone, or several
 * with the same trend, stay at 1. A model whose loss is rising (slope > 0) never moves up: its
 * target is at most its current multiplier. The move is smoothed:
 * multiplier += smoothing * (target - multiplier). Without a full window of finite losses a
 * model's multiplier does not change.
 *
 * @module
 */

/** Least-squares slope of `losses` against 0..W-1 and its t-statistic of decrease. */
export function lossTrend(losses: readonly number[]): { slope: number; z: number } {
  const n = losses.length;
  const meanT = (n - 1) / 2;
  const meanL = losses.reduce((s, v) => s + v, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (let t = 0; t < n; t++) {
    sxx += (t - meanT) ** 2;
    sxy += (t - meanT) * (losses[t] - meanL);
  }
  const slope = sxy / sxx;
  let residual = 0;
  for (let t = 0; t < n; t++) residual += (losses[t] - meanL - slope * (t - meanT)) ** 2;
  // A perfectly straight line has no residual; the floor keeps z finite (and 0 for a flat line).
  const se = Math.sqrt(Math.max(residual / (n - 2), 1e-12 * meanL * meanL + 1e-20) / sxx);
  return { slope, z: -slope / se };
}

/** The adaptive-rate parameters the rule needs. */
export interface AdaptiveRule {
  /** Smallest multiplier. */
  min: number;
  /** Largest multiplier. */
  max: number;
  /** Fraction of the way towards the target per update. */
  smoothing: number;
}

/**
 * One update of the multipliers. `windows[m]` holds model m's last W losses (oldest first), or null
 * when it has fewer than W; a window with a non-finite loss counts as none. Models in `frozen`
 * (skipped in this update) keep their multiplier and do not count in the mean trend, so a fault in
 * one model never changes another's rate. Returns the new multipliers.
 */
export function updateMultipliers(
  current: readonly number[],
  windows: readonly (readonly number[] | null)[],
  rule: AdaptiveRule,
  frozen: readonly boolean[] = [],
): number[] {
  const trends = windows.map((w) => {
    if (!w || !w.every(Number.isFinite)) return null;
    const trend = lossTrend(w);
    return Number.isFinite(trend.slope) && Number.isFinite(trend.z) ? trend : null;
  });
  const valid = trends.filter((t, m): t is { slope: number; z: number } => t !== null && !frozen[m]);
  if (valid.length === 0) return [...current];
  const zMean = valid.reduce((s, t) => s + t.z, 0) / valid.length;
  return current.map((multiplier, m) => {
    const trend = trends[m];
    if (!trend || frozen[m]) return multiplier;
    const d = Math.tanh((trend.z - zMean) / (1 + Math.abs(zMean)));
    let target = d >= 0 ? 1 + d * (rule.max - 1) : 1 + d * (1 - rule.min);
    if (trend.slope > 0) target = Math.min(target, multiplier);
    return multiplier + rule.smoothing * (target - multiplier);
  });
}

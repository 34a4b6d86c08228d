/**
 * The statistics of `deno task experiment`: means, sample standard deviations, Student-t intervals
 * (with a t quantile computed from the regularised incomplete beta function), paired differences by
 * seed, Fieller's interval for ratios of means, steps-to-target with censoring, and the rule that
 * turns an effect and its interval into "confirmed", "not confirmed" or "contradicted".
 *
 * Everything here is plain host-side arithmetic on numbers, so a test can check it on hand-made cases.
 *
 * @module
 */

/** A two-sided confidence interval. */
export interface Interval {
  /** Lower end. */
  low: number;
  /** Upper end. */
  high: number;
}

/** A sample's mean with its spread and a confidence interval (null below two values). */
export interface Estimate {
  /** Number of values. */
  n: number;
  /** Mean (NaN when n = 0). */
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator; NaN when n < 2). */
  sd: number;
  /** The interval, or null when n < 2. */
  ci: Interval | null;
}

/** A paired difference: the estimate of the per-seed differences and the seeds they came from. */
export interface PairedEstimate extends Estimate {
  /** The seeds present on both sides, ascending. */
  seeds: number[];
  /** The per-seed differences, in the order of `seeds`. */
  differences: number[];
}

/** Arithmetic mean; NaN for an empty sample. */
export function mean(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/** Sample standard deviation with n - 1 in the denominator; NaN below two values. */
export function sampleSd(values: readonly number[]): number {
  if (values.length < 2) return NaN;
  const m = mean(values);
  let sum = 0;
  for (const v of values) sum += (v - m) ** 2;
  return Math.sqrt(sum / (values.length - 1));
}

const LANCZOS = [
  0.99999999999980993,
  676.5203681218851,
  -1259.1392167224028,
  771.32342877765313,
  -176.61502916214059,
  12.507343278686905,
  -0.13857109526572012,
  9.9843695780195716e-6,
  1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error about 1e-15). */
export function logGamma(x: number): number {
  if (!(x > 0)) throw new Error(`logGamma: x must be positive, got ${x}`);
  // Reflection keeps the series in its accurate range for small x.
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const z = x - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** The continued fraction of the incomplete beta function, by the modified Lentz method. */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  const clamp = (v: number) => (Math.abs(v) < tiny ? tiny : v);
  let c = 1;
  let d = 1 / clamp(1 - ((a + b) * x) / (a + 1));
  let h = d;
  for (let m = 1; m <= 10_000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a - 1 + m2) * (a + m2));
    d = 1 / clamp(1 + aa * d);
    c = clamp(1 + aa / c);
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + 1 + m2));
    d = 1 / clamp(1 + aa * d);
    c = clamp(1 + aa / c);
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) return h;
  }
  throw new Error(`incompleteBeta: no convergence for x=${x}, a=${a}, b=${b}`);
}

/** The regularised incomplete beta function I_x(a, b), for 0 <= x <= 1 and a, b > 0. */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (!(a > 0 && b > 0) || !(x >= 0 && x <= 1)) {
    throw new Error(`incompleteBeta: needs 0 <= x <= 1 and a, b > 0, got x=${x}, a=${a}, b=${b}`);
  }
  if (x === 0 || x === 1) return x;
  const front = Math.exp(
    logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x),
  );
  // The fraction converges fast on this side of the mean; the other side uses the symmetry.
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(x, a, b)) / a;
  return 1 - (front * betaContinuedFraction(1 - x, b, a)) / b;
}

/** P(T > t) for t >= 0 under Student's t with `df` degrees of freedom. */
function tUpperTail(t: number, df: number): number {
  return 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
}

/** Density of Student's t with `df` degrees of freedom. */
function tPdf(t: number, df: number): number {
  return Math.exp(
    logGamma((df + 1) / 2) - logGamma(df / 2) - 0.5 * Math.log(df * Math.PI) -
      ((df + 1) / 2) * Math.log1p((t * t) / df),
  );
}

/** Cumulative distribution function of Student's t with `df` > 0 degrees of freedom. */
export function tCdf(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`tCdf: degrees of freedom must be positive, got ${df}`);
  if (Number.isNaN(t)) return NaN;
  if (!Number.isFinite(t)) return t > 0 ? 1 : 0;
  const tail = tUpperTail(Math.abs(t), df);
  return t >= 0 ? 1 - tail : tail;
}

/**
 * The p-quantile of Student's t with `df` > 0 degrees of freedom (df need not be whole): the exact
 * inverse of {@linkcode tCdf}, solved on the upper tail by Newton steps kept inside a shrinking
 * bracket. The tail comes from the incomplete beta function to about 1e-15, and the root is refined
 * to a relative 1e-13, so for df 1..1000 and p up to 1 - 1e-10 the result agrees with tables to
 * about 12 significant digits.
 */
export function tQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`tQuantile: p must lie in (0, 1), got ${p}`);
  if (!(df > 0) || !Number.isFinite(df)) throw new Error(`tQuantile: df must be positive, got ${df}`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -tQuantile(1 - p, df);
  // The steps table asks for the same few quantiles up to a million times (experiment/tables.ts).
  const key = `${p}/${df}`;
  let t = solvedQuantiles.get(key);
  if (t === undefined) solvedQuantiles.set(key, t = upperQuantile(p, df));
  return t;
}

const solvedQuantiles = new Map<string, number>();

/** {@linkcode tQuantile} for p in (0.5, 1), solved. */
function upperQuantile(p: number, df: number): number {
  const q = 1 - p;
  let low = 0;
  let high = 1;
  while (tUpperTail(high, df) > q) {
    low = high;
    high *= 2;
  }
  let t = (low + high) / 2;
  for (let i = 0; i < 200; i++) {
    const f = tUpperTail(t, df) - q;
    if (f > 0) low = t;
    else high = t;
    const newton = t + f / tPdf(t, df);
    const next = newton > low && newton < high ? newton : (low + high) / 2;
    if (Math.abs(next - t) <= 1e-13 * Math.max(1, Math.abs(t))) return next;
    t = next;
  }
  return t;
}

/**
 * Mean and Student-t interval `mean ± t(1 - (1 - level)/2, n - 1) · sd / √n` of a sample; the
 * interval is null below two values. Non-finite values are an error, not silently dropped.
 */
export function tInterval(values: readonly number[], level = 0.95): Estimate {
  for (const v of values) {
    if (!Number.isFinite(v)) throw new Error(`tInterval: non-finite value ${v} in [${values.join(", ")}]`);
  }
  const n = values.length;
  const m = mean(values);
  const sd = sampleSd(values);
  if (n < 2) return { n, mean: m, sd, ci: null };
  const half = tQuantile(1 - (1 - level) / 2, n - 1) * sd / Math.sqrt(n);
  return { n, mean: m, sd, ci: { low: m - half, high: m + half } };
}

/**
 * The paired difference `treatment - control` over the seeds present in both maps (seed to value),
 * with the Student-t interval of the per-seed differences.
 */
export function pairedDifference(
  treatment: ReadonlyMap<number, number>,
  control: ReadonlyMap<number, number>,
  level = 0.95,
): PairedEstimate {
  const seeds = [...treatment.keys()].filter((s) => control.has(s)).sort((a, b) => a - b);
  const differences = seeds.map((s) => treatment.get(s)! - control.get(s)!);
  return { ...tInterval(differences, level), seeds, differences };
}

/** Options of {@linkcode ratioInterval}. */
export interface RatioOptions {
  /** One sample of pairs (numerator[i] with denominator[i]), or two independent samples. */
  paired: boolean;
  /** Coverage (default 0.95). */
  level?: number;
}

/**
 * Fieller's interval for the ratio of two means, `mean(numerator) / mean(denominator)`, with the
 * Student-t quantile: every r for which `mean(numerator) - r mean(denominator)` is within the t interval
 * of zero. Paired samples use the pairs' covariance and n - 1 degrees of freedom; independent samples
 * the smaller sample's n - 1 (conservative). Null below two values on a side, or when the denominator's
 * mean is not clearly away from zero (the set is then unbounded). Unlike a percentile bootstrap, its
 * coverage holds at the few seeds an experiment has.
 */
export function ratioInterval(
  numerator: readonly number[],
  denominator: readonly number[],
  options: RatioOptions,
): Interval | null {
  const [a, b] = [numerator, denominator];
  if (options.paired && a.length !== b.length) {
    throw new Error(`ratioInterval: ${a.length} numerators paired with ${b.length} denominators`);
  }
  if (a.length < 2 || b.length < 2) return null;
  const [ma, mb] = [mean(a), mean(b)];
  const covariance = options.paired
    ? a.reduce((sum, v, i) => sum + (v - ma) * (b[i] - mb), 0) / (a.length - 1) / a.length
    : 0;
  const df = Math.min(a.length, b.length) - 1;
  const t = tQuantile(1 - (1 - (options.level ?? 0.95)) / 2, df);
  // (ma - r mb)^2 <= t^2 (va - 2 r cov + r^2 vb), with va, vb the variances of the two means.
  const q = t * t;
  const quadratic = mb * mb - q * sampleSd(b) ** 2 / b.length;
  const linear = ma * mb - q * covariance;
  const constant = ma * ma - q * sampleSd(a) ** 2 / a.length;
  if (!(quadratic > 0)) return null;
  const root = Math.sqrt(Math.max(0, linear * linear - quadratic * constant));
  return { low: (linear - root) / quadratic, high: (linear + root) / quadratic };
}

/** One validation evaluation: the step and the metric's value. */
export interface CurvePoint {
  /** Optimizer step of the evaluation. */
  step: number;
  /** The metric's value. */
  value: number;
}

/**
 * When a run first reached a target: at `step`, the first evaluation at or past it, and after
 * `previous`, the evaluation before (0 for the first), since nothing was measured between the two; or
 * censored (not reached within the run).
 */
export type StepsToTarget =
  | { reached: true; step: number; previous: number }
  | { reached: false; lastStep: number };

/**
 * The first evaluation step (in step order) whose value reaches `target` (>= when higher is better,
 * <= otherwise), with the evaluation step before it; censored when none does, with the last evaluated
 * step (0 when there is none).
 */
export function stepsToTarget(
  points: readonly CurvePoint[],
  target: number,
  higherIsBetter: boolean,
): StepsToTarget {
  const sorted = [...points].sort((a, b) => a.step - b.step);
  for (const [i, p] of sorted.entries()) {
    if (higherIsBetter ? p.value >= target : p.value <= target) {
      return { reached: true, step: p.step, previous: i === 0 ? 0 : sorted[i - 1].step };
    }
  }
  return { reached: false, lastStep: sorted.at(-1)?.step ?? 0 };
}

/** The verdict on a claim. */
export type Verdict = "confirmed" | "not confirmed" | "contradicted";

/**
 * A claim about an effect oriented so that larger supports it (a gain in points, a fraction of
 * steps saved, a cost ratio): `none` is the value of no effect (0 for a difference, 1 for a ratio)
 * and `minimum` the smallest effect the claim states.
 */
export interface Claim {
  /** The value meaning "no effect". */
  none: number;
  /** The smallest claimed effect. */
  minimum: number;
}

/**
 * The claim rule: **confirmed** when the interval lies wholly above "no effect" and the estimate is
 * at least the claimed minimum; **contradicted** when the interval lies wholly below the claimed
 * minimum (this includes an interval wholly on the wrong side of "no effect"); **not confirmed**
 * otherwise, and always when there is no interval (fewer than two seeds) or no estimate.
 */
export function judgeClaim(estimate: number, ci: Interval | null, claim: Claim): Verdict {
  if (ci === null || !Number.isFinite(estimate) || !Number.isFinite(ci.low) || !Number.isFinite(ci.high)) {
    return "not confirmed";
  }
  if (ci.low > claim.none && estimate >= claim.minimum) return "confirmed";
  if (ci.high < claim.minimum) return "contradicted";
  return "not confirmed";
}

import { Random } from "../engine/random.ts";
import { lossTrend, updateMultipliers } from "../optim/plan.ts";
import { scheduleFactor } from "../optim/options.ts";
import { assertClose } from "./helpers.ts";

const RULE = { min: 0.5, max: 1.5, smoothing: 0.2 };
const W = 20;

function curve(kind: "falling" | "flat" | "rising" | "noisy", seed: number): number[] {
  const random = new Random(seed);
  return Array.from({ length: W }, (_, t) => {
    if (kind === "falling") return 2 * Math.exp(-0.05 * t) + 0.005 * random.normal();
    if (kind === "flat") return 1 + 0.005 * random.normal();
    if (kind === "rising") return 1 + 0.02 * t + 0.005 * random.normal();
    return 2 * Math.exp(-0.01 * t) + 0.3 * random.normal();
  });
}

/** Runs `updates` multiplier updates with fixed windows. */
function settle(windows: (number[] | null)[], updates: number, start?: number[]): number[] {
  let m = start ?? windows.map(() => 1);
  for (let i = 0; i < updates; i++) m = updateMultipliers(m, windows, RULE);
  return m;
}

Deno.test("the trend statistic is large for a steady fall, near 0 when flat, negative when rising", () => {
  const falling = lossTrend(curve("falling", 1));
  const flat = lossTrend(curve("flat", 2));
  const rising = lossTrend(curve("rising", 3));
  const noisy = lossTrend(curve("noisy", 4));
  if (!(falling.z > 20 && falling.slope < 0)) throw new Error(`falling ${JSON.stringify(falling)}`);
  if (!(Math.abs(flat.z) < 3)) throw new Error(`flat ${JSON.stringify(flat)}`);
  if (!(rising.z < -20 && rising.slope > 0)) throw new Error(`rising ${JSON.stringify(rising)}`);
  if (!(noisy.z < falling.z / 4)) throw new Error(`noisy ${JSON.stringify(noisy)} vs falling ${falling.z}`);
  const exact = lossTrend([5, 4, 3, 2, 1]);
  assertClose([exact.slope], [-1], { atol: 1e-12 }, "slope of a line");
});

Deno.test("one model alone, or several alike, stay at 1", () => {
  for (const kind of ["falling", "flat", "rising", "noisy"] as const) {
    assertClose(settle([curve(kind, 5)], 50), [1], { atol: 1e-12 }, `alone, ${kind}`);
    const same = curve(kind, 6);
    assertClose(settle([same, same, same], 50), [1, 1, 1], { atol: 1e-12 }, `three alike, ${kind}`);
  }
});

Deno.test("rates shift towards the model whose loss falls most convincingly, within the bounds", () => {
  const [falling, flat] = settle([curve("falling", 7), curve("flat", 8)], 200);
  if (!(falling > 1 && falling <= RULE.max && flat < 1 && flat >= RULE.min)) {
    throw new Error(`${falling}, ${flat}`);
  }
  // The rule is relative: with a rising model in the group, a flat one is about average.
  const four = settle([curve("falling", 7), curve("flat", 8), curve("rising", 9), curve("noisy", 10)], 200);
  const [f, , r, n] = four;
  if (!(f > 1 && r < 1 && n < f && r < four[1])) throw new Error(`falling, flat, rising, noisy: ${four}`);
  if (four.some((m) => m < RULE.min || m > RULE.max)) throw new Error(`out of bounds: ${four}`);
  const [clean, noisy] = settle([curve("falling", 14), curve("noisy", 15)], 200);
  if (!(clean > 1 && noisy < 1)) throw new Error(`clean ${clean}, noisy ${noisy}`);
});

Deno.test("a rising loss never raises its multiplier, even when the others rise faster", () => {
  const slowRise = Array.from({ length: W }, (_, t) => 1 + 0.001 * t);
  const fastRise = Array.from({ length: W }, (_, t) => 1 + 0.05 * t);
  let m = [0.8, 0.8];
  for (let i = 0; i < 30; i++) {
    const next = updateMultipliers(m, [slowRise, fastRise], RULE);
    if (next[0] > m[0] || next[1] > m[1]) throw new Error(`a rising model went up: ${m} -> ${next}`);
    m = next;
  }
});

Deno.test("changes are smoothed, and models without a full finite window keep their multiplier", () => {
  const windows = [curve("falling", 11), curve("rising", 12)];
  const once = updateMultipliers([1, 1], windows, RULE);
  const target = settle(windows, 500);
  assertClose([once[0] - 1], [RULE.smoothing * (target[0] - 1)], { atol: 1e-9 }, "one smoothed step up");
  const withGap = updateMultipliers([0.9, 1.2], [null, [...curve("flat", 13).slice(1), NaN]], RULE);
  assertClose(withGap, [0.9, 1.2], { atol: 0 }, "no window, non-finite window");
});

Deno.test("the schedule warms up linearly, follows the cosine and holds its floor after totalSteps", () => {
  const schedule = { warmupSteps: 4, totalSteps: 14, minRatio: 0.1 };
  const f = (u: number) => scheduleFactor(schedule, u);
  assertClose([f(0), f(1), f(3)], [0.25, 0.5, 1], { atol: 1e-12 }, "warmup");
  assertClose([f(4), f(9), f(14), f(100)], [1, 0.55, 0.1, 0.1], { atol: 1e-12 }, "cosine and floor");
  for (let u = 4; u < 200; u++) {
    if (f(u + 1) > f(u) + 1e-15) throw new Error(`rate rose after warmup at ${u}`);
  }
  if (scheduleFactor(null, 12345) !== 1) throw new Error("constant schedule");
});

/**
 * The SVG plots of `docs/RESULTS.md`: per task, the validation curves of each model, independent
 * dashed and joint solid, with the mean over seeds and a 95% t band; and the ablations as bars of
 * "variant minus full joint" with interval whiskers.
 *
 * @module
 */
import { type Band, lineChart, PALETTE, type Series } from "../train/plot.ts";
import { barChart } from "./bars.ts";
import { tInterval } from "./stats.ts";
import { type ExperimentRun, modelsOf, pointsScale, selectRuns } from "./runs.ts";
import { ablationRows } from "./tables.ts";

/** Mean and 95% t band over seeds of one model's validation curve, per evaluation step, in points. */
function curveBand(selected: readonly ExperimentRun[], model: string, metric: string, scale: number) {
  const byStep = new Map<number, number[]>();
  for (const run of selected) {
    for (const p of run.curve) {
      const v = p.metrics[metric];
      if (p.model !== model || typeof v !== "number" || !Number.isFinite(v)) continue;
      byStep.set(p.step, [...(byStep.get(p.step) ?? []), v * scale]);
    }
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const estimates = steps.map((s) => tInterval(byStep.get(s)!));
  return {
    x: steps,
    y: estimates.map((e) => e.mean),
    low: estimates.map((e) => e.ci?.low ?? NaN),
    high: estimates.map((e) => e.ci?.high ?? NaN),
  };
}

/** The validation-curve chart of one task and group: each model, joint solid, independent dashed. */
export function curveChart(
  runs: readonly ExperimentRun[],
  group: "main" | "pretrained",
  task: string,
): string | null {
  const selections = ["joint", "independent"].map((c) => ({ c, s: selectRuns(runs, group, task, c) }));
  const all = selections.flatMap(({ s }) => s.runs);
  if (all.length === 0) return null;
  const metric = all[0].primaryMetric;
  const scale = pointsScale(all, metric);
  const series: Series[] = [];
  const bands: Band[] = [];
  for (const [i, model] of modelsOf(all).entries()) {
    const color = PALETTE[i % PALETTE.length];
    for (const { c, s } of selections) {
      const band = curveBand(s.runs, model, metric, scale);
      if (band.x.length === 0) continue;
      series.push({ name: `${model} ${c}`, x: band.x, y: band.y, color, dashed: c === "independent" });
      bands.push({ name: `${model} ${c}`, x: band.x, low: band.low, high: band.high, color, opacity: 0.12 });
    }
  }
  return lineChart({
    title: `${task}${
      group === "pretrained" ? " (pretrained start)" : ""
    }: validation ${metric}, mean and 95% band over seeds`,
    xLabel: "step",
    yLabel: `validation ${metric}${scale === 100 ? " (points)" : ""}`,
    series,
    bands,
  });
}

/** The ablation bars of one task: per variant, each model's difference from full joint with its interval. */
export function ablationChart(runs: readonly ExperimentRun[], task: string): string | null {
  const rows = ablationRows(runs).filter((r) => r.task === task);
  if (rows.length === 0) return null;
  const variants = [...new Set(rows.map((r) => r.condition))];
  const models = [...new Set(rows.map((r) => r.model))].filter((m) => m !== "–");
  const pick = (m: string, v: string) =>
    rows.find((r) => r.model === m && r.condition === v)?.difference ?? null;
  return barChart({
    title: `${task}: each variant minus full joint (test ${rows[0].metric}), 95% intervals`,
    yLabel: "difference (points)",
    groups: variants,
    series: models.map((m, i) => ({
      name: m,
      color: PALETTE[i % PALETTE.length],
      values: variants.map((v) => pick(m, v)?.mean ?? NaN),
      low: variants.map((v) => pick(m, v)?.ci?.low ?? NaN),
      high: variants.map((v) => pick(m, v)?.ci?.high ?? NaN),
    })),
  });
}

/** A task name made safe for a file name: "sentiment" stays, "SST-2 (small)" becomes "sst-2-small". */
export const slug = (text: string): string =>
  text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "task";

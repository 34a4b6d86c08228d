/**
 * The input of `RESULTS.md`: the run line of `results/runs.jsonl` ({@linkcode ExperimentRun}),
 * parsing it, and choosing which runs a comparison uses: the learning-rate grid with each condition's
 * chosen rate, and the runs of a group, task and condition at one rate.
 *
 * @module
 */
import { parseJsonLine } from "../train/json_lines.ts";
import { type Estimate, mean, tInterval } from "./stats.ts";

/** One finished run of the experiment: one line of `docs/results/runs.jsonl`. */
export interface ExperimentRun {
  /** Unique, e.g. "main/sentiment/joint/lr=1e-3/seed=2"; a later line with the same key replaces it. */
  key: string;
  /** The part of the protocol the run belongs to. */
  group: "grid" | "main" | "ablation" | "placebo" | "pretrained" | "compute";
  /** The task: sentiment, ner, qa, ... */
  task: string;
  /** "independent", "joint", "joint-no-sharing", ..., "placebo"; compute: "sequential", "parallel", "joint". */
  condition: string;
  /** Learning rate. */
  lr: number;
  /** Seed; runs of two conditions with the same seed are paired (compute runs: the repeat, all on one seed). */
  seed: number;
  /** The metric in words, e.g. "span F1". */
  metricName: string;
  /** The key of the metrics the comparisons use, e.g. "f1". */
  primaryMetric: string;
  /** Whether a larger metric is better. */
  higherIsBetter: boolean;
  /** The models trained, e.g. ["bert", "gpt2", "roberta"]. */
  models: string[];
  /** Final scores per model. */
  final: Record<string, { validation: Record<string, number>; test: Record<string, number> }>;
  /** Validation evaluations over training. */
  curve: { step: number; model: string; metrics: Record<string, number> }[];
  /** Optimizer steps per epoch. */
  stepsPerEpoch: number;
  /** Optimizer steps of the whole run. */
  totalSteps: number;
  /** Wall time of the run in seconds. */
  seconds: number;
  /** Per-step timing in milliseconds (compute group). */
  timing?: { forwardBackwardMs: number; optimizerMs: number; stepMs: number; gpuMs?: number };
  /** The exact command that ran it. */
  command: string;
  /** The GPU adapter, in words. */
  adapter: string;
  /** When it ran (ISO 8601). */
  date: string;
  /** The commit of the checkout that ran it (absent outside a git checkout and in runs recorded before 2026-12-01). */
  commit?: string;
}

/** The tasks Table 1 must show, in order; others found in the runs follow. */
export const MAIN_TASKS: readonly string[] = ["sentiment", "ner", "qa"];
/**
 * Run lines parsed from `runs.jsonl` text, with the string "NaN" read as NaN. Blank lines are skipped; a line that is not JSON (an
 * interrupted write) or lacks a required field is skipped and named in `problems`; a later line
 * with the same key replaces an earlier one.
 */
export function parseRuns(text: string): { runs: ExperimentRun[]; problems: string[] } {
  const byKey = new Map<string, ExperimentRun>();
  const problems: string[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let value: unknown;
    try {
      value = parseJsonLine(line);
    } catch {
      problems.push(`line ${i + 1}: not JSON (an interrupted write?)`);
      return;
    }
    const missing = missingFields(value);
    if (missing.length) {
      problems.push(`line ${i + 1}: missing or wrong ${missing.join(", ")}`);
      return;
    }
    const run = value as ExperimentRun;
    byKey.delete(run.key);
    byKey.set(run.key, { ...run, curve: run.curve ?? [] });
  });
  return { runs: [...byKey.values()], problems };
}

function missingFields(value: unknown): string[] {
  if (value === null || typeof value !== "object") return ["the whole object"];
  const v = value as Record<string, unknown>;
  const expect: [string, string][] = [
    ["key", "string"],
    ["group", "string"],
    ["task", "string"],
    ["condition", "string"],
    ["primaryMetric", "string"],
    ["lr", "number"],
    ["seed", "number"],
    ["final", "object"],
  ];
  const missing = expect.filter(([k, t]) => typeof v[k] !== t || v[k] === null).map(([k]) => k);
  if (!Array.isArray(v.models)) missing.push("models");
  return missing;
}

/** The models of some runs in order of first appearance. */
export function modelsOf(runs: readonly ExperimentRun[]): string[] {
  return [...new Set(runs.flatMap((r) => r.models))];
}

/** The tasks of some runs: those of `first` that appear, then the others in order of appearance. */
export function tasksOf(runs: readonly ExperimentRun[], first: readonly string[] = []): string[] {
  const seen = new Set(runs.map((r) => r.task));
  return [...first.filter((t) => seen.has(t)), ...[...seen].filter((t) => !first.includes(t))];
}

/** A final score, or undefined when missing or not finite. */
export function finalScore(
  run: ExperimentRun,
  model: string,
  split: "validation" | "test",
  metric = run.primaryMetric,
): number | undefined {
  const v = run.final[model]?.[split]?.[metric];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/**
 * Multiplier to points: 100 for a metric stored as a fraction (every value within [0, 1]), 1 for
 * one already in points (QA's "exact match / F1", any value above 1) or where lower is better.
 */
export function pointsScale(runs: readonly ExperimentRun[], metric: string): number {
  if (runs.some((r) => !r.higherIsBetter || /exact match|perplexity/i.test(r.metricName))) return 1;
  for (const r of runs) {
    for (const m of Object.values(r.final)) {
      for (const v of [m.validation?.[metric], m.test?.[metric]]) {
        if (typeof v === "number" && v > 1) return 1;
      }
    }
  }
  return 100;
}

/**
 * The run's selection score: mean over its models of the final validation primary metric; NaN when a
 * model has none (a run with a diverged model never wins the grid). The runner and the report both
 * choose by it.
 */
export function validationScore(run: ExperimentRun): number {
  return mean(run.models.map((m) => finalScore(run, m, "validation") ?? NaN));
}

/** The better of two mean scores under the runs' direction. */
function better(a: number, b: number, higherIsBetter: boolean): boolean {
  if (!Number.isFinite(b)) return Number.isFinite(a);
  return higherIsBetter ? a > b : a < b;
}

/** One learning rate of one condition in the grid. */
export interface GridRow {
  /** The task. */
  task: string;
  /** The condition. */
  condition: string;
  /** The learning rate. */
  lr: number;
  /** The seeds that ran, ascending. */
  seeds: number[];
  /** Mean over models of the final validation metric, in points, over seeds. */
  validation: Estimate;
  /** Per model: mean final validation metric over seeds, in points. */
  perModel: Record<string, number>;
  /** Whether this is the condition's chosen learning rate (best mean validation). */
  chosen: boolean;
}

/** The learning-rate grid: one row per task, condition and learning rate, the chosen one marked. */
export function gridRows(runs: readonly ExperimentRun[]): GridRow[] {
  const grid = runs.filter((r) => r.group === "grid");
  const rows: GridRow[] = [];
  for (const task of tasksOf(grid, MAIN_TASKS)) {
    const ofTask = grid.filter((r) => r.task === task);
    const scale = pointsScale(ofTask, ofTask[0].primaryMetric);
    for (const condition of [...new Set(ofTask.map((r) => r.condition))]) {
      const ofCondition = ofTask.filter((r) => r.condition === condition);
      const lrs = [...new Set(ofCondition.map((r) => r.lr))].sort((a, b) => a - b);
      const block = lrs.map((lr): GridRow => {
        const at = ofCondition.filter((r) => r.lr === lr);
        const scores = at.map(validationScore).filter(Number.isFinite).map((v) => v * scale);
        const perModel = Object.fromEntries(
          modelsOf(at).map((m) => [
            m,
            mean(at.map((r) => finalScore(r, m, "validation")).filter((v) => v !== undefined)) * scale,
          ]),
        );
        const seeds = [...new Set(at.map((r) => r.seed))].sort((a, b) => a - b);
        return { task, condition, lr, seeds, validation: tInterval(scores), perModel, chosen: false };
      });
      const higher = ofCondition[0].higherIsBetter;
      const best = block.reduce<GridRow | null>(
        (a, row) => (a === null || better(row.validation.mean, a.validation.mean, higher) ? row : a),
        null,
      );
      if (best && Number.isFinite(best.validation.mean)) best.chosen = true;
      rows.push(...block);
    }
  }
  return rows;
}

/** The runs of one group, task and condition at one learning rate. */
export interface Selection {
  /** The runs, in seed order. */
  runs: ExperimentRun[];
  /** Their learning rate; undefined when there are none. */
  lr?: number;
}

/**
 * The runs of a group, task and condition at one learning rate: the only rate run; else the grid's
 * choice for the condition, or for "joint", when it ran; else the rate with the best mean validation.
 */
export function selectRuns(
  runs: readonly ExperimentRun[],
  group: ExperimentRun["group"],
  task: string,
  condition: string,
): Selection {
  const pool = runs.filter((r) => r.group === group && r.task === task && r.condition === condition);
  const lrs = [...new Set(pool.map((r) => r.lr))];
  // Several runs may share a seed when each reports other models (the placebo runs one per model).
  const at = (lr: number): Selection => ({
    runs: pool.filter((r) => r.lr === lr).sort((a, b) => a.seed - b.seed),
    lr,
  });
  if (lrs.length === 0) return { runs: [] };
  if (lrs.length === 1) return at(lrs[0]);
  const grid = gridRows(runs.filter((r) => r.task === task));
  for (const c of [condition, "joint"]) {
    const chosen = grid.find((g) => g.condition === c && g.chosen);
    if (chosen && lrs.includes(chosen.lr)) return at(chosen.lr);
  }
  const higher = pool[0].higherIsBetter;
  let best = lrs[0];
  let bestScore = NaN;
  for (const lr of lrs) {
    const score = mean(pool.filter((r) => r.lr === lr).map(validationScore).filter(Number.isFinite));
    if (better(score, bestScore, higher)) [best, bestScore] = [lr, score];
  }
  return at(best);
}

/** The runs of `group`, or when it has none for this condition, the main group's. */
export function referenceRuns(
  runs: readonly ExperimentRun[],
  group: ExperimentRun["group"],
  task: string,
  condition: string,
): Selection {
  const own = selectRuns(runs, group, task, condition);
  return own.runs.length || group === "main" ? own : selectRuns(runs, "main", task, condition);
}

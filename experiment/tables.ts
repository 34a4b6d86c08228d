/**
 * The tables of `docs/RESULTS.md` as data, computed from the raw run lines: accuracy (independent vs
 * joint, paired by seed), steps to a validation target with censoring, compute per step, ablations,
 * the placebo and the pretrained start. Pure functions of the runs, so `deno task experiment
 * --report` can rebuild everything without training.
 *
 * Accuracy-like metrics stored as fractions (accuracy, span F1) are shown in points (x100); QA's
 * exact match and F1 already are in points. A missing group, condition or model gives a row marked
 * "not run" (null values), never an error.
 *
 * @module
 */
import {
  type Estimate,
  type Interval,
  mean,
  pairedDifference,
  type PairedEstimate,
  ratioInterval,
  stepsToTarget,
  tInterval,
} from "./stats.ts";
import {
  type ExperimentRun,
  finalScore,
  MAIN_TASKS,
  modelsOf,
  pointsScale,
  referenceRuns,
  type Selection,
  selectRuns,
  tasksOf,
} from "./runs.ts";

/** The ablation variants the protocol asks for, in order. */
const ABLATIONS: readonly string[] = [
  "joint-no-sharing",
  "joint-no-sync",
  "joint-no-adaptive",
  "joint-no-weights",
  "joint-no-align",
  "joint+distill",
  "distill-only",
];
/** The compute conditions, in order; Table 3 divides by the last. */
const COMPUTE_CONDITIONS: readonly string[] = ["sequential", "parallel", "joint"];
/** Metrics shown besides the primary one when the runs have them (QA's exact match). */
const SECONDARY_METRICS = ["exactMatch"];
/** Steps-to-target: the target is this fraction of the independent model's mean final validation score. */
export const TARGET_FRACTION = 0.9;

/** Seed to test score in points for one model and metric. */
function testScores(selection: Selection, model: string, metric: string, scale: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const r of selection.runs) {
    const v = finalScore(r, model, "test", metric);
    if (v !== undefined) out.set(r.seed, v * scale);
  }
  return out;
}

/** A sample's estimate, or null when the condition did not run for it. */
function estimateOf(values: Map<number, number>): Estimate | null {
  return values.size ? tInterval([...values.values()]) : null;
}

/** `treatment - control` paired by seed, or null when no seed ran on both sides. */
function pairedOf(
  treatment: Map<number, number>,
  control: Map<number, number>,
  level = 0.95,
): PairedEstimate | null {
  const d = pairedDifference(treatment, control, level);
  return d.n ? d : null;
}

/** One row of an accuracy comparison (Table 1 and the pretrained start). */
export interface ComparisonRow {
  /** The task. */
  task: string;
  /** The model; "–" for a task that did not run. */
  model: string;
  /** The metric key. */
  metric: string;
  /** Whether it is the task's primary metric (the one the claims judge). */
  primary: boolean;
  /** Whether a larger metric is better. */
  higherIsBetter: boolean;
  /** Test score in points, independent; null: not run. */
  independent: Estimate | null;
  /** Test score in points, joint; null: not run. */
  joint: Estimate | null;
  /** Joint minus independent, paired by seed, in points; null without a common seed. */
  difference: PairedEstimate | null;
  /** The learning rates used. */
  lr: { independent?: number; joint?: number };
}

/**
 * Test scores, independent vs joint, per task, model and headline metric, for a group; `level` is
 * the coverage of the differences' intervals (the scores' are 95%).
 */
export function comparisonRows(
  runs: readonly ExperimentRun[],
  group: "main" | "pretrained",
  tasks: readonly string[] = MAIN_TASKS,
  level = 0.95,
): ComparisonRow[] {
  const ofGroup = runs.filter((r) => r.group === group);
  const rows: ComparisonRow[] = [];
  for (const task of [...tasks, ...tasksOf(ofGroup).filter((t) => !tasks.includes(t))]) {
    const independent = selectRuns(runs, group, task, "independent");
    const joint = selectRuns(runs, group, task, "joint");
    const both = [...independent.runs, ...joint.runs];
    if (both.length === 0) {
      rows.push({
        task,
        model: "–",
        metric: "–",
        primary: true,
        higherIsBetter: true,
        independent: null,
        joint: null,
        difference: null,
        lr: {},
      });
      continue;
    }
    const primary = both[0].primaryMetric;
    const secondary = SECONDARY_METRICS.filter((m) =>
      m !== primary && both.some((r) => Object.values(r.final).some((f) => m in (f.test ?? {})))
    );
    for (const model of modelsOf(both)) {
      for (const metric of [primary, ...secondary]) {
        const scale = pointsScale(both, metric);
        const a = testScores(independent, model, metric, scale);
        const b = testScores(joint, model, metric, scale);
        rows.push({
          task,
          model,
          metric,
          primary: metric === primary,
          higherIsBetter: both[0].higherIsBetter,
          independent: estimateOf(a),
          joint: estimateOf(b),
          difference: pairedOf(b, a, level),
          lr: { independent: independent.lr, joint: joint.lr },
        });
      }
    }
  }
  return rows;
}

/** Steps to the target of one condition's runs for one model. */
export interface StepsCell {
  /** Runs (seeds). */
  n: number;
  /** Runs that never reached the target. */
  censored: number;
  /** Seed to steps; a censored run counts at its length, a lower bound on what it would need. */
  steps: Map<number, number>;
  /**
   * Seed to the fewest steps the run could have needed: the evaluation before the one that reached the
   * target, since the target was crossed somewhere after it (a censored run: its length, as in `steps`).
   */
  earliest: Map<number, number>;
  /** Mean steps over seeds (censored runs at their length). */
  mean: number;
  /** Median steps over seeds (censored runs at their length). */
  median: number;
  /** Whether the median is only a lower bound: a censored run sits at or below it. */
  medianIsBound: boolean;
}

/** One row of Table 2. */
export interface StepsRow {
  /** The task. */
  task: string;
  /** The model; "–" for a task that did not run. */
  model: string;
  /** The metric key. */
  metric: string;
  /** The target in points; null when the independent model has no final score. */
  target: number | null;
  /** Independent; null: not run. */
  independent: StepsCell | null;
  /** Joint; null: not run. */
  joint: StepsCell | null;
  /** Percent fewer steps with joint over paired seeds; null without a common seed. */
  reduction: Reduction | null;
}

/** Percent fewer steps with joint, `100 (1 - mean joint / mean independent)`, and its interval. */
export interface Reduction {
  /** At the evaluations that reached the target. */
  estimate: number;
  /**
   * Where the reduction can lie, the evaluation grid's uncertainty included: the union of the paired
   * Fieller intervals over every assignment of each run to its crossing or the evaluation before (see
   * `assignments`); an end is unbounded (-Infinity, or at most 100%, the most a reduction can be) where
   * some assignment's interval is (a mean step count not clearly above zero). Null below two pairs.
   */
  ci: Interval | null;
  /** Paired seeds. */
  n: number;
  /** The smallest estimate over the assignments. */
  lowestEstimate: number;
  /** Whether every assignment has a bounded interval (a verdict needs them all). */
  bounded: boolean;
  /**
   * Assignments the interval is the union over: every one up to 4^10 (ten paired seeds whose runs all
   * reach the target); beyond, the two extremes, every joint run at the evaluation before and every independent run at its crossing,
   * and the reverse.
   */
  assignments: number;
}

function stepsCell(selection: Selection, model: string, metric: string, target: number): StepsCell | null {
  const steps = new Map<number, number>();
  const earliest = new Map<number, number>();
  const censoredSteps: number[] = [];
  let censored = 0;
  for (const run of selection.runs) {
    const points = run.curve
      .filter((p) => p.model === model && Number.isFinite(p.metrics[metric]))
      .map((p) => ({ step: p.step, value: p.metrics[metric] }));
    if (points.length === 0) continue;
    const hit = stepsToTarget(points, target, run.higherIsBetter);
    if (!hit.reached) censored++;
    const recorded = hit.reached
      ? hit.step
      : Number.isFinite(run.totalSteps)
      ? Math.max(run.totalSteps, hit.lastStep)
      : hit.lastStep;
    steps.set(run.seed, recorded);
    if (!hit.reached) censoredSteps.push(recorded);
    earliest.set(run.seed, hit.reached ? hit.previous : recorded);
  }
  if (steps.size === 0) return null;
  const sorted = [...steps.values()].sort((a, b) => a - b);
  const middle = (sorted.length - 1) / 2;
  const median = (sorted[Math.floor(middle)] + sorted[Math.ceil(middle)]) / 2;
  return {
    n: steps.size,
    censored,
    steps,
    earliest,
    mean: mean(sorted),
    median,
    medianIsBound: censoredSteps.some((v) => v <= median),
  };
}

/**
 * Table 2: steps until each model first reaches `TARGET_FRACTION` of the independent model's mean
 * final validation score (divided by it where lower is better), independent vs joint, main group;
 * `level` is the coverage of the reductions' intervals.
 */
export function stepsRows(
  runs: readonly ExperimentRun[],
  tasks: readonly string[] = MAIN_TASKS,
  level = 0.95,
): StepsRow[] {
  const main = runs.filter((r) => r.group === "main");
  const rows: StepsRow[] = [];
  for (const task of [...tasks, ...tasksOf(main).filter((t) => !tasks.includes(t))]) {
    const independent = selectRuns(runs, "main", task, "independent");
    const joint = selectRuns(runs, "main", task, "joint");
    const both = [...independent.runs, ...joint.runs];
    if (both.length === 0) {
      rows.push({
        task,
        model: "–",
        metric: "–",
        target: null,
        independent: null,
        joint: null,
        reduction: null,
      });
      continue;
    }
    const metric = both[0].primaryMetric;
    const higher = both[0].higherIsBetter;
    const scale = pointsScale(both, metric);
    for (const model of modelsOf(both)) {
      const finals = independent.runs.map((r) => finalScore(r, model, "validation")).filter((v) =>
        v !== undefined
      );
      if (finals.length === 0) {
        rows.push({ task, model, metric, target: null, independent: null, joint: null, reduction: null });
        continue;
      }
      const target = higher ? TARGET_FRACTION * mean(finals) : mean(finals) / TARGET_FRACTION;
      const a = stepsCell(independent, model, metric, target);
      const b = stepsCell(joint, model, metric, target);
      rows.push({
        task,
        model,
        metric,
        target: target * scale,
        independent: a,
        joint: b,
        reduction: reductionOf(a, b, level),
      });
    }
  }
  return rows;
}

/**
 * Assignments of runs to their crossing or the evaluation before that {@linkcode reductionOf} walks
 * through one by one: 4^10, every assignment of ten paired seeds (the largest scale's) whose runs all
 * reach the target (a censored run has one possible step).
 */
const MAX_ASSIGNMENTS = 4 ** 10;

function reductionOf(
  independent: StepsCell | null,
  joint: StepsCell | null,
  level: number,
): StepsRow["reduction"] {
  if (!independent || !joint) return null;
  const seeds = [...joint.steps.keys()].filter((s) => independent.steps.has(s));
  if (seeds.length === 0) return null;
  const of = (steps: Map<number, number>) => seeds.map((s) => steps.get(s)!);
  const estimateOf = (jointSteps: number[], independentSteps: number[]) =>
    100 * (1 - mean(jointSteps) / mean(independentSteps));
  const estimate = estimateOf(of(joint.steps), of(independent.steps));
  if (seeds.length < 2) {
    return { estimate, ci: null, n: seeds.length, lowestEstimate: estimate, bounded: false, assignments: 1 };
  }
  // Each run's possible steps: its crossing and the evaluation before (one value when they agree).
  const choices = [joint, independent].map((cell) =>
    seeds.map((s) => [...new Set([cell.earliest.get(s)!, cell.steps.get(s)!])])
  );
  const all = [...choices[0], ...choices[1]];
  const total = all.reduce((n, values) => n * values.length, 1);
  const exhaustive = total <= MAX_ASSIGNMENTS;
  // Beyond the cap, the two extreme assignments: every joint run early and every independent late, and the reverse.
  const extremes = [[of(joint.earliest), of(independent.steps)], [of(joint.steps), of(independent.earliest)]];
  const jointSteps = new Array<number>(seeds.length);
  const independentSteps = new Array<number>(seeds.length);
  let low = Infinity, high = -Infinity, lowestEstimate = Infinity, bounded = true;
  const assignments = exhaustive ? total : extremes.length;
  for (let index = 0; index < assignments; index++) {
    if (exhaustive) {
      // Assignment `index` in mixed radix: digit k picks run k's step.
      let rest = index;
      all.forEach((values, k) => {
        const value = values[rest % values.length];
        rest = Math.floor(rest / values.length);
        if (k < seeds.length) jointSteps[k] = value;
        else independentSteps[k - seeds.length] = value;
      });
    } else {
      extremes[index][0].forEach((v, k) => jointSteps[k] = v);
      extremes[index][1].forEach((v, k) => independentSteps[k] = v);
    }
    lowestEstimate = Math.min(lowestEstimate, estimateOf(jointSteps, independentSteps));
    // Reduction = 100 (1 - ratio), so the ratio's interval turns over.
    const ratio = ratioInterval(jointSteps, independentSteps, { paired: true, level });
    if (!ratio) bounded = false;
    low = Math.min(low, ratio ? 100 * (1 - ratio.high) : -Infinity);
    high = Math.max(high, ratio ? 100 * (1 - ratio.low) : 100);
  }
  return {
    estimate,
    ci: { low, high: Math.min(100, high) },
    n: seeds.length,
    lowestEstimate,
    bounded,
    assignments,
  };
}

/** A ratio of means with its interval. */
export interface Ratio {
  /** Mean of the numerator over mean of the denominator. */
  estimate: number;
  /** Fieller's interval (paired by seed when both sides have the same seeds). */
  ci: Interval | null;
}

/** One row of Table 3: one compute condition of one task. */
export interface ComputeRow {
  /** The task. */
  task: string;
  /** "sequential", "parallel" or "joint". */
  condition: string;
  /** Runs; 0: not run. */
  n: number;
  /** Milliseconds per step (all models), and its parts timed alone. */
  stepMs: Estimate | null;
  /** Forward and backward, ms per step. */
  forwardBackwardMs: Estimate | null;
  /** The optimizers' updates alone, ms per step. */
  optimizerMs: Estimate | null;
  /** GPU time per step when the adapter reports it. */
  gpuMs: Estimate | null;
  /** Wall time of the run in seconds. */
  seconds: Estimate | null;
  /** Step time relative to joint (= 1.0). */
  relative: Ratio | null;
  /** GPU time relative to joint. */
  relativeGpu: Ratio | null;
  /** The adapters the runs used. */
  adapters: string[];
}

function ratioOf(
  numerator: Map<number, number>,
  denominator: Map<number, number>,
  level: number,
): Ratio | null {
  if (numerator.size === 0 || denominator.size === 0) return null;
  const paired = numerator.size === denominator.size &&
    [...numerator.keys()].every((s) => denominator.has(s));
  const a = [...numerator.keys()].map((s) => numerator.get(s)!);
  const b = paired ? [...numerator.keys()].map((s) => denominator.get(s)!) : [...denominator.values()];
  return { estimate: mean(a) / mean(b), ci: ratioInterval(a, b, { paired, level }) };
}

/**
 * Table 3: per task, the compute conditions' time per step, normalised to joint = 1.0; `level` is the
 * coverage of the ratios' intervals.
 */
export function computeRows(runs: readonly ExperimentRun[], level = 0.95): ComputeRow[] {
  const compute = runs.filter((r) => r.group === "compute");
  const rows: ComputeRow[] = [];
  const tasks = tasksOf(compute, MAIN_TASKS);
  for (const task of tasks.length ? tasks : ["–"]) {
    const ofTask = compute.filter((r) => r.task === task);
    const conditions = [...COMPUTE_CONDITIONS, ...new Set(ofTask.map((r) => r.condition))]
      .filter((c, i, all) => all.indexOf(c) === i);
    const timing = (
      condition: string,
      pick: (t: NonNullable<ExperimentRun["timing"]>) => number | undefined,
    ) => {
      const out = new Map<number, number>();
      for (const r of selectRuns(runs, "compute", task, condition).runs) {
        const v = r.timing ? pick(r.timing) : undefined;
        if (typeof v === "number" && Number.isFinite(v)) out.set(r.seed, v);
      }
      return out;
    };
    const jointStep = timing("joint", (t) => t.stepMs);
    const jointGpu = timing("joint", (t) => t.gpuMs);
    for (const condition of conditions) {
      const selected = selectRuns(runs, "compute", task, condition).runs;
      const step = timing(condition, (t) => t.stepMs);
      const gpu = timing(condition, (t) => t.gpuMs);
      rows.push({
        task,
        condition,
        n: selected.length,
        stepMs: estimateOf(step),
        forwardBackwardMs: estimateOf(timing(condition, (t) => t.forwardBackwardMs)),
        optimizerMs: estimateOf(timing(condition, (t) => t.optimizerMs)),
        gpuMs: estimateOf(gpu),
        seconds: estimateOf(
          new Map(selected.filter((r) => Number.isFinite(r.seconds)).map((r) => [r.seed, r.seconds])),
        ),
        relative: ratioOf(step, jointStep, level),
        relativeGpu: ratioOf(gpu, jointGpu, level),
        adapters: [...new Set(selected.map((r) => r.adapter))],
      });
    }
  }
  return rows;
}

/** One row of the ablations: one variant, task and model against the full joint condition. */
export interface AblationRow {
  /** The task. */
  task: string;
  /** The variant, e.g. "joint-no-sync"; "independent" is shown for scale. */
  condition: string;
  /** The model; "–" when the variant did not run. */
  model: string;
  /** The primary metric. */
  metric: string;
  /** Test score in points; null: not run. */
  score: Estimate | null;
  /** Variant minus full joint, paired by seed, in points; null without a common seed. */
  difference: PairedEstimate | null;
}

/** The ablations: each variant minus full joint, per task and model, primary metric on test. */
export function ablationRows(runs: readonly ExperimentRun[]): AblationRow[] {
  const ablation = runs.filter((r) => r.group === "ablation");
  const rows: AblationRow[] = [];
  for (const task of tasksOf(ablation, MAIN_TASKS)) {
    const ofTask = ablation.filter((r) => r.task === task);
    const joint = referenceRuns(runs, "ablation", task, "joint");
    const variants = [...ABLATIONS, ...new Set(ofTask.map((r) => r.condition))]
      .filter((c, i, all) => all.indexOf(c) === i && c !== "joint" && c !== "independent");
    const metric = ofTask[0].primaryMetric;
    const scale = pointsScale(ofTask, metric);
    const models = modelsOf([...ofTask, ...joint.runs]);
    for (const condition of [...variants, "independent"]) {
      const selection = condition === "independent"
        ? referenceRuns(runs, "ablation", task, condition)
        : selectRuns(runs, "ablation", task, condition);
      if (selection.runs.length === 0) {
        rows.push({ task, condition, model: "–", metric, score: null, difference: null });
        continue;
      }
      for (const model of models) {
        const scores = testScores(selection, model, metric, scale);
        rows.push({
          task,
          condition,
          model,
          metric,
          score: estimateOf(scores),
          difference: pairedOf(scores, testScores(joint, model, metric, scale)),
        });
      }
    }
  }
  return rows;
}

/** One row of the placebo control. */
export interface PlaceboRow {
  /** The task. */
  task: string;
  /** The model. */
  model: string;
  /** The primary metric. */
  metric: string;
  /** Test scores in points; null: not run. */
  independent: Estimate | null;
  /** Joint. */
  joint: Estimate | null;
  /** Sharing with a partner trained on shuffled labels. */
  placebo: Estimate | null;
  /** Joint minus placebo, paired: the part of the gain that is transfer. */
  jointMinusPlacebo: PairedEstimate | null;
  /** Placebo minus independent, paired: the part a regulariser alone gives. */
  placeboMinusIndependent: PairedEstimate | null;
  /** Joint minus independent, paired, from the same runs. */
  jointMinusIndependent: PairedEstimate | null;
}

/** The placebo control per task and model (joint and independent from the placebo group, else main). */
export function placeboRows(runs: readonly ExperimentRun[]): PlaceboRow[] {
  const placebo = runs.filter((r) => r.group === "placebo");
  const rows: PlaceboRow[] = [];
  for (const task of tasksOf(placebo, MAIN_TASKS)) {
    const sharing = selectRuns(runs, "placebo", task, "placebo");
    const joint = referenceRuns(runs, "placebo", task, "joint");
    const independent = referenceRuns(runs, "placebo", task, "independent");
    const all = [...sharing.runs, ...joint.runs, ...independent.runs];
    if (sharing.runs.length === 0) continue;
    const metric = all[0].primaryMetric;
    const scale = pointsScale(all, metric);
    for (const model of modelsOf(sharing.runs)) {
      const [p, j, i] = [sharing, joint, independent].map((s) => testScores(s, model, metric, scale));
      rows.push({
        task,
        model,
        metric,
        independent: estimateOf(i),
        joint: estimateOf(j),
        placebo: estimateOf(p),
        jointMinusPlacebo: pairedOf(j, p),
        placeboMinusIndependent: pairedOf(p, i),
        jointMinusIndependent: pairedOf(j, i),
      });
    }
  }
  return rows;
}

/**
 * The seed's three claims, judged: the effect behind each claim per task and model (or compute
 * condition) with its interval and verdict under {@linkcode judgeClaim}, and the "Conclusions"
 * section of `docs/RESULTS.md` that states them in plain words.
 *
 * @module
 */
import { type Interval, judgeClaim, type Verdict } from "./stats.ts";
import type { ExperimentRun } from "./runs.ts";
import { comparisonRows, computeRows, stepsRows, TARGET_FRACTION } from "./tables.ts";
import { fixed, intervalText, md, nText, signed, table } from "./markdown.ts";

/** The seed's claims as tested: the claimed minimum of each effect and the value of no effect. */
const CLAIMS = {
  /** Accuracy: +1.2 to +2.1 points, joint minus independent. */
  accuracy: { none: 0, minimum: 1.2, maximum: 2.1 },
  /** Steps to the target: 27-36% fewer with joint. */
  steps: { none: 0, minimum: 27, maximum: 36 },
  /** Compute per step relative to joint: sequential 3.0. */
  sequential: { none: 1, minimum: 3.0, maximum: 3.0 },
  /** Compute per step relative to joint: parallel 1.2. */
  parallel: { none: 1, minimum: 1.2, maximum: 1.2 },
} as const;

/** The verdict on one claim for one task and model (or compute condition). */
export interface ClaimRow {
  /** Which claim: accuracy, steps or compute. */
  claim: "accuracy" | "steps" | "compute";
  /** Accuracy and steps: "main" or "pretrained"; compute: the condition. */
  scope: string;
  /** The task. */
  task: string;
  /** The model or compute condition. */
  subject: string;
  /** The effect, oriented so that larger supports the claim (points, % fewer steps, cost ratio). */
  estimate: number;
  /** Its interval, at the claim's family-wise `level` (for steps: allowing for the evaluation grid). */
  ci: Interval | null;
  /** The interval's coverage: 95% over the claim's cells together (Bonferroni), 1 - 0.05 / cells. */
  level: number;
  /** Seeds (pairs) behind it. */
  n: number;
  /** The verdict under the rule of {@linkcode judgeClaim}. */
  verdict: Verdict;
  /** Why a verdict was held back, if it was. */
  note?: string;
}

/** The coverage of each cell's interval so that a claim's `cells` intervals hold together at 95%. */
function familyLevel(cells: number): number {
  return 1 - 0.05 / Math.max(1, cells);
}

/**
 * The verdict per claim: accuracy per task and model on the primary metric (main group and the
 * pretrained start), steps per task and model, compute per task for sequential and parallel. Each
 * claim is one family: any one of its cells could contradict it, so its cells' intervals are taken
 * at {@linkcode familyLevel} (95% together).
 *
 * Steps: a run reached the target somewhere between the evaluation before and the one that saw it,
 * so "confirmed" and "contradicted" must hold under every assignment of the runs to either (the
 * reduction's `ci` is the union of their intervals, `lowestEstimate` their smallest estimate). A run that never reached the
 * target counts at its length, a bound that favours the side it belongs to, so "confirmed" needs no
 * censored joint run and "contradicted" no censored independent run.
 */
export function claimRows(runs: readonly ExperimentRun[]): ClaimRow[] {
  const rows: ClaimRow[] = [];
  for (const scope of ["main", "pretrained"] as const) {
    const cells = comparisonRows(runs, scope).filter((row) => row.primary && row.difference).length;
    const level = familyLevel(cells);
    for (const row of comparisonRows(runs, scope, undefined, level)) {
      if (!row.primary || !row.difference) continue;
      const sign = row.higherIsBetter ? 1 : -1;
      const ci = row.difference.ci &&
        (sign > 0 ? row.difference.ci : { low: -row.difference.ci.high, high: -row.difference.ci.low });
      const estimate = sign * row.difference.mean;
      rows.push({
        claim: "accuracy",
        scope,
        task: row.task,
        subject: row.model,
        estimate,
        ci,
        level,
        n: row.difference.n,
        verdict: judgeClaim(estimate, ci, CLAIMS.accuracy),
      });
    }
  }
  const stepsLevel = familyLevel(stepsRows(runs).filter((row) => row.reduction).length);
  for (const row of stepsRows(runs, undefined, stepsLevel)) {
    const reduction = row.reduction;
    if (!reduction) continue;
    // Confirmed or contradicted under every assignment of the runs to their crossing or the evaluation before.
    const { ci, bounded, lowestEstimate } = reduction;
    let verdict: Verdict = "not confirmed";
    let note: string | undefined;
    if (bounded && ci && ci.low > CLAIMS.steps.none && lowestEstimate >= CLAIMS.steps.minimum) {
      verdict = "confirmed";
    } else if (bounded && ci && ci.high < CLAIMS.steps.minimum) {
      verdict = "contradicted";
    } else if (judgeClaim(reduction.estimate, reduction.ci, CLAIMS.steps) !== "not confirmed") {
      note = "within the evaluation grid's resolution";
    }
    if (verdict === "confirmed" && row.joint!.censored > 0) {
      [verdict, note] = ["not confirmed", `${row.joint!.censored} joint run(s) censored`];
    }
    if (verdict === "contradicted" && row.independent!.censored > 0) {
      [verdict, note] = ["not confirmed", `${row.independent!.censored} independent run(s) censored`];
    }
    rows.push({
      claim: "steps",
      scope: "main",
      task: row.task,
      subject: row.model,
      estimate: reduction.estimate,
      ci: reduction.ci,
      level: stepsLevel,
      n: reduction.n,
      verdict,
      note,
    });
  }
  // Less compute is one claim with two cells per task, sequential and parallel.
  const conditions = ["sequential", "parallel"] as const;
  const claimed = (row: { condition: string }) => (conditions as readonly string[]).includes(row.condition);
  const level = familyLevel(computeRows(runs).filter((row) => claimed(row) && row.relative).length);
  const compute = computeRows(runs, level);
  for (const condition of conditions) {
    for (const row of compute) {
      if (row.condition !== condition || !row.relative) continue;
      const joint = compute.find((r) => r.task === row.task && r.condition === "joint");
      rows.push({
        claim: "compute",
        scope: row.condition,
        task: row.task,
        subject: row.condition,
        estimate: row.relative.estimate,
        ci: row.relative.ci,
        level,
        n: Math.min(row.n, joint?.n ?? 0),
        verdict: judgeClaim(row.relative.estimate, row.relative.ci, CLAIMS[condition]),
      });
    }
  }
  return rows;
}

const CLAIM_TEXT = {
  accuracy: `Accuracy, joint vs independent: +${CLAIMS.accuracy.minimum} to +${CLAIMS.accuracy.maximum} ` +
    "points for each model on classification, NER and QA",
  steps:
    `Steps to ${
      TARGET_FRACTION * 100
    }% of the final score: ${CLAIMS.steps.minimum}-${CLAIMS.steps.maximum}% ` +
    "fewer with joint training",
  compute:
    `Normalised compute: independent sequential ${CLAIMS.sequential.minimum.toFixed(1)}, independent ` +
    `parallel ${CLAIMS.parallel.minimum.toFixed(1)}, joint 1.0`,
} as const;

/** How one claim is shown: its title, rows, units and the plain sentence when it does not hold. */
interface ClaimGroup {
  title: string;
  rows: ClaimRow[];
  /** Column header of the effect. */
  header: string;
  /** Unit after the range of effects in the summary. */
  unit: string;
  format: (v: number) => string;
  /** Said in plain words when no cell is confirmed. */
  failure: string;
}

/** The "Conclusions" section: per claim, a plain summary and the verdict of each task and model. */
export function claimSection(claims: readonly ClaimRow[]): string[] {
  const out = ["## Conclusions: the seed's claims", ""];
  const accuracy = (scope: string) => claims.filter((c) => c.claim === "accuracy" && c.scope === scope);
  const groups: ClaimGroup[] = [
    {
      title: CLAIM_TEXT.accuracy,
      rows: accuracy("main"),
      header: "joint - independent, points",
      unit: "points",
      format: signed,
      failure: "Joint training did not measurably improve accuracy.",
    },
    {
      title: `${CLAIM_TEXT.accuracy} - after the pretrained start`,
      rows: accuracy("pretrained"),
      header: "joint - independent, points",
      unit: "points",
      format: signed,
      failure: "From a pretrained start too, joint training did not measurably improve accuracy.",
    },
    {
      title: CLAIM_TEXT.steps,
      rows: claims.filter((c) => c.claim === "steps"),
      header: "% fewer steps with joint",
      unit: "fewer steps",
      format: (v) => `${signed(v, 1)}%`,
      failure: "Joint training did not measurably reach the target in fewer steps.",
    },
    {
      title: CLAIM_TEXT.compute,
      rows: claims.filter((c) => c.claim === "compute"),
      header: "step time relative to joint",
      unit: "joint's step time",
      format: (v) => `${fixed(v)}x`,
      failure: "Joint training is not shown to save compute by the claimed factors.",
    },
  ];
  for (const group of groups) {
    out.push(`### ${md(group.title)}`, "");
    if (group.rows.length === 0) {
      out.push("Not run: no runs with both conditions yet, so no verdict.", "");
      continue;
    }
    out.push(verdictSummary(group), "");
    out.push(
      ...table(
        [
          "task",
          group.rows[0].claim === "compute" ? "condition" : "model",
          `${group.header} [${levelText(group.rows)} CI]`,
          "n",
          "verdict",
        ],
        group.rows.map((c) => [
          md(c.task),
          md(c.subject),
          `${group.format(c.estimate)}${intervalText(c.ci, group.format)}`,
          nText(c.n),
          `**${c.verdict}**${c.note ? ` (${md(c.note)})` : ""}`,
        ]),
      ),
      "",
    );
  }
  return out;
}

/** The cells' coverage, "98.9%" (one family per claim), or the levels joined where a group's rows differ. */
function levelText(rows: readonly ClaimRow[]): string {
  const levels = [...new Set(rows.map((r) => `${+(100 * r.level).toFixed(2)}%`))];
  return levels.join(" / ");
}

/** A plain summary of a claim: the overall verdict, the tally of cells and the range of effects. */
function verdictSummary({ rows, unit, format, failure }: ClaimGroup): string {
  const count = (v: string) => rows.filter((r) => r.verdict === v).length;
  const [yes, no, against] = [count("confirmed"), count("not confirmed"), count("contradicted")];
  const effects = rows.map((r) => r.estimate).filter(Number.isFinite);
  const range = effects.length
    ? `effects from ${format(Math.min(...effects))} to ${format(Math.max(...effects))} ${unit}`
    : "no finite effect";
  const tally = `${yes} of ${rows.length} confirmed, ${against} contradicted, ${no} not confirmed; ${range}.`;
  if (yes === rows.length) return `**Confirmed** wherever it was measured: ${tally}`;
  if (yes === 0 && against === 0) return `**Not confirmed.** ${failure} ${tally}`;
  if (yes === 0) {
    return `**Not confirmed, and contradicted where the interval rules the claim out.** ${failure} ${tally}`;
  }
  return `**Mixed**: confirmed for some cells only: ${tally}`;
}

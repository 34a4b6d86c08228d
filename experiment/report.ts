/**
 * `docs/RESULTS.md` of `deno task experiment`: {@linkcode writeResults} turns the raw run lines into
 * the document (method, a verdict per claim, the grid and every table with where its numbers came
 * from) and its SVG plots in `results/` beside it: validation curves with a band over seeds per task,
 * and the ablations as bars with interval whiskers. Groups that have not run yet are shown as "not
 * run", so a partial experiment renders too.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultDocStride, TASK_MAX_LENGTH } from "../train/options.ts";
import { formatMetric } from "../train/report.ts";
import { ablationChart, curveChart, slug } from "./charts.ts";
import { claimRows, claimSection } from "./claims.ts";
import {
  code,
  differenceText,
  durationText,
  estimateText,
  fixed,
  intervalText,
  md,
  NOT_RUN,
  nText,
  provenance,
  table,
} from "./markdown.ts";
import { type ExperimentRun, gridRows, tasksOf } from "./runs.ts";
import { type Estimate, type Interval, tInterval } from "./stats.ts";
import {
  ablationRows,
  type ComparisonRow,
  comparisonRows,
  computeRows,
  placeboRows,
  type StepsCell,
  stepsRows,
  TARGET_FRACTION,
} from "./tables.ts";

/** What the document's header says about the experiment as a whole. */
export interface ResultsMeta {
  /** The command that ran the experiment. */
  command: string;
  /** The raw run lines, relative to the docs folder: "results/runs.jsonl" (cpu), "results/runs-<scale>.jsonl". */
  runsFile: string;
  /** The GPU adapter, in words. */
  adapter: string;
  /** When it ran (ISO 8601). */
  date: string;
  /** Time of the whole experiment: its runs' times summed. */
  durationSeconds: number;
}

/**
 * The page's facts from its run lines alone, as `deno task experiment --report` writes them: the first
 * run's adapter, the last run's date, and the runs' summed time as the duration.
 */
export function metaFromRuns(runs: readonly ExperimentRun[], command: string, runsFile: string): ResultsMeta {
  return {
    command,
    runsFile,
    adapter: runs[0].adapter,
    date: runs.at(-1)!.date.slice(0, 10),
    durationSeconds: runs.reduce((s, r) => s + r.seconds, 0),
  };
}

/** The files of the results: "RESULTS.md" and "results/<name>.svg", relative to the docs folder. */
export type ResultsFiles = Record<string, string>;

/** The Method section; `hasQa` adds how qa reads long contexts. */
function methodSection(hasQa: boolean): string[] {
  return [
    "## Method",
    "",
    "- **Seeds and pairing.** Every cell should have at least 5 seeds; a count below 5 is marked `(< 5)`. " +
    "Conditions are compared **paired by seed** (the same seed's data order and initialisation on both " +
    "sides): the difference is computed per seed, then averaged.",
    "- **Intervals.** Means and paired differences carry a **95% Student-t interval**, mean ± t(0.975, n-1) " +
    "· sd / √n, with the t quantile computed from the incomplete beta function (`experiment/stats.ts`). " +
    "Ratios (fewer steps in %, relative compute) carry **Fieller's interval** with the same t quantile " +
    "(paired by seed when both sides have the same seeds; the smaller side's n - 1 degrees of freedom " +
    "otherwise), which keeps its coverage at a handful of seeds where a percentile bootstrap does not. " +
    "One seed gives no interval.",
    "- **Units.** Accuracy and span F1 are shown in points (x100); QA's exact match and F1 already are. " +
    "Scores are on the **test** split, at the end of training.",
    "- **Evaluation data.** Validation and test scores use the protocol's `evalLimit` examples of each split " +
    "(300 in the cpu preset), spread evenly over the split: Brown's splits list their files by genre and " +
    "Moby-Dick's by chapter, so a split's first examples would stand for one genre only.",
    ...(hasQa
      ? [
        `- **QA inputs.** A context longer than a row (${TASK_MAX_LENGTH.qa} tokens) is read in overlapping ` +
        `windows that share ${
          defaultDocStride(TASK_MAX_LENGTH.qa)
        } tokens (Hugging Face's \`doc_stride\`), a ` +
        "row each: training uses every window, and each question is answered by its best span over its " +
        "windows, so every answer is within the models' reach.",
      ]
      : []),
    "- **Conditions.** Joint is the seed's whole system: gradient sharing, parameter sync, adaptive rates, " +
    "aligned initialisation and the seed's model weights (bert 1.0, gpt2 0.8, roberta 1.2), which scale " +
    "each model's rate by its weight over their mean; independent trains each model with plain AdamW at " +
    "one rate. A difference between them therefore also holds those per-model rates; the " +
    "`joint-no-weights` and `joint-no-adaptive` ablations take each away, and the placebo keeps them all " +
    "while the partners of the model scored learn from permuted labels.",
    "- **Learning rate.** Each condition's rate is the one with the best mean validation score (mean over " +
    "the models and seeds) in the grid below; the later groups run at the rates the protocol derives from " +
    "it, which each table shows. Where a condition ran at several rates outside the grid, a table uses the " +
    "grid's choice, else the rate with the best mean validation. The grid runs the first seed only, and " +
    "that seed's main run at the chosen rate is the same run (runs are deterministic): the rate is picked " +
    "partly on one of the seeds it is then scored on (on validation, while scores are on test), for both " +
    "conditions alike, so the paired differences largely cancel the selection.",
    `- **Steps to target.** The target is ${TARGET_FRACTION * 100}% of the independent model's mean final ` +
    "validation score on that task (divided by 0.9 where lower is better): a level most independent runs " +
    "reach before their end, so the count measures speed rather than final quality. A run is counted at the " +
    "first validation evaluation at or past the target; it crossed the target somewhere after the " +
    "evaluation before, so the reduction's interval is the union of the intervals over every assignment " +
    "of each run to its crossing or the evaluation before (up to 4^10 assignments, ten paired seeds of runs " +
    "that all reach the target; beyond, the two extremes only: every joint run before its crossing and " +
    "every independent run at its crossing, and the reverse). A run that never gets there is **censored** and counted at its length, a lower bound " +
    "on what it would need.",
    "- **Claim rule.** Each effect is oriented so that larger supports the claim (points gained, % fewer " +
    "steps, cost relative to joint). **Confirmed**: the whole interval lies above no effect (0, or 1 for a " +
    "ratio) and the estimate is at least the claimed minimum (1.2 points; 27% fewer steps; 3.0x and 1.2x). " +
    "**Contradicted**: the whole interval lies below the claimed minimum, which includes an interval " +
    "wholly on the wrong side of no effect. **Not confirmed**: anything else, and always without an " +
    "interval. Each claim is judged over all its cells at once (one contradicted cell is enough to " +
    "contradict it), so every cell's interval is taken at 1 - 0.05 / cells (Bonferroni): the intervals " +
    "of a claim hold together at 95%; less compute is one claim over sequential and parallel. Tables 1-3 " +
    "show plain 95% intervals. For steps, **confirmed** and **contradicted** must hold under every " +
    "assignment of the runs to their crossing or the evaluation before, as the evaluations are too far " +
    "apart to tell more; censoring " +
    "biases the count towards the censored side, so a verdict is held at not confirmed when it would " +
    "rest on censored runs of the side it favours.",
    "",
  ];
}

function gridSection(runs: readonly ExperimentRun[]): string[] {
  const rows = gridRows(runs);
  const out = ["## Learning-rate grid", ""];
  if (rows.length === 0) return [...out, "Not run: no grid runs yet.", ""];
  out.push(
    ...table(
      ["task", "condition", "lr", "seeds", "mean validation (points) [95% CI]", "per model", "chosen"],
      rows.map((g) => [
        md(g.task),
        md(g.condition),
        String(g.lr),
        g.seeds.join(", "),
        estimateText(g.validation),
        Object.entries(g.perModel).map(([m, v]) => `${md(m)} ${fixed(v)}`).join(", "),
        g.chosen ? "**yes**" : "",
      ]),
    ),
    "",
    provenance(runs.filter((r) => r.group === "grid")),
    "",
  );
  return out;
}

function comparisonTable(rows: readonly ComparisonRow[]): string[] {
  return table(
    [
      "task",
      "model",
      "metric",
      "lr (ind. / joint)",
      "independent [95% CI]",
      "joint [95% CI]",
      "joint - independent [95% CI]",
      "n pairs",
    ],
    rows.map((r) =>
      r.model === "–" ? [md(r.task), "–", "–", "–", NOT_RUN, NOT_RUN, NOT_RUN, "0"] : [
        md(r.task),
        md(r.model),
        md(r.metric) + (r.primary ? "" : " (secondary)"),
        `${r.lr.independent ?? "–"} / ${r.lr.joint ?? "–"}`,
        estimateText(r.independent),
        estimateText(r.joint),
        differenceText(r.difference),
        nText(r.difference?.n),
      ]
    ),
  );
}

function stepsText(cell: StepsCell | null): [string, string] {
  if (!cell) return [NOT_RUN, "–"];
  const bound = cell.censored ? "≥ " : "";
  return [
    `${bound}${fixed(cell.mean, 1)} (median ${cell.medianIsBound ? "≥ " : ""}${fixed(cell.median, 0)})`,
    `${cell.censored} of ${cell.n}`,
  ];
}

/** "Validation was evaluated every 10 steps on sentiment, 7 on qa." from the main runs' curves. */
function evaluationGrid(runs: readonly ExperimentRun[]): string {
  // The first evaluation's step is the interval (the last one may come sooner: it closes the run).
  const every = new Map<string, number>();
  for (const run of runs.filter((r) => r.group === "main" && r.curve.length > 0)) {
    every.set(run.task, Math.min(...run.curve.map((p) => p.step)));
  }
  if (every.size === 0) return "";
  const text = [...every].map(([task, steps], i) => `${steps}${i === 0 ? " steps" : ""} on ${task}`);
  return `Validation was evaluated every ${text.join(", ")}, and at each run's last step.`;
}

function stepsSection(runs: readonly ExperimentRun[]): string[] {
  const rows = stepsRows(runs);
  return [
    "## Table 2: steps to the validation target",
    "",
    `Target: ${
      TARGET_FRACTION * 100
    }% of the independent model's mean final validation score (see Method). ` +
    "Steps are mean (median) over seeds, censored runs counted at their length and the mean marked ≥. " +
    evaluationGrid(runs),
    "",
    ...table(
      [
        "task",
        "model",
        "target (points)",
        "independent steps",
        "censored",
        "joint steps",
        "censored",
        "fewer steps with joint [95% CI, evaluation grid included]",
        "n pairs",
      ],
      rows.map((r) => {
        if (r.model === "–") return [md(r.task), "–", "–", NOT_RUN, "–", NOT_RUN, "–", NOT_RUN, "0"];
        const reduction = r.reduction
          ? `${fixed(r.reduction.estimate, 1)}%${intervalText(r.reduction.ci, (v) => `${fixed(v, 1)}%`)}`
          : NOT_RUN;
        return [
          md(r.task),
          md(r.model),
          r.target === null ? NOT_RUN : fixed(r.target),
          ...stepsText(r.independent),
          ...stepsText(r.joint),
          reduction,
          nText(r.reduction?.n),
        ];
      }),
    ),
    "",
    provenance(runs.filter((r) => r.group === "main")),
    "",
  ];
}

function computeSection(runs: readonly ExperimentRun[]): string[] {
  const rows = computeRows(runs);
  const ms = (e: Estimate | null) => estimateText(e, formatMetric);
  const ratio = (r: { estimate: number; ci: Interval | null } | null) =>
    r ? `${fixed(r.estimate)}${intervalText(r.ci, fixed)}` : "–";
  const adapters = [...new Set(rows.flatMap((r) => r.adapters))];
  const sameAdapter = adapters.length > 1
    ? `**These runs used ${adapters.length} adapters (${adapters.map(md).join("; ")}), so their times do ` +
      "not compare.**"
    : adapters.length === 1
    ? `All of them ran on ${md(adapters[0])}.`
    : "";
  return [
    "## Table 3: compute",
    "",
    "Milliseconds per training step of all the models (sequential: the sum of the models' steps, one " +
    "model after another), of forward + backward alone, and of the optimizers' updates alone (over " +
    "the last step's gradients); relative = step time / joint's " +
    `step time, so joint = 1.00. ${sameAdapter} GPU ms is the sum of a step's kernel times from timestamp ` +
    "queries, over as many further steps with each dispatch in a compute pass of its own; the wall time " +
    "also holds the host's recording and the adapter's per-dispatch overhead.",
    "",
    ...table(
      [
        "task",
        "condition",
        "runs",
        "ms per step",
        "forward + backward ms",
        "optimizer ms",
        "GPU ms per step",
        "run wall time (s)",
        "relative step time [95% CI]",
        "relative GPU time",
      ],
      rows.map((r) =>
        r.n === 0 ? [md(r.task), md(r.condition), "0", NOT_RUN, "–", "–", "–", "–", "–", "–"] : [
          md(r.task),
          md(r.condition),
          nText(r.n),
          ms(r.stepMs),
          ms(r.forwardBackwardMs),
          ms(r.optimizerMs),
          r.gpuMs ? ms(r.gpuMs) : "not measured",
          ms(r.seconds),
          ratio(r.relative),
          r.relativeGpu ? ratio(r.relativeGpu) : "–",
        ]
      ),
    ),
    "",
    provenance(runs.filter((r) => r.group === "compute")),
    "",
  ];
}

function ablationSection(runs: readonly ExperimentRun[], charts: string[]): string[] {
  const rows = ablationRows(runs);
  const out = ["## Ablations", ""];
  if (rows.length === 0) return [...out, "Not run: no ablation runs yet.", ""];
  out.push(
    "Each variant against full joint training (all mechanisms on) with the same seeds; the " +
      "`independent` row shows the whole joint effect for scale. Test score, primary metric, points.",
    "",
    ...table(
      ["task", "variant", "model", "test score [95% CI]", "minus full joint [95% CI]", "n pairs"],
      rows.map((r) => [
        md(r.task),
        md(r.condition),
        md(r.model),
        estimateText(r.score),
        r.model === "–" ? NOT_RUN : differenceText(r.difference),
        nText(r.difference?.n),
      ]),
    ),
    "",
  );
  out.push(...ablationVerdict(rows), "");
  out.push(
    ...charts.map((c) => `![Ablations: difference from full joint, with 95% intervals](${c})`),
    "",
    provenance(runs.filter((r) => r.group === "ablation")),
    "",
  );
  return out;
}

/**
 * Which variants changed the score. Many variants and models are compared at once, so at 95% each about
 * one in twenty would exclude zero by chance: a change counts as shown when its interval excludes zero
 * with every comparison's interval taken at 1 - 0.05 / comparisons (Bonferroni); one that excludes zero
 * at 95% alone is listed apart, as that.
 */
function ablationVerdict(rows: ReturnType<typeof ablationRows>): string[] {
  const compared = rows.filter((r) => r.condition !== "independent" && r.difference?.ci);
  const level = 1 - 0.05 / compared.length;
  const excludesZero = (ci: Interval | null) => ci !== null && (ci.low > 0 || ci.high < 0);
  const named = (r: (typeof compared)[number], ci: Interval | null) =>
    `${md(r.condition)} on ${md(r.task)}/${md(r.model)} ${differenceText({ ...r.difference!, ci })}`;
  const verdicts = compared.map((r) => ({ r, adjusted: tInterval(r.difference!.differences, level).ci }));
  const shown = verdicts.filter((v) => excludesZero(v.adjusted));
  const alone = verdicts.filter((v) => !excludesZero(v.adjusted) && excludesZero(v.r.difference!.ci));
  const lines: string[] = [];
  if (shown.length > 0) {
    lines.push(
      `Changes shown over the ${compared.length} comparisons together (Bonferroni: each interval at ` +
        `${(100 * level).toFixed(2)}%): ${shown.map((v) => named(v.r, v.adjusted)).join("; ")}.`,
    );
  }
  if (alone.length > 0) {
    lines.push(
      `Excluding zero at 95% alone, as about ${(compared.length / 20).toFixed(1)} of ${compared.length} ` +
        `comparisons would by chance, so not shown: ${
          alone.map((v) => named(v.r, v.r.difference!.ci)).join("; ")
        }.`,
    );
  }
  if (shown.length === 0 && alone.length === 0) {
    lines.push(
      "No variant changed the test score by more than its interval allows: no single mechanism is shown to matter.",
    );
  } else if (shown.length === 0) {
    lines.unshift(
      `No variant is shown to change the test score over the ${compared.length} comparisons together ` +
        `(Bonferroni: each interval at ${(100 * level).toFixed(2)}%).`,
    );
  }
  return lines;
}

function placeboSection(runs: readonly ExperimentRun[]): string[] {
  const rows = placeboRows(runs);
  const out = ["## Placebo: sharing with a partner trained on shuffled labels", ""];
  if (rows.length === 0) return [...out, "Not run: no placebo runs yet.", ""];
  const reading = (r: (typeof rows)[number]) => {
    const gain = r.jointMinusIndependent;
    if (!gain?.ci || !(gain.ci.low > 0)) return "no joint gain to explain";
    if (r.jointMinusPlacebo?.ci && r.jointMinusPlacebo.ci.low > 0) return "joint beats the placebo: transfer";
    return "the placebo is within the interval of joint: not shown to be transfer";
  };
  out.push(
    "The placebo trains the model jointly while its partners learn from permuted labels (one permutation " +
      "for the run, shared by both partners): what it gains over independent is what coupling to partners " +
      "without the task's signal does, a regularisation effect together with the adaptive rates' response " +
      "to partners whose loss stays flat (which raises the model's rate, up to 1.5x); what joint gains over " +
      "it is transfer, with the rates responding to partners that learn.",
    "",
    ...table(
      [
        "task",
        "model",
        "independent",
        "joint",
        "placebo",
        "joint - placebo [95% CI]",
        "placebo - independent [95% CI]",
        "reading",
      ],
      rows.map((r) => [
        md(r.task),
        md(r.model),
        estimateText(r.independent),
        estimateText(r.joint),
        estimateText(r.placebo),
        differenceText(r.jointMinusPlacebo),
        differenceText(r.placeboMinusIndependent),
        reading(r),
      ]),
    ),
    "",
    provenance(runs.filter((r) => r.group === "placebo")),
    "",
  );
  return out;
}

/** Which code the runs came from: each commit with its count of runs, then those that recorded none. */
function commitsText(runs: readonly ExperimentRun[]): string {
  const counts = new Map<string | undefined, number>();
  for (const run of runs) counts.set(run.commit, (counts.get(run.commit) ?? 0) + 1);
  const runsText = (n: number) => `${n} run${n === 1 ? "" : "s"}`;
  const parts = [...counts].filter(([commit]) => commit !== undefined)
    .map(([commit, n]) => `${code(commit!.slice(0, 12))} (${runsText(n)})`);
  const unrecorded = counts.get(undefined);
  if (unrecorded) parts.push(`not recorded (${runsText(unrecorded)})`);
  return parts.join(", ");
}

/** The document and its plots, by path relative to the docs folder; see {@linkcode writeResults}. */
export function renderResults(runs: readonly ExperimentRun[], meta: ResultsMeta): ResultsFiles {
  const files: ResultsFiles = {};
  const groupCounts = ["grid", "main", "ablation", "placebo", "pretrained", "compute"]
    .map((g) => `${g} ${runs.filter((r) => r.group === g).length}`).join(", ");
  const curveLinks = (group: "main" | "pretrained") =>
    tasksOf(runs.filter((r) => r.group === group)).flatMap((task) => {
      const svg = curveChart(runs, group, task);
      if (!svg) return [];
      const name = `results/curve-${group === "pretrained" ? "pretrained-" : ""}${slug(task)}.svg`;
      files[name] = svg;
      return [
        `![${md(task)}: validation curves, independent dashed, joint solid, 95% bands over seeds](${name})`,
      ];
    });
  const ablationLinks = tasksOf(runs.filter((r) => r.group === "ablation")).flatMap((task) => {
    const svg = ablationChart(runs, task);
    if (!svg) return [];
    const name = `results/ablations-${slug(task)}.svg`;
    files[name] = svg;
    return [name];
  });
  const main = runs.filter((r) => r.group === "main");
  const pretrained = comparisonRows(runs, "pretrained", []);
  const lines = [
    "# Results: joint vs independent training",
    "",
    `Built from the ${runs.length} raw run lines in [${meta.runsFile}](${meta.runsFile}) (one JSON ` +
    `object per finished run); ${code(`${meta.command} --report`)} rebuilds this page and its plots ` +
    "from them without training.",
    "",
    ...table(["", ""], [
      ["command", code(meta.command)],
      ["adapter", md(meta.adapter)],
      ["date", md(meta.date)],
      ["run time", `${durationText(meta.durationSeconds)} (the runs' times summed)`],
      ["runs", groupCounts],
      ["commit", commitsText(runs)],
    ]),
    "",
    ...methodSection(runs.some((r) => r.task === "qa")),
    ...claimSection(claimRows(runs)),
    ...gridSection(runs),
    "## Table 1: accuracy, independent vs joint",
    "",
    "Test score at the end of training, points, at each condition's chosen learning rate.",
    "",
    ...comparisonTable(comparisonRows(runs, "main")),
    "",
    provenance(main),
    "",
    ...curveLinks("main"),
    "",
    ...stepsSection(runs),
    ...computeSection(runs),
    ...ablationSection(runs, ablationLinks),
    ...placeboSection(runs),
    "## Pretrained start",
    "",
    ...(pretrained.length
      ? [
        "The same comparison after a short joint language-model pretraining on Moby-Dick, so that all " +
        "models start from a common ancestor (what weight averaging assumes).",
        "",
        ...comparisonTable(pretrained),
        "",
        provenance(runs.filter((r) => r.group === "pretrained")),
        "",
        ...curveLinks("pretrained"),
      ]
      : ["Not run: no pretrained runs yet."]),
    "",
    "## Raw data",
    "",
    `[${meta.runsFile}](${meta.runsFile}) holds one JSON object per run (key, group, task, condition, ` +
    "lr, seed, final validation and test scores per model, the validation curve, timing, command, adapter, " +
    "date, commit), so anyone can recompute every table above.",
    "",
  ];
  files["RESULTS.md"] = lines.join("\n").replace(/\n{3,}/g, "\n\n");
  return files;
}

/**
 * Markdown as `deno fmt` leaves it under the repository's settings (the published page is checked
 * with `deno fmt --check`); runs `deno fmt` on the text, so it needs `--allow-run`.
 */
export async function formatMarkdown(text: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--config", fileURLToPath(new URL("../deno.json", import.meta.url)), "--ext", "md", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // Written while the output is read: a fmt that stops early must not leave the write blocked on a full pipe.
  const writer = child.stdin.getWriter();
  const written = writer.write(new TextEncoder().encode(text)).then(() => writer.close()).catch(() => {});
  const [{ code, stdout, stderr }] = await Promise.all([child.output(), written]);
  if (code !== 0) {
    throw new Error(`deno fmt could not format the results page: ${new TextDecoder().decode(stderr).trim()}`);
  }
  return new TextDecoder().decode(stdout);
}

/**
 * Writes `RESULTS.md` (formatted as `deno fmt` would) into `folder` (the docs folder) and its SVG
 * plots into `folder/results/` (both created if missing), leaving the raw run lines alone; returns the
 * paths written. Needs `--allow-write` for the folder and `--allow-run` for `deno fmt`.
 */
export async function writeResults(
  folder: string,
  runs: readonly ExperimentRun[],
  meta: ResultsMeta,
): Promise<string[]> {
  // Formatted before anything is written, so a failure leaves the old page and plots together.
  const files = Object.entries(renderResults(runs, meta));
  const texts = await Promise.all(
    files.map(([name, text]) => name.endsWith(".md") ? formatMarkdown(text) : text),
  );
  const written: string[] = [];
  for (const [i, [name]] of files.entries()) {
    const path = join(folder, name);
    await Deno.mkdir(dirname(path), { recursive: true });
    await Deno.writeTextFile(path, texts[i]);
    written.push(path);
  }
  return written;
}

/**
 * The run report of `deno task train`: {@linkcode renderReport} turns a plain {@linkcode RunRecord}
 * into `report.md` (title, results table, a verdict per model against the baseline, the
 * configuration) and the SVG plots it embeds: training loss, the validation metric with the
 * baseline, learning-rate multipliers and gradient norms, with skipped updates marked (`writeReport`
 * in run.ts writes them into the run's folder).
 *
 * @module
 */
import { lineChart, type Marks, PALETTE, type Series } from "./plot.ts";

/** One logged training step of one model. */
export interface StepRecord {
  /** Training step: one optimizer update (of `accumulate` batches). */
  step: number;
  /** The model. */
  model: string;
  /** Training loss of the step. */
  loss: number;
  /** Learning rate used. */
  lr: number;
  /** Adaptive learning-rate multiplier. */
  lrMultiplier: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  /** Whether the update was skipped (non-finite or rejected gradients). */
  skipped: boolean;
}

/** One evaluation of one model on one split. */
export interface EvaluationRecord {
  /** Optimizer step at which it ran. */
  step: number;
  /** Epoch at which it ran. */
  epoch: number;
  /** The split. */
  split: "validation" | "test";
  /** The model. */
  model: string;
  /** Metric name to value, e.g. `{ accuracy: 0.91 }` or `{ exactMatch: 71.2, f1: 80.3 }`. */
  metrics: Record<string, number>;
}

/** Everything a training run reports; plain data, so it can be saved as JSON too. */
export interface RunRecord {
  /** Report title, e.g. "sentiment - bert, gpt2, roberta (joint)". */
  title: string;
  /** Every setting of the run; shown in a collapsed table. */
  config: Record<string, unknown>;
  /** The GPU adapter, in words. */
  adapter: string;
  /** When the run started (ISO 8601). */
  started: string;
  /** Wall time of the run. */
  durationSeconds: number;
  /** The models, in the order tables and legends list them. */
  models: string[];
  /** The headline metric in words: "accuracy", "span F1", "exact match / F1", "perplexity". */
  metricName: string;
  /**
   * The key of `metrics` that decides "best" and "beat the baseline" and is plotted; default
   * `metricName` when it is a key, else the first key of the first evaluation.
   */
  primaryMetric?: string;
  /** Whether a larger metric is better (false for perplexity). */
  higherIsBetter: boolean;
  /** Logged training steps, one record per model per logged step (plotted). */
  steps: StepRecord[];
  /** Updates applied and skipped per model over the run; counted from `steps` when absent. */
  updates?: Record<string, { updates: number; skipped: number }>;
  /** Evaluations on validation and test. */
  evaluations: EvaluationRecord[];
  /** The no-transformer baseline's scores on both splits, keyed like the models' metrics. */
  baseline: { name: string; validation: Record<string, number>; test: Record<string, number> } | null;
  /** Training throughput over the run. */
  throughput: { stepsPerSecond: number; tokensPerSecond: number };
  /**
   * The last checkpoint's folder of each model, relative to the run's folder, with the transformers
   * pipeline task it serves (say "text-classification"; null where there is none, as for question
   * answering); the report says how to load them. None: no section.
   */
  modelFolders?: Record<string, { folder: string; pipeline: string | null }>;
}

/** The files of a report: `report.md` and each SVG it embeds, by file name. */
export type ReportFiles = Record<string, string>;

/** A number as the report prints it: 4 significant digits, whole from 10^4, exponent form below 10^-3. */
export function formatMetric(value: number | undefined): string {
  if (value === undefined) return "–";
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "−∞";
  if (value !== 0 && Math.abs(value) < 1e-3) return value.toExponential(2);
  if (Math.abs(value) >= 1e4) return value.toFixed(0);
  return String(Number(value.toPrecision(4)));
}

/**
 * Text made literal in Markdown and table cells: inline markup characters and `|` escaped, newlines as
 * spaces. Parentheses stay as they are: with brackets escaped they cannot form a link.
 */
export function escapeMarkdown(text: string): string {
  return text.replace(/[\\`*_{}[\]<>#|~&]/g, "\\$&").replace(/\r?\n/g, " ");
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return String(seconds);
  const s = Math.round(seconds);
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  return h ? `${h}h ${m}m ${s % 60}s` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

/** The key of `metrics` the report ranks by; see {@linkcode RunRecord.primaryMetric}. */
function primaryMetricOf(run: RunRecord): string | undefined {
  if (run.primaryMetric) return run.primaryMetric;
  const first = run.evaluations[0]?.metrics ?? run.baseline?.validation ?? {};
  return run.metricName in first ? run.metricName : Object.keys(first)[0];
}

/** What the results table shows for one model. */
interface ModelSummary {
  finalValidation: Record<string, number>;
  finalTest: Record<string, number>;
  best: { value: number; step: number } | null;
  updates: number;
  skipped: number;
}

function summarise(run: RunRecord, model: string, key: string | undefined): ModelSummary {
  const own = run.evaluations.filter((e) => e.model === model);
  const last = (split: string) =>
    own.filter((e) => e.split === split).reduce<EvaluationRecord | null>(
      (a, e) => (a === null || e.step >= a.step ? e : a),
      null,
    );
  let best: ModelSummary["best"] = null;
  for (const e of own) {
    const v = key === undefined ? undefined : e.metrics[key];
    if (e.split !== "validation" || v === undefined || Number.isNaN(v)) continue;
    if (best === null || (run.higherIsBetter ? v > best.value : v < best.value)) {
      best = { value: v, step: e.step };
    }
  }
  const steps = run.steps.filter((s) => s.model === model);
  const skipped = steps.filter((s) => s.skipped).length;
  return {
    finalValidation: last("validation")?.metrics ?? {},
    finalTest: last("test")?.metrics ?? {},
    best,
    updates: run.updates?.[model]?.updates ?? steps.length - skipped,
    skipped: run.updates?.[model]?.skipped ?? skipped,
  };
}

/** The sentence saying whether a model beat the baseline on validation. */
function verdict(run: RunRecord, model: string, summary: ModelSummary, key: string | undefined): string {
  const name = `**${escapeMarkdown(model)}**`;
  if (!run.baseline || key === undefined) return `${name}: no baseline to compare with.`;
  const ours = summary.finalValidation[key];
  const theirs = run.baseline.validation[key];
  const metric = escapeMarkdown(key);
  if (ours === undefined || !Number.isFinite(ours)) {
    return `${name} has no finite final validation ${metric}, so it did **not** beat the baseline.`;
  }
  if (theirs === undefined || !Number.isFinite(theirs)) {
    return `${name}: the baseline has no validation ${metric}.`;
  }
  const beats = (v: number) => (run.higherIsBetter ? v > theirs : v < theirs);
  const compared = `${formatMetric(ours)} vs ${formatMetric(theirs)} ${metric}`;
  if (beats(ours)) return `${name} beat the baseline on validation: ${compared}.`;
  const best = summary.best && beats(summary.best.value)
    ? ` Its best, ${formatMetric(summary.best.value)} at step ${summary.best.step}, did beat it.`
    : "";
  return `${name} did **not** beat the baseline on validation: ${compared}.${best}`;
}

/** Debiased exponential moving average; non-finite values leave the average alone and stay gaps. */
export function smooth(values: readonly number[], weight: number): number[] {
  let average = 0;
  let count = 0;
  return values.map((v) => {
    if (!Number.isFinite(v)) return v;
    average = weight * average + (1 - weight) * v;
    count++;
    return average / (1 - weight ** count);
  });
}

/** Smoothing light enough to keep trends: about 1/50 of the points in the average, at most 0.98. */
function smoothingFor(points: number): number {
  return Math.min(0.98, Math.max(0, 1 - 50 / points));
}

function flattenConfig(value: unknown, prefix: string, rows: [string, string][]): void {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && prefix) rows.push([prefix, "{}"]);
    for (const [k, v] of entries) flattenConfig(v, prefix ? `${prefix}.${k}` : k, rows);
    return;
  }
  rows.push([prefix, typeof value === "string" ? value : JSON.stringify(value) ?? String(value)]);
}

/** The plots of a run, by file name. */
function plots(run: RunRecord, key: string | undefined): ReportFiles {
  const color = (model: string) => PALETTE[Math.max(0, run.models.indexOf(model)) % PALETTE.length];
  const byModel = run.models.map((model) => ({
    model,
    steps: run.steps.filter((s) => s.model === model).sort((a, b) => a.step - b.step),
  }));
  const skippedMarks: Marks[] = byModel
    .map(({ model, steps }) => ({
      name: `${model} skipped (${steps.filter((s) => s.skipped).length})`,
      x: steps.filter((s) => s.skipped).map((s) => s.step),
      color: color(model),
    }))
    .filter((m) => m.x.length > 0);
  /** Each model's values of a field, smoothed, over the same values faint. */
  const smoothed = (field: "loss" | "gradNorm"): Series[] =>
    byModel.flatMap(({ model, steps }) => {
      const x = steps.map((s) => s.step);
      const raw = steps.map((s) => s[field]);
      return [
        { name: `${model} (raw)`, x, y: raw, color: color(model), opacity: 0.25, width: 1, legend: false },
        { name: model, x, y: smooth(raw, smoothingFor(raw.length)), color: color(model) },
      ];
    });
  const validation: Series[] = run.models.map((model) => {
    const evals = run.evaluations
      .filter((e) => e.model === model && e.split === "validation")
      .sort((a, b) => a.step - b.step);
    return {
      name: model,
      x: evals.map((e) => e.step),
      y: evals.map((e) => (key === undefined ? NaN : e.metrics[key] ?? NaN)),
      color: color(model),
    };
  });
  const baseline = key === undefined ? undefined : run.baseline?.validation[key];
  const metricLabel = key ?? run.metricName;
  return {
    "loss.svg": lineChart({
      title: "Training loss (smoothed; raw values faint)",
      xLabel: "step",
      yLabel: "loss",
      series: smoothed("loss"),
      marks: skippedMarks,
    }),
    "validation.svg": lineChart({
      title: `Validation ${metricLabel}`,
      xLabel: "step",
      yLabel: metricLabel,
      series: validation,
      lines: run.baseline && baseline !== undefined && Number.isFinite(baseline)
        ? [{ name: `baseline: ${run.baseline.name}`, y: baseline }]
        : [],
    }),
    "lr_multiplier.svg": lineChart({
      title: "Learning-rate multiplier",
      xLabel: "step",
      yLabel: "multiplier",
      series: byModel.map(({ model, steps }) => ({
        name: model,
        x: steps.map((s) => s.step),
        y: steps.map((s) => s.lrMultiplier),
        color: color(model),
      })),
      marks: skippedMarks,
    }),
    "grad_norm.svg": lineChart({
      title: "Gradient norm (log scale; smoothed, raw values faint)",
      xLabel: "step",
      yLabel: "gradient norm",
      series: smoothed("gradNorm"),
      marks: skippedMarks,
      logY: true,
    }),
  };
}

/** `report.md` and its SVG plots for a run, as text by file name; {@linkcode writeReport} saves them. */
export function renderReport(run: RunRecord): ReportFiles {
  const key = primaryMetricOf(run);
  const summaries = new Map(run.models.map((m) => [m, summarise(run, m, key)]));
  const metricKeys: string[] = [];
  const addKeys = (metrics: Record<string, number>) => {
    for (const k of Object.keys(metrics)) if (!metricKeys.includes(k)) metricKeys.push(k);
  };
  if (key !== undefined) metricKeys.push(key);
  for (const e of run.evaluations) addKeys(e.metrics);
  if (run.baseline) addKeys(run.baseline.validation), addKeys(run.baseline.test);

  const cell = (metrics: Record<string, number>) => metricKeys.map((k) => formatMetric(metrics[k]));
  const header = [
    "model",
    ...metricKeys.map((k) => `validation ${escapeMarkdown(k)}`),
    ...metricKeys.map((k) => `test ${escapeMarkdown(k)}`),
    `best validation ${escapeMarkdown(key ?? run.metricName)} (step)`,
    "updates",
    "skipped updates",
  ];
  const rows = run.models.map((model) => {
    const s = summaries.get(model)!;
    return [
      escapeMarkdown(model),
      ...cell(s.finalValidation),
      ...cell(s.finalTest),
      s.best ? `${formatMetric(s.best.value)} (${s.best.step})` : "–",
      String(s.updates),
      String(s.skipped),
    ];
  });
  if (run.baseline) {
    const b = run.baseline;
    rows.push([`baseline: ${escapeMarkdown(b.name)}`, ...cell(b.validation), ...cell(b.test), "–", "–", "–"]);
  }
  const table = [header, header.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`);
  const configRows: [string, string][] = [];
  flattenConfig(run.config, "", configRows);
  const lines = [
    `# ${escapeMarkdown(run.title)}`,
    "",
    `Started ${escapeMarkdown(run.started)} on ${escapeMarkdown(run.adapter)}; ran ${
      formatDuration(run.durationSeconds)
    } at ${formatMetric(run.throughput.stepsPerSecond)} steps/s and ${
      formatMetric(run.throughput.tokensPerSecond)
    } tokens/s. Metric: ${escapeMarkdown(run.metricName)} (${
      run.higherIsBetter ? "higher" : "lower"
    } is better).`,
    "",
    "## Results",
    "",
    ...table,
    "",
    ...run.models.flatMap((m) => [`- ${verdict(run, m, summaries.get(m)!, key)}`]),
    "",
    "## Plots",
    "",
    "![Training loss per model](loss.svg)",
    "",
    `![Validation ${escapeMarkdown(key ?? run.metricName)} per model, with the baseline](validation.svg)`,
    "",
    "![Learning-rate multiplier per model](lr_multiplier.svg)",
    "",
    "![Gradient norm per model, log scale](grad_norm.svg)",
    "",
    ...usingTheModels(run.modelFolders),
    "## Configuration",
    "",
    "<details><summary>Every setting of the run</summary>",
    "",
    "| setting | value |",
    "| --- | --- |",
    ...configRows.map(([k, v]) => `| ${escapeMarkdown(k)} | ${escapeMarkdown(v)} |`),
    "",
    "</details>",
    "",
  ];
  return { "report.md": lines.join("\n"), ...plots(run, key) };
}

/** The report's section on loading the last checkpoint's models in transformers, or nothing without folders. */
function usingTheModels(folders: RunRecord["modelFolders"]): string[] {
  const entries = Object.entries(folders ?? {});
  if (entries.length === 0) return [];
  const [first, { folder, pipeline }] = entries[0];
  return [
    "## Using the models",
    "",
    "The last checkpoint holds each model as a Hugging Face folder with its tokenizer and, for a classifier, " +
    "its class names; paths are relative to this folder. `deno task train --from NAME=FOLDER` starts a new " +
    "run from one.",
    "",
    "| model | folder | transformers pipeline |",
    "| --- | --- | --- |",
    ...entries.map(([name, f]) => `| ${escapeMarkdown(name)} | \`${f.folder}\` | ${f.pipeline ?? "–"} |`),
    "",
    "```python",
    ...(pipeline
      ? [
        "from transformers import pipeline",
        "",
        `pipe = pipeline("${pipeline}", model="${folder}")  # ${first}`,
      ]
      : [
        "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
        "",
        `model = AutoModelForQuestionAnswering.from_pretrained("${folder}")  # ${first}`,
        `tokenizer = AutoTokenizer.from_pretrained("${folder}")`,
      ]),
    "```",
    "",
  ];
}

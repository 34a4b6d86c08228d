/**
 * The results table of the side-by-side benchmark: one row per comparison with our time, the
 * baseline's (PyTorch's; or ours: the sequential steps for joint vs sequential, three BERT steps for
 * the fusion bound), their ratio in the target's terms, the target and whether it is met; and the
 * writing of that table into docs/PERFORMANCE.md between its result markers.
 *
 * @module
 */
import type { Workloads } from "./inputs.ts";
import { FAMILIES } from "./model_workloads.ts";
import type { Measurement } from "./timing.ts";

/** A bound on the row's ratio: a time ratio must stay at or below it, a rate ratio at or above. */
export interface Target {
  /** The bound. */
  bound: number;
}

/** One row of the table. */
export interface Row {
  /** What is compared. */
  label: string;
  /** Our time, ms (null when not measured). */
  ours: number | null;
  /** Whether a workload of ours in this row failed (its check, PyTorch's side or its timing) and has no time. */
  failed?: boolean;
  /** The baseline's time, ms (null when there is none: the dry run). */
  baseline: number | null;
  /** What the baseline is. */
  baselineLabel: string;
  /** Work per repetition, to show rates: floating-point operations or bytes. */
  work?: { flops?: number; bytes?: number };
  /** How the ratio is taken: ours / baseline time, or ours / baseline throughput. */
  terms: "time" | "rate";
  /** The target, if the issue sets one. */
  target?: Target;
}

/** Targets of the issue, as ratios ours / PyTorch. */
const TARGETS = {
  matmul: { "square-1024": 0.6, "square-4096": 0.75 } as Record<string, number>,
  attention: 1.5,
  layernorm: 1.0,
  chain: 0.9,
  optimizerOff: 1.0,
  optimizerOn: 1.5,
  joint: { small: 0.5, large: 1.2 } as Record<string, number>,
  jointVsSequential: 0.4,
};

/** Minimum bytes an AdamW step moves per parameter: read p, g, m, v; write p, m, v. */
const ADAMW_BYTES_PER_PARAMETER = 28;

/** Times in ms by row id. */
export type Times = Map<string, number>;

function sum(times: Times, ids: string[]): number | null {
  const found = ids.map((id) => times.get(id));
  return found.every((t) => t !== undefined) ? found.reduce((s, t) => s + t!, 0) : null;
}

/**
 * The rows for the workloads of one size, from our times and PyTorch's (null in the dry run); rows
 * of the workloads in `failed` (ids of workloads whose check failed, such as `model/small`) say so.
 */
export function tableRows(
  w: Workloads,
  ours: Times,
  torch: Times | null,
  torchOptimizer: string,
  failed: readonly string[] = [],
): Row[] {
  const base = (id: string) => torch?.get(id) ?? null;
  const broken = (...ids: string[]) =>
    ids.some((id) => failed.some((f) => id === f || id.startsWith(`${f}/`)));
  const mine = (id: string) => ({ ours: ours.get(id) ?? null, failed: broken(id) });
  const rows: Row[] = [];
  for (const m of w.matmul) {
    const target = TARGETS.matmul[m.id];
    rows.push({
      label: `matmul ${m.id}: [${m.m}, ${m.k}] x [${m.transposeB ? `${m.n}, ${m.k}]ᵀ` : `${m.k}, ${m.n}]`}`,
      ...mine(`matmul/${m.id}`),
      baseline: base(`matmul/${m.id}`),
      baselineLabel: "PyTorch a @ b (TF32 off)",
      work: { flops: 2 * m.m * m.n * m.k },
      terms: "rate",
      target: target ? { bound: target } : undefined,
    });
  }
  const a = w.attention;
  for (const c of a.cases) {
    rows.push({
      label: `attention fwd+bwd B${a.batch} H${a.heads} T${c.tokens} D${a.dim} ${c.mask}`,
      ...mine(`attention/${c.id}`),
      baseline: base(`attention/${c.id}`),
      baselineLabel: "scaled_dot_product_attention",
      terms: "time",
      target: { bound: TARGETS.attention },
    });
  }
  const ln = w.layernorm.rows * w.layernorm.cols;
  rows.push({
    label: `LayerNorm fwd+bwd ${w.layernorm.rows} x ${w.layernorm.cols}`,
    ...mine("layernorm"),
    baseline: base("layernorm"),
    baselineLabel: "F.layer_norm",
    // Least traffic: forward reads x and writes y; backward reads x and dy and writes dx.
    work: { bytes: 5 * ln * 4 },
    terms: "time",
    target: { bound: TARGETS.layernorm },
  });
  const chain = w.chain.rows * w.chain.cols;
  rows.push({
    label: `gelu(x + bias) + residual ${w.chain.rows} x ${w.chain.cols}`,
    ...mine("chain"),
    baseline: base("chain"),
    baselineLabel: "eager PyTorch (3 kernels)",
    work: { bytes: 3 * chain * 4 },
    terms: "rate",
    target: { bound: TARGETS.chain },
  });
  const o = w.optimizer;
  const parameters = o.models * o.layers * (2 * o.width * o.width + 2 * o.width);
  const millions = (parameters / 1e6).toFixed(parameters >= 1e6 ? 0 : 3);
  for (
    const [mode, what, bound] of [
      ["off", "AdamW only", TARGETS.optimizerOff],
      ["on", "sharing + sync + adaptive every step", TARGETS.optimizerOn],
    ] as const
  ) {
    rows.push({
      label: `optimizer step, ${millions} M parameters in ${o.models} models, ${what}`,
      ...mine(`optimizer/${mode}`),
      baseline: base("optimizer"),
      baselineLabel: torchOptimizer,
      work: { bytes: ADAMW_BYTES_PER_PARAMETER * parameters },
      terms: "time",
      target: { bound },
    });
  }
  for (const size of w.models.sizes) {
    const prefix = `model/${size.id}`;
    const shape = `d ${size.hidden}, ${size.layers} layers, T ${size.tokens}, B ${size.batch}`;
    for (const family of FAMILIES) {
      rows.push({
        label: `${size.id} (${shape}): ${family} step alone`,
        ...mine(`${prefix}/${family}`),
        baseline: base(`${prefix}/${family}`),
        baselineLabel: "HF model + torch.optim.AdamW, eager",
        terms: "time",
      });
    }
    const sequentialIds = FAMILIES.map((f) => `${prefix}/${f}`);
    const oursSequential = sum(ours, sequentialIds);
    const torchSequential = torch ? sum(torch, sequentialIds) : null;
    rows.push({
      label: `${size.id}: sequential (the three steps alone, summed)`,
      ours: oursSequential,
      failed: broken(...sequentialIds),
      baseline: torchSequential,
      baselineLabel: "PyTorch sequential",
      terms: "time",
    });
    rows.push({
      label: `${size.id}: joint step vs PyTorch sequential`,
      ...mine(`${prefix}/joint`),
      baseline: torchSequential,
      baselineLabel: "PyTorch sequential",
      terms: "time",
      target: { bound: TARGETS.joint[size.id] },
    });
    rows.push({
      label: `${size.id}: joint step vs our sequential`,
      ...mine(`${prefix}/joint`),
      baseline: oursSequential,
      baselineLabel: "ours, sequential",
      terms: "time",
      target: { bound: TARGETS.jointVsSequential },
    });
    const bert = ours.get(`${prefix}/bert`);
    rows.push({
      label: `${size.id}: bert over 3 batches at once (bound of fusing 3 models' ops)`,
      ...mine(`${prefix}/bert-x3`),
      baseline: bert === undefined ? null : 3 * bert,
      baselineLabel: "ours, bert step alone x 3",
      terms: "time",
    });
  }
  return rows;
}

function formatTime(ms: number | null, work: Row["work"]): string {
  if (ms === null) return "—";
  const time = ms >= 100 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3);
  if (work?.flops) return `${time} ms (${(work.flops / ms / 1e9).toPrecision(3)} TFLOP/s)`;
  if (work?.bytes) return `${time} ms (${(work.bytes / ms / 1e6).toPrecision(3)} GB/s)`;
  return `${time} ms`;
}

/** ours / baseline in the target's terms: time ratio, or throughput ratio for "rate" targets. */
export function ratio(row: Row): number | null {
  if (row.ours === null || row.baseline === null) return null;
  return row.terms === "rate" ? row.baseline / row.ours : row.ours / row.baseline;
}

/** Whether the row meets its target; null without a target or a ratio. */
export function met(row: Row): boolean | null {
  const r = ratio(row);
  if (!row.target || r === null) return null;
  return row.terms === "rate" ? r >= row.target.bound : r <= row.target.bound;
}

/**
 * The sentence that sums the table up: how many targets are met of those judged, and how many rows
 * with a target failed (and so could not be judged); without `judged` (tiny shapes), that none is.
 */
export function verdictLine(rows: readonly Row[], judged: boolean): string {
  if (!judged) {
    return "Tiny shapes: a check of correctness and of the code paths; no time here means anything, no target is judged.";
  }
  const failed = rows.filter((r) => r.failed && r.target).length;
  return `Targets met: ${rows.filter((r) => met(r) === true).length} of ${
    rows.filter((r) => met(r) !== null).length
  }` +
    (failed > 0 ? `; ${failed} more with a target failed and are not judged.` : ".");
}

/** The markdown table of the rows; without `judged` (tiny shapes) no row is said to meet or miss its target. */
export function markdownTable(rows: Row[], judged: boolean): string {
  const lines = [
    "| workload | ours | baseline | ours / baseline | target | met |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    const r = ratio(row);
    const terms = row.terms;
    const target = row.target
      ? `${terms} ${terms === "rate" ? "≥" : "≤"} ${row.target.bound.toFixed(2)}x`
      : "—";
    const verdict = judged ? met(row) : null;
    lines.push(
      `| ${row.label} | ${
        row.failed ? "**failed, not timed**" : formatTime(row.ours, row.work)
      } | ${row.baselineLabel}: ${formatTime(row.baseline, row.work)} | ${
        r === null ? "—" : `${r.toFixed(2)}x ${terms}`
      } | ${target} | ${verdict === null ? "—" : verdict ? "yes" : "**no**"} |`,
    );
  }
  return lines.join("\n");
}

/** Kernels named per row of {@linkcode profileTable}. */
const LARGEST_KERNELS = 4;

/**
 * The markdown table of where each measurement's time goes: its wall time per repetition, the GPU
 * time of its kernels (timestamp queries), that as a share of the wall time ("GPU busy": well below
 * 100% means recording, submission or gaps between kernels bound the row, not the kernels), and
 * its largest kernels with their dispatches and share of the GPU time.
 */
export function profileTable(measurements: readonly Measurement[]): string {
  const lines = [
    "| measurement | ours, wall | GPU kernels | GPU busy | dispatches | largest kernels (dispatches, share of GPU time) |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  const time = (ms: number) => formatTime(ms, undefined);
  for (const m of measurements) {
    const gpu = m.gpu;
    const largest = gpu?.kernels.slice(0, LARGEST_KERNELS).map((k) =>
      `${k.name} (${Number(k.dispatches.toFixed(2))}, ${(100 * k.ms / Math.max(gpu.ms, 1e-9)).toFixed(0)}%)`
    ).join(", ");
    lines.push(
      `| ${m.id} | ${time(m.ms)} | ${gpu ? time(gpu.ms) : "—"} | ${
        gpu ? `${(100 * gpu.ms / m.ms).toFixed(0)}%` : "—"
      } | ${m.dispatches} | ${largest || "— (no timestamp queries)"} |`,
    );
  }
  return lines.join("\n");
}

/** The lines that open and close the generated part of docs/PERFORMANCE.md. */
export const RESULT_MARKERS = ["<!-- bench:gpu results start -->", "<!-- bench:gpu results end -->"] as const;

/** Replaces the text between the result markers of `doc` with `results`; throws when the markers are missing. */
export function replaceResults(doc: string, results: string, path: string): string {
  const [open, close] = RESULT_MARKERS;
  const start = doc.indexOf(open), end = doc.indexOf(close);
  if (start < 0 || end < start) throw new Error(`${path}: no "${open}" ... "${close}" section to replace`);
  return `${doc.slice(0, start + open.length)}\n\n${results.trim()}\n\n${doc.slice(end)}`;
}

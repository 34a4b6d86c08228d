/**
 * Markdown formatting shared by the sections of `docs/RESULTS.md`: numbers, intervals, "not run"
 * cells, tables, and the provenance line under each table.
 *
 * @module
 */
import { escapeMarkdown } from "../train/report.ts";
import type { Estimate, Interval } from "./stats.ts";
import type { ExperimentRun } from "./runs.ts";

/** The cell text of a condition, group or row that has no runs yet. */
export const NOT_RUN = "not run";

/** A number with fixed decimals (two by default); "–" when not finite. */
export function fixed(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "–";
}

/** A signed number with fixed decimals (two by default): "+1.23", "-0.40". */
export function signed(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return "–";
  const text = value.toFixed(digits);
  return value >= 0 && !text.startsWith("-") ? `+${text}` : text;
}

/** " [low, high]" in the given format (an unbounded end as "-∞" or "+∞"), or " (no interval)". */
export function intervalText(ci: Interval | null, format: (v: number) => string): string {
  const end = (v: number) => (v === -Infinity ? "-∞" : v === Infinity ? "+∞" : format(v));
  return ci ? ` [${end(ci.low)}, ${end(ci.high)}]` : " (no interval)";
}

/** "81.20 [80.11, 82.29]", "81.20 (n=1)" or "not run". */
export function estimateText(e: Estimate | null, format: (v: number) => string = fixed): string {
  if (!e || e.n === 0) return NOT_RUN;
  return e.ci
    ? `${format(e.mean)} [${format(e.ci.low)}, ${format(e.ci.high)}]`
    : `${format(e.mean)} (n=${e.n})`;
}

/** A signed difference with its interval, "+2.00 [+1.12, +2.88]", or "not run". */
export function differenceText(d: { mean: number; ci: Interval | null; n: number } | null): string {
  if (!d) return NOT_RUN;
  return `${signed(d.mean)}${intervalText(d.ci, signed)}`;
}

/** A count of seeds, marked "(< 5)" below the protocol's minimum of five. */
export function nText(n: number | undefined): string {
  if (!n) return "0";
  return n < 5 ? `${n} (< 5)` : String(n);
}

/** A duration in words: "1h 2m 3s", "4m 5s", "6s". */
export function durationText(seconds: number): string {
  if (!Number.isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  const [h, m] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60)];
  return h ? `${h}h ${m}m ${s % 60}s` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

/** Text made literal in Markdown. */
export const md = (text: string): string => escapeMarkdown(text);
/** Text as inline code (a backtick inside becomes a quote, which inline code cannot escape). */
export const code = (text: string): string => `\`${text.replace(/`/g, "'")}\``;

/** A Markdown table: header row, separator, rows. */
export function table(header: string[], rows: string[][]): string[] {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ];
}

/** The line under a table saying which runs it came from: count, seeds (or repeats), adapters, dates, time, commands. */
export function provenance(runs: readonly ExperimentRun[]): string {
  if (runs.length === 0) return "_No runs of this part in the results file yet: not run._";
  const seeds = [...new Set(runs.map((r) => r.seed))].sort((a, b) => a - b);
  // A compute run's seed field numbers its repeat (every repeat trains on the first seed).
  const numbered = runs.every((r) => r.group === "compute") ? "repeats" : "seeds";
  const dates = runs.map((r) => r.date).filter(Boolean).sort();
  const adapters = [...new Set(runs.map((r) => r.adapter))];
  const commands = [...new Set(runs.map((r) => r.command))];
  const seconds = runs.reduce((s, r) => s + (Number.isFinite(r.seconds) ? r.seconds : 0), 0);
  return `_From ${runs.length} runs (${numbered} ${seeds.join(", ")}); adapter ${
    adapters.map(md).join("; ")
  }; ` +
    `${dates.length ? `dates ${dates[0]} to ${dates.at(-1)}` : "no dates"}; ` +
    `run time ${durationText(seconds)} (sum of the runs); command ${commands.map(code).join(", ")}._`;
}

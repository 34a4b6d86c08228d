/**
 * JSON lines that keep NaN (`metrics.jsonl` of a run, `runs.jsonl` of the experiment): JSON has no
 * NaN and `JSON.stringify` would write null, so NaN is written as the string "NaN" and read back as NaN.
 *
 * @module
 */

/** `value` as one line of JSON (NaN as "NaN"), newline included. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value, (_, v) => (Number.isNaN(v) ? "NaN" : v)) + "\n";
}

/** The value of a line written by {@linkcode jsonLine}; throws a SyntaxError when it is not JSON. */
export function parseJsonLine(line: string): unknown {
  return JSON.parse(line, (_, v) => (v === "NaN" ? NaN : v));
}

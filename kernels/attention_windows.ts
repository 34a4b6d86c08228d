/**
 * Attention beyond one storage binding: the heads of a problem (b, h in batch-major order) are split
 * into runs of consecutive heads such that every tensor a pass binds - q, k, v, the output and its
 * gradient, the logsumexp, the key mask and the gradients - holds the rows of the run in one window
 * of at most one binding (and, for the texel kernels, one operand texture). Each head is computed by
 * the same invocations from the same values as in one dispatch, so results are bit-identical.
 *
 * A window starts at its first element rounded down to the storage offset alignment; kernels take
 * global head indices and subtract the window's start from their element offsets (see the header in
 * attention_header.ts), so layouts with interleaved heads (the fused QKV projection) need nothing
 * special: a run of heads spans whatever rows its heads occupy.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import type { BufferRange } from "../engine/recorder.ts";
import type { Tensor } from "../engine/tensor.ts";
import { TEXEL_ROW } from "../engine/texels.ts";

/** Where row i, float d of head (b, h) of a part lives: part offset + b*batch + h*head + i*row + d. */
export interface Layout {
  readonly batch: number;
  readonly head: number;
  readonly row: number;
}

/** One tensor bound by a pass: the parts it holds (q, or k and v, or dK and dV), their layout and rows. */
export interface Operand {
  /** The tensor bound, or null for a scratch buffer sized per run (only its bytes count). */
  readonly tensor: Tensor | null;
  /** Element offsets of the parts reached through this binding. */
  readonly offsets: readonly number[];
  readonly layout: Layout;
  /** Rows per head. */
  readonly rows: number;
  /** Floats per row. */
  readonly width: number;
}

/** A run of heads [first, first + count) and, per operand, its bound range and the element it starts at. */
export interface HeadRun {
  readonly first: number;
  readonly count: number;
  /** Per operand (null for scratch operands). */
  readonly ranges: readonly (BufferRange | null)[];
  /** Per operand: the element of the tensor its range starts at, subtracted from kernel offsets. */
  readonly starts: readonly number[];
}

/** Elements [start, end) of an operand that heads [first, first + count) touch, start aligned down. */
function span(o: Operand, heads: number, first: number, count: number): [number, number] {
  const base = (g: number) => Math.floor(g / heads) * o.layout.batch + (g % heads) * o.layout.head;
  const align = gpu().profile.storageOffsetAlignment / 4;
  const low = Math.min(...o.offsets) + base(first);
  const high = Math.max(...o.offsets) + base(first + count - 1) + (o.rows - 1) * o.layout.row + o.width;
  return [Math.floor(low / align) * align, high];
}

/**
 * Runs of consecutive heads (of `total`, `heads` per batch) whose windows of every operand fit
 * `limitBytes`; one run over whole tensors when every operand fits. Throws, naming `op` and the
 * operand, when one head alone does not fit.
 */
export function headRuns(
  op: string,
  heads: number,
  total: number,
  operands: readonly Operand[],
  limitBytes: number,
): HeadRun[] {
  const bytes = (o: Operand) => o.tensor ? o.tensor.size * 4 : 4 * span(o, heads, 0, total)[1];
  if (total === 0 || operands.every((o) => bytes(o) <= limitBytes)) {
    const ranges = operands.map((o) => o.tensor?.range() ?? null);
    return [{ first: 0, count: total, ranges, starts: operands.map(() => 0) }];
  }
  const within = (o: Operand, first: number, count: number) => {
    const [start, end] = span(o, heads, first, count);
    return (end - start) * 4 <= limitBytes;
  };
  const fits = (first: number, count: number) => operands.every((o) => within(o, first, count));
  const runs: HeadRun[] = [];
  for (let first = 0; first < total;) {
    const large = operands.find((o) => !within(o, first, 1));
    if (large) {
      throw new RangeError(
        `${op}: one head of ${large.tensor?.describe() ?? "the dK/dV scratch"} spans more than the ` +
          `${limitBytes}-byte binding limit`,
      );
    }
    // The largest count that fits, by doubling then bisection (spans grow with the count).
    let good = 1, bad = 2;
    while (first + bad <= total && fits(first, bad)) [good, bad] = [bad, bad * 2];
    bad = Math.min(bad, total - first + 1);
    while (bad - good > 1) {
      const mid = (good + bad) >> 1;
      if (fits(first, mid)) good = mid;
      else bad = mid;
    }
    const windows = operands.map((o) => span(o, heads, first, good));
    runs.push({
      first,
      count: good,
      ranges: operands.map((o, k) =>
        o.tensor ? o.tensor.window(windows[k][0], windows[k][1] - windows[k][0]) : null
      ),
      starts: windows.map(([start]) => start),
    });
    first += good;
  }
  return runs;
}

/** The binding limit for attention operands: the storage binding, and for texel kernels one operand texture. */
export function operandLimit(texels: boolean): number {
  const { device, profile } = gpu();
  const texture = TEXEL_ROW * 16 * device.limits.maxTextureDimension2D;
  return texels ? Math.min(profile.maxStorageBindingBytes, texture) : profile.maxStorageBindingBytes;
}

/**
 * Fused log-softmax + negative log-likelihood, with hard (int32 class) or soft (distribution)
 * targets.
 *
 * Forward is one kernel over row blocks: one or more invocations stream each row once with an online
 * max / sum of exponentials (in blocks of 64 logits, so long rows sum pairwise), combine their partial
 * states in a fixed tree in workgroup memory, and write the row's loss and statistics (the max m and
 * the log-sum-exp shifted by m, kept apart so that softmax stays exact for logits around 1e4). A
 * single workgroup then sums the losses (and counts non-ignored rows) in a fixed order and divides on
 * the GPU: bit-identical run to run, no readback. Backward is one elementwise kernel reading the saved
 * statistics, the row count and the upstream gradient from the GPU. Inputs larger than one storage
 * binding are processed in row chunks, and the final sum in windows that carry each lane's partial sum.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import {
  bindingWindows,
  grid,
  type Kernel,
  kernelFor,
  linearIndex,
  rowWindows,
  rowWindowsFit,
  walkers,
  walkLimit,
  windowElements,
} from "../engine/kernel.ts";
import { dispatch } from "../engine/recorder.ts";
import { checkOptions } from "../engine/options.ts";
import {
  attachGrad,
  composedOp,
  emptyTensor,
  expectTensor,
  needsGrad,
  type Tensor,
  zeros,
} from "../engine/tensor.ts";
import { formatShape, sameShape } from "../engine/shape.ts";
import { div, mul, neg } from "./elementwise.ts";
import { mean, sum } from "./reduce.ts";
import { logSoftmax } from "./softmax.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";

/** Options of {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (PyTorch's default -100). */
  ignoreIndex?: number;
  /**
   * "mean" over non-ignored rows (default, PyTorch semantics: NaN when every row is ignored), "sum",
   * or "none" ([N] losses, 0 for ignored rows).
   */
  reduction?: "mean" | "sum" | "none";
}

/** Options of {@linkcode softCrossEntropy}. */
export interface SoftCrossEntropyOptions {
  /** "mean" over rows (default), "sum", or "none" (one loss per row). */
  reduction?: "mean" | "sum" | "none";
}

type Kind = "hard" | "soft";
type Reduction = NonNullable<CrossEntropyOptions["reduction"]>;

const REDUCE_THREADS = 256;
const ELEMENT_THREADS = 256;

/** How a row block is laid out: invocations per row and rows per workgroup. */
interface RowLayout {
  /** Invocations sharing one row, a power of two; 1 means a row per invocation and no barriers. */
  readonly perRow: number;
  /** Rows of one workgroup. */
  readonly rows: number;
}

/** The variant ("cross_entropy" in `MM_KERNELS`): serial on software adapters, tree on GPUs. */
function crossEntropyVariant(): KernelVariant<"cross_entropy"> {
  return kernelVariant("cross_entropy", () => gpu().profile.isSoftware ? "serial" : "tree");
}

/**
 * In the tree variant short rows take one invocation each and longer ones are split so that each
 * invocation streams about 16 logits. Software adapters run a workgroup on one CPU thread, so
 * splitting a row only adds barriers: there the serial variant gives every invocation a row
 * (measured faster for C from 7 to 50257), and shares a row longer than one invocation may walk
 * ({@linkcode walkLimit}) among as few invocations as take it (at most 256: longer rows are composed).
 */
function rowLayout(cols: number): RowLayout {
  if (crossEntropyVariant() === "serial") {
    const perRow = walkers(cols);
    return { perRow, rows: Math.max(1, Math.floor(16 / perRow)) };
  }
  let perRow = 1;
  while (perRow < 256 && perRow * 16 < cols) perRow *= 2;
  return { perRow, rows: 256 / perRow };
}

/** The lowest finite f32: the running maximum before any logit (a row of logits below -3e38 is a row too). */
const LOWEST = "-3.4028234663852886e38";

/** Logits an invocation folds into a fresh block state before merging it, so long rows sum pairwise. */
const BLOCK = 64;

/**
 * A row's running state as vec4(max m, sum of exp(z - m), sum of soft targets, sum of t * (z - m));
 * `merge` combines two states as if one had seen both ranges. A vec4 rather than a struct: llvmpipe
 * compiles workgroup arrays of structs about ten times slower.
 */
const WGSL_MERGE = `
fn merge(x: vec4<f32>, y: vec4<f32>) -> vec4<f32> {
  let m = max(x.x, y.x);
  return vec4<f32>(m, x.y * exp(x.x - m) + y.y * exp(y.x - m), x.z + y.z,
                   x.w + x.z * (x.x - m) + y.w + y.z * (y.x - m));
}
`;

/** WGSL folding logit z (and soft target t) into the block state m, s (total, a). */
function updateCode(kind: Kind): string {
  const soft = kind === "soft";
  return `if (z > m) {
          s = s * exp(m - z) + 1.0;${soft ? "\n          a += total * (m - z);" : ""}
          m = z;
        } else {
          s += exp(z - m);
        }${soft ? "\n        total += t;\n        a += t * (z - m);" : ""}`;
}

const SOFT_ROW_PARAMS = { rows: "u32", cols: "u32" } as const;
const HARD_ROW_PARAMS = { rows: "u32", cols: "u32", ignore_index: "i32", nan: "f32" } as const;
const SOFT_BACKWARD_PARAMS = { rows: "u32", cols: "u32", g_stride: "u32", factor: "f32" } as const;
const HARD_BACKWARD_PARAMS = {
  rows: "u32",
  cols: "u32",
  g_stride: "u32",
  mean: "u32",
  ignore_index: "i32",
  nan: "f32",
} as const;

/** Forward: one row block per workgroup, writing each row's loss and statistics. */
function rowKernel(kind: "soft", layout: RowLayout): Kernel<typeof SOFT_ROW_PARAMS>;
function rowKernel(kind: "hard", layout: RowLayout): Kernel<typeof HARD_ROW_PARAMS>;
function rowKernel(kind: Kind, { perRow, rows: rowsPerGroup }: RowLayout) {
  const soft = kind === "soft";
  const groupSize = rowsPerGroup * perRow;
  const stride = BLOCK * perRow;
  const tree = perRow === 1 ? "" : `
  w_state[lid] = state;
  workgroupBarrier();
  for (var half = ${perRow / 2}u; half > 0u; half >>= 1u) {
    if (lane < half) {
      state = merge(state, w_state[lid + half]);
      w_state[lid] = state;
    }
    workgroupBarrier();
  }`;
  const finish = soft
    ? `losses[row] = state.z * log_sum - state.w;
    stats[row * 3u] = state.x;
    stats[row * 3u + 1u] = log_sum;
    stats[row * 3u + 2u] = state.z;`
    : `let label = targets[row];
    let valid = label >= 0 && u32(label) < params.cols;
    let picked = logits[base + min(u32(label), params.cols - 1u)];
    let loss = select(params.nan, log_sum - (picked - state.x), valid);
    losses[row] = select(loss, 0.0, label == params.ignore_index);
    stats[row * 2u] = state.x;
    stats[row * 2u + 1u] = log_sum;`;
  const params = soft ? SOFT_ROW_PARAMS : HARD_ROW_PARAMS;
  const name = `${kind}_cross_entropy_rows_${crossEntropyVariant()}`;
  return kernelFor(`${name}/${perRow}x${rowsPerGroup}`, () => ({
    name,
    params,
    bindings: [
      { name: "logits" },
      { name: "targets", type: soft ? "f32" : "i32" },
      { name: "losses", write: true },
      { name: "stats", write: true },
    ],
    code: `${WGSL_MERGE}${perRow === 1 ? "" : `var<workgroup> w_state: array<vec4<f32>, ${groupSize}>;`}
@compute @workgroup_size(${groupSize})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ${perRow}u;
  let row = (wid.x + wid.y * groups.x) * ${rowsPerGroup}u + lid / ${perRow}u;
  let in_range = row < params.rows;
  let base = row * params.cols;
  var state = vec4<f32>(${LOWEST}, 0.0, 0.0, 0.0);
  if (in_range) {
    for (var start = lane; start < params.cols; start += ${stride}u) {
      var m = ${LOWEST};
      var s = 0.0;${soft ? "\n      var total = 0.0;\n      var a = 0.0;" : ""}
      let end = min(params.cols, start + ${stride}u);
      for (var j = start; j < end; j += ${perRow}u) {
        let z = logits[base + j];${soft ? "\n        let t = targets[base + j];" : ""}
        ${updateCode(kind)}
      }
      state = merge(state, vec4<f32>(m, s, ${soft ? "total, a" : "0.0, 0.0"}));
    }
  }${tree}
  if (in_range && lane == 0u) {
    let log_sum = log(state.y);
    ${finish}
  }
}`,
  }));
}

/** A single workgroup summing the row losses (and counting counted rows) in a fixed order. */
function reduceLosses(kind: Kind, losses: Tensor, targets: Tensor, mean: boolean, ignore: number) {
  const hard = kind === "hard";
  const kernel = kernelFor(`cross_entropy_reduce/${kind}`, () => ({
    name: `${kind}_cross_entropy_reduce`,
    params: {
      rows: "u32",
      carry: "u32",
      finish: "u32",
      mean: "u32",
      ignore_index: "i32",
      nan: "f32",
    },
    bindings: [
      { name: "losses" },
      ...(hard ? [{ name: "targets", type: "i32" as const }] : []),
      { name: "lanes", write: true },
      { name: "out", write: true },
      ...(hard ? [{ name: "count", write: true }] : []),
    ],
    code: `
var<workgroup> w_loss: array<f32, ${REDUCE_THREADS}>;
var<workgroup> w_count: array<f32, ${REDUCE_THREADS}>;
@compute @workgroup_size(${REDUCE_THREADS})
fn main(@builtin(local_invocation_index) lid: u32) {
  // A window continues each lane's sum from the last (lanes), so windows add in one dispatch's order.
  var loss = 0.0;
  var counted = 0.0;
  if (params.carry == 1u) {
    loss = lanes[lid];
    counted = lanes[${REDUCE_THREADS}u + lid];
  }
  for (var r = lid; r < params.rows; r += ${REDUCE_THREADS}u) {
    loss += losses[r];
    counted += ${hard ? "select(1.0, 0.0, targets[r] == params.ignore_index)" : "1.0"};
  }
  if (params.finish == 0u) {
    lanes[lid] = loss;
    lanes[${REDUCE_THREADS}u + lid] = counted;
    return;
  }
  w_loss[lid] = loss;
  w_count[lid] = counted;
  workgroupBarrier();
  for (var stride = ${REDUCE_THREADS / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      w_loss[lid] += w_loss[lid + stride];
      w_count[lid] += w_count[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let total = w_loss[0];
    let n = w_count[0];
    out[0] = select(total, select(total / n, params.nan, n == 0.0), params.mean == 1u);${
      hard ? "\n    count[0] = n;" : ""
    }
  }
}`,
  }));
  const out = emptyTensor([]);
  const count = hard ? emptyTensor([1]) : null;
  const lanes = emptyTensor([2 * REDUCE_THREADS]);
  // Windows of whole lane strides: row r goes to lane r mod REDUCE_THREADS in every window; a lane's walk
  // through a window stays within walkLimit() steps.
  const rows = losses.size;
  const strides = Math.min(Math.floor(windowElements() / REDUCE_THREADS), walkLimit());
  const perWindow = Math.max(1, strides) * REDUCE_THREADS;
  for (let first = 0; first < rows || first === 0; first += perWindow) {
    const n = Math.min(perWindow, rows - first);
    const finish = first + n >= rows;
    const windows = [losses.window(first, n), ...(hard ? [targets.window(first, n)] : [])];
    dispatch(
      kernel,
      {
        rows: n,
        carry: first > 0 ? 1 : 0,
        finish: finish ? 1 : 0,
        mean: mean ? 1 : 0,
        ignore_index: ignore,
        nan: NaN,
      },
      [...windows, lanes.range(), out.range(), ...(count ? [count.range()] : [])],
      [1],
    );
  }
  lanes.dispose();
  return { out, count };
}

/** Validates logits [..., C] and the reduction, returning C. */
function checkLogits(op: string, logits: Tensor, reduction: string): number {
  if (logits.dtype !== "float32" || logits.rank === 0) {
    throw new Error(`${op}: logits must be float32 [..., C], got ${logits.describe()}`);
  }
  const cols = logits.shape[logits.rank - 1];
  if (cols === 0) throw new Error(`${op}: logits ${formatShape(logits.shape)} have no classes`);
  if (!["mean", "sum", "none"].includes(reduction)) {
    throw new Error(`${op}: reduction must be "mean", "sum" or "none", got "${reduction}"`);
  }
  return cols;
}

/**
 * Fused log-softmax + negative log-likelihood: logits [N, C] (or [..., C]), int32 targets [N] (or
 * [...]). Returns a scalar for "mean" and "sum", the per-row losses (targets' shape) for "none".
 * A target outside [0, C) that is not `ignoreIndex` is an error when the targets have host values,
 * and gives a NaN loss (and NaN gradients for its row) otherwise.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  checkOptions("crossEntropy", options, ["ignoreIndex", "reduction"]);
  expectTensor("crossEntropy", logits, "logits");
  expectTensor("crossEntropy", targets, "targets");
  const { ignoreIndex = -100, reduction = "mean" } = options;
  const cols = checkLogits("crossEntropy", logits, reduction);
  if (targets.dtype !== "int32" || !sameShape(targets.shape, logits.shape.slice(0, -1))) {
    // PyTorch's layout puts classes on axis 1 ([N, C, L] with targets [N, L]); here they are last.
    const classesSecond = logits.rank >= 3 &&
      sameShape(targets.shape, logits.shape.filter((_, i) => i !== 1));
    throw new Error(
      `crossEntropy: targets ${targets.describe()} do not match logits ${formatShape(logits.shape)}; ` +
        `expected int32${formatShape(logits.shape.slice(0, -1))}` +
        (classesSecond
          ? " (classes go on the last axis: PyTorch's [N, C, L] logits are permuted to [N, L, C])"
          : ""),
    );
  }
  if (!Number.isInteger(ignoreIndex)) {
    throw new Error(`crossEntropy: ignoreIndex ${ignoreIndex} is not an integer`);
  }
  for (const t of targets.hostValues ?? []) {
    if (t !== ignoreIndex && !(t >= 0 && t < cols)) {
      throw new RangeError(
        `crossEntropy: target ${t} is outside [0, ${cols}) for logits ${formatShape(logits.shape)} ` +
          `and is not ignoreIndex (${ignoreIndex})`,
      );
    }
  }
  return lossOp("hard", logits, targets, cols, reduction, ignoreIndex);
}

/**
 * Cross-entropy with soft targets: -sum_c t_c * log_softmax(z)_c per row (distillation); targets
 * [N, C] float32 like the logits, rows need not sum to 1. Both inputs get gradients if they need them.
 */
export function softCrossEntropy(
  logits: Tensor,
  targets: Tensor,
  options: SoftCrossEntropyOptions = {},
): Tensor {
  checkOptions("softCrossEntropy", options, ["reduction"]);
  expectTensor("softCrossEntropy", logits, "logits");
  expectTensor("softCrossEntropy", targets, "targets");
  const { reduction = "mean" } = options;
  const cols = checkLogits("softCrossEntropy", logits, reduction);
  if (targets.dtype !== "float32" || !sameShape(targets.shape, logits.shape)) {
    throw new Error(
      `softCrossEntropy: targets ${targets.describe()} do not match logits ${formatShape(logits.shape)}; ` +
        `expected float32${formatShape(logits.shape)}`,
    );
  }
  return lossOp("soft", logits, targets, cols, reduction, 0);
}

/** Forward, reduction and autograd link shared by both losses; `ignore` is unused for soft targets. */
function lossOp(
  kind: Kind,
  logits: Tensor,
  targets: Tensor,
  cols: number,
  reduction: Reduction,
  ignore: number,
) {
  const soft = kind === "soft";
  const op = soft ? "softCrossEntropy" : "crossEntropy";
  const rowShape = logits.shape.slice(0, -1);
  const rows = logits.size / cols;
  const rowBytes = soft ? [cols * 4, 4, 12] : [cols * 4, 4, 4, 8];
  // Rows a software adapter's workgroup may not walk whole (over 2M classes) take the composed path too.
  const walkable = crossEntropyVariant() !== "serial" || walkers(cols) <= 256;
  if (!rowWindowsFit(rows, rowBytes) || !walkable) return wideLoss(kind, logits, targets, reduction, ignore);
  const chunks = rowWindows(op, rows, rowBytes);
  const statWidth = soft ? 3 : 2;
  const losses = emptyTensor(rowShape);
  const stats = emptyTensor([rows, statWidth]);
  const layout = rowLayout(cols);
  for (const [first, count] of chunks) {
    const ranges = [
      logits.window(first * cols, count * cols),
      targets.window(first * (soft ? cols : 1), count * (soft ? cols : 1)),
      losses.window(first, count),
      stats.window(first * statWidth, count * statWidth),
    ];
    const groups = grid(count, layout.rows);
    if (soft) dispatch(rowKernel("soft", layout), { rows: count, cols }, ranges, groups);
    else {dispatch(
        rowKernel("hard", layout),
        { rows: count, cols, ignore_index: ignore, nan: NaN },
        ranges,
        groups,
      );}
  }
  let out = losses;
  let count: Tensor | null = null;
  if (reduction !== "none") {
    ({ out, count } = reduceLosses(kind, losses, targets, reduction === "mean", ignore));
    losses.dispose();
  }
  if (!needsGrad(logits, targets)) {
    stats.dispose();
    count?.dispose();
    return out;
  }
  return attachGrad(out, op, [logits, targets], (g) => {
    const perRowGrad = reduction === "none";
    const wantLogits = logits.requiresGrad;
    const wantTargets = soft && targets.requiresGrad;
    const dlogits = wantLogits ? emptyTensor(logits.shape) : null;
    const dtargets = wantTargets ? emptyTensor(targets.shape) : null;
    const kernel = backwardKernel(kind, wantLogits, wantTargets);
    for (const [first, rowCount] of chunks) {
      const gRange = perRowGrad ? g.window(first, rowCount) : g.range();
      const rowsAndStride = { rows: rowCount, cols, g_stride: perRowGrad ? 1 : 0 };
      const params = soft
        ? { ...rowsAndStride, factor: reduction === "mean" ? 1 / rows : 1 }
        : { ...rowsAndStride, mean: reduction === "mean" ? 1 : 0, ignore_index: ignore, nan: NaN };
      dispatch(
        kernel,
        params,
        [
          logits.window(first * cols, rowCount * cols),
          targets.window(first * (soft ? cols : 1), rowCount * (soft ? cols : 1)),
          stats.window(first * statWidth, rowCount * statWidth),
          gRange,
          ...(soft ? [] : [count ? count.range() : gRange]),
          ...[dlogits, dtargets].filter((t): t is Tensor => t !== null).map((t) =>
            t.window(first * cols, rowCount * cols)
          ),
        ],
        backwardGrid(rowCount, cols),
      );
    }
    return [dlogits, dtargets];
  });
}

/**
 * Backward workgroups: [column blocks, rows], rows folded into z beyond the per-dimension limit. The
 * tree variant (GPUs) gets a block per 256 logits; software adapters pay per workgroup, so in the
 * serial variant one block walks the whole row.
 */
function backwardGrid(rows: number, cols: number): [number, number, number] {
  const { maxWorkgroupsPerDimension } = gpu().profile;
  const y = Math.min(rows, maxWorkgroupsPerDimension);
  const blocks = crossEntropyVariant() === "serial" ? 1 : Math.ceil(cols / ELEMENT_THREADS);
  return [blocks, y, Math.ceil(rows / Math.max(1, y))];
}

/**
 * Backward: workgroups spanning the columns of one row (the row's statistics and upstream gradient
 * are uniform loads, no index is divided), each invocation stepping through its row by the width of
 * all column blocks.
 */
function backwardKernel(kind: Kind, wantLogits: boolean, wantTargets: boolean) {
  const soft = kind === "soft";
  const outputs = [...(wantLogits ? ["dlogits"] : []), ...(wantTargets ? ["dtargets"] : [])];
  const prelude = soft
    ? `let m = stats[row * 3u];
  let log_sum = stats[row * 3u + 1u];
  let total = stats[row * 3u + 2u];
  let scale = g[row * params.g_stride] * params.factor;`
    : `let m = stats[row * 2u];
  let log_sum = stats[row * 2u + 1u];
  let label = targets[row];
  let hot = select(params.cols, u32(label), label >= 0);
  let divisor = select(1.0, count[0], params.mean == 1u);
  let ignored = label == params.ignore_index;
  // A target outside [0, C) (possible only without host values to check) gives the NaN loss the
  // forward gave, and a NaN gradient rather than one as if the row had no target.
  let invalid = !ignored && (label < 0 || u32(label) >= params.cols);
  let scale = select(select(g[row * params.g_stride] / divisor, 0.0, ignored), params.nan, invalid);`;
  const body = soft
    ? `let shifted = logits[i] - m - log_sum;${
      wantLogits ? "\n    dlogits[i] = (exp(shifted) * total - targets[i]) * scale;" : ""
    }${wantTargets ? "\n    dtargets[i] = -shifted * scale;" : ""}`
    : `let p = exp(logits[i] - m - log_sum);
    dlogits[i] = (p - select(0.0, 1.0, col == hot)) * scale;`;
  const params = soft ? SOFT_BACKWARD_PARAMS : HARD_BACKWARD_PARAMS;
  const name = `${kind}_cross_entropy_backward_${crossEntropyVariant()}`;
  return kernelFor(`${name}/${outputs.join(",")}`, () => ({
    name,
    params,
    bindings: [
      { name: "logits" },
      { name: "targets", type: soft ? "f32" : "i32" },
      { name: "stats" },
      { name: "g" },
      ...(soft ? [] : [{ name: "count" }]),
      ...outputs.map((name) => ({ name, write: true })),
    ],
    code: `
@compute @workgroup_size(${ELEMENT_THREADS})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u,
        @builtin(num_workgroups) groups: vec3u) {
  let row = wid.y + wid.z * groups.y;
  if (row >= params.rows) { return; }
  ${prelude}
  for (var col = gid.x; col < params.cols; col += groups.x * ${ELEMENT_THREADS}u) {
    let i = row * params.cols + col;
    ${body}
  }
}`,
  }));
}

/**
 * Either loss over rows too wide for a binding-sized run of them, composed of windowed ops (autograd
 * follows them): log-softmax (kernels/softmax.ts, itself composed when its rows do not fit), then the
 * soft targets' weighted sum, or each row's value at its target ({@linkcode pickTargets}); "mean"
 * divides by the rows counted, NaN when every target is ignored, as PyTorch does.
 */
function wideLoss(kind: Kind, logits: Tensor, targets: Tensor, reduction: Reduction, ignore: number): Tensor {
  const cols = logits.shape[logits.rank - 1];
  const rowShape = logits.shape.slice(0, -1);
  const rows = logits.size / cols;
  return composedOp([logits, targets], (temp) => {
    const logProbabilities = temp(logSoftmax(logits));
    if (kind === "soft") {
      const perRow = temp(neg(temp(sum(temp(mul(targets, logProbabilities)), logits.rank - 1))));
      if (reduction === "none") return perRow;
      return reduction === "sum" ? sum(perRow) : mean(perRow);
    }
    const { picked, counted } = pickTargets(
      temp(logProbabilities.reshape([rows, cols])),
      temp(targets.reshape([rows])),
      ignore,
    );
    temp(counted);
    const perRow = temp(neg(temp(picked)));
    if (reduction === "none") return perRow.reshape(rowShape);
    const total = temp(sum(perRow));
    return reduction === "sum" ? total : div(total, temp(sum(counted)));
  });
}

/** Uniforms of {@linkcode TARGET_IN_WINDOW}: x is [rows, cols], bound as its elements [lo, hi). */
const TARGET_WINDOW_PARAMS = { rows: "u32", cols: "u32", lo: "u32", hi: "u32", ignore_index: "i32" } as const;

/**
 * WGSL `target_in_window(r)`: where row r's target element x[r, t_r] lies in the bound window of x,
 * or -1 when the target is ignored, outside [0, cols), or in another window.
 */
const TARGET_IN_WINDOW = `
fn target_in_window(r: u32) -> i32 {
  let t = targets[r];
  if (t == params.ignore_index || t < 0 || u32(t) >= params.cols) { return -1; }
  let e = r * params.cols + u32(t);
  return select(-1, i32(e - params.lo), e >= params.lo && e < params.hi);
}`;

/**
 * Each row's value at its target column, x[r, t_r] (0 where t_r is `ignore`, NaN where it is outside
 * [0, C)), and 1 for the rows that count (0 for ignored ones); x [rows, C] may exceed a binding: one
 * dispatch per binding window of it, the first also writing every row's default. The values carry a
 * gradient into x at the picked places.
 */
function pickTargets(x: Tensor, targets: Tensor, ignore: number): { picked: Tensor; counted: Tensor } {
  const [rows, cols] = x.shape;
  const picked = emptyTensor([rows]);
  const counted = emptyTensor([rows]);
  const kernel = kernelFor("pick_targets", () => ({
    name: "pick_targets",
    params: { ...TARGET_WINDOW_PARAMS, first: "u32", nan: "f32" },
    bindings: [
      { name: "x" },
      { name: "targets", type: "i32" },
      { name: "picked", write: true },
      { name: "counted", write: true },
    ],
    code: `${TARGET_IN_WINDOW}
@compute @workgroup_size(${ELEMENT_THREADS})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let r = ${linearIndex(ELEMENT_THREADS)};
  if (r >= params.rows) { return; }
  if (params.first == 1u) {
    let ignored = targets[r] == params.ignore_index;
    counted[r] = select(1.0, 0.0, ignored);
    picked[r] = select(params.nan, 0.0, ignored);
  }
  let at = target_in_window(r);
  if (at >= 0) { picked[r] = x[at]; }
}`,
  }));
  bindingWindows(x.size).forEach(([lo, length], k) =>
    dispatch(
      kernel,
      { rows, cols, lo, hi: lo + length, first: k === 0 ? 1 : 0, ignore_index: ignore, nan: NaN },
      [x.window(lo, length), targets.range(), picked.range(), counted.range()],
      grid(rows, ELEMENT_THREADS),
    )
  );
  attachGrad(picked, "pickTargets", [x], (g) => [scatterTargets(g, targets, rows, cols, ignore)]);
  return { picked, counted };
}

/** The gradient of {@linkcode pickTargets}: g[r] at each counted row's target column, zeros elsewhere. */
function scatterTargets(g: Tensor, targets: Tensor, rows: number, cols: number, ignore: number): Tensor {
  const dx = zeros([rows, cols]);
  const kernel = kernelFor("scatter_targets", () => ({
    name: "scatter_targets",
    params: TARGET_WINDOW_PARAMS,
    bindings: [{ name: "g" }, { name: "targets", type: "i32" }, { name: "dx", write: true }],
    code: `${TARGET_IN_WINDOW}
@compute @workgroup_size(${ELEMENT_THREADS})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let r = ${linearIndex(ELEMENT_THREADS)};
  if (r >= params.rows) { return; }
  let at = target_in_window(r);
  if (at >= 0) { dx[at] = g[r]; }
}`,
  }));
  for (const [lo, length] of bindingWindows(dx.size)) {
    dispatch(
      kernel,
      { rows, cols, lo, hi: lo + length, ignore_index: ignore },
      [g.range(), targets.range(), dx.window(lo, length)],
      grid(rows, ELEMENT_THREADS),
    );
  }
  return dx;
}

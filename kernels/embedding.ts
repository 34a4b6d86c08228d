/**
 * Embedding lookup: rows of a [V, C] table picked by int32 ids, with a deterministic backward.
 *
 * Forward is one coalesced copy kernel (an invocation per output element, vec4 when C is a multiple
 * of 4). Backward groups the positions by id on the host from the ids' host values (a counting sort,
 * stable in position), uploads the grouping, and runs one kernel with an invocation per (unique id,
 * column) pair that sums that id's gradient rows in position order; rows of unused ids are zero.
 * No atomics, so gradients are bit-identical run to run. Tables larger than one storage binding
 * (GPT-2's 50257 x 768 on llvmpipe's 128 MiB) are bound in row chunks; an output gradient larger
 * than one is grouped and summed in runs of positions, each run adding onto the sums the earlier
 * ones stored, so every row still adds its positions in order.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { grid, kernelFor, linearIndex, rowWindows, walkLimit } from "../engine/kernel.ts";
import { clearBuffer, dispatch } from "../engine/recorder.ts";
import { checkOptions } from "../engine/options.ts";
import {
  attachGrad,
  emptyTensor,
  expectTensor,
  gradientSink,
  needsGrad,
  type Tensor,
  tensor,
} from "../engine/tensor.ts";
import { formatShape } from "../engine/shape.ts";
import { kernelVariant } from "../engine/variants.ts";

const FORWARD_WORKGROUP = 256;

/** Options of {@linkcode gatherRows}. */
export interface GatherOptions {
  /**
   * Like `nn.Embedding(padding_idx=...)`: this id's row receives no gradient; an integer in [-V, V),
   * a negative one counting from the end.
   */
  paddingIndex?: number | null;
}

/**
 * Rows of `table` [V, C] picked by int32 `ids` of any shape -> [...ids.shape, C]; an id outside
 * [0, V) is an error when the ids have host values, and reads as a row of NaN otherwise (ids computed
 * on the GPU). The table's gradient needs the ids' host values (ids made with `tensor()` or
 * `writeTensor()`), from which the backward groups positions by id.
 */
export function gatherRows(table: Tensor, ids: Tensor, options: GatherOptions = {}): Tensor {
  checkOptions("gatherRows", options, ["paddingIndex"]);
  expectTensor("gatherRows", table, "table");
  expectTensor("gatherRows", ids, "ids");
  if (table.dtype !== "float32" || table.rank !== 2) {
    throw new Error(`gatherRows: table must be a float32 [V, C] tensor, got ${table.describe()}`);
  }
  if (ids.dtype !== "int32") throw new Error(`gatherRows: ids must be int32, got ${ids.describe()}`);
  const [vocab, cols] = table.shape;
  let padding = options.paddingIndex ?? null;
  if (padding !== null) {
    if (!(Number.isInteger(padding) && padding >= -vocab && padding < vocab)) {
      throw new RangeError(
        `gatherRows: paddingIndex ${padding} is not an integer in [-${vocab}, ${vocab}) for table ` +
          formatShape(table.shape),
      );
    }
    if (padding < 0) padding += vocab;
  }
  const hostIds = ids.hostValues;
  if (hostIds) {
    for (const id of hostIds) {
      if (!(id >= 0 && id < vocab)) {
        throw new RangeError(
          `gatherRows: id ${id} is outside [0, ${vocab}) for table ${formatShape(table.shape)}`,
        );
      }
    }
  } else if (needsGrad(table)) {
    throw new Error(
      `gatherRows: the table's gradient needs the ids' host values; create ${ids.describe()} ` +
        "from host values (tensor() or writeTensor())",
    );
  }
  const out = emptyTensor([...ids.shape, cols]);
  gatherForward(table, ids, out);
  return attachGrad(out, "gatherRows", [table, ids], (g) => [
    table.requiresGrad ? gatherBackward(g, hostIds!, vocab, cols, padding, gradientSink(table)) : null,
    null,
  ]);
}

/** Width of the vector type a kernel moves: vec4 when rows are whole vec4s. */
function vectorWidth(cols: number): 1 | 4 {
  return cols % 4 === 0 ? 4 : 1;
}

function gatherForward(table: Tensor, ids: Tensor, out: Tensor): void {
  const [vocab, cols] = table.shape;
  const width = vectorWidth(cols);
  const type = width === 4 ? "vec4<f32>" : "f32";
  const kernel = kernelFor(`gather_rows/${width}`, () => ({
    name: "gather_rows",
    params: {
      count: "u32",
      cols: "u32",
      row_first: "u32",
      row_count: "u32",
      vocab: "u32",
      mark_invalid: "u32",
      nan: "f32",
    },
    bindings: [{ name: "ids", type: "i32" }, { name: "table", type }, { name: "out", type, write: true }],
    code: `
@compute @workgroup_size(${FORWARD_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(FORWARD_WORKGROUP)};
  if (i >= params.count) { return; }
  let row = i / params.cols;
  let id = ids[row];
  let local = u32(id) - params.row_first;
  if (id >= 0 && u32(id) >= params.row_first && local < params.row_count) {
    out[i] = table[local * params.cols + i - row * params.cols];
  } else if (params.mark_invalid == 1u && (id < 0 || u32(id) >= params.vocab)) {
    // Ids that no chunk owns (possible only without host values to validate) read as NaN, so that the
    // fault shows in the loss instead of training on a row of zeros.
    out[i] = ${type}(params.nan);
  }
}`,
  }));
  const vecCols = cols / width;
  const outChunks = rowWindows("gatherRows", ids.size, [cols * 4, 4]);
  const tableChunks = rowWindows("gatherRows", vocab, [cols * 4]);
  for (const [rowFirst, rowCount] of tableChunks) {
    for (const [first, count] of outChunks) {
      dispatch(
        kernel,
        {
          count: count * vecCols,
          cols: vecCols,
          row_first: rowFirst,
          row_count: rowCount,
          vocab,
          mark_invalid: rowFirst === 0 ? 1 : 0,
          nan: NaN,
        },
        [
          ids.window(first, count),
          table.window(rowFirst * cols, rowCount * cols),
          out.window(first * cols, count * cols),
        ],
        grid(count * vecCols, FORWARD_WORKGROUP),
      );
    }
  }
}

/**
 * Positions grouped by id, packed as one int32 array: the sorted unique ids (U), the segment starts
 * (U + 1) and the positions (N) in (id, position) order, by a counting sort over the vocabulary.
 * Positions holding `skipped` (the padding index) are left out.
 */
function groupPositions(
  ids: Int32Array,
  vocab: number,
  skipped: number | null,
): { packed: Int32Array; unique: number } {
  const counts = new Int32Array(vocab + 1);
  let kept = 0;
  for (const id of ids) {
    if (id === skipped) continue;
    counts[id + 1]++;
    kept++;
  }
  let unique = 0;
  for (let v = 1; v <= vocab; v++) {
    if (counts[v] > 0) unique++;
    counts[v] += counts[v - 1];
  }
  const packed = new Int32Array(2 * unique + 1 + kept);
  const positionsAt = 2 * unique + 1;
  let segment = 0;
  for (let v = 0; v < vocab; v++) {
    if (counts[v + 1] === counts[v]) continue;
    packed[segment] = v;
    packed[unique + segment] = counts[v];
    segment++;
  }
  packed[2 * unique] = kept;
  const next = counts.subarray(0, vocab);
  for (let position = 0; position < ids.length; position++) {
    if (ids[position] !== skipped) packed[positionsAt + next[ids[position]]++] = position;
  }
  return { packed, unique };
}

/**
 * The table's gradient: for each used row, the sum of the rows of `g` at its positions. Into a new
 * zeroed tensor, or added onto `into` (a parameter's .grad, see gradientSink), then returning null.
 */
function gatherBackward(
  g: Tensor,
  hostIds: Int32Array,
  vocab: number,
  cols: number,
  skipped: number | null,
  into: Tensor | null,
): Tensor | null {
  const { isSoftware } = gpu().profile;
  // Software rasterisers run a workgroup per CPU thread, so narrow blocks keep both cores busy.
  const variant = kernelVariant("gather_rows_backward", () => isSoftware ? "block64" : "block256");
  const grad = into ?? emptyTensor([vocab, cols]);
  if (!into) clearBuffer(grad.range());
  const width = vectorWidth(cols);
  const type = width === 4 ? "vec4<f32>" : "f32";
  const threads = variant === "block64" ? 64 : 256;
  const kernel = kernelFor(`gather_rows_backward/${width}/${threads}`, () => ({
    name: `gather_rows_backward_${variant}`,
    params: {
      cols: "u32",
      segment_first: "u32",
      segment_count: "u32",
      starts_at: "u32",
      positions_at: "u32",
      row_first: "u32",
      accumulate: "u32",
    },
    bindings: [{ name: "grouping", type: "i32" }, { name: "g", type }, { name: "grad", type, write: true }],
    code: `
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  // Invocations walk (segment, column) pairs in order, so narrow rows share a workgroup.
  let pair = (wid.x + wid.y * groups.x) * ${threads}u + lid;
  let segment = pair / params.cols;
  let col = pair - segment * params.cols;
  if (segment >= params.segment_count) { return; }
  let s = params.segment_first + segment;
  let row = u32(grouping[s]) - params.row_first;
  let start = u32(grouping[params.starts_at + s]);
  let end = u32(grouping[params.starts_at + s + 1u]);
  // A later run of positions continues the sums an earlier one stored.
  var acc = ${type}(0.0);
  if (params.accumulate != 0u) { acc = grad[row * params.cols + col]; }
  var k = start;
  // Four loads in flight per step keep long segments (a repeated padding id) from being latency-bound;
  // the additions stay in position order.
  for (; k + 4u <= end; k += 4u) {
    let at = params.positions_at + k;
    let g0 = g[u32(grouping[at]) * params.cols + col];
    let g1 = g[u32(grouping[at + 1u]) * params.cols + col];
    let g2 = g[u32(grouping[at + 2u]) * params.cols + col];
    let g3 = g[u32(grouping[at + 3u]) * params.cols + col];
    acc = (((acc + g0) + g1) + g2) + g3;
  }
  for (; k < end; k++) {
    acc += g[u32(grouping[params.positions_at + k]) * params.cols + col];
  }
  grad[row * params.cols + col] = acc;
}`,
  }));
  const vecCols = cols / width;
  const tableWindows = rowWindows("gatherRows backward", vocab, [cols * 4]);
  // An invocation walks every position of its id in a run: on a software adapter a run holds at most
  // 4 * walkLimit() positions (32768 of them are whole 256-byte windows of g for any width).
  const longestRun = 4 * walkLimit();
  const runs = rowWindows("gatherRows backward", hostIds.length, [cols * 4]).flatMap(([first, count]) => {
    const pieces: [number, number][] = [];
    for (let at = first; at < first + count; at += Math.min(count, longestRun)) {
      pieces.push([at, Math.min(first + count - at, longestRun)]);
    }
    return pieces;
  });
  for (const [positionFirst, positionCount] of runs) {
    const run = hostIds.subarray(positionFirst, positionFirst + positionCount);
    const { packed, unique } = groupPositions(run, vocab, skipped);
    if (unique === 0) continue;
    const grouping = tensor(packed, { dtype: "int32" });
    let segmentFirst = 0;
    for (const [rowFirst, rowCount] of tableWindows) {
      let segmentEnd = segmentFirst;
      while (segmentEnd < unique && packed[segmentEnd] < rowFirst + rowCount) segmentEnd++;
      const segments = segmentEnd - segmentFirst;
      dispatch(
        kernel,
        {
          cols: vecCols,
          segment_first: segmentFirst,
          segment_count: segments,
          starts_at: unique,
          positions_at: 2 * unique + 1,
          row_first: rowFirst,
          accumulate: into || positionFirst > 0 ? 1 : 0,
        },
        [
          grouping.range(),
          g.window(positionFirst * cols, positionCount * cols),
          grad.window(rowFirst * cols, rowCount * cols),
        ],
        grid(Math.ceil(segments * vecCols / threads), 1),
      );
      segmentFirst = segmentEnd;
    }
    grouping.dispose();
  }
  return into ? null : grad;
}

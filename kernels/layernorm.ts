/**
 * LayerNorm over the last axis, as `torch.nn.functional.layer_norm(x, [C], gamma, beta, eps)`.
 *
 * Forward is one row kernel (the layout of kernels/softmax.ts: a row spread over a workgroup or a
 * fraction of one, its values kept in registers): a shifted two-pass mean and biased variance, two
 * fixed-order trees, then the affine output; the per-row mean (relative to the row's first value)
 * and 1/std are saved for backward.
 * Backward is a row kernel for dx and, for gamma and beta, a column kernel that writes per-row-block
 * partial sums followed by a second pass of the same kernel that adds the blocks in order, so no
 * atomics are needed and results are bit-identical run to run.
 * Tensors beyond one storage binding are bound in runs of whole rows (the column sums: of whole
 * blocks), which leaves every sum's order unchanged.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { grid, kernelFor, rowWindows, rowWindowsFit, walkLimit } from "../engine/kernel.ts";
import { dispatch } from "../engine/recorder.ts";
import {
  attachGrad,
  composedOp,
  emptyTensor,
  expectTensor,
  gradientSink,
  needsGrad,
  type Tensor,
  zeros,
} from "../engine/tensor.ts";
import { formatShape, sameShape } from "../engine/shape.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";
import { add, div, mul, sqrt, sub } from "./elementwise.ts";
import { mean } from "./reduce.ts";
import {
  dispatchRows,
  layoutKey,
  rowGrid,
  rowInput,
  rowKernel,
  rowLayout,
  rowLoads,
  rowLoops,
  rowReduce,
  rowVariant,
  texelRows,
  vectorHelpers,
  vectorType,
  vectorWidth,
} from "./rows.ts";
import { texelRange, texelsPayOff, withTexels } from "../engine/texels.ts";

const sumOf = (a: string, b: string) => `${a} + ${b}`;

/** Rows whose parameter-gradient terms one workgroup adds before the blocks are added together. */
const BLOCK_ROWS = 128;

/**
 * Whether the row kernels of LayerNorm and RMSNorm can walk `rows` rows of `cols` values (and their
 * column sums whole blocks of them) in binding-sized runs; when not, the ops are composed of
 * windowed ops instead.
 */
export function normRowsFit(rows: number, cols: number): boolean {
  return rowWindowsFit(rows, [cols * 4, 4]) &&
    rowWindowsFit(Math.ceil(rows / BLOCK_ROWS), [BLOCK_ROWS * cols * 4, BLOCK_ROWS * 4]);
}

/**
 * Writes y and, for every row of x viewed as [rows, cols], its mean minus its first value and
 * 1/sqrt(var + eps): backward recomputes x - mean as (x - x[row, 0]) - centre, exactly as here, which
 * a float32 mean would spoil for rows with a large offset.
 */
function forward(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  eps: number,
  rows: number,
  cols: number,
  outputs: { y: Tensor; centre: Tensor; rstd: Tensor },
): void {
  const layout = rowLayout(cols);
  const type = vectorType(layout.width);
  const { y, centre, rstd } = outputs;
  const windows = rowWindows("layerNorm", rows, [cols * 4, 4]);
  const rowsOf = (t: Tensor, first: number, count: number) => t.window(first * cols, count * cols);
  const texel = texelRows(layout, [gamma.range(), beta.range(), ...windows.map(([f, c]) => rowsOf(x, f, c))]);
  // Sums are taken of x minus the row's first value, so that a constant row gives exactly zero
  // variance (y = beta) and a large offset does not swamp the deviations.
  const name = `layernorm_forward_${texel ? "texel" : rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32", eps: "f32" },
    bindings: [
      rowInput("x", type, texel),
      rowInput("gamma", type, texel),
      rowInput("beta", type, texel),
      { name: "y", type, write: true },
      { name: "centre", write: true },
      { name: "rstd", write: true },
    ],
    code: rowKernel(
      layout,
      `${rowLoads(["x", "gamma", "beta"], texel)}
${rowReduce("reduce_sum", "f32", sumOf, layout)}
${rowReduce("reduce_squares", "f32", sumOf, layout)}`,
      `var shift = 0.0;
  if (valid) { shift = first(load_x(base)); }
  var shifted: array<V, ${layout.perThread}>;
  var s = V(0.0);
  ${
        rowLoops(
          layout,
          "shifted[k] = load_x(base + j) - shift; s += shifted[k];",
          "s += load_x(base + j) - shift;",
        )
      }
  let n = f32(params.cols);
  let mu = reduce_sum(hsum(s), lane, slot) / n;
  var q = V(0.0);
  ${
        rowLoops(
          layout,
          "let c = shifted[k] - mu; q += c * c;",
          "let c = (load_x(base + j) - shift) - mu; q += c * c;",
        )
      }
  let r = inverseSqrt(reduce_squares(hsum(q), lane, slot) / n + params.eps);
  ${
        rowLoops(
          layout,
          "y[base + j] = (shifted[k] - mu) * r * load_gamma(j) + load_beta(j);",
          "y[base + j] = ((load_x(base + j) - shift) - mu) * r * load_gamma(j) + load_beta(j);",
        )
      }
  if (valid && lane == 0u) {
    centre[row] = mu;
    rstd[row] = r;
  }`,
    ),
  }));
  for (const [first, count] of windows) {
    const inputs = [rowsOf(x, first, count), gamma.range(), beta.range()];
    const rest = [rowsOf(y, first, count), centre.window(first, count), rstd.window(first, count)];
    dispatchRows(kernel, { rows: count, cols, eps }, inputs, rest, rowGrid(count, layout), texel);
  }
}

/** dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma, per row. */
function inputGradient(
  x: Tensor,
  gamma: Tensor,
  dy: Tensor,
  centre: Tensor,
  rstd: Tensor,
  rows: number,
  cols: number,
): Tensor {
  const layout = rowLayout(cols);
  const type = vectorType(layout.width);
  const windows = rowWindows("layerNorm backward", rows, [cols * 4, 4]);
  const rowsOf = (t: Tensor, first: number, count: number) => t.window(first * cols, count * cols);
  const texel = texelRows(layout, [
    gamma.range(),
    ...windows.flatMap(([f, c]) => [rowsOf(x, f, c), rowsOf(dy, f, c)]),
  ]);
  const name = `layernorm_backward_${texel ? "texel" : rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32" },
    bindings: [
      rowInput("x", type, texel),
      rowInput("gamma", type, texel),
      rowInput("dy", type, texel),
      { name: "centre" },
      { name: "rstd" },
      { name: "dx", type, write: true },
    ],
    code: rowKernel(
      layout,
      `${rowLoads(["x", "gamma", "dy"], texel)}
${rowReduce("reduce_pair", "vec2<f32>", sumOf, layout)}`,
      `var x0 = 0.0;
  var mu = 0.0;
  var r = 0.0;
  if (valid) {
    x0 = first(load_x(base));
    mu = centre[row];
    r = rstd[row];
  }
  var gs: array<V, ${layout.perThread}>;
  var hs: array<V, ${layout.perThread}>;
  var sg = V(0.0);
  var sgh = V(0.0);
  ${
        rowLoops(
          layout,
          "gs[k] = load_dy(base + j) * load_gamma(j); hs[k] = ((load_x(base + j) - x0) - mu) * r; sg += gs[k]; sgh += gs[k] * hs[k];",
          "let g = load_dy(base + j) * load_gamma(j); let h = ((load_x(base + j) - x0) - mu) * r; sg += g; sgh += g * h;",
        )
      }
  let m = reduce_pair(vec2<f32>(hsum(sg), hsum(sgh)), lane, slot) / f32(params.cols);
  ${
        rowLoops(
          layout,
          "dx[base + j] = r * (gs[k] - m.x - hs[k] * m.y);",
          "let g = load_dy(base + j) * load_gamma(j); let h = ((load_x(base + j) - x0) - mu) * r; dx[base + j] = r * (g - m.x - h * m.y);",
        )
      }`,
    ),
  }));
  const dx = emptyTensor(x.shape);
  for (const [first, count] of windows) {
    const statsOf = (t: Tensor) => t.window(first, count);
    const inputs = [rowsOf(x, first, count), gamma.range(), rowsOf(dy, first, count)];
    const rest = [statsOf(centre), statsOf(rstd), rowsOf(dx, first, count)];
    dispatchRows(kernel, { rows: count, cols }, inputs, rest, rowGrid(count, layout), texel);
  }
  return dx;
}

/** How the column sums of parameter gradients split a block of rows over a workgroup. */
export interface ColumnLayout {
  /** Vector columns per workgroup. */
  readonly tile: number;
  /** Invocations per column that split the block's rows (a power of two), added by a tree. */
  readonly lanes: number;
}

/** The column layout of each variant of `layernorm_column_sums`. */
const COLUMN_LAYOUTS: Record<KernelVariant<"layernorm_column_sums">, ColumnLayout> = {
  tree: { tile: 32, lanes: 8 },
  serial: { tile: 64, lanes: 1 },
  texel: { tile: 64, lanes: 1 },
};
let forcedColumns: ColumnLayout | null = null;

/**
 * Forces the column layout of the parameter-gradient sums, or restores the per-adapter choice with
 * null; tests use it to run the GPU's lane tree on a CPU adapter.
 */
export function forceColumnLayout(layout: ColumnLayout | null): void {
  if (layout && !(layout.tile >= 1 && layout.lanes >= 1 && (layout.lanes & (layout.lanes - 1)) === 0)) {
    throw new Error(`forceColumnLayout: invalid layout ${JSON.stringify(layout)}`);
  }
  forcedColumns = layout;
}

/** One input of {@linkcode columnSums}: a WGSL binding name and its tensor. */
export interface ColumnInput {
  /** Binding name used by the terms. */
  readonly name: string;
  /** The tensor bound. */
  readonly tensor: Tensor;
  /** True for [rows] tensors, read one float per row; others are [rows, cols], read in vectors. */
  readonly perRow?: boolean;
}

/**
 * Column sums of WGSL terms over blocks of `blockRows` rows: for every term, a [blocks, cols] tensor
 * (or [cols] when one block covers the rows) whose element (b, c) adds the term over rows of block
 * b in a fixed order. Terms read input vectors with `load_<name>(i)` (row `r`, vector column `col`)
 * and per-row values at `<name>[r]`. A workgroup takes a tile of vector columns; in the tree variant
 * (GPUs) 8 lanes per column split the block's rows and a tree in workgroup memory adds the lanes, in
 * the serial and texel variants (software adapters) one lane walks the block (no barrier), the texel
 * one reading the row inputs through textures. With one block, a term whose `into` is given adds its
 * sums onto that [cols] tensor (stored + sum, as autograd's accumulation adds) instead of a new one.
 */
function columnSums(
  variant: string,
  inputs: readonly ColumnInput[],
  terms: readonly string[],
  rows: number,
  cols: number,
  blockRows: number,
  into: readonly (Tensor | null)[] = [],
): Tensor[] {
  const width = vectorWidth(cols);
  const type = vectorType(width);
  const blocks = Math.ceil(rows / blockRows);
  const vectors = cols / width;
  if (blocks > 1 && into.some((t) => t)) {
    throw new Error("layerNorm column sums: only [cols] sums add into a tensor");
  }
  const outputs = terms.map((_, k) => into[k] ?? emptyTensor(blocks === 1 ? [cols] : [blocks, cols]));
  // Inputs beyond one binding are bound in windows of whole blocks, so every block adds the same
  // rows in the same order as in one dispatch and the partial sums are bit-identical. A window's
  // partial sums start where the binding alignment allows, at out_offset vectors into the binding.
  const floats = (input: ColumnInput) => input.perRow ? 1 : cols;
  const blockBytes = inputs.map((input) => blockRows * floats(input) * 4);
  const windows = rowWindows("layerNorm column sums", blocks, blockBytes).map(([firstBlock, count]) => {
    const firstRow = firstBlock * blockRows;
    const windowRows = Math.min(count * blockRows, rows - firstRow);
    return {
      firstBlock,
      count,
      windowRows,
      ranges: inputs.map((input) =>
        input.tensor.window(firstRow * floats(input), windowRows * floats(input))
      ),
    };
  });
  const chosen = kernelVariant(
    "layernorm_column_sums",
    () => gpu().profile.isSoftware ? (texelsPayOff(rows * cols) ? "texel" : "serial") : "tree",
  );
  // The texel variant reads the row inputs through textures: rows of whole vec4s on whole texels.
  const texel = chosen === "texel" && width === 4 &&
    windows.every((w) => w.ranges.every((r, k) => inputs[k].perRow || texelRange(r) !== null));
  const kind = chosen === "texel" && !texel ? "serial" : chosen;
  const { tile, lanes } = forcedColumns ?? COLUMN_LAYOUTS[kind];
  const threads = tile * lanes;
  const tree = (k: number) =>
    lanes === 1 ? "" : `
  tree${k}[lid] = acc${k};
  workgroupBarrier();
  for (var stride = ${lanes / 2}u; stride > 0u; stride >>= 1u) {
    if (lane < stride) { tree${k}[lid] += tree${k}[lid + stride * ${tile}u]; }
    workgroupBarrier();
  }
  acc${k} = tree${k}[lid];`;
  const kernel = kernelFor(`layernorm_column_sums_${kind}/${variant}/${width}/${tile}x${lanes}`, () => ({
    name: `layernorm_column_sums_${kind}`,
    params: {
      rows: "u32",
      vectors: "u32",
      block_rows: "u32",
      blocks: "u32",
      out_offset: "u32",
      add_to: "u32",
    },
    bindings: [
      ...inputs.map((input) => ({
        name: input.name,
        type: input.perRow ? "f32" as const : texel ? "texture" as const : type,
      })),
      ...terms.map((_, k) => ({ name: `out${k}`, type, write: true })),
    ],
    code: `
${vectorHelpers(width)}
${rowLoads(inputs.filter((input) => !input.perRow).map((input) => input.name), texel)}
${lanes === 1 ? "" : terms.map((_, k) => `var<workgroup> tree${k}: array<V, ${threads}>;`).join("\n")}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let tiles = (params.vectors + ${tile - 1}u) / ${tile}u;
  let group = wid.x + wid.y * groups.x;
  let col = (group % tiles) * ${tile}u + lid % ${tile}u;
  let lane = lid / ${tile}u;
  let block = group / tiles;
  let valid = col < params.vectors && block < params.blocks;
  let start = block * params.block_rows;
  let end = select(start, min(start + params.block_rows, params.rows), valid);
  ${terms.map((_, k) => `var acc${k} = V(0.0);`).join("\n  ")}
  for (var r = start + lane; r < end; r += ${lanes}u) {
    let i = r * params.vectors + col;
    ${terms.map((term, k) => `acc${k} += ${term};`).join("\n    ")}
  }
  ${terms.map((_, k) => tree(k)).join("")}
  if (valid && lane == 0u) {
    let at = params.out_offset + block * params.vectors + col;
    ${
      terms.map((_, k) =>
        `if ((params.add_to & ${1 << k}u) != 0u) { out${k}[at] += acc${k}; } else { out${k}[at] = acc${k}; }`
      ).join("\n    ")
    }
  }
}`,
  }));
  const alignFloats = gpu().profile.storageOffsetAlignment / 4;
  for (const { firstBlock, count, windowRows, ranges } of windows) {
    const outStart = Math.floor((firstBlock * cols) / alignFloats) * alignFloats;
    const outOffset = firstBlock * cols - outStart;
    const params = {
      rows: windowRows,
      vectors,
      block_rows: blockRows,
      blocks: count,
      out_offset: outOffset / width,
      // Bit k: term k adds onto its output's stored sums.
      add_to: terms.reduce((mask, _, k) => into[k] ? mask | (1 << k) : mask, 0),
    };
    const outs = outputs.map((t) => t.window(outStart, outOffset + count * cols));
    const groups = grid(Math.ceil(vectors / tile) * count, 1);
    if (texel) {
      const rowInputs = ranges.filter((_, k) => !inputs[k].perRow).map((r) => texelRange(r)!);
      withTexels(rowInputs, (views) => {
        let next = 0;
        const bound = ranges.map((r, k) => inputs[k].perRow ? r : views[next++]);
        dispatch(kernel, params, [...bound, ...outs], groups);
      });
    } else dispatch(kernel, params, [...ranges, ...outs], groups);
  }
  return outputs;
}

/**
 * Sums of WGSL terms over all `rows`, one [cols] tensor per term, in a fixed order: per-block partial
 * sums, then one more pass adding the blocks. The parameter gradients of LayerNorm and RMSNorm;
 * `variant` tells their inputs and terms apart in kernel keys. `rows` must be at least 1.
 * Inputs beyond one storage binding are bound in windows of whole blocks (bit-identical); only when
 * the partial sums themselves exceed a binding (inputs over 128 bindings), or their blocks number more
 * than a software adapter's walk ({@linkcode walkLimit}: over a million rows), are they added in blocks
 * again, a different order. A term whose `into` is given (a parameter's .grad, see gradientSink) adds its
 * sums onto it, which is then what is returned for it.
 */
export function parameterColumnSums(
  variant: string,
  inputs: readonly ColumnInput[],
  terms: readonly string[],
  rows: number,
  cols: number,
  into: readonly (Tensor | null)[] = [],
): Tensor[] {
  const blocks = Math.ceil(rows / BLOCK_ROWS);
  if (blocks === 1) return columnSums(variant, inputs, terms, rows, cols, BLOCK_ROWS, into);
  const partials = columnSums(variant, inputs, terms, rows, cols, BLOCK_ROWS);
  const names = partials.map((_, k) => `part${k}`);
  const partialInputs = partials.map((tensor, k) => ({ name: names[k], tensor }));
  const partialTerms = names.map((name) => `load_${name}(i)`);
  // The second pass has a lane walk every block: past walkLimit() blocks, they are added in blocks again.
  const sums = blocks * cols * 4 <= gpu().profile.maxStorageBindingBytes && blocks <= walkLimit()
    ? columnSums(`blocks${terms.length}`, partialInputs, partialTerms, blocks, cols, blocks, into)
    : parameterColumnSums(`blocks${terms.length}`, partialInputs, partialTerms, blocks, cols, into);
  for (const p of partials) p.dispose();
  return sums;
}

/**
 * Gradients of gamma (sum over rows of dy * xhat) and beta (sum over rows of dy), null where not
 * wanted or where added straight into the parameter's .grad (gradientSink): per-block partial sums,
 * then one more pass adding the blocks in order.
 */
function paramGradients(
  gamma: Tensor,
  beta: Tensor,
  x: Tensor,
  dy: Tensor,
  centre: Tensor,
  rstd: Tensor,
  rows: number,
  cols: number,
): [Tensor | null, Tensor | null] {
  const wantGamma = gamma.requiresGrad, wantBeta = beta.requiresGrad;
  if (!wantGamma && !wantBeta) return [null, null];
  const sinks = [...(wantGamma ? [gradientSink(gamma)] : []), ...(wantBeta ? [gradientSink(beta)] : [])];
  let grads: (Tensor | null)[];
  // No rows add nothing: a sink keeps its gradient, other parameters get zeros.
  if (rows === 0) grads = sinks.map((sink) => sink ? null : zeros([cols]));
  else {
    const perRow = (name: string, tensor: Tensor) => ({ name, tensor, perRow: true });
    const inputs: ColumnInput[] = wantGamma
      ? [{ name: "x", tensor: x }, { name: "dy", tensor: dy }, perRow("centre", centre), perRow("rstd", rstd)]
      : [{ name: "dy", tensor: dy }];
    const terms = [
      ...(wantGamma
        ? ["load_dy(i) * (((load_x(i) - first(load_x(r * params.vectors))) - centre[r]) * rstd[r])"]
        : []),
      ...(wantBeta ? ["load_dy(i)"] : []),
    ];
    const variant = wantGamma && wantBeta ? "both" : wantGamma ? "gamma" : "beta";
    grads = parameterColumnSums(variant, inputs, terms, rows, cols, sinks)
      .map((grad, k) => sinks[k] ? null : grad);
  }
  const [first, second] = grads;
  if (wantGamma && wantBeta) return [first, second];
  return wantGamma ? [first, null] : [null, first];
}

/**
 * LayerNorm over the last axis, as `torch.nn.functional.layer_norm(x, [C], gamma, beta, eps)`:
 * x [..., C], gamma and beta [C]; the variance is biased (divided by C) and `eps` (PyTorch's default
 * 1e-5) is added to it.
 */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps = 1e-5): Tensor {
  Object.entries({ x, gamma, beta }).forEach(([name, t]) => expectTensor("layerNorm", t, name));
  for (const t of [x, gamma, beta]) {
    if (t.dtype !== "float32") throw new Error(`layerNorm: ${t.describe()} is not float32`);
  }
  if (x.rank === 0 || x.shape[x.rank - 1] === 0) {
    throw new Error(`layerNorm: x ${formatShape(x.shape)} has no values along its last axis to normalise`);
  }
  const cols = x.shape[x.rank - 1];
  const rows = x.size / cols;
  for (const [name, t] of [["gamma", gamma], ["beta", beta]] as const) {
    if (!sameShape(t.shape, [cols])) {
      throw new Error(
        `layerNorm: ${name} ${formatShape(t.shape)} does not match the last dimension of x ${
          formatShape(x.shape)
        } (expected [${cols}])`,
      );
    }
  }
  if (!(eps >= 0 && Number.isFinite(eps))) {
    throw new Error(`layerNorm: eps must be a finite number >= 0, got ${eps}`);
  }
  if (!normRowsFit(rows, cols)) return wideLayerNorm(x, gamma, beta, eps);
  const y = emptyTensor(x.shape);
  const centre = emptyTensor([rows]);
  const rstd = emptyTensor([rows]);
  forward(x, gamma, beta, eps, rows, cols, { y, centre, rstd });
  if (!needsGrad(x, gamma, beta)) {
    centre.dispose();
    rstd.dispose();
    return y;
  }
  return attachGrad(y, "layerNorm", [x, gamma, beta], (g) => {
    const dx = x.requiresGrad ? inputGradient(x, gamma, g, centre, rstd, rows, cols) : null;
    return [dx, ...paramGradients(gamma, beta, x, g, centre, rstd, rows, cols)];
  });
}

/**
 * LayerNorm of rows too wide for its row kernels (see {@linkcode normRowsFit}), composed of windowed
 * ops with the same two passes: the mean, then the mean of squared deviations; autograd follows them.
 */
function wideLayerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  const axis = x.rank - 1;
  return composedOp([x, gamma, beta], (temp) => {
    const centred = temp(sub(x, temp(mean(x, axis, { keepDims: true }))));
    const variance = temp(mean(temp(mul(centred, centred)), axis, { keepDims: true }));
    const normalised = temp(div(centred, temp(sqrt(temp(add(variance, eps))))));
    return add(temp(mul(normalised, gamma)), beta);
  });
}

/**
 * RMSNorm over the last axis, as `torch.nn.functional.rms_norm(x, [C], gamma, eps)`:
 * y = x / sqrt(mean(x^2) + eps) * gamma, LayerNorm without the centring and the shift (Zhang &
 * Sennrich 2019; the norm of LLaMA-style decoders).
 *
 * Forward is one row kernel (the row layout of kernels/rows.ts, as LayerNorm and softmax): a
 * fixed-order tree of the squares, then the scaled output; 1/rms of every row is saved for backward.
 * Backward is a row kernel for dx = rstd * (g - xhat * mean(g * xhat)), with g = dy * gamma and
 * xhat = x * rstd, and LayerNorm's column sums for gamma's gradient, sum over rows of dy * xhat
 * (listed by `MM_DEBUG` as `layernorm_column_sums_*`). Float64 reference: kernels/reference/rmsnorm.ts.
 *
 * @module
 */
import { kernelFor, rowWindows } from "../engine/kernel.ts";
import { dispatch } from "../engine/recorder.ts";
import { formatShape, sameShape } from "../engine/shape.ts";
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
import { add, div, mul, sqrt } from "./elementwise.ts";
import { normRowsFit, parameterColumnSums } from "./layernorm.ts";
import { mean } from "./reduce.ts";
import {
  layoutKey,
  rowGrid,
  rowKernel,
  rowLayout,
  rowLoops,
  rowReduce,
  rowVariant,
  vectorType,
} from "./rows.ts";

const sumOf = (a: string, b: string) => `${a} + ${b}`;

/** Writes y and, for every row of x viewed as [rows, cols], 1/sqrt(mean(x^2) + eps). */
function forward(x: Tensor, gamma: Tensor, eps: number, rows: number, cols: number, y: Tensor, rstd: Tensor) {
  const layout = rowLayout(cols);
  const type = vectorType(layout.width);
  const name = `rmsnorm_forward_${rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32", eps: "f32" },
    bindings: [
      { name: "x", type },
      { name: "gamma", type },
      { name: "y", type, write: true },
      { name: "rstd", write: true },
    ],
    code: rowKernel(
      layout,
      rowReduce("reduce_squares", "f32", sumOf, layout),
      `var xs: array<V, ${layout.perThread}>;
  var q = V(0.0);
  ${rowLoops(layout, "xs[k] = x[base + j]; q += xs[k] * xs[k];", "let v = x[base + j]; q += v * v;")}
  let r = inverseSqrt(reduce_squares(hsum(q), lane, slot) / f32(params.cols) + params.eps);
  ${rowLoops(layout, "y[base + j] = xs[k] * r * gamma[j];", "y[base + j] = x[base + j] * r * gamma[j];")}
  if (valid && lane == 0u) { rstd[row] = r; }`,
    ),
  }));
  for (const [first, count] of rowWindows("rmsNorm", rows, [cols * 4, 4])) {
    const rowsOf = (t: Tensor) => t.window(first * cols, count * cols);
    dispatch(
      kernel,
      { rows: count, cols, eps },
      [rowsOf(x), gamma.range(), rowsOf(y), rstd.window(first, count)],
      rowGrid(count, layout),
    );
  }
}

/** dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * gamma and xhat = x * rstd, per row. */
function inputGradient(
  x: Tensor,
  gamma: Tensor,
  dy: Tensor,
  rstd: Tensor,
  rows: number,
  cols: number,
): Tensor {
  const layout = rowLayout(cols);
  const type = vectorType(layout.width);
  const name = `rmsnorm_backward_${rowVariant()}`;
  const kernel = kernelFor(`${name}/${layoutKey(layout)}`, () => ({
    name,
    params: { rows: "u32", cols: "u32" },
    bindings: [
      { name: "x", type },
      { name: "gamma", type },
      { name: "dy", type },
      { name: "rstd" },
      { name: "dx", type, write: true },
    ],
    code: rowKernel(
      layout,
      rowReduce("reduce_sum", "f32", sumOf, layout),
      `var r = 0.0;
  if (valid) { r = rstd[row]; }
  var gs: array<V, ${layout.perThread}>;
  var hs: array<V, ${layout.perThread}>;
  var sgh = V(0.0);
  ${
        rowLoops(
          layout,
          "gs[k] = dy[base + j] * gamma[j]; hs[k] = x[base + j] * r; sgh += gs[k] * hs[k];",
          "sgh += dy[base + j] * gamma[j] * (x[base + j] * r);",
        )
      }
  let m = reduce_sum(hsum(sgh), lane, slot) / f32(params.cols);
  ${
        rowLoops(
          layout,
          "dx[base + j] = r * (gs[k] - hs[k] * m);",
          "dx[base + j] = r * (dy[base + j] * gamma[j] - x[base + j] * r * m);",
        )
      }`,
    ),
  }));
  const dx = emptyTensor(x.shape);
  for (const [first, count] of rowWindows("rmsNorm backward", rows, [cols * 4, 4])) {
    const rowsOf = (t: Tensor) => t.window(first * cols, count * cols);
    dispatch(
      kernel,
      { rows: count, cols },
      [rowsOf(x), gamma.range(), rowsOf(dy), rstd.window(first, count), rowsOf(dx)],
      rowGrid(count, layout),
    );
  }
  return dx;
}

/**
 * gamma's gradient: the sum over rows of dy * x * rstd; null when added straight into gamma's .grad
 * (gradientSink).
 */
function gammaGradient(
  gamma: Tensor,
  x: Tensor,
  dy: Tensor,
  rstd: Tensor,
  rows: number,
  cols: number,
): Tensor | null {
  const sink = gradientSink(gamma);
  if (rows === 0) return sink ? null : zeros([cols]);
  const inputs = [{ name: "x", tensor: x }, { name: "dy", tensor: dy }, {
    name: "rstd",
    tensor: rstd,
    perRow: true,
  }];
  const term = "load_dy(i) * (load_x(i) * rstd[r])";
  const [grad] = parameterColumnSums("rmsnorm_gamma", inputs, [term], rows, cols, [sink]);
  return sink ? null : grad;
}

/**
 * RMSNorm over the last axis, as `torch.nn.functional.rms_norm(x, [C], gamma, eps)`: x [..., C],
 * gamma [C]; `eps` is added to the mean of the squares. y = x / sqrt(mean(x^2) + eps) * gamma.
 */
export function rmsNorm(x: Tensor, gamma: Tensor, eps: number): Tensor {
  Object.entries({ x, gamma }).forEach(([name, t]) => expectTensor("rmsNorm", t, name));
  for (const t of [x, gamma]) {
    if (t.dtype !== "float32") throw new Error(`rmsNorm: ${t.describe()} is not float32`);
  }
  if (x.rank === 0 || x.shape[x.rank - 1] === 0) {
    throw new Error(`rmsNorm: x ${formatShape(x.shape)} has no values along its last axis to normalise`);
  }
  const cols = x.shape[x.rank - 1];
  const rows = x.size / cols;
  if (!sameShape(gamma.shape, [cols])) {
    throw new Error(
      `rmsNorm: gamma ${formatShape(gamma.shape)} does not match the last dimension of x ${
        formatShape(x.shape)
      } (expected [${cols}])`,
    );
  }
  if (!(eps >= 0 && Number.isFinite(eps))) {
    throw new Error(`rmsNorm: eps must be a finite number >= 0, got ${eps}`);
  }
  if (!normRowsFit(rows, cols)) return wideRmsNorm(x, gamma, eps);
  const y = emptyTensor(x.shape);
  const rstd = emptyTensor([rows]);
  forward(x, gamma, eps, rows, cols, y, rstd);
  if (!needsGrad(x, gamma)) {
    rstd.dispose();
    return y;
  }
  return attachGrad(y, "rmsNorm", [x, gamma], (g) => [
    x.requiresGrad ? inputGradient(x, gamma, g, rstd, rows, cols) : null,
    gamma.requiresGrad ? gammaGradient(gamma, x, g, rstd, rows, cols) : null,
  ]);
}

/** RMSNorm of rows too wide for its row kernels (see `normRowsFit`), composed of windowed ops; autograd follows them. */
function wideRmsNorm(x: Tensor, gamma: Tensor, eps: number): Tensor {
  return composedOp([x, gamma], (temp) => {
    const meanSquare = temp(mean(temp(mul(x, x)), x.rank - 1, { keepDims: true }));
    return mul(temp(div(x, temp(sqrt(temp(add(meanSquare, eps)))))), gamma);
  });
}

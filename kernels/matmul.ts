/**
 * Batched matrix multiplication with transposes, NumPy batch broadcasting and a fused bias, and
 * `linear` (PyTorch's F.linear) on top of it.
 *
 * The kernel, generated per tile configuration and operand layout, is in matmul_kernel.ts; this
 * file holds the ops, their validation, the chunking of large problems into dispatches and the
 * backward.
 *
 * Workgroups cover column tiles in x, row tiles in y and batches in z; problems beyond the device's
 * workgroup-count or storage-binding limits are cut into chunks that each bind only the window of
 * every operand they read. A chunk may also cover part of the inner dimension (an operand of 50 k
 * rows, such as GPT-2's token table in the LM head's backward): later inner chunks start from the
 * partial sums already stored and the bias is added by the last, so every output still adds its
 * products in ascending k. Sums run in a fixed order, so results are bit-identical run to run and
 * whatever the chunking.
 *
 * @module
 */
import { bindWindow, walkLimit } from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { gpu } from "../engine/device.ts";
import { checkOptions } from "../engine/options.ts";
import {
  attachGrad,
  emptyTensor,
  expectTensor,
  gradientSink,
  noGrad,
  type Tensor,
} from "../engine/tensor.ts";
import { broadcastShapes, broadcastStrides, formatShape, sameShape, shapeSize } from "../engine/shape.ts";
import { chooseTiles, gemmKernel, isTexel } from "./matmul_kernel.ts";
import { biasGradient, sumToShape } from "./reduce.ts";
import { withTexels } from "../engine/texels.ts";

/** Options of {@linkcode matmul}. */
export interface MatmulOptions {
  /** Treat the last two dims of `a` as transposed: a is [..., K, M]. */
  transposeA?: boolean;
  /** Treat the last two dims of `b` as transposed: b is [..., N, K] (PyTorch Linear weight layout [out, in]). */
  transposeB?: boolean;
  /** [N] added to every output row in the kernel's epilogue (fused, no extra dispatch). */
  bias?: Tensor;
}

/** A stored operand: `tensor` viewed as a batch of [rows, cols] matrices. */
interface Operand {
  readonly tensor: Tensor;
  readonly batch: readonly number[];
  readonly rows: number;
  readonly cols: number;
}

/** Views a tensor as a batch of matrices, or as one matrix of all its leading rows when `flat`. */
function operand(tensor: Tensor, flat = false): Operand {
  const cols = tensor.shape[tensor.rank - 1];
  return flat
    ? { tensor, batch: [], rows: shapeSize(tensor.shape.slice(0, -1)), cols }
    : { tensor, batch: tensor.shape.slice(0, -2), rows: tensor.shape[tensor.rank - 2], cols };
}

/** A run of batch dimensions with the element stride of each operand (0 where broadcast). */
interface BatchDim {
  size: number;
  a: number;
  b: number;
  c: number;
}

/** Drops unit batch dimensions and merges neighbours that every operand walks contiguously. */
function batchDims(batch: readonly number[], strides: readonly number[][]): BatchDim[] {
  const dims: BatchDim[] = [];
  batch.forEach((size, r) => {
    if (size === 1) return;
    const [a, b, c] = strides.map((s) => s[r]);
    const last = dims.at(-1);
    if (last && last.a === a * size && last.b === b * size && last.c === c * size) {
      Object.assign(last, { size: last.size * size, a, b, c });
    } else dims.push({ size, a, b, c });
  });
  return dims;
}

/** A bound window of an operand and the shift that maps its element indices into the window. */
interface Window {
  range: BufferRange;
  shift: number;
}

/** Binds elements [lo, hi) of a tensor; `shift` takes an index from `lead` on into the binding (mod 2^32). */
function window(tensor: Tensor, lo: number, hi: number, lead: number): Window {
  const { range, first } = bindWindow(tensor, lo, hi);
  return { range, shift: (lead - first) >>> 0 };
}

/** What {@linkcode product} computes besides its operands. */
interface ProductOptions {
  transA: boolean;
  transB: boolean;
  bias?: Tensor;
  /** Shape of the result; [...batch, M, N] when omitted. */
  outShape?: readonly number[];
  /** Adds the product onto this tensor (of the result's shape) instead of writing a new one. */
  into?: Tensor;
  /**
   * Also writes the sums over the inner dimension of op(a)'s rows or op(b)'s columns (OperandSums)
   * into `to` ([M] or [N]), added onto its values with `add`; only for products without a batch.
   */
  sums?: { operand: "a" | "b"; to: Tensor; add: boolean };
}

/**
 * Computes op(a) x op(b) (+ bias) for stored operands into a new tensor, in as few dispatches as the
 * device limits allow.
 */
function product(op: string, a: Operand, b: Operand, options: ProductOptions): Tensor {
  const { transA, transB, bias } = options;
  const M = transA ? a.cols : a.rows, K = transA ? a.rows : a.cols, N = transB ? b.rows : b.cols;
  let batch: number[];
  try {
    batch = broadcastShapes(op, [a.batch, b.batch]);
  } catch {
    const pair = `${formatShape(a.tensor.shape)} x ${formatShape(b.tensor.shape)}`;
    throw new Error(`${op}: batch dimensions do not broadcast, ${pair}`);
  }
  const outShape = options.outShape ?? [...batch, M, N];
  if (options.into && !sameShape(options.into.shape, outShape)) {
    throw new Error(`${op}: cannot add a ${formatShape(outShape)} product into ${options.into.describe()}`);
  }
  const out = options.into ?? emptyTensor(outShape);
  if (out.size === 0 && options.sums) throw new Error(`${op}: operand sums of an empty product`);
  if (out.size === 0) return out;
  const aligned = (o: Operand, contiguous: number) => contiguous % 4 === 0 && o.tensor.byteOffset % 16 === 0;
  const layout = { transA, transB, vecA: aligned(a, transA ? M : K), vecB: aligned(b, transB ? K : N) };
  const { variant, tiles: t } = chooseTiles(shapeSize(batch), M, N, layout.vecA && layout.vecB);
  const sums = options.sums;
  if (sums && (shapeSize(batch) !== 1 || sums.to.size !== (sums.operand === "a" ? M : N))) {
    throw new Error(`${op}: operand sums of a batched product or into ${sums.to.describe()}`);
  }
  const kernel = gemmKernel(variant, { ...layout, vecC: N % 4 === 0, sums: sums?.operand ?? "none" });
  const texel = isTexel(variant);
  const strides = [a, b].map((o) => broadcastStrides(o.batch, batch).map((s) => s * o.rows * o.cols));
  strides.push(broadcastStrides(batch, batch).map((s) => s * M * N));
  const dims = batchDims(batch, strides);
  const unit: BatchDim = { size: 1, a: 0, b: 0, c: 0 };
  // The last two runs of batch dimensions go to z; any others are looped over here.
  const [outer, inner] = [dims.at(-2) ?? unit, dims.at(-1) ?? unit];
  const leading = dims.slice(0, -2);
  const batchCount = outer.size * inner.size;
  const rowTiles = Math.ceil(M / t.rows), colTiles = Math.ceil(N / t.cols);
  const { maxStorageBindingBytes, maxWorkgroupsPerDimension: limit } = gpu().profile;

  /** A chunk: batches [z0, z1), row tiles [r0, r1), column tiles [c0, c1), inner steps [k0, k1). */
  type Chunk = {
    z0: number;
    z1: number;
    r0: number;
    r1: number;
    c0: number;
    c1: number;
    k0: number;
    k1: number;
  };
  /** The windows of a, b and c that a chunk touches. */
  const windows = (lead: BatchDim, { z0, z1, r0, r1, c0, c1, k0, k1 }: Chunk) => {
    const low = { a: Infinity, b: Infinity, c: Infinity }, high = { a: 0, b: 0, c: 0 };
    for (let z = z0; z < z1; z++) {
      for (const k of ["a", "b", "c"] as const) {
        const offset = lead[k] + Math.floor(z / inner.size) * outer[k] + (z % inner.size) * inner[k];
        low[k] = Math.min(low[k], offset);
        high[k] = Math.max(high[k], offset);
      }
    }
    const m0 = r0 * t.rows, m1 = Math.min(M, r1 * t.rows), n0 = c0 * t.cols, n1 = Math.min(N, c1 * t.cols);
    const [la, ha] = K === 0
      ? [0, 0]
      : transA
      ? [k0 * M + m0, (k1 - 1) * M + m1]
      : [m0 * K + k0, (m1 - 1) * K + k1];
    const [lb, hb] = K === 0
      ? [0, 0]
      : transB
      ? [n0 * K + k0, (n1 - 1) * K + k1]
      : [k0 * N + n0, (k1 - 1) * N + n1];
    return [
      window(a.tensor, low.a + la, high.a + ha, lead.a),
      window(b.tensor, low.b + lb, high.b + hb, lead.b),
      window(out, low.c + m0 * N + n0, high.c + (m1 - 1) * N + n1, lead.c),
    ];
  };
  const biasWindow = bias && window(bias, 0, N, 0);
  const largest = (w: Window[]) => Math.max(...w.map((x) => x.range.size));
  const tooLarge = () =>
    new Error(`${op}: a chunk of ${formatShape(out.shape)} exceeds the storage binding limit`);

  // Chunk sizes in batches, row tiles, column tiles and inner steps: while a window does not fit,
  // the one of them whose halving shrinks the largest window most is halved. Inner chunks stay a
  // multiple of 16 steps (every variant's slice depth) and later ones accumulate onto the output.
  const size = {
    z: Math.min(batchCount, limit),
    m: Math.min(rowTiles, limit),
    n: Math.min(colTiles, limit),
    k: K,
  };
  const first = (s: typeof size): Chunk => ({
    z0: 0,
    z1: s.z,
    r0: 0,
    r1: s.m,
    c0: 0,
    c1: s.n,
    k0: 0,
    k1: s.k,
  });
  const halved = (s: typeof size, d: keyof typeof size) => ({
    ...s,
    [d]: d === "k" ? Math.ceil(s.k / 32) * 16 : Math.ceil(s[d] / 2),
  });
  while (largest(windows(unit, first(size))) > maxStorageBindingBytes) {
    const options = (["z", "m", "n", "k"] as const).filter((d) => d === "k" ? size.k > 16 : size[d] > 1);
    if (options.length === 0) throw tooLarge();
    const score = (d: keyof typeof size) => largest(windows(unit, first(halved(size, d))));
    const best = options.reduce((x, y) => score(y) < score(x) ? y : x);
    Object.assign(size, halved(size, best));
  }
  // A software adapter's invocation walks a chunk's inner steps four at a time, at most walkLimit() walks.
  size.k = Math.min(size.k, 4 * walkLimit());
  for (let l = 0; l < shapeSize(leading.map((d) => d.size)); l++) {
    const lead = { ...unit };
    for (let r = leading.length - 1, rest = l; r >= 0; r--) {
      const coord = rest % leading[r].size;
      rest = Math.floor(rest / leading[r].size);
      for (const k of ["a", "b", "c"] as const) lead[k] += coord * leading[r][k];
    }
    for (let z0 = 0; z0 < batchCount; z0 += size.z) {
      for (let r0 = 0; r0 < rowTiles; r0 += size.m) {
        for (let c0 = 0; c0 < colTiles; c0 += size.n) {
          // K = 0 still runs one chunk, which stores the bias (or zeros).
          for (let k0 = 0; k0 < Math.max(K, 1); k0 += Math.max(size.k, 1)) {
            const chunk = {
              z0,
              z1: Math.min(batchCount, z0 + size.z),
              r0,
              r1: Math.min(rowTiles, r0 + size.m),
              c0,
              c1: Math.min(colTiles, c0 + size.n),
              k0,
              k1: Math.min(K, k0 + size.k),
            };
            const [wa, wb, wc] = windows(lead, chunk);
            if (largest([wa, wb, wc]) > maxStorageBindingBytes) throw tooLarge();
            const last = chunk.k1 === K;
            const params = {
              M,
              N,
              K,
              batch_inner: inner.size,
              a_outer: outer.a,
              a_inner: inner.a,
              b_outer: outer.b,
              b_inner: inner.b,
              c_outer: outer.c,
              c_inner: inner.c,
              batch0: z0,
              row_tile0: r0,
              col_tile0: c0,
              a_shift: wa.shift,
              b_shift: wb.shift,
              c_shift: wc.shift,
              has_bias: bias && last ? 1 : 0,
              bias_shift: biasWindow?.shift ?? 0,
              k_begin: k0,
              k_end: chunk.k1,
              accumulate: k0 > 0 || options.into ? 1 : 0,
              sums_mode: k0 > 0 ? 2 : sums?.add ? 1 : 0,
            };
            const others = [biasWindow?.range ?? wa.range, wc.range, ...(sums ? [sums.to.range()] : [])];
            const groups: [number, number, number] = [chunk.c1 - c0, chunk.r1 - r0, chunk.z1 - z0];
            if (texel) {
              withTexels(
                [wa.range, wb.range],
                (views) => dispatch(kernel, params, [...views, ...others], groups),
              );
            } else dispatch(kernel, params, [wa.range, wb.range, ...others], groups);
          }
        }
      }
    }
  }
  return out;
}

/**
 * Throws unless both operands are float32 of rank >= 1 (a vector not transposed) with matching inner
 * dimensions, and a bias has one value per output column of a matrix b.
 */
function checkOperands(op: string, a: Tensor, b: Tensor, options: MatmulOptions): void {
  const { transposeA: transA = false, transposeB: transB = false, bias } = options;
  expectTensor(op, a, "operand a");
  expectTensor(op, b, "operand b");
  const pair = `${formatShape(a.shape)} x ${formatShape(b.shape)}`;
  for (const t of [a, b]) if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
  if (a.rank === 0 || b.rank === 0) throw new Error(`${op}: both operands need rank >= 1, ${pair}`);
  if ((transA && a.rank === 1) || (transB && b.rank === 1)) {
    throw new Error(`${op}: a transpose needs a matrix, not a vector, ${pair}`);
  }
  if (bias && b.rank === 1) {
    throw new Error(`${op}: a bias needs output columns, which a vector b has not, ${pair}`);
  }
  if (
    a.shape[a.rank - (transA && a.rank > 1 ? 2 : 1)] !== b.shape[b.rank - (transB || b.rank === 1 ? 1 : 2)]
  ) {
    const flags = [transA ? "transposeA" : "", transB ? "transposeB" : ""].filter((f) => f).join(", ");
    throw new Error(`${op}: inner dimensions differ, ${pair}${flags ? ` (${flags})` : ""}`);
  }
  const N = b.shape[b.rank - (transB ? 2 : 1)];
  if (bias && (bias.dtype !== "float32" || !sameShape(bias.shape, [N]))) {
    throw new Error(`${op}: bias ${bias.describe()} does not match the ${N} output columns of ${pair}`);
  }
}

/** Sums a gradient over the batch dimensions its input was broadcast along. */
function reduceTo(full: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(full.shape, shape)) return full;
  const reduced = sumToShape(full, shape);
  full.dispose();
  return reduced;
}

/**
 * Batched matrix product: a [..., M, K] x b [..., K, N] -> [..., M, N], batch dims broadcast
 * NumPy-style (b may be 2-D and shared by every batch). Transposes and the bias are applied inside
 * the kernel; the backward uses transposed products too, so nothing is transposed in memory. As
 * `torch.matmul`, a 1-D operand is a vector: `a` [K] is one row and `b` [K] one column, and that
 * dimension is dropped from the result ([K] x [K] is a 0-D dot product, [K] x [..., K, N] is [..., N]).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  checkOptions("matmul", options, ["transposeA", "transposeB", "bias"]);
  const { transposeA = false, transposeB = false, bias } = options;
  checkOperands("matmul", a, b, options);
  if (a.rank === 1 || b.rank === 1) return vectorProduct(a, b, options);
  const N = b.shape[b.rank - (transposeB ? 2 : 1)];
  // A shared 2-D weight turns the batch into rows of one large product (and, in the backward, into
  // the inner dimension of the weight's gradient: dW = X^T dY with X as [batch * M, K]).
  const fold = b.rank === 2 && a.rank > 2 && !transposeA;
  const outShape = fold ? [...a.shape.slice(0, -1), N] : undefined;
  const options2 = { transA: transposeA, transB: transposeB, bias, outShape };
  const out = product("matmul", operand(a, fold), operand(b), options2);
  return attachGrad(out, "matmul", bias ? [a, b, bias] : [a, b], (g) => {
    const sg = operand(g, fold), sa = operand(a, fold), sb = operand(b);
    const op = "matmul backward";
    let gradA: Tensor | null = null, gradB: Tensor | null = null;
    if (a.requiresGrad) {
      gradA = reduceTo(
        transposeA ? product(op, sb, sg, { transA: transposeB, transB: true }) : product(op, sg, sb, {
          transA: false,
          transB: !transposeB,
          outShape: fold ? a.shape : undefined,
        }),
        a.shape,
      );
    }
    // A 2-D weight's gradient has no batch to sum: a parameter's is added straight into its .grad,
    // and its product also sums the bias's gradient out of g (the rows of g^T, or the columns of g).
    const unbatched = b.rank === 2 && (fold || a.rank === 2);
    const biasSink = bias?.requiresGrad ? gradientSink(bias) : null;
    const biasSums = bias?.requiresGrad && b.requiresGrad && unbatched && b.size > 0
      ? {
        operand: transposeB ? "a" as const : "b" as const,
        to: biasSink ?? emptyTensor([N]),
        add: !!biasSink,
      }
      : undefined;
    if (b.requiresGrad) {
      const into = (unbatched ? gradientSink(b) : null) ?? undefined;
      const grad = transposeB
        ? product(op, sg, sa, { transA: true, transB: transposeA, into, sums: biasSums })
        : product(op, sa, sg, { transA: !transposeA, transB: false, into, sums: biasSums });
      gradB = into ? null : reduceTo(grad, b.shape);
    }
    const gradBias = biasSums
      ? (biasSink ? null : biasSums.to)
      : bias?.requiresGrad
      ? biasGradient(g, biasSink)
      : null;
    return bias ? [gradA, gradB, gradBias] : [gradA, gradB];
  });
}

/** `fn` of a view of `t` as `shape`, the view disposed after (a view would otherwise hold t's buffer). */
function viewed(t: Tensor, shape: readonly number[], fn: (view: Tensor) => Tensor): Tensor {
  const view = t.reshape(shape);
  try {
    return fn(view);
  } finally {
    view.dispose();
  }
}

/** `t` reshaped to `shape`, `t` disposed. */
function reshaped(t: Tensor, shape: readonly number[]): Tensor {
  const out = t.reshape(shape);
  t.dispose();
  return out;
}

/**
 * {@linkcode matmul} with a 1-D operand: the vector as a one-row (a) or one-column (b) matrix, that
 * dimension dropped after. It is a node of its own: recorded through views, the graph would hold the
 * operands' buffers through the views after the caller disposes them.
 */
function vectorProduct(a: Tensor, b: Tensor, options: MatmulOptions): Tensor {
  const { transposeA = false, transposeB = false, bias } = options;
  const shapeA = a.rank === 1 ? [1, a.shape[0]] : a.shape;
  const shapeB = b.rank === 1 ? [b.shape[0], 1] : b.shape;
  const matrices = (fn: (a2: Tensor, b2: Tensor) => Tensor) =>
    viewed(a, shapeA, (a2) => viewed(b, shapeB, (b2) => fn(a2, b2)));
  let product: readonly number[] = [];
  const out = noGrad(() =>
    matrices((a2, b2) => {
      const full = matmul(a2, b2, options);
      product = full.shape;
      // Drop the row a vector a added (second to last) and the column a vector b added (last).
      return reshaped(
        full,
        product.filter((_, i) =>
          !(a.rank === 1 && i === product.length - 2) && !(b.rank === 1 && i === product.length - 1)
        ),
      );
    })
  );
  const parents = bias ? [a, b, bias] : [a, b];
  return attachGrad(out, "matmul", parents, (g) => {
    // matmul's backward on the matrices: products with g, summed over the batch an operand was broadcast along.
    const g2 = g.reshape(product);
    const gradA = a.requiresGrad
      ? matrices((a2, b2) => {
        const full = transposeA
          ? matmul(b2, g2, { transposeA: transposeB, transposeB: true })
          : matmul(g2, b2, { transposeB: !transposeB });
        return reshaped(reduceTo(full, a2.shape), a.shape);
      })
      : null;
    const gradB = b.requiresGrad
      ? matrices((a2, b2) => {
        const full = transposeB
          ? matmul(g2, a2, { transposeA: true, transposeB: transposeA })
          : matmul(a2, g2, { transposeA: !transposeA });
        return reshaped(reduceTo(full, b2.shape), b.shape);
      })
      : null;
    const gradBias = bias?.requiresGrad ? sumToShape(g2, bias.shape) : null;
    g2.dispose();
    return bias ? [gradA, gradB, gradBias] : [gradA, gradB];
  });
}

/** PyTorch's F.linear: x [..., in] · weight[out, in]^T + bias -> [..., out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  expectTensor("linear", x, "x");
  expectTensor("linear", weight, "weight");
  if (bias != null) expectTensor("linear", bias, "bias"); // null is PyTorch's bias=None
  if (weight.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new Error(
      `linear: input ${formatShape(x.shape)} does not match weight ${formatShape(weight.shape)}`,
    );
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(
      `linear: bias ${bias.describe()} does not match weight ${formatShape(weight.shape)}; ` +
        `expected [${weight.shape[0]}]`,
    );
  }
  return matmul(x, weight, { transposeB: true, ...(bias ? { bias } : {}) });
}

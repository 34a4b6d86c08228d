/**
 * Batched matrix multiplication with transposes, NumPy batch broadcasting and a fused bias, and
 * `linear` (PyTorch's F.linear) on top of it.
 *
 * One register-tiled kernel, generated per tile configuration and operand layout: a workgroup
 * computes a `rows x cols` block of the output and each invocation a `threadRows x threadCols` block
 * of it, accumulated in registers by unrolled outer products. On GPUs the workgroup stages
 * `depth`-deep slices of both operands in workgroup memory (loaded as vec4 where alignment allows,
 * the next slice's loads issued before the current slice's arithmetic). On software adapters
 * (llvmpipe) every memory access is a loop over the SIMD lanes, so staging saves no loads and costs
 * a store, a load and two barriers per element: there each invocation reads its operands directly,
 * four steps of the inner dimension at a time.
 *
 * Workgroups cover column tiles in x, row tiles in y and batches in z; problems beyond the device's
 * workgroup-count or storage-binding limits are cut into chunks that each bind only the window of
 * every operand they read. Sums run in a fixed order, so results are bit-identical run to run.
 *
 * @module
 */
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { kernelFor, type ParamType } from "../engine/kernel.ts";
import { gpu } from "../engine/device.ts";
import { attachGrad, emptyTensor, type Tensor } from "../engine/tensor.ts";
import { broadcastShapes, broadcastStrides, formatShape, sameShape, shapeSize } from "../engine/shape.ts";
import { sumToShape } from "./reduce.ts";

/** The work of one workgroup and one invocation; every size is a multiple of 4. */
export interface TileConfig {
  /** Output rows per workgroup. */
  readonly rows: number;
  /** Output columns per workgroup. */
  readonly cols: number;
  /** Inner-dimension depth of the staged slices (4 when not staged). */
  readonly depth: number;
  /** Output rows per invocation. */
  readonly threadRows: number;
  /** Output columns per invocation. */
  readonly threadCols: number;
  /** Whether slices are staged in workgroup memory (GPUs) or read directly by each invocation. */
  readonly staged: boolean;
}

/** The tile configurations the automatic choice picks from; tests and benchmarks may force one. */
export const TILE_CONFIGS = {
  /** Large problems on a GPU: 256 invocations of 8x8 outputs, slices 8 deep (9 KiB). */
  gpuLarge: { rows: 128, cols: 128, depth: 8, threadRows: 8, threadCols: 8, staged: true },
  /** Medium problems on a GPU: 256 invocations of 4x4 outputs. */
  gpuMedium: { rows: 64, cols: 64, depth: 16, threadRows: 4, threadCols: 4, staged: true },
  /** Small problems on a GPU: 64 invocations of 4x4 outputs. */
  gpuSmall: { rows: 32, cols: 32, depth: 16, threadRows: 4, threadCols: 4, staged: true },
  /**
   * Software adapters: 4x2 invocations (one 8-lane SIMD row of llvmpipe) of 16x16 outputs read
   * directly; measured faster than 8x8 blocks or staged tiles, and larger blocks compile for seconds.
   */
  software: { rows: 32, cols: 64, depth: 4, threadRows: 16, threadCols: 16, staged: false },
} as const satisfies Record<string, TileConfig>;

/** Options of {@linkcode matmul}. */
export interface MatmulOptions {
  /** Treat the last two dims of `a` as transposed: a is [..., K, M]. */
  transposeA?: boolean;
  /** Treat the last two dims of `b` as transposed: b is [..., N, K] (PyTorch Linear weight layout [out, in]). */
  transposeB?: boolean;
  /** [N] added to every output row in the kernel's epilogue (fused, no extra dispatch). */
  bias?: Tensor;
  /** Forces a tile configuration (tests, benchmarks); chosen per adapter and problem size when omitted. */
  tiles?: TileConfig;
}

/** Uniforms: sizes, batch strides (outer, inner), the chunk's first batch and tiles, window shifts. */
const PARAMS: Record<string, ParamType> = Object.fromEntries(
  ("M N K batch_inner a_outer a_inner b_outer b_inner c_outer c_inner batch0 row_tile0 col_tile0 " +
    "a_shift b_shift c_shift has_bias bias_shift").split(" ").map((name) => [name, "u32"]),
);

/** The layout of one kernel variant: operand transposes and which bindings are read or written as vec4. */
interface Layout {
  readonly transA: boolean;
  readonly transB: boolean;
  readonly vecA: boolean;
  readonly vecB: boolean;
  readonly vecC: boolean;
}

/** How one operand is addressed: element (i, k), i along the output's rows (a) or columns (b). */
function operandAccess(name: "a" | "b", layout: Layout) {
  const transposed = name === "a" ? layout.transA : layout.transB;
  const index = (i: string, k: string) =>
    name === "a"
      ? (transposed ? `(${k}) * params.M + ${i}` : `(${i}) * params.K + ${k}`)
      : (transposed ? `(${i}) * params.K + ${k}` : `(${k}) * params.N + ${i}`);
  const vec = name === "a" ? layout.vecA : layout.vecB;
  return {
    /** Whether consecutive elements in memory step along k. */
    depthContiguous: name === "a" ? !transposed : transposed,
    vec,
    bound: name === "a" ? "params.M" : "params.N",
    read: (i: string, k: string) => `${name}[(${name}_base + ${index(i, k)})${vec ? " / 4u" : ""}]`,
  };
}

/**
 * Start of slice row i in the [i][k / 4] layout. One vec4 of padding after every fourth row puts the
 * rows that neighbouring invocations read (4 apart) in different banks.
 */
function tileRow(t: TileConfig, i: string): string {
  return `(${i}) * ${t.depth / 4}u + (${i}) / 4u`;
}

/** Vec4 slots of a staged slice of `extent` rows or columns, padded as {@linkcode tileRow} needs. */
function tileSlots(t: TileConfig, extent: number): number {
  return extent * (t.depth / 4) + extent / 4;
}

/**
 * Staged slice copy. Each invocation loads units of four elements (one vec4 or four scalars) into
 * registers and later stores them as whole vec4s: a slice whose memory runs along k is kept as
 * [i][k / 4], otherwise as [k][i / 4], so neither copy nor arithmetic needs a component write.
 */
function stagedCopy(t: TileConfig, name: "a" | "b", layout: Layout, threads: number) {
  const op = operandAccess(name, layout);
  const extent = name === "a" ? t.rows : t.cols;
  const perLine = (op.depthContiguous ? t.depth : extent) / 4;
  const units = perLine * (op.depthContiguous ? extent : t.depth);
  const decl: string[] = [], load: string[] = [], store: string[] = [];
  for (let u = 0; u < Math.ceil(units / threads); u++) {
    const reg = `${name}_reg${u}`, unit = `(lid + ${u * threads}u)`;
    const guard = units % threads === 0 ? "" : `if (${unit} < ${units}u) `;
    const along = `${unit} % ${perLine}u * 4u`, across = `${unit} / ${perLine}u`;
    const [i, k] = op.depthContiguous ? [across, along] : [along, across];
    const gi = `${name}_origin + ${i}`, gk = `k0 + ${k}`;
    decl.push(`var ${reg}: vec4<f32>;`);
    if (op.vec) {
      const inside = `${gi} < ${op.bound} && ${gk} < params.K`;
      load.push(`${guard}{ ${reg} = select(vec4<f32>(), ${op.read(gi, gk)}, ${inside}); }`);
    } else {
      const parts = [0, 1, 2, 3].map((e) => {
        const [ei, ek] = op.depthContiguous ? [gi, `${gk} + ${e}u`] : [`${gi} + ${e}u`, gk];
        return `if (${ei} < ${op.bound} && ${ek} < params.K) { ${reg}[${e}] = ${op.read(ei, ek)}; }`;
      });
      load.push(`${guard}{ ${reg} = vec4<f32>(); ${parts.join(" ")} }`);
    }
    const slot = op.depthContiguous
      ? `${tileRow(t, i)} + (${k}) / 4u`
      : `(${k}) * ${extent / 4}u + (${i}) / 4u`;
    store.push(`${guard}{ ${name}_tile[${slot}] = ${reg}; }`);
  }
  return { decl, load, store };
}

/**
 * Reads of four inner-dimension steps of an invocation's `count` rows (a) or columns (b), element e
 * being row or column `index(e)`: from the staged slice (steps 4kq .. 4kq + 3 of the slice) or
 * directly from the operand (steps k .. k + 3). Returns the statements and the WGSL expression of
 * element e at step kk.
 */
function fourSteps(
  name: "a" | "b",
  layout: Layout,
  t: TileConfig,
  count: number,
  index: (e: number) => string,
) {
  const op = operandAccess(name, layout);
  const extent = name === "a" ? t.rows : t.cols;
  const lines: string[] = [];
  // Direct vec4 reads along k need K to be a multiple of 4, so they never straddle its end.
  const alongK = op.depthContiguous && (t.staged || op.vec);
  for (let e = 0; e < count && alongK; e++) {
    const value = t.staged ? `${name}_tile[${tileRow(t, index(e))} + kq]` : op.read(index(e), "k");
    lines.push(`let ${name}${e} = ${value};`);
  }
  for (let kk = 0; kk < 4 && !alongK; kk++) {
    for (let q = 0; q < count / 4; q++) {
      const read = (e: number) => op.read(index(e), `k + ${kk}u`);
      const quad = () =>
        op.vec ? read(4 * q) : `vec4<f32>(${[0, 1, 2, 3].map((c) => read(4 * q + c)).join(", ")})`;
      const value = t.staged
        ? `${name}_tile[(kq * 4u + ${kk}u) * ${extent / 4}u + (${index(4 * q)}) / 4u]`
        : `select(vec4<f32>(), ${quad()}, k + ${kk}u < params.K)`;
      lines.push(`let ${name}${kk}_${q} = ${value};`);
    }
  }
  const at = alongK
    ? (e: number, kk: number) => `${name}${e}[${kk}]`
    : (e: number, kk: number) => `${name}${kk}_${e >> 2}[${e & 3}]`;
  return { lines, at };
}

/** WGSL of the kernel for one configuration and layout. */
function gemmSource(t: TileConfig, layout: Layout): string {
  const threadsX = t.cols / t.threadCols, threadsY = t.rows / t.threadRows;
  const threads = threadsX * threadsY;
  const acc = (r: number, c: number) => `acc_${r}_${c}`;
  // Staged invocations own interleaved quads of rows and columns (conflict-free vec4 reads of the
  // slices, coalesced stores); direct ones own contiguous blocks (vec4 reads of their own data).
  const localRow = (r: number) => `(ty + ${(r >> 2) * threadsY}u) * 4u + ${r & 3}u`;
  const localCol = (c: number) => `(tx + ${(c >> 2) * threadsX}u) * 4u + ${c & 3}u`;
  const quadCol = (j: number) =>
    t.staged ? `b_origin + (tx + ${j * threadsX}u) * 4u` : `b_origin + tx * ${t.threadCols}u + ${4 * j}u`;
  // Rows and columns whose operand values an invocation reads: slice indices when staged, else absolute.
  const rowIndex = (r: number) => t.staged ? localRow(r) : `a_origin + ty * ${t.threadRows}u + ${r}u`;
  const colIndex = (c: number) => t.staged ? localCol(c) : `b_origin + tx * ${t.threadCols}u + ${c}u`;
  const rowOf = (r: number) => t.staged ? `a_origin + ${localRow(r)}` : rowIndex(r);
  const a = fourSteps("a", layout, t, t.threadRows, rowIndex);
  const b = fourSteps("b", layout, t, t.threadCols, colIndex);
  const products = [...a.lines, ...b.lines], accDecl: string[] = [], epilogue: string[] = [];
  for (let r = 0; r < t.threadRows; r++) {
    for (let c = 0; c < t.threadCols; c++) accDecl.push(`var ${acc(r, c)} = 0.0;`);
  }
  for (let kk = 0; kk < 4; kk++) {
    for (let r = 0; r < t.threadRows; r++) {
      for (let c = 0; c < t.threadCols; c++) {
        products.push(`${acc(r, c)} = fma(${a.at(r, kk)}, ${b.at(c, kk)}, ${acc(r, c)});`);
      }
    }
  }
  for (let j = 0; j < t.threadCols / 4; j++) epilogue.push(`let bias${j} = bias_quad(${quadCol(j)});`);
  for (let r = 0; r < t.threadRows; r++) {
    epilogue.push(`if (${rowOf(r)} < params.M) {`);
    for (let j = 0; j < t.threadCols / 4; j++) {
      const value = `vec4<f32>(${[0, 1, 2, 3].map((e) => acc(r, 4 * j + e)).join(", ")}) + bias${j}`;
      epilogue.push(
        `  store_quad(c_base + (${rowOf(r)}) * params.N + ${quadCol(j)}, ${quadCol(j)}, ${value});`,
      );
    }
    epilogue.push(`}`);
  }
  let loop: string;
  if (t.staged) {
    const copyA = stagedCopy(t, "a", layout, threads), copyB = stagedCopy(t, "b", layout, threads);
    loop = `
  ${[...copyA.decl, ...copyB.decl].join("\n  ")}
  // Iteration s stores slice s - 1 (loaded during the previous iteration's arithmetic), then loads
  // slice s before multiplying slice s - 1; the loads past the end read zeros.
  let steps = (params.K + ${t.depth - 1}u) / ${t.depth}u;
  var k0 = 0u;
  for (var step = 0u; step <= steps; step++) {
    if (step > 0u) {
      ${[...copyA.store, ...copyB.store].join("\n      ")}
    }
    workgroupBarrier();
    ${[...copyA.load, ...copyB.load].join("\n    ")}
    k0 += ${t.depth}u;
    if (step > 0u) {
      for (var kq = 0u; kq < ${t.depth / 4}u; kq++) {
        ${products.join("\n        ")}
      }
    }
    workgroupBarrier();
  }`;
  } else {
    loop = `
  for (var k = 0u; k < params.K; k += 4u) {
    ${products.join("\n    ")}
  }`;
  }
  const tiles = `var<workgroup> a_tile: array<vec4<f32>, ${tileSlots(t, t.rows)}>;
var<workgroup> b_tile: array<vec4<f32>, ${tileSlots(t, t.cols)}>;`;
  const store = layout.vecC
    ? `if (col < params.N) { c[index / 4u] = value; }`
    : `for (var e = 0u; e < min(params.N - min(col, params.N), 4u); e++) { c[index + e] = value[e]; }`;
  return `
${t.staged ? tiles : ""}
fn bias_quad(col: u32) -> vec4<f32> {
  var v = vec4<f32>();
  if (params.has_bias != 0u) {
    for (var e = 0u; e < min(params.N - min(col, params.N), 4u); e++) {
      v[e] = bias[params.bias_shift + col + e];
    }
  }
  return v;
}
// Writes the in-bounds part of four consecutive outputs of a row, starting at column col.
fn store_quad(index: u32, col: u32, value: vec4<f32>) {
  ${store}
}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let z = wid.z + params.batch0;
  let z_outer = z / params.batch_inner;
  let z_inner = z - z_outer * params.batch_inner;
  let a_base = z_outer * params.a_outer + z_inner * params.a_inner + params.a_shift;
  let b_base = z_outer * params.b_outer + z_inner * params.b_inner + params.b_shift;
  let c_base = z_outer * params.c_outer + z_inner * params.c_inner + params.c_shift;
  let a_origin = (wid.y + params.row_tile0) * ${t.rows}u;
  let b_origin = (wid.x + params.col_tile0) * ${t.cols}u;
  let tx = lid % ${threadsX}u;
  let ty = lid / ${threadsX}u;
  ${accDecl.join("\n  ")}
  ${loop}
  ${epilogue.join("\n  ")}
}`;
}

/** The compiled kernel for a configuration and layout. */
function gemmKernel(t: TileConfig, layout: Layout) {
  const shape = `${t.rows}x${t.cols}x${t.depth}_${t.threadRows}x${t.threadCols}${t.staged ? "" : "_direct"}`;
  const flags = [layout.transA, layout.transB, layout.vecA, layout.vecB, layout.vecC].map(Number).join("");
  return kernelFor(`matmul/${shape}/${flags}`, () => ({
    name: `matmul_${shape}`,
    params: PARAMS,
    bindings: [
      { name: "a", type: layout.vecA ? "vec4<f32>" : "f32" },
      { name: "b", type: layout.vecB ? "vec4<f32>" : "f32" },
      { name: "bias" },
      { name: "c", type: layout.vecC ? "vec4<f32>" : "f32", write: true },
    ],
    code: gemmSource(t, layout),
  }));
}

/** Workgroups below which a GPU is considered under-filled and a smaller tile is chosen. */
const ENOUGH_WORKGROUPS = 128;

/** The tile configuration for a problem on the current adapter. */
function chooseTiles(batch: number, M: number, N: number): TileConfig {
  if (gpu().profile.isSoftware) return TILE_CONFIGS.software;
  const workgroups = (t: TileConfig) => batch * Math.ceil(M / t.rows) * Math.ceil(N / t.cols);
  if (workgroups(TILE_CONFIGS.gpuLarge) >= ENOUGH_WORKGROUPS) return TILE_CONFIGS.gpuLarge;
  if (workgroups(TILE_CONFIGS.gpuMedium) >= ENOUGH_WORKGROUPS) return TILE_CONFIGS.gpuMedium;
  return TILE_CONFIGS.gpuSmall;
}

/** Throws unless the configuration is well formed and fits the device's limits. */
function checkTiles(t: TileConfig): void {
  const { profile } = gpu();
  const sizes = [t.rows, t.cols, t.depth, t.threadRows, t.threadCols];
  const memory = t.staged ? (tileSlots(t, t.rows) + tileSlots(t, t.cols)) * 16 : 0;
  if (
    sizes.some((s) => !Number.isInteger(s) || s <= 0 || s % 4 !== 0) ||
    t.rows % t.threadRows !== 0 || t.cols % t.threadCols !== 0 || (!t.staged && t.depth !== 4) ||
    (t.rows / t.threadRows) * (t.cols / t.threadCols) > profile.maxInvocationsPerWorkgroup ||
    memory > profile.workgroupMemoryBytes
  ) {
    throw new Error(
      `matmul: tile configuration ${JSON.stringify(t)} is malformed or exceeds the device limits`,
    );
  }
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

/**
 * Binds elements [lo, hi) of a tensor (at least), from the aligned offset at or below `lo`; packed
 * views, whose own offset is not aligned, are bound the same way.
 */
function window(tensor: Tensor, lo: number, hi: number, lead: number): Window {
  const { buffer, offset } = tensor.range();
  const align = gpu().profile.storageOffsetAlignment;
  const start = Math.floor((offset + lo * 4) / align) * align;
  const size = Math.min(buffer.size - start, Math.max(16, Math.ceil((offset + hi * 4 - start) / 16) * 16));
  return { range: { buffer, offset: start, size }, shift: (lead - (start - offset) / 4) >>> 0 };
}

/** What {@linkcode product} computes besides its operands. */
interface ProductOptions {
  transA: boolean;
  transB: boolean;
  bias?: Tensor;
  tiles?: TileConfig;
  /** Shape of the result; [...batch, M, N] when omitted. */
  outShape?: readonly number[];
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
  const out = emptyTensor(options.outShape ?? [...batch, M, N]);
  if (out.size === 0) return out;
  const t = options.tiles ?? chooseTiles(shapeSize(batch), M, N);
  checkTiles(t);
  const aligned = (o: Operand, contiguous: number) => contiguous % 4 === 0 && o.tensor.byteOffset % 16 === 0;
  const kernel = gemmKernel(t, {
    transA,
    transB,
    vecA: aligned(a, transA ? M : K),
    vecB: aligned(b, transB ? K : N),
    vecC: N % 4 === 0,
  });
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

  /** The windows of a, b and c that batches [z0, z1), row tiles [r0, r1), column tiles [c0, c1) touch. */
  const windows = (
    lead: BatchDim,
    z0: number,
    z1: number,
    r0: number,
    r1: number,
    c0: number,
    c1: number,
  ) => {
    const low = { a: Infinity, b: Infinity, c: Infinity }, high = { a: 0, b: 0, c: 0 };
    for (let z = z0; z < z1; z++) {
      for (const k of ["a", "b", "c"] as const) {
        const offset = lead[k] + Math.floor(z / inner.size) * outer[k] + (z % inner.size) * inner[k];
        low[k] = Math.min(low[k], offset);
        high[k] = Math.max(high[k], offset);
      }
    }
    const m0 = r0 * t.rows, m1 = Math.min(M, r1 * t.rows), n0 = c0 * t.cols, n1 = Math.min(N, c1 * t.cols);
    const [la, ha] = K === 0 ? [0, 0] : transA ? [m0, (K - 1) * M + m1] : [m0 * K, m1 * K];
    const [lb, hb] = K === 0 ? [0, 0] : transB ? [n0 * K, n1 * K] : [n0, (K - 1) * N + n1];
    return [
      window(a.tensor, low.a + la, high.a + ha, lead.a),
      window(b.tensor, low.b + lb, high.b + hb, lead.b),
      window(out, low.c + m0 * N + n0, high.c + (m1 - 1) * N + n1, lead.c),
    ];
  };
  const biasWindow = bias && window(bias, 0, N, 0);
  const fits = (w: Window[]) => w.every((x) => x.range.size <= maxStorageBindingBytes);
  const tooLarge = () =>
    new Error(`${op}: a chunk of ${formatShape(out.shape)} exceeds the storage binding limit`);

  // Chunk sizes in batches, row tiles and column tiles, halved until every window fits.
  let zc = Math.min(batchCount, limit), mt = Math.min(rowTiles, limit), nt = Math.min(colTiles, limit);
  while (!fits(windows(unit, 0, zc, 0, mt, 0, nt))) {
    if (zc > 1) zc = Math.ceil(zc / 2);
    else if (mt > 1) mt = Math.ceil(mt / 2);
    else if (nt > 1) nt = Math.ceil(nt / 2);
    else throw tooLarge();
  }
  for (let l = 0; l < shapeSize(leading.map((d) => d.size)); l++) {
    const lead = { ...unit };
    for (let r = leading.length - 1, rest = l; r >= 0; r--) {
      const coord = rest % leading[r].size;
      rest = Math.floor(rest / leading[r].size);
      for (const k of ["a", "b", "c"] as const) lead[k] += coord * leading[r][k];
    }
    for (let z0 = 0; z0 < batchCount; z0 += zc) {
      for (let r0 = 0; r0 < rowTiles; r0 += mt) {
        for (let c0 = 0; c0 < colTiles; c0 += nt) {
          const z1 = Math.min(batchCount, z0 + zc), r1 = Math.min(rowTiles, r0 + mt);
          const c1 = Math.min(colTiles, c0 + nt);
          const [wa, wb, wc] = windows(lead, z0, z1, r0, r1, c0, c1);
          if (!fits([wa, wb, wc])) throw tooLarge();
          const params = [M, N, K, inner.size, outer.a, inner.a, outer.b, inner.b, outer.c, inner.c];
          params.push(z0, r0, c0, wa.shift, wb.shift, wc.shift, bias ? 1 : 0, biasWindow?.shift ?? 0);
          const ranges = [wa.range, wb.range, biasWindow?.range ?? wa.range, wc.range];
          dispatch(kernel, params, ranges, [c1 - c0, r1 - r0, z1 - z0]);
        }
      }
    }
  }
  return out;
}

/** Throws unless both operands are float32 matrices (rank >= 2) with matching inner dimensions. */
function checkOperands(op: string, a: Tensor, b: Tensor, transA: boolean, transB: boolean): void {
  const pair = `${formatShape(a.shape)} x ${formatShape(b.shape)}`;
  for (const t of [a, b]) if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
  if (a.rank < 2 || b.rank < 2) throw new Error(`${op}: both operands need rank >= 2, ${pair}`);
  if (a.shape[a.rank - (transA ? 2 : 1)] !== b.shape[b.rank - (transB ? 1 : 2)]) {
    const flags = [transA ? "transposeA" : "", transB ? "transposeB" : ""].filter((f) => f).join(", ");
    throw new Error(`${op}: inner dimensions differ, ${pair}${flags ? ` (${flags})` : ""}`);
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
 * the kernel; the backward uses transposed products too, so nothing is transposed in memory.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const { transposeA = false, transposeB = false, bias, tiles } = options;
  checkOperands("matmul", a, b, transposeA, transposeB);
  const N = b.shape[b.rank - (transposeB ? 2 : 1)];
  if (bias && (bias.dtype !== "float32" || !sameShape(bias.shape, [N]))) {
    const pair = `${formatShape(a.shape)} x ${formatShape(b.shape)}`;
    throw new Error(`matmul: bias ${bias.describe()} does not match the ${N} output columns of ${pair}`);
  }
  // A shared 2-D weight turns the batch into rows of one large product (and, in the backward, into
  // the inner dimension of the weight's gradient: dW = X^T dY with X as [batch * M, K]).
  const fold = b.rank === 2 && a.rank > 2 && !transposeA;
  const outShape = fold ? [...a.shape.slice(0, -1), N] : undefined;
  const options2 = { transA: transposeA, transB: transposeB, bias, tiles, outShape };
  const out = product("matmul", operand(a, fold), operand(b), options2);
  return attachGrad(out, "matmul", bias ? [a, b, bias] : [a, b], (g) => {
    const sg = operand(g, fold), sa = operand(a, fold), sb = operand(b);
    const op = "matmul backward";
    let gradA: Tensor | null = null, gradB: Tensor | null = null;
    if (a.requiresGrad) {
      gradA = reduceTo(
        transposeA ? product(op, sb, sg, { transA: transposeB, transB: true, tiles }) : product(op, sg, sb, {
          transA: false,
          transB: !transposeB,
          tiles,
          outShape: fold ? a.shape : undefined,
        }),
        a.shape,
      );
    }
    if (b.requiresGrad) {
      gradB = reduceTo(
        transposeB
          ? product(op, sg, sa, { transA: true, transB: transposeA, tiles })
          : product(op, sa, sg, { transA: !transposeA, transB: false, tiles }),
        b.shape,
      );
    }
    const gradBias = bias?.requiresGrad ? sumToShape(g, [N]) : null;
    return bias ? [gradA, gradB, gradBias] : [gradA, gradB];
  });
}

/** PyTorch's F.linear: x [..., in] · weight[out, in]^T + bias -> [..., out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  if (weight.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new Error(
      `linear: input ${formatShape(x.shape)} does not match weight ${formatShape(weight.shape)}`,
    );
  }
  if (x.rank > 1) return matmul(x, weight, { transposeB: true, bias });
  const row = x.reshape([1, x.shape[0]]);
  const y = matmul(row, weight, { transposeB: true, bias });
  const out = y.reshape([weight.shape[0]]);
  row.dispose();
  y.dispose();
  return out;
}

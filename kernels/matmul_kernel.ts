/**
 * The register-tiled matmul kernel: its tile configurations, the choice among them per adapter and
 * problem size, and the WGSL generated per configuration and operand layout.
 *
 * A workgroup computes a `rows x cols` block of the output and each invocation a
 * `threadRows x threadCols` block of it, accumulated in registers by unrolled outer products. On
 * GPUs the workgroup stages `depth`-deep slices of both operands in workgroup memory (loaded as
 * vec4 where alignment allows, the next slice's loads issued before the current slice's
 * arithmetic). On software adapters (llvmpipe) every memory access is a loop over the SIMD lanes,
 * so staging saves no loads and costs a store, a load and two barriers per element: there each
 * invocation reads its operands directly, four steps of the inner dimension at a time.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { type Kernel, kernelFor } from "../engine/kernel.ts";
import { type KernelVariant, kernelVariant } from "../engine/variants.ts";
import { texelGemmSource } from "./matmul_texel.ts";

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

/** The tile configuration of each matmul variant (`MM_KERNELS=matmul:<name>` forces one). */
const TILE_CONFIGS = {
  /** Large problems on a GPU: 256 invocations of 8x8 outputs, slices 8 deep (9 KiB). */
  tiled128: { rows: 128, cols: 128, depth: 8, threadRows: 8, threadCols: 8, staged: true },
  /** Medium problems on a GPU: 256 invocations of 4x4 outputs. */
  tiled64: { rows: 64, cols: 64, depth: 16, threadRows: 4, threadCols: 4, staged: true },
  /** Small problems on a GPU: 64 invocations of 4x4 outputs. */
  tiled32: { rows: 32, cols: 32, depth: 16, threadRows: 4, threadCols: 4, staged: true },
  /**
   * Software adapters: 4x2 invocations (one 8-lane SIMD row of llvmpipe) of 16x16 outputs read
   * directly; measured faster than 8x8 blocks or staged tiles, and larger blocks compile for seconds.
   */
  direct: { rows: 32, cols: 64, depth: 4, threadRows: 16, threadCols: 16, staged: false },
  /**
   * Software adapters, operands in textures (matmul_texel.ts): 2x4 invocations of 8x16 outputs, so
   * a 64-column output keeps all eight lanes busy; measured faster than 8x8, 4x16 or 16x16 blocks.
   */
  texel: { rows: 16, cols: 64, depth: 4, threadRows: 8, threadCols: 16, staged: false },
  /**
   * The texel kernel for products of at most 32 columns, where a 64-column tile leaves half the
   * lanes idle: 4x2 invocations of 8x16 outputs; measured 1.5-2x faster there (32-wide products of
   * 2048 rows).
   */
  texel_narrow: { rows: 32, cols: 32, depth: 4, threadRows: 8, threadCols: 16, staged: false },
} as const satisfies Record<KernelVariant<"matmul">, TileConfig>;

/**
 * Uniforms: sizes, batch strides (outer, inner), the chunk's first batch and tiles, window shifts, and
 * the chunk's steps [k_begin, k_end) of the inner dimension; with `accumulate` the accumulators start
 * from the output already stored (the sum of the earlier steps), so a split inner dimension adds its
 * steps in the same order as one dispatch. `sums_mode` is how an operand-sums kernel treats the sums
 * stored: 0 overwrites them, 1 adds its sums onto them, 2 continues them (a later chunk of steps).
 */
const GEMM_PARAMS = {
  M: "u32",
  N: "u32",
  K: "u32",
  batch_inner: "u32",
  a_outer: "u32",
  a_inner: "u32",
  b_outer: "u32",
  b_inner: "u32",
  c_outer: "u32",
  c_inner: "u32",
  batch0: "u32",
  row_tile0: "u32",
  col_tile0: "u32",
  a_shift: "u32",
  b_shift: "u32",
  c_shift: "u32",
  has_bias: "u32",
  bias_shift: "u32",
  k_begin: "u32",
  k_end: "u32",
  accumulate: "u32",
  sums_mode: "u32",
} as const;

/**
 * Sums over the inner dimension that a product also gives, from the values it multiplies: "a" the
 * sum of each row of op(a) (one per output row), "b" of each column of op(b) (one per output column).
 * A weight gradient's product gives its bias's gradient this way (linear: dW = dY^T X, the bias's
 * gradient the rows of dY^T; Conv1D: dW = X^T dY, the columns of dY), so no separate reduction of
 * dY runs.
 */
export type OperandSums = "none" | "a" | "b";

/**
 * The layout of one kernel variant: operand transposes, which bindings are read or written as vec4,
 * and the operand sums it also writes (binding `sums`).
 */
export interface Layout {
  readonly transA: boolean;
  readonly transB: boolean;
  readonly vecA: boolean;
  readonly vecB: boolean;
  readonly vecC: boolean;
  readonly sums: OperandSums;
}

/**
 * WGSL pieces of the operand sums: each invocation sums the values of its `count` rows (a) or
 * columns (b) that its products read, `at(e, kk)` being element e at step kk of four, from zero or,
 * continuing a split inner dimension (`sums_mode` 2), from the stored sums; the invocations that
 * `owns` (the first of the output row or column, in the first tile across) store sums[index(e)] for
 * those inside the bound, onto the stored ones with `sums_mode` 1.
 */
export function operandSums(
  sums: OperandSums,
  count: number,
  at: (e: number, kk: number) => string,
  index: (e: number) => string,
  owns: string,
): { declare: string[]; add: string[]; store: string[] } {
  if (sums === "none") return { declare: [], add: [], store: [] };
  const bound = sums === "a" ? "params.M" : "params.N";
  const elements = Array.from({ length: count }, (_, e) => e);
  return {
    declare: elements.flatMap((e) => [
      `var sum${e} = 0.0;`,
      `if (params.sums_mode == 2u && ${index(e)} < ${bound}) { sum${e} = sums[${index(e)}]; }`,
    ]),
    add: [0, 1, 2, 3].flatMap((kk) => elements.map((e) => `sum${e} += ${at(e, kk)};`)),
    store: [
      `if (${owns}) {`,
      ...elements.map((e) =>
        `  if (${index(e)} < ${bound}) { sums[${index(e)}] = select(0.0, sums[${
          index(e)
        }], params.sums_mode == 1u) + sum${e}; }`
      ),
      `}`,
    ],
  };
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
      const inside = `${gi} < ${op.bound} && ${gk} < params.k_end`;
      load.push(`${guard}{ ${reg} = select(vec4<f32>(), ${op.read(gi, gk)}, ${inside}); }`);
    } else {
      const parts = [0, 1, 2, 3].map((e) => {
        const [ei, ek] = op.depthContiguous ? [gi, `${gk} + ${e}u`] : [`${gi} + ${e}u`, gk];
        return `if (${ei} < ${op.bound} && ${ek} < params.k_end) { ${reg}[${e}] = ${op.read(ei, ek)}; }`;
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
        : `select(vec4<f32>(), ${quad()}, k + ${kk}u < params.k_end)`;
      lines.push(`let ${name}${kk}_${q} = ${value};`);
    }
  }
  const at = alongK
    ? (e: number, kk: number) => `${name}${e}[${kk}]`
    : (e: number, kk: number) => `${name}${kk}_${e >> 2}[${e & 3}]`;
  return { lines, at };
}

/**
 * WGSL of `bias_quad(col)` (four bias values from column col, zero past N), `store_quad` and
 * `prior_quad` (the four outputs already stored when accumulating, else zeros).
 */
export function outputHelpers(layout: Layout): string {
  const store = layout.vecC
    ? `if (col < params.N) { c[index / 4u] = value; }`
    : `for (var e = 0u; e < min(params.N - min(col, params.N), 4u); e++) { c[index + e] = value[e]; }`;
  const load = layout.vecC
    ? `if (col < params.N) { v = c[index / 4u]; }`
    : `for (var e = 0u; e < min(params.N - min(col, params.N), 4u); e++) { v[e] = c[index + e]; }`;
  return `fn prior_quad(index: u32, col: u32, row: u32) -> vec4<f32> {
  var v = vec4<f32>();
  if (params.accumulate != 0u && row < params.M) {
    ${load}
  }
  return v;
}
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
}`;
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
  const colOf = (c: number) => t.staged ? `b_origin + ${localCol(c)}` : colIndex(c);
  const sums = layout.sums === "a"
    ? operandSums("a", t.threadRows, a.at, rowOf, "wid.x + params.col_tile0 == 0u && tx == 0u")
    : operandSums(layout.sums, t.threadCols, b.at, colOf, "wid.y + params.row_tile0 == 0u && ty == 0u");
  const products = [...a.lines, ...b.lines, ...sums.add], accDecl = [...sums.declare];
  const epilogue: string[] = [];
  for (let r = 0; r < t.threadRows; r++) {
    for (let j = 0; j < t.threadCols / 4; j++) {
      const index = `c_base + (${rowOf(r)}) * params.N + ${quadCol(j)}`;
      accDecl.push(`let prior_${r}_${j} = prior_quad(${index}, ${quadCol(j)}, ${rowOf(r)});`);
      for (let e = 0; e < 4; e++) accDecl.push(`var ${acc(r, 4 * j + e)} = prior_${r}_${j}[${e}];`);
    }
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
  epilogue.push(...sums.store);
  let loop: string;
  if (t.staged) {
    const copyA = stagedCopy(t, "a", layout, threads), copyB = stagedCopy(t, "b", layout, threads);
    loop = `
  ${[...copyA.decl, ...copyB.decl].join("\n  ")}
  // Iteration s stores slice s - 1 (loaded during the previous iteration's arithmetic), then loads
  // slice s before multiplying slice s - 1; the loads past the end read zeros.
  let steps = (params.k_end - params.k_begin + ${t.depth - 1}u) / ${t.depth}u;
  var k0 = params.k_begin;
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
  for (var k = params.k_begin; k < params.k_end; k += 4u) {
    ${products.join("\n    ")}
  }`;
  }
  const tiles = `var<workgroup> a_tile: array<vec4<f32>, ${tileSlots(t, t.rows)}>;
var<workgroup> b_tile: array<vec4<f32>, ${tileSlots(t, t.cols)}>;`;
  return `
${t.staged ? tiles : ""}
${outputHelpers(layout)}
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

/**
 * The compiled kernel of a variant for an operand layout. The `texel` variant binds a and b as
 * textures and needs `vecA` and `vecB` (rows of whole texels).
 */
export function gemmKernel(variant: KernelVariant<"matmul">, layout: Layout): Kernel<typeof GEMM_PARAMS> {
  const t = TILE_CONFIGS[variant];
  const flags = [layout.transA, layout.transB, layout.vecA, layout.vecB, layout.vecC].map(Number).join("") +
    (layout.sums === "none" ? "" : `/sums_${layout.sums}`);
  const texel = isTexel(variant);
  if (texel && !(layout.vecA && layout.vecB)) {
    throw new Error(`matmul: the texel variant needs both operands in whole texels (layout ${flags})`);
  }
  return kernelFor(`matmul/${variant}/${flags}`, () => ({
    name: `matmul_${variant}`,
    params: GEMM_PARAMS,
    bindings: [
      { name: "a", type: texel ? "texture" : layout.vecA ? "vec4<f32>" : "f32" },
      { name: "b", type: texel ? "texture" : layout.vecB ? "vec4<f32>" : "f32" },
      { name: "bias" },
      { name: "c", type: layout.vecC ? "vec4<f32>" : "f32", write: true },
      ...(layout.sums === "none" ? [] : [{ name: "sums", write: true }]),
    ],
    code: texel ? texelGemmSource(t, layout) : gemmSource(t, layout),
  }));
}

/** Workgroups below which a GPU is considered under-filled and a smaller tile is chosen. */
const ENOUGH_WORKGROUPS = 128;

/** Whether a matmul variant reads its operands through textures. */
export function isTexel(variant: KernelVariant<"matmul">): boolean {
  return variant === "texel" || variant === "texel_narrow";
}

/**
 * The variant for a problem (forced by `MM_KERNELS`, or chosen for the adapter and problem size) and
 * its tile configuration; the texel variants become `direct` unless both operands are `wholeTexels`
 * (vec4 layouts). Throws when a forced variant exceeds the device's limits.
 */
export function chooseTiles(
  batch: number,
  M: number,
  N: number,
  wholeTexels: boolean,
): { variant: KernelVariant<"matmul">; tiles: TileConfig } {
  const chosen = kernelVariant("matmul", () => {
    if (gpu().profile.isSoftware) return N <= 32 ? "texel_narrow" : "texel";
    const workgroups = (t: TileConfig) => batch * Math.ceil(M / t.rows) * Math.ceil(N / t.cols);
    if (workgroups(TILE_CONFIGS.tiled128) >= ENOUGH_WORKGROUPS) return "tiled128";
    if (workgroups(TILE_CONFIGS.tiled64) >= ENOUGH_WORKGROUPS) return "tiled64";
    return "tiled32";
  });
  const variant = isTexel(chosen) && !wholeTexels ? "direct" : chosen;
  const t = TILE_CONFIGS[variant];
  const { profile } = gpu();
  const memory = t.staged ? (tileSlots(t, t.rows) + tileSlots(t, t.cols)) * 16 : 0;
  const invocations = (t.rows / t.threadRows) * (t.cols / t.threadCols);
  if (invocations > profile.maxInvocationsPerWorkgroup || memory > profile.workgroupMemoryBytes) {
    throw new Error(
      `matmul: variant ${variant} needs ${invocations} invocations and ${memory} bytes of workgroup memory, ` +
        `beyond the device's ${profile.maxInvocationsPerWorkgroup} and ${profile.workgroupMemoryBytes}`,
    );
  }
  return { variant, tiles: t };
}

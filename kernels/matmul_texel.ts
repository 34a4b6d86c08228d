/**
 * The software adapters' matmul (variant `texel`): both operands are read through textures
 * (engine/texels.ts), where llvmpipe fetches a vec4 faster than from a storage buffer. A workgroup
 * is one 8-lane SIMD batch with no workgroup memory and no barrier; each
 * invocation accumulates a `threadRows x threadCols` block of the output in registers, fetching per
 * four steps of the inner dimension one texel per row of its block and one per column (or per
 * four columns), all unrolled by the generator. Each operand layout (transposed or not) reads whole
 * texels along its contiguous dimension, so that dimension must be a multiple of 4; matmul.ts falls
 * back to the `direct` variant for operands that are not.
 *
 * @module
 */
import type { Layout, TileConfig } from "./matmul_kernel.ts";
import { operandSums, outputHelpers } from "./matmul_kernel.ts";
import { TEXEL_WGSL } from "../engine/texels.ts";

/** The WGSL of the loaded element (row r, step kk) of a, as {@linkcode quadLoads} names its loads. */
function aElement(layout: Layout, r: number, kk: number): string {
  return layout.transA ? `a${kk}_${r >> 2}[${r & 3}]` : `a${r}[${kk}]`;
}

/** The WGSL of the loaded element (step kk, column c) of b. */
function bElement(layout: Layout, c: number, kk: number): string {
  return layout.transB ? `b${c}[${kk}]` : `b${kk}_${c >> 2}[${c & 3}]`;
}

/**
 * The loads and products of four inner-dimension steps (4q .. 4q + 3), and the operand sums' additions.
 * When `guarded`, steps at or past K read zeros (the last, partial quad).
 */
function quadLoads(t: TileConfig, layout: Layout, guarded: boolean) {
  const R = t.threadRows, C = t.threadCols;
  const lines: string[] = [];
  const step = (kk: number) => `4u * q + ${kk}u`;
  const guard = (kk: number, value: string) =>
    guarded ? `select(vec4<f32>(), ${value}, ${step(kk)} < params.k_end)` : value;
  if (!layout.transA) {
    for (let r = 0; r < R; r++) lines.push(`let a${r} = texel(a, a_row${r} + q);`);
  } else {
    for (let kk = 0; kk < 4; kk++) {
      for (let j = 0; j < R / 4; j++) {
        lines.push(`let a${kk}_${j} = ${guard(kk, `texel(a, a_col + (${step(kk)}) * a_step + ${j}u)`)};`);
      }
    }
  }
  if (layout.transB) {
    for (let c = 0; c < C; c++) lines.push(`let b${c} = texel(b, b_col${c} + q);`);
  } else {
    for (let kk = 0; kk < 4; kk++) {
      for (let j = 0; j < C / 4; j++) {
        lines.push(`let b${kk}_${j} = ${guard(kk, `texel(b, b_row + (${step(kk)}) * b_step + ${j}u)`)};`);
      }
    }
  }
  const bQuad = (kk: number, j: number) =>
    layout.transB
      ? `vec4<f32>(${[0, 1, 2, 3].map((e) => bElement(layout, 4 * j + e, kk)).join(", ")})`
      : `b${kk}_${j}`;
  const products: string[] = [];
  for (let kk = 0; kk < 4; kk++) {
    for (let r = 0; r < R; r++) {
      for (let j = 0; j < C / 4; j++) {
        products.push(
          `acc${r}_${j} = fma(vec4<f32>(${aElement(layout, r, kk)}), ${bQuad(kk, j)}, acc${r}_${j});`,
        );
      }
    }
  }
  return [...lines, ...products, ...sumsOf(t, layout).add];
}

/** The operand sums of an invocation (matmul_kernel.ts `operandSums`): its rows of a or columns of b. */
function sumsOf(t: TileConfig, layout: Layout) {
  const threadsX = t.cols / t.threadCols;
  return layout.sums === "a"
    ? operandSums(
      "a",
      t.threadRows,
      (r, kk) => aElement(layout, r, kk),
      (r) => `m0 + ${r}u`,
      `wid.x + params.col_tile0 == 0u && lid % ${threadsX}u == 0u`,
    )
    : operandSums(
      layout.sums,
      t.threadCols,
      (c, kk) => bElement(layout, c, kk),
      (c) => `n0 + ${c}u`,
      `wid.y + params.row_tile0 == 0u && lid / ${threadsX}u == 0u`,
    );
}

/**
 * WGSL of the texel kernel for one tile configuration and layout; bindings a and b are textures of
 * the operands' windows, bias and c storage buffers, with the uniforms of the other variants.
 */
export function texelGemmSource(t: TileConfig, layout: Layout): string {
  const R = t.threadRows, C = t.threadCols;
  const threadsX = t.cols / C;
  const setup: string[] = [], accumulators: string[] = [], epilogue: string[] = [];
  const sums = sumsOf(t, layout);
  // Texel indices of each row of the block (a) and column (b), clamped into the matrix: rows and
  // columns past its end compute values that are never stored.
  // A window that starts past a row's first element (a later inner chunk) makes a row's start
  // negative, wrapped in u32; texel_of divides it as signed, so adding steps wraps back into range.
  if (!layout.transA) {
    for (let r = 0; r < R; r++) {
      setup.push(`let a_row${r} = texel_of(a_base + min(m0 + ${r}u, params.M - 1u) * params.K);`);
    }
  } else setup.push(`let a_col = texel_of(a_base + m0);`, `let a_step = params.M / 4u;`);
  if (layout.transB) {
    for (let c = 0; c < C; c++) {
      setup.push(`let b_col${c} = texel_of(b_base + min(n0 + ${c}u, params.N - 1u) * params.K);`);
    }
  } else setup.push(`let b_row = texel_of(b_base + n0);`, `let b_step = params.N / 4u;`);
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < C / 4; j++) {
      const col = `n0 + ${4 * j}u`;
      accumulators.push(
        `var acc${r}_${j} = prior_quad(c_base + (m0 + ${r}u) * params.N + ${col}, ${col}, m0 + ${r}u);`,
      );
    }
  }
  for (let j = 0; j < C / 4; j++) epilogue.push(`let bias${j} = bias_quad(n0 + ${4 * j}u);`);
  for (let r = 0; r < R; r++) {
    epilogue.push(`if (m0 + ${r}u < params.M) {`);
    for (let j = 0; j < C / 4; j++) {
      const col = `n0 + ${4 * j}u`;
      epilogue.push(
        `  store_quad(c_base + (m0 + ${r}u) * params.N + ${col}, ${col}, acc${r}_${j} + bias${j});`,
      );
    }
    epilogue.push(`}`);
  }
  // Only when both operands step along k across rows can K be odd (the others need K % 4 == 0).
  const tail = layout.transA && !layout.transB
    ? `
  if (params.k_end % 4u != 0u) {
    let q = quads;
    ${quadLoads(t, layout, true).join("\n    ")}
  }`
    : "";
  return `${TEXEL_WGSL}
${outputHelpers(layout)}
fn texel_of(element: u32) -> u32 {
  return u32(i32(element) >> 2u);
}
@compute @workgroup_size(${threadsX * (t.rows / R)})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let z = wid.z + params.batch0;
  let z_outer = z / params.batch_inner;
  let z_inner = z - z_outer * params.batch_inner;
  let a_base = z_outer * params.a_outer + z_inner * params.a_inner + params.a_shift;
  let b_base = z_outer * params.b_outer + z_inner * params.b_inner + params.b_shift;
  let c_base = z_outer * params.c_outer + z_inner * params.c_inner + params.c_shift;
  let m0 = (wid.y + params.row_tile0) * ${t.rows}u + (lid / ${threadsX}u) * ${R}u;
  let n0 = (wid.x + params.col_tile0) * ${t.cols}u + (lid % ${threadsX}u) * ${C}u;
  ${setup.join("\n  ")}
  ${[...accumulators, ...sums.declare].join("\n  ")}
  let quads = params.k_end / 4u;
  for (var q = params.k_begin / 4u; q < quads; q++) {
    ${quadLoads(t, layout, false).join("\n    ")}
  }${tail}
  ${[...epilogue, ...sums.store].join("\n  ")}
}`;
}

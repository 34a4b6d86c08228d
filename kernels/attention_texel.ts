/**
 * The texel attention kernels, for software adapters (llvmpipe): q, k, v, the key mask, the output
 * gradient and the saved row statistics are read through textures (engine/texels.ts), where a
 * vec4 costs less than from a storage buffer there. Each invocation owns `R` query rows
 * (forward, dQ) or key rows (dK and dV) in registers and walks the other side's rows one at a time,
 * fetching each of them once for its R rows; a workgroup is one 8-lane SIMD batch, with no workgroup
 * memory and no barrier. The head dimension's vec4s and the R rows are unrolled by the generator, so
 * every row lives in registers rather than in indexed private arrays. The code runs after the header
 * of attention_header.ts (with texels) and needs D % 4 == 0 and texel-aligned row offsets;
 * attention.ts falls back to the row kernels otherwise.
 *
 * @module
 */
import type { AttentionPass } from "./attention_header.ts";

/** Invocations per workgroup: one 8-wide SIMD batch on llvmpipe. */
const TEXEL_THREADS = 8;

/**
 * Rows per invocation: more rows reuse each fetched row more often but take longer to compile
 * (fwd+bwd at D 64 measured 7-10 GFLOP/s with 2 rows, 10-14 with 4 and 15 with 8, compiling in 1.8,
 * 3.5 and 10 s); 4 up to D 64, and 1 above, where a row alone fills the registers.
 */
const rowsPerThread = (dim: number) => (dim <= 64 ? 4 : 1);

/** Query or key rows that one workgroup of the texel kernels covers, for head dimension `dim`. */
export const texelBlockSize = (dim: number): number => TEXEL_THREADS * rowsPerThread(dim);

/** Compile-time constants of the texel kernels for head dimension `dim`. */
export function texelConstants(dim: number): Record<string, number> {
  const block = texelBlockSize(dim);
  return { BQ: block, BK: block, NT: TEXEL_THREADS, R: rowsPerThread(dim) };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** `let <name><c> = texel(<texture>, <at> + c)` for the D/4 vec4s of a row. */
function fetchRow(name: string, texture: string, at: string, d4: number): string[] {
  return range(d4).map((c) => `let ${name}${c} = texel(${texture}, ${at} + ${c}u);`);
}

/** The dot product of two unrolled rows, summed in order. */
function dotRows(a: (c: number) => string, b: (c: number) => string, d4: number): string {
  return range(d4).map((c) => `dot(${a(c)}, ${b(c)})`).join(" + ");
}

/** `texel(t, i / 4)[i % 4]`: float i of a texture. */
const scalarAt = (texture: string, index: string) => `texel(${texture}, (${index}) / 4u)[(${index}) % 4u]`;

function forward(dim: number): string {
  const d4 = dim / 4, rows = range(rowsPerThread(dim));
  const body: string[] = [];
  for (const r of rows) {
    body.push(
      `let s${r} = select(MASKED, (${dotRows((c) => `q${r}_${c}`, (c) => `k${c}`, d4)}) * params.scale, ` +
        `exists && query_sees(i${r}, j));`,
      `let m_new${r} = max(m${r}, s${r});`,
      `let alpha${r} = exp(m${r} - m_new${r});`,
      `let p${r} = select(0.0, exp(s${r} - m_new${r}), s${r} > -1.0e38);`,
      `l${r} = l${r} * alpha${r} + p${r};`,
      `m${r} = m_new${r};`,
      `let pz${r} = p${r} * keep_factor(bh, i${r}, j);`,
    );
  }
  body.push(...fetchRow("v", "v", "(v_base + j * params.kv_si) / 4u", d4));
  for (const r of rows) {
    for (let c = 0; c < d4; c++) body.push(`acc${r}_${c} = acc${r}_${c} * alpha${r} + pz${r} * v${c};`);
  }
  return `
  let i_first = blk * BQ + lid;
  ${
    rows.map((r) =>
      [
        `let i${r} = i_first + ${r * TEXEL_THREADS}u;`,
        ...fetchRow(`q${r}_`, "q", `(q_base + min(i${r}, params.tq - 1u) * params.q_si) / 4u`, d4),
        `var m${r} = MASKED;`,
        `var l${r} = 0.0;`,
        ...range(d4).map((c) => `var acc${r}_${c} = vec4<f32>();`),
      ].join("\n  ")
    ).join("\n  ")
  }
  for (var j = 0u; j < key_limit(blk * BQ); j++) {
    let exists = key_exists(b, j);
    ${fetchRow("k", "k", "(k_base + j * params.kv_si) / 4u", d4).join("\n    ")}
    ${body.join("\n    ")}
  }
  ${
    rows.map((r) =>
      `if (i${r} < params.tq) {
    let inv = select(0.0, 1.0 / l${r}, l${r} > 0.0);
    ${
        range(d4).map((c) => `o[(o_base + i${r} * params.o_si) / 4u + ${c}u] = acc${r}_${c} * inv;`).join(
          "\n    ",
        )
      }
    lse[stat_at + i${r}] = select(0.0, m${r} + log(l${r}), l${r} > 0.0);
  }`
    ).join("\n  ")
  }
}`;
}

function keyGrad(dim: number): string {
  const d4 = dim / 4, rows = range(rowsPerThread(dim));
  const body: string[] = [];
  for (const r of rows) {
    body.push(
      `let s${r} = ${dotRows((c) => `q${c}`, (c) => `k${r}_${c}`, d4)};`,
      `let t${r} = ${dotRows((c) => `g${c}`, (c) => `v${r}_${c}`, d4)};`,
      `let p${r} = select(0.0, exp(s${r} * params.scale - row_lse), exists${r} && query_sees(i, j${r}));`,
      `let z${r} = keep_factor(bh, i, j${r});`,
      `let pz${r} = p${r} * z${r};`,
      `let ds${r} = p${r} * (t${r} * z${r} - row_dot);`,
      ...range(d4).map((c) => `dv${r}_${c} += pz${r} * g${c};`),
      ...range(d4).map((c) => `dk${r}_${c} += ds${r} * q${c};`),
    );
  }
  return `
  let j_first = blk * BK + lid;
  ${
    rows.map((r) =>
      [
        `let j${r} = j_first + ${r * TEXEL_THREADS}u;`,
        `let exists${r} = key_exists(b, j${r});`,
        `let kv_row${r} = min(j${r}, params.tk - 1u) * params.kv_si;`,
        ...fetchRow(`k${r}_`, "k", `(k_base + kv_row${r}) / 4u`, d4),
        ...fetchRow(`v${r}_`, "v", `(v_base + kv_row${r}) / 4u`, d4),
        ...range(d4).flatMap((c) => [`var dk${r}_${c} = vec4<f32>();`, `var dv${r}_${c} = vec4<f32>();`]),
      ].join("\n  ")
    ).join("\n  ")
  }
  // Under the causal mask, queries before the block's first key attend none of its keys.
  for (var i = select(0u, blk * BK, params.causal != 0u); i < params.tq; i++) {
    ${fetchRow("q", "q", "(q_base + i * params.q_si) / 4u", d4).join("\n    ")}
    ${fetchRow("g", "o_grad", "(o_base + i * params.o_si) / 4u", d4).join("\n    ")}
    let row_lse = ${scalarAt("lse", "stat_at + i")};
    let row_dot = ${scalarAt("dvec", "stat_at + i")};
    ${body.join("\n    ")}
  }
  ${
    rows.map((r) =>
      `if (j${r} < params.tk) {
    let at${r} = kv_at + j${r} * params.kv_si;
    ${
        range(d4).map((c) =>
          `dkv[(params.dk_off + at${r}) / 4u + ${c}u] = dk${r}_${c} * params.scale;
    dkv[(params.dv_off + at${r}) / 4u + ${c}u] = dv${r}_${c};`
        ).join("\n    ")
      }
  }`
    ).join("\n  ")
  }
}`;
}

function queryGrad(dim: number): string {
  const d4 = dim / 4, rows = range(rowsPerThread(dim));
  const body: string[] = [];
  for (const r of rows) {
    body.push(
      `let s${r} = ${dotRows((c) => `q${r}_${c}`, (c) => `k${c}`, d4)};`,
      `let t${r} = ${dotRows((c) => `g${r}_${c}`, (c) => `v${c}`, d4)};`,
      `let p${r} = select(0.0, exp(s${r} * params.scale - lse${r}), exists && query_sees(i${r}, j));`,
      `let ds${r} = p${r} * (t${r} * keep_factor(bh, i${r}, j) - dot${r});`,
      ...range(d4).map((c) => `dq${r}_${c} += ds${r} * k${c};`),
    );
  }
  return `
  let i_first = blk * BQ + lid;
  ${
    rows.map((r) =>
      [
        `let i${r} = i_first + ${r * TEXEL_THREADS}u;`,
        `let row${r} = min(i${r}, params.tq - 1u);`,
        ...fetchRow(`q${r}_`, "q", `(q_base + row${r} * params.q_si) / 4u`, d4),
        ...fetchRow(`g${r}_`, "o_grad", `(o_base + row${r} * params.o_si) / 4u`, d4),
        `let lse${r} = ${scalarAt("lse", `stat_at + row${r}`)};`,
        `let dot${r} = ${scalarAt("dvec", `stat_at + row${r}`)};`,
        ...range(d4).map((c) => `var dq${r}_${c} = vec4<f32>();`),
      ].join("\n  ")
    ).join("\n  ")
  }
  for (var j = 0u; j < key_limit(blk * BQ); j++) {
    let exists = key_exists(b, j);
    ${fetchRow("k", "k", "(k_base + j * params.kv_si) / 4u", d4).join("\n    ")}
    ${fetchRow("v", "v", "(v_base + j * params.kv_si) / 4u", d4).join("\n    ")}
    ${body.join("\n    ")}
  }
  ${
    rows.map((r) =>
      `if (i${r} < params.tq) {
    ${
        range(d4).map((c) => `dq[(q_base + i${r} * params.q_si) / 4u + ${c}u] = dq${r}_${c} * params.scale;`)
          .join("\n    ")
      }
  }`
    ).join("\n  ")
  }
}`;
}

/** The body of `main` of each pass in the texel family for head dimension `dim`, after the header. */
export function texelPass(pass: AttentionPass, dim: number): string {
  return pass === "forward" ? forward(dim) : pass === "keyGrad" ? keyGrad(dim) : queryGrad(dim);
}

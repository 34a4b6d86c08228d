/**
 * The tiled attention kernels, for GPUs: a workgroup stages its query and key blocks in workgroup
 * memory and each thread owns a micro-tile of scores and of outputs. Holds the choice of tiles per
 * pass, head dimension and variant, the workgroup arrays and compile-time constants that follow from the tiles, and
 * the WGSL of the three passes, which runs after the header of attention_header.ts.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { type AttentionPass, paddedStride, vec4s } from "./attention_header.ts";

/**
 * Tiles of a tiled kernel: rows of the query and key blocks, and the threads as rowThreads x
 * colThreads. A thread owns rows strided by rowThreads and columns (keys in score tiles, vec4s of
 * D in output tiles) strided by colThreads.
 */
export interface AttentionTiles {
  /** Query rows per block. */
  readonly queries: number;
  /** Key rows per block. */
  readonly keys: number;
  /** Threads along rows. */
  readonly rowThreads: number;
  /** Threads along columns. */
  readonly colThreads: number;
}

/** Candidates [queries, keys, rowThreads, colThreads], preferred first; the first that fits is used. */
const HARDWARE_TILES: Record<AttentionPass, number[][]> = {
  forward: [
    [64, 32, 16, 16],
    [32, 32, 16, 16],
    [32, 16, 16, 16],
    [16, 16, 16, 16],
    [16, 8, 16, 8],
    [8, 8, 8, 8],
    [4, 4, 4, 4],
    [2, 2, 2, 1],
  ],
  keyGrad: [[32, 32, 16, 16], [16, 16, 16, 16], [16, 8, 8, 8], [8, 8, 8, 8], [4, 4, 4, 4], [2, 2, 2, 1]],
  queryGrad: [[32, 32, 16, 16], [16, 16, 16, 16], [16, 8, 16, 8], [8, 8, 8, 8], [4, 4, 4, 4], [2, 2, 2, 1]],
};
/**
 * Small tiles with several rows and columns per thread (variant tiled_small), for running the tiled
 * kernels on llvmpipe, whose compile time grows superlinearly with the workgroup memory declared.
 */
const SMALL_TILES: Record<AttentionPass, number[][]> = {
  forward: [[8, 8, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
  keyGrad: [[8, 8, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
  queryGrad: [[8, 4, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
};

function workgroupBytes(pass: AttentionPass, dim: number, t: AttentionTiles): number {
  const row = 16 * paddedStride(dim), { queries: bq, keys: bk } = t;
  if (pass === "forward") {
    return (bq + bk) * row + bk * 16 * vec4s(dim) + 4 * (bq * (bk + 1) + bk + bq * t.colThreads);
  }
  return 2 * (bq + bk) * row + 4 * ((pass === "keyGrad" ? 2 : 1) * bq * (bk + 1) + 2 * bq + bk);
}

/** The tiles of the tiled kernel of `pass` for head dimension `dim`, from the small candidates or the GPU's. */
export function attentionTiles(pass: AttentionPass, dim: number, small: boolean): AttentionTiles {
  const { workgroupMemoryBytes } = gpu().profile;
  for (const [queries, keys, rowThreads, colThreads] of (small ? SMALL_TILES : HARDWARE_TILES)[pass]) {
    const tiles = { queries, keys, rowThreads, colThreads };
    const divides = queries % rowThreads === 0 && keys % colThreads === 0 &&
      (pass !== "keyGrad" || keys % rowThreads === 0);
    if (divides && workgroupBytes(pass, dim, tiles) <= workgroupMemoryBytes) return tiles;
  }
  throw new RangeError(`attention: head dimension ${dim} does not fit ${workgroupMemoryBytes} bytes`);
}

/** Workgroup arrays of the tiled kernels: [element type, vec4 rows or floats]. */
export function tiledArrays(pass: AttentionPass, dim: number, t: AttentionTiles): string {
  const { queries: bq, keys: bk } = t, ds = paddedStride(dim);
  const arrays: Record<string, [string, number]> = {
    key_ok: ["f32", bk],
    qs: ["vec4<f32>", bq * ds],
    ks: ["vec4<f32>", bk * ds],
    ...(pass === "forward"
      ? {
        vs: ["vec4<f32>", bk * vec4s(dim)],
        ps: ["f32", bq * (bk + 1)],
        row_part: ["f32", bq * t.colThreads],
      }
      : {
        vs: ["vec4<f32>", bk * ds],
        dos: ["vec4<f32>", bq * ds],
        dss: ["f32", bq * (bk + 1)],
        lse_s: ["f32", bq],
        dvec_s: ["f32", bq],
        ...(pass === "keyGrad" ? { ps: ["f32", bq * (bk + 1)] } : {}),
      }),
  };
  return Object.entries(arrays).map(([n, [type, size]]) => `var<workgroup> ${n}: array<${type}, ${size}>;`)
    .join("\n");
}

/** Compile-time constants of the tiled kernel of `pass` for head dimension `dim` and tiles `t`. */
export function tiledConstants(pass: AttentionPass, dim: number, t: AttentionTiles): Record<string, number> {
  return {
    BQ: t.queries,
    BK: t.keys,
    PS: t.keys + 1, // row stride of the P and dS tiles: padded so that rows start in different banks
    NT: t.rowThreads * t.colThreads,
    RG: t.rowThreads,
    CG: t.colThreads,
    TM: t.queries / t.rowThreads,
    TN: t.keys / t.colThreads,
    TKR: pass === "keyGrad" ? t.keys / t.rowThreads : 1,
    DN: Math.ceil(vec4s(dim) / t.colThreads),
  };
}

/**
 * Coalesced load of a block of rows of `source` into a vec4 tile; `range` is "row0 limit rows
 * stride": rows row0.. of which those at or past `limit` load as zeros, and the tile's row stride.
 */
const loadTile = (tile: string, source: string, base: string, rowStride: string, range: string) => {
  const [row0, limit, rows, stride] = range.split(" ");
  return `for (var e = lid; e < ${rows} * D4; e += NT) {
    let r = e / D4;
    let c = e - r * D4;
    var x = vec4(0.0);
    if (${row0} + r < ${limit}) { x = row4_${source}(${base} + (${row0} + r) * ${rowStride}, c); }
    ${tile}[r * ${stride} + c] = x;
  }`;
};

/** Thread coordinates of the tiled kernels. */
const TILED_START = `
  let rg = lid / CG;
  let cg = lid % CG;`;

/** Loads the key block starting at k0 (K with row stride DS, V with `vStride`) and which keys exist. */
const loadKeyBlock = (vStride: string) =>
  `workgroupBarrier();
    ${loadTile("ks", "k", "k_base", "params.kv_si", "k0 params.tk BK DS")}
    ${loadTile("vs", "v", "v_base", "params.kv_si", `k0 params.tk BK ${vStride}`)}
    for (var jl = lid; jl < BK; jl += NT) { key_ok[jl] = select(0.0, 1.0, key_exists(b, k0 + jl)); }
    workgroupBarrier();`;

/** Loads the query block starting at q0 (Q and dO) with its logsumexp and D_i = rowsum(dO * O). */
const LOAD_QUERY_BLOCK = `${loadTile("qs", "q", "q_base", "params.q_si", "q0 params.tq BQ DS")}
  ${loadTile("dos", "o_grad", "o_base", "params.o_si", "q0 params.tq BQ DS")}
  for (var r = lid; r < BQ; r += NT) {
    let i = min(q0 + r, params.tq - 1u);
    lse_s[r] = lse[stat_at + i];
    dvec_s[r] = dvec[stat_at + i];
  }`;

/** Score micro-tile `out`[a * TN + n] += dot(row rg + a*RG of `rows`, row cg + n*CG of `cols`), both stride DS. */
const scores = (rows: string, cols: string, out: string) =>
  `for (var c = 0u; c < D4; c++) {
      var xa: array<vec4<f32>, TM>;
      for (var a = 0u; a < TM; a++) { xa[a] = ${rows}[(rg + a * RG) * DS + c]; }
      for (var n = 0u; n < TN; n++) {
        let xb = ${cols}[(cg + n * CG) * DS + c];
        for (var a = 0u; a < TM; a++) { ${out}[a * TN + n] += dot(xa[a], xb); }
      }
    }`;

/** Backward probabilities: P = exp(scale * s - lse), dropped-out P into ps (if `keepP`), dS = P * (t * Z - D_i) into dss. */
const probabilities = (keepP: boolean) =>
  `for (var a = 0u; a < TM; a++) {
      let r = rg + a * RG;
      for (var n = 0u; n < TN; n++) {
        let jl = cg + n * CG;
        let seen = query_sees(q0 + r, k0 + jl) && key_ok[jl] != 0.0;
        let p = select(0.0, exp(s[a * TN + n] * params.scale - lse_s[r]), seen);
        let z = keep_factor(bh, q0 + r, k0 + jl);${keepP ? "\n        ps[r * PS + jl] = p * z;" : ""}
        dss[r * PS + jl] = p * (t[a * TN + n] * z - dvec_s[r]);
      }
    }`;

const TILED_FORWARD = `${TILED_START}
  let q0 = blk * BQ;
  ${loadTile("qs", "q", "q_base", "params.q_si", "q0 params.tq BQ DS")}
  var m: array<f32, TM>;
  var l: array<f32, TM>;
  var acc: array<vec4<f32>, TM * DN>;
  for (var a = 0u; a < TM; a++) { m[a] = MASKED; }
  for (var kb = 0u; kb < (key_limit(q0) + BK - 1u) / BK; kb++) {
    let k0 = kb * BK;
    ${loadKeyBlock("D4")}
    // An explicit initialiser: Deno's WebGPU zeroes an uninitialised variable declared in a loop only once.
    var s = array<f32, TM * TN>();
    ${scores("qs", "ks", "s")}
    for (var a = 0u; a < TM; a++) {
      var mx = MASKED;
      for (var n = 0u; n < TN; n++) {
        let jl = cg + n * CG;
        let seen = query_sees(q0 + rg + a * RG, k0 + jl) && key_ok[jl] != 0.0;
        s[a * TN + n] = select(MASKED, s[a * TN + n] * params.scale, seen);
        mx = max(mx, s[a * TN + n]);
      }
      row_part[(rg + a * RG) * CG + cg] = mx;
    }
    workgroupBarrier();
    // Every thread of a row derives the same new max from the same partials: they agree bit for bit.
    for (var a = 0u; a < TM; a++) {
      let r = rg + a * RG;
      var mn = m[a];
      for (var c = 0u; c < CG; c++) { mn = max(mn, row_part[r * CG + c]); }
      let alpha = exp(m[a] - mn);
      m[a] = mn;
      l[a] *= alpha;
      for (var d = 0u; d < DN; d++) { acc[a * DN + d] *= alpha; }
      for (var n = 0u; n < TN; n++) {
        let p = select(0.0, exp(s[a * TN + n] - mn), s[a * TN + n] > -1.0e38);
        l[a] += p;
        ps[r * PS + cg + n * CG] = p * keep_factor(bh, q0 + r, k0 + cg + n * CG);
      }
    }
    workgroupBarrier();
    for (var jl = 0u; jl < BK; jl++) {
      var pa: array<f32, TM>;
      for (var a = 0u; a < TM; a++) { pa[a] = ps[(rg + a * RG) * PS + jl]; }
      for (var d = 0u; d < DN; d++) {
        let cc = cg + d * CG;
        if (cc < D4) {
          let x = vs[jl * D4 + cc];
          for (var a = 0u; a < TM; a++) { acc[a * DN + d] += pa[a] * x; }
        }
      }
    }
  }
  workgroupBarrier();
  for (var a = 0u; a < TM; a++) { row_part[(rg + a * RG) * CG + cg] = l[a]; }
  workgroupBarrier();
  for (var a = 0u; a < TM; a++) {
    let i = q0 + rg + a * RG;
    var total = 0.0;
    for (var c = 0u; c < CG; c++) { total += row_part[(rg + a * RG) * CG + c]; }
    if (i < params.tq) {
      let inv = select(0.0, 1.0 / total, total > 0.0);
      for (var d = 0u; d < DN; d++) {
        if (cg + d * CG < D4) { store4_o(o_base + i * params.o_si, cg + d * CG, acc[a * DN + d] * inv); }
      }
      if (cg == 0u) { lse[stat_at + i] = select(0.0, m[a] + log(total), total > 0.0); }
    }
  }
}`;

const TILED_KEY_GRAD = `${TILED_START}
  let k0 = blk * BK;
  ${loadTile("ks", "k", "k_base", "params.kv_si", "k0 params.tk BK DS")}
  ${loadTile("vs", "v", "v_base", "params.kv_si", "k0 params.tk BK DS")}
  for (var jl = lid; jl < BK; jl += NT) { key_ok[jl] = select(0.0, 1.0, key_exists(b, k0 + jl)); }
  var dk: array<vec4<f32>, TKR * DN>;
  var dv: array<vec4<f32>, TKR * DN>;
  // Under the causal mask, queries before k0 attend none of these keys.
  for (var qb = select(0u, k0 / BQ, params.causal != 0u); qb < (params.tq + BQ - 1u) / BQ; qb++) {
    let q0 = qb * BQ;
    workgroupBarrier();
    ${LOAD_QUERY_BLOCK}
    workgroupBarrier();
    var s = array<f32, TM * TN>();
    var t = array<f32, TM * TN>();
    ${scores("qs", "ks", "s")}
    ${scores("dos", "vs", "t")}
    ${probabilities(true)}
    workgroupBarrier();
    for (var r = 0u; r < BQ; r++) {
      var pa: array<f32, TKR>;
      var ga: array<f32, TKR>;
      for (var a = 0u; a < TKR; a++) {
        pa[a] = ps[r * PS + rg + a * RG];
        ga[a] = dss[r * PS + rg + a * RG];
      }
      for (var d = 0u; d < DN; d++) {
        let cc = cg + d * CG;
        if (cc < D4) {
          let og = dos[r * DS + cc];
          let qr = qs[r * DS + cc];
          for (var a = 0u; a < TKR; a++) {
            dv[a * DN + d] += pa[a] * og;
            dk[a * DN + d] += ga[a] * qr;
          }
        }
      }
    }
  }
  for (var a = 0u; a < TKR; a++) {
    let j = k0 + rg + a * RG;
    for (var d = 0u; d < DN; d++) {
      if (j < params.tk && cg + d * CG < D4) {
        store4_dkv(params.dk_off + kv_at + j * params.kv_si, cg + d * CG, dk[a * DN + d] * params.scale);
        store4_dkv(params.dv_off + kv_at + j * params.kv_si, cg + d * CG, dv[a * DN + d]);
      }
    }
  }
}`;

const TILED_QUERY_GRAD = `${TILED_START}
  let q0 = blk * BQ;
  ${LOAD_QUERY_BLOCK}
  var dq: array<vec4<f32>, TM * DN>;
  for (var kb = 0u; kb < (key_limit(q0) + BK - 1u) / BK; kb++) {
    let k0 = kb * BK;
    ${loadKeyBlock("DS")}
    var s = array<f32, TM * TN>();
    var t = array<f32, TM * TN>();
    ${scores("qs", "ks", "s")}
    ${scores("dos", "vs", "t")}
    ${probabilities(false)}
    workgroupBarrier();
    for (var jl = 0u; jl < BK; jl++) {
      var ga: array<f32, TM>;
      for (var a = 0u; a < TM; a++) { ga[a] = dss[(rg + a * RG) * PS + jl]; }
      for (var d = 0u; d < DN; d++) {
        let cc = cg + d * CG;
        if (cc < D4) {
          let kr = ks[jl * DS + cc];
          for (var a = 0u; a < TM; a++) { dq[a * DN + d] += ga[a] * kr; }
        }
      }
    }
  }
  for (var a = 0u; a < TM; a++) {
    let i = q0 + rg + a * RG;
    for (var d = 0u; d < DN; d++) {
      if (i < params.tq && cg + d * CG < D4) {
        store4_dq(q_base + i * params.q_si, cg + d * CG, dq[a * DN + d] * params.scale);
      }
    }
  }
}`;

/** The body of `main` of each pass in the tiled family, after the shared header. */
export const TILED_PASSES: Record<AttentionPass, string> = {
  forward: TILED_FORWARD,
  keyGrad: TILED_KEY_GRAD,
  queryGrad: TILED_QUERY_GRAD,
};

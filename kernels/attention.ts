/**
 * Fused scaled-dot-product attention, FlashAttention-2 style: the T x T score matrix never reaches
 * global memory. The forward pass keeps a running max and sum per query row (online softmax) and
 * saves the row's logsumexp; the backward pass recomputes the probabilities from it in two
 * kernels, one per key block (dK, dV) and one per query block (dQ), so every gradient element is
 * written by exactly one invocation and no atomics are needed.
 *
 * {@linkcode attention} and {@linkcode fusedQkvAttention} share the kernels: tensors are addressed
 * through offsets and batch, head and row strides passed as uniforms, so the fused QKV layout is
 * read and written in place without transposes. The head dimension D is a compile-time constant
 * and rows of D are handled as vec4s (zero-padded past D).
 *
 * Two kernel families implement the same passes. "tiled" (GPUs) stages query and key tiles in
 * workgroup memory; each thread owns a micro-tile of scores and of outputs. "rows" (llvmpipe)
 * gives each invocation whole rows in private arrays and reads the other side's rows straight from
 * memory: there, workgroup memory and barriers cost more than they save, and llvmpipe's
 * compilation time grows superlinearly with the workgroup memory a shader declares.
 *
 * @module
 */
import { gpu } from "../engine/device.ts";
import { grid, type Kernel, kernelFor, linearIndex } from "../engine/kernel.ts";
import { type BufferRange, copyBuffer, dispatch } from "../engine/recorder.ts";
import { nextKernelSeed } from "../engine/random.ts";
import { formatShape } from "../engine/shape.ts";
import { attachGrad, emptyTensor, needsGrad, type Tensor } from "../engine/tensor.ts";
import { WGSL_RANDOM } from "./wgsl.ts";

/** Options of {@linkcode attention} and {@linkcode fusedQkvAttention}. */
export interface AttentionOptions {
  /** Query i attends only keys j <= i (top-left aligned, like PyTorch's is_causal). */
  causal?: boolean;
  /**
   * float32 [B, Tk]: 1 = attend, 0 = padding (never attended). Like Hugging Face's attention_mask.
   * It must stay alive until backward has run.
   */
  keyMask?: Tensor;
  /** Multiplier of q·k; default 1/sqrt(D). */
  scale?: number;
  /** Dropout probability on the attention probabilities (training); default 0. */
  dropout?: number;
}

/** Largest supported head dimension. */
export const MAX_HEAD_DIM = 256;

/** The three passes: forward, dK/dV (a workgroup per key block) and dQ (a workgroup per query block). */
export type AttentionPass = "forward" | "keyGrad" | "queryGrad";

/** The kernel families: "tiled" for GPUs, "rows" for software adapters (see the module comment). */
export type AttentionKernels = "tiled" | "rows";

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
/** Small tiles with several rows and columns per thread, for running the tiled kernels on llvmpipe in tests. */
const SOFTWARE_TILES: Record<AttentionPass, number[][]> = {
  forward: [[8, 8, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
  keyGrad: [[8, 8, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
  queryGrad: [[8, 4, 4, 2], [4, 4, 2, 2], [2, 2, 2, 1]],
};
/** Invocations per workgroup of the row kernels: one 8-wide SIMD batch on llvmpipe. */
const ROW_THREADS = 8;
/** Rows per invocation of the row kernels: two halve the loads per FLOP; one keeps compiling large D fast. */
const rowsPerThread = (dim: number) => (dim <= 64 ? 2 : 1);

const vec4s = (dim: number) => Math.ceil(dim / 4);
/** Row stride (in vec4s) of tiles read across rows: odd, so that rows start in different banks. */
const paddedStride = (dim: number) => vec4s(dim) | 1;

function workgroupBytes(pass: AttentionPass, dim: number, t: AttentionTiles): number {
  const row = 16 * paddedStride(dim), { queries: bq, keys: bk } = t;
  if (pass === "forward") {
    return (bq + bk) * row + bk * 16 * vec4s(dim) + 4 * (bq * (bk + 1) + bk + bq * t.colThreads);
  }
  return 2 * (bq + bk) * row + 4 * ((pass === "keyGrad" ? 2 : 1) * bq * (bk + 1) + 2 * bq + bk);
}

/** The tiles of the tiled kernel of `pass` for head dimension `dim` on the current device. */
export function attentionTiles(pass: AttentionPass, dim: number): AttentionTiles {
  const { isSoftware, workgroupMemoryBytes } = gpu().profile;
  for (
    const [queries, keys, rowThreads, colThreads] of (isSoftware ? SOFTWARE_TILES : HARDWARE_TILES)[pass]
  ) {
    const tiles = { queries, keys, rowThreads, colThreads };
    const divides = queries % rowThreads === 0 && keys % colThreads === 0 &&
      (pass !== "keyGrad" || keys % rowThreads === 0);
    if (divides && workgroupBytes(pass, dim, tiles) <= workgroupMemoryBytes) return tiles;
  }
  throw new RangeError(`attention: head dimension ${dim} does not fit ${workgroupMemoryBytes} bytes`);
}

/** The distinct query and key block sizes the current kernel family uses for head dimension `dim` (for tests). */
export function attentionBlockSizes(dim: number): number[] {
  if (kernelFamily() === "rows") return [ROW_THREADS * rowsPerThread(dim)];
  const passes: AttentionPass[] = ["forward", "keyGrad", "queryGrad"];
  const sizes = passes.flatMap((pass) => [attentionTiles(pass, dim).queries, attentionTiles(pass, dim).keys]);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

let forcedKernels: AttentionKernels | undefined;

/** Overrides the adapter's choice of kernel family (tests run the tiled kernels on llvmpipe); undefined restores it. */
export function useAttentionKernels(kind?: AttentionKernels): void {
  forcedKernels = kind;
}

function kernelFamily(): AttentionKernels {
  return forcedKernels ?? (gpu().profile.isSoftware ? "rows" : "tiled");
}

const PARAMS = Object.fromEntries(
  ("blocks heads bh tq tk q_off q_sb q_sh q_si k_off v_off kv_sb kv_sh kv_si o_sb o_sh o_si dk_off dv_off " +
    "scale causal has_mask dropout keep_scale seed").split(" ")
    .map((n) => [n, ["scale", "dropout", "keep_scale"].includes(n) ? "f32" : "u32"] as const),
);
const INPUTS = [{ name: "q" }, { name: "k" }, { name: "v" }, { name: "mask" }];
const GRAD_INPUTS = [...INPUTS, { name: "o_grad" }, { name: "lse" }, { name: "dvec" }];

/**
 * `row4_<name>(at, c)` reads vec4 c of the row of D floats at `at` (zero past D);
 * `store4_<name>(at, c, v)` writes it, skipping the padding.
 */
function rowAccessors(dim: number, reads: string[], write: string): string {
  const guard = (e: number) => (dim % 4 !== 0 && e > 0 ? `4u * c + ${e}u < D` : "");
  const element = (n: string, e: number) =>
    guard(e) ? `select(0.0, ${n}[d + ${e}u], ${guard(e)})` : `${n}[d + ${e}u]`;
  const read = (n: string) =>
    `fn row4_${n}(at: u32, c: u32) -> vec4<f32> {
  let d = at + 4u * c;
  return vec4(${[0, 1, 2, 3].map((e) => element(n, e)).join(", ")});
}`;
  const stores = [0, 1, 2, 3].map((e) =>
    `${guard(e) ? `if (${guard(e)}) ` : ""}{ ${write}[d + ${e}u] = v[${e}]; }`
  );
  return `${reads.map(read).join("\n")}
fn store4_${write}(at: u32, c: u32, v: vec4<f32>) {
  let d = at + 4u * c;
  ${stores.join("\n  ")}
}`;
}

/** Constants, accessors, helpers and the start of `main` (decoding the workgroup's head and block). */
function header(dim: number, consts: Record<string, number>, reads: string[], write: string): string {
  const all = { D: dim, D4: vec4s(dim), DS: paddedStride(dim), ...consts };
  return `${WGSL_RANDOM}
${Object.entries(all).map(([name, value]) => `const ${name} = ${value}u;`).join("\n")}
const MASKED = -3.0e38;
${rowAccessors(dim, reads, write)}
fn keep_factor(bh: u32, i: u32, j: u32) -> f32 {
  if (params.dropout <= 0.0) { return 1.0; }
  return select(0.0, params.keep_scale, random_uniform(params.seed, bh, i * params.tk + j) >= params.dropout);
}
fn key_limit(q0: u32) -> u32 {
  return select(params.tk, min(params.tk, min(q0 + BQ, params.tq)), params.causal != 0u);
}
fn key_exists(b: u32, j: u32) -> bool {
  return j < params.tk && (params.has_mask == 0u || mask[b * params.tk + j] != 0.0);
}
fn query_sees(i: u32, j: u32) -> bool {
  return i < params.tq && (params.causal == 0u || j <= i);
}
@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * groups.x;
  if (block >= params.blocks * params.bh) { return; }
  let bh = block / params.blocks;
  let blk = block % params.blocks;
  let b = bh / params.heads;
  let h = bh % params.heads;
  let q_base = params.q_off + b * params.q_sb + h * params.q_sh;
  let k_base = params.k_off + b * params.kv_sb + h * params.kv_sh;
  let v_base = params.v_off + b * params.kv_sb + h * params.kv_sh;
  let o_base = b * params.o_sb + h * params.o_sh;
  let kv_at = b * params.kv_sb + h * params.kv_sh;`;
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
    lse_s[r] = lse[bh * params.tq + i];
    dvec_s[r] = dvec[bh * params.tq + i];
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
      if (cg == 0u) { lse[bh * params.tq + i] = select(0.0, m[a] + log(total), total > 0.0); }
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

const ROWS_FORWARD = `
  let i0 = blk * BQ + lid;
  var qv: array<vec4<f32>, R * D4>;
  var acc: array<vec4<f32>, R * D4>;
  var m: array<f32, R>;
  var l: array<f32, R>;
  var s: array<f32, R>;
  var alpha: array<f32, R>;
  var pz: array<f32, R>;
  for (var r = 0u; r < R; r++) {
    m[r] = MASKED;
    let i = min(i0 + r * NT, params.tq - 1u);
    for (var c = 0u; c < D4; c++) { qv[r * D4 + c] = row4_q(q_base + i * params.q_si, c); }
  }
  for (var j = 0u; j < key_limit(blk * BQ); j++) {
    let exists = key_exists(b, j);
    for (var r = 0u; r < R; r++) { s[r] = 0.0; }
    for (var c = 0u; c < D4; c++) {
      let kc = row4_k(k_base + j * params.kv_si, c);
      for (var r = 0u; r < R; r++) { s[r] += dot(qv[r * D4 + c], kc); }
    }
    for (var r = 0u; r < R; r++) {
      let i = i0 + r * NT;
      let x = select(MASKED, s[r] * params.scale, exists && query_sees(i, j));
      let mn = max(m[r], x);
      alpha[r] = exp(m[r] - mn);
      let p = select(0.0, exp(x - mn), x > -1.0e38);
      l[r] = l[r] * alpha[r] + p;
      m[r] = mn;
      pz[r] = p * keep_factor(bh, i, j);
    }
    for (var c = 0u; c < D4; c++) {
      let vc = row4_v(v_base + j * params.kv_si, c);
      for (var r = 0u; r < R; r++) { acc[r * D4 + c] = acc[r * D4 + c] * alpha[r] + pz[r] * vc; }
    }
  }
  for (var r = 0u; r < R; r++) {
    let i = i0 + r * NT;
    if (i < params.tq) {
      let inv = select(0.0, 1.0 / l[r], l[r] > 0.0);
      for (var c = 0u; c < D4; c++) { store4_o(o_base + i * params.o_si, c, acc[r * D4 + c] * inv); }
      lse[bh * params.tq + i] = select(0.0, m[r] + log(l[r]), l[r] > 0.0);
    }
  }
}`;

const ROWS_KEY_GRAD = `
  let j0 = blk * BK + lid;
  var kr: array<vec4<f32>, R * D4>;
  var vr: array<vec4<f32>, R * D4>;
  var dk: array<vec4<f32>, R * D4>;
  var dv: array<vec4<f32>, R * D4>;
  var exists: array<bool, R>;
  var s: array<f32, R>;
  var t: array<f32, R>;
  var pz: array<f32, R>;
  var ds: array<f32, R>;
  for (var r = 0u; r < R; r++) {
    exists[r] = key_exists(b, j0 + r * NT);
    let j = min(j0 + r * NT, params.tk - 1u);
    for (var c = 0u; c < D4; c++) {
      kr[r * D4 + c] = row4_k(k_base + j * params.kv_si, c);
      vr[r * D4 + c] = row4_v(v_base + j * params.kv_si, c);
    }
  }
  // Under the causal mask, queries before the block's first key attend none of its keys.
  for (var i = select(0u, blk * BK, params.causal != 0u); i < params.tq; i++) {
    for (var r = 0u; r < R; r++) {
      s[r] = 0.0;
      t[r] = 0.0;
    }
    for (var c = 0u; c < D4; c++) {
      let qi = row4_q(q_base + i * params.q_si, c);
      let gi = row4_o_grad(o_base + i * params.o_si, c);
      for (var r = 0u; r < R; r++) {
        s[r] += dot(qi, kr[r * D4 + c]);
        t[r] += dot(gi, vr[r * D4 + c]);
      }
    }
    for (var r = 0u; r < R; r++) {
      let j = j0 + r * NT;
      let p = select(0.0, exp(s[r] * params.scale - lse[bh * params.tq + i]), exists[r] && query_sees(i, j));
      let z = keep_factor(bh, i, j);
      pz[r] = p * z;
      ds[r] = p * (t[r] * z - dvec[bh * params.tq + i]);
    }
    for (var c = 0u; c < D4; c++) {
      let qi = row4_q(q_base + i * params.q_si, c);
      let gi = row4_o_grad(o_base + i * params.o_si, c);
      for (var r = 0u; r < R; r++) {
        dv[r * D4 + c] += pz[r] * gi;
        dk[r * D4 + c] += ds[r] * qi;
      }
    }
  }
  for (var r = 0u; r < R; r++) {
    let j = j0 + r * NT;
    for (var c = 0u; c < D4; c++) {
      if (j < params.tk) {
        store4_dkv(params.dk_off + kv_at + j * params.kv_si, c, dk[r * D4 + c] * params.scale);
        store4_dkv(params.dv_off + kv_at + j * params.kv_si, c, dv[r * D4 + c]);
      }
    }
  }
}`;

const ROWS_QUERY_GRAD = `
  let i0 = blk * BQ + lid;
  var qv: array<vec4<f32>, R * D4>;
  var gv: array<vec4<f32>, R * D4>;
  var dq: array<vec4<f32>, R * D4>;
  var row_lse: array<f32, R>;
  var row_dot: array<f32, R>;
  var s: array<f32, R>;
  var t: array<f32, R>;
  var ds: array<f32, R>;
  for (var r = 0u; r < R; r++) {
    let i = min(i0 + r * NT, params.tq - 1u);
    row_lse[r] = lse[bh * params.tq + i];
    row_dot[r] = dvec[bh * params.tq + i];
    for (var c = 0u; c < D4; c++) {
      qv[r * D4 + c] = row4_q(q_base + i * params.q_si, c);
      gv[r * D4 + c] = row4_o_grad(o_base + i * params.o_si, c);
    }
  }
  for (var j = 0u; j < key_limit(blk * BQ); j++) {
    let exists = key_exists(b, j);
    for (var r = 0u; r < R; r++) {
      s[r] = 0.0;
      t[r] = 0.0;
    }
    for (var c = 0u; c < D4; c++) {
      let kc = row4_k(k_base + j * params.kv_si, c);
      let vc = row4_v(v_base + j * params.kv_si, c);
      for (var r = 0u; r < R; r++) {
        s[r] += dot(qv[r * D4 + c], kc);
        t[r] += dot(gv[r * D4 + c], vc);
      }
    }
    for (var r = 0u; r < R; r++) {
      let i = i0 + r * NT;
      let p = select(0.0, exp(s[r] * params.scale - row_lse[r]), exists && query_sees(i, j));
      ds[r] = p * (t[r] * keep_factor(bh, i, j) - row_dot[r]);
    }
    for (var c = 0u; c < D4; c++) {
      let kc = row4_k(k_base + j * params.kv_si, c);
      for (var r = 0u; r < R; r++) { dq[r * D4 + c] += ds[r] * kc; }
    }
  }
  for (var r = 0u; r < R; r++) {
    let i = i0 + r * NT;
    for (var c = 0u; c < D4; c++) {
      if (i < params.tq) { store4_dq(q_base + i * params.q_si, c, dq[r * D4 + c] * params.scale); }
    }
  }
}`;

/** Per pass: the binding written through `store4_`, the output bindings and the code of each family. */
const PASSES = {
  forward: { write: "o", outputs: ["o", "lse"], tiled: TILED_FORWARD, rows: ROWS_FORWARD },
  keyGrad: { write: "dkv", outputs: ["dkv"], tiled: TILED_KEY_GRAD, rows: ROWS_KEY_GRAD },
  queryGrad: { write: "dq", outputs: ["dq"], tiled: TILED_QUERY_GRAD, rows: ROWS_QUERY_GRAD },
} as const;

/** Workgroup arrays of the tiled kernels: [element type, vec4 rows or floats]. */
function tiledArrays(pass: AttentionPass, dim: number, t: AttentionTiles): string {
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

/** The kernel of one pass for head dimension `dim`, in the current family; and the rows one workgroup covers. */
function passKernel(pass: AttentionPass, dim: number): { kernel: Kernel; rowsPerBlock: number } {
  const family = kernelFamily(), spec = PASSES[pass];
  const reads = pass === "forward" ? ["q", "k", "v"] : ["q", "k", "v", "o_grad"];
  const bindings = [
    ...(pass === "forward" ? INPUTS : GRAD_INPUTS),
    ...spec.outputs.map((name) => ({ name, write: true })),
  ];
  const name = `attention_${pass}_${family}`;
  if (family === "rows") {
    const rows = rowsPerThread(dim), block = rows * ROW_THREADS;
    const consts = { BQ: block, BK: block, NT: ROW_THREADS, R: rows };
    const kernel = kernelFor(`${name}/${dim}`, () => ({
      name,
      params: PARAMS,
      bindings,
      code: `${header(dim, consts, reads, spec.write)}${spec.rows}`,
    }));
    return { kernel, rowsPerBlock: block };
  }
  const t = attentionTiles(pass, dim);
  const consts = {
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
  const kernel = kernelFor(`${name}/${dim}/${Object.values(t).join("x")}`, () => ({
    name,
    params: PARAMS,
    bindings,
    code: `${tiledArrays(pass, dim, t)}\n${header(dim, consts, reads, spec.write)}${spec.tiled}`,
  }));
  return { kernel, rowsPerBlock: pass === "keyGrad" ? t.keys : t.queries };
}

/** D_i = rowsum(dO_i * O_i), one invocation per query row (O(T*D) work, negligible next to attention). */
function rowDotKernel(): Kernel {
  return kernelFor("attention_row_dot", () => ({
    name: "attention_row_dot",
    params: { rows: "u32", tq: "u32", heads: "u32", dim: "u32", o_sb: "u32", o_sh: "u32", o_si: "u32" },
    bindings: [{ name: "o" }, { name: "o_grad" }, { name: "dvec", write: true }],
    code: `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let idx = ${linearIndex(64)};
  if (idx >= params.rows) { return; }
  let bh = idx / params.tq;
  let at = (bh / params.heads) * params.o_sb + (bh % params.heads) * params.o_sh + (idx % params.tq) * params.o_si;
  var acc = 0.0;
  for (var d = 0u; d < params.dim; d++) { acc += o[at + d] * o_grad[at + d]; }
  dvec[idx] = acc;
}`,
  }));
}

/** Where row i, dim d of head (b, h) lives: offset + b*batch + h*head + i*row + d. */
interface Strides {
  readonly offset: number;
  readonly batch: number;
  readonly head: number;
  readonly row: number;
}

/** Sizes, layout and settings of one attention call, shared by its forward and backward dispatches. */
interface Problem {
  readonly batch: number;
  readonly heads: number;
  readonly queries: number;
  readonly keys: number;
  readonly dim: number;
  readonly q: Strides;
  /** Strides of k, v, dK and dV, with k's offset; v's offset is vOffset. */
  readonly kv: Strides;
  readonly vOffset: number;
  /** Strides of the output and of its gradient (offset 0). */
  readonly o: Strides;
  readonly scale: number;
  readonly causal: boolean;
  readonly mask: Tensor | undefined;
  readonly dropout: number;
  readonly seed: number;
}

/** Records one pass over every head; dK and dV go to element offsets dkOffset and dvOffset of `dkv`. */
function launch(pass: AttentionPass, p: Problem, ranges: BufferRange[], dkOffset = 0, dvOffset = 0): void {
  const { kernel, rowsPerBlock } = passKernel(pass, p.dim);
  const blocks = Math.ceil((pass === "keyGrad" ? p.keys : p.queries) / rowsPerBlock);
  const { q, kv, o } = p;
  const params = [blocks, p.heads, p.batch * p.heads, p.queries, p.keys, q.offset, q.batch, q.head, q.row];
  params.push(kv.offset, p.vOffset, kv.batch, kv.head, kv.row, o.batch, o.head, o.row, dkOffset, dvOffset);
  params.push(p.scale, p.causal ? 1 : 0, p.mask ? 1 : 0, p.dropout, 1 / (1 - p.dropout), p.seed);
  dispatch(kernel, params, ranges, grid(blocks * p.batch * p.heads, 1));
}

/** q, k and v ranges and the mask's (q's when there is none: bound but never read). */
const inputRanges = (p: Problem, q: Tensor, k: Tensor, v: Tensor) =>
  [q, k, v, p.mask ?? q].map((t) => t.range());

/**
 * Records the backward pass. dK and dV share one binding (`dkv.target`, at element offsets dkOffset
 * and dvOffset with k's strides) because the fused layout interleaves them in one buffer; dQ goes
 * to `dq` with q's offset and strides. A target is null when no input needs it.
 */
function backward(
  p: Problem,
  [q, k, v, out, lse, outGrad]: Tensor[],
  dkv: { target: Tensor; dkOffset: number; dvOffset: number } | null,
  dq: Tensor | null,
): void {
  const rows = p.batch * p.heads * p.queries;
  const dvec = emptyTensor([rows]);
  const rowDot = [rows, p.queries, p.heads, p.dim, p.o.batch, p.o.head, p.o.row];
  dispatch(rowDotKernel(), rowDot, [out.range(), outGrad.range(), dvec.range()], grid(rows, 64));
  const shared = [...inputRanges(p, q, k, v), outGrad.range(), lse.range(), dvec.range()];
  if (dkv) launch("keyGrad", p, [...shared, dkv.target.range()], dkv.dkOffset, dkv.dvOffset);
  if (dq) launch("queryGrad", p, [...shared, dq.range()]);
  dvec.dispose();
}

type Settings = Pick<Problem, "scale" | "causal" | "mask" | "dropout" | "seed">;

/** Validates the head dimension, options, dtypes and sizes; draws the dropout seed. */
function settings(
  op: string,
  shapes: string,
  inputs: Tensor[],
  batch: number,
  keys: number,
  dim: number,
  o: AttentionOptions,
): Settings {
  const { causal = false, keyMask, scale = 1 / Math.sqrt(dim), dropout = 0 } = o;
  if (!(dim >= 1 && dim <= MAX_HEAD_DIM)) {
    throw new Error(`${op}: head dimension ${dim} is outside 1..${MAX_HEAD_DIM} (${shapes})`);
  }
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`${op}: dropout ${dropout} is outside [0, 1)`);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale ${scale} is not finite`);
  if (keyMask && (keyMask.rank !== 2 || keyMask.shape[0] !== batch || keyMask.shape[1] !== keys)) {
    throw new Error(
      `${op}: keyMask ${formatShape(keyMask.shape)} must be [B, Tk] = [${batch}, ${keys}] (${shapes})`,
    );
  }
  const limit = gpu().profile.maxStorageBindingBytes;
  for (const t of keyMask ? [...inputs, keyMask] : inputs) {
    if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
    if (t.size * 4 > limit) {
      throw new Error(`${op}: ${t.describe()} exceeds the storage binding limit ${limit}`);
    }
  }
  return { scale, causal, mask: keyMask, dropout, seed: dropout > 0 ? nextKernelSeed() : 0 };
}

/** Runs the forward pass into new tensors; returns the output and the logsumexp saved for backward. */
function forward(p: Problem, q: Tensor, k: Tensor, v: Tensor, outShape: number[]): [Tensor, Tensor] {
  const out = emptyTensor(outShape), lse = emptyTensor([p.batch, p.heads, p.queries]);
  launch("forward", p, [...inputRanges(p, q, k, v), out.range(), lse.range()]);
  return [out, lse];
}

/** A new tensor of `shape` holding the elements of `source` from element `start` on. */
function copySlice(source: Tensor, start: number, shape: readonly number[]): Tensor {
  const out = emptyTensor(shape);
  const from = source.range();
  if (out.size > 0) {
    copyBuffer({ buffer: from.buffer, offset: from.offset + start * 4, size: out.size * 4 }, out.range());
  }
  return out;
}

/**
 * Scaled-dot-product attention softmax(scale * q kᵀ + masks) v, fused (the score matrix is never
 * stored), with optional causal and key-padding masks and dropout on the probabilities.
 * q [B, H, Tq, D], k and v [B, H, Tk, D] -> [B, H, Tq, D], D from 1 to 256. A query row whose keys
 * are all masked (by padding, causality or both) outputs zeros and gets zero gradients. Results are
 * bit-identical for the same inputs (with dropout: for the same {@linkcode manualSeed} sequence).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const shapes = `q ${formatShape(q.shape)}, k ${formatShape(k.shape)}, v ${formatShape(v.shape)}`;
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new Error(`attention: expected q [B, H, Tq, D] and k, v [B, H, Tk, D], got ${shapes}`);
  }
  const [batch, heads, queries, dim] = q.shape, keys = k.shape[2];
  if (k.shape.some((d, i) => d !== v.shape[i] || (i !== 2 && d !== q.shape[i]))) {
    throw new Error(`attention: k and v must be [${batch}, ${heads}, Tk, ${dim}] like q, got ${shapes}`);
  }
  // Backward packs dK and dV into one binding.
  const limit = gpu().profile.maxStorageBindingBytes;
  if (k.size * 8 > limit) {
    throw new Error(`attention: ${shapes}: dK and dV exceed the storage binding limit ${limit}`);
  }
  const contiguous = (rows: number): Strides => ({
    offset: 0,
    batch: heads * rows * dim,
    head: rows * dim,
    row: dim,
  });
  const p: Problem = {
    ...{ batch, heads, queries, keys, dim },
    q: contiguous(queries),
    kv: contiguous(keys),
    vOffset: 0,
    o: contiguous(queries),
    ...settings("attention", shapes, [q, k, v], batch, keys, dim, options),
  };
  const [out, lse] = forward(p, q, k, v, [batch, heads, queries, dim]);
  if (!needsGrad(q, k, v)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "attention", [q, k, v], (g) => {
    const dkv = k.requiresGrad || v.requiresGrad ? emptyTensor([2 * k.size]) : null;
    const dq = q.requiresGrad ? emptyTensor(q.shape) : null;
    backward(p, [q, k, v, out, lse, g], dkv && { target: dkv, dkOffset: 0, dvOffset: k.size }, dq);
    const dk = dkv && k.requiresGrad ? copySlice(dkv, 0, k.shape) : null;
    const dv = dkv && v.requiresGrad ? copySlice(dkv, k.size, v.shape) : null;
    dkv?.dispose();
    return [dq, dk, dv];
  });
}

/**
 * Attention straight from a fused QKV projection: qkv [B, T, 3*H*D] with q | k | v along the last
 * dim and head h at columns h*D..h*D+D-1 of each part (the layout of GPT-2's c_attn and of a
 * concatenated BERT query/key/value projection) -> [B, T, H*D] with heads merged, ready for the
 * output projection. No transposes are materialised; the gradient is dqkv [B, T, 3*H*D].
 * Options and masking behave as in {@linkcode attention}.
 */
export function fusedQkvAttention(qkv: Tensor, heads: number, options: AttentionOptions = {}): Tensor {
  const shape = formatShape(qkv.shape);
  if (qkv.rank !== 3) throw new Error(`fusedQkvAttention: expected qkv [B, T, 3*H*D], got ${shape}`);
  const [batch, tokens, width] = qkv.shape;
  if (!Number.isInteger(heads) || heads < 1 || width % (3 * heads) !== 0) {
    throw new Error(`fusedQkvAttention: qkv ${shape} does not split into q, k and v of ${heads} heads`);
  }
  const dim = width / (3 * heads), inner = heads * dim;
  const part = (offset: number): Strides => ({ offset, batch: tokens * width, head: dim, row: width });
  const p: Problem = {
    ...{ batch, heads, queries: tokens, keys: tokens, dim },
    q: part(0),
    kv: part(inner),
    vOffset: 2 * inner,
    o: { offset: 0, batch: tokens * inner, head: dim, row: inner },
    ...settings("fusedQkvAttention", `qkv ${shape}`, [qkv], batch, tokens, dim, options),
  };
  const [out, lse] = forward(p, qkv, qkv, qkv, [batch, tokens, inner]);
  if (!needsGrad(qkv)) {
    lse.dispose();
    return out;
  }
  return attachGrad(out, "fusedQkvAttention", [qkv], (g) => {
    const dqkv = emptyTensor(qkv.shape);
    backward(p, [qkv, qkv, qkv, out, lse, g], { target: dqkv, dkOffset: inner, dvOffset: 2 * inner }, dqkv);
    return [dqkv];
  });
}

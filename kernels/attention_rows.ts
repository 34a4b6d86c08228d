/**
 * The row attention kernels, for software adapters (llvmpipe): each invocation keeps whole rows in
 * private arrays and reads the other side's rows straight from memory, with no workgroup memory and
 * no barriers. Holds their block size and compile-time constants and the WGSL of the three passes,
 * which runs after the header of attention_header.ts.
 *
 * @module
 */
import type { AttentionPass } from "./attention_header.ts";

/** Invocations per workgroup of the row kernels: one 8-wide SIMD batch on llvmpipe. */
const ROW_THREADS = 8;
/** Rows per invocation of the row kernels: two halve the loads per FLOP; one keeps compiling large D fast. */
const rowsPerThread = (dim: number) => (dim <= 64 ? 2 : 1);

/** Query or key rows that one workgroup of the row kernels covers, for head dimension `dim`. */
export const rowBlockSize = (dim: number): number => ROW_THREADS * rowsPerThread(dim);

/** Compile-time constants of the row kernels for head dimension `dim`. */
export function rowConstants(dim: number): Record<string, number> {
  const rows = rowsPerThread(dim), block = rows * ROW_THREADS;
  return { BQ: block, BK: block, NT: ROW_THREADS, R: rows };
}

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
      lse[stat_at + i] = select(0.0, m[r] + log(l[r]), l[r] > 0.0);
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
      let p = select(0.0, exp(s[r] * params.scale - lse[stat_at + i]), exists[r] && query_sees(i, j));
      let z = keep_factor(bh, i, j);
      pz[r] = p * z;
      ds[r] = p * (t[r] * z - dvec[stat_at + i]);
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
    row_lse[r] = lse[stat_at + i];
    row_dot[r] = dvec[stat_at + i];
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

/** The body of `main` of each pass in the row family, after the shared header. */
export const ROW_PASSES: Record<AttentionPass, string> = {
  forward: ROWS_FORWARD,
  keyGrad: ROWS_KEY_GRAD,
  queryGrad: ROWS_QUERY_GRAD,
};

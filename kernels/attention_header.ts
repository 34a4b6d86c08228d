/**
 * What every attention kernel shares, whichever its family: the three passes, the vec4 layout of a
 * row of the head dimension, and the WGSL header that precedes each pass's code (compile-time
 * constants, row accessors, the masking and dropout helpers, and the start of `main`, which decodes
 * the workgroup's head and block).
 *
 * @module
 */
import { TEXEL_WGSL } from "../engine/texels.ts";
import { WGSL_RANDOM } from "./wgsl.ts";

/** The three passes: forward, dK/dV (a workgroup per key block) and dQ (a workgroup per query block). */
export type AttentionPass = "forward" | "keyGrad" | "queryGrad";

/** Vec4s holding a row of `dim` floats. */
export const vec4s = (dim: number): number => Math.ceil(dim / 4);
/** Row stride (in vec4s) of tiles read across rows: odd, so that rows start in different banks. */
export const paddedStride = (dim: number): number => vec4s(dim) | 1;

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

/**
 * Constants, accessors, helpers and the start of `main` (decoding the workgroup's head and block).
 * A dispatch covers heads bh0 .. bh0 + bh - 1 of a window (kernels/attention_windows.ts): `bh`, `b`
 * and `h` are global (dropout and masks see the same head as in one dispatch); the `*_off` uniforms
 * shift global element indices to the bound windows (wrapping as u32), `stat_at` is the head's first
 * logsumexp.
 * With `texels` (the texel family) the inputs are textures: `texel()` replaces the row accessors and
 * the key mask is read through its texture.
 */
export function header(
  dim: number,
  consts: Record<string, number>,
  reads: string[],
  write: string,
  texels = false,
): string {
  const all = { D: dim, D4: vec4s(dim), DS: paddedStride(dim), ...consts };
  const maskAt = texels
    ? "texel(mask, (b * params.tk + j - params.mask_off) / 4u)[(b * params.tk + j) % 4u]"
    : "mask[b * params.tk + j - params.mask_off]";
  return `${WGSL_RANDOM}
${Object.entries(all).map(([name, value]) => `const ${name} = ${value}u;`).join("\n")}
const MASKED = -3.0e38;
${texels ? TEXEL_WGSL : rowAccessors(dim, reads, write)}
fn keep_factor(bh: u32, i: u32, j: u32) -> f32 {
  if (params.dropout <= 0.0) { return 1.0; }
  return select(0.0, params.keep_scale, random_uniform(params.seed, bh, i * params.tk + j) >= params.dropout);
}
fn key_limit(q0: u32) -> u32 {
  return select(params.tk, min(params.tk, min(q0 + BQ, params.tq)), params.causal != 0u);
}
fn key_exists(b: u32, j: u32) -> bool {
  return j < params.tk && (params.has_mask == 0u || ${maskAt} != 0.0);
}
fn query_sees(i: u32, j: u32) -> bool {
  return i < params.tq && (params.causal == 0u || j <= i);
}
@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let block = wid.x + wid.y * groups.x;
  if (block >= params.blocks * params.bh) { return; }
  let bh = params.bh0 + block / params.blocks;
  let blk = block % params.blocks;
  let b = bh / params.heads;
  let h = bh % params.heads;
  let q_base = params.q_off + b * params.q_sb + h * params.q_sh;
  let k_base = params.k_off + b * params.kv_sb + h * params.kv_sh;
  let v_base = params.v_off + b * params.kv_sb + h * params.kv_sh;
  let o_base = params.o_off + b * params.o_sb + h * params.o_sh;
  let kv_at = b * params.kv_sb + h * params.kv_sh;
  let stat_at = bh * params.tq - params.stat_off;`;
}

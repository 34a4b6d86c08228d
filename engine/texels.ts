/**
 * Operands read through textures, for software adapters. llvmpipe (Mesa 22) loads a storage buffer
 * lane by lane behind bounds checks: bench/load_costs.ts measured 6-8 ns of one core per vec4 and lane
 * (12 ns as four floats) against 4.5-5.5 ns for a texel fetch (2026-12-01, 2-core AMD EPYC). Kernels
 * that read each element many times (matmul, attention) therefore copy their operands into
 * rgba32float textures first (a memcpy, about 17 GB/s) and read them with `textureLoad`.
 *
 * A texture holds a buffer range as a flat run of texels, {@linkcode TEXEL_ROW} to a row: floats
 * 4t .. 4t + 3 of the range are texel t, at column t % TEXEL_ROW of row t / TEXEL_ROW. Kernels read
 * texel t with `texel(name, t)` from {@linkcode TEXEL_WGSL}. Textures are pooled by height (a power
 * of two), so a steady loop creates none; like pooled buffers, one can be handed out again as soon as
 * the dispatch that reads it is recorded, since the GPU runs recorded work in order.
 *
 * @module
 */
import { gpu } from "./device.ts";
import { type BufferRange, copyToTexture, noteTextureSource } from "./recorder.ts";

/**
 * Floats below which an operand that a kernel reads about once is cheaper to load from its storage
 * buffer: llvmpipe spends about 70 us on every copy into a texture, whatever its size (2-core AMD EPYC:
 * dropout and add, texel and storage forms timed alternately on 1-16 K floats, cross between 6 K and
 * 16 K). Kernels that read each element many times (matmul, attention) copy whatever the size.
 */
const TEXEL_MIN_FLOATS = 8192;

/** Whether an operand of `floats` read about once is worth a texture copy (see {@linkcode TEXEL_MIN_FLOATS}). */
export function texelsPayOff(floats: number): boolean {
  return floats >= TEXEL_MIN_FLOATS;
}

/** Texels in one row of an operand texture (64 KiB). */
export const TEXEL_ROW = 4096;

/** WGSL of `texel(t, i)`: texel i of an operand texture. */
export const TEXEL_WGSL: string = `fn texel(t: texture_2d<f32>, i: u32) -> vec4<f32> {
  return textureLoad(t, vec2u(i & ${TEXEL_ROW - 1}u, i >> ${Math.log2(TEXEL_ROW)}u), 0);
}`;

const freeByHeight = new Map<number, GPUTexture[]>();
const views = new WeakMap<GPUTexture, GPUTextureView>();

/**
 * The range widened to whole texels (its size rounded up to 16 bytes within its buffer), or null
 * when its offset is not on a texel or the buffer ends first.
 */
export function texelRange(range: BufferRange): BufferRange | null {
  const size = Math.ceil(range.size / 16) * 16;
  if (range.offset % 16 !== 0 || range.offset + size > range.buffer.size) return null;
  return { ...range, size };
}

function acquire(rows: number): GPUTexture {
  const height = 2 ** Math.ceil(Math.log2(Math.max(1, rows)));
  const reused = freeByHeight.get(height)?.pop();
  if (reused) return reused;
  const limit = gpu().device.limits.maxTextureDimension2D;
  if (height > limit) {
    throw new RangeError(`texels: ${rows} rows of ${TEXEL_ROW} texels exceed the texture limit ${limit}`);
  }
  const texture = gpu().device.createTexture({
    label: `operand texels ${height}`,
    size: [TEXEL_ROW, height],
    format: "rgba32float",
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
  });
  views.set(texture, texture.createView());
  return texture;
}

/**
 * Copies each range into a pooled texture (recorded in order with the other work; equal ranges
 * share one), runs `record` with their views, which records the dispatches that read them, and
 * returns the textures to the pool. Ranges must be whole texels (from {@linkcode texelRange}).
 */
export function withTexels<T>(ranges: readonly BufferRange[], record: (views: GPUTextureView[]) => T): T {
  const textures: GPUTexture[] = [];
  const chosen = ranges.map((range, i) => {
    const same = ranges.findIndex((r) =>
      r.buffer === range.buffer && r.offset === range.offset && r.size === range.size
    );
    if (same < i) return textures[same];
    const texture = acquire(Math.ceil(range.size / 16 / TEXEL_ROW));
    copyToTexture(range, texture);
    noteTextureSource(views.get(texture)!, range);
    textures[i] = texture;
    return texture;
  });
  try {
    return record(chosen.map((t) => views.get(t)!));
  } finally {
    for (const texture of textures.filter((t) => t)) {
      let free = freeByHeight.get(texture.height);
      if (!free) freeByHeight.set(texture.height, free = []);
      free.push(texture);
    }
  }
}

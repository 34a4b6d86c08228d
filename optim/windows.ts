/**
 * The joint arena beyond one storage binding and beyond one buffer. The arena's elements are numbered
 * in one space across its chunks (buffers of up to the device's `maxBufferSize`, each of which may
 * hold far more than one storage binding, `maxStorageBufferBindingSize`); every arena-sized buffer
 * (values, gradients, moments) is a {@linkcode ChunkedBuffer} of the same chunks, and the update
 * kernels bind it in windows that never cross a chunk:
 *
 * - tile norms and AdamW (optim/kernels.ts) run once per {@linkcode TileWindow}, a run of whole norm
 *   tiles of at most one binding inside one chunk, binding only that window of every arena-sized
 *   buffer: 2 dispatches per binding-sized piece of each chunk (3 with sharing), one window when the
 *   arena fits one binding;
 * - mixing (sharing and sync) runs once per {@linkcode MixWindow}, a run of group blocks whose members
 *   lie, model by model, in one window of at most one binding inside one chunk; the kernel here binds
 *   one window per model (models + 2 storage bindings), so members of one group may live in different
 *   chunks. Groups are ordered by their first member's place, so each model's window moves forward
 *   through its segment, and a mix costs about one dispatch per binding-sized piece of the largest
 *   model's shared parameters. When the arena fits one binding, the single-binding kernel of
 *   optim/kernels.ts runs instead.
 *
 * Each element is computed by the same arithmetic in the same order whatever the windows, so windowed
 * updates are bit-identical to single-binding ones.
 *
 * @module
 */
import { ARENA_ALIGN } from "../engine/arena.ts";
import { gpu } from "../engine/device.ts";
import { grid, kernelFor } from "../engine/kernel.ts";
import { type BufferRange, dispatch } from "../engine/recorder.ts";
import { CONTROL, CONTROL_STRIDE, GROUP_WORDS, MIX_BLOCK } from "./kernels.ts";
import { MAX_MODELS } from "./options.ts";
import { type ArenaLayout, LANES, padded } from "./wgsl.ts";

/** One chunk of an arena-sized buffer: it holds the arena's elements [start, start + length). */
export interface BufferChunk {
  /** The buffer. */
  readonly buffer: GPUBuffer;
  /** The arena element at the buffer's first element. */
  readonly start: number;
  /** Elements in the buffer. */
  readonly length: number;
}

/** An arena-sized buffer as its chunks, in order (one chunk when one buffer holds the arena). */
export type ChunkedBuffer = readonly BufferChunk[];

/** The index of the chunk, of those starting at `starts` (ascending, from 0), that holds `element`. */
export function chunkOf(starts: readonly number[], element: number): number {
  let k = 0;
  while (k + 1 < starts.length && element >= starts[k + 1]) k++;
  return k;
}

/** The binding of arena elements [start, start + length) of a chunked buffer, which must lie in one chunk. */
export function chunkWindow(chunks: ChunkedBuffer, start: number, length: number): BufferRange {
  const chunk = chunks[chunkOf(chunks.map((c) => c.start), start)];
  if (start + length > chunk.start + chunk.length) {
    throw new RangeError(
      `MultiModelOptimizer: window [${start}, ${start + length}) crosses the end of the chunk ending at ` +
        `${chunk.start + chunk.length}`,
    );
  }
  return { buffer: chunk.buffer, offset: (start - chunk.start) * 4, size: length * 4 };
}

/** A run of whole norm tiles and the arena elements they cover. */
export interface TileWindow {
  /** First tile (global tile index). */
  firstTile: number;
  /** Tiles in the window. */
  tiles: number;
  /** First element: the first tile's start, a multiple of {@linkcode ARENA_ALIGN} elements. */
  start: number;
  /** Elements from `start` to the end of the last tile. */
  length: number;
}

/** Elements [start, end) of tile `tile` (tiles never cross models; a model's last tile is short). */
function tileSpan(layout: ArenaLayout, tile: number, tileElements: number): [number, number] {
  let m = 0;
  while (m + 1 < layout.models && tile >= layout.tiles[m + 1]) m++;
  const start = layout.segments[m] + (tile - layout.tiles[m]) * tileElements;
  return [start, Math.min(start + tileElements, layout.segments[m + 1])];
}

/**
 * Cuts the arena's tiles into runs of at most `limitElements` elements inside one of the chunks that
 * start at `chunkStarts` (tiles never cross a chunk: see ArenaOptions.sectionAlign); one run when it
 * all fits.
 */
export function tileWindows(
  layout: ArenaLayout,
  tileElements: number,
  limitElements: number,
  chunkStarts: readonly number[] = [0],
): TileWindow[] {
  const total = layout.tiles[layout.models];
  if (tileElements > limitElements) {
    throw new RangeError(
      `MultiModelOptimizer: a norm tile of ${tileElements * 4} bytes exceeds one storage binding of ` +
        `${limitElements * 4} bytes`,
    );
  }
  const windows: TileWindow[] = [];
  for (let tile = 0; tile < total;) {
    let [start, stop] = tileSpan(layout, tile, tileElements);
    const chunk = chunkOf(chunkStarts, start);
    let end = tile + 1;
    for (; end < total; end++) {
      const [first, next] = tileSpan(layout, end, tileElements);
      if (next - start > limitElements || chunkOf(chunkStarts, first) !== chunk) break;
      stop = next;
    }
    windows.push({ firstTile: tile, tiles: end - tile, start, length: stop - start });
    tile = end;
  }
  return windows;
}

/** A group of the mixing table: its first block, elements per member and members. */
export interface MixGroup {
  /** First block of the group in the table. */
  firstBlock: number;
  /** Elements per member. */
  size: number;
  /** Members: arena element offset and model index. */
  members: readonly { offset: number; model: number }[];
}

/** A run of blocks [firstBlock, firstBlock + blocks) and, per model, the arena elements it touches. */
export interface MixWindow {
  /** First block. */
  firstBlock: number;
  /** Blocks in the window. */
  blocks: number;
  /** Per model: [first element, end element) touched, or null where no member of the run is that model's. */
  spans: ([number, number] | null)[];
}

/** The aligned start of a window that must include element `element`. */
function alignedDown(element: number): number {
  return Math.floor(element / ARENA_ALIGN) * ARENA_ALIGN;
}

/** Elements of the binding that covers a span: from its aligned start to its end in whole vec4s. */
function spanElements([lo, hi]: [number, number]): number {
  return Math.ceil((hi - alignedDown(lo)) / 4) * 4;
}

/**
 * Cuts the blocks of the mixing table into runs whose touched elements fit, model by model, in one
 * window of at most `limitElements` elements inside one of the chunks that start at `chunkStarts` (a
 * block is {@linkcode MIX_BLOCK} elements per member, far below any binding, and a member lies in one
 * chunk).
 */
export function mixWindows(
  groups: readonly MixGroup[],
  models: number,
  limitElements: number,
  chunkStarts: readonly number[] = [0],
): MixWindow[] {
  const fits = (s: [number, number] | null) =>
    !s || (spanElements(s) <= limitElements && chunkOf(chunkStarts, s[0]) === chunkOf(chunkStarts, s[1] - 1));
  const windows: MixWindow[] = [];
  let current: MixWindow | null = null;
  for (const group of groups) {
    for (let b = 0; b < Math.ceil(group.size / MIX_BLOCK); b++) {
      const begin = b * MIX_BLOCK, end = Math.min(begin + MIX_BLOCK, group.size);
      const touched = (spans: ([number, number] | null)[]) => {
        const out = spans.map((s) => s && [...s] as [number, number]);
        for (const { offset, model } of group.members) {
          const s = out[model];
          out[model] = s ? [Math.min(s[0], offset + begin), Math.max(s[1], offset + end)] : [
            offset + begin,
            offset + end,
          ];
        }
        return out;
      };
      const widened = current && touched(current.spans);
      if (current && widened!.every(fits)) {
        current.spans = widened!;
        current.blocks++;
      } else {
        current = { firstBlock: group.firstBlock + b, blocks: 1, spans: touched(Array(models).fill(null)) };
        if (current.spans.some((s) => s && spanElements(s) > limitElements)) {
          throw new RangeError(
            `MultiModelOptimizer: a mixing block of ${MIX_BLOCK * 4} bytes per member exceeds one storage ` +
              `binding of ${limitElements * 4} bytes`,
          );
        }
        windows.push(current);
      }
    }
  }
  return windows;
}

/**
 * Records the mix of optim/kernels.ts (`recordMix`: each group's members moved towards their
 * weighted mean) window by window, each model's members bound through their own window of `target`.
 * `segments` gives each model's first element, where a model with no member in a window is bound.
 */
export function recordWindowedMix(
  target: ChunkedBuffer,
  table: BufferRange,
  control: BufferRange,
  layout: ArenaLayout,
  windows: readonly MixWindow[],
  groups: number,
  ratio: number,
  weights: readonly number[],
): void {
  const models = layout.models;
  const available = gpu().profile.maxStorageBuffersPerStage;
  if (models + 2 > available) {
    throw new Error(
      `MultiModelOptimizer: mixing ${models} models over an arena beyond one storage binding needs ` +
        `${models + 2} storage buffers per shader stage; the device allows ${available}`,
    );
  }
  const cases = (body: (m: number) => string) =>
    Array.from({ length: models }, (_, m) => `case ${m}u: { ${body(m)} }`).join("\n    ");
  const kernel = kernelFor(`mm_mix_windowed/${models}`, () => ({
    name: "mm_mix_windowed",
    params: {
      groups: "u32",
      first_block: "u32",
      block_end: "u32",
      ratio: "f32",
      model_weight: { type: "f32", length: MAX_MODELS },
      window_start: { type: "u32", length: MAX_MODELS },
    },
    bindings: [
      ...Array.from({ length: models }, (_, m) => ({ name: `mixed${m}`, write: true })),
      { name: "table", type: "u32" as const },
      { name: "control" },
    ],
    code: `
const S = ${CONTROL_STRIDE}u;
const W = ${GROUP_WORDS}u;
fn load(m: u32, at: u32) -> f32 {
  switch m {
    ${cases((m) => `return mixed${m}[at - window_start(${m}u)];`)}
    default: { return 0.0; }
  }
}
fn store(m: u32, at: u32, value: f32) {
  switch m {
    ${cases((m) => `mixed${m}[at - window_start(${m}u)] = value;`)}
    default: {}
  }
}
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_index) lane: u32) {
  let block = params.first_block + wid.x + wid.y * groups.x;
  if (block >= params.block_end) { return; }
  let base = table[params.groups * W + block] * W;
  let size = table[base + 1u];
  let count = table[base + 2u];
  var offsets: array<u32, ${MAX_MODELS}>;
  var owners: array<u32, ${MAX_MODELS}>;
  var weights: array<f32, ${MAX_MODELS}>;
  var weight_sum = 0.0;
  for (var k = 0u; k < count; k++) {
    let m = table[base + 4u + ${MAX_MODELS}u + k];
    offsets[k] = table[base + 4u + k];
    owners[k] = m;
    let out = control[m * S + ${CONTROL.skip}u] > 0.5 || control[m * S + ${CONTROL.fault}u] > 0.5;
    weights[k] = select(model_weight(m), 0.0, out);
    weight_sum += weights[k];
  }
  if (weight_sum == 0.0) { return; }
  let first = (block - table[base]) * ${MIX_BLOCK}u + lane;
  for (var e = first; e < min(first + ${MIX_BLOCK}u, size); e += ${LANES}u) {
    var total = 0.0;
    for (var k = 0u; k < ${MAX_MODELS}u; k++) {
      if (k < count && weights[k] > 0.0) { total += weights[k] * load(owners[k], offsets[k] + e); }
    }
    let mean = total / weight_sum;
    for (var k = 0u; k < ${MAX_MODELS}u; k++) {
      if (k < count && weights[k] > 0.0) {
        let at = offsets[k] + e;
        store(owners[k], at, (1.0 - params.ratio) * load(owners[k], at) + params.ratio * mean);
      }
    }
  }
}`,
  }));
  for (const w of windows) {
    const starts = w.spans.map((s, m) => s ? alignedDown(s[0]) : layout.segments[m]);
    const ranges = w.spans.map((s, m) => chunkWindow(target, starts[m], s ? spanElements(s) : 4));
    dispatch(
      kernel,
      {
        groups,
        first_block: w.firstBlock,
        block_end: w.firstBlock + w.blocks,
        ratio,
        model_weight: padded(weights, MAX_MODELS),
        window_start: padded(starts, MAX_MODELS),
      },
      [...ranges, table, control],
      grid(w.blocks, 1),
    );
  }
}

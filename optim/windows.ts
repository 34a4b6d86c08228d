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
import { MIX_BLOCK, MIX_PARAMS, mixEntryPoint, mixVectorised } from "./kernels.ts";
import { MAX_MODELS } from "./options.ts";
import { type ArenaLayout, padded } from "./wgsl.ts";

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
function chunkOf(starts: readonly number[], element: number): number {
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
  groups: { count: number; aligned: boolean },
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
  const vectorised = mixVectorised(groups.aligned);
  const type = vectorised ? "vec4<f32>" as const : "f32" as const;
  const width = vectorised ? 4 : 1;
  const kernel = kernelFor(`mm_mix_windowed/${models}/${vectorised ? "vec4" : "scalar"}`, () => ({
    name: vectorised ? "mm_mix_windowed_vec4" : "mm_mix_windowed",
    params: {
      ...MIX_PARAMS,
      first_block: "u32",
      window_start: { type: "u32", length: MAX_MODELS },
    },
    bindings: [
      ...Array.from({ length: models }, (_, m) => ({ name: `mixed${m}`, type, write: true })),
      { name: "table", type: "u32" as const },
      { name: "control" },
    ],
    // Windows start on ARENA_ALIGN elements, so a window's first vec4 is whole.
    code: mixEntryPoint(
      models,
      vectorised,
      "params.first_block",
      (m, at) => `mixed${m}[${at} - window_start(${m}u) / ${width}u]`,
    ),
  }));
  for (const w of windows) {
    const starts = w.spans.map((s, m) => s ? alignedDown(s[0]) : layout.segments[m]);
    const ranges = w.spans.map((s, m) => chunkWindow(target, starts[m], s ? spanElements(s) : 4));
    dispatch(
      kernel,
      {
        groups: groups.count,
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

/**
 * The joint arena of a MultiModelOptimizer: every model's parameters moved into one arena (chunks of
 * up to the device's maxBufferSize each, bound in windows where they exceed one storage binding:
 * optim/windows.ts), its elements numbered across the chunks so that model m owns the elements
 * [segment m, segment m + 1), with the layout the update kernels take, each parameter's place, and
 * the group table of the mixing kernel. Models start, and chunks end, on whole norm tiles, so that
 * no tile crosses a chunk.
 *
 * @module
 */
import { alignedLength, Arena, planArena } from "../engine/arena.ts";
import { type BufferRange, copyBuffer } from "../engine/recorder.ts";
import { shapeSize } from "../engine/shape.ts";
import type { Parameter, ParameterInfo, ParameterSet } from "../models/parameters.ts";
import type { ParameterGroup } from "./groups.ts";
import { DECAY_BLOCK, groupTable, MIX_BLOCK, TILE } from "./kernels.ts";
import { type ChunkedBuffer, chunkWindow, type MixGroup } from "./windows.ts";
import type { ArenaLayout } from "./wgsl.ts";

/** A parameter's place in the joint arena. */
export interface Placed {
  /** Index of the model. */
  model: number;
  /** The parameter. */
  parameter: Parameter;
  /** Element offset in the arena (numbered across its chunks). */
  offset: number;
  /** Element count. */
  size: number;
}

/**
 * Whether a parameter is a bias or a LayerNorm's weight or bias: what Hugging Face's `Trainer`
 * exempts from weight decay (`get_decay_parameter_names`).
 */
export function isBiasOrNorm(info: ParameterInfo): boolean {
  return info.kind === "bias" || info.role === "norm_gamma" || info.role === "norm_beta";
}

/**
 * The largest arena the update kernels address: they number elements across chunks in 32-bit
 * integers (about 4.3 G parameters, 64 GiB with gradients and moments).
 */
const MAX_ARENA_ELEMENTS = 2 ** 32 - TILE;

/** Every model's parameters in one arena, adopted from their sets (see ParameterSet.adopt). */
export class JointArena {
  /** The arena. */
  readonly arena: Arena;
  /** The first element of each chunk, in the numbering across chunks. */
  readonly chunkStarts: readonly number[];
  /** Every parameter's place, model by model in declaration order. */
  readonly placed: Placed[] = [];
  /** Elements each model's tensors take, aligned as in any arena (without the padding between models and chunks). */
  readonly modelElements: readonly number[];
  /** Segments and tiles per model, as the update kernels take them. */
  readonly layout: ArenaLayout;

  /** Moves the sets' values into a new arena; `owner` names the optimizer in ownership errors. */
  constructor(readonly modelNames: readonly string[], sets: readonly ParameterSet[], owner: string) {
    const sectionStarts: number[] = [];
    let first = 0;
    for (const set of sets) {
      sectionStarts.push(first);
      first += set.specs.length;
    }
    this.modelElements = sets.map((set) =>
      set.specs.reduce((sum, spec) => sum + alignedLength(shapeSize(spec.shape)), 0)
    );
    const shapes = sets.flatMap((set) => set.specs.map((spec) => spec.shape));
    const arenaOptions = { sectionStarts, sectionAlign: TILE };
    // Alignment and the chunk ends the next tensor did not fit in add to the elements the kernels address.
    const span = planArena(shapes, "multimodel", arenaOptions).chunkLengths.reduce((sum, n) => sum + n, 0);
    if (span > MAX_ARENA_ELEMENTS) {
      throw new RangeError(
        `MultiModelOptimizer: the models' arena spans ${span} values with alignment and chunk ends, ` +
          `more than the ${MAX_ARENA_ELEMENTS} its kernels address`,
      );
    }
    this.arena = new Arena(shapes, "multimodel", arenaOptions);
    const starts = [0];
    for (const chunk of this.arena.chunks.slice(0, -1)) starts.push(starts[starts.length - 1] + chunk.length);
    this.chunkStarts = starts;
    sets.forEach((set, m) => {
      set.adopt(this.arena, sectionStarts[m], owner);
      let index = 0;
      set.specs.forEach((spec, i) => {
        const slot = this.arena.slots[sectionStarts[m] + i];
        for (const member of spec.members) {
          this.placed.push({
            model: m,
            parameter: set.parameters[index++],
            offset: this.chunkStarts[slot.chunk] + slot.offset + member.offset,
            size: shapeSize(member.info.shape),
          });
        }
      });
    });
    this.layout = this.#layoutOf(sectionStarts);
  }

  /** An arena-sized buffer of the arena's own: its values or its gradients, chunk by chunk. */
  chunked(kind: "values" | "grads"): ChunkedBuffer {
    return this.arena.chunks.map((chunk, k) => ({
      buffer: chunk[kind],
      start: this.chunkStarts[k],
      length: chunk.length,
    }));
  }

  /** The binding of a placed parameter in an arena-sized buffer (the arena's values, gradients or a moment). */
  rangeOf(buffer: ChunkedBuffer, p: Placed): BufferRange {
    return chunkWindow(buffer, p.offset, p.size);
  }

  #layoutOf(sectionStarts: readonly number[]): ArenaLayout {
    const segments = sectionStarts.map((first) => {
      const slot = this.arena.slots[first];
      return this.chunkStarts[slot.chunk] + slot.offset;
    });
    segments.push(this.arena.length);
    const tiles = [0];
    for (let m = 0; m < sectionStarts.length; m++) {
      tiles.push(tiles[m] + Math.ceil((segments[m + 1] - segments[m]) / TILE));
    }
    return { models: sectionStarts.length, segments, tiles };
  }

  /** The "model/parameter" key of a placed parameter (state dicts use it). */
  key(p: Placed): string {
    return `${this.modelNames[p.model]}/${p.parameter.info.name}`;
  }

  /** The place of a model's parameter. */
  find(model: string, parameter: string): Placed {
    const m = this.modelNames.indexOf(model);
    const placed = this.placed.find((p) => p.model === m && p.parameter.info.name === parameter);
    if (!placed) throw new Error(`MultiModelOptimizer: no parameter "${parameter}" in model "${model}"`);
    return placed;
  }

  /**
   * The group table of the mixing kernel, from the groups' members' places in the arena, and the
   * groups as the table holds them: ordered by their first member's place, so that windows over the
   * table move forward through every model's segment.
   */
  groupTable(
    groups: readonly ParameterGroup[],
  ): { words: Uint32Array; blocks: number; aligned: boolean; groups: MixGroup[] } {
    const placed = groups.map((group) => ({
      size: shapeSize(group.shape),
      members: group.members.map((member) => {
        const placed = this.find(member.model, member.parameter);
        return { offset: placed.offset, model: placed.model };
      }),
    })).sort((a, b) => a.members[0].offset - b.members[0].offset);
    let firstBlock = 0;
    const ordered = placed.map((group) => {
      const mixGroup = { ...group, firstBlock };
      firstBlock += Math.ceil(group.size / MIX_BLOCK);
      return mixGroup;
    });
    return { ...groupTable(placed), groups: ordered };
  }

  /**
   * The decay mask of `recordAdamw`: a bit per {@linkcode DECAY_BLOCK} elements of the arena, set where
   * the parameter there is not a bias or a norm's weight (see {@linkcode isBiasOrNorm}).
   */
  decayMask(): Uint32Array {
    const blocks = Math.ceil(this.arena.length / DECAY_BLOCK);
    const mask = new Uint32Array(Math.max(1, Math.ceil(blocks / 32)));
    const exempt = new Uint8Array(blocks);
    for (const p of this.placed) {
      const decays = !isBiasOrNorm(p.parameter.info);
      for (let b = Math.floor(p.offset / DECAY_BLOCK); b * DECAY_BLOCK < p.offset + p.size; b++) {
        if (decays) mask[b >> 5] |= 1 << (b & 31);
        else exempt[b] = 1;
        if (exempt[b] && mask[b >> 5] & (1 << (b & 31))) {
          throw new Error(`MultiModelOptimizer: decay block ${b} holds ${this.key(p)} and an exempt tensor`);
        }
      }
    }
    return mask;
  }

  /** Copies each group's first member's values into the other members. */
  alignInitialValues(groups: readonly ParameterGroup[]): void {
    const values = this.chunked("values");
    for (const group of groups) {
      const [first, ...rest] = group.members.map((m) => this.find(m.model, m.parameter));
      for (const member of rest) copyBuffer(this.rangeOf(values, first), this.rangeOf(values, member));
    }
  }
}

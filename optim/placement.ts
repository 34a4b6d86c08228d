/**
 * The joint arena of a MultiModelOptimizer: every model's parameters moved into one flat arena (one
 * buffer of up to the device's maxBufferSize, bound in windows where it exceeds one storage binding:
 * optim/windows.ts), so that model m owns the elements [segment m, segment m + 1), with the layout the
 * update kernels take, each parameter's place, and the group table of the mixing kernel.
 *
 * @module
 */
import { alignedLength, Arena } from "../engine/arena.ts";
import { gpu } from "../engine/device.ts";
import { copyBuffer } from "../engine/recorder.ts";
import { shapeSize } from "../engine/shape.ts";
import { emptyTensor } from "../engine/tensor.ts";
import type { Parameter, ParameterSet } from "../models/parameters.ts";
import type { ParameterGroup } from "./groups.ts";
import { groupTable, MIX_BLOCK, TILE } from "./kernels.ts";
import type { MixGroup } from "./windows.ts";
import type { ArenaLayout } from "./wgsl.ts";

/** A parameter's place in the joint arena. */
export interface Placed {
  /** Index of the model. */
  model: number;
  /** The parameter. */
  parameter: Parameter;
  /** Element offset in the arena. */
  offset: number;
  /** Element count. */
  size: number;
}

/** Every model's parameters in one arena, adopted from their sets (see ParameterSet.adopt). */
export class JointArena {
  /** The arena (one chunk: one buffer). */
  readonly arena: Arena;
  /** Every parameter's place, model by model in declaration order. */
  readonly placed: Placed[] = [];
  /** Segments and tiles per model, as the update kernels take them. */
  readonly layout: ArenaLayout;

  /** Moves the sets' values into a new arena; `owner` names the optimizer in ownership errors. */
  constructor(readonly modelNames: readonly string[], sets: readonly ParameterSet[], owner: string) {
    this.arena = this.#moveIntoArena(sets, owner);
    this.layout = this.#layoutOf(sets);
  }

  /** Allocates the joint arena (one buffer), copies every model's values in and rebinds the models. */
  #moveIntoArena(sets: readonly ParameterSet[], owner: string): Arena {
    const shapes = sets.flatMap((set) => set.specs.map((spec) => spec.shape));
    const profile = gpu().profile;
    const limit = Math.floor(profile.maxBufferBytes / 4);
    const total = shapes.reduce((s, shape) => s + alignedLength(shapeSize(shape)), 0);
    if (total > limit) {
      throw new Error(
        `MultiModelOptimizer: the models hold ${total} parameter values (${
          (total * 4 / 2 ** 20).toFixed(0)
        } MiB ` +
          `with alignment), more than one buffer of ${profile.name} holds (maxBufferSize ${
            (limit * 4 / 2 ** 20).toFixed(0)
          } MiB)`,
      );
    }
    const arena = new Arena(shapes, "multimodel", limit);
    let first = 0;
    sets.forEach((set, m) => {
      set.adopt(arena, first, owner);
      let index = 0;
      set.specs.forEach((spec, i) => {
        for (const member of spec.members) {
          this.placed.push({
            model: m,
            parameter: set.parameters[index++],
            offset: arena.slots[first + i].offset + member.offset,
            size: shapeSize(member.info.shape),
          });
        }
      });
      first += set.specs.length;
    });
    return arena;
  }

  #layoutOf(sets: readonly ParameterSet[]): ArenaLayout {
    const segments: number[] = [];
    let slot = 0;
    for (const set of sets) {
      segments.push(this.arena.slots[slot].offset);
      slot += set.specs.length;
    }
    segments.push(this.arena.chunks[0].length);
    const tiles = [0];
    for (let m = 0; m < sets.length; m++) {
      tiles.push(tiles[m] + Math.ceil((segments[m + 1] - segments[m]) / TILE));
    }
    return { models: sets.length, segments, tiles };
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
  groupTable(groups: readonly ParameterGroup[]): { words: Uint32Array; blocks: number; groups: MixGroup[] } {
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

  /** Copies each group's first member's values into the other members (through a temporary: WebGPU copies between two buffers). */
  alignInitialValues(groups: readonly ParameterGroup[]): void {
    const values = this.arena.chunks[0].values;
    for (const group of groups) {
      const [first, ...rest] = group.members.map((m) => this.find(m.model, m.parameter));
      const staging = emptyTensor([first.size]);
      copyBuffer({ buffer: values, offset: first.offset * 4, size: first.size * 4 }, staging.range());
      for (const member of rest) {
        copyBuffer(staging.range(), { buffer: values, offset: member.offset * 4, size: member.size * 4 });
      }
      staging.dispose();
    }
  }
}

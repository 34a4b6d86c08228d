/**
 * Parameter arenas: many tensors laid out in a few flat GPU buffers (values, and gradients beside
 * them at the same offsets), so that an optimizer can update all of them with a handful of
 * dispatches over flat ranges instead of one dispatch per tensor.
 *
 * Each tensor starts at a 256-byte boundary (the storage-binding alignment), the gaps are zero and
 * stay zero under AdamW, and no tensor straddles two chunks. A chunk is one buffer of at most the
 * device's `maxBufferSize`, which may be far more than one storage binding: kernels bind tensors
 * and arena ranges in binding-sized windows, so a tensor (GPT-2's 154 MB token embedding on a 128 MiB
 * binding) may exceed one binding. A single tensor above `maxBufferSize` is refused.
 *
 * @module
 */
import { gpu } from "./device.ts";
import { createBuffer, destroyBuffer, makeRoom } from "./pool.ts";
import { clearBuffer, flush } from "./recorder.ts";
import { shapeSize } from "./shape.ts";
import { type DisposalReason, disposeBecause, keep, pinGrad, Storage, Tensor } from "./tensor.ts";

/** Elements per alignment unit (256 bytes of float32). */
export const ARENA_ALIGN = 64;

/**
 * Elements a tensor of `size` elements takes in an arena: rounded up to whole alignment units, at
 * least one (an empty tensor still gets a slot). Everything that sizes an arena uses it.
 */
export function alignedLength(size: number): number {
  return Math.max(1, Math.ceil(size / ARENA_ALIGN)) * ARENA_ALIGN;
}

/** One flat buffer of an arena, with its gradient twin. */
export interface ArenaChunk {
  /** Parameter values. */
  readonly values: GPUBuffer;
  /** Gradients, at the same offsets as the values. */
  readonly grads: GPUBuffer;
  /** Elements in the chunk, padding included (a multiple of {@linkcode ARENA_ALIGN}). */
  readonly length: number;
}

/** Where one tensor lives in an arena. */
export interface ArenaSlot {
  /** Index of the chunk. */
  readonly chunk: number;
  /** Offset in elements inside the chunk (a multiple of {@linkcode ARENA_ALIGN}). */
  readonly offset: number;
  /** Element count. */
  readonly size: number;
  /** Shape. */
  readonly shape: readonly number[];
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** The largest chunk, in elements: the device's largest buffer, in whole alignment units. */
function arenaChunkLimit(): number {
  return Math.floor(gpu().profile.maxBufferBytes / 4 / ARENA_ALIGN) * ARENA_ALIGN;
}

/** How an {@linkcode Arena} lays its tensors out, beyond the defaults. */
export interface ArenaOptions {
  /**
   * Indices of the tensors that begin a section (a model of a joint arena). Each section starts at a
   * multiple of `sectionAlign` elements and every chunk's length is one too, so that fixed-size tiles
   * counted from a section's start never cross from one chunk into the next.
   */
  sectionStarts?: readonly number[];
  /** Alignment of sections and chunk lengths in elements, a multiple of {@linkcode ARENA_ALIGN} (default ARENA_ALIGN). */
  sectionAlign?: number;
}

/** Where an {@linkcode Arena} puts its tensors, worked out before anything is allocated. */
export interface ArenaPlan {
  /** One slot per tensor, in the order of the shapes given. */
  readonly slots: readonly ArenaSlot[];
  /** Each chunk's length in elements, padding included. */
  readonly chunkLengths: readonly number[];
}

/**
 * Lays out tensors of the given shapes in chunks of at most the device's largest buffer, as an
 * {@linkcode Arena} of them would, allocating nothing; a tensor larger than a chunk is an error
 * naming its index.
 */
export function planArena(
  shapes: readonly (readonly number[])[],
  label: string,
  options: ArenaOptions = {},
): ArenaPlan {
  const align = options.sectionAlign ?? ARENA_ALIGN;
  const limit = Math.floor(arenaChunkLimit() / align) * align;
  const sectionStarts = new Set(options.sectionStarts ?? []);
  const roundUp = (n: number) => Math.ceil(n / align) * align;
  const slots: ArenaSlot[] = [];
  const used: number[] = [0];
  shapes.forEach((shape, i) => {
    const size = shapeSize(shape);
    const padded = alignedLength(size);
    if (padded > limit) {
      throw new RangeError(
        `${label}: tensor ${i} of ${size} elements exceeds the ${limit}-element chunk limit ` +
          `(maxBufferSize ${gpu().profile.maxBufferBytes} bytes)`,
      );
    }
    let at = used[used.length - 1];
    if (sectionStarts.has(i)) at = roundUp(at);
    if (at + padded > limit) {
      used.push(0);
      at = 0;
    }
    const chunk = used.length - 1;
    slots.push({ chunk, offset: at, size, shape: [...shape] });
    used[chunk] = at + padded;
  });
  return { slots, chunkLengths: used.map((n) => roundUp(Math.max(n, ARENA_ALIGN))) };
}

/** A set of parameter tensors in flat GPU buffers, zero-initialised, with gradient buffers beside them. */
export class Arena {
  /** The chunks, in order. */
  readonly chunks: readonly ArenaChunk[];
  /** One slot per tensor, in the order of the shapes given. */
  readonly slots: readonly ArenaSlot[];
  #destroyed = false;
  /** Tensors viewing the arena, disposed with it so that a stale reference fails loudly. */
  readonly #views: Tensor[] = [];

  /** Allocates the tensors of the given shapes as {@linkcode planArena} lays them out. */
  constructor(shapes: readonly (readonly number[])[], label: string, options: ArenaOptions = {}) {
    const { slots, chunkLengths } = planArena(shapes, label, options);
    // A chunk refused part-way (device limit, memory budget) destroys the buffers already made.
    const made: GPUBuffer[] = [];
    const create = (bytes: number, what: string) => {
      makeRoom(bytes);
      const buffer = createBuffer(bytes, STORAGE, what);
      made.push(buffer);
      return buffer;
    };
    try {
      this.chunks = chunkLengths.map((length, i) => {
        const bytes = length * 4;
        const chunk = {
          values: create(bytes, `${label} values ${i}`),
          grads: create(bytes, `${label} grads ${i}`),
          length,
        };
        clearBuffer({ buffer: chunk.values, offset: 0, size: bytes });
        clearBuffer({ buffer: chunk.grads, offset: 0, size: bytes });
        return chunk;
      });
    } catch (error) {
      // The clears of the chunks made are recorded: submitted first, as destroy() does.
      flush();
      for (const buffer of made) destroyBuffer(buffer);
      throw error;
    }
    this.slots = slots;
  }

  /** Total elements over all chunks, padding included. */
  get length(): number {
    return this.chunks.reduce((s, c) => s + c.length, 0);
  }

  /**
   * A leaf tensor viewing `shape` at element `offset` inside slot `i` (the whole slot by default),
   * requiring a gradient, with `.grad` viewing the same place in the gradient buffer. Views at an
   * offset that is not a multiple of {@linkcode ARENA_ALIGN} (parts of a packed slot, like one of
   * q/k/v in a fused projection) can be read, written and updated, but not bound to a kernel.
   */
  parameterTensor(i: number, name?: string, offset = 0, shape?: readonly number[]): Tensor {
    this.#assertAlive();
    const slot = this.slots[i];
    const viewShape = shape ?? slot.shape;
    const size = shapeSize(viewShape);
    if (offset < 0 || offset + size > slot.size) {
      throw new RangeError(
        `arena: view of ${size} elements at ${offset} is outside slot ${i} of ${slot.size}`,
      );
    }
    const chunk = this.chunks[slot.chunk];
    const byteOffset = (slot.offset + offset) * 4;
    const value = new Tensor(
      viewShape,
      "float32",
      new Storage(chunk.values, byteOffset, size * 4, false),
      byteOffset,
    );
    const grad = new Tensor(
      viewShape,
      "float32",
      new Storage(chunk.grads, byteOffset, size * 4, false),
      byteOffset,
    );
    value.requiresGrad = true;
    value.name = name;
    grad.name = name && `${name}.grad`;
    pinGrad(value, keep(grad));
    this.#views.push(value, grad);
    return keep(value);
  }

  /** Records zero-filling of every gradient (one command per chunk). */
  zeroGrads(): void {
    this.#assertAlive();
    for (const c of this.chunks) clearBuffer({ buffer: c.grads, offset: 0, size: c.length * 4 });
  }

  /**
   * Destroys the buffers (after submitting the work recorded so far) and disposes every tensor viewing
   * them; a later use of one names `reason`.
   */
  destroy(
    reason: DisposalReason = {
      what: "its arena was freed",
      remedy: "use a tensor of the new one",
      afterForward: "run the forward again",
    },
  ): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const view of this.#views) disposeBecause(view, reason);
    flush();
    for (const c of this.chunks) {
      destroyBuffer(c.values);
      destroyBuffer(c.grads);
    }
  }

  #assertAlive(): void {
    if (this.#destroyed) throw new Error("arena: used after destroy()");
  }
}

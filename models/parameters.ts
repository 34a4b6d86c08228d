/**
 * Parameters with structural metadata, stored in a flat arena.
 *
 * Every parameter knows its model, its role in the network, its layer, and its layout; the
 * multi-model optimizer groups parameters by these facts, never by name substrings. A model
 * declares "slots" (the tensors its forward pass uses); a slot may pack several Hugging Face
 * parameters, like query, key and value of one BERT layer, so that their projection is one matmul.
 *
 * @module
 */
import { Arena, ARENA_ALIGN } from "../engine/arena.ts";
import { clearBuffer, copyBuffer } from "../engine/recorder.ts";
import { Random } from "../engine/random.ts";
import { type Tensor, writeTensor } from "../engine/tensor.ts";
import { formatShape, shapeSize } from "../engine/shape.ts";

/** What a parameter does in the network. */
export type ParameterRole =
  | "token_embedding"
  | "position_embedding"
  | "type_embedding"
  | "attention_query"
  | "attention_key"
  | "attention_value"
  | "attention_qkv"
  | "attention_output"
  | "ffn_in"
  | "ffn_out"
  | "norm_gamma"
  | "norm_beta"
  | "pooler"
  | "head";

/**
 * How a tensor's values are laid out: `out_in` for PyTorch Linear weights, `in_out` for GPT-2's
 * Conv1D weights, `table` for embeddings (one row per id), `vector` for biases and norms. Tensors
 * of different layouts are never averaged together, even when their shapes agree.
 */
export type ParameterLayout = "out_in" | "in_out" | "table" | "vector";

/** Structural metadata of one parameter. */
export interface ParameterInfo {
  /** Name of the model it belongs to. */
  readonly model: string;
  /** Hugging Face state-dict name, as the model's class writes it (e.g. `bert.embeddings.word_embeddings.weight`). */
  readonly name: string;
  /** Function in the network. */
  readonly role: ParameterRole;
  /** Weight or bias (LayerNorm gamma is its weight, beta its bias). */
  readonly kind: "weight" | "bias";
  /** Where in the network, refining the role: embeddings, attention, ffn, final, pooler, head.dense, head.output... */
  readonly site: string;
  /** Transformer layer index, or null outside the layer stack. */
  readonly layer: number | null;
  /** Number of transformer layers of the model. */
  readonly layerCount: number;
  /** Shape. */
  readonly shape: readonly number[];
  /** Memory layout. */
  readonly layout: ParameterLayout;
}

/** How a slot is initialised when a model is built from scratch (Hugging Face's `_init_weights`). */
export type Initializer =
  | { kind: "normal"; std: number; zeroRow?: number }
  | { kind: "zeros" }
  | { kind: "ones" };

/** A parameter: its metadata and its value, a view into the model's arena. */
export interface Parameter {
  /** Metadata. */
  readonly info: ParameterInfo;
  /** The values (a leaf tensor; `.grad` holds its gradient). Replaced when the arena moves. */
  value: Tensor;
}

/** One member of a slot: a parameter at an element offset inside the slot. */
export interface SlotMember {
  /** Metadata (without the model name, added by the set). */
  readonly info: Omit<ParameterInfo, "model">;
  /** Element offset inside the slot. */
  readonly offset: number;
}

/** A tensor the forward pass uses, holding one or more parameters. */
export interface SlotSpec {
  /** Shape of the slot's tensor. */
  readonly shape: readonly number[];
  /** Initialisation. */
  readonly init: Initializer;
  /** The parameters packed in it, in order. */
  readonly members: readonly SlotMember[];
}

/**
 * The parameters of one model: slots laid out in an arena, and one {@linkcode Parameter} per HF tensor.
 *
 * Ownership: a set allocates an arena of its own. An optimizer may adopt the set ({@linkcode adopt}),
 * moving the values into its joint arena; from then on the optimizer owns that memory, the set's
 * `zeroGrad()` still clears only this set's gradients, and no second optimizer may adopt the set.
 * When the optimizer releases it ({@linkcode release}, on the optimizer's `dispose()`), the set gets
 * an arena of its own again holding the latest values, so the model stays usable. After the set's
 * own `dispose()` any use is an error that names the model.
 */
export class ParameterSet {
  /** Every parameter, in declaration order. */
  readonly parameters: Parameter[] = [];
  readonly #specs: SlotSpec[] = [];
  #slots: Tensor[] = [];
  /** Per slot, the indices in `parameters` of its members. */
  #slotParameters: number[][] = [];
  #arena: Arena | null = null;
  #first = 0;
  #owner: string | null = null;
  #disposed = false;

  /** Prepended to the names of parameters declared from now on (e.g. `bert.` for a model with a task head). */
  namePrefix = "";

  /** An empty set for the model named `model` (recorded in every parameter's metadata). */
  constructor(readonly model: string) {}

  /** Declares a slot with a single parameter; returns the slot index. */
  declare(info: Omit<ParameterInfo, "model">, init: Initializer): number {
    return this.declarePacked(info.shape, init, [{ info, offset: 0 }]);
  }

  /** Declares a slot holding several parameters at given element offsets; returns the slot index. */
  declarePacked(shape: readonly number[], init: Initializer, members: readonly SlotMember[]): number {
    if (this.#arena) throw new Error(`${this.model}: parameters declared after allocation`);
    for (const m of members) {
      if (m.offset + shapeSize(m.info.shape) > shapeSize(shape)) {
        throw new Error(`${this.model}: ${m.info.name} does not fit its slot ${formatShape(shape)}`);
      }
    }
    const prefixed = members.map((m) => ({ ...m, info: { ...m.info, name: this.namePrefix + m.info.name } }));
    this.#specs.push({ shape, init, members: prefixed });
    return this.#specs.length - 1;
  }

  /** Metadata of every declared parameter, in order (available before allocation). */
  get infos(): ParameterInfo[] {
    return this.#specs.flatMap((spec) => spec.members.map((m) => ({ ...m.info, model: this.model })));
  }

  /** Slot specifications, in order. */
  get specs(): readonly SlotSpec[] {
    return this.#specs;
  }

  /** Allocates an arena of its own and fills it with initial values from `seed`. */
  allocate(seed: number): void {
    this.#bind(this.#ownArena(), 0);
    const random = new Random(seed);
    this.#specs.forEach((spec, i) => writeTensor(this.#slots[i], initialValues(spec, random)));
  }

  /**
   * Moves the values into slots `first .. first + slots - 1` of `arena`, which `owner` (named in
   * errors) owns from now on; this set's own arena is freed. Throws if another owner holds the set.
   */
  adopt(arena: Arena, first: number, owner: string): void {
    this.#assertUsable();
    if (this.#owner !== null) {
      throw new Error(
        `${this.model}: its parameters already belong to ${this.#owner}; a model can be trained by one ` +
          "optimizer at a time (dispose() that one first)",
      );
    }
    this.#specs.forEach((_, i) => {
      const slot = arena.slots[first + i];
      copyBuffer(this.#slots[i].range(), {
        buffer: arena.chunks[slot.chunk].values,
        offset: slot.offset * 4,
        size: slot.size * 4,
      });
    });
    const previous = this.#arena;
    this.#bind(arena, first);
    this.#owner = owner;
    previous?.destroy({
      what: `${this.model}'s parameters moved into the arena of ${owner}`,
      remedy: "read model.parameters[i].value again",
      afterForward: "run the forward after building the optimizer",
    });
  }

  /** Gives the set an arena of its own again, with the current values (and gradients); the owner lets go. */
  release(): void {
    if (this.#owner === null || !this.#arena) return;
    const own = this.#ownArena();
    this.#specs.forEach((_, i) => {
      const from = this.#arena!.slots[this.#first + i];
      const to = own.slots[i];
      for (const kind of ["values", "grads"] as const) {
        copyBuffer(
          { buffer: this.#arena!.chunks[from.chunk][kind], offset: from.offset * 4, size: from.size * 4 },
          { buffer: own.chunks[to.chunk][kind], offset: to.offset * 4, size: to.size * 4 },
        );
      }
    });
    this.#bind(own, 0);
    this.#owner = null;
  }

  /** The optimizer that owns the parameters' memory, or null when the set owns it. */
  get owner(): string | null {
    return this.#owner;
  }

  /** Zeroes this set's gradients only (whoever owns the arena). */
  zeroGrad(): void {
    this.#assertUsable();
    const arena = this.#arena!;
    const slots = arena.slots.slice(this.#first, this.#first + this.#specs.length);
    for (let c = 0; c < arena.chunks.length; c++) {
      const inChunk = slots.filter((s) => s.chunk === c);
      if (inChunk.length === 0) continue;
      const start = inChunk[0].offset;
      const last = inChunk[inChunk.length - 1];
      const end = Math.min(
        arena.chunks[c].length,
        Math.ceil((last.offset + last.size) / ARENA_ALIGN) * ARENA_ALIGN,
      );
      clearBuffer({ buffer: arena.chunks[c].grads, offset: start * 4, size: (end - start) * 4 });
    }
  }

  /** Frees the set's own arena. Throws while an optimizer owns the parameters. */
  dispose(): void {
    if (this.#disposed) return;
    if (this.#owner !== null) {
      throw new Error(`${this.model}: its parameters belong to ${this.#owner}; dispose() that first`);
    }
    this.#arena?.destroy({
      what: `${this.model} was disposed`,
      remedy: "it cannot be used any more",
      afterForward: "dispose a model after its last backward",
    });
    this.#disposed = true;
  }

  #ownArena(): Arena {
    return new Arena(this.#specs.map((s) => s.shape), `${this.model} parameters`);
  }

  /** Points every slot and parameter at the arena's slots `first ..` (the values must already be there). */
  #bind(arena: Arena, first: number): void {
    this.#slots = this.#specs.map((spec, i) =>
      arena.parameterTensor(first + i, spec.members.map((m) => m.info.name).join("+"))
    );
    let p = 0;
    this.#slotParameters = [];
    this.#specs.forEach((spec, i) => {
      this.#slotParameters.push(spec.members.map((_, m) => p + m));
      for (const member of spec.members) {
        const value = arena.parameterTensor(first + i, member.info.name, member.offset, member.info.shape);
        if (this.#arena) {
          // A parameter set requiresGrad = false stays so in its new arena, so the forward still refuses it.
          value.requiresGrad = this.parameters[p].value.requiresGrad;
          this.parameters[p].value = value;
        } else this.parameters.push({ info: { ...member.info, model: this.model }, value });
        p++;
      }
    });
    this.#arena = arena;
    this.#first = first;
  }

  #assertUsable(): void {
    if (this.#disposed) throw new Error(`${this.model}: used after dispose()`);
    if (!this.#arena) throw new Error(`${this.model}: parameters are not allocated`);
  }

  /**
   * The tensor of slot `i`, as used in the forward pass. Refuses a slot holding a parameter whose
   * value was set `requiresGrad = false` (PyTorch's way to freeze it): the forward reads the slot, not
   * the parameter's own tensor, and the optimizer updates every parameter, so the setting would
   * be ignored in silence.
   */
  slot(i: number): Tensor {
    this.#assertUsable();
    for (const p of this.#slotParameters[i]) {
      const { info, value } = this.parameters[p];
      if (!value.requiresGrad) {
        throw new Error(
          `${this.model}: parameter "${info.name}" has requiresGrad false, but freezing parameters is not ` +
            "supported: it would still get a gradient and be updated",
        );
      }
    }
    return this.#slots[i];
  }

  /** The arena holding the values (owned by {@linkcode owner} when that is not null). */
  get arena(): Arena {
    this.#assertUsable();
    return this.#arena!;
  }

  /** Total number of parameter values. */
  get count(): number {
    return this.parameters.reduce((s, p) => s + shapeSize(p.info.shape), 0);
  }
}

function initialValues(spec: SlotSpec, random: Random): Float32Array {
  const size = shapeSize(spec.shape);
  const init = spec.init;
  if (init.kind === "zeros") return new Float32Array(size);
  if (init.kind === "ones") return new Float32Array(size).fill(1);
  const values = random.normals(size, init.std);
  if (init.zeroRow !== undefined) {
    const width = spec.shape[spec.shape.length - 1];
    values.fill(0, init.zeroRow * width, (init.zeroRow + 1) * width);
  }
  return values;
}

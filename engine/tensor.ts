/**
 * Tensors: float32 or int32 values in pooled GPU buffers, with a shape, reverse-mode autograd links
 * and an explicit lifetime (see {@linkcode tidy}).
 *
 * Lifetime rule: a tensor created inside `tidy(fn)` is disposed when `fn` returns unless `fn`
 * returns it (then it moves to the enclosing scope) or it was passed to {@linkcode keep}. A tensor
 * created outside every scope lives until `dispose()`. Gradients stored in `.grad` are never
 * scope-owned.
 *
 * @module
 */
import { checkOptions } from "./options.ts";
import { acquireBuffer, releaseBuffer } from "./pool.ts";
import { gpu } from "./device.ts";
import { bindingWindows, grid, kernelFor, linearIndex } from "./kernel.ts";
import { type BufferRange, clearBuffer, copyBuffer, dispatch, readRanges, upload } from "./recorder.ts";
import { assertShape, formatShape, sameShape, shapeSize } from "./shape.ts";
import { TEXEL_WGSL, texelRange, texelsPayOff, withTexels } from "./texels.ts";
import { kernelVariant } from "./variants.ts";

/** Element types of tensors. */
export type DType = "float32" | "int32";

/** A GPU buffer region shared by a tensor and its views; returned to the pool when the last user goes. */
export class Storage {
  /** Tensors (and views) holding this storage. */
  refs = 1;
  /**
   * The int32 values of the whole region as last written from the host (`tensor()`, `writeTensor`,
   * `copyInto`, `copyOf`, `zeros`), or undefined when a kernel wrote them and the host does not know
   * them. Every host write replaces it, so all views of the storage agree; never modify it in place.
   */
  hostInts?: Int32Array;
  /**
   * A region of `buffer`: `byteLength` bytes from `byteOffset`; `pooled` buffers go back to the pool
   * when the last reference is dropped.
   */
  constructor(
    readonly buffer: GPUBuffer,
    readonly byteOffset: number,
    readonly byteLength: number,
    readonly pooled: boolean,
  ) {}
}

/** How a tensor was computed: its inputs and the function that maps its gradient to theirs. */
export interface GradNode {
  /** Name of the op, shown in errors. */
  readonly op: string;
  /** Inputs of the op, in the order the backward function returns their gradients. */
  readonly parents: readonly Tensor[];
  /**
   * Maps the output gradient to one gradient per parent (null where a parent needs none). It must
   * not return `grad` itself (a `detach()` of it is fine): the engine disposes `grad` afterwards.
   */
  readonly backward: (grad: Tensor) => (Tensor | null)[];
}

const scopes: Set<Tensor>[] = [];
let gradEnabled = true;
/** Sets a gradient that assignment may not replace; installed by the Tensor class, used by {@linkcode pinGrad}. */
let setPinnedGrad: (value: Tensor, grad: Tensor) => void;
/** Disposes a tensor, recording why for a later use's error; installed by the Tensor class. */
let disposeAs: (tensor: Tensor, why: DisposalReason) => void;
/** The tensor a gradient belongs to (null for other tensors); installed by the Tensor class. */
let gradOwner: (tensor: Tensor) => Tensor | null;
/**
 * Takes a gradient from its tensor, which no longer holds or disposes it; false where it is not the
 * tensor's current one or is a parameter's. Installed by the Tensor class.
 */
let takeGrad: (grad: Tensor) => boolean;

/** Why a tensor was disposed by other code than its holder's: what happened, and what to do instead. */
export interface DisposalReason {
  /** What freed it, e.g. "bert's parameters moved into the arena of ...". */
  readonly what: string;
  /** What to do about a reference held from before, e.g. "read model.parameters[i].value again". */
  readonly remedy: string;
  /** What to do when a backward needs it, e.g. "run the forward after building the optimizer". */
  readonly afterForward?: string;
}

/** A tensor used after its buffer went back to the pool; backward turns it into an error about the op. */
class DisposedTensorError extends Error {
  constructor(readonly tensor: Tensor, readonly reason: DisposalReason | null) {
    super(
      `${tensor.describe()} was used after dispose()${reason ? ` (${reason.what}: ${reason.remedy})` : ""}`,
    );
  }
}

/** A multi-dimensional array on the GPU. */
export class Tensor {
  /** Number of elements. */
  readonly size: number;
  #grad: Tensor | null = null;
  #gradPinned = false;
  /** The tensor whose gradient this is, which disposes it with itself; null for any other tensor. */
  #gradOf: Tensor | null = null;
  #requiresGrad = false;
  /** The op that produced this tensor, for autograd; null for leaves. */
  node: GradNode | null = null;
  /** Optional name used in error messages (parameters carry theirs). */
  name?: string;
  #disposed = false;
  /** Why it was disposed, when not by its own code (an arena freed under it), for the error of a later use. */
  #disposedBecause: DisposalReason | null = null;

  /** Use the creation functions ({@linkcode tensor}, {@linkcode zeros}, {@linkcode emptyTensor}). */
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly storage: Storage,
    readonly byteOffset: number,
  ) {
    this.size = shapeSize(shape);
    scopes.at(-1)?.add(this);
  }

  static {
    setPinnedGrad = (value, grad) => {
      value.#grad = grad;
      value.#gradPinned = true;
      grad.#gradOf = value;
    };
    gradOwner = (tensor) => tensor.#gradOf;
    takeGrad = (grad) => {
      const owner = grad.#gradOf;
      // Only the tensor's current gradient: an older one, replaced or freed, is its no longer.
      if (owner === null || owner.#gradPinned || owner.#grad !== grad) return false;
      owner.#grad = null;
      grad.#gradOf = null;
      return true;
    };
    disposeAs = (tensor, why) => {
      if (!tensor.#disposed) tensor.#disposedBecause = why;
      tensor.#release();
    };
  }

  /**
   * Gradient accumulated by `backward()`, with this tensor's shape; null until one arrives. The tensor
   * owns it and disposes it with itself, and assigning one (null, as PyTorch's
   * `zero_grad(set_to_none=True)`, or a float32 tensor of this shape, not another tensor's gradient)
   * disposes the gradient it replaces (one disposed by hand is replaced by the next backward). Returned
   * from a `tidy()` that disposes its tensor, it is taken from the tensor and is the caller's; to keep
   * one beyond its tensor otherwise, `copyOf()` it. A model parameter's gradient lives in its arena,
   * where the optimizer reads it, and cannot be replaced: zero it with the optimizer's `zeroGrad()`.
   */
  get grad(): Tensor | null {
    return this.#grad;
  }

  set grad(grad: Tensor | null) {
    if (this.#gradPinned) {
      throw new Error(
        `${this.describe()}: its gradient lives in its model's arena, where the optimizer reads it, and ` +
          "cannot be replaced (the optimizer's zeroGrad() zeroes it)",
      );
    }
    if (grad !== null) {
      if (!(grad instanceof Tensor) || grad.dtype !== "float32" || !sameShape(grad.shape, this.shape)) {
        const given = grad instanceof Tensor ? grad.describe() : String(grad);
        throw new Error(
          `${this.describe()}: its grad must be null or a float32${
            formatShape(this.shape)
          } tensor, got ${given}`,
        );
      }
      grad.range(); // refuses a disposed tensor
      if (grad.#gradOf !== null && grad.#gradOf !== this) {
        throw new Error(
          `${this.describe()}: ${grad.describe()} is already the gradient of ${grad.#gradOf.describe()} ` +
            "(copyOf() gives one of its own)",
        );
      }
      this.range(); // a disposed tensor takes no gradient: nothing would free it
      keep(grad); // the tensor owns it now, not the scope it was made in
    }
    const replaced = this.#grad;
    if (replaced !== null && replaced !== grad && replaced.#gradOf === this) {
      replaced.dispose();
      replaced.#gradOf = null;
    }
    this.#grad = grad;
    if (grad) grad.#gradOf = this;
  }

  /**
   * Whether gradients flow to this tensor. Only a leaf's may change (PyTorch's rule: an op's output
   * requires one when an input does, and turning that off would cut the graph without a word; `detach()`
   * gives a tensor without one), and an int32 tensor never requires one.
   */
  get requiresGrad(): boolean {
    return this.#requiresGrad;
  }

  set requiresGrad(value: boolean) {
    if (typeof value !== "boolean") {
      throw new TypeError(
        `${this.describe()}: requiresGrad must be true or false, got ${JSON.stringify(value)}`,
      );
    }
    if (value === this.#requiresGrad) return;
    if (this.node) {
      throw new Error(
        `${this.describe()}: requiresGrad can only be changed on a leaf tensor, not on the output of ` +
          `${this.node.op} (detach() gives the values without a gradient)`,
      );
    }
    if (value && this.dtype === "int32") {
      throw new Error(
        `${this.describe()}: an int32 tensor cannot require a gradient (ids are not differentiable)`,
      );
    }
    this.#requiresGrad = value;
  }

  /** Number of dimensions. */
  get rank(): number {
    return this.shape.length;
  }

  /**
   * The int32 values as the host last wrote them (see {@linkcode Storage.hostInts}), or undefined
   * when unknown: gather's backward groups rows by them and range checks read them. Assigning
   * replaces them for every view of the storage.
   */
  get hostValues(): Int32Array | undefined {
    return this.storage.hostInts;
  }

  set hostValues(values: Int32Array | undefined) {
    if (values && (this.dtype !== "int32" || values.length !== this.size)) {
      throw new Error(`hostValues: ${values.length} int32 values for ${this.describe()}`);
    }
    this.storage.hostInts = values;
  }

  /** Whether `dispose()` was called. */
  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** The byte range of elements [start, start + length) (a window of {@linkcode range}). */
  window(start: number, length: number): BufferRange {
    const r = this.range();
    return { buffer: r.buffer, offset: r.offset + start * 4, size: Math.max(4, length * 4) };
  }

  /** The byte range a kernel binds for this tensor; throws if the tensor was disposed. */
  range(): BufferRange {
    if (this.#disposed) throw new DisposedTensorError(this, this.#disposedBecause);
    return { buffer: this.storage.buffer, offset: this.byteOffset, size: Math.max(4, this.size * 4) };
  }

  /** A short description for error messages: name, dtype and shape. */
  describe(): string {
    return `${this.name ? `tensor "${this.name}"` : "tensor"} ${this.dtype}${formatShape(this.shape)}`;
  }

  /**
   * Releases the tensor's buffer to the pool once no view shares it, and its gradient. Safe to call
   * twice. A parameter's gradient, a view of its model's arena, is freed with the arena only.
   */
  dispose(): void {
    const owner = this.#gradOf;
    if (owner !== null && owner.#gradPinned && !this.#disposed) {
      throw new Error(
        `${this.describe()} is a parameter's gradient, a view of its model's arena, which frees it ` +
          "(the optimizer's zeroGrad() zeroes it)",
      );
    }
    this.#release();
  }

  #release(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    // It owns its gradient (a parameter's lives in the arena, which frees it).
    const grad = this.#grad;
    if (grad !== null && !this.#gradPinned && grad.#gradOf === this) grad.dispose();
    for (const scope of scopes) scope.delete(this);
    if (--this.storage.refs === 0 && this.storage.pooled) releaseBuffer(this.storage.buffer);
  }

  /** The values, copied to the CPU (one readback round trip; never inside a training step). */
  async data(): Promise<Float32Array | Int32Array> {
    const [bytes] = await readRanges([this.range()]);
    return this.dtype === "int32"
      ? new Int32Array(bytes, 0, this.size)
      : new Float32Array(bytes, 0, this.size);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs one element, ${this.describe()} has ${this.size}`);
    return (await this.data())[0];
  }

  /** A tensor of another shape over the same storage (no copy); gradients flow through it. */
  reshape(shape: readonly number[]): Tensor {
    expectNumbers("reshape", shape, "the shape (x.reshape([2, 3]))");
    const resolved = resolveShape(shape, this.size, this);
    const out = this.#alias(resolved);
    if (gradEnabled && this.requiresGrad) {
      const source = this.shape;
      attachGrad(out, "reshape", [this], (g) => [g.reshape(source)]);
    }
    return out;
  }

  /**
   * The same values with no autograd history, as PyTorch's `detach()`: another tensor object over the
   * same storage and shape (no copy, so in-place writes show through both) that does not require a
   * gradient; dispose it like any other tensor.
   */
  detach(): Tensor {
    return this.#alias(this.shape);
  }

  #alias(shape: readonly number[]): Tensor {
    if (this.#disposed) throw new DisposedTensorError(this, this.#disposedBecause);
    this.storage.refs++;
    return new Tensor(shape, this.dtype, this.storage, this.byteOffset);
  }

  /**
   * Runs reverse-mode autograd from this tensor, accumulating into `.grad` of every leaf that needs it.
   * A graph goes through backward once, as PyTorch's does: a second backward through any of its ops
   * throws (nothing is accumulated) unless the first passed `{ retainGraph: true }`. PyTorch refuses
   * only ops that saved tensors for backward; this refuses every op, so a mistake never depends on which.
   */
  backward(grad?: Tensor | null, options: BackwardOptions = {}): void {
    checkOptions("backward", options, ["retainGraph"]);
    backwardFrom(this, grad, options.retainGraph ?? false);
  }

  /** Describes the tensor (not its values). */
  toString(): string {
    return `Tensor(${this.dtype}${formatShape(this.shape)}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

function resolveShape(shape: readonly number[], size: number, t: Tensor): number[] {
  const inferred = shape.indexOf(-1);
  const known = shape.reduce((p, d, i) => (i === inferred ? p : p * d), 1);
  if (inferred >= 0 && (shape.lastIndexOf(-1) !== inferred || known === 0)) {
    // As PyTorch: one -1 at most, and none beside a 0, where any length would do.
    const why = known === 0 ? "a -1 beside a 0 could be any length" : "only one dimension can be -1";
    throw new Error(`reshape: cannot view ${t.describe()} as ${formatShape(shape)}: ${why}`);
  }
  const out = [...shape];
  if (inferred >= 0) out[inferred] = size / known;
  if (shapeSize(out) !== size || out.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot view ${t.describe()} as ${formatShape(shape)}`);
  }
  return out;
}

/** Options of {@linkcode Tensor.backward}. */
export interface BackwardOptions {
  /** Keep the graph for another backward through it (PyTorch's `retain_graph`); false by default. */
  retainGraph?: boolean;
}

/** Nested arrays of numbers, as accepted by {@linkcode tensor}. */
export type NestedNumbers = number | readonly NestedNumbers[];

/** Options of the creation functions. */
export interface TensorOptions {
  /** Element type; float32 unless the data is an Int32Array. */
  dtype?: DType;
  /** Shape, required for flat typed arrays of rank above 1. */
  shape?: readonly number[];
  /** Whether gradients should flow to the new tensor. */
  requiresGrad?: boolean;
  /** Name used in error messages. */
  name?: string;
}

const TENSOR_OPTIONS: readonly (keyof TensorOptions)[] = ["dtype", "shape", "requiresGrad", "name"];
/** What `zeros` and `full` take: their shape is an argument of its own. */
const FILL_OPTIONS: readonly (keyof TensorOptions)[] = ["dtype", "requiresGrad", "name"];

/** Throws unless `dtype` is one of the engine's element types (a misspelt one would pass as a label). */
function checkDtype(op: string, dtype: unknown): void {
  if (dtype !== undefined && dtype !== "float32" && dtype !== "int32") {
    throw new TypeError(`${op}: dtype must be "float32" or "int32", got ${JSON.stringify(dtype)}`);
  }
}

/** Creates an uninitialised tensor in a pooled buffer; kernels write every element of it. */
export function emptyTensor(shape: readonly number[], dtype: DType = "float32"): Tensor {
  assertShape(shape, "emptyTensor");
  const bytes = Math.max(4, shapeSize(shape) * 4);
  return new Tensor(shape, dtype, new Storage(acquireBuffer(bytes), 0, bytes, true), 0);
}

/**
 * Creates a tensor from nested arrays or a typed array (int32 for an Int32Array, else float32 unless
 * `dtype` says otherwise). int32 values must be integers in int32's range: nothing is rounded or wrapped.
 */
export function tensor(
  data: NestedNumbers | ArrayLike<number>,
  options: TensorOptions = {},
): Tensor {
  checkOptions("tensor", options, TENSOR_OPTIONS);
  checkDtype("tensor", options.dtype);
  if (data instanceof Tensor) {
    throw new TypeError(
      `tensor: ${data.describe()} is already a tensor (copyOf() copies it, detach() shares it without a gradient)`,
    );
  }
  let values: Float32Array | Int32Array;
  let shape: readonly number[];
  const dtype: DType = options.dtype ?? (data instanceof Int32Array ? "int32" : "float32");
  if (
    ArrayBuffer.isView(data) && !(data instanceof DataView) && !(data instanceof BigInt64Array) &&
    !(data instanceof BigUint64Array)
  ) {
    const typed = data as ArrayLike<number>;
    shape = options.shape ?? [typed.length];
    values = dtype === "int32" ? Int32Array.from(checkInt32(typed)) : Float32Array.from(typed);
  } else {
    const flat: number[] = [];
    const nested = nestedShape(data as NestedNumbers);
    flatten(data as NestedNumbers, flat, nested);
    shape = options.shape ?? nested;
    values = dtype === "int32" ? Int32Array.from(checkInt32(flat)) : Float32Array.from(flat);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`tensor: shape must be an array of integers >= 0, got ${JSON.stringify(shape)}`);
  }
  if (shapeSize(shape) !== values.length) {
    throw new Error(`tensor: ${values.length} values do not fill shape ${formatShape(shape)}`);
  }
  if (dtype === "int32" && options.requiresGrad) {
    throw new Error(
      `tensor: an int32 tensor ${formatShape(shape)} cannot require a gradient (ids are not differentiable)`,
    );
  }
  const out = emptyTensor(shape, dtype);
  upload(out.range(), values.length === 0 ? new Float32Array(1) : values);
  if (dtype === "int32") out.storage.hostInts = values as Int32Array;
  out.requiresGrad = options.requiresGrad ?? false;
  out.name = options.name;
  return out;
}

function nestedShape(data: NestedNumbers): number[] {
  const shape: number[] = [];
  let level: NestedNumbers = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0] ?? 0;
  }
  return shape;
}

/**
 * Appends the numbers of `data` to `out`, checking that it is rectangular: every array at depth d has
 * `shape[d]` entries and numbers (nothing else) sit at depth `shape.length` only (PyTorch refuses ragged
 * lists too).
 */
function flatten(data: NestedNumbers, out: number[], shape: readonly number[], depth = 0, at = ""): void {
  const misplaced = Array.isArray(data)
    ? depth >= shape.length || data.length !== shape[depth]
    : depth < shape.length;
  if (misplaced || (!Array.isArray(data) && typeof data !== "number")) {
    const found = Array.isArray(data)
      ? `${data.length} entries`
      : typeof data === "number"
      ? "a number"
      : typeof data === "object" && data !== null
      ? `a ${(data as object).constructor.name}`
      : typeof data === "string"
      ? `the string ${JSON.stringify(data)}`
      : String(data);
    throw new Error(
      `tensor: nested arrays are not rectangular: expected ${
        depth < shape.length ? `${shape[depth]} entries` : "a number"
      } at [${at}], found ${found} (shape ${formatShape(shape)} from the first entries)`,
    );
  }
  if (Array.isArray(data)) {
    data.forEach((d, i) => flatten(d, out, shape, depth + 1, at ? `${at}, ${i}` : `${i}`));
  } else out.push(data as number);
}

/** `values`, once each is known to be an integer of int32's range (an int32 tensor rounds or wraps nothing). */
function checkInt32(values: ArrayLike<number>): ArrayLike<number> {
  if (values instanceof Int32Array) return values;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) {
      throw new RangeError(
        `tensor: value ${v} at index ${i} is not an int32 (an integer from -2^31 to 2^31 - 1)`,
      );
    }
  }
  return values;
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[], options: TensorOptions = {}): Tensor {
  checkOptions("zeros", options, FILL_OPTIONS);
  checkDtype("zeros", options.dtype);
  if (options.dtype === "int32" && options.requiresGrad) {
    throw new Error(
      `zeros: an int32 tensor ${formatShape(shape)} cannot require a gradient (ids are not differentiable)`,
    );
  }
  const out = emptyTensor(shape, options.dtype);
  clearBuffer(out.range());
  if (out.dtype === "int32") out.storage.hostInts = new Int32Array(out.size);
  out.requiresGrad = options.requiresGrad ?? false;
  out.name = options.name;
  return out;
}

/** A tensor filled with one value. */
export function full(shape: readonly number[], value: number, options: TensorOptions = {}): Tensor {
  checkOptions("full", options, FILL_OPTIONS);
  checkDtype("full", options.dtype);
  if (options.dtype === "int32" && !(Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31)) {
    throw new RangeError(`full: value ${value} is not an int32 (an integer from -2^31 to 2^31 - 1)`);
  }
  const size = shapeSize(shape);
  const values = options.dtype === "int32"
    ? new Int32Array(size).fill(value)
    : new Float32Array(size).fill(value);
  return tensor(values, { ...options, shape });
}

/** Writes host values into an existing tensor, ordered with the work recorded before. */
export function writeTensor(target: Tensor, values: Float32Array | Int32Array): void {
  if (!(values instanceof Float32Array || values instanceof Int32Array)) {
    throw new Error(
      `writeTensor: values must be a Float32Array or an Int32Array, got ${
        (values as object)?.constructor?.name ?? typeof values
      } for ${target.describe()}`,
    );
  }
  if (values.length !== target.size) {
    throw new Error(`writeTensor: ${values.length} values for ${target.describe()}`);
  }
  if ((target.dtype === "int32") !== values instanceof Int32Array) {
    throw new Error(`writeTensor: ${values.constructor.name} values for ${target.describe()}`);
  }
  upload(target.range(), values);
  if (target.dtype === "int32") target.storage.hostInts = Int32Array.from(values);
}

/** A copy of `source` in a new buffer (no autograd link). */
export function copyOf(source: Tensor): Tensor {
  const out = emptyTensor(source.shape, source.dtype);
  copyBuffer(source.range(), out.range());
  out.storage.hostInts = source.storage.hostInts;
  return out;
}

/** Copies the values of `source` into `target`'s storage (same element count), ordered with recorded work. */
export function copyInto(target: Tensor, source: Tensor): void {
  if (target.size !== source.size || target.dtype !== source.dtype) {
    throw new Error(`copyInto: ${source.describe()} into ${target.describe()}`);
  }
  copyBuffer(source.range(), target.range());
  if (target.storage !== source.storage) target.storage.hostInts = source.storage.hostInts;
}

/**
 * Reads several tensors with one GPU-to-CPU round trip (one per 64 MiB): their values at the call, for
 * which it takes readback buffers as large as what it reads (freed batch by batch as each is mapped).
 */
export async function readAll(tensors: readonly Tensor[]): Promise<(Float32Array | Int32Array)[]> {
  const bytes = await readRanges(tensors.map((t) => t.range()));
  return bytes.map((b, i) =>
    tensors[i].dtype === "int32"
      ? new Int32Array(b, 0, tensors[i].size)
      : new Float32Array(b, 0, tensors[i].size)
  );
}

/**
 * Runs `fn` in a scope: tensors it creates are disposed when it returns or throws, except those it returns
 * (in a value, an array or a plain object) and those passed to {@linkcode keep}. `fn` must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    // A function that throws frees what it made, as one that returns does: a loop that skips a bad
    // batch would otherwise keep a whole step's tensors.
    scopes.pop();
    for (const t of scope) t.dispose();
    throw error;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    // The refusal is the caller's error; what the rest of the function then throws (using a tensor
    // freed here, most likely) must not end the process as an unhandled rejection.
    result.catch(() => {});
    throw new Error("tidy() takes a synchronous function; await outside it");
  }
  const returned = new Set<Tensor>();
  collectTensors(result, returned);
  const parent = scopes.at(-1);
  // A gradient returned without its tensor, which the scope disposes, is taken from it: the caller's
  // from now on, in the enclosing scope as any returned tensor is.
  for (const t of returned) {
    const owner = gradOwner(t);
    if (owner !== null && scope.has(owner) && !returned.has(owner) && takeGrad(t)) parent?.add(t);
  }
  for (const t of scope) {
    if (returned.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

function collectTensors(value: unknown, into: Set<Tensor>): void {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) { for (const v of value) collectTensors(v, into); }
  else if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into);
  }
}

/**
 * Takes a tensor out of every scope, so it lives until `dispose()`. Returns it. (A gradient is in no
 * scope: it lives as long as its tensor; `copyOf(x.grad)` gives one that outlives it.)
 */
export function keep<T extends Tensor>(t: T): T {
  for (const scope of scopes) scope.delete(t);
  return t;
}

/**
 * Runs `fn` without recording autograd links. `fn` must be synchronous: after an `await`, the ops would
 * run with gradients on again, so a function that returns a promise is refused.
 */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  let result: T;
  try {
    result = fn();
  } finally {
    gradEnabled = previous;
  }
  if (result instanceof Promise) {
    result.catch(() => {}); // its own error, if any, is not the one to report
    throw new Error(
      "noGrad() takes a synchronous function: after its first await, ops would record gradients again " +
        "(wrap each synchronous part, or detach() the results)",
    );
  }
  return result;
}

/** A value as an error message shows it: what it is, briefly. */
function shown(value: unknown): string {
  if (Array.isArray(value)) {
    const text = JSON.stringify(value);
    return `an array ${text.length > 40 ? `${text.slice(0, 40)}...` : text}`;
  }
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  if (typeof value === "object" && value !== null) return `a ${value.constructor?.name ?? "object"}`;
  return `${typeof value} ${String(value)}`;
}

/** Throws unless `value` is a Tensor: `op` and `what` (e.g. "operand b") name it in the error. */
export function expectTensor(op: string, value: unknown, what: string): asserts value is Tensor {
  if (value instanceof Tensor) return;
  const hint = Array.isArray(value) ? " (make one with tensor([...]))" : "";
  throw new TypeError(`${op}: ${what} must be a Tensor, got ${shown(value)}${hint}`);
}

/** Throws unless `value` is an array of numbers (a shape, an axis order): `op` names the call. */
export function expectNumbers(op: string, value: unknown, what: string): asserts value is readonly number[] {
  if (Array.isArray(value) && value.every((v) => typeof v === "number")) return;
  throw new TypeError(`${op}: ${what} must be one array of numbers, got ${shown(value)}`);
}

/**
 * Disposes a tensor that its holder's code did not dispose itself (the arena under a parameter was
 * freed): a later use says `reason` instead of only "used after dispose()".
 */
export function disposeBecause(tensor: Tensor, reason: DisposalReason): void {
  disposeAs(tensor, reason);
}

/**
 * Gives a parameter its gradient for good: `grad`, a view of the arena the optimizer reads, which
 * assigning `value.grad` may then not replace (arena.ts).
 */
export function pinGrad(value: Tensor, grad: Tensor): void {
  setPinnedGrad(value, grad);
}

/** Whether an op over these inputs records an autograd link (grad mode on, some input requires a gradient). */
export function needsGrad(...inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/**
 * Builds an op out of other ops (the path of shapes its kernels cannot take): `build` registers each
 * intermediate with `temp`. When the result needs no gradient they are disposed at once; otherwise
 * the autograd graph uses them and they live until the caller's scope ends, as with any composed
 * ops. The op's inputs are never disposed.
 */
export function composedOp(
  inputs: readonly Tensor[],
  build: (temp: <T extends Tensor>(t: T) => T) => Tensor,
): Tensor {
  const made: Tensor[] = [];
  const out = build((t) => {
    if (!inputs.includes(t)) made.push(t);
    return t;
  });
  if (!out.requiresGrad) { for (const t of made) if (t !== out) t.dispose(); }
  return out;
}

/**
 * Links `out` to its inputs for autograd if grad mode is on and any input requires a gradient.
 * Every op calls this right after computing its output. Returns `out`.
 */
export function attachGrad(
  out: Tensor,
  op: string,
  parents: readonly Tensor[],
  backward: (grad: Tensor) => (Tensor | null)[],
): Tensor {
  if (needsGrad(...parents)) {
    out.requiresGrad = true;
    out.node = { op, parents, backward };
  }
  return out;
}

/**
 * Adds `grad` into `into` in place (both with the same number of elements), a binding window at a
 * time. On software adapters (variant `texel`) an invocation adds a vec4, both operands fetched
 * through textures (engine/texels.ts); the sums are the same.
 */
function accumulate(into: Tensor, grad: Tensor): void {
  const variant = kernelVariant(
    "accumulate",
    () => gpu().profile.isSoftware && texelsPayOff(into.size) ? "texel" : "scalar",
  );
  for (const [start, length] of bindingWindows(into.size)) {
    const target = into.window(start, length), source = grad.window(start, length);
    const texels = variant === "texel" && length % 4 === 0 ? [texelRange(target), texelRange(source)] : [];
    if (texels.length > 0 && texels.every((t) => t !== null)) {
      withTexels(
        texels as BufferRange[],
        (views) =>
          dispatch(accumulateKernel(true), { count: length / 4 }, [...views, target], grid(length / 4, 256)),
      );
    } else dispatch(accumulateKernel(false), { count: length }, [target, source], grid(length, 256));
  }
}

function accumulateKernel(texel: boolean) {
  return kernelFor(texel ? "accumulate/texel" : "accumulate", () => ({
    name: texel ? "accumulate_texel" : "accumulate",
    params: { count: "u32" },
    bindings: texel
      ? [{ name: "current", type: "texture" }, { name: "grad", type: "texture" }, {
        name: "into",
        type: "vec4<f32>",
        write: true,
      }]
      : [{ name: "into", write: true }, { name: "grad" }],
    code: `${texel ? TEXEL_WGSL : ""}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i < params.count) { ${
      texel ? "into[i] = texel(current, i) + texel(grad, i);" : "into[i] = into[i] + grad[i];"
    } }
}`,
  }));
}

/** Ops whose backward has run without retainGraph: a graph's nodes are used once, as in PyTorch. */
const consumed = new WeakSet<GradNode>();

function backwardFrom(root: Tensor, given: Tensor | null | undefined, retainGraph: boolean): void {
  const seed = given ?? undefined; // null means "no gradient given", as PyTorch's None
  if (!root.requiresGrad) throw new Error(`backward: ${root.describe()} does not require a gradient`);
  if (seed !== undefined && !(seed instanceof Tensor)) {
    throw new Error(
      "backward: the gradient must be a Tensor (options go second: backward(undefined, { retainGraph: true }))",
    );
  }
  if (seed && seed.dtype !== "float32") {
    throw new Error(`backward: gradient ${seed.describe()} is not float32`);
  }
  if (!seed && root.size !== 1) {
    throw new Error(`backward: ${root.describe()} is not a scalar; pass its gradient explicitly`);
  }
  if (seed && !sameShape(seed.shape, root.shape)) {
    throw new Error(`backward: gradient ${seed.describe()} does not match ${root.describe()}`);
  }
  const order = topologicalOrder(root);
  const used = order.find((t) => t.node && consumed.has(t.node));
  if (used) {
    throw new Error(
      `backward: the graph through ${
        used.node!.op
      } (${used.describe()}) has been through backward already; ` +
        "pass { retainGraph: true } to the first backward to go through it again",
    );
  }
  if (!retainGraph) { for (const t of order) if (t.node) consumed.add(t.node); }
  const grads = new Map<Tensor, Tensor>();
  noGrad(() => {
    grads.set(root, seed ? seed.reshape(root.shape) : full(root.shape, 1));
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (!t.node) {
        accumulateLeaf(t, g);
        continue;
      }
      let parentGrads: (Tensor | null)[];
      try {
        parentGrads = t.node.backward(g);
      } catch (error) {
        if (!(error instanceof DisposedTensorError)) throw error;
        const used =
          `backward of ${t.node.op}: ${error.tensor.describe()} was used after dispose(): a tensor it ` +
          "saved for backward was disposed";
        // The usual cause: the forward ran inside a tidy() that returned only the loss.
        throw new Error(
          error.reason
            ? `${used} after the forward: ${error.reason.what} (${
              error.reason.afterForward ?? "run the forward again"
            })`
            : `${used} (tidy() disposes what its function does not return, so call backward() inside the tidy() ` +
              "that ran the forward; an optimizer built or a model disposed after the forward frees the model's " +
              "old tensors too)",
          { cause: error },
        );
      }
      g.dispose();
      t.node.parents.forEach((parent, j) => {
        const pg = parentGrads[j];
        if (!pg) return;
        if (!parent.requiresGrad) return pg.dispose();
        if (pg.size !== parent.size) {
          throw new Error(
            `backward of ${t.node!.op}: gradient ${formatShape(pg.shape)} for input ${parent.describe()}`,
          );
        }
        const existing = grads.get(parent);
        if (!existing) return grads.set(parent, pg);
        const owned = existing.storage.refs === 1 ? existing : copyOf(existing);
        if (owned !== existing) existing.dispose();
        accumulate(owned, pg);
        pg.dispose();
        grads.set(parent, owned);
      });
    }
  });
  for (const g of grads.values()) g.dispose();
}

/**
 * Where an op's backward may add its gradient for `input` itself rather than return it: the `.grad`
 * of a leaf that already has one at a bindable offset (a model's parameters, whose gradients live in
 * their arena). The op adds into it in place and returns null for that input, which is the sum
 * autograd would make, without the separate accumulation (a dispatch and a pass over the gradient).
 * Null when autograd must add: non-leaves, leaves without a gradient yet, packed parts of a slot.
 */
export function gradientSink(input: Tensor): Tensor | null {
  // A disposed leaf, or a gradient disposed by hand, is left to accumulateLeaf, which handles both.
  if (!input.requiresGrad || input.node || !input.grad || input.isDisposed || input.grad.isDisposed) {
    return null;
  }
  return input.grad.range().offset % gpu().profile.storageOffsetAlignment === 0 ? input.grad : null;
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  // A leaf disposed before its backward (reached through ops that saved nothing) has no one to read it.
  if (leaf.isDisposed) return g.dispose();
  if (leaf.grad && !leaf.grad.isDisposed) {
    accumulate(leaf.grad, g);
    g.dispose();
    return;
  }
  // A gradient sharing its storage (a view of a tensor still alive) is copied, so .grad owns its buffer.
  const owned = g.storage.refs === 1 ? g : copyOf(g);
  const grad = owned.reshape(leaf.shape);
  if (owned !== g) owned.dispose();
  g.dispose();
  leaf.grad = keep(grad);
}

function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, next] = top;
    const parents = t.node?.parents ?? [];
    if (next < parents.length) {
      top[1]++;
      const p = parents[next];
      if (p.requiresGrad && !visited.has(p)) {
        visited.add(p);
        stack.push([p, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

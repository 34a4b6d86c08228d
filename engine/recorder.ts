/**
 * Recording of GPU work. Dispatches, uploads and copies go into one command encoder (and one
 * compute pass while only dispatches follow each other) until a readback, `synchronize()` or
 * `flush()`, the end of an optimizer step (`submitStep()`), a full uniform ring or a large upload
 * submits it. A training step therefore becomes one command buffer.
 *
 * Each dispatch's uniform parameters take a 256-byte slot of a uniform ring that is written to the
 * GPU once, just before submission; small uploads are staged the same way and copied in order.
 *
 * `MM_DEBUG` (see debug.ts) makes the recorder print dispatches and submits and, at level 4, time
 * every kernel: with timestamps, each dispatch gets a compute pass of its own; with host timing, a
 * command buffer of its own, submitted one at a time inside the program's own waits.
 *
 * @module
 */
import { gpu } from "./device.ts";
import {
  createKernelTimer,
  debugLevel,
  debugLine,
  formatBytes,
  SerialTimer,
  TimestampTimer,
  timingOptions,
} from "./debug.ts";
import {
  type Kernel,
  PARAM_BLOCK_BYTES,
  type ParamSpecs,
  type ParamValues,
  pipelineCount,
} from "./kernel.ts";
import {
  acquireBuffer,
  createBuffer,
  destroyBuffer,
  makeRoom,
  releaseBuffer,
  setSubmitRecorded,
  sizeClass,
} from "./pool.ts";

/** A byte range of a GPU buffer, as bound to a kernel. */
export interface BufferRange {
  /** The buffer. */
  readonly buffer: GPUBuffer;
  /** Byte offset of the range; a multiple of the device's storage offset alignment. */
  readonly offset: number;
  /** Byte length of the range. */
  readonly size: number;
}

/**
 * What a kernel binding is given: a buffer range, or for a "texture" binding the view of a texture
 * (software adapters read operands through textures, see engine/texels.ts).
 */
export type Binding = BufferRange | GPUTextureView;

/** One recorded dispatch, as listed by `MM_DEBUG=1` and {@linkcode traceDispatches}. */
export interface DispatchRecord {
  /** Kernel name, ending in its variant for kernels that have several (`matmul_direct`). */
  readonly kernel: string;
  /** Workgroup counts in x, y, z. */
  readonly workgroups: readonly [number, number, number];
  /** Bytes of all storage ranges bound to the dispatch. */
  readonly bytes: number;
}

/** Counters of recorded work since the process started. */
export interface RecorderStats {
  /** Dispatches recorded. */
  dispatches: number;
  /** Command buffers submitted. */
  submits: number;
  /** GPU-to-CPU readbacks (each one a `mapAsync` round trip). */
  readbacks: number;
}

const RING_SLOTS = 4096;
/** Uploads above this size bypass the staging ring and are written directly after a flush. */
const DIRECT_UPLOAD_BYTES = 1 << 22;

const stats: RecorderStats = { dispatches: 0, submits: 0, readbacks: 0 };
/** What the next submit holds, for `MM_DEBUG=2`. */
// Pipelines are counted up to the last dispatch recorded: one compiled for a dispatch that forces a
// submit first (a full uniform ring or query set) belongs to the next submit, which runs it.
const pendingWork = { dispatches: 0, bytes: 0, pipelines: 0, pipelinesUsed: 0 };
let timer: TimestampTimer | SerialTimer | null | undefined;

let encoder: GPUCommandEncoder | undefined;
let pass: GPUComputePassEncoder | undefined;
let uniformBuffer: GPUBuffer | undefined;
const uniformBytes = new ArrayBuffer(RING_SLOTS * PARAM_BLOCK_BYTES);
const uniformU32 = new Uint32Array(uniformBytes);
const uniformI32 = new Int32Array(uniformBytes);
const uniformF32 = new Float32Array(uniformBytes);
let uniformSlots = 0;
/**
 * Upload staging: host bytes copied into GPU buffers by the command buffer, written to their chunks at
 * submit. When a chunk fills up the next one is used, and a new one (twice the last) is made when
 * none is left, so a training step's uploads never force a submit; chunks are kept for later steps.
 */
const staging: { buffer: GPUBuffer; bytes: Uint8Array<ArrayBuffer>; used: number }[] = [];
/** The chunk being filled; the ones before it hold this submit's earlier uploads. */
let stagingChunk = 0;
const bindGroups = new Map<string, GPUBindGroup>();
const objectIds = new WeakMap<GPUBuffer | GPUTextureView, number>();
let nextObjectId = 1;
const readbackFree = new Map<number, GPUBuffer[]>();
/** Bytes of the readback buffers in {@linkcode readbackFree}. */
let keptReadbackBytes = 0;
let traces: DispatchRecord[][] = [];

/** The level-4 kernel timer, created with the first dispatch; null below level 4. */
function kernelTimer(): TimestampTimer | SerialTimer | null {
  if (timer === undefined) {
    const { device, profile } = gpu();
    timer = createKernelTimer(device, profile.name, synchronize);
  }
  return timer;
}

function objectId(object: GPUBuffer | GPUTextureView): number {
  let id = objectIds.get(object);
  if (id === undefined) objectIds.set(object, id = nextObjectId++);
  return id;
}

function currentEncoder(): GPUCommandEncoder {
  encoder ??= gpu().device.createCommandEncoder({ label: "step" });
  return encoder;
}

function currentPass(): GPUComputePassEncoder {
  pass ??= currentEncoder().beginComputePass();
  return pass;
}

function endPass(): GPUCommandEncoder {
  pass?.end();
  pass = undefined;
  return currentEncoder();
}

/**
 * Records one dispatch of `kernel` with its uniform parameters by name (every declared one, no
 * other; an array parameter with its declared length) and bindings (storage ranges and texture
 * views), over `workgroups`. Nothing runs until the next {@linkcode flush}.
 */
export function dispatch<P extends ParamSpecs>(
  kernel: Kernel<P>,
  params: NoInfer<ParamValues<P>>,
  ranges: readonly Binding[],
  workgroups: readonly [number, number?, number?],
): void {
  const [x, y = 1, z = 1] = workgroups;
  if (x === 0 || y === 0 || z === 0) return;
  const limit = gpu().profile.maxWorkgroupsPerDimension;
  if (x > limit || y > limit || z > limit) {
    throw new RangeError(
      `kernel ${kernel.name}: workgroups (${x}, ${y}, ${z}) exceed the device limit ${limit}`,
    );
  }
  if (ranges.length !== kernel.bindings.length) {
    throw new Error(
      `kernel ${kernel.name}: ${ranges.length} buffers given, ${kernel.bindings.length} declared`,
    );
  }
  const { storageOffsetAlignment: alignment, maxStorageBindingBytes: bindingLimit } = gpu().profile;
  ranges.forEach((r, i) => {
    const binding = kernel.bindings[i].name;
    if ((kernel.bindings[i].type === "texture") !== r instanceof GPUTextureView) {
      throw new Error(
        `kernel ${kernel.name}: binding "${binding}" needs a ${
          r instanceof GPUTextureView ? "buffer range" : "texture view"
        }`,
      );
    }
    if (r instanceof GPUTextureView) return;
    if (r.offset % alignment !== 0) {
      throw new Error(
        `kernel ${kernel.name}: binding "${binding}" starts at byte ${r.offset}, not a multiple of ${alignment} ` +
          "(a packed parameter view cannot be bound; bind copyOf() it)",
      );
    }
    if (r.size > bindingLimit) {
      throw new RangeError(
        `kernel ${kernel.name}: binding "${binding}" of ${r.size} bytes exceeds the adapter's ` +
          `maxStorageBufferBindingSize of ${bindingLimit} bytes`,
      );
    }
  });
  const timing = kernelTimer();
  if (uniformSlots === RING_SLOTS) submit("uniform ring full");
  if (timing instanceof TimestampTimer && timing.full) submit("timestamp queries full");
  const slot = uniformSlots;
  writeUniforms(kernel, params as ParamValues<ParamSpecs>, slot * (PARAM_BLOCK_BYTES / 4));
  uniformSlots++;
  const bindGroup = bindGroupFor(kernel, ranges);
  // Level 4 names the timed row; with MM_TIMING=grid, by kernel and workgroup grid.
  const timedAs = timing && timingOptions.has("grid") ? `${kernel.name} ${x}x${y}x${z}` : kernel.name;
  const computePass = timing ? timedPass(timing, timedAs) : currentPass();
  computePass.setPipeline(kernel.pipeline);
  computePass.setBindGroup(0, bindGroup, [slot * PARAM_BLOCK_BYTES]);
  computePass.dispatchWorkgroups(x, y, z);
  if (timing) {
    endPass();
    if (timing instanceof SerialTimer) {
      timing.record(encoder!.finish(), timedAs);
      encoder = undefined;
    }
  }
  stats.dispatches++;
  pendingWork.dispatches++;
  pendingWork.pipelinesUsed = pipelineCount();
  if (debugLevel > 0 || traces.length > 0) {
    const record: DispatchRecord = { kernel: kernel.name, workgroups: [x, y, z], bytes: boundBytes(ranges) };
    pendingWork.bytes += record.bytes;
    if (debugLevel > 0) debugLine(`${record.kernel} wg=(${x},${y},${z}) bytes=${record.bytes}`);
    for (const trace of traces) trace.push(record);
  }
}

const textureSources = new WeakMap<GPUTextureView, BufferRange>();

/** Records that `range` was copied into the texture of `view` for the dispatches that follow (for the bytes bound). */
export function noteTextureSource(view: GPUTextureView, range: BufferRange): void {
  textureSources.set(view, range);
}

/**
 * Bytes a dispatch binds: each distinct buffer range once, a texture operand as the range copied into
 * it (so matmul's first operand, also bound in place of an absent bias, counts once).
 */
function boundBytes(bindings: readonly (BufferRange | GPUTextureView)[]): number {
  const ranges = bindings.map((b) => b instanceof GPUTextureView ? textureSources.get(b) : b);
  let bytes = 0;
  ranges.forEach((r, i) => {
    const first = ranges.findIndex((o) =>
      o?.buffer === r?.buffer && o?.offset === r?.offset && o?.size === r?.size
    );
    if (r && first === i) bytes += r.size;
  });
  return bytes;
}

/**
 * Writes a dispatch's parameters into its uniform slot at word `base`, checking them against the
 * kernel's declaration: a missing or unknown name, or a value of the wrong form, is an error naming
 * the kernel and the parameter.
 */
function writeUniforms(kernel: Kernel, params: ParamValues<ParamSpecs>, base: number): void {
  const fail = (message: string) => new Error(`kernel ${kernel.name}: ${message}`);
  for (const field of kernel.uniforms) {
    const value = params[field.name];
    const at = base + field.offset;
    const target = field.type === "f32" ? uniformF32 : field.type === "i32" ? uniformI32 : uniformU32;
    if (value === undefined) throw fail(`uniform "${field.name}" is missing`);
    if (field.length === undefined) {
      if (typeof value !== "number") throw fail(`uniform "${field.name}" needs a number, got ${value}`);
      target[at] = value;
    } else {
      if (!Array.isArray(value) || value.length !== field.length) {
        throw fail(`uniform "${field.name}" needs an array of ${field.length} numbers, got ${value}`);
      }
      for (let i = 0; i < field.length; i++) target[at + i] = value[i];
    }
  }
  for (const name in params) {
    if (!Object.hasOwn(kernel.params, name)) {
      const declared = kernel.uniforms.map((f) => f.name).join(", ") || "none";
      throw fail(`unknown uniform "${name}" (declared: ${declared})`);
    }
  }
}

/**
 * A compute pass for one timed dispatch: with timestamp writes, or alone in a command buffer (the
 * commands recorded before it go to a command buffer of their own).
 */
function timedPass(timing: TimestampTimer | SerialTimer, kernel: string): GPUComputePassEncoder {
  if (timing instanceof TimestampTimer) {
    pass = endPass().beginComputePass(timing.passFor(kernel));
    return pass;
  }
  if (encoder) {
    timing.record(endPass().finish());
    encoder = undefined;
  }
  pass = currentEncoder().beginComputePass({ label: kernel });
  return pass;
}

function bindGroupFor(kernel: Kernel, ranges: readonly Binding[]): GPUBindGroup {
  const uniforms = uniformRing();
  let key = `${kernel.id}`;
  for (const r of ranges) {
    key += r instanceof GPUTextureView ? `|t${objectId(r)}` : `|${objectId(r.buffer)}:${r.offset}:${r.size}`;
  }
  let group = bindGroups.get(key);
  if (!group) {
    if (bindGroups.size >= 16384) bindGroups.clear();
    group = gpu().device.createBindGroup({
      layout: kernel.layout,
      entries: [
        { binding: 0, resource: { buffer: uniforms, offset: 0, size: PARAM_BLOCK_BYTES } },
        ...ranges.map((r, i) => ({
          binding: i + 1,
          resource: r instanceof GPUTextureView ? r : { buffer: r.buffer, offset: r.offset, size: r.size },
        })),
      ],
    });
    bindGroups.set(key, group);
  }
  return group;
}

function uniformRing(): GPUBuffer {
  uniformBuffer ??= createBuffer(
    RING_SLOTS * PARAM_BLOCK_BYTES,
    GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    "uniform ring",
  );
  return uniformBuffer;
}

/** Records a copy between buffers, ordered with the dispatches around it. */
export function copyBuffer(from: BufferRange, to: BufferRange): void {
  if (from.size !== to.size) throw new RangeError(`copyBuffer: ${from.size} bytes into ${to.size}`);
  if (from.size === 0 || (from.buffer === to.buffer && from.offset === to.offset)) return;
  if (from.buffer !== to.buffer) {
    endPass().copyBufferToBuffer(from.buffer, from.offset, to.buffer, to.offset, from.size);
    return;
  }
  // WebGPU forbids a copy within one buffer (two parameters of an arena chunk, a tensor and its view):
  // it goes through a pooled buffer, released at once (the recorded copies keep it valid). It is taken
  // before the encoder: under a memory budget, taking it may submit what is recorded.
  const staging = acquireBuffer(from.size);
  const commands = endPass();
  commands.copyBufferToBuffer(from.buffer, from.offset, staging, 0, from.size);
  commands.copyBufferToBuffer(staging, 0, to.buffer, to.offset, from.size);
  releaseBuffer(staging);
}

/**
 * Records a copy of a buffer range into the first texels of a 2-D rgba32float texture, row after row
 * (texel t of the range at column t % width, row t / width), ordered with the dispatches around it.
 * The range's offset and size must be multiples of 16 bytes (one texel) and the texture large enough.
 */
export function copyToTexture(from: BufferRange, to: GPUTexture): void {
  const texels = from.size / 16, width = to.width;
  if (from.offset % 16 !== 0 || !Number.isInteger(texels) || texels > width * to.height) {
    throw new RangeError(
      `copyToTexture: ${from.size} bytes at ${from.offset} are not whole texels of a ${width}x${to.height} texture`,
    );
  }
  const rows = Math.floor(texels / width), rest = texels - rows * width;
  const commands = endPass();
  if (rows > 0) {
    commands.copyBufferToTexture({ buffer: from.buffer, offset: from.offset, bytesPerRow: width * 16 }, {
      texture: to,
    }, [width, rows]);
  }
  if (rest > 0) {
    const offset = from.offset + rows * width * 16;
    commands.copyBufferToTexture({ buffer: from.buffer, offset }, { texture: to, origin: [0, rows] }, [
      rest,
      1,
    ]);
  }
}

/** Records zero-filling of a buffer range, ordered with the dispatches around it. */
export function clearBuffer(range: BufferRange): void {
  if (range.size === 0) return;
  endPass().clearBuffer(range.buffer, range.offset, range.size);
}

/**
 * Records an upload of host data into a buffer range, ordered with recorded work: small uploads are
 * staged and copied inside the command buffer; large ones flush first and are written directly.
 */
export function upload(to: BufferRange, data: ArrayBufferView): void {
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength !== to.size) throw new RangeError(`upload: ${bytes.byteLength} bytes into ${to.size}`);
  if (bytes.byteLength === 0) return;
  if (bytes.byteLength > DIRECT_UPLOAD_BYTES) {
    submit("large upload");
    const timing = kernelTimer();
    if (timing instanceof SerialTimer) timing.write(to.buffer, to.offset, bytes);
    else gpu().device.queue.writeBuffer(to.buffer, to.offset, bytes);
    return;
  }
  const size = Math.ceil(bytes.byteLength / 4) * 4;
  const fits = () => {
    while (
      staging[stagingChunk] && staging[stagingChunk].used + size > staging[stagingChunk].bytes.byteLength
    ) {
      stagingChunk++;
    }
    return staging[stagingChunk] !== undefined;
  };
  if (!fits()) {
    const length = sizeClass(Math.max(size, 2 * (staging.at(-1)?.bytes.byteLength ?? 1 << 15)));
    // Making room may submit, which empties every chunk: the upload may then fit one.
    makeRoom(length);
    if (!fits()) {
      const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      staging.push({
        buffer: createBuffer(length, usage, "upload staging"),
        bytes: new Uint8Array(length),
        used: 0,
      });
    }
  }
  const chunk = staging[stagingChunk];
  chunk.bytes.set(bytes, chunk.used);
  endPass().copyBufferToBuffer(chunk.buffer, chunk.used, to.buffer, to.offset, bytes.byteLength);
  chunk.used += size;
}

/** Submits everything recorded so far as one command buffer. Does nothing when nothing is pending. */
export function flush(): void {
  submit("flush", true);
}
// Host timing holds work back while it drains (times) earlier work: that work may still read any buffer.
setSubmitRecorded(flush, () => timer instanceof SerialTimer && timer.holdsSubmittedWork);

/**
 * Submits what is recorded at the end of a training step, so that the device runs the step while the
 * host records the next one instead of waiting for the next readback. `MultiModelOptimizer.step()`
 * calls it; a loop with an update of its own calls it after each step. Unlike {@linkcode flush},
 * level-4 host timing still holds the work back until the program waits, and times it.
 */
export function submitStep(): void {
  submit("step");
}

/**
 * Submits the recorded work; `reason` is printed by `MM_DEBUG=2`. Level-4 host timing holds the work
 * back until the next wait, where it submits it one dispatch at a time, unless `immediate` (an
 * explicit flush(), after which the caller may destroy buffers the work uses).
 */
function submit(reason: string, immediate = false): void {
  if (!encoder && uniformSlots === 0 && !staging.some((chunk) => chunk.used > 0)) return;
  const { device } = gpu();
  const timing = kernelTimer();
  // The timestamps' resolve may allocate: before the uploads below are taken, so a refusal loses none.
  const commands = timing instanceof SerialTimer ? undefined : endPass();
  if (commands && timing instanceof TimestampTimer) timing.resolve(commands);
  const writes = [];
  if (uniformSlots > 0) {
    writes.push({
      buffer: uniformRing(),
      data: new Uint8Array(uniformBytes, 0, uniformSlots * PARAM_BLOCK_BYTES),
    });
  }
  for (const chunk of staging) {
    if (chunk.used > 0) writes.push({ buffer: chunk.buffer, data: chunk.bytes.subarray(0, chunk.used) });
    chunk.used = 0;
  }
  if (timing instanceof SerialTimer) {
    if (encoder) timing.record(endPass().finish());
    timing.flush(writes);
    if (immediate) timing.submitNow();
  } else {
    for (const { buffer, data } of writes) device.queue.writeBuffer(buffer, 0, data);
    device.queue.submit([commands!.finish()]);
  }
  stats.submits++;
  if (debugLevel >= 2) {
    const pipelines = pendingWork.pipelinesUsed - pendingWork.pipelines;
    debugLine(
      `submit ${stats.submits} (${reason}): ${pendingWork.dispatches} dispatches, ${
        formatBytes(pendingWork.bytes)
      } bound, ${pipelines} pipelines created`,
    );
  }
  Object.assign(pendingWork, { dispatches: 0, bytes: 0, pipelines: pendingWork.pipelinesUsed });
  encoder = undefined;
  uniformSlots = 0;
  stagingChunk = 0;
}

/**
 * Bytes one readback buffer holds at most (a single larger range goes alone), and that the buffers
 * kept for reuse hold in all: reading a whole model's parameters must not keep gigabytes of them.
 */
const READBACK_BATCH_BYTES = 64 * 2 ** 20;

/**
 * Copies the given ranges to the CPU, after submitting all recorded work, and returns their values
 * at the call: every copy is recorded before the first `await`, so work recorded, tensors disposed or
 * buffers reused while it waits change nothing. That snapshot takes readback buffers for every byte
 * read at once: ranges that together exceed 64 MiB (or half the device's largest buffer, whose size
 * class must fit one) go into a buffer per batch, each mapped (a `mapAsync` round trip, about 11 ms in
 * Deno whatever the size) and freed in turn, so the peak is the values read plus one batch. Never call
 * this inside a training step. At level 4 the kernels' timestamps come back with the (first) copy.
 */
export async function readRanges(ranges: readonly BufferRange[]): Promise<ArrayBuffer[]> {
  const rangeBytes = ranges.reduce((sum, r) => sum + paddedBytes(r), 0);
  const timing = timer !== undefined || rangeBytes > 0 || encoder ? kernelTimer() : null;
  const timestamps = timing instanceof TimestampTimer && timing.pending ? timing : undefined;
  if (timestamps) timestamps.resolve(endPass());
  const batchBytes = Math.min(READBACK_BATCH_BYTES, Math.floor(gpu().profile.maxBufferBytes / 2));
  const batches = rangeBatches(ranges, batchBytes);
  const totals = batches.map((batch, i) =>
    batch.reduce((sum, r) => sum + paddedBytes(r), 0) + (i === 0 ? timestamps?.resolvedBytes ?? 0 : 0)
  );
  if (totals.every((total) => total === 0)) return ranges.map(() => new ArrayBuffer(0));
  const targets = takeReadbackBuffers(totals);
  const reads = batches.map((batch, i) =>
    recordReadback(batch, targets[i], i === 0 ? timestamps : undefined)
  );
  submit("readback");
  if (timing instanceof SerialTimer) await timing.drain();
  const results: ArrayBuffer[] = [];
  for (const [i, read] of reads.entries()) {
    results.push(...(read ? await read() : batches[i].map(() => new ArrayBuffer(0))));
  }
  return results;
}

/** A range's bytes rounded up to whole words, as ranges lie in readback buffers. */
function paddedBytes(range: BufferRange): number {
  return Math.ceil(range.size / 4) * 4;
}

/** Consecutive batches of ranges of at most `batchBytes` each (one range may exceed it); one batch at least. */
function rangeBatches(ranges: readonly BufferRange[], batchBytes: number): BufferRange[][] {
  const batches: BufferRange[][] = [[]];
  let bytes = 0;
  for (const range of ranges) {
    if (batches.at(-1)!.length > 0 && bytes + paddedBytes(range) > batchBytes) {
      batches.push([]);
      bytes = 0;
    }
    batches.at(-1)!.push(range);
    bytes += paddedBytes(range);
  }
  return batches;
}

/**
 * A readback buffer of each size (none for 0), all taken before any copy is recorded: a refusal (the
 * memory budget, the device's largest buffer) leaves nothing recorded and nothing held.
 */
function takeReadbackBuffers(totals: readonly number[]): (GPUBuffer | null)[] {
  const taken: GPUBuffer[] = [];
  try {
    return totals.map((total) => {
      if (total === 0) return null;
      const size = sizeClass(total);
      let buffer = readbackFree.get(size)?.pop();
      if (buffer) keptReadbackBytes -= size;
      else {
        makeRoom(size);
        buffer = createBuffer(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, `readback ${size}`);
      }
      taken.push(buffer);
      return buffer;
    });
  } catch (error) {
    for (const buffer of taken) releaseReadback(buffer);
    throw error;
  }
}

/**
 * Keeps a readback buffer for the next read while those kept hold at most 64 MiB in all (so reads in
 * flight together, a loss and the optimizer's metrics, find theirs again, and a large read keeps at
 * most one batch); destroys it otherwise.
 */
function releaseReadback(buffer: GPUBuffer): void {
  if (keptReadbackBytes + buffer.size > READBACK_BATCH_BYTES) {
    destroyBuffer(buffer);
    return;
  }
  keptReadbackBytes += buffer.size;
  let free = readbackFree.get(buffer.size);
  if (!free) readbackFree.set(buffer.size, free = []);
  free.push(buffer);
}

/**
 * Records the copies of `ranges` (and of resolved kernel timestamps) into `target`; returns the
 * function that maps it, hands out the values and releases it, or null without a target.
 */
function recordReadback(
  ranges: readonly BufferRange[],
  target: GPUBuffer | null,
  timestamps: TimestampTimer | undefined,
): (() => Promise<ArrayBuffer[]>) | null {
  if (!target) return null;
  const rangeBytes = ranges.reduce((sum, r) => sum + paddedBytes(r), 0);
  const total = rangeBytes + (timestamps?.resolvedBytes ?? 0);
  const copies = endPass();
  let offset = 0;
  for (const r of ranges) {
    if (r.size > 0) copies.copyBufferToBuffer(r.buffer, r.offset, target, offset, r.size);
    offset += paddedBytes(r);
  }
  const readTimes = timestamps?.copyResolved(copies, target, rangeBytes);
  return async () => {
    await target.mapAsync(GPUMapMode.READ, 0, total);
    stats.readbacks++;
    const mapped = target.getMappedRange(0, total);
    const results: ArrayBuffer[] = [];
    offset = 0;
    for (const r of ranges) {
      results.push(mapped.slice(offset, offset + r.size));
      offset += paddedBytes(r);
    }
    readTimes?.(mapped);
    target.unmap();
    releaseReadback(target);
    return results;
  };
}

/**
 * Waits until the GPU has finished all submitted work (after submitting what is recorded). At level
 * 4 the wait is a readback of the kernels' timestamps, or the timed submission of each dispatch.
 */
export async function synchronize(): Promise<void> {
  const timing = kernelTimer();
  if (timing instanceof TimestampTimer && timing.pending) {
    await readRanges([]);
    return;
  }
  submit("synchronize");
  if (timing instanceof SerialTimer) await timing.drain();
  await gpu().device.queue.onSubmittedWorkDone();
}

/** GPU time of the kernels a piece of work dispatched, from {@linkcode timeKernels}. */
export interface KernelTimes {
  /** Sum of every dispatch's time, in milliseconds. */
  totalMs: number;
  /** Dispatches timed. */
  dispatches: number;
  /** Milliseconds and dispatches per kernel name. */
  byKernel: Map<string, { count: number; ms: number }>;
}

/** Whether a {@linkcode timeKernels} call is under way (it times every dispatch of the process). */
let timingKernels = false;

/**
 * Runs `work` and returns the GPU time of every kernel it dispatched, measured with timestamp
 * queries (each dispatch in a compute pass of its own, read back once at the end); null when the
 * adapter has no `timestamp-query`. Work recorded before is submitted first and not counted. Costs
 * one readback: call it around many steps, never inside one. One call at a time: the timer takes
 * every dispatch of the process, so a second call before the first settles is refused.
 */
export async function timeKernels(work: () => void | Promise<void>): Promise<KernelTimes | null> {
  const { device, profile } = gpu();
  if (!device.features.has("timestamp-query")) return null;
  if (timingKernels) {
    throw new Error(
      "timeKernels: another timeKernels() call has not settled (it times every dispatch of the process); " +
        "await it first",
    );
  }
  timingKernels = true;
  try {
    return await timeKernelsAlone(work, device, profile.name);
  } finally {
    timingKernels = false;
  }
}

/** {@linkcode timeKernels}' work, once no other call is timing. */
async function timeKernelsAlone(
  work: () => void | Promise<void>,
  device: GPUDevice,
  adapterName: string,
): Promise<KernelTimes> {
  await synchronize();
  const times: KernelTimes = { totalMs: 0, dispatches: 0, byKernel: new Map() };
  const outer = kernelTimer();
  const local = new TimestampTimer(device, adapterName, (kernel, ms) => {
    times.totalMs += ms;
    times.dispatches++;
    const entry = times.byKernel.get(kernel);
    if (entry) {
      entry.count++;
      entry.ms += ms;
    } else times.byKernel.set(kernel, { count: 1, ms });
  });
  timer = local;
  try {
    await work();
    await synchronize();
  } finally {
    timer = outer;
    local.destroy();
  }
  return times;
}

/** A snapshot of the recorder's counters. */
export function recorderStats(): RecorderStats {
  return { ...stats };
}

/**
 * Runs `fn` and returns the dispatches it recorded, in order, together with its result; used by
 * tests and benchmarks to count the dispatches of a step.
 */
export function traceDispatches<T>(fn: () => T): { result: T; dispatches: DispatchRecord[] } {
  const trace: DispatchRecord[] = [];
  traces = [...traces, trace];
  try {
    return { result: fn(), dispatches: trace };
  } finally {
    traces = traces.filter((t) => t !== trace);
  }
}

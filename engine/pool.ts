/**
 * Buffer pool: GPU buffers are created once and reused. Sizes are rounded to size classes so that a
 * buffer freed by one step fits the same request in the next; in a loop of fixed shapes no buffer is
 * created after the first training step and the pool's bytes stay constant. Where shapes vary from
 * batch to batch, a free buffer of a class up to twice the request serves it, so the pool holds about
 * the largest step's buffers rather than the peak of every class.
 *
 * @module
 */
import { gpu } from "./device.ts";

/** Usage flags of every pooled storage buffer: bound by kernels, copied to and from. */
const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Counters that tests and `MM_DEBUG` read to prove that a steady training loop allocates nothing. */
export interface PoolStats {
  /** GPUBuffers created since the process started (storage, uniform, staging and readback). */
  buffersCreated: number;
  /** Bytes of all pooled storage buffers, free or in use. */
  pooledBytes: number;
  /** Bytes of pooled storage buffers currently handed out. */
  inUseBytes: number;
  /** Pooled storage buffers currently free. */
  freeBuffers: number;
  /** Bytes of every buffer the engine created and has not destroyed (pool, arenas, optimizer state, staging). */
  liveBytes: number;
  /** The largest {@linkcode PoolStats.liveBytes} so far: the process's peak GPU memory. */
  peakLiveBytes: number;
}

const stats: PoolStats = {
  buffersCreated: 0,
  pooledBytes: 0,
  inUseBytes: 0,
  freeBuffers: 0,
  liveBytes: 0,
  peakLiveBytes: 0,
};
let budget = Infinity;
const freeBySize = new Map<number, GPUBuffer[]>();

/**
 * Rounds a byte count up to its size class: multiples of 256 bytes up to 64 KiB, then eight classes
 * per power of two (at most 12.5% waste), so buffers of nearby sizes are interchangeable.
 */
export function sizeClass(bytes: number): number {
  const min = 256;
  if (bytes <= 65536) return Math.max(min, Math.ceil(bytes / min) * min);
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/**
 * Sets the bytes of GPU memory this process may hold in buffers (null: no limit, the default).
 * WebGPU cannot report how much memory an adapter has, so the engine cannot know when an allocation
 * will fail; with a budget (on a software adapter, the machine's free memory; on a GPU, its memory
 * size), a buffer that would exceed it is refused with an error saying what is needed and what is
 * left, instead of the device losing memory or the process being killed. The pool's free buffers are
 * destroyed first ({@linkcode makeRoom}) for a pooled tensor, a readback, an arena or an optimizer.
 */
export function setMemoryBudget(bytes: number | null): void {
  if (bytes !== null && !(bytes > 0)) {
    throw new RangeError(`setMemoryBudget: ${bytes} is not a positive byte count`);
  }
  budget = bytes ?? Infinity;
}

/** The budget of {@linkcode setMemoryBudget}: Infinity when none is set. */
export function memoryBudget(): number {
  return budget;
}

/**
 * Throws unless `bytes` more fit the memory budget; `what` names the allocation and `breakdown`
 * says what the bytes are for.
 */
export function assertFitsBudget(what: string, bytes: number, breakdown = ""): void {
  if (stats.liveBytes + bytes <= budget) return;
  throw new RangeError(
    `${what} needs ${formatBinary(bytes)}${breakdown ? ` (${breakdown})` : ""}, but only ` +
      `${formatBinary(Math.max(0, budget - stats.liveBytes))} of the ${formatBinary(budget)} memory budget ` +
      `are left (${formatBinary(stats.liveBytes)} held in buffers; see setMemoryBudget)`,
  );
}

/** Bytes in binary units with three significant digits ("1.43 GiB", "512 B"). */
export function formatBinary(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toPrecision(3)} ${units[unit]}`;
}

/**
 * Creates a GPUBuffer and counts it; every buffer of the engine is made here and freed by
 * {@linkcode destroyBuffer}. `budgeted` false spares the memory budget's check, for the level-4 timer's
 * few bytes a dispatch, which a submit may need while the budget is full.
 */
export function createBuffer(
  size: number,
  usage: GPUBufferUsageFlags,
  label: string,
  budgeted = true,
): GPUBuffer {
  const { device, profile } = gpu();
  if (size > profile.maxBufferBytes) {
    throw new RangeError(
      `${label}: ${size} bytes exceed the device's maxBufferSize of ${profile.maxBufferBytes} bytes`,
    );
  }
  if (budgeted) assertFitsBudget(`buffer "${label}"`, size);
  stats.buffersCreated++;
  stats.liveBytes += size;
  stats.peakLiveBytes = Math.max(stats.peakLiveBytes, stats.liveBytes);
  return device.createBuffer({ size, usage, label });
}

/** Destroys a buffer made by {@linkcode createBuffer} and stops counting its bytes. */
export function destroyBuffer(buffer: GPUBuffer): void {
  if (workHeldBack()) {
    destroyLater.push(buffer);
    return;
  }
  for (const held of destroyLater.splice(0)) destroyNow(held);
  destroyNow(buffer);
}

/** Destroys the buffers {@linkcode destroyBuffer} kept while submitted work was held back, once none is. */
export function destroyHeldBackBuffers(): void {
  if (!workHeldBack()) { for (const held of destroyLater.splice(0)) destroyNow(held); }
}

function destroyNow(buffer: GPUBuffer): void {
  stats.liveBytes -= buffer.size;
  buffer.destroy();
}

/**
 * Hands out a storage buffer of at least `bytes` bytes, reusing a free one of the same size class (or
 * of a class at most twice it); a class above the device's maxBufferSize (which need not be a power of
 * two) is cut to the largest size the device allows, so that every size the device can hold is
 * served. A new buffer that the memory budget would refuse first empties the pool's free buffers
 * ({@linkcode makeRoom}).
 */
export function acquireBuffer(bytes: number): GPUBuffer {
  const largest = Math.floor(gpu().profile.maxBufferBytes / 4) * 4;
  const size = bytes <= largest ? Math.min(sizeClass(bytes), largest) : sizeClass(bytes);
  const reused = freeBySize.get(size)?.pop() ?? largerFree(size);
  if (reused) {
    stats.freeBuffers--;
    stats.inUseBytes += reused.size;
    return reused;
  }
  makeRoom(size);
  // Counted once created: a refused allocation (device limit, memory budget) changes no count.
  const buffer = createBuffer(size, STORAGE_USAGE, `pooled ${size}`);
  stats.inUseBytes += size;
  stats.pooledBytes += size;
  return buffer;
}

/**
 * The free buffer of the smallest size class above `size` and at most twice it, taken from the pool;
 * undefined when there is none. Shapes that vary from batch to batch (text of every length) then share
 * buffers across neighbouring classes instead of each class keeping its own peak.
 */
function largerFree(size: number): GPUBuffer | undefined {
  let best: number | undefined;
  for (const [candidate, free] of freeBySize) {
    if (
      free.length > 0 && candidate > size && candidate <= 2 * size && (best === undefined || candidate < best)
    ) {
      best = candidate;
    }
  }
  return best === undefined ? undefined : freeBySize.get(best)!.pop();
}

/** Returns a buffer from {@linkcode acquireBuffer} to the pool. Work already recorded on it stays valid. */
export function releaseBuffer(buffer: GPUBuffer): void {
  const size = buffer.size;
  let free = freeBySize.get(size);
  if (!free) freeBySize.set(size, free = []);
  free.push(buffer);
  stats.inUseBytes -= size;
  stats.freeBuffers++;
}

/** Submits the work recorded so far; installed by engine/recorder.ts, which imports this module. */
let submitRecorded: () => void = () => {};
/**
 * Whether work submitted to the recorder has not reached the device's queue yet (level-4 host timing
 * holds it back to time it, one dispatch at a time); installed by engine/recorder.ts.
 */
let workHeldBack: () => boolean = () => false;
/** Buffers destroyed while work was held back: it may still read them, so they go once it has run. */
const destroyLater: GPUBuffer[] = [];

/** Installs the recorder's flush, which {@linkcode trimPool} calls first, and its held-back test. */
export function setSubmitRecorded(submit: () => void, heldBack: () => boolean): void {
  submitRecorded = submit;
  workHeldBack = heldBack;
}

/**
 * Destroys every free pooled buffer, shrinking the pool to what is in use. Work already recorded is
 * submitted first: a free buffer may still be read by a dispatch recorded before its tensor was disposed.
 * While level-4 host timing (`MM_TIMING=host`) holds submitted work back, the buffers leave the pool
 * at once and are destroyed (and uncounted) once that work has run.
 */
export function trimPool(): void {
  submitRecorded();
  for (const free of freeBySize.values()) {
    for (const buffer of free) {
      stats.pooledBytes -= buffer.size;
      destroyBuffer(buffer);
    }
  }
  freeBySize.clear();
  stats.freeBuffers = 0;
}

/**
 * Destroys the pool's free buffers ({@linkcode trimPool}) when `bytes` more would exceed the memory
 * budget: they are a cache, which goes before a new buffer is refused. It submits the work recorded so
 * far, so a caller must not hold a command encoder or pass across it.
 */
export function makeRoom(bytes: number): void {
  if (stats.liveBytes + bytes > budget && stats.freeBuffers > 0) trimPool();
}

/** A snapshot of the pool's counters. */
export function poolStats(): PoolStats {
  return { ...stats };
}

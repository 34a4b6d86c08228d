/**
 * Buffer pool: GPU buffers are created once and reused. Sizes are rounded to size classes so that a
 * buffer freed by one step fits the same request in the next; after the first training step no
 * buffer is created and the pool's bytes stay constant.
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
}

const stats: PoolStats = { buffersCreated: 0, pooledBytes: 0, inUseBytes: 0, freeBuffers: 0 };
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

/** Creates a GPUBuffer and counts it; every buffer of the engine is made here. */
export function createBuffer(size: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
  const { device, profile } = gpu();
  if (size > profile.maxBufferBytes) {
    throw new RangeError(
      `${label}: ${size} bytes exceed the device's maxBufferSize of ${profile.maxBufferBytes} bytes`,
    );
  }
  stats.buffersCreated++;
  return device.createBuffer({ size, usage, label });
}

/** Hands out a storage buffer of at least `bytes` bytes, reusing a free one of the same size class. */
export function acquireBuffer(bytes: number): GPUBuffer {
  const size = sizeClass(bytes);
  const free = freeBySize.get(size);
  const reused = free?.pop();
  stats.inUseBytes += size;
  if (reused) {
    stats.freeBuffers--;
    return reused;
  }
  stats.pooledBytes += size;
  return createBuffer(size, STORAGE_USAGE, `pooled ${size}`);
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

/** Destroys every free pooled buffer, shrinking the pool to what is in use. */
export function trimPool(): void {
  for (const free of freeBySize.values()) {
    for (const buffer of free) {
      stats.pooledBytes -= buffer.size;
      buffer.destroy();
    }
  }
  freeBySize.clear();
  stats.freeBuffers = 0;
}

/** A snapshot of the pool's counters. */
export function poolStats(): PoolStats {
  return { ...stats };
}

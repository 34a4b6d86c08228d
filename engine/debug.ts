/**
 * `MM_DEBUG` levels, tinygrad-style; each level adds to the ones below it, on stderr:
 *
 * - 1: every dispatch (kernel with its variant, workgroups, bytes bound);
 * - 2: one line per submit (dispatches, bytes bound, pipelines created, and why it was submitted);
 * - 3: each new pipeline's WGSL with the time its creation took;
 * - 4: the time of every kernel, summed per kernel in a table printed at exit (count, total, mean,
 *   share). Where the adapter has `timestamp-query`, each dispatch gets a compute pass of its own
 *   with timestamp writes, resolved at submit and read back only with a readback the program already
 *   makes (or at exit), so a step gains no wait. Elsewhere dispatches are submitted one at a time,
 *   each awaited, inside the waits the program already makes (readbacks, `synchronize()`); that host
 *   timing includes the per-submit overhead. `MM_TIMING` (comma-separated) tunes it: `host` chooses
 *   host timing where timestamps exist, to compare the two; `grid` gives a row per kernel and workgroup
 *   grid, which tells a problem's shapes apart (and a grid of many near-empty workgroups).
 *
 * This module holds the level, the two timers and the table; the recorder calls them.
 *
 * @module
 */
import { createBuffer, destroyBuffer, destroyHeldBackBuffers, sizeClass } from "./pool.ts";

/** The part of Deno's global this engine reads, typed here so that the core needs no Deno types. */
type DenoEnvironment = { Deno?: { env: { get(name: string): string | undefined } } };

/** An environment variable under Deno ("" when unset, not permitted, or in a browser, which has no Deno). */
export function readEnv(name: string): string {
  try {
    return (globalThis as DenoEnvironment).Deno?.env.get(name) ?? "";
  } catch {
    return "";
  }
}

/** The level of `MM_DEBUG`, read once: 0 when unset or "0", 1 for any value that is not a number above 1. */
export const debugLevel: number = (() => {
  const value = readEnv("MM_DEBUG");
  if (value === "" || value === "0") return 0;
  const level = Number(value);
  return Number.isInteger(level) && level > 1 ? Math.min(level, 4) : 1;
})();

/** The options of `MM_TIMING` (level 4), and what each one does. */
const TIMING_OPTIONS = {
  host: "host timing even where the adapter has timestamp queries",
  grid: "a row per kernel and workgroup grid instead of per kernel",
} as const;

/** Parses `MM_TIMING`'s comma-separated options; throws naming an unknown one and the accepted ones. */
export function parseTimingOptions(spec: string): Set<keyof typeof TIMING_OPTIONS> {
  const options = new Set<keyof typeof TIMING_OPTIONS>();
  for (const option of spec.split(",").map((o) => o.trim()).filter((o) => o !== "")) {
    if (!Object.hasOwn(TIMING_OPTIONS, option)) {
      throw new Error(
        `MM_TIMING: unknown option "${option}"; accepted: ${Object.keys(TIMING_OPTIONS).join(", ")}`,
      );
    }
    options.add(option as keyof typeof TIMING_OPTIONS);
  }
  return options;
}

/** What was wrong with `MM_TIMING`: raised by initGpu, not at import, so that a command can print it as one line. */
let timingError: Error | null = null;

/** The options of `MM_TIMING`, read once. */
export const timingOptions: ReadonlySet<keyof typeof TIMING_OPTIONS> = (() => {
  try {
    return parseTimingOptions(readEnv("MM_TIMING"));
  } catch (error) {
    timingError = error as Error;
    return new Set();
  }
})();

/** Throws the error `MM_TIMING` gave when it was read, if any (initGpu calls it). */
export function checkTimingEnvironment(): void {
  if (timingError) throw timingError;
}

/** Prints one debug line (or block) to stderr, prefixed with "[mm] ". */
export function debugLine(text: string): void {
  console.error(`[mm] ${text}`);
}

/** Bytes in decimal units: "512 B", "22.5 kB", "12.3 MB", "1.2 GB". */
export function formatBytes(bytes: number): string {
  const [unit, scale] = bytes >= 1e9
    ? ["GB", 1e9]
    : bytes >= 1e6
    ? ["MB", 1e6]
    : bytes >= 1e3
    ? ["kB", 1e3]
    : ["B", 1];
  return scale === 1 ? `${bytes} B` : `${(bytes / scale).toFixed(1)} ${unit}`;
}

/** Per-kernel sums of measured times, for the table printed at exit. */
const totals = new Map<string, { count: number; ms: number }>();
let timedBy = "";
let untimed = 0;
let untimedReason = "";

function addTime(kernel: string, ms: number): void {
  const entry = totals.get(kernel);
  if (entry) {
    entry.count++;
    entry.ms += ms;
  } else totals.set(kernel, { count: 1, ms });
}

/** The per-kernel table, sorted by total time: a title line, a header and a row per kernel. */
function kernelTimeTable(): string[] {
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((sum, [, r]) => sum + r.ms, 0);
  const count = rows.reduce((sum, [, r]) => sum + r.count, 0);
  const width = Math.max(6, ...rows.map(([name]) => name.length));
  const lines = [
    `kernel times, ${timedBy}: ${count} dispatches, ${total.toFixed(1)} ms`,
    `${"kernel".padEnd(width)}  ${"count".padStart(7)}  ${"total ms".padStart(10)}  ${
      "mean ms".padStart(9)
    }  share`,
    ...rows.map(([name, r]) =>
      `${name.padEnd(width)}  ${String(r.count).padStart(7)}  ${r.ms.toFixed(1).padStart(10)}  ${
        (r.ms / r.count).toFixed(3).padStart(9)
      }  ${(total > 0 ? (100 * r.ms) / total : 0).toFixed(1).padStart(5)}%`
    ),
  ];
  if (untimed > 0) lines.push(`${untimed} dispatches not timed (${untimedReason})`);
  return lines;
}

if (debugLevel >= 4) {
  globalThis.addEventListener("unload", () => {
    if (totals.size === 0 && untimed === 0) return;
    for (const line of kernelTimeTable()) debugLine(line);
  });
}

/**
 * The level-4 timer for a device: timestamps where the device has `timestamp-query` (and `MM_TIMING`
 * has no "host"), host timing elsewhere; null below level 4. Work still untimed when the program runs
 * out of work is timed in one last `wait()` (the recorder's synchronize).
 */
export function createKernelTimer(
  device: GPUDevice,
  adapter: string,
  wait: () => Promise<void>,
): TimestampTimer | SerialTimer | null {
  if (debugLevel < 4) return null;
  const timer = device.features.has("timestamp-query") && !timingOptions.has("host")
    ? new TimestampTimer(device, adapter)
    : new SerialTimer(device.queue, adapter);
  let waited = false;
  globalThis.addEventListener("beforeunload", (event) => {
    if (waited || !timer.pending) return;
    waited = true;
    event.preventDefault(); // keeps the program alive for the wait; beforeunload comes again after it
    void wait();
  });
  return timer;
}

/** Timestamp queries hold 4096 values: a begin and an end for 2048 dispatches per command buffer. */
const QUERY_CAPACITY = 4096;

/**
 * Level-4 timing with GPU timestamps: each timed dispatch runs in a compute pass of its own whose
 * begin and end write a timestamp; a command buffer's timestamps are resolved into a buffer at
 * submit, and that buffer is copied out with the next readback.
 */
export class TimestampTimer {
  readonly #querySet: GPUQuerySet;
  /** Where measured times go: the exit table, or a caller's own sum. */
  readonly #sink: (kernel: string, ms: number) => void;
  /** Kernels timed in the command buffer being recorded, in query order. */
  #recording: string[] = [];
  /** Resolved, submitted timestamps not yet read back. */
  #resolved: { buffer: GPUBuffer; kernels: string[] }[] = [];
  readonly #free = new Map<number, GPUBuffer[]>();

  /** Without `sink`, times go to the table `MM_DEBUG=4` prints at exit. */
  constructor(device: GPUDevice, adapter: string, sink?: (kernel: string, ms: number) => void) {
    this.#querySet = device.createQuerySet({
      type: "timestamp",
      count: QUERY_CAPACITY,
      label: "kernel times",
    });
    this.#sink = sink ?? addTime;
    if (sink) return;
    timedBy = `GPU timestamps (one compute pass per dispatch) on ${adapter}`;
    untimedReason = "submitted but not read back before exit";
  }

  /** Releases the query set and resolve buffers (after every timestamp has been read back). */
  destroy(): void {
    this.#querySet.destroy();
    for (const buffers of this.#free.values()) for (const buffer of buffers) destroyBuffer(buffer);
    this.#free.clear();
  }

  /** True when the command buffer being recorded has no query left: it must be submitted first. */
  get full(): boolean {
    return this.#recording.length * 2 >= QUERY_CAPACITY;
  }

  /** True when timestamps wait to be read back. */
  get pending(): boolean {
    return this.#recording.length > 0 || this.#resolved.length > 0;
  }

  /** The descriptor of the compute pass of one dispatch of `kernel`. */
  passFor(kernel: string): GPUComputePassDescriptor {
    const at = this.#recording.push(kernel) * 2 - 2;
    return {
      label: kernel,
      timestampWrites: {
        querySet: this.#querySet,
        beginningOfPassWriteIndex: at,
        endOfPassWriteIndex: at + 1,
      },
    };
  }

  /** Records the resolve of the timestamps of the command buffer `encoder` records; call before finish(). */
  resolve(encoder: GPUCommandEncoder): void {
    const kernels = this.#recording;
    if (kernels.length === 0) return;
    const size = sizeClass(kernels.length * 16);
    const buffer = this.#free.get(size)?.pop() ??
      createBuffer(size, GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, "kernel times", false);
    encoder.resolveQuerySet(this.#querySet, 0, kernels.length * 2, buffer, 0);
    this.#resolved.push({ buffer, kernels });
    this.#recording = [];
    if (this.#sink === addTime) untimed += kernels.length;
  }

  /**
   * Records copies of every resolved timestamp buffer into `target` from byte `offset` on (after
   * {@linkcode resolve}, {@linkcode resolvedBytes} of them); returns the function that reads the
   * mapped copies into the table.
   */
  copyResolved(encoder: GPUCommandEncoder, target: GPUBuffer, offset: number): (mapped: ArrayBuffer) => void {
    const taken = this.#resolved;
    this.#resolved = [];
    let at = offset;
    for (const { buffer, kernels } of taken) {
      encoder.copyBufferToBuffer(buffer, 0, target, at, kernels.length * 16);
      at += kernels.length * 16;
    }
    return (mapped: ArrayBuffer) => {
      let from = offset;
      for (const { buffer, kernels } of taken) {
        const stamps = new BigUint64Array(mapped.slice(from, from + kernels.length * 16));
        kernels.forEach((kernel, i) =>
          this.#sink(kernel, Math.max(0, Number(stamps[2 * i + 1]) - Number(stamps[2 * i])) / 1e6)
        );
        if (this.#sink === addTime) untimed -= kernels.length;
        from += kernels.length * 16;
        let free = this.#free.get(buffer.size);
        if (!free) this.#free.set(buffer.size, free = []);
        free.push(buffer);
      }
    };
  }

  /** The size a readback target needs for the resolved timestamps. */
  get resolvedBytes(): number {
    return this.#resolved.reduce((sum, r) => sum + r.kernels.length * 16, 0);
  }
}

/** One step of the serial queue: a queue write, or a command buffer (with the kernel it dispatches). */
type QueueStep =
  | { write: { buffer: GPUBuffer; offset: number; data: Uint8Array<ArrayBuffer> } }
  | { commands: GPUCommandBuffer; kernel?: string };

/**
 * Level-4 timing on the host, for adapters without timestamps: every dispatch is a command buffer of
 * its own. Submitted work is held back until the program waits (a readback or `synchronize()`, or
 * the end of the program), then submitted one step at a time, each awaited, and each dispatch's wait
 * is its time. Only work an explicit `flush()` submits goes at once (the caller may destroy buffers
 * next); it is counted as not timed.
 */
export class SerialTimer {
  readonly #queue: GPUQueue;
  /** Steps of the command buffer being recorded, in order. */
  #recording: QueueStep[] = [];
  /** Steps flushed and not yet submitted. */
  #waiting: QueueStep[] = [];
  #draining: Promise<void> | undefined;
  #calibrated = false;
  readonly #adapter: string;

  constructor(queue: GPUQueue, adapter: string) {
    this.#queue = queue;
    this.#adapter = adapter;
    timedBy = `serialised host timing: includes per-submit overhead, on ${adapter}`;
    untimedReason = "submitted by an explicit flush()";
  }

  /** Adds a finished command buffer; `kernel` names the dispatch it holds, if it is one. */
  record(commands: GPUCommandBuffer, kernel?: string): void {
    this.#recording.push({ commands, kernel });
  }

  /** Queues the writes of the uniform ring and staging buffer, then the recorded command buffers. */
  flush(writes: { buffer: GPUBuffer; data: Uint8Array<ArrayBuffer> }[]): void {
    for (const { buffer, data } of writes) {
      this.#waiting.push({ write: { buffer, offset: 0, data: data.slice() } });
    }
    this.#waiting.push(...this.#recording);
    this.#recording = [];
  }

  /** Writes `data` to a buffer in order with the queued work (directly when nothing waits). */
  write(buffer: GPUBuffer, offset: number, data: Uint8Array<ArrayBuffer>): void {
    if (this.#waiting.length === 0 && !this.#draining) this.#queue.writeBuffer(buffer, offset, data);
    else this.#waiting.push({ write: { buffer, offset, data: data.slice() } });
  }

  /** True when work waits to be submitted and timed. */
  get pending(): boolean {
    return this.#recording.length > 0 || this.#waiting.length > 0;
  }

  /** True while work flushed to it has not all reached the device's queue (it waits, or a drain runs). */
  get holdsSubmittedWork(): boolean {
    return this.#waiting.length > 0 || this.#draining !== undefined;
  }

  /** Submits everything queued at once, untimed, unless a timed drain is under way (it takes them). */
  submitNow(): void {
    if (this.#draining) return;
    const steps = this.#waiting;
    this.#waiting = [];
    let batch: GPUCommandBuffer[] = [];
    for (const step of steps) {
      if ("write" in step) {
        if (batch.length > 0) this.#queue.submit(batch);
        batch = [];
        this.#queue.writeBuffer(step.write.buffer, step.write.offset, step.write.data);
      } else {
        batch.push(step.commands);
        if (step.kernel) untimed++;
      }
    }
    if (batch.length > 0) this.#queue.submit(batch);
  }

  /** Submits everything queued one step at a time, timing each dispatch; resolves when all is done. */
  drain(): Promise<void> {
    this.#draining ??= this.#drainAll().finally(() => {
      this.#draining = undefined;
      destroyHeldBackBuffers();
    });
    return this.#draining;
  }

  async #drainAll(): Promise<void> {
    if (!this.#calibrated) {
      let best = Infinity;
      for (let i = 0; i < 3; i++) best = Math.min(best, await this.#timeSubmit([]));
      this.#calibrated = true;
      timedBy = `serialised host timing: includes per-submit overhead (an empty submit and wait takes ${
        best.toFixed(2)
      } ms), on ${this.#adapter}`;
    }
    // Steps queued while this one awaits (by other readbacks) are taken in the next round.
    while (this.#waiting.length > 0) {
      const steps = this.#waiting;
      this.#waiting = [];
      for (const step of steps) {
        if ("write" in step) this.#queue.writeBuffer(step.write.buffer, step.write.offset, step.write.data);
        else {
          const ms = await this.#timeSubmit([step.commands]);
          if (step.kernel) addTime(step.kernel, ms);
        }
      }
    }
  }

  async #timeSubmit(commands: GPUCommandBuffer[]): Promise<number> {
    const start = performance.now();
    this.#queue.submit(commands);
    await this.#queue.onSubmittedWorkDone();
    return performance.now() - start;
  }
}

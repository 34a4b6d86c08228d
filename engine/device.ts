/**
 * The WebGPU device: one adapter and device per process, opened with the adapter's largest limits,
 * and a profile that kernels use to pick tile sizes for the hardware they run on.
 *
 * @module
 */
import { checkTimingEnvironment } from "./debug.ts";
import { formatBinary, poolStats } from "./pool.ts";
import { checkKernelEnvironment } from "./variants.ts";

/** What kernels need to know about the hardware to choose their shapes. */
export interface DeviceProfile {
  /** The adapter's description, for example "llvmpipe (LLVM 15.0.6, 256 bits)" or "NVIDIA H100 80GB HBM3". */
  readonly name: string;
  /** True for CPU implementations of WebGPU (llvmpipe, lavapipe, SwiftShader), where barriers are costly. */
  readonly isSoftware: boolean;
  /** Largest byte size of one storage-buffer binding. */
  readonly maxStorageBindingBytes: number;
  /** Largest byte size of one buffer. */
  readonly maxBufferBytes: number;
  /** Largest workgroup count in one dimension of a dispatch. */
  readonly maxWorkgroupsPerDimension: number;
  /** Bytes of workgroup memory a kernel may use. */
  readonly workgroupMemoryBytes: number;
  /** Largest number of invocations in one workgroup. */
  readonly maxInvocationsPerWorkgroup: number;
  /** Storage buffers one shader stage may bind. */
  readonly maxStorageBuffersPerStage: number;
  /** Byte alignment of a storage-buffer binding's offset. */
  readonly storageOffsetAlignment: number;
  /** Byte alignment of a uniform-buffer binding's offset. */
  readonly uniformOffsetAlignment: number;
}

/** The opened device together with its profile. */
export interface Gpu {
  /** The WebGPU device every tensor and kernel of this process uses. */
  readonly device: GPUDevice;
  /** Hardware facts for kernel selection. */
  readonly profile: DeviceProfile;
}

/**
 * Raised when no WebGPU adapter exists; its message says what to do: under Deno what to install, in a
 * browser which browsers have WebGPU (`navigator.gpu` missing) or why one may offer no adapter.
 */
export class NoAdapterError extends Error {
  constructor() {
    const inBrowser = (globalThis as { Deno?: { env?: unknown } }).Deno?.env === undefined;
    super(
      !inBrowser
        ? "No WebGPU adapter is available. On a machine without a GPU, install Mesa's software driver " +
          "(Debian/Ubuntu: `apt-get install libegl1 libgl1-mesa-dri` or `mesa-vulkan-drivers`) and run " +
          "again; with a GPU, install its Vulkan driver. DENO_WEBGPU_BACKEND=vulkan|gl selects the backend."
        : !("gpu" in navigator)
        ? "This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or " +
          "Firefox with WebGPU on, from localhost or https (WebGPU needs a secure context)."
        : "WebGPU found no adapter: the browser blocks this GPU or has none (chrome://gpu says why WebGPU " +
          "is off; Chrome on Linux without a GPU needs --enable-unsafe-webgpu).",
    );
    this.name = "NoAdapterError";
  }
}

let opened: Promise<Gpu> | undefined;
let current: Gpu | undefined;
/** Why the device was lost (destroyed, a driver reset, the browser reclaiming it); null while it lives. */
let lost: GPUDeviceLostInfo | null = null;

/** The error of any use of a lost device: every buffer, and so every tensor, went with it. */
function lostError(): Error {
  const message = lost!.message.replace(/\.$/, "");
  return new Error(
    `The WebGPU device was lost (${lost!.reason}${message ? `: ${message}` : ""}); every tensor on it is ` +
      "gone: reload the page or restart the process",
  );
}

/**
 * Opens the WebGPU device once per process and returns it; later calls return the same device. Throws
 * {@linkcode NoAdapterError} when `requestAdapter()` finds nothing (a later call tries again), and once
 * the device is lost says so: a lost device is not replaced, as every tensor lived on it.
 */
export function initGpu(): Promise<Gpu> {
  if (lost) return Promise.reject(lostError());
  opened ??= (async () => {
    // Environment settings that could not be read fail here, once, rather than at import.
    checkKernelEnvironment();
    checkTimingEnvironment();
    return await openDevice();
  })();
  opened.catch(() => (opened = undefined));
  return opened;
}

/**
 * The device opened by {@linkcode initGpu}; throws if it was not awaited first, or once the device was
 * lost (the error names why, rather than a later readback's "buffer was unmapped").
 */
export function gpu(): Gpu {
  if (!current) {
    throw new Error("WebGPU is not initialised: `await initGpu()` before creating tensors");
  }
  if (lost) throw lostError();
  return current;
}

// Known exit crash that no code here can prevent: under `deno test` on the GL backend (Mesa through
// libglvnd's libEGL), a process sometimes aborts at exit with "double free or corruption" or another
// heap-corruption message after every test passed (about 1 run in 100 of a one-file test, more on a loaded
// machine). Deno runs each test file on a tokio blocking thread, and the first EGL call there gives that
// thread a libglvnd thread-state record, freed by a pthread-key destructor when the thread exits. At the
// end Deno shuts that thread down without joining it and calls exit(), and libEGL's destructor frees every
// thread-state record without a lock, so both free the same record when they overlap. A five-line test
// that only opens a device crashes the same way. Destroying the buffers and the device at unload, with or
// without waiting for onSubmittedWorkDone, leaves the rate unchanged, because wgpu makes more EGL calls on
// that thread when Deno drops the runtime. `deno run` is unaffected because its JavaScript runs on the
// main thread. DENO_WEBGPU_BACKEND=vulkan with a Vulkan driver (Mesa lavapipe) loads no EGL and exits
// cleanly.
async function openDevice(): Promise<Gpu> {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoAdapterError();
  const limits = adapter.limits;
  // Kernels are timed with timestamp queries (MM_DEBUG=4, timeKernels()) where the adapter has them.
  const timestamps = adapter.features.has("timestamp-query");
  const device = await adapter.requestDevice({
    requiredFeatures: timestamps ? ["timestamp-query"] : [],
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: limits.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
    },
  });
  device.lost.then((info) => (lost = info));
  device.addEventListener("uncapturederror", (event) => {
    const error = (event as GPUUncapturedErrorEvent).error;
    // WebGPU cannot say how much memory there is, so what the process holds is the best hint.
    const held = error instanceof GPUOutOfMemoryError
      ? ` (out of memory with ${formatBinary(poolStats().liveBytes)} held in buffers; ` +
        "estimateMemory() says what a configuration needs, setMemoryBudget() refuses what will not fit)"
      : "";
    console.error(`WebGPU error: ${error.message}${held}`);
  });
  const description = adapter.info.description || adapter.info.vendor || "unknown adapter";
  const isSoftware = adapter.info.isFallbackAdapter ||
    /llvmpipe|lavapipe|swiftshader|softpipe/i.test(description);
  current = {
    device,
    profile: {
      name: description,
      isSoftware,
      maxStorageBindingBytes: device.limits.maxStorageBufferBindingSize,
      maxBufferBytes: device.limits.maxBufferSize,
      maxWorkgroupsPerDimension: device.limits.maxComputeWorkgroupsPerDimension,
      workgroupMemoryBytes: device.limits.maxComputeWorkgroupStorageSize,
      maxInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerStage: device.limits.maxStorageBuffersPerShaderStage,
      storageOffsetAlignment: device.limits.minStorageBufferOffsetAlignment,
      uniformOffsetAlignment: device.limits.minUniformBufferOffsetAlignment,
    },
  };
  return current;
}

/**
 * How a Deno program - a command in tools/, a benchmark in bench/ - opens the GPU: print the
 * adapter's name, or one line saying what to install and exit 1 (no stack trace) when WebGPU has no
 * adapter (or naming what is wrong in `MM_KERNELS` / `MM_TIMING`). Deno only (it exits the process); mod.ts does not export it.
 *
 * @module
 */
import { type Gpu, initGpu } from "../engine/device.ts";

/** Opens the device and prints its adapter to stderr; exits with a one-line message when there is none. */
export async function openGpuOrExit(): Promise<Gpu> {
  try {
    const opened = await initGpu();
    console.error(`adapter: ${opened.profile.name}`);
    return opened;
  } catch (error) {
    // No adapter, or an MM_KERNELS / MM_TIMING that cannot be read: one line, no stack trace.
    console.error((error as Error).message);
    Deno.exit(1);
  }
}

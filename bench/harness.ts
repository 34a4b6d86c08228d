/**
 * GPU benchmark harness on top of `Deno.bench`. Each measured iteration records `reps` repetitions
 * of the work and waits for the GPU once, so the ~11 ms cost of a Deno WebGPU synchronisation is
 * amortised; the rate (GFLOP/s or GB/s) of the best iteration is printed in a table at exit, with
 * the adapter's name.
 *
 * @module
 */
import { openGpuOrExit } from "../tools/start.ts";
import { synchronize } from "../engine/recorder.ts";

/** A GPU benchmark case. */
export interface GpuBench {
  /** Name shown by `deno bench` and in the table. */
  name: string;
  /** Group for `deno bench`'s comparison output. */
  group?: string;
  /** Floating-point operations of one repetition (reported as GFLOP/s). */
  flops?: number;
  /** Bytes one repetition must move at least (reported as GB/s). */
  bytes?: number;
  /** Repetitions recorded per measured iteration. */
  reps: number;
  /** Builds the inputs once; runs before the first measured iteration. */
  setup: () => void | Promise<void>;
  /** Records one repetition of the work (no readback). */
  run: () => void;
}

const gpuInfo = await openGpuOrExit();
const rows: { name: string; ms: number; rate: string }[] = [];

/** Registers a GPU benchmark. */
export function benchGpu(spec: GpuBench): void {
  let prepared = false;
  let best = Infinity;
  Deno.bench({
    name: spec.name,
    group: spec.group,
    n: 5,
    warmup: 1,
    async fn(b) {
      if (!prepared) {
        await spec.setup();
        spec.run();
        await synchronize();
        prepared = true;
      }
      b.start();
      const start = performance.now();
      for (let i = 0; i < spec.reps; i++) spec.run();
      await synchronize();
      const ms = (performance.now() - start) / spec.reps;
      b.end();
      if (ms < best) {
        best = ms;
        const existing = rows.findIndex((r) => r.name === spec.name);
        const rate = spec.flops
          ? `${(spec.flops / ms / 1e6).toFixed(2)} GFLOP/s`
          : `${((spec.bytes ?? 0) / ms / 1e6).toFixed(2)} GB/s`;
        const row = { name: spec.name, ms, rate };
        if (existing >= 0) rows[existing] = row;
        else rows.push(row);
      }
    },
  });
}

globalThis.addEventListener("unload", () => {
  if (rows.length === 0) return;
  console.log(`\nadapter: ${gpuInfo.profile.name}`);
  console.log("| case | ms per repetition | rate |\n|---|---|---|");
  for (const r of rows) console.log(`| ${r.name} | ${r.ms.toFixed(3)} | ${r.rate} |`);
});

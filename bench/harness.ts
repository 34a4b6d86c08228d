/**
 * GPU benchmark harness on top of `Deno.bench`. Before the workloads, two microbenchmarks measure
 * the adapter's peaks: copy bandwidth (a vec4 streaming copy between two large buffers) and FMA
 * throughput (a register-bound loop of independent vec4 FMA chains). Each measured iteration of a
 * workload records `reps` repetitions of the work and waits for the GPU once; the fixed cost of that
 * wait (Deno polls the device: about 11 ms, measured once with an empty submission, as bench/gpu/
 * does) is subtracted before dividing by `reps`. At exit a table gives, per workload, the best
 * iteration's time per repetition, its rate (GFLOP/s or GB/s) and that rate as a share of the
 * matching peak, with the adapter's name and any variants forced by `MM_KERNELS`. Workloads with a
 * NumPy twin are then timed in NumPy on the CPU (bench/numpy_reference.py, `PYTHON` or python3, when
 * it has NumPy), and the table gives NumPy's time and our rate as a share of NumPy's.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { openGpuOrExit } from "../engine/start.ts";
import { grid, kernelFor, linearIndex } from "../engine/kernel.ts";
import { dispatch, synchronize } from "../engine/recorder.ts";
import { zeros } from "../engine/tensor.ts";
import { forcedKernels } from "../engine/variants.ts";
import { measureSyncLatency } from "./gpu/timing.ts";

/** A GPU benchmark case. */
export interface GpuBench {
  /** Name shown by `deno bench` and in the table. */
  name: string;
  /** Group for `deno bench`'s comparison output. */
  group?: string;
  /** Floating-point operations of one repetition (reported as GFLOP/s, against the FMA peak). */
  flops?: number;
  /** Bytes one repetition must move at least (reported as GB/s, against the copy peak). */
  bytes?: number;
  /** Repetitions recorded per measured iteration. */
  reps: number;
  /** The same workload in NumPy (a key of bench/numpy_reference.py), timed at exit for the ours / NumPy column. */
  numpy?: string;
  /** Builds the inputs once; runs before the first measured iteration. */
  setup: () => void | Promise<void>;
  /** Records one repetition of the work (no readback). */
  run: () => void;
}

const gpuInfo = await openGpuOrExit();
const software = gpuInfo.profile.isSoftware;

/**
 * Milliseconds per repetition of `record`, as the slope between waits after `reps` and `2 * reps`
 * repetitions (best of three each), which cancels the fixed cost of the wait; `reps` doubles until
 * one wait spans `spanMs`.
 */
async function slopeMs(record: () => void, spanMs: number): Promise<number> {
  const timed = async (reps: number) => {
    let best = Infinity;
    for (let trial = 0; trial < 3; trial++) {
      const start = performance.now();
      for (let i = 0; i < reps; i++) record();
      await synchronize();
      best = Math.min(best, performance.now() - start);
    }
    return best;
  };
  record();
  await synchronize();
  let reps = 1;
  while (reps < 4096 && await timed(reps) < spanMs) reps *= 2;
  return Math.max(1e-6, (await timed(2 * reps) - await timed(reps)) / reps);
}

/** Copy bandwidth in GB/s (bytes read plus bytes written): a vec4 copy between two buffers. */
async function copyPeak(): Promise<{ rate: number; detail: string }> {
  const bytes = Math.min(software ? 32 << 20 : 256 << 20, gpuInfo.profile.maxStorageBindingBytes);
  const vectors = bytes / 16;
  const [from, to] = [zeros([vectors * 4]), zeros([vectors * 4])];
  const kernel = kernelFor("peak_copy", () => ({
    name: "peak_copy",
    params: { count: "u32" },
    bindings: [{ name: "src", type: "vec4<f32>" }, { name: "dst", type: "vec4<f32>", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i < params.count) { dst[i] = src[i]; }
}`,
  }));
  const ms = await slopeMs(
    () => dispatch(kernel, { count: vectors }, [from.range(), to.range()], grid(vectors, 256)),
    100,
  );
  from.dispose();
  to.dispose();
  return { rate: (2 * bytes) / ms / 1e6, detail: `vec4 copy of ${bytes >> 20} MiB` };
}

/** Chains of FMA per invocation in {@linkcode fmaPeak}: independent, so they overlap in the pipeline. */
const CHAINS = 8;

/** FMA throughput in GFLOP/s (an FMA counts 2): independent vec4 FMA chains held in registers. */
async function fmaPeak(): Promise<{ rate: number; detail: string }> {
  const invocations = software ? 1 << 14 : 1 << 20, iterations = 1024;
  const out = zeros([invocations * 4]);
  const chains = Array.from({ length: CHAINS }, (_, k) => k);
  const kernel = kernelFor("peak_fma", () => ({
    name: "peak_fma",
    params: { count: "u32", iterations: "u32", b: "f32", c: "f32" },
    bindings: [{ name: "out", type: "vec4<f32>", write: true }],
    code: `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  let b = vec4<f32>(params.b);
  let c = vec4<f32>(params.c);
  ${chains.map((k) => `var a${k} = vec4<f32>(f32(i) * 1e-7 + ${k}.0);`).join("\n  ")}
  for (var k = 0u; k < params.iterations; k++) {
    ${chains.map((k) => `a${k} = fma(a${k}, b, c);`).join("\n    ")}
  }
  if (i < params.count) { out[i] = ${chains.map((k) => `a${k}`).join(" + ")}; }
}`,
  }));
  // b and c are uniforms, so the compiler cannot fold the loop; |a| stays bounded for b < 1.
  const params = { count: invocations, iterations, b: 0.999, c: 0.001 };
  const ms = await slopeMs(() => dispatch(kernel, params, [out.range()], grid(invocations, 256)), 100);
  out.dispose();
  const flops = invocations * iterations * CHAINS * 4 * 2;
  return {
    rate: flops / ms / 1e6,
    detail: `${invocations} invocations x ${iterations} x ${CHAINS} vec4 FMA`,
  };
}

const peaks = { copy: await copyPeak(), fma: await fmaPeak() };
const syncLatency = await measureSyncLatency();
console.log(
  `peaks of ${gpuInfo.profile.name}: copy ${peaks.copy.rate.toFixed(1)} GB/s (${peaks.copy.detail}), ` +
    `FMA ${peaks.fma.rate.toFixed(1)} GFLOP/s (${peaks.fma.detail}); a wait for the GPU costs ` +
    `${syncLatency.toFixed(2)} ms, subtracted from each timed iteration`,
);

const rows: { name: string; ms: number; rate: string; share: string; numpy?: string }[] = [];

/** The row of a workload whose best repetition took `ms`. */
function row(spec: GpuBench, ms: number) {
  const [rate, unit, peak] = spec.flops
    ? [spec.flops / ms / 1e6, "GFLOP/s", peaks.fma.rate]
    : [(spec.bytes ?? 0) / ms / 1e6, "GB/s", peaks.copy.rate];
  return {
    name: spec.name,
    ms,
    rate: `${rate.toFixed(2)} ${unit}`,
    share: `${((100 * rate) / peak).toFixed(1)}%`,
    numpy: spec.numpy,
  };
}

/** Registers a GPU benchmark. Software adapters take fewer iterations: one repetition can take seconds. */
export function benchGpu(spec: GpuBench): void {
  let prepared = false;
  let best = Infinity;
  Deno.bench({
    name: spec.name,
    group: spec.group,
    n: software ? 2 : 5,
    warmup: software ? 0 : 1,
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
      const ms = Math.max(performance.now() - start - syncLatency, 1e-6) / spec.reps;
      b.end();
      if (ms < best) {
        best = ms;
        const existing = rows.findIndex((r) => r.name === spec.name);
        if (existing >= 0) rows[existing] = row(spec, ms);
        else rows.push(row(spec, ms));
      }
    },
  });
}

/** NumPy's milliseconds per workload key, or why there are none. */
function numpyTimes(keys: string[]): Map<string, number> | string {
  if (keys.length === 0) return new Map();
  const python = Deno.env.get("PYTHON") ?? "python3";
  try {
    const script = fileURLToPath(new URL("./numpy_reference.py", import.meta.url));
    const output = new Deno.Command(python, { args: [script, ...keys], stderr: "piped" }).outputSync();
    if (!output.success) {
      return `${python} failed: ${new TextDecoder().decode(output.stderr).trim().split("\n").at(-1)}`;
    }
    return new Map(
      Object.entries(JSON.parse(new TextDecoder().decode(output.stdout)) as Record<string, number>),
    );
  } catch (error) {
    return `${python} not run: ${(error as Error).message}`;
  }
}

globalThis.addEventListener("unload", () => {
  if (rows.length === 0) return;
  const forced = forcedKernels();
  console.log(`\nadapter: ${gpuInfo.profile.name}${forced ? `, kernels forced: ${forced}` : ""}`);
  console.log(
    `peaks: copy ${peaks.copy.rate.toFixed(1)} GB/s, FMA ${peaks.fma.rate.toFixed(1)} GFLOP/s`,
  );
  // NumPy runs after every GPU case, so the two never share the CPU.
  const numpy = numpyTimes([...new Set(rows.flatMap((r) => r.numpy ? [r.numpy] : []))]);
  if (typeof numpy === "string") console.log(`NumPy column empty: ${numpy}`);
  console.log(
    "| case | ms per repetition | rate | % of peak | NumPy ms | ours / NumPy (rate) |\n|---|---|---|---|---|---|",
  );
  for (const r of rows) {
    const theirs = typeof numpy === "string" || !r.numpy ? undefined : numpy.get(r.numpy);
    const compared = theirs === undefined
      ? "| – | – |"
      : `| ${theirs.toFixed(3)} | ${(theirs / r.ms).toFixed(2)} |`;
    console.log(`| ${r.name} | ${r.ms.toFixed(3)} | ${r.rate} | ${r.share} ${compared}`);
  }
});

/**
 * The performance instruments: `MM_DEBUG` levels 1 to 4 print what engine/debug.ts documents, and
 * `MM_KERNELS` (or `withKernels`) picks kernel variants and rejects unknown names with the accepted
 * ones. The levels and `MM_KERNELS` are read once at startup, so those cases run a small script as a
 * subprocess and read its stderr.
 */
import { gpu } from "../engine/device.ts";
import { parseTimingOptions } from "../engine/debug.ts";
import { recorderStats, synchronize, timeKernels, traceDispatches } from "../engine/recorder.ts";
import { tensor } from "../engine/tensor.ts";
import { KERNEL_VARIANTS, parseKernelChoices, withKernels } from "../engine/variants.ts";
import { attention } from "../kernels/attention.ts";
import { matmul } from "../kernels/matmul.ts";
import { softmax } from "../kernels/softmax.ts";
import { expectError, setup } from "./helpers.ts";

await setup();

const engine = new URL("../", import.meta.url).href;

/**
 * A product and a softmax submitted by flush() (it prints the readbacks so far), a softmax read
 * back, then one more softmax submitted after the last readback.
 */
const SCRIPT = `
import { initGpu } from "${engine}engine/device.ts";
import { flush, recorderStats } from "${engine}engine/recorder.ts";
import { tensor } from "${engine}engine/tensor.ts";
import { matmul } from "${engine}kernels/matmul.ts";
import { softmax } from "${engine}kernels/softmax.ts";
await initGpu();
const a = tensor(new Float32Array(8 * 12).fill(0.5), { shape: [8, 12] });
const b = tensor(new Float32Array(12 * 4).fill(0.25), { shape: [12, 4] });
const y = softmax(matmul(a, b));
flush();
console.log("readbacks after flush() " + recorderStats().readbacks);
const z = softmax(y);
console.log("value " + (await z.data())[0]);
softmax(z);
flush();
`;

interface Run {
  code: number;
  stdout: string;
  /** Lines of stderr starting with "[mm] ", without the prefix. */
  debug: string[];
  stderr: string;
}

async function runScript(env: Record<string, string>, script = SCRIPT): Promise<Run> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    env: { NO_COLOR: "1", MM_DEBUG: "", MM_KERNELS: "", MM_TIMING: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const stderr = text.decode(output.stderr);
  const debug = stderr.split("\n").filter((l) => l.startsWith("[mm] ")).map((l) => l.slice(5));
  const run = { code: output.code, stdout: text.decode(output.stdout), debug, stderr };
  if (run.code !== 0) throw new Error(`script exited ${run.code}: ${stderr}`);
  if (script === SCRIPT && !run.stdout.includes("value 0.25")) throw new Error(`wrong result: ${run.stdout}`);
  return run;
}

const DISPATCH = /^(\w+) wg=\(\d+,\d+,\d+\) bytes=\d+$/;
const dispatchLines = (run: Run) => run.debug.filter((l) => DISPATCH.test(l));

function expect(condition: boolean, what: string, run: Run): void {
  if (!condition) throw new Error(`${what}; stderr:\n${run.stderr}`);
}

Deno.test("MM_DEBUG=1 lists every dispatch with its variant, and nothing else", async () => {
  const run = await runScript({ MM_DEBUG: "1" });
  const kernels = dispatchLines(run).map((l) => l.match(DISPATCH)![1]);
  expect(kernels.length === 4 && run.debug.length === 4, "four dispatch lines", run);
  expect(
    /^matmul_(tiled128|tiled64|tiled32|direct|texel|texel_narrow)$/.test(kernels[0]),
    "matmul with its variant",
    run,
  );
  expect(/^softmax_rows_(tree|serial|texel)$/.test(kernels[1]), "softmax with its variant", run);
  expect(kernels[2] === kernels[1] && kernels[3] === kernels[1], "softmax thrice", run);
  const quiet = await runScript({});
  expect(quiet.debug.length === 0, "no debug output without MM_DEBUG", quiet);
});

Deno.test("MM_DEBUG=2 adds one line per submit: dispatches, bytes bound, pipelines created", async () => {
  const run = await runScript({ MM_DEBUG: "2" });
  const submits = run.debug.filter((l) => l.startsWith("submit "));
  const pattern =
    /^submit \d+ \(([a-z ]+)\): (\d+) dispatches, [\d.]+ k?M?G?B bound, (\d+) pipelines created$/;
  expect(submits.every((l) => pattern.test(l)), "submit lines in the documented format", run);
  const fields = submits.map((l) => l.match(pattern)!);
  const dispatches = fields.reduce((sum, f) => sum + Number(f[2]), 0);
  const pipelines = fields.reduce((sum, f) => sum + Number(f[3]), 0);
  expect(dispatches === 4 && pipelines === 2, "4 dispatches and 2 pipelines over the submits", run);
  expect(fields.map((f) => f[1]).join() === "flush,readback,flush", "a submit per flush and readback", run);
  expect(dispatchLines(run).length === 4, "level 1 lines too", run);
});

Deno.test("MM_DEBUG=3 prints each new pipeline's WGSL with its creation time", async () => {
  const run = await runScript({ MM_DEBUG: "3" });
  const headers = run.debug.filter((l) => /^pipeline \d+ \w+, created in [\d.]+ ms:$/.test(l));
  expect(headers.length === 2, "two pipeline headers", run);
  expect(
    run.stderr.includes("@compute @workgroup_size") && run.stderr.includes("struct Params"),
    "WGSL",
    run,
  );
});

/** The rows of the level-4 table: kernel -> count. */
function tableRows(run: Run): { title: string; rows: Map<string, number>; notes: string[] } {
  const at = run.debug.findIndex((l) => l.startsWith("kernel times, "));
  expect(at >= 0 && /^kernel +count +total ms +mean ms +share$/.test(run.debug[at + 1]), "a table", run);
  const rows = new Map<string, number>(), notes: string[] = [];
  for (const line of run.debug.slice(at + 2)) {
    const m = line.match(/^(\w+) +(\d+) +[\d.]+ +[\d.]+ +[\d.]+%$/);
    if (m) rows.set(m[1], Number(m[2]));
    else notes.push(line);
  }
  return { title: run.debug[at], rows, notes };
}

Deno.test("MM_DEBUG=4 times every kernel and prints a table at exit, without a readback inside the work", async () => {
  const run = await runScript({ MM_DEBUG: "4" });
  expect(run.stdout.includes("readbacks after flush() 0"), "no readback before the program's own", run);
  const { title, rows } = tableRows(run);
  const timestamps = title.includes("GPU timestamps (one compute pass per dispatch)");
  const host = title.includes("serialised host timing: includes per-submit overhead");
  expect(timestamps || host, "a label", run);
  const kernels = dispatchLines(run).map((l) => l.match(DISPATCH)![1]);
  // With timestamps every dispatch is timed, even the softmax submitted after the last readback (read
  // in a last wait at exit); host timing times the softmax submitted by the readback.
  const [matmuls, softmaxes] = timestamps ? [1, 3] : [undefined, 1];
  expect(rows.get(kernels[0]) === matmuls && rows.get(kernels[1]) === softmaxes, "a row per kernel", run);
});

Deno.test("MM_TIMING=host times each dispatch alone inside the program's waits", async () => {
  const run = await runScript({ MM_DEBUG: "4", MM_TIMING: "host" });
  const { title, rows, notes } = tableRows(run);
  expect(title.includes("serialised host timing: includes per-submit overhead"), "the host label", run);
  const kernels = dispatchLines(run).map((l) => l.match(DISPATCH)![1]);
  expect(rows.size === 1 && rows.get(kernels[2]) === 1, "the softmax submitted by the readback", run);
  expect(notes.some((n) => n.startsWith("3 dispatches not timed")), "the flushed ones reported untimed", run);
});

Deno.test("MM_TIMING=grid gives a row per kernel and workgroup grid; an unknown option is an error", async () => {
  const run = await runScript({ MM_DEBUG: "4", MM_TIMING: "grid" });
  const at = run.debug.findIndex((l) => l.startsWith("kernel times, "));
  expect(at >= 0, "a table", run);
  const grids = new Map<string, number>();
  for (const line of run.debug.slice(at + 2)) {
    const m = line.match(/^(\w+ \d+x\d+x\d+) +(\d+) +[\d.]+ +[\d.]+ +[\d.]+%$/);
    if (m) grids.set(m[1], Number(m[2]));
  }
  // The dispatch lines give each kernel's grid: wg=(x,y,z).
  const dispatches = dispatchLines(run).map((l) => {
    const [, kernel, x, y, z] = l.match(/^(\w+) wg=\((\d+),(\d+),(\d+)\)/)!;
    return `${kernel} ${x}x${y}x${z}`;
  });
  expect(grids.size > 0 && [...grids.keys()].every((g) => dispatches.includes(g)), "rows named by grid", run);
  const timed = [...grids.values()].reduce((sum, n) => sum + n, 0);
  const timestamps = run.debug[at].includes("GPU timestamps");
  expect(timed === (timestamps ? 4 : 1), "every timed dispatch in a grid row", run);
  expect(parseTimingOptions("grid, host").size === 2, "options combine", run);
  expectError(
    () => parseTimingOptions("host,bogus"),
    'MM_TIMING: unknown option "bogus"; accepted: host, grid',
  );
});

Deno.test("a pipeline compiled for a dispatch that fills the uniform ring counts in the submit that runs it", async () => {
  const script = `
import { initGpu } from "${engine}engine/device.ts";
import { synchronize } from "${engine}engine/recorder.ts";
import { tensor } from "${engine}engine/tensor.ts";
import { exp, scale } from "${engine}kernels/elementwise.ts";
await initGpu();
let y = tensor(new Float32Array(16).fill(0.001));
for (let i = 0; i < 4096; i++) y = scale(y, 1);
exp(y);
await synchronize();
`;
  const run = await runScript({ MM_DEBUG: "2" }, script);
  const submits = run.debug.filter((l) => l.startsWith("submit "));
  expect(
    /uniform ring full\): 4096 dispatches, .* 1 pipelines created$/.test(submits[0]) &&
      /\(synchronize\): 1 dispatches, .* 1 pipelines created$/.test(submits[1]),
    "scale's pipeline in the first submit, exp's in the second",
    run,
  );
});

Deno.test("the bytes bound count each range once and a texture operand as the range copied into it", async () => {
  const a = tensor(new Float32Array(64 * 32).fill(1), { shape: [64, 32] });
  const b = tensor(new Float32Array(32 * 48).fill(1), { shape: [32, 48] });
  // A, B and C: matmul without a bias binds A again in the bias's place, which is the same memory.
  const expected = (64 * 32 + 32 * 48 + 64 * 48) * 4;
  for (const variant of ["direct", "texel"]) {
    const { dispatches } = await withKernels(`matmul:${variant}`, () => traceDispatches(() => matmul(a, b)));
    if (dispatches.length !== 1 || dispatches[0].bytes !== expected) {
      throw new Error(`matmul:${variant}: ${JSON.stringify(dispatches)}, expected ${expected} bytes`);
    }
  }
});

Deno.test("timeKernels sums the GPU time of the work's own dispatches, with one readback", async () => {
  const a = tensor(new Float32Array(64 * 48).fill(0.5), { shape: [64, 48] });
  const b = tensor(new Float32Array(48 * 40).fill(0.25), { shape: [48, 40] });
  matmul(a, b); // recorded before: submitted first and not counted
  const before = recorderStats();
  const times = await timeKernels(() => {
    for (let i = 0; i < 3; i++) softmax(matmul(a, b));
  });
  const readbacks = recorderStats().readbacks - before.readbacks;
  if (!gpu().device.features.has("timestamp-query")) {
    if (times !== null) throw new Error("times without timestamp-query");
    return;
  }
  if (!times) throw new Error("no times although the device has timestamp-query");
  const counts = [...times.byKernel.values()].map((k) => k.count);
  const sum = [...times.byKernel.values()].reduce((s, k) => s + k.ms, 0);
  if (
    times.dispatches !== 6 || counts.join() !== "3,3" || !(times.totalMs > 0) ||
    Math.abs(sum - times.totalMs) > 1e-9
  ) {
    throw new Error(`times: ${JSON.stringify({ ...times, byKernel: [...times.byKernel] })}`);
  }
  if (readbacks !== 1) throw new Error(`${readbacks} readbacks`);
  // Afterwards dispatches run untimed again, in the shared compute pass.
  matmul(a, b);
  await synchronize();
});

Deno.test("MM_KERNELS picks the variants, in kernel names", async () => {
  const run = await runScript({ MM_DEBUG: "1", MM_KERNELS: "matmul:tiled32, rows:tree" });
  const kernels = dispatchLines(run).map((l) => l.match(DISPATCH)![1]);
  expect(kernels.join() === `matmul_tiled32${",softmax_rows_tree".repeat(3)}`, "forced variants", run);
});

Deno.test("withKernels forces variants in code and restores the automatic choice", async () => {
  const q = tensor(new Float32Array(2 * 5 * 4), { shape: [1, 2, 5, 4] });
  const a = tensor(new Float32Array(6), { shape: [2, 3] }),
    b = tensor(new Float32Array(12), { shape: [3, 4] });
  const names = () =>
    traceDispatches(() => [matmul(a, b), softmax(a), attention(q, q, q)]).dispatches.map((d) => d.kernel);
  const automatic = names();
  const forced = await withKernels("matmul:tiled64,rows:serial,attention:tiled_small", names);
  if (forced.join() !== "matmul_tiled64,softmax_rows_serial,attention_forward_tiled_small") {
    throw new Error(`forced: ${forced}`);
  }
  if (names().join() !== automatic.join()) throw new Error(`not restored: ${names()} after ${automatic}`);
});

Deno.test("unknown families and variants are errors that list the accepted names", async () => {
  const families = Object.entries(KERNEL_VARIANTS).map(([f, v]) => `${f} (${Object.keys(v).join(", ")})`);
  const cases: [string, string][] = [
    [
      "matmul:tiled256",
      'MM_KERNELS: unknown variant "tiled256" of matmul in "matmul:tiled256"; accepted: ' +
      "tiled128, tiled64, tiled32, direct, texel, texel_narrow",
    ],
    [
      "matmul",
      'MM_KERNELS: unknown variant "" of matmul in "matmul"; accepted: tiled128, tiled64, tiled32, direct, texel, texel_narrow',
    ],
    [
      "softmax:tree",
      `MM_KERNELS: unknown kernel family "softmax" in "softmax:tree"; families: ${families.join(", ")}`,
    ],
  ];
  for (const [spec, message] of cases) {
    let thrown = "";
    try {
      parseKernelChoices(spec);
    } catch (e) {
      thrown = (e as Error).message;
    }
    if (thrown !== message) throw new Error(`${spec}: ${thrown}`);
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", SCRIPT],
    env: { NO_COLOR: "1", MM_KERNELS: "attention:tiles" },
    stderr: "piped",
    stdout: "null",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  const expected =
    'unknown variant "tiles" of attention in "attention:tiles"; accepted: tiled, tiled_small, rows, texel';
  if (output.code === 0 || !stderr.includes(expected)) throw new Error(`exit ${output.code}: ${stderr}`);
});

/**
 * Three budget trims at each level-4 timer: during a readback's drain (host timing must not lose the
 * buffers its held-back work reads), when the timestamps' resolve would need the last bytes of the
 * budget (a staged upload must not be lost), and for a new upload staging chunk.
 */
const BUDGET_SCRIPT = `
import { initGpu } from "${engine}engine/device.ts";
import { Arena } from "${engine}engine/arena.ts";
import { poolStats, setMemoryBudget } from "${engine}engine/pool.ts";
import { readAll, tensor, writeTensor, zeros } from "${engine}engine/tensor.ts";
import { add, mul } from "${engine}kernels/elementwise.ts";
await initGpu();
const a = tensor(Float32Array.from({ length: 4096 }, (_, i) => i));
const pending = readAll([add(a, a)]);
const t = mul(a, a);
const t2 = add(t, a);
t.dispose();
setMemoryBudget(poolStats().liveBytes + 3 * 4096 * 4 - 8192);
// Host timing's drain holds back work that reads t's free buffer: nothing is trimmed, so this is refused.
try {
  tensor(new Float32Array(3 * 4096).fill(1));
} catch (error) {
  console.log("refused " + (error as Error).message.slice(0, 16));
}
setMemoryBudget(null);
await pending;
console.log("drain " + (await readAll([t2]))[0][2]);
// Once host timing is calibrated, a drain takes its queue at once: the same again, then an arena freed.
const u = mul(a, a);
const u2 = add(u, a);
u.dispose();
const again = readAll([u2]);
setMemoryBudget(poolStats().liveBytes + 3 * 4096 * 4 - 8192);
try {
  tensor(new Float32Array(3 * 4096).fill(1));
} catch {
  // refused under host timing, as above
}
setMemoryBudget(null);
await again;
console.log("second drain " + (await readAll([u2]))[0][2]);
const arena = new Arena([[4096]], "freed");
const p = arena.parameterTensor(0);
writeTensor(p, new Float32Array(4096).fill(3));
const doubled = add(p, p);
const read = readAll([doubled]);
arena.destroy();
await read;
console.log("arena " + (await readAll([doubled]))[0][0]);
let x = tensor(Float32Array.from({ length: 4096 }, (_, i) => i));
for (let i = 0; i < 41; i++) {
  const next = add(x, tensor(new Float32Array(4096).fill(1)));
  x.dispose();
  x = next;
}
setMemoryBudget(poolStats().liveBytes + 100);
tensor(new Float32Array(64).fill(1));
setMemoryBudget(null);
console.log("uploads " + (await readAll([x]))[0][1]);
const target = zeros([100000]);
zeros([1 << 20]).dispose();
setMemoryBudget(poolStats().liveBytes + 1000);
writeTensor(target, new Float32Array(100000).fill(7));
setMemoryBudget(null);
console.log("staging " + (await readAll([target]))[0][99999]);
`;

Deno.test("a memory budget's trims lose no recorded work at any timing level", async () => {
  const levels: Record<string, string>[] = [{}, { MM_DEBUG: "4" }, { MM_DEBUG: "4", MM_TIMING: "host" }];
  for (const env of levels) {
    const run = await runScript(env, BUDGET_SCRIPT);
    expect(
      run.stdout.includes("drain 6") && run.stdout.includes("second drain 6") &&
        run.stdout.includes("arena 6") &&
        run.stdout.includes("uploads 42") &&
        run.stdout.includes("staging 7") && run.stdout.includes("refused") === (env.MM_TIMING === "host") &&
        !run.stderr.includes("WebGPU error"),
      `results under ${JSON.stringify(env)}: ${run.stdout}`,
      run,
    );
  }
});

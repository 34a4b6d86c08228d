/**
 * The Deno half of the side-by-side benchmark (`bash bench/gpu/run.sh` runs both halves).
 *
 *     deno run --allow-read --allow-write --allow-env bench/gpu/ours.ts <folder> [--doc docs/PERFORMANCE.md]
 *     deno run --allow-read --allow-env bench/gpu/ours.ts --dry-run
 *
 * With a folder written by torch_side.py it checks every workload against PyTorch's outputs before
 * anything is timed, naming each workload and tensor off its tolerance; then it times every workload
 * that passed (none that failed), prints the table of ours / PyTorch with the targets (failed rows
 * marked) and, with `--doc`, writes it into that file's results section. A failed check, a workload
 * that failed on PyTorch's side or in its timing makes the exit status 1. `--dry-run` needs no folder
 * and no PyTorch: the tiny shapes, expected values from float64 references (standalone runs for the
 * models), a few repetitions - the code path of every workload on whatever adapter there is, not a
 * measurement.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { gpu } from "../../engine/device.ts";
import { Random } from "../../engine/random.ts";
import { openGpuOrExit } from "../../engine/start.ts";
import { readAll, tensor, tidy } from "../../engine/tensor.ts";
import { attention } from "../../kernels/attention.ts";
import { computedSource, describeFailure, folderSource, passes, type Source } from "./check.ts";
import { type Size, workloads } from "./inputs.ts";
import { attentionWorkload, chainWorkload, layerNormWorkload, matmulWorkload } from "./kernel_workloads.ts";
import { modelsWorkload } from "./model_workloads.ts";
import { optimizerWorkload } from "./optimizer_workload.ts";
import { markdownTable, profileTable, replaceResults, tableRows, type Times, verdictLine } from "./report.ts";
import { DRY_TIMING, FULL_TIMING, type Measurement } from "./timing.ts";
import type { Workload } from "./workload.ts";

const NAME = "bench/gpu/ours.ts";

/** Workgroup memory of the software adapter, where the attention kernels' tiles were verified. */
const VERIFIED_TILE_BYTES = 32 * 1024;

/**
 * The attention kernels take their tiles from the card's workgroup memory (48 KiB and more on NVIDIA):
 * shapes that the software adapter, where every kernel was verified, never runs at head dimension 64.
 * Before any check, one causal case runs forward and backward with the card's tiles and with the
 * verified ones; where they disagree, the whole run keeps the verified tiles. Returns what the
 * results' header says about it ("" on a card with no more than the verified memory).
 */
async function checkAttentionTiles(): Promise<string> {
  const profile = gpu().profile as { workgroupMemoryBytes: number };
  const own = profile.workgroupMemoryBytes;
  if (own <= VERIFIED_TILE_BYTES) return "";
  const shape = [2, 2, 96, 64];
  const random = new Random(20261201);
  const values = () => Float32Array.from({ length: 2 * 2 * 96 * 64 }, () => random.uniform() * 2 - 1);
  const [q0, k0, v0, g0] = [values(), values(), values(), values()];
  const outputs = async () => {
    const inputs = [q0, k0, v0].map((data) => tensor(data, { shape, requiresGrad: true }));
    // Forward and backward in one scope: the forward's saved statistics live until the backward is recorded.
    const out = tidy(() => {
      const y = attention(inputs[0], inputs[1], inputs[2], { causal: true });
      y.backward(tensor(g0, { shape }));
      return y;
    });
    const read = await readAll([out, ...inputs.map((t) => t.grad!)]);
    [out, ...inputs].forEach((t) => t.dispose());
    return read;
  };
  const card = await outputs();
  profile.workgroupMemoryBytes = VERIFIED_TILE_BYTES;
  const verified = await outputs();
  const difference = Math.max(
    ...card.map((a, i) => {
      const b = verified[i];
      const scale = Math.max(...Array.from(b, Math.abs));
      return Math.max(...Array.from(a, (v, j) => Math.abs(v - b[j]))) / scale;
    }),
  );
  const kib = `${own / 1024} KiB`;
  if (difference <= 1e-4) {
    profile.workgroupMemoryBytes = own;
    return ` The card's own attention tiles (for ${kib} of workgroup memory) matched the 32 KiB tiles verified ` +
      `on the software adapter on a check case (largest relative difference ${difference.toExponential(1)}).`;
  }
  console.error(`${NAME}: the attention tiles for ${kib} differ from the verified ones by ${difference}`);
  return ` Attention ran with the 32 KiB tiles verified on the software adapter: the card's own (for ${kib}) ` +
    `differed from them by ${difference.toExponential(1)} (relative) on a check case.`;
}

/** Prints `bench/gpu/ours.ts: message (try --help)` as one line and exits with status 2, as the tasks do. */
function exitWithUsageError(message: string): never {
  console.error(`${NAME}: ${message.replaceAll("\n", " ")} (try --help)`);
  Deno.exit(2);
}

/** What `--json` records: every measurement and the run's facts; `--results` renders one again. */
interface RunRecord {
  date: string;
  adapter: string;
  deno: string;
  size: Size;
  measurements: Measurement[];
  failures: string[];
  failedIds: string[];
  tileNote: string;
  torch: TorchRun | null;
  command: string;
}

/**
 * Prints the results' header, table and kernel profile of a run and, with `--doc`, writes them into
 * that page. `cut` is said in the header when the record is of a run that did not finish.
 */
async function renderResults(run: RunRecord, cut = ""): Promise<void> {
  const { measurements, failedIds, torch: torchRun, size, date, adapter, tileNote, deno, command } = run;
  const w = workloads(size);
  const ours: Times = new Map(measurements.map((m) => [m.id, m.ms]));
  const torchTimes: Times | null = torchRun
    ? new Map(Object.entries(torchRun.timings).map(([id, t]) => [id, t.ms]))
    : null;
  const rows = tableRows(w, ours, torchTimes, torchRun?.optimizer ?? "PyTorch AdamW", failedIds).filter((r) =>
    r.ours !== null || r.failed
  );
  const judged = size === "full";
  const table = markdownTable(rows, judged);
  const notTimed = failedIds.length === 0
    ? ""
    : ` ${failedIds.length} workload(s) failed (their check, PyTorch's side or their timing) and have no ` +
      `time: ${failedIds.join(", ")} (the run's log names each error).`;
  const verdict = verdictLine(rows, judged);
  const header = torchRun
    ? `Run of ${date}: **${torchRun.card}** (driver ${torchRun.driver}), WebGPU adapter "${adapter}", ` +
      `Deno ${deno}; PyTorch ${torchRun.torch} on ${torchRun.device} (TF32 off), transformers ` +
      `${torchRun.transformers}; ${size} shapes. Command: \`${command}\`. Every timed workload below passed its ` +
      `check against PyTorch before it was timed.${notTimed}${tileNote}${cut} ${verdict}`
    : `Dry run of ${date} on "${adapter}", Deno ${deno}: checked against float64 ` +
      `references (the models against standalone runs), a few repetitions each.${notTimed}${cut} ${verdict}`;
  const profiled = Math.min(...measurements.map((m) => m.gpu?.reps ?? Infinity));
  const profile = `### Where the time goes\n\n` +
    (measurements.some((m) => m.gpu)
      ? `The GPU time of each measurement's kernels from timestamp queries (\`timeKernels\`, the measure of ` +
        `\`MM_DEBUG=4\`), over ${
          profiled === 1 ? "one further repetition" : `${profiled} or more further repetitions`
        } ` +
        `in which each dispatch runs in a compute pass of its own. "GPU busy" is that time over the wall time ` +
        `above: well below 100% means that recording, submission or gaps between kernels bound the row, not ` +
        `the kernels.`
      : `The adapter has no timestamp queries: no GPU time per kernel.`) +
    `\n\n${profileTable(measurements)}`;
  console.log(`\n${header}\n\n${table}\n\n${profile}`);

  if (flags.doc) {
    const doc = await Deno.readTextFile(flags.doc);
    await Deno.writeTextFile(
      flags.doc,
      replaceResults(doc, `${header}\n\n${table}\n\n${profile}`, flags.doc),
    );
    console.log(`\nwrote the results into ${flags.doc}`);
  }
}

/** What torch_side.py records in `torch.json`. */
interface TorchRun {
  size: Size;
  device: string;
  card: string;
  driver: string;
  torch: string;
  transformers: string;
  optimizer: string;
  date: string;
  timings: Record<string, { ms: number }>;
  /** Workloads that failed on PyTorch's side (skipped there), with their errors. */
  failed?: Record<string, string>;
}

const { values: flags, positionals } = (() => {
  try {
    return parseArgs({
      args: Deno.args,
      options: {
        "dry-run": { type: "boolean", default: false },
        only: { type: "string", default: "" },
        doc: { type: "string", default: "" },
        json: { type: "string", default: "" },
        results: { type: "string", default: "" },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: true,
    });
  } catch (error) {
    exitWithUsageError((error as Error).message.split("\n")[0]);
  }
})();

if (flags.help) {
  console.log(
    `usage: deno run --allow-read --allow-write --allow-env ${NAME} (<folder> | --dry-run) [options]\n\n` +
      "Checks our kernels, optimizer and models against PyTorch's outputs in <folder> (written by\n" +
      "bench/gpu/torch_side.py), then times them and prints ours / PyTorch against the targets.\n\n" +
      "options:\n" +
      "  --dry-run      tiny shapes, float64 references, no folder: runs every code path\n" +
      "  --only LIST    comma-separated prefixes of workload ids (matmul, attention/T512, model/small...)\n" +
      "  --doc PATH     write the table into the results section of PATH (docs/PERFORMANCE.md)\n" +
      "  --json PATH    write every measurement and PyTorch's run record as JSON\n" +
      "  --results PATH print (and with --doc write) the results of that JSON again, no GPU needed\n" +
      "  -h, --help     print this help and exit",
  );
  Deno.exit(0);
}
if (flags.results) {
  // A run stopped by its time limit still wrote its JSON after each workload: its table can be rebuilt.
  if (positionals.length > 0 || flags["dry-run"]) {
    exitWithUsageError("--results takes no folder and no --dry-run");
  }
  const saved: RunRecord = JSON.parse(await Deno.readTextFile(flags.results));
  await renderResults(
    saved,
    ` Rebuilt from the run's results.json: a workload it had not timed when it stopped has no row.`,
  );
  Deno.exit(0);
}
const dryRun = flags["dry-run"];
if (dryRun === (positionals.length === 1) || positionals.length > 1) {
  exitWithUsageError("give either one folder written by torch_side.py or --dry-run");
}
if (dryRun && flags.doc) exitWithUsageError("--doc needs PyTorch's figures; a dry run has none");

const folder = positionals[0] ?? null;
let torchRun: TorchRun | null = null;
if (folder) {
  const path = `${folder}/torch.json`;
  try {
    torchRun = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    exitWithUsageError(`${path}: ${(error as Error).message} (run torch_side.py first)`);
  }
}
const size: Size = torchRun?.size ?? "tiny";
const w = workloads(size);
const filters = flags.only ? flags.only.split(",").filter((f) => f !== "") : [];
const selected = (id: string) => filters.length === 0 || filters.some((f) => id.startsWith(f));

const gpuInfo = await openGpuOrExit();
if (size === "full" && gpuInfo.profile.isSoftware) {
  // Full-size shapes on a software adapter would take hours and measure nothing worth a table.
  console.error(`${NAME}: "${gpuInfo.profile.name}" is a software adapter; full-size shapes need a GPU`);
  Deno.exit(1);
}
const tileNote = await checkAttentionTiles();
const source: Source = folder ? folderSource(folder) : computedSource();

const makers: (readonly [string, () => Workload | Promise<Workload>])[] = [
  ...w.matmul.map((m) => [`matmul/${m.id}`, () => matmulWorkload(m, source)] as const),
  ...w.attention.cases.map((c) =>
    [`attention/${c.id}`, () => attentionWorkload(w.attention, c, source)] as const
  ),
  ["layernorm", () => layerNormWorkload(w.layernorm, source)],
  ["chain", () => chainWorkload(w.chain, source)],
  ["optimizer", () => optimizerWorkload(w.optimizer, source)],
  ...w.models.sizes.map((s) => [`model/${s.id}`, () => modelsWorkload(s, w.models, source)] as const),
];
const chosen = makers.filter(([id]) => selected(id));
if (chosen.length === 0) exitWithUsageError(`--only ${flags.only} selects no workload`);

// Every check runs before anything is timed: a workload that fails its check is never timed. The
// others still are, so that one wrong kernel does not cost a rare GPU run all its figures; the run
// then ends with status 1 and its table marks the failed rows.
console.log(`checking ${chosen.length} workloads (${size} shapes) against ${source.label}`);
const passed: [string, Workload][] = [];
const failedIds: string[] = [];
const failures: string[] = [];
for (const [id, make] of chosen) {
  const torchFailure = torchRun?.failed?.[id];
  if (torchFailure) {
    failures.push(`${id}: PyTorch's side failed, so there is no reference: ${torchFailure}`);
    failedIds.push(id);
    console.log(`FAIL ${id}: PyTorch's side failed (${torchFailure})`);
    continue;
  }
  let workload: Workload | null = null;
  try {
    workload = await make();
    const comparisons = await workload.check();
    const worst = comparisons.reduce((a, b) => (b.error / b.tolerance > a.error / a.tolerance ? b : a));
    const failed = comparisons.filter((c) => !passes(c));
    failures.push(...failed.map(describeFailure));
    console.log(
      `${failed.length ? "FAIL" : "ok  "} ${id}: ${comparisons.length} tensors, worst ${worst.tensor} ` +
        `${worst.error.toExponential(1)} (tolerance ${worst.tolerance.toExponential(0)})`,
    );
    if (failed.length === 0) passed.push([id, workload]);
    else failedIds.push(id);
  } catch (error) {
    failures.push(`${id}: ${(error as Error).message}`);
    failedIds.push(id);
    console.log(`FAIL ${id}: ${(error as Error).message}`);
  }
  if (workload && !passed.some(([, w]) => w === workload)) workload.dispose();
}
for (const failure of failures) console.error(`${NAME}: check failed: ${failure}`);
if (passed.length === 0) {
  console.error(`${NAME}: ${failures.length} check(s) failed; nothing was timed`);
  Deno.exit(1);
}
if (failedIds.length > 0) {
  console.error(`${NAME}: not timed (failed above): ${failedIds.join(", ")}; timing the others`);
}

const timing = size === "full" ? FULL_TIMING : DRY_TIMING;
const measurements: Measurement[] = [];
const date = new Date().toISOString().slice(0, 10);
/** Writes `--json` with every measurement so far: after each workload, so a run cut short keeps them. */
function record(): RunRecord {
  return {
    date,
    adapter: gpuInfo.profile.name,
    deno: Deno.version.deno,
    size,
    measurements,
    failures,
    failedIds,
    tileNote,
    torch: torchRun,
    command: Deno.env.get("BENCH_GPU_COMMAND") ?? `deno run ... ${NAME} ${Deno.args.join(" ")}`,
  };
}
async function writeJson(): Promise<void> {
  if (!flags.json) return;
  await Deno.writeTextFile(flags.json, JSON.stringify(record(), null, 2) + "\n");
}
for (const [id, workload] of passed) {
  try {
    const measured = await workload.time(timing);
    for (const m of measured) console.log(`timed ${m.id}: ${m.ms.toFixed(3)} ms (${m.reps} reps)`);
    measurements.push(...measured);
  } catch (error) {
    failures.push(`${id}: timing failed: ${(error as Error).message}`);
    failedIds.push(id);
    console.error(`${NAME}: timing ${id} failed: ${(error as Error).message}`);
  }
  workload.dispose();
  await writeJson();
}

await renderResults(record());
await writeJson();
if (failedIds.length > 0) Deno.exit(1);

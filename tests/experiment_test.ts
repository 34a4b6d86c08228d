/**
 * `deno task experiment` end to end at a tiny scale: the runner trains the grid, the main
 * comparison and the compute cases, appends one line per run, resumes without repeating a run,
 * and the report is written from the lines.
 */
import { type ExperimentScale, SCALES } from "../experiment/protocol.ts";
import { writeResults } from "../experiment/report.ts";
import { chooseRates, readRuns, runExperiment } from "../experiment/runner.ts";
import { gpu } from "../engine/device.ts";
import { setup } from "./helpers.ts";

await setup();

const TINY: ExperimentScale = {
  ...SCALES.quick,
  seeds: [1, 2],
  lrGrid: [1e-3, 3e-3],
  size: { hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 },
  steps: { default: 4 },
  evaluations: 2,
  evalLimit: 16,
  vocabSize: 300,
  limit: 32,
  groups: new Set(["grid", "main", "compute"]),
  compute: { steps: 2, repeats: 1 },
};

Deno.test("the runner appends a line per run, resumes without repeating one, and the report is written", async () => {
  const folder = await Deno.makeTempDir({ prefix: "experiment-" });
  const settings = {
    resultsFile: `${folder}/runs.jsonl`,
    workFolder: `${folder}/work`,
    command: "test",
    info: () => {},
  };
  const runs = await runExperiment(TINY, settings);
  const keys = runs.map((r) => r.key);
  // 2 rates x 2 conditions in the grid, 2 seeds x 2 conditions in the main comparison, 3 compute cases.
  if (runs.length !== 4 + 4 + 3 || new Set(keys).size !== keys.length) {
    throw new Error(`runs: ${keys.join(" ")}`);
  }
  for (const run of runs.filter((r) => r.group !== "compute")) {
    if (run.curve.length === 0 || !(run.final.bert.validation.accuracy >= 0)) {
      throw new Error(`${run.key}: ${JSON.stringify(run)}`);
    }
  }
  for (const run of runs.filter((r) => r.group === "compute")) {
    // The GPU time comes from timestamp queries on adapters that have them (llvmpipe does).
    // Each part is timed alone, so none can come out negative as a difference of two loops could.
    const { stepMs, forwardBackwardMs, optimizerMs, gpuMs } = run.timing!;
    const timestamps = gpu().device.features.has("timestamp-query");
    const parts = [stepMs, forwardBackwardMs, optimizerMs];
    if (!parts.every((ms) => ms > 0) || (timestamps ? !(gpuMs! > 0) : gpuMs !== undefined)) {
      throw new Error(`${run.key}: timing ${JSON.stringify(run.timing)}`);
    }
  }
  const rates = chooseRates(runs);
  if (![1e-3, 3e-3].includes(rates.get("sentiment/joint")!)) throw new Error(`rates ${[...rates]}`);
  const again = await runExperiment(TINY, settings);
  if (again.length !== runs.length) throw new Error("a resumed experiment repeated runs");
  await writeResults(folder, await readRuns(settings.resultsFile), {
    command: "test",
    runsFile: "results/runs.jsonl",
    adapter: runs[0].adapter,
    date: "2026-11-30",
    durationSeconds: 1,
  });
  const results = await Deno.readTextFile(`${folder}/RESULTS.md`);
  if (gpu().device.features.has("timestamp-query") && results.includes("not measured")) {
    throw new Error("Table 3 lacks the GPU time");
  }
  for (const needed of ["Table 1", "Table 3"]) {
    if (!results.includes(needed)) throw new Error(`RESULTS.md lacks "${needed}"`);
  }
  await Deno.remove(folder, { recursive: true });
});

Deno.test("pretraining is not repeated once every pretrained run is in the results file", async () => {
  const folder = await Deno.makeTempDir({ prefix: "experiment-" });
  const lines: string[] = [];
  const settings = {
    resultsFile: `${folder}/runs.jsonl`,
    workFolder: `${folder}/work`,
    command: "test",
    info: (line: string) => lines.push(line),
  };
  const scale: ExperimentScale = { ...TINY, seeds: [1], groups: new Set(["pretrained"]), pretrainSteps: 2 };
  const runs = await runExperiment(scale, settings);
  if (runs.length !== 2 || !lines.some((l) => l.startsWith("pretraining"))) {
    throw new Error(`first run: ${runs.map((r) => r.key)}; ${lines.join(" | ")}`);
  }
  // The work folder of a finished experiment may be gone (another machine, a clean-up).
  await Deno.remove(settings.workFolder, { recursive: true });
  lines.length = 0;
  const again = await runExperiment(scale, settings);
  if (again.length !== 2 || lines.length > 0) throw new Error(`second run: ${lines.join(" | ")}`);
  await Deno.remove(folder, { recursive: true });
});

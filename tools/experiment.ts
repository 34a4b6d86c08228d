/**
 * `deno task experiment`: measures the seed's three claims (accuracy, speed of learning, compute) with
 * the protocol of experiment/protocol.ts, appending each run's results to
 * `<results>/results/runs.jsonl` as it goes (an interrupted experiment resumes; `runs-quick.jsonl`
 * and `runs-gpu.jsonl` for the other scales), then writes `<results>/RESULTS.md`; `<results>` is
 * `docs`, `runs/quick-experiment` with `--quick` and `docs/gpu` with `--preset gpu`. `--report` rebuilds the tables from the results file without training;
 * `--quick` runs a small version in minutes.
 *
 * @module
 */
import { metaFromRuns, writeResults } from "../experiment/report.ts";
import { SCALES } from "../experiment/protocol.ts";
import { readRuns, runExperiment } from "../experiment/runner.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";
import { openGpuOrExit } from "../engine/start.ts";
import { checkoutCommit } from "../train/checkout.ts";

const NAME = "experiment";

if (import.meta.main) {
  const { flags } = parseCommand({
    name: NAME,
    operands: "",
    positionals: [0, 0],
    summary:
      "Trains independent and joint models over seeds, ablations and a placebo, and writes docs/RESULTS.md.",
    flags: {
      quick: { type: "boolean", default: false, description: "2 seeds, few steps, sentiment only (minutes)" },
      preset: {
        type: "string",
        default: "cpu",
        value: "cpu|gpu",
        description: "sizes and budgets of the full protocol",
      },
      report: {
        type: "boolean",
        default: false,
        description: "rebuild docs/RESULTS.md from the results file, no training",
      },
      results: {
        type: "string",
        default: "per preset",
        value: "folder",
        description:
          "where RESULTS.md and results/ go (docs; --preset gpu: docs/gpu; --quick: runs/quick-experiment)",
      },
    },
  });
  if (flags.preset !== "cpu" && flags.preset !== "gpu") {
    exitWithUsageError(NAME, `unknown preset "${flags.preset}" (cpu, gpu)`);
  }
  const scale = SCALES[flags.quick ? "quick" : flags.preset];
  // Each scale has a folder of its own, so that a quick try never replaces the published results.
  const defaultFolder: Record<string, string> = {
    cpu: "docs",
    gpu: "docs/gpu",
    quick: "runs/quick-experiment",
  };
  const folder = flags.results === "per preset" ? defaultFolder[scale.name] : flags.results;
  // A file per scale, as run keys do not name the scale: runs of two scales in one folder never mix.
  const runsFile = `results/${scale.name === "cpu" ? "runs" : `runs-${scale.name}`}.jsonl`;
  const resultsFile = `${folder}/${runsFile}`;
  const command = `deno task experiment${
    flags.quick ? " --quick" : flags.preset === "gpu" ? " --preset gpu" : ""
  }${flags.results === "per preset" ? "" : ` --results ${flags.results}`}`;
  try {
    if (!flags.report) {
      await openGpuOrExit();
      await Deno.mkdir(`${folder}/results`, { recursive: true });
      await runExperiment(scale, {
        resultsFile,
        workFolder: `runs/experiment-${scale.name}`,
        command,
        info: (line) => console.error(line),
        commit: checkoutCommit(),
      });
    }
    // The run reported broken lines as it began; --report reports them here.
    const runs = await readRuns(resultsFile, flags.report ? (line) => console.error(line) : undefined);
    if (runs.length === 0) throw new Error(`${resultsFile} holds no runs; run ${command} first`);
    // The page depends on the run lines alone, so that --report rebuilds it exactly.
    await writeResults(folder, runs, metaFromRuns(runs, command, runsFile));
    console.log(`${runs.length} runs; results: ${folder}/RESULTS.md`);
  } catch (error) {
    console.error(`${NAME}: ${(error as Error).message}`);
    Deno.exit(1);
  }
}

/**
 * The commands behind `deno task` parse their flags strictly: `--help` lists every flag with its
 * default and exits 0; a bad flag, value or argument is one line on stderr (no stack trace) and exit
 * 2. Each case fails before WebGPU opens, so these run as fast subprocesses. And `deno task mutants`
 * still finds the text of each of its mutations.
 */
import { anchorCount } from "../tools/mutants.ts";
import { MUTATIONS } from "./mutants.ts";

const root = new URL("../", import.meta.url).pathname;

/** Every command with its flags as `--help` must list them (with their defaults). */
const COMMANDS: Record<string, string[]> = {
  demo: ["--steps <N>", "(default: 200)", "-h, --help"],
  describe: ["-t, --task <task>", "(default: auto)", "--batch <N>", "--length <N>", "--json", "-h, --help"],
  groups: ["--json", "-h, --help"],
  parity: ["-h, --help"],
};

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `tools/<command>.ts` with the permissions its `deno task` grants. */
async function run(command: string, ...args: string[]): Promise<Result> {
  return await runWith({}, command, ...args);
}

/** {@linkcode run} with more environment variables. */
async function runWith(env: Record<string, string>, command: string, ...args: string[]): Promise<Result> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", `tools/${command}.ts`, ...args],
    cwd: root,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: output.code, stdout: text.decode(output.stdout), stderr: text.decode(output.stderr) };
}

/** Throws unless the command exited `code` with exactly one stderr line, from it, containing `fragment`. */
function expectOneLine(result: Result, command: string, code: number, fragment: string): void {
  const where = `${command}: exit ${result.code}, stderr ${JSON.stringify(result.stderr)}`;
  if (result.code !== code) throw new Error(`${where}; expected exit ${code}`);
  const lines = result.stderr.trimEnd().split("\n");
  if (lines.length !== 1 || result.stderr.includes("Uncaught") || /\bat .*:\d+:\d+/.test(result.stderr)) {
    throw new Error(`${where}; expected one line without a stack trace`);
  }
  if (!lines[0].startsWith(`${command}: `) || !lines[0].includes(fragment)) {
    throw new Error(`${where}; expected "${command}: ...${fragment}..."`);
  }
  if (result.stdout !== "") {
    throw new Error(`${where}; expected no output, got ${JSON.stringify(result.stdout)}`);
  }
}

Deno.test("--help and -h list every flag with its default and exit 0", async () => {
  for (const [command, flags] of Object.entries(COMMANDS)) {
    for (const help of ["--help", "-h"]) {
      const result = await run(command, help);
      if (result.code !== 0) throw new Error(`${command} ${help}: exit ${result.code}: ${result.stderr}`);
      if (!result.stdout.startsWith(`usage: deno task ${command}`)) {
        throw new Error(`${command} ${help}: no usage line in ${JSON.stringify(result.stdout)}`);
      }
      for (const flag of flags) {
        if (!result.stdout.includes(flag)) throw new Error(`${command} ${help}: "${flag}" missing from help`);
      }
    }
  }
});

Deno.test("an unknown flag is one line and exit 2, for every command", async () => {
  for (const command of Object.keys(COMMANDS)) {
    // describe and parity get a valid positional too, so only the flag is wrong.
    const operand = command === "describe" ? ["bert"] : command === "parity" ? [root] : [];
    expectOneLine(await run(command, ...operand, "--foo"), command, 2, "unknown option --foo");
    expectOneLine(await run(command, ...operand, "-x"), command, 2, "unknown option -x");
  }
});

Deno.test("a missing or bad value, or a wrong number of arguments, is one line and exit 2", async () => {
  expectOneLine(
    await run("demo", "--steps", "abc"),
    "demo",
    2,
    '--steps must be a positive integer, got "abc"',
  );
  expectOneLine(await run("demo", "--steps", "0"), "demo", 2, '--steps must be a positive integer, got "0"');
  expectOneLine(await run("demo", "--steps"), "demo", 2, "option --steps needs a value");
  expectOneLine(await run("describe", "bert", "--task"), "describe", 2, "option --task needs a value");
  expectOneLine(await run("describe", "bert", "--json=yes"), "describe", 2, "option --json takes no value");
  expectOneLine(
    await run("describe"),
    "describe",
    2,
    "missing <config.json | folder | bert | gpt2 | roberta>",
  );
  expectOneLine(await run("describe", "bert", "gpt2"), "describe", 2, 'unexpected argument "gpt2"');
  expectOneLine(await run("groups", "bert"), "groups", 2, 'unexpected argument "bert"');
  expectOneLine(await run("parity"), "parity", 2, "missing <folder>...");
});

Deno.test("describe rejects an unknown task with the valid names, and a source it cannot read", async () => {
  expectOneLine(
    await run("describe", "bert", "--task", "foo"),
    "describe",
    2,
    'unknown task "foo"; valid: a head (base, sequence-classification, token-classification, ' +
      "question-answering, causal-lm, masked-lm) or a train task (sentiment, spam, ner, pos, qa, lm)",
  );
  expectOneLine(await run("describe", "/no/such/config.json"), "describe", 2, "/no/such/config.json");
});

Deno.test("describe and groups still print their metadata with valid flags", async () => {
  const described = await run("describe", "gpt2", "-t", "causal-lm", "--json");
  if (described.code !== 0) throw new Error(`describe: exit ${described.code}: ${described.stderr}`);
  const infos = JSON.parse(described.stdout) as { name: string }[];
  if (infos[0].name !== "transformer.wte.weight") throw new Error(`describe: first tensor ${infos[0].name}`);
  const memory = await run("describe", "gpt2", "--batch", "2", "--length", "16");
  if (!/activations \(batch 2 x 16\) +\d/.test(memory.stdout)) throw new Error(`describe: ${memory.stdout}`);
  // A Hugging Face folder; the default length is cut to the fixture's 40 positions, a given one is checked.
  const folder = await run("describe", "tests/fixtures/hf/bert");
  if (!/activations \(batch 1 x 40\) +\d/.test(folder.stdout)) throw new Error(`describe: ${folder.stdout}`);
  expectOneLine(
    await run("describe", "tests/fixtures/hf/bert", "--length", "64"),
    "describe",
    2,
    "--length 64 exceeds the 40 positions the model can use (maxPositions 40)",
  );
  // RoBERTa's positions start after its pad id: the default length is what its forward accepts.
  const roberta = await run("describe", "tests/fixtures/hf/heads/roberta-base");
  if (!/activations \(batch 1 x 40\) +\d/.test(roberta.stdout)) {
    throw new Error(`describe: ${roberta.stdout}`);
  }
  // A folder whose config names no architecture: its weights' names decide the head, as loading does.
  const lm = await run("describe", "tests/fixtures/hf/gpt2", "--json");
  const names = (JSON.parse(lm.stdout) as { name: string }[]).map((p) => p.name);
  if (names[0] !== "transformer.wte.weight") throw new Error(`describe of a GPT-2 LM folder: ${names[0]}`);
  // Weights that are there but broken are an error, as in loading, not a reason to describe the bare model.
  const broken = await Deno.makeTempDir({ prefix: "describe-shards-" });
  for (const entry of Deno.readDirSync("tests/fixtures/hf/sharded/bert-sequence-classification")) {
    if (entry.name === "model-00003-of-00003.safetensors") continue;
    await Deno.copyFile(
      `tests/fixtures/hf/sharded/bert-sequence-classification/${entry.name}`,
      `${broken}/${entry.name}`,
    );
  }
  expectOneLine(await run("describe", broken), "describe", 2, "shard model-00003-of-00003.safetensors");
  await Deno.remove(broken, { recursive: true });
  expectOneLine(
    await run("describe", "README.md"),
    "describe",
    2,
    "README.md: the configuration is not valid JSON",
  );
  expectOneLine(
    await run("describe", "gpt2", "--length", "0"),
    "describe",
    2,
    '--length must be a positive integer, got "0"',
  );
  // A train --task names the head it trains; a folder's own head is the default; a run's folder is named as one.
  const qa = await run("describe", "gpt2", "--task", "qa", "--json");
  if (!(JSON.parse(qa.stdout) as { name: string }[]).some((p) => p.name === "qa_outputs.weight")) {
    throw new Error(`describe gpt2 --task qa: ${qa.stdout.slice(0, 200)} ${qa.stderr}`);
  }
  const head = await run("describe", "tests/fixtures/hf/heads/gpt2-sequence-classification", "--json");
  const score = (JSON.parse(head.stdout) as { name: string; shape: number[] }[]).find((p) =>
    p.name === "score.weight"
  );
  if (score?.shape[0] !== 3) throw new Error(`describe of a classifier folder: ${JSON.stringify(score)}`);
  const runFolder = await Deno.makeTempDir({ prefix: "describe-run-" });
  await Deno.writeTextFile(
    `${runFolder}/config.json`,
    JSON.stringify({ format: 2, options: { task: "sentiment" } }),
  );
  expectOneLine(
    await run("describe", runFolder),
    "describe",
    2,
    `${runFolder}/config.json is a training run's settings, not a model's: describe one of its models, ` +
      `${runFolder}/checkpoints/step-N/models/<name>`,
  );
  await Deno.remove(runFolder, { recursive: true });
  const groups = await run("groups", "--json");
  if (groups.code !== 0) throw new Error(`groups: exit ${groups.code}: ${groups.stderr}`);
  if (!Array.isArray(JSON.parse(groups.stdout))) throw new Error("groups --json: not an array");
});

Deno.test("parity on a missing folder, a file or a folder with no reference fails with one line", async () => {
  expectOneLine(await run("parity", "/no/such/folder"), "parity", 2, "/no/such/folder: no such folder");
  expectOneLine(await run("parity", "deno.json"), "parity", 2, "deno.json: not a folder");
  const empty = await Deno.makeTempDir({ dir: "/tmp" });
  try {
    await Deno.mkdir(`${empty}/inner`);
    expectOneLine(await run("parity", empty), "parity", 2, `${empty}: holds no reference folder`);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("every mutation of deno task mutants still finds its text exactly once in its file", async () => {
  // The mutation run is too long for the suite, so a refactoring that moves a mutation's text would
  // otherwise go unnoticed until the next run.
  const lost: string[] = [];
  for (const mutation of MUTATIONS) {
    const count = await anchorCount(mutation, root);
    if (count !== 1) lost.push(`"${mutation.name}" (${mutation.file}): ${count} times`);
  }
  if (lost.length > 0) throw new Error(`mutations whose text is not found exactly once:\n${lost.join("\n")}`);
});

Deno.test("experiment --quick keeps its results in a folder of its own, away from the published docs/RESULTS.md", async () => {
  const quick = await run("experiment", "--quick", "--report");
  expectOneLine(quick, "experiment", 1, "runs/quick-experiment/results/runs-quick.jsonl holds no runs");
  const gpu = await run("experiment", "--preset", "gpu", "--report", "--results", "/tmp/no-such-results");
  expectOneLine(gpu, "experiment", 1, "/tmp/no-such-results/results/runs-gpu.jsonl holds no runs");
});

Deno.test("an MM_KERNELS or MM_TIMING that cannot be read is one line and exit 1 when the GPU opens", async () => {
  for (
    const [env, fragment] of [
      [{ MM_KERNELS: "matmul:foo" }, 'MM_KERNELS: unknown variant "foo" of matmul'],
      [{ MM_TIMING: "bogus" }, 'MM_TIMING: unknown option "bogus"'],
    ] as const
  ) {
    const result = await runWith(env, "demo", "--steps", "1");
    const lines = result.stderr.trimEnd().split("\n");
    if (result.code !== 1 || lines.length !== 1 || !lines[0].startsWith(fragment)) {
      throw new Error(`${JSON.stringify(env)}: exit ${result.code}, stderr ${JSON.stringify(result.stderr)}`);
    }
  }
});

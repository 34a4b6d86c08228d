/**
 * `deno task mutants [--only text] [--commit rev] [--list]`: the suite's mutation check. Each mutation
 * in tests/mutants.ts is a small plausible bug (one text replacement in one source file); it is applied
 * alone, the test files that should catch it run (only the tests its filter names, when it has one),
 * and the file is restored. Prints one line per mutation and a summary with the run time; exits 1
 * unless every mutation is caught, so it can guard large changes.
 *
 * Mutations are applied to a copy of the files git tracks, as they are in the working tree (or at
 * commit `rev` with `--commit`), in a temporary folder, never to the working tree itself, which others
 * may be editing. Every anchor is checked before any test runs: a mutation whose text no longer occurs
 * exactly once fails the run, naming it, so a refactoring cannot quietly turn the check into a pass.
 * A mutation is caught when a test ran and failed; one whose tests fail with a WebGPU validation
 * error, a parse error or no failing test at all is reported as invalid (broken code, not a plausible
 * bug), and fails the run too.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { type Mutation, MUTATIONS } from "../tests/mutants.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";

const NAME = "mutants";

/** What running a mutation's tests showed. */
export type Outcome = "caught" | "missed" | "invalid";

/** The outcome of one mutation. */
export interface MutationResult {
  /** The mutation. */
  mutation: Mutation;
  /** Whether the tests failed with it applied (caught), passed (missed), or could not run it (invalid). */
  outcome: Outcome;
  /** Seconds the tests took. */
  seconds: number;
}

/** Output that shows code which does not compile, rather than a wrong result. */
const BROKEN = /WebGPU error|source code could not be parsed/;

/**
 * Runs test files (in tests/), only the tests whose names match `filter` when given (deno test's
 * --filter), in a fresh process under `root`; returns whether they passed and their output.
 */
async function runTests(
  files: readonly string[],
  root: string,
  filter?: string,
): Promise<{ pass: boolean; output: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--no-check",
      "--allow-read",
      "--allow-env",
      "--allow-run",
      "--allow-write=/tmp",
      ...(filter ? ["--filter", filter] : []),
      ...files.map((t) => `tests/${t}`),
    ],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { pass: output.success, output: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

/** How many times a mutation's text occurs in its file under `root` (0 when the file is missing). */
export async function anchorCount(mutation: Mutation, root: string): Promise<number> {
  const text = await Deno.readTextFile(`${root}/${mutation.file}`).catch(() => "");
  return text.split(mutation.find).length - 1;
}

/** Applies `mutation` (its text must occur exactly once) under `root`, runs its tests, restores the file. */
async function tryMutation(mutation: Mutation, root: string): Promise<MutationResult> {
  const path = `${root}/${mutation.file}`;
  const original = await Deno.readTextFile(path);
  const count = original.split(mutation.find).length - 1;
  if (count !== 1) {
    throw new Error(`mutation "${mutation.name}": its text occurs ${count} times in ${mutation.file}`);
  }
  const started = performance.now();
  await Deno.writeTextFile(path, original.replace(mutation.find, mutation.replace));
  try {
    const { pass, output } = await runTests(mutation.tests, root, mutation.filter);
    // Caught means a test ran and failed; a run that failed without a failing test did not load.
    const failed = Number(/\| \d+ passed \| (\d+) failed/.exec(output)?.[1] ?? 0);
    const outcome: Outcome = pass ? "missed" : failed > 0 && !BROKEN.test(output) ? "caught" : "invalid";
    return { mutation, outcome, seconds: (performance.now() - started) / 1000 };
  } finally {
    await Deno.writeTextFile(path, original);
  }
}

/** Runs git in `root`; throws with its message when it fails. */
async function git(root: string, args: string[]): Promise<Uint8Array> {
  const output = await new Deno.Command("git", { args, cwd: root, stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`git ${args.join(" ")}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return output.stdout;
}

/**
 * Copies the files git tracks at `root` into the folder `copy`: as they are in the working tree, or as
 * they are at commit `rev` when given.
 */
async function copyTrackedFiles(root: string, rev: string, copy: string): Promise<void> {
  if (rev !== "") {
    const archive = `${copy}.tar`;
    await git(root, ["archive", "--format=tar", "-o", archive, rev]);
    const untar = await new Deno.Command("tar", { args: ["-xf", archive, "-C", copy] }).output();
    await Deno.remove(archive);
    if (!untar.success) throw new Error(`tar could not unpack the files of ${rev}`);
  }
  const listing = rev === "" ? await git(root, ["ls-files", "-z"]) : new Uint8Array();
  for (const file of new TextDecoder().decode(listing).split("\0").filter((f) => f !== "")) {
    const target = `${copy}/${file}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    // A tracked file deleted in the working tree is left out, as the tests there would see it.
    await Deno.copyFile(`${root}/${file}`, target).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
  // npm packages resolve through node_modules (nodeModulesDir "auto"); the copy reads the original's.
  if (await Deno.stat(`${root}/node_modules`).then(() => true, () => false)) {
    await Deno.symlink(`${root}/node_modules`, `${copy}/node_modules`);
  }
}

if (import.meta.main) {
  const { flags } = parseCommand({
    name: NAME,
    operands: "",
    positionals: [0, 0],
    summary: "Applies each mutation of tests/mutants.ts alone, in a copy of the tracked files, " +
      "runs the tests meant to catch it, and reports.",
    flags: {
      only: {
        type: "string",
        default: "all",
        value: "text",
        description: "only mutations whose name contains text",
      },
      commit: {
        type: "string",
        default: "",
        value: "rev",
        description: "mutate the files of this commit instead of the working tree",
      },
      list: { type: "boolean", default: false, description: "list the mutations and exit" },
    },
  });
  const selected = MUTATIONS.filter((m) => flags.only === "all" || m.name.includes(flags.only));
  if (selected.length === 0) exitWithUsageError(NAME, `no mutation name contains "${flags.only}"`);
  if (flags.list) {
    for (const m of selected) {
      const filter = m.filter ? ` --filter ${JSON.stringify(m.filter)}` : "";
      console.log(`${m.name}  (${m.file}; ${m.tests.join(", ")}${filter})`);
    }
    Deno.exit(0);
  }
  const started = performance.now();
  const root = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
  const copy = await Deno.makeTempDir({ prefix: "mutants-" });
  try {
    await copyTrackedFiles(root, flags.commit, copy);
    const files = [...new Set(selected.flatMap((m) => m.tests))];
    const problems: string[] = [];
    for (const file of files) {
      if (!(await Deno.stat(`${copy}/tests/${file}`).then(() => true, () => false))) {
        problems.push(`tests/${file}, named by a mutation, is not a tracked file`);
      }
    }
    for (const m of selected) {
      const count = await anchorCount(m, copy);
      if (count !== 1) problems.push(`mutation "${m.name}": its text occurs ${count} times in ${m.file}`);
    }
    if (problems.length > 0) {
      for (const p of problems) console.error(`${NAME}: ${p}`);
      throw new Error("update tests/mutants.ts to the code as it is now; no test was run");
    }
    // A mutation counts as caught only if its tests pass without it: check them once, unmutated.
    const baseline = await runTests(files, copy);
    if (!baseline.pass) {
      console.error(baseline.output.split("\n").slice(-40).join("\n"));
      throw new Error(`the tests fail without any mutation (${files.join(", ")}); fix them first`);
    }
    const counts: Record<Outcome, number> = { caught: 0, missed: 0, invalid: 0 };
    for (const mutation of selected) {
      const result = await tryMutation(mutation, copy);
      counts[result.outcome]++;
      const label = { caught: "caught", missed: "MISSED", invalid: "INVALID" }[result.outcome];
      console.log(`${label.padEnd(7)}  ${mutation.name}  (${result.seconds.toFixed(0)} s)`);
    }
    const minutes = (performance.now() - started) / 60_000;
    console.log(
      `\n${counts.caught} of ${selected.length} mutations caught` +
        (counts.missed ? `, ${counts.missed} missed` : "") +
        (counts.invalid ? `, ${counts.invalid} invalid (they break the code instead of changing it)` : "") +
        ` in ${minutes.toFixed(1)} min`,
    );
    if (counts.caught !== selected.length) Deno.exitCode = 1;
  } catch (e) {
    console.error(`${NAME}: ${(e as Error).message}`);
    Deno.exitCode = 1;
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
}

/**
 * `deno task mutants [--only substring] [--list]`: the suite's mutation check. Each mutation in
 * tests/mutants.ts is a small plausible bug (one text replacement in one source file); it is applied
 * alone, the test files that should catch it run, and the file is restored. A mutation is caught when
 * those tests fail. Prints one line per mutation and a summary; exits 1 if any is missed, so it can
 * guard large changes. Every mutation must be caught, or carry the reason it is equivalent.
 *
 * @module
 */
import { type Mutation, MUTATIONS } from "../tests/mutants.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";

const NAME = "mutants";

/** The outcome of one mutation. */
export interface MutationResult {
  /** The mutation. */
  mutation: Mutation;
  /** Whether the tests failed with it applied. */
  caught: boolean;
  /** Seconds the tests took. */
  seconds: number;
}

/** Runs test files (in tests/) in a fresh process; true when they pass. */
async function testsPass(files: readonly string[], root: string): Promise<boolean> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--no-check",
      "--allow-read",
      "--allow-env",
      "--allow-run",
      "--allow-write=/tmp",
      ...files.map((t) => `tests/${t}`),
    ],
    cwd: root,
    stdout: "null",
    stderr: "null",
  }).output();
  return output.success;
}

/** Applies `mutation` (exactly one occurrence of its text must exist), runs its tests, restores the file. */
export async function tryMutation(mutation: Mutation, root: string): Promise<MutationResult> {
  const path = `${root}/${mutation.file}`;
  const original = await Deno.readTextFile(path);
  const count = original.split(mutation.find).length - 1;
  if (count !== 1) {
    throw new Error(
      `mutation "${mutation.name}": "${mutation.find}" occurs ${count} times in ${mutation.file}`,
    );
  }
  const started = performance.now();
  await Deno.writeTextFile(path, original.replace(mutation.find, mutation.replace));
  try {
    const caught = !(await testsPass(mutation.tests, root));
    return { mutation, caught, seconds: (performance.now() - started) / 1000 };
  } finally {
    await Deno.writeTextFile(path, original);
  }
}

if (import.meta.main) {
  const { flags } = parseCommand({
    name: NAME,
    operands: "",
    positionals: [0, 0],
    summary:
      "Applies each mutation of tests/mutants.ts alone, runs the tests meant to catch it, and reports.",
    flags: {
      only: {
        type: "string",
        default: "all",
        value: "text",
        description: "only mutations whose name contains text",
      },
      list: { type: "boolean", default: false, description: "list the mutations and exit" },
    },
  });
  const selected = MUTATIONS.filter((m) => flags.only === "all" || m.name.includes(flags.only));
  if (selected.length === 0) exitWithUsageError(NAME, `no mutation name contains "${flags.only}"`);
  if (flags.list) {
    for (const m of selected) console.log(`${m.name}  (${m.file}; ${m.tests.join(", ")})`);
    Deno.exit(0);
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  // A mutation counts as caught only if its tests pass without it: check them once, unmutated.
  const files = [...new Set(selected.flatMap((m) => m.tests))];
  for (const file of files) {
    if (!(await Deno.stat(`${root}/tests/${file}`).then(() => true, () => false))) {
      exitWithUsageError(NAME, `tests/${file}, named by a mutation, does not exist`);
    }
  }
  if (!(await testsPass(files, root))) {
    console.error(`${NAME}: the tests fail without any mutation (${files.join(", ")}); fix them first`);
    Deno.exit(1);
  }
  let missed = 0;
  for (const mutation of selected) {
    const result = await tryMutation(mutation, root);
    if (!result.caught) missed++;
    console.log(`${result.caught ? "caught" : "MISSED"}  ${mutation.name}  (${result.seconds.toFixed(0)} s)`);
  }
  console.log(`\n${selected.length - missed} of ${selected.length} mutations caught`);
  if (missed > 0) Deno.exit(1);
}

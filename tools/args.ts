/**
 * Strict command-line parsing shared by every command in tools/: `node:util` `parseArgs` in strict
 * mode, `--help`/`-h` printing usage with every flag and its default, and usage errors printed as
 * one line (`describe: unknown option --foo (try --help)`) with exit status 2, never a stack trace.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** One flag of a command: a boolean switch or a string value, always with a default. */
export type Flag =
  | { type: "boolean"; default: false; short?: string; description: string }
  | { type: "string"; default: string; short?: string; value: string; description: string };

/** A command's name, synopsis and flags. */
export interface CommandSpec<F extends Record<string, Flag>> {
  /** The command as messages name it, e.g. `describe`. */
  name: string;
  /** The positional arguments as the usage line shows them, e.g. `<folder>...`; "" for none. */
  operands: string;
  /** The fewest and most positional arguments accepted. */
  positionals: readonly [min: number, max: number];
  /** One or two sentences on what the command does, for `--help`. */
  summary: string;
  /** The flags, by long name (`--help` is added). */
  flags: F;
}

/** Parsed flag values, typed from the spec: booleans for switches, strings for values. */
export type FlagValues<F extends Record<string, Flag>> = {
  [K in keyof F]: F[K] extends { type: "boolean" } ? boolean : string;
};

/** The `--help` text of a command: usage line, summary, and every flag with its default. */
function helpText<F extends Record<string, Flag>>(spec: CommandSpec<F>): string {
  const rows = Object.entries(spec.flags).map(([name, flag]) => {
    const names = `${flag.short ? `-${flag.short}, ` : ""}--${name}${
      flag.type === "string" ? ` <${flag.value}>` : ""
    }`;
    return [names, `${flag.description} (default: ${flag.type === "string" ? flag.default : "off"})`];
  });
  rows.push(["-h, --help", "print this help and exit"]);
  const width = Math.max(...rows.map(([names]) => names.length));
  return [
    `usage: deno task ${spec.name}${spec.operands ? ` ${spec.operands}` : ""} [options]`,
    "",
    spec.summary,
    "",
    "options:",
    ...rows.map(([names, description]) => `  ${names.padEnd(width)}  ${description}`),
  ].join("\n");
}

/** Prints `name: message (try --help)` to stderr as one line and exits with status 2. */
export function exitWithUsageError(name: string, message: string): never {
  console.error(`${name}: ${message.replaceAll("\n", " ")} (try --help)`);
  Deno.exit(2);
}

/**
 * Parses `args` strictly against `spec`. `--help` prints the help to stdout and exits 0; an unknown
 * flag, a missing or unexpected value, or a wrong number of positional arguments exits 2 with one line.
 */
export function parseCommand<F extends Record<string, Flag>>(
  spec: CommandSpec<F>,
  args: readonly string[] = Deno.args,
): { flags: FlagValues<F>; positionals: string[] } {
  const options: Record<string, Flag> = {
    ...spec.flags,
    help: { type: "boolean", short: "h", default: false, description: "" },
  };
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options, strict: true, allowPositionals: true });
  } catch (error) {
    exitWithUsageError(spec.name, explainParseError(error as Error, args, options));
  }
  if (parsed.values.help) {
    console.log(helpText(spec));
    Deno.exit(0);
  }
  const [min, max] = spec.positionals;
  const count = parsed.positionals.length;
  if (count < min) exitWithUsageError(spec.name, `missing ${spec.operands}`);
  if (count > max) {
    exitWithUsageError(spec.name, `unexpected argument "${parsed.positionals[max]}"`);
  }
  const { help: _, ...flags } = parsed.values;
  // Every flag has a default, so every value is present with the type its spec declares.
  return { flags: flags as FlagValues<F>, positionals: parsed.positionals };
}

/** Parses a flag's value as an integer >= 1, or exits 2 naming the flag and the value. */
export function positiveInteger(name: string, flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    exitWithUsageError(name, `--${flag} must be a positive integer, got "${value}"`);
  }
  return n;
}

/**
 * Node's strict-mode messages run to several sentences and lines; this re-reads the arguments
 * leniently to say in a few words which one was wrong.
 */
function explainParseError(error: Error, args: readonly string[], options: Record<string, Flag>): string {
  const { tokens } = parseArgs({
    args: [...args],
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    const flag = options[token.name];
    if (!flag) return `unknown option ${token.rawName}`;
    if (flag.type === "boolean" && token.value !== undefined) return `option ${token.rawName} takes no value`;
    if (flag.type === "string" && token.value === undefined) return `option ${token.rawName} needs a value`;
    if (flag.type === "string" && !token.inlineValue && token.value?.startsWith("-")) {
      return `option ${token.rawName} needs a value; write ${token.rawName}=${token.value} for one starting with "-"`;
    }
  }
  return error.message.split("\n")[0];
}

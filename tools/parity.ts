/**
 * `deno task parity <folder>...`: checks the engine against reference folders written with Hugging
 * Face transformers (layout of tests/fixtures/hf, see its README): a model folder (`config.json`,
 * checked by models/parity.ts) or an AdamW trajectory (`cases.json`, checked by optim/parity.ts). A
 * folder with neither checks every such folder below it.
 * Prints one JSON line per model and exits 1 when a tolerance is exceeded (or WebGPU has no adapter).
 * Each folder is checked on its own: one that cannot be loaded or run gets a failing line
 * (`{"folder", "error", "pass": false}`) and the others are still checked.
 * Exits 2, with one line and before opening the GPU, on a bad flag, a path that is not a folder, or
 * a folder that holds no reference folder at all.
 *
 * @module
 */
import { checkModelFolder, type ModelParity } from "../models/parity.ts";
import { type AdamwParity, checkAdamwFolder } from "../optim/parity.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";
import { openGpuOrExit } from "../engine/start.ts";

/** A folder that could not be checked: a bad file, or an error while running it. */
interface FolderError {
  /** The folder. */
  folder: string;
  /** What went wrong. */
  error: string;
  /** Always false. */
  pass: false;
}

/**
 * Checks one folder - an AdamW trajectory when it holds `cases.json`, else a model - and turns an
 * error into that folder's failing result, so that one bad folder does not stop the others' checks.
 */
async function checkFolder(folder: string): Promise<ModelParity | AdamwParity | FolderError> {
  try {
    const isAdamw = await Deno.stat(`${folder}/cases.json`).then(() => true, () => false);
    return isAdamw ? await checkAdamwFolder(folder) : await checkModelFolder(folder);
  } catch (e) {
    return { folder, error: (e as Error).message, pass: false };
  }
}

async function foldersToCheck(path: string): Promise<string[]> {
  const has = async (name: string) => await Deno.stat(`${path}/${name}`).then(() => true, () => false);
  if (await has("config.json") || await has("cases.json")) return [path];
  const found: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (entry.isDirectory) found.push(...await foldersToCheck(`${path}/${entry.name}`));
  }
  return found.sort();
}

if (import.meta.main) {
  const { positionals: paths } = parseCommand({
    name: "parity",
    operands: "<folder>...",
    positionals: [1, Infinity],
    summary:
      "Checks models (or AdamW trajectories) against Hugging Face reference folders: a model folder, " +
      "an adamw folder, or a folder of them.\nPrints one JSON line per folder (an error in one is its " +
      "failing line; the others are still checked); exits 1 when a tolerance is exceeded or a folder " +
      "fails, 2 when a path is not a folder or holds no reference folder.",
    flags: {},
  });
  // Every path is resolved before the GPU opens, so a mistyped one fails at once and is never
  // mistaken for a pass with nothing checked.
  const folders: string[] = [];
  for (const path of paths) {
    const info = await Deno.stat(path).catch(() => null);
    if (!info?.isDirectory) {
      exitWithUsageError("parity", `${path}: ${info ? "not a folder" : "no such folder"}`);
    }
    const found = await foldersToCheck(path);
    if (found.length === 0) {
      exitWithUsageError("parity", `${path}: holds no reference folder (one with config.json or cases.json)`);
    }
    folders.push(...found);
  }
  await openGpuOrExit();
  let failed = false;
  for (const folder of folders) {
    const result = await checkFolder(folder);
    console.log(JSON.stringify(result));
    failed ||= !result.pass;
  }
  Deno.exit(failed ? 1 : 0);
}

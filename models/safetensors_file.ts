/**
 * Safetensors files on disk (Deno only): reading a whole file or only its header, and writing one
 * atomically. The format itself is `safetensors.ts`, which runs anywhere.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import {
  fileError,
  headerLength,
  type HostTensorEntries,
  parseSafetensors,
  parseSafetensorsHeader,
  safetensorsBytes,
  type SafetensorsContents,
  type TensorHeader,
} from "./safetensors.ts";

/** The last write {@linkcode inCallOrder} queued for each path. */
const lastWrites = new Map<string, Promise<void>>();

/**
 * Runs `write` once every write queued before it for the same `path` (an absolute one) has settled,
 * whatever their outcome: saves into one file or folder from this process land in the order of their
 * calls instead of interleaving their temporary files and renames.
 */
export function inCallOrder(path: string, write: () => Promise<void>): Promise<void> {
  // Two spellings of one place (a link to its folder) share a queue.
  const place = placeOf(path);
  const queued = (lastWrites.get(place) ?? Promise.resolve()).catch(() => {}).then(write);
  lastWrites.set(place, queued);
  const forget = () => {
    if (lastWrites.get(place) === queued) lastWrites.delete(place);
  };
  queued.then(forget, forget);
  return queued;
}

/** `path` with the links of its folder resolved, where that folder exists (it is read synchronously, in call order). */
function placeOf(path: string): string {
  try {
    return join(Deno.realPathSync(dirname(path)), basename(path));
  } catch {
    return path;
  }
}

/** Reads and parses a safetensors file (see {@linkcode parseSafetensors}). */
export async function readSafetensors(path: string): Promise<SafetensorsContents> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    // Deno's own message (a folder: "Is a directory") does not always name the path.
    throw fileError(path, `cannot read the file: ${(error as Error).message}`);
  }
  return parseSafetensors(bytes, path);
}

/**
 * Reads only the header of a safetensors file, with the checks of {@linkcode parseSafetensors} that
 * need no values (entries, offsets against the file's size, coverage of the data region): what a
 * loader compares with a model before it allocates memory or reads gigabytes of weights.
 */
export async function readSafetensorsHeader(
  path: string,
): Promise<{ tensors: Map<string, TensorHeader>; metadata: Record<string, string> }> {
  const file = await Deno.open(path, { read: true });
  try {
    const info = await file.stat();
    if (!info.isFile) throw fileError(path, "is not a file");
    const size = info.size;
    const length = headerLength(await readPrefix(file, Math.min(8, size), path), size, path);
    return parseSafetensorsHeader(await readPrefix(file, length, path), size - 8 - length, path);
  } finally {
    file.close();
  }
}

/** Reads exactly `count` bytes from the file's current position (its size was checked beforehand). */
async function readPrefix(file: Deno.FsFile, count: number, source: string): Promise<Uint8Array> {
  const out = new Uint8Array(count);
  for (let read = 0; read < count;) {
    const n = await file.read(out.subarray(read));
    if (n === null) throw fileError(source, `the file ended after ${read} of ${count} bytes`);
    read += n;
  }
  return out;
}

/**
 * Writes tensors as a safetensors file (see `serializeSafetensors`) atomically: to a temporary file
 * beside `path`, synced, then renamed over `path`. On failure the temporary file is removed and an
 * existing file at `path` is left as it was.
 */
export async function writeSafetensors(
  path: string,
  tensors: HostTensorEntries,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = safetensorsBytes(tensors, metadata, `writeSafetensors: ${path}`);
  // Beside the target so that the rename stays on one file system and is atomic.
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    const file = await Deno.open(temporary, { write: true, createNew: true });
    try {
      for (let written = 0; written < bytes.length;) written += await file.write(bytes.subarray(written));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(temporary, path);
  } catch (error) {
    // The original error is the one to report; the temporary file may never have been created.
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

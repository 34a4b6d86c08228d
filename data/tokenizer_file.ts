/**
 * Tokenizers as files: `tokenizer.json` read from and written to disk. Deno only; `tokenizer.ts` holds
 * the format itself ({@linkcode Tokenizer.fromJson}, `toJson()`), which runs anywhere.
 *
 * @module
 */
import { Tokenizer } from "./tokenizer.ts";

/** Reads a tokenizer.json file (e.g. from a Hugging Face model folder). */
export async function readTokenizer(path: string): Promise<Tokenizer> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new Error(`readTokenizer: cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    return Tokenizer.fromJson(json);
  } catch (error) {
    throw new Error(`${(error as Error).message} (in ${path})`);
  }
}

/** Writes a tokenizer's tokenizer.json to `path`. */
export async function writeTokenizer(tokenizer: Tokenizer, path: string): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(tokenizer.toJson(), null, 2) + "\n");
}

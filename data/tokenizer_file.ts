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

/**
 * Hugging Face's `tokenizer_config.json` for a tokenizer used by a model of `family` that reads at most
 * `maxLength` tokens: `AutoTokenizer` then knows the special tokens (the pad token above all, which
 * batching needs) and returns only the inputs the family takes: BERT's token types, none for GPT-2 and
 * RoBERTa (GPT-2 would add them to its embeddings, RoBERTa has one type).
 */
export function tokenizerConfig(
  tokenizer: Tokenizer,
  family: "bert" | "gpt2" | "roberta",
  maxLength: number,
): Record<string, unknown> {
  const { cls, sep, pad, unk, mask } = tokenizer.special;
  const named = Object.entries({ cls, sep, pad, unk, mask, bos: cls, eos: sep })
    .filter(([, id]) => id >= 0)
    .map(([name, id]) => [`${name}_token`, tokenizer.idToToken(id)]);
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    model_max_length: maxLength,
    padding_side: "right",
    model_input_names: family === "bert"
      ? ["input_ids", "token_type_ids", "attention_mask"]
      : ["input_ids", "attention_mask"],
    ...Object.fromEntries(named),
  };
}

/** A tokenizer's tokenizer.json text, as every file this project writes it. */
export function tokenizerText(tokenizer: Tokenizer): string {
  return JSON.stringify(tokenizer.toJson(), null, 2) + "\n";
}

/** Writes a tokenizer's tokenizer.json to `path`. */
export async function writeTokenizer(tokenizer: Tokenizer, path: string): Promise<void> {
  await Deno.writeTextFile(path, tokenizerText(tokenizer));
}

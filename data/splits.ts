/**
 * Deterministic train / validation / test assignment. A split depends only on a key (a text, a
 * file name, a chapter number), never on the order things were read or on how many were read, so
 * loading with a `limit` gives a prefix of the same splits, and equal keys always share a split.
 *
 * @module
 */

/** The three splits, in the order data sets list them. */
export type SplitName = "train" | "validation" | "test";

/** 32-bit FNV-1a over the UTF-16 code units of `text`: small, fast and the same on every platform. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** 80 / 10 / 10 by a bucket in [0, 10): 0 is test, 1 is validation, the rest train. */
export function splitOfBucket(bucket: number): SplitName {
  return bucket === 0 ? "test" : bucket === 1 ? "validation" : "train";
}

/** The split of a text-keyed example: {@linkcode splitOfBucket} of FNV-1a(key) mod 10. */
export function splitOfKey(key: string): SplitName {
  return splitOfBucket(fnv1a(key) % 10);
}

/** The rule {@linkcode splitOfKey} applies, for data sets' `splitRule`. */
export const HASH_SPLIT_RULE =
  "FNV-1a 32-bit hash of the key mod 10: 0 -> test, 1 -> validation, 2-9 -> train";

/** Words per shingle of {@linkcode nearDuplicateKeys}. */
const SHINGLE_WORDS = 8;

/** The Jaccard similarity of two texts' shingles from which {@linkcode nearDuplicateKeys} calls them near-duplicates. */
export const NEAR_DUPLICATE_JACCARD = 0.8;

/**
 * Split keys that keep near-duplicate texts in one split: texts whose shingles (hashes of every run
 * of 8 lower-cased words) overlap with a Jaccard similarity of at least {@linkcode NEAR_DUPLICATE_JACCARD}
 * are near-duplicates, near-duplicates of near-duplicates join them, and every text of such a group
 * gets the group's first text as its key, so the variants of one message (a spam campaign's copies
 * that differ in the subject or a random tag) never straddle two splits.
 */
export function nearDuplicateKeys(texts: readonly string[]): string[] {
  const shingles = texts.map(shingleSet);
  const holders = new Map<number, number[]>();
  shingles.forEach((set, i) => {
    for (const shingle of set) {
      const list = holders.get(shingle);
      if (list) list.push(i);
      else holders.set(shingle, [i]);
    }
  });
  // Union-find whose root is always a group's first text.
  const parent = texts.map((_, i) => i);
  const root = (i: number): number => parent[i] === i ? i : (parent[i] = root(parent[i]));
  shingles.forEach((set, i) => {
    const shared = new Map<number, number>();
    for (const shingle of set) {
      for (const other of holders.get(shingle)!) {
        if (other < i) shared.set(other, (shared.get(other) ?? 0) + 1);
      }
    }
    for (const [other, count] of shared) {
      if (count / (set.size + shingles[other].size - count) < NEAR_DUPLICATE_JACCARD) continue;
      const [a, b] = [root(i), root(other)];
      parent[Math.max(a, b)] = Math.min(a, b);
    }
  });
  return texts.map((_, i) => texts[root(i)]);
}

/** Hashes of every run of {@linkcode SHINGLE_WORDS} lower-cased words (of all of them in a shorter text). */
function shingleSet(text: string): Set<number> {
  const words = text.toLowerCase().split(/\s+/).filter((w) => w !== "");
  const shingles = new Set<number>();
  for (let i = 0; i + SHINGLE_WORDS <= words.length; i++) {
    shingles.add(fnv1a(words.slice(i, i + SHINGLE_WORDS).join(" ")));
  }
  if (words.length < SHINGLE_WORDS) shingles.add(fnv1a(words.join(" ")));
  return shingles;
}

/**
 * `count` items spread evenly over `items` (those at floor(i * length / count)), in order; all of them
 * when `count` is at least their number. Splits list examples in reading order, and a corpus read in
 * file order is grouped by genre or chapter, so an evaluation on part of a split takes it from the
 * whole split rather than its first items.
 */
export function evenlySpaced<T>(items: readonly T[], count: number): T[] {
  if (count >= items.length) return [...items];
  return Array.from({ length: count }, (_, i) => items[Math.floor((i * items.length) / count)]);
}

/** Examples grouped by split, with a per-split cap for tests. */
export class SplitCollector<E> {
  /** Examples per split, in reading order. */
  readonly splits: Record<SplitName, E[]> = { train: [], validation: [], test: [] };

  /** @param limit at most this many examples per split (Infinity: all). */
  constructor(readonly limit = Infinity) {}

  /** Adds `example` to `split` unless that split is full. */
  add(split: SplitName, example: E): void {
    const list = this.splits[split];
    if (list.length < this.limit) list.push(example);
  }

  /** Whether the split is full (a loader with a limit may stop reading its sources). */
  full(split: SplitName): boolean {
    return this.splits[split].length >= this.limit;
  }

  /** Whether every split is full. */
  get done(): boolean {
    return this.full("train") && this.full("validation") && this.full("test");
  }
}

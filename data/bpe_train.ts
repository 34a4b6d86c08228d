/**
 * Learning BPE merges from word counts, the way Hugging Face's `BpeTrainer` does: start from single
 * characters, repeatedly merge the most frequent adjacent pair (ties: the pair of earliest-created
 * symbols), and stop at the vocabulary size or when no pair occurs `minFrequency` times. Pair counts are
 * updated incrementally from the words that contain the merged pair, so a merge costs only those words.
 *
 * @module
 */

/** The result of {@linkcode learnMerges}: the symbols in id order and the merges in rank order. */
export interface LearnedBpe {
  /** Every symbol: the alphabet, then one per merge that made a new string. */
  symbols: string[];
  /** Merges, highest priority first. */
  merges: [string, string][];
}

const PAIR_BASE = 1 << 20;

/** A max-heap of pairs by (count, then smaller left id, then smaller right id). */
class PairHeap {
  private keys: number[] = [];
  private counts: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  private before(a: number, b: number): boolean {
    return this.counts[a] > this.counts[b] ||
      (this.counts[a] === this.counts[b] && this.keys[a] < this.keys[b]);
  }

  private swap(a: number, b: number): void {
    [this.keys[a], this.keys[b]] = [this.keys[b], this.keys[a]];
    [this.counts[a], this.counts[b]] = [this.counts[b], this.counts[a]];
  }

  push(key: number, count: number): void {
    let i = this.keys.length;
    this.keys.push(key);
    this.counts.push(count);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { key: number; count: number } {
    const top = { key: this.keys[0], count: this.counts[0] };
    const last = this.keys.length - 1;
    this.swap(0, last);
    this.keys.pop();
    this.counts.pop();
    for (let i = 0;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < last && this.before(l, best)) best = l;
      if (r < last && this.before(r, best)) best = r;
      if (best === i) break;
      this.swap(i, best);
      i = best;
    }
    return top;
  }
}

/**
 * Learns up to `maxMerges` merges over `words` (word -> count; every character must be in
 * `alphabet`, whose order gives the first symbol ids).
 */
export function learnMerges(
  words: ReadonlyMap<string, number>,
  alphabet: readonly string[],
  maxMerges: number,
  minFrequency: number,
): LearnedBpe {
  const symbols = [...alphabet];
  const idOf = new Map(symbols.map((s, i) => [s, i]));
  const sequences: number[][] = [];
  const counts: number[] = [];
  for (const [word, count] of words) {
    sequences.push(Array.from(word, (char) => {
      const id = idOf.get(char);
      if (id === undefined) {
        throw new Error(`learnMerges: character "${char}" of "${word}" is not in the alphabet`);
      }
      return id;
    }));
    counts.push(count);
  }
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  // Adds (sign 1) or removes (sign -1) word w's pairs; `delta` collects the net change per pair.
  const countPairs = (w: number, sign: number, delta: Map<number, number>) => {
    const seq = sequences[w];
    for (let i = 0; i + 1 < seq.length; i++) {
      const key = seq[i] * PAIR_BASE + seq[i + 1];
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + sign * counts[w]);
      delta.set(key, (delta.get(key) ?? 0) + sign * counts[w]);
      if (sign > 0) {
        let where = pairWords.get(key);
        if (!where) pairWords.set(key, where = new Set());
        where.add(w);
      }
    }
  };
  const initial = new Map<number, number>();
  for (let w = 0; w < sequences.length; w++) countPairs(w, 1, initial);
  const heap = new PairHeap();
  for (const [key, count] of initial) heap.push(key, count);

  const merges: [string, string][] = [];
  while (merges.length < maxMerges && heap.size > 0) {
    const top = heap.pop();
    const current = pairCounts.get(top.key) ?? 0;
    if (current !== top.count) {
      if (current > 0) heap.push(top.key, current); // stale count: requeue with the true one
      continue;
    }
    if (current < minFrequency) break;
    const left = Math.floor(top.key / PAIR_BASE);
    const right = top.key % PAIR_BASE;
    const merged = symbols[left] + symbols[right];
    let id = idOf.get(merged);
    if (id === undefined) {
      id = symbols.length;
      if (id >= PAIR_BASE) throw new Error(`learnMerges: more than ${PAIR_BASE} symbols`);
      symbols.push(merged);
      idOf.set(merged, id);
    }
    merges.push([symbols[left], symbols[right]]);
    const delta = new Map<number, number>();
    for (const w of pairWords.get(top.key) ?? []) {
      const seq = sequences[w];
      let found = false;
      for (let i = 0; i + 1 < seq.length && !found; i++) found = seq[i] === left && seq[i + 1] === right;
      if (!found) continue; // an earlier merge already took this word's pair
      countPairs(w, -1, delta);
      const next: number[] = [];
      for (let i = 0; i < seq.length; i++) {
        if (i + 1 < seq.length && seq[i] === left && seq[i + 1] === right) {
          next.push(id);
          i++;
        } else {
          next.push(seq[i]);
        }
      }
      sequences[w] = next;
      countPairs(w, 1, delta);
    }
    pairCounts.delete(top.key);
    pairWords.delete(top.key);
    // Only pairs that gained need a heap entry; ones that lost are corrected lazily when popped.
    for (const [key, change] of delta) {
      if (change > 0 && key !== top.key) heap.push(key, pairCounts.get(key)!);
    }
  }
  return { symbols, merges };
}

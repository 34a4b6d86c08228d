/**
 * Training a byte-level BPE into a tokenizer.json. Merges are learned the way Hugging Face's
 * `BpeTrainer` does: start from single characters, repeatedly merge the most frequent adjacent pair
 * (ties: the pair of earliest-created symbols), and stop at the vocabulary size or when no pair occurs
 * `minFrequency` times. Pair counts are updated incrementally from the words that contain the merged
 * pair, so a merge costs only those words.
 *
 * @module
 */
import { type Matchable, parseAddedTokens, splitAtAddedTokens } from "./added_tokens.ts";
import { BYTE_TO_CHAR, byteLevelPieces } from "./byte_level.ts";

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
function learnMerges(
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

/** The special tokens of a trained tokenizer, in id order (RoBERTa's). */
export const TRAINED_SPECIAL_TOKENS: readonly string[] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/** Options of a tokenizer's training. */
export interface TrainOptions {
  /** Entries in the vocabulary, special tokens and the 256 bytes included (default 8192). */
  vocabSize?: number;
  /** A pair must occur this often to be merged (default 2, as Hugging Face's ByteLevelBPETokenizer). */
  minFrequency?: number;
}

const special = (id: string, typeId: number) => ({ SpecialToken: { id, type_id: typeId } });
const sequence = (id: "A" | "B", typeId: number) => ({ Sequence: { id, type_id: typeId } });

/** The tokenizer.json of a byte-level BPE with RoBERTa's special tokens and pre-tokenizer. */
function byteLevelJson(
  vocab: Record<string, number>,
  merges: readonly [string, string][],
): Record<string, unknown> {
  const byteLevel = { add_prefix_space: true, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: TRAINED_SPECIAL_TOKENS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    // Offsets trimmed of spaces as RoBERTa's are, then the layout the encoders use for every family
    // (encodeQa follows it): `<s> A </s>`, and for a pair `<s> A </s> B </s>` with token type 1 from B
    // on, which only BERT is given (Hugging Face's RoBERTa and GPT-2 tokenizers return no token types).
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", ...byteLevel },
        {
          type: "TemplateProcessing",
          single: [special("<s>", 0), sequence("A", 0), special("</s>", 0)],
          pair: [
            special("<s>", 0),
            sequence("A", 0),
            special("</s>", 0),
            sequence("B", 1),
            special("</s>", 1),
          ],
          special_tokens: {
            "<s>": { id: "<s>", ids: [0], tokens: ["<s>"] },
            "</s>": { id: "</s>", ids: [2], tokens: ["</s>"] },
          },
        },
      ],
    },
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/**
 * The tokenizer.json of a byte-level BPE trained on `texts`: the five special tokens, the 256 byte
 * symbols, then merges of the most frequent pairs within pre-tokens (GPT-2's pattern, with a prefix
 * space so that a word is the same token at the start of a text; special tokens in a text are cut out
 * first, as encoding does) until `vocabSize` entries.
 */
export function trainByteLevelBpe(
  texts: readonly string[],
  options: TrainOptions = {},
): Record<string, unknown> {
  const { vocabSize = 8192, minFrequency = 2 } = options;
  const alphabet = [...BYTE_TO_CHAR].sort();
  const base = TRAINED_SPECIAL_TOKENS.length + alphabet.length;
  if (!Number.isInteger(vocabSize) || vocabSize < base || vocabSize > PAIR_BASE) {
    throw new Error(
      `trainTokenizer: vocabSize must be an integer in [${base}, ${PAIR_BASE}], got ${vocabSize}`,
    );
  }
  const specials: Matchable[] = parseAddedTokens(byteLevelJson({}, []).added_tokens).map((token) => ({
    content: token.content,
    token,
  }));
  const words = new Map<string, number>();
  for (const text of texts) {
    for (const section of splitAtAddedTokens(text, specials)) {
      if (section.token) continue;
      for (const piece of byteLevelPieces(section.text, 0, true)) {
        words.set(piece.text, (words.get(piece.text) ?? 0) + 1);
      }
    }
  }
  const { symbols, merges } = learnMerges(words, alphabet, vocabSize - base, minFrequency);
  const vocab: Record<string, number> = {};
  TRAINED_SPECIAL_TOKENS.forEach((token, id) => (vocab[token] = id));
  symbols.forEach((symbol, i) => (vocab[symbol] = TRAINED_SPECIAL_TOKENS.length + i));
  return byteLevelJson(vocab, merges);
}

/**
 * Byte-level BPE as GPT-2 and RoBERTa define it (and Hugging Face's `ByteLevel` pre-tokenizer and
 * `BPE` model implement it): text is cut by GPT-2's pattern, each piece's UTF-8 bytes are written as
 * printable characters (space is `Ġ`), and merges are applied lowest rank first, leftmost first on
 * ties. Pieces keep the character span of every byte, so tokens map back to the text they came from.
 *
 * @module
 */

/**
 * GPT-2's pre-tokenization pattern as the Rust library (Oniguruma) reads it: its `\s` is Unicode's
 * White_Space, which holds U+0085 and not U+FEFF, where JavaScript's `\s` does the opposite.
 */
const GPT2_PATTERN: RegExp =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/** GPT-2's reversible byte -> character table: printable Latin-1 bytes stand for themselves. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae;
    table[byte] = String.fromCharCode(printable ? byte : 256 + shifted++);
  }
  return table;
})();

/** The inverse of {@linkcode BYTE_TO_CHAR}. */
const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_CHAR.map((char, byte) => [char, byte]),
);

/**
 * One pre-token: its bytes as {@linkcode BYTE_TO_CHAR} characters, and where each byte came from. For
 * an ASCII piece byte `b` is the character at `base + b`; otherwise `starts` / `ends` give the span of
 * the character each byte belongs to. A prefix space added by the pre-tokenizer maps to `origin`.
 */
export interface BytePiece {
  /** The piece's bytes as byte-level characters. */
  text: string;
  /** Source index of byte 0 when the piece is ASCII. */
  base: number;
  /** Per-byte source start, for a piece with non-ASCII characters; null when ASCII. */
  starts: Int32Array | null;
  /** Per-byte source end, for a piece with non-ASCII characters; null when ASCII. */
  ends: Int32Array | null;
}

/** The source span [start, end) of bytes [from, to) of a piece; never before `origin`. */
export function pieceSpan(piece: BytePiece, from: number, to: number, origin: number): [number, number] {
  if (piece.starts === null) return [Math.max(origin, piece.base + from), Math.max(origin, piece.base + to)];
  return [piece.starts[from], piece.ends![to - 1]];
}

const NON_ASCII = /[^ -~\t\n\r]/;

/**
 * Splits `text` (which starts at `origin` in the caller's string) into byte-level pieces. With
 * `addPrefixSpace` a space is put in front unless the text starts with one, as Hugging Face does; that
 * space has the empty span at the text's start.
 */
export function byteLevelPieces(text: string, origin: number, addPrefixSpace: boolean): BytePiece[] {
  const prefixed = addPrefixSpace && !text.startsWith(" ");
  const source = prefixed ? " " + text : text;
  const shift = origin - (prefixed ? 1 : 0);
  const pieces: BytePiece[] = [];
  for (const match of source.matchAll(GPT2_PATTERN)) {
    const word = match[0];
    const base = match.index + shift;
    if (!NON_ASCII.test(word)) {
      let chars = "";
      for (let i = 0; i < word.length; i++) chars += BYTE_TO_CHAR[word.charCodeAt(i)];
      pieces.push({ text: chars, base, starts: null, ends: null });
      continue;
    }
    const starts: number[] = [];
    const ends: number[] = [];
    let chars = "";
    let at = base;
    for (const char of word) {
      const span = at < origin ? [origin, origin] : [at, at + char.length];
      for (const byte of encoder.encode(char)) {
        chars += BYTE_TO_CHAR[byte];
        starts.push(span[0]);
        ends.push(span[1]);
      }
      at += char.length;
    }
    pieces.push({ text: chars, base, starts: Int32Array.from(starts), ends: Int32Array.from(ends) });
  }
  return pieces;
}

const encoder = new TextEncoder();

/** Decodes byte-level characters back to text (invalid UTF-8 becomes U+FFFD, as Hugging Face decodes). */
export function byteLevelDecode(chars: string): string {
  const bytes = new Uint8Array(chars.length);
  let n = 0;
  for (const char of chars) {
    const byte = CHAR_TO_BYTE.get(char);
    if (byte !== undefined) bytes[n++] = byte;
  }
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes.subarray(0, n)); // a BOM in the text is text
}

/** Merge ranks: `ranks.get(left)?.get(right)` is the rank of merging `left` and `right`. */
export type MergeRanks = Map<string, Map<string, number>>;

/** Builds {@linkcode MergeRanks} from merges in priority order. */
export function mergeRanks(merges: readonly (readonly [string, string])[]): MergeRanks {
  const ranks: MergeRanks = new Map();
  merges.forEach(([left, right], rank) => {
    let row = ranks.get(left);
    if (!row) ranks.set(left, row = new Map());
    // A repeated merge takes its last rank, as the Rust library's map does (a later insert replaces).
    row.set(right, rank);
  });
  return ranks;
}

/**
 * Applies BPE merges to one word (a sequence of single-character symbols): repeatedly merges the
 * adjacent pair of lowest rank, leftmost first among equal ranks. Returns the tokens and, per token,
 * the index of its last character + 1 in `word`. A min-heap keeps long words fast.
 */
export function bpeWord(word: string, ranks: MergeRanks): { tokens: string[]; ends: number[] } {
  const n = word.length;
  const tokens: string[] = Array.from(word);
  if (tokens.length !== n) throw new Error(`bpeWord: "${word}" has characters outside the BMP`);
  const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
  const alive = new Uint8Array(n).fill(1);
  const heap = new MergeHeap();
  const push = (i: number) => {
    const j = next[i];
    if (j < 0) return;
    const rank = ranks.get(tokens[i])?.get(tokens[j]);
    if (rank !== undefined) heap.push(rank, i, tokens[i], tokens[j]);
  };
  for (let i = 0; i + 1 < n; i++) push(i);
  while (heap.size > 0) {
    const { position: i, left, right } = heap.pop();
    const j = next[i];
    if (!alive[i] || j < 0 || tokens[i] !== left || tokens[j] !== right) continue; // stale entry
    tokens[i] = left + right;
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  const out: string[] = [];
  const ends: number[] = [];
  for (let i = 0; i >= 0 && i < n; i = next[i]) {
    out.push(tokens[i]);
    ends.push(next[i] < 0 ? n : next[i]);
  }
  return { tokens: out, ends };
}

/** A binary min-heap of candidate merges ordered by (rank, position). */
class MergeHeap {
  private ranks: number[] = [];
  private positions: number[] = [];
  private lefts: string[] = [];
  private rights: string[] = [];

  get size(): number {
    return this.ranks.length;
  }

  private less(a: number, b: number): boolean {
    return this.ranks[a] < this.ranks[b] ||
      (this.ranks[a] === this.ranks[b] && this.positions[a] < this.positions[b]);
  }

  private swap(a: number, b: number): void {
    [this.ranks[a], this.ranks[b]] = [this.ranks[b], this.ranks[a]];
    [this.positions[a], this.positions[b]] = [this.positions[b], this.positions[a]];
    [this.lefts[a], this.lefts[b]] = [this.lefts[b], this.lefts[a]];
    [this.rights[a], this.rights[b]] = [this.rights[b], this.rights[a]];
  }

  push(rank: number, position: number, left: string, right: string): void {
    let i = this.ranks.length;
    this.ranks.push(rank);
    this.positions.push(position);
    this.lefts.push(left);
    this.rights.push(right);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { position: number; left: string; right: string } {
    const top = { position: this.positions[0], left: this.lefts[0], right: this.rights[0] };
    const last = this.ranks.length - 1;
    this.swap(0, last);
    this.ranks.pop();
    this.positions.pop();
    this.lefts.pop();
    this.rights.pop();
    for (let i = 0;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < last && this.less(l, smallest)) smallest = l;
      if (r < last && this.less(r, smallest)) smallest = r;
      if (smallest === i) break;
      this.swap(i, smallest);
      i = smallest;
    }
    return top;
  }
}

/**
 * BERT's WordPiece pipeline as Hugging Face's `tokenizer.json` describes it and the `tokenizers` library
 * runs it: the `BertNormalizer` (clean control characters, pad CJK characters with spaces, lowercase,
 * strip accents), the `BertPreTokenizer` (split on whitespace and punctuation) and the `WordPiece` model
 * (greedy longest match, `##` continuations, `[UNK]` for a word it cannot spell). Used to read BERT
 * folders; the tokenizer trained here is byte-level BPE (see tokenizer.ts).
 *
 * @module
 */

/** The `BertNormalizer` options of a tokenizer.json. */
export interface BertNormalizerOptions {
  /** Drop control characters and turn whitespace into spaces. */
  clean_text?: boolean;
  /** Put spaces around CJK ideographs. */
  handle_chinese_chars?: boolean;
  /** null: strip accents when lowercasing. */
  strip_accents?: boolean | null;
  /** Lowercase. */
  lowercase?: boolean;
}

/** The code point ranges the library pads with spaces: CJK ideographs, the extensions of its table and compatibility forms. */
const CHINESE_RANGES: readonly [number, number][] = [
  [0x4e00, 0x9fff],
  [0x3400, 0x4dbf],
  [0x20000, 0x2a6df],
  [0x2a700, 0x2b73f],
  [0x2b740, 0x2b81f],
  [0x2b920, 0x2ceaf],
  [0xf900, 0xfaff],
  [0x2f800, 0x2fa1f],
];

function isChineseChar(code: number): boolean {
  return CHINESE_RANGES.some(([first, last]) => code >= first && code <= last);
}

const CONTROL = /^(\p{Cc}|\p{Cf}|\p{Co}|\p{Cs})$/u;
// Unicode's White_Space, as Rust's char::is_whitespace: unlike JavaScript's \s it holds U+0085 and not U+FEFF.
const WHITESPACE = /^\p{White_Space}$/u;

/** The normalizer's result: the text and, per UTF-16 unit of it, the source span it came from. */
export interface Normalized {
  /** The normalized text. */
  text: string;
  /** Source start per unit of `text`. */
  starts: Int32Array;
  /** Source end per unit of `text`. */
  ends: Int32Array;
}

function cleanChar(char: string, options: BertNormalizerOptions): string {
  if (!options.clean_text) return char;
  const code = char.charCodeAt(0);
  if (
    code === 0 || code === 0xfffd || (char !== "\t" && char !== "\n" && char !== "\r" && CONTROL.test(char))
  ) return "";
  return WHITESPACE.test(char) ? " " : char;
}

function caseAndAccents(text: string, options: BertNormalizerOptions): string {
  const strip = options.lowercase ? options.strip_accents !== false : options.strip_accents === true;
  // One code point at a time, as the library lowercases: a word-final Σ becomes σ, not ς.
  const cased = options.lowercase ? Array.from(text, (char) => char.toLowerCase()).join("") : text;
  return strip ? cased.normalize("NFD").replace(/\p{Mn}/gu, "") : cased;
}

/**
 * Applies the `BertNormalizer` to `text` (which starts at `origin` in the caller's string). The text is
 * normalized whole, as the library does (the canonical reordering of combining marks); the spans come
 * from normalizing one character at a time, which gives the same length.
 */
export function bertNormalize(text: string, origin: number, options: BertNormalizerOptions): Normalized {
  let whole = "";
  const starts: number[] = [];
  const ends: number[] = [];
  const perChar: string[] = [];
  let at = 0;
  for (const char of text) {
    let piece = cleanChar(char, options);
    if (options.handle_chinese_chars && piece === char && isChineseChar(char.codePointAt(0)!)) {
      piece = ` ${piece} `;
    }
    whole += piece;
    const normalized = caseAndAccents(piece, options);
    perChar.push(normalized);
    for (let k = 0; k < normalized.length; k++) {
      starts.push(origin + at);
      ends.push(origin + at + char.length);
    }
    at += char.length;
  }
  const wholeText = caseAndAccents(whole, options);
  return {
    text: wholeText.length === starts.length ? wholeText : perChar.join(""),
    starts: Int32Array.from(starts),
    ends: Int32Array.from(ends),
  };
}

/** The identity normalization of `text` starting at `origin`. */
export function identityNormalize(text: string, origin: number): Normalized {
  return {
    text,
    starts: Int32Array.from({ length: text.length }, (_, i) => origin + i),
    ends: Int32Array.from({ length: text.length }, (_, i) => origin + i + 1),
  };
}

const PUNCTUATION = "\\p{P}\\u0021-\\u002F\\u003A-\\u0040\\u005B-\\u0060\\u007B-\\u007E";
const BERT_PIECE = new RegExp(`[^\\p{White_Space}${PUNCTUATION}]+|[${PUNCTUATION}]`, "gu");

/** BERT's pre-tokenizer: runs of non-space non-punctuation, and single punctuation characters, as [start, end). */
export function bertPreTokenize(text: string): [number, number][] {
  return Array.from(text.matchAll(BERT_PIECE), (m) => [m.index, m.index + m[0].length]);
}

/**
 * WordPiece on one word: greedy longest match from the left, continuations prefixed with `prefix`. Returns
 * the pieces with their [start, end) in `word` (UTF-16), or null when some part is not in the vocabulary
 * or the word has more than `maxChars` characters (the caller emits the unknown token).
 */
export function wordPiece(
  word: string,
  vocab: ReadonlyMap<string, number>,
  prefix: string,
  maxChars: number,
): { token: string; start: number; end: number }[] | null {
  const chars = Array.from(word);
  if (chars.length > maxChars) return null;
  const unitStart = [0];
  for (const char of chars) unitStart.push(unitStart[unitStart.length - 1] + char.length);
  const pieces: { token: string; start: number; end: number }[] = [];
  for (let start = 0; start < chars.length;) {
    let end = chars.length;
    let found: string | null = null;
    for (; end > start; end--) {
      const candidate = (start > 0 ? prefix : "") + word.slice(unitStart[start], unitStart[end]);
      if (vocab.has(candidate)) {
        found = candidate;
        break;
      }
    }
    if (found === null) return null;
    pieces.push({ token: found, start: unitStart[start], end: unitStart[end] });
    start = end;
  }
  return pieces;
}

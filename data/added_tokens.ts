/**
 * Added tokens of a tokenizer.json (special tokens such as `[CLS]` or `<mask>`): read from the file, and
 * cut out of a text before anything else sees it, as Hugging Face's tokenizers do.
 *
 * @module
 */

/** An entry of tokenizer.json's `added_tokens`. */
export interface AddedToken {
  /** Its id. */
  id: number;
  /** Its text. */
  content: string;
  /** Whether it swallows the whitespace before it. */
  lstrip: boolean;
  /** Whether it swallows the whitespace after it. */
  rstrip: boolean;
  /** Whether it matches only where no word character touches it (not "cat" in "concat"). */
  singleWord: boolean;
  /** Whether it is matched in the normalized text (else in the raw text). */
  normalized: boolean;
  /** Whether it is a special token. */
  special: boolean;
}

/** An added token and the text it is matched by (its content, or its normalized content). */
export interface Matchable {
  /** The text to match. */
  content: string;
  /** The token. */
  token: AddedToken;
}

/** A piece of text: an added token's match, or the text between matches. */
export interface Section {
  /** The text. */
  text: string;
  /** Where it starts in the text that was cut. */
  start: number;
  /** The added token it is, or null. */
  token: AddedToken | null;
}

/** Reads tokenizer.json's `added_tokens` (defaults as Hugging Face: normalized unless special). */
export function parseAddedTokens(entries: unknown): AddedToken[] {
  if (!Array.isArray(entries)) throw new Error("Tokenizer.fromJson: added_tokens must be an array");
  return entries.map((entry, i) => {
    const t = (entry ?? {}) as Record<string, unknown>;
    if (typeof t.content !== "string" || !Number.isInteger(t.id) || (t.id as number) < 0) {
      throw new Error(`Tokenizer.fromJson: added_tokens[${i}] needs a string content and an id`);
    }
    const special = t.special === true;
    return {
      id: t.id as number,
      content: t.content,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
      singleWord: t.single_word === true,
      normalized: typeof t.normalized === "boolean" ? t.normalized : !special,
      special,
    };
  });
}

// The Rust library's regex `\w` and `\s`: Unicode word characters and White_Space.
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const WHITE_SPACE = /\p{White_Space}/u;

/** How many whitespace characters `text` starts (or ends) with; a loop, as a regex anchored at the end is quadratic. */
export function whitespace(text: string, at: "start" | "end"): number {
  let n = 0;
  while (n < text.length && WHITE_SPACE.test(text[at === "start" ? n : text.length - 1 - n])) n++;
  return n;
}

/** Whether a word character touches `text[start, end)` on either side. */
function insideWord(text: string, start: number, end: number): boolean {
  const before = Array.from(text.slice(Math.max(0, start - 2), start)).pop();
  const after = text.codePointAt(end);
  return (before !== undefined && WORD_CHAR.test(before)) ||
    (after !== undefined && WORD_CHAR.test(String.fromCodePoint(after)));
}

/**
 * Cuts `text` at added tokens, taking the longest match at each position from the left (as the
 * library's splitter; a `single_word` token's match inside a word is passed over whole), and applies
 * their lstrip / rstrip: the whitespace they swallow leaves the neighbouring section and joins the
 * token's span. Empty sections are dropped. A section is a token only where it was matched: text that
 * equals a token's but was passed over (a `single_word` token inside a word) stays text, as in the library.
 */
export function splitAtAddedTokens(
  text: string,
  tokens: readonly Matchable[],
): Section[] {
  const sections: Section[] = [];
  const firstChars = new Set(tokens.map((t) => t.content[0]));
  let plainStart = 0;
  for (let i = 0; i < text.length && tokens.length > 0;) {
    let match: Matchable | null = null;
    if (firstChars.has(text[i])) {
      for (const t of tokens) {
        const longer = !match || t.content.length > match.content.length;
        if (t.content.length > 0 && longer && text.startsWith(t.content, i)) match = t;
      }
    }
    if (!match) {
      i++;
      continue;
    }
    if (match.token.singleWord && insideWord(text, i, i + match.content.length)) {
      i += match.content.length;
      continue;
    }
    if (i > plainStart) sections.push({ text: text.slice(plainStart, i), start: plainStart, token: null });
    sections.push({ text: match.content, start: i, token: match.token });
    i += match.content.length;
    plainStart = i;
  }
  if (plainStart < text.length) {
    sections.push({ text: text.slice(plainStart), start: plainStart, token: null });
  }
  for (let i = 0; i < sections.length; i++) {
    const section = sections[i];
    if (section.token?.lstrip && i > 0 && !sections[i - 1].token) {
      const previous = sections[i - 1];
      const space = whitespace(previous.text, "end");
      previous.text = previous.text.slice(0, previous.text.length - space);
      section.start -= space;
      section.text = text.slice(section.start, section.start + section.text.length + space);
    }
    if (section.token?.rstrip && i + 1 < sections.length && !sections[i + 1].token) {
      const next = sections[i + 1];
      const space = whitespace(next.text, "start");
      next.start += space;
      next.text = next.text.slice(space);
      section.text = text.slice(section.start, section.start + section.text.length + space);
    }
  }
  return sections.filter((s) => s.text.length > 0);
}

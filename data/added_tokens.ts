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
      normalized: typeof t.normalized === "boolean" ? t.normalized : !special,
      special,
    };
  });
}

/**
 * Cuts `text` at added tokens, taking the longest match at each position from the left (as the
 * library's splitter), and applies their lstrip / rstrip to the neighbouring sections. Empty sections
 * are dropped; a section whose text equals an added token's (`byContent`) is that token.
 */
export function splitAtAddedTokens(
  text: string,
  tokens: readonly Matchable[],
  byContent: ReadonlyMap<string, AddedToken>,
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
    if (i > plainStart) sections.push({ text: text.slice(plainStart, i), start: plainStart, token: null });
    sections.push({ text: match.content, start: i, token: match.token });
    i += match.content.length;
    plainStart = i;
  }
  if (plainStart < text.length) {
    sections.push({ text: text.slice(plainStart), start: plainStart, token: null });
  }
  for (let i = 0; i < sections.length; i++) {
    const token = sections[i].token;
    if (token?.lstrip && i > 0) sections[i - 1].text = sections[i - 1].text.trimEnd();
    if (token?.rstrip && i + 1 < sections.length) {
      const next = sections[i + 1];
      const trimmed = next.text.trimStart();
      next.start += next.text.length - trimmed.length;
      next.text = trimmed;
    }
  }
  return sections.filter((s) => s.text.length > 0).map((s) => ({
    ...s,
    token: s.token ?? byContent.get(s.text) ?? null,
  }));
}

/**
 * From a raw RFC 822 / MIME message to the text a spam classifier may see: the Subject and the
 * readable body, and no other header (SpamAssassin's corpus keeps the delivery headers, which give
 * the label away: ham came from a few mailing lists, spam from everywhere).
 *
 * Decoded: RFC 2047 encoded words in the Subject, quoted-printable and base64 bodies in their declared
 * charset, multipart messages (every text/plain part; the text/html parts with tags stripped when there
 * is no plain part), nested message/rfc822 parts. Never throws: a part that cannot be decoded is kept
 * as it came or dropped, and a message with no header block is all body.
 *
 * @module
 */

/** Bodies longer than this are cut (at a line end when possible): beyond any sequence the models see. */
const MAX_BODY_CHARS = 8000;
const MAX_DEPTH = 8;

interface Part {
  headers: Map<string, string>;
  body: string;
}

const HEADER_LINE = /^[!-9;-~]+:/;

/**
 * Machine headers: routing, MIME structure, mailer and list fields. A body line that starts with one
 * (a bounced or badly forwarded message, a broken header block) is dropped with its continuation lines;
 * From, To, Cc, Date and Subject lines in a body are what a reader of a forwarded message sees, and stay.
 */
export const MACHINE_HEADER =
  /^(return-path|received|delivered-to|delivery-date|envelope-to|message-id|in-reply-to|references|mime-version|content-[\w-]+|x-[\w-]+|errors-to|sender|precedence|list-[\w-]+|mailing-list|reply-to|status|thread-[\w-]+|user-agent|importance|priority|organization|resent-[\w-]+|return-receipt-to|disposition-notification-to):/i;

/**
 * Splits a message into unfolded headers (lower-case names, first non-empty occurrence wins) and the
 * body. The header block ends at the first blank line; a stray line inside it (an SMTP "DATA", a
 * broken fold) is skipped when a header follows, and otherwise ends the block.
 */
function parsePart(text: string): Part {
  const fields: [string, string][] = [];
  const lines = text.split("\n");
  let i = 0;
  for (; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === "") {
      i++;
      break;
    }
    if (/^[ \t]/.test(line) && fields.length > 0) {
      fields[fields.length - 1][1] += " " + line.trim();
    } else if (HEADER_LINE.test(line)) {
      const colon = line.indexOf(":");
      fields.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
    } else if (i === 0 && line.startsWith("From ")) {
      continue; // the mbox separator line
    } else if (fields.length === 0 || line.startsWith("--") || !HEADER_LINE.test(lines[i + 1] ?? "")) {
      break; // not a header: the header block ended without a blank line
    }
  }
  const headers = new Map<string, string>();
  for (const [name, value] of fields) if (!headers.get(name)) headers.set(name, value);
  return { headers, body: lines.slice(i).join("\n") };
}

/** The media type and parameters of a Content-Type value (lower-case type and parameter names). */
function contentType(value: string | undefined): { type: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  if (!value) return { type: "text/plain", params };
  const [type, ...rest] = value.split(";");
  for (const param of rest.join(";").matchAll(/([\w.-]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))/g)) {
    params.set(param[1].toLowerCase(), param[2] ?? param[3]);
  }
  return { type: type.trim().toLowerCase() || "text/plain", params };
}

/** Decodes bytes in a charset; an unknown or broken charset falls back to windows-1252 (a Latin-1 superset). */
function decodeBytes(bytes: Uint8Array, charset: string | undefined): string {
  const label = (charset ?? "").trim().toLowerCase();
  if (label && label !== "us-ascii" && label !== "ascii") {
    try {
      return new TextDecoder(label).decode(bytes);
    } catch {
      // unknown label: fall through
    }
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return new TextDecoder("windows-1252").decode(bytes);
  }
}

const utf8 = new TextEncoder();

/** The bytes of a string whose characters stand for bytes (code points above 255 are written as UTF-8). */
function textBytes(text: string): number[] {
  const out: number[] = [];
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code < 256) out.push(code);
    else out.push(...utf8.encode(char));
  }
  return out;
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Base64 to bytes, skipping every character outside the alphabet; a trailing partial group is dropped. */
function decodeBase64(text: string): Uint8Array {
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const value = BASE64.indexOf(text[i]);
    if (value < 0) {
      if (text[i] === "=") break;
      continue;
    }
    buffer = ((buffer << 6) | value) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((buffer >> bits) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

/** Quoted-printable to bytes: soft line breaks removed, `=XX` decoded, a malformed `=` kept. */
function decodeQuotedPrintable(text: string, underscoreIsSpace = false): Uint8Array {
  const source = text.replace(/=[ \t]*\n/g, "");
  const out: number[] = [];
  for (let i = 0; i < source.length; i++) {
    const char = source[i];
    if (char === "=" && /^[0-9A-Fa-f]{2}$/.test(source.slice(i + 1, i + 3))) {
      out.push(parseInt(source.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (char === "_" && underscoreIsSpace) {
      out.push(32);
    } else {
      out.push(...textBytes(char));
    }
  }
  return Uint8Array.from(out);
}

/** Decodes RFC 2047 encoded words (`=?charset?B|Q?...?=`) in a header value; malformed ones stay as they are. */
export function decodeEncodedWords(value: string): string {
  return value
    .replace(/(\?=)\s+(=\?)/g, "$1$2") // whitespace between adjacent encoded words is not text
    .replace(/=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g, (_, charset: string, kind: string, data: string) => {
      const bytes = kind.toLowerCase() === "b" ? decodeBase64(data) : decodeQuotedPrintable(data, true);
      return decodeBytes(bytes, charset.split("*")[0]);
    });
}

const ENTITIES: Record<string, string> = {
  nbsp: " ",
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  copy: "©",
  reg: "®",
  trade: "™",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  lsquo: "‘",
  rsquo: "’",
  ldquo: "“",
  rdquo: "”",
  bull: "•",
  middot: "·",
  euro: "€",
  pound: "£",
};

function codePointText(code: number): string {
  return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code < 0xe000)
    ? String.fromCodePoint(code)
    : " ";
}

/** The readable text of an HTML document: scripts, styles and comments dropped, tags removed, entities decoded. */
function htmlText(html: string): string {
  return html
    .replace(/<!--[\s\S]*?(-->|$)/g, " ")
    .replace(/<(script|style|head|title)\b[\s\S]*?(<\/\1\s*>|$)/gi, " ")
    .replace(/<(br|p|div|tr|li|h[1-6]|table|blockquote)\b[^>]*>/gi, "\n")
    .replace(/<\/?[a-zA-Z!][^>]*>/g, " ")
    .replace(/&#(\d{1,7});?/g, (_, d: string) => codePointText(Number(d)))
    .replace(/&#[xX]([0-9a-fA-F]{1,6});?/g, (_, h: string) => codePointText(parseInt(h, 16)))
    .replace(/&([a-zA-Z]+);/g, (entity, name: string) => ENTITIES[name.toLowerCase()] ?? entity);
}

/** The decoded text of a leaf part, in its charset. */
function leafText(part: Part, params: Map<string, string>): string {
  const encoding = (part.headers.get("content-transfer-encoding") ?? "").trim().toLowerCase();
  if (encoding === "base64") return decodeBytes(decodeBase64(part.body), params.get("charset"));
  if (encoding === "quoted-printable") {
    return decodeBytes(decodeQuotedPrintable(part.body), params.get("charset"));
  }
  return part.body; // 7bit, 8bit, binary or none: the corpus already stores the text as characters
}

/** The text/plain and text/html leaves of a part, depth first, in message order. */
function collectText(part: Part, depth: number, plain: string[], html: string[]): void {
  const { type, params } = contentType(part.headers.get("content-type"));
  const disposition = (part.headers.get("content-disposition") ?? "").toLowerCase();
  if (depth < MAX_DEPTH && (type.startsWith("multipart/") || type === "text/plain")) {
    // A declared boundary that never occurs, or none declared, or a multipart body sent as plain text:
    // a "--x" line followed by a Content- header is the boundary.
    const declared = params.get("boundary");
    const split = (declared !== undefined ? splitMultipart(part.body, declared) : null) ??
      splitMultipart(part.body, sniffBoundary(part.body));
    if (split) {
      // A sniffed boundary's preamble is the message's own text; a declared one's is a MIME notice.
      if (declared === undefined || split.boundary !== declared) plain.push(split.preamble);
      for (const child of split.parts) collectText(parsePart(child), depth + 1, plain, html);
      return;
    }
  }
  if (type === "message/rfc822" && depth < MAX_DEPTH) {
    collectText(parsePart(part.body), depth + 1, plain, html);
  } else if (disposition.startsWith("attachment")) {
    return;
  } else if (type === "text/html") {
    html.push(htmlText(leafText(part, params)));
  } else if (type.startsWith("text/") || type.startsWith("multipart/")) {
    plain.push(leafText(part, params));
  }
}

/** The boundary of a body whose header forgot it: a `--x` line right before a Content- header, or null. */
function sniffBoundary(body: string): string | null {
  const match = /^--([^\n]*\S)[ \t]*\n(?=content-[\w-]+:)/im.exec(body);
  return match ? match[1] : null;
}

/** The text before the first `--boundary` line and the parts between such lines, or null when none occurs. */
function splitMultipart(
  body: string,
  boundary: string | null,
): { boundary: string; preamble: string; parts: string[] } | null {
  if (!boundary) return null;
  const delimiter = "--" + boundary;
  const lines = body.split("\n");
  const parts: string[] = [];
  let preamble: string | null = null;
  let current: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const trimmed = lines[i].trimEnd();
    if (trimmed !== delimiter && trimmed !== delimiter + "--") {
      current.push(lines[i]);
      continue;
    }
    if (preamble === null) preamble = current.join("\n");
    else parts.push(current.join("\n"));
    current = [];
    if (trimmed !== delimiter) return { boundary, preamble, parts }; // the closing delimiter: epilogue dropped
  }
  if (preamble === null) return null;
  parts.push(current.join("\n")); // a missing closing delimiter ends the last part
  return { boundary, preamble, parts };
}

/** The body without machine header lines ({@linkcode MACHINE_HEADER}) and their continuations. */
function dropMachineHeaders(body: string): string {
  const kept: string[] = [];
  let dropping = false;
  for (const line of body.split("\n")) {
    const content = line.trimStart();
    const continues: boolean = dropping && content !== line && content !== "" && !HEADER_LINE.test(content);
    dropping = MACHINE_HEADER.test(content) || continues;
    if (!dropping) kept.push(line);
  }
  return kept.join("\n");
}

/** Whitespace tidied: spaces collapsed, lines trimmed, at most one blank line in a row; cut to `max` characters. */
function tidy(text: string, max: number): string {
  const tidied = text
    .replace(/[^\S\n]+/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
  if (tidied.length <= max) return tidied;
  const cut = tidied.lastIndexOf("\n", max);
  return tidied.slice(0, cut > max / 2 ? cut : max).trimEnd();
}

/**
 * The classifier's view of a raw message: `Subject: <decoded subject>`, a newline, then the decoded
 * body (plain parts, else HTML parts as text), whitespace tidied and cut at {@linkcode MAX_BODY_CHARS}.
 */
export function messageText(raw: string): string {
  const text = raw.replace(/\r\n?/g, "\n");
  let subject = "";
  let body: string;
  try {
    const message = parsePart(text);
    subject = decodeEncodedWords(message.headers.get("subject") ?? "");
    const plain: string[] = [];
    const html: string[] = [];
    collectText(message, 0, plain, html);
    body = dropMachineHeaders((plain.length > 0 ? plain : html).join("\n\n"));
  } catch {
    // A decoding bug must not lose the message: keep what follows the first blank line.
    const blank = text.indexOf("\n\n");
    body = dropMachineHeaders(blank < 0 ? "" : text.slice(blank + 2));
  }
  return `Subject: ${tidy(subject, 500)}\n${tidy(body, MAX_BODY_CHARS)}`.trimEnd();
}

/**
 * Subword tokenizers in Hugging Face's `tokenizer.json` format: {@linkcode trainTokenizer} learns a
 * byte-level BPE on a run's training texts, {@linkcode Tokenizer} reads and writes the format and
 * encodes text with character offsets. Reading and writing files is in `tokenizer_file.ts` (Deno only).
 *
 * **Why byte-level BPE.** It is the native tokenizer of two of the three families (GPT-2, RoBERTa) and
 * serves BERT as well; it keeps case, which proper-name tagging and the cloze questions depend on (an
 * uncased WordPiece would erase the main cue for names); it never needs an unknown token, which matters
 * for spam (any byte, any charset); and decoding gives back the exact text, which language-model
 * samples need. One trained tokenizer is shared by all three families, with RoBERTa's special tokens:
 * `<s>` 0 (cls, also GPT-2's start), `<pad>` 1 (RoBERTa's default pad id, from which its positions
 * count), `</s>` 2 (sep), `<unk>` 3, `<mask>` 4.
 *
 * **Why our own encoder.** `@huggingface/tokenizers@0.2.0` (pure JavaScript) reads the same file but
 * returns no offsets, which QA and tagging need to align answers and words with tokens. This encoder
 * follows the library step by step (added-token splitting, normalizer, pre-tokenizer, model) and
 * tests/tokenizer_test.ts checks that both give the same ids on whole data splits, for a trained
 * tokenizer, hand-written BERT (WordPiece) and GPT-2 / RoBERTa (byte-level BPE) files. Where that port and
 * the Rust library transformers uses differ (a capital sigma lowercased, Unicode's spaces, the flags of added
 * tokens, offsets), this follows the Rust library: the test checks it against that library's own outputs
 * (tests/fixtures/hf/tokenizers). Measured on
 * this project's 2-core machine, ids identical, after warm-up: the 2,366 sentiment training sentences
 * (38k tokens) take the library 85-170 ms and this encoder, offsets included, 20-60 ms; the 8,401 QA
 * training contexts of the split at the time (2.2 M tokens) take 7-9 s and 1.3-1.5 s. Training on the sentiment split takes
 * 0.3 s (4,683 entries: merges stop at pairs seen once), on QA contexts or spam 2-4 s (8,192 entries).
 *
 * Offsets are [start, end) indices into the encoded JavaScript string (UTF-16 units), as the Rust library
 * gives them (in code points): an added token's holds the whitespace it swallows (lstrip, rstrip), and a
 * byte-level file whose post-processor trims offsets (`trim_offsets`, as this project's and RoBERTa's do)
 * leaves the spaces a token starts or ends with out of its span (a token of spaces alone has an empty one).
 * One difference is kept: the space `add_prefix_space` puts before a section has no span here, where the
 * library gives it the span of the character after it; so where offsets are not trimmed, a token of that
 * space alone spans nothing here (the library: the next character), and where they are, the first token of
 * a section after an added token keeps its text (the library moves its span past a character: `<mask>the`
 * gives `he`).
 *
 * @module
 */
import {
  type AddedToken,
  type Matchable,
  parseAddedTokens,
  splitAtAddedTokens,
  whitespace,
} from "./added_tokens.ts";
import { trainByteLevelBpe, TRAINED_SPECIAL_TOKENS, type TrainOptions } from "./bpe_train.ts";
import {
  bpeWord,
  byteLevelDecode,
  byteLevelPieces,
  type MergeRanks,
  mergeRanks,
  pieceSpan,
} from "./byte_level.ts";
import {
  bertNormalize,
  type BertNormalizerOptions,
  bertPreTokenize,
  identityNormalize,
  type Normalized,
  wordPiece,
} from "./wordpiece.ts";

export { TRAINED_SPECIAL_TOKENS, type TrainOptions };

/** Token ids of a text without special tokens, and each token's [start, end) in the text. */
export interface Encoding {
  /** Token ids. */
  ids: number[];
  /** Character span of each token. */
  offsets: [number, number][];
}

/** Ids of the special tokens the encoders add; -1 where the tokenizer has none (GPT-2 has no mask). */
export interface SpecialTokens {
  /** Padding. */
  pad: number;
  /** Unknown token. */
  unk: number;
  /** Sequence start (`[CLS]`, `<s>`; GPT-2: `<|endoftext|>`). */
  cls: number;
  /** Separator and sequence end (`[SEP]`, `</s>`; GPT-2: `<|endoftext|>`). */
  sep: number;
  /** Masked-LM mask. */
  mask: number;
}

/**
 * One piece of how a pair of sequences (a question and its context) is laid out: special tokens, or the
 * first (`A`) or second (`B`) sequence, each with its token type.
 */
export type PairPiece =
  | { readonly special: readonly number[]; readonly typeId: number }
  | { readonly sequence: "A" | "B"; readonly typeId: number };

type Model =
  | {
    kind: "bpe";
    ranks: MergeRanks;
    ignoreMerges: boolean;
    addPrefixSpace: boolean;
    trimming: OffsetTrimming | null;
  }
  | {
    kind: "wordpiece";
    prefix: string;
    maxChars: number;
    /** tokenizer.json's WordPiece decoder; null without one (tokens then join with spaces, as HF does). */
    decoder: { prefix: string; cleanup: boolean } | null;
  };

/**
 * A tokenizer.json WordPiece decoder's settings; null for none. Hugging Face refuses a WordPiece decoder
 * without a string `prefix` and a boolean `cleanup`, and so does this.
 */
function wordPieceDecoder(decoder: unknown): { prefix: string; cleanup: boolean } | null {
  if (!decoder || typeof decoder !== "object" || (decoder as { type?: unknown }).type !== "WordPiece") {
    return null;
  }
  const { prefix, cleanup } = decoder as { prefix?: unknown; cleanup?: unknown };
  if (typeof prefix !== "string") {
    fail(`WordPiece decoder.prefix must be a string, got ${JSON.stringify(prefix)}`);
  }
  if (typeof cleanup !== "boolean") {
    fail(`WordPiece decoder.cleanup must be a boolean, got ${JSON.stringify(cleanup)}`);
  }
  return { prefix, cleanup };
}

/** Hugging Face's WordPiece decoder cleanup, applied to each token with the space put before it. */
const CLEANUP: readonly [string, string][] = [
  [" .", "."],
  [" ?", "?"],
  [" !", "!"],
  [" ,", ","],
  [" ' ", "'"],
  [" n't", "n't"],
  [" 'm", "'m"],
  [" do not", " don't"],
  [" 's", "'s"],
  [" 've", "'ve"],
  [" 're", "'re"],
];

/**
 * One token as Hugging Face's WordPiece decoder gives it: a continuation loses its prefix, any other
 * token but the first gets a space before it, then the cleanup (per token: " ," becomes ",").
 */
function wordPieceDecode(
  token: string,
  first: boolean,
  { prefix, cleanup }: { prefix: string; cleanup: boolean },
): string {
  let text = token;
  if (!first) text = text.startsWith(prefix) ? text.slice(prefix.length) : ` ${text}`;
  if (cleanup) { for (const [from, to] of CLEANUP) text = text.replaceAll(from, to); }
  return text;
}

/** How a byte-level post-processor trims offsets: its `add_prefix_space` decides the first token's rule. */
interface OffsetTrimming {
  addPrefixSpace: boolean;
}

/**
 * How a byte-level file's offsets are trimmed of spaces: by its post-processor (ByteLevel or
 * RobertaProcessing, also inside a `Sequence`) unless that sets `trim_offsets` false; null when none trims.
 */
function offsetTrimming(processor: unknown): OffsetTrimming | null {
  const p = (processor ?? {}) as Record<string, unknown>;
  if (p.type === "Sequence") {
    const trimming = Array.isArray(p.processors) ? p.processors.map(offsetTrimming) : [];
    return trimming.find((t) => t !== null) ?? null;
  }
  if ((p.type !== "ByteLevel" && p.type !== "RobertaProcessing") || p.trim_offsets === false) return null;
  return { addPrefixSpace: p.add_prefix_space !== false };
}

/** How many spaces (`Ġ`, the byte-level form of " ") a token starts (or ends) with. */
function byteSpaces(token: string, at: "start" | "end"): number {
  let n = 0;
  while (n < token.length && token[at === "start" ? n : token.length - 1 - n] === "Ġ") n++;
  return n;
}

function fail(what: string): never {
  throw new Error(`Tokenizer.fromJson: ${what}`);
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(`${what} must be an object`);
  return value as Record<string, unknown>;
}

/** The largest token id Hugging Face reads (its ids are `u32`). */
const MAX_TOKEN_ID = 2 ** 32 - 1;

/**
 * A BPE file's `model.merges` as pairs, refused where Hugging Face refuses them: merges are all `"a b"`
 * strings (split at the one space) or all `[a, b]` pairs of strings, and each merge's two parts and the
 * token they make are in the model's vocabulary (a merged token outside it would be encoded as nothing).
 */
function bpeMerges(merges: unknown, vocab: ReadonlyMap<string, number>): [string, string][] {
  if (!Array.isArray(merges)) fail(`model.merges must be an array, got ${JSON.stringify(merges)}`);
  const strings = typeof merges[0] === "string";
  return merges.map((merge: unknown, i) => {
    const where = `model.merges[${i}] ${JSON.stringify(merge)}`;
    if ((typeof merge === "string") !== strings) {
      fail(`${where}: merges must be all "a b" strings or all [a, b] pairs, as model.merges[0] sets`);
    }
    const pair = typeof merge === "string" ? merge.split(" ") : merge;
    if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((part) => typeof part === "string")) {
      fail(`${where} is not a pair of tokens ("a b" or [a, b])`);
    }
    for (const token of [pair[0], pair[1], pair[0] + pair[1]]) {
      if (!vocab.has(token)) fail(`${where}: token ${JSON.stringify(token)} is not in model.vocab`);
    }
    return pair as [string, string];
  });
}

/** The pair layout a tokenizer.json's `post_processor` declares (see {@linkcode Tokenizer.pairLayout}). */
function pairLayoutOf(processor: unknown, special: SpecialTokens): PairPiece[] {
  const bertLike = (cls: number, sep: number): PairPiece[] => [
    { special: [cls], typeId: 0 },
    { sequence: "A", typeId: 0 },
    { special: [sep], typeId: 0 },
    { sequence: "B", typeId: 1 },
    { special: [sep], typeId: 1 },
  ];
  if (typeof processor !== "object" || processor === null) return bertLike(special.cls, special.sep);
  const p = processor as Record<string, unknown>;
  const idOf = (field: string) => {
    const pair = p[field];
    if (!Array.isArray(pair) || !Number.isInteger(pair[1])) {
      fail(`post_processor.${field} must be [token, id]`);
    }
    return (pair as [string, number])[1];
  };
  switch (p.type) {
    case "RobertaProcessing": {
      const [cls, sep] = [idOf("cls"), idOf("sep")];
      return [
        { special: [cls], typeId: 0 },
        { sequence: "A", typeId: 0 },
        { special: [sep, sep], typeId: 0 },
        { sequence: "B", typeId: 0 },
        { special: [sep], typeId: 0 },
      ];
    }
    case "BertProcessing":
      return bertLike(idOf("cls"), idOf("sep"));
    case "TemplateProcessing":
      // One that adds no token (transformers 5 saves GPT-2's so) lays nothing out: the default applies.
      return addsSpecialTokens(p) ? templatePairLayout(p) : bertLike(special.cls, special.sep);
    case "Sequence": {
      const processors = Array.isArray(p.processors) ? p.processors : [];
      return pairLayoutOf(processors.find(laysOutSpecialTokens) ?? null, special);
    }
    default:
      return bertLike(special.cls, special.sep);
  }
}

/** Whether a tokenizer.json post-processor adds special tokens (a `Sequence` holding one does). */
function laysOutSpecialTokens(processor: unknown): boolean {
  const { type, processors } = (processor ?? {}) as { type?: unknown; processors?: unknown };
  if (type === "Sequence") return Array.isArray(processors) && processors.some(laysOutSpecialTokens);
  if (type === "TemplateProcessing") return addsSpecialTokens(processor as Record<string, unknown>);
  return type === "RobertaProcessing" || type === "BertProcessing";
}

/** Whether a `TemplateProcessing`'s templates hold a special token (`$A` alone does not). */
function addsSpecialTokens(template: Record<string, unknown>): boolean {
  return [template.single, template.pair].some((pieces) =>
    Array.isArray(pieces) &&
    pieces.some((piece) => typeof piece === "object" && piece && "SpecialToken" in piece)
  );
}

/**
 * A `TemplateProcessing` post-processor: a single sequence as `cls A sep`, a pair as `pair` lays it
 * out, each special token named by `token(id)`.
 */
function templateProcessing(
  [cls, sep]: [number, number],
  pair: readonly PairPiece[],
  token: (id: number) => string,
): Record<string, unknown> {
  const pieces = (layout: readonly PairPiece[]) =>
    layout.flatMap((piece): object[] =>
      "sequence" in piece
        ? [{ Sequence: { id: piece.sequence, type_id: piece.typeId } }]
        : piece.special.map((id) => ({ SpecialToken: { id: token(id), type_id: piece.typeId } }))
    );
  const ids = new Set([cls, sep, ...pair.flatMap((piece) => "special" in piece ? piece.special : [])]);
  return {
    type: "TemplateProcessing",
    single: pieces([
      { special: [cls], typeId: 0 },
      { sequence: "A", typeId: 0 },
      { special: [sep], typeId: 0 },
    ]),
    pair: pieces(pair),
    special_tokens: Object.fromEntries(
      [...ids].map((id) => [token(id), { id: token(id), ids: [id], tokens: [token(id)] }]),
    ),
  };
}

/** The pieces of a `TemplateProcessing` post-processor's `pair` template; throws naming what is wrong. */
function templatePairLayout(p: Record<string, unknown>): PairPiece[] {
  const tokens = record(p.special_tokens ?? {}, "post_processor.special_tokens");
  if (!Array.isArray(p.pair)) fail("post_processor.pair must be an array");
  const pieces = (p.pair as unknown[]).map((item, i): PairPiece => {
    const where = `post_processor.pair[${i}]`;
    const entry = record(item, where);
    if ("Sequence" in entry) {
      const { id, type_id } = record(entry.Sequence, `${where}.Sequence`);
      if ((id !== "A" && id !== "B") || !Number.isInteger(type_id)) fail(`${where} is not a sequence A or B`);
      return { sequence: id as "A" | "B", typeId: type_id as number };
    }
    const { id, type_id } = record(entry.SpecialToken, `${where}.SpecialToken`);
    const ids = (tokens[id as string] as { ids?: unknown } | undefined)?.ids;
    if (!Array.isArray(ids) || !ids.every(Number.isInteger) || !Number.isInteger(type_id)) {
      fail(`${where}: special token ${JSON.stringify(id)} has no ids in post_processor.special_tokens`);
    }
    return { special: ids as number[], typeId: type_id as number };
  });
  const order = pieces.flatMap((piece) => ("sequence" in piece ? [piece.sequence] : [])).join();
  if (order !== "A,B") fail(`post_processor.pair must hold sequence A then B, got [${order}]`);
  return pieces;
}

/** A tokenizer read from (or trained into) Hugging Face's tokenizer.json: WordPiece or byte-level BPE. */
export class Tokenizer {
  /** Number of ids: the largest id + 1. */
  readonly vocabSize: number;
  /** The ids of the special tokens. */
  readonly special: SpecialTokens;
  /**
   * How a pair is laid out, from the file's post-processor as Hugging Face applies it: RoBERTa's
   * `<s> A </s></s> B </s>` (one token type), BERT's `[CLS] A [SEP] B [SEP]` (type 1 from B on), or a
   * template's own pieces. A file with none of these (GPT-2's has only byte-level offset trimming) gets
   * `cls A sep B sep` with type 1 from B on.
   */
  readonly pairLayout: readonly PairPiece[];
  private readonly json: Record<string, unknown>;
  private readonly model: Model;
  /** The model's own vocabulary: what WordPiece and BPE can spell a word with. */
  private readonly modelVocab = new Map<string, number>();
  /** Every token string's id: the model's and the added tokens. */
  private readonly vocab = new Map<string, number>();
  private readonly tokens: string[] = [];
  private readonly added: AddedToken[];
  private readonly addedByContent = new Map<string, AddedToken>();
  /** Added tokens matched in the raw text, and (with their normalized content) in the normalized text. */
  private readonly rawAdded: Matchable[] = [];
  private readonly normalizedAdded: Matchable[] = [];
  private readonly normalizer: BertNormalizerOptions | null;
  private readonly unkToken: string | null;
  private readonly cache = new Map<string, { ids: number[]; ends: number[] }>();

  private constructor(json: Record<string, unknown>) {
    this.json = json;
    const model = record(json.model, "model");
    const vocab = record(model.vocab, "model.vocab");
    // The largest id + 1: `tokens.length` misses the id 2^32 - 1, which Hugging Face reads and an array
    // keeps as a property, not an element.
    let size = 0;
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) > MAX_TOKEN_ID) {
        const [name, value] = [JSON.stringify(token), JSON.stringify(id)];
        fail(`model.vocab[${name}] = ${value} is not a token id (0 to ${MAX_TOKEN_ID})`);
      }
      this.modelVocab.set(token, id as number);
      this.vocab.set(token, id as number);
      this.tokens[id as number] = token;
      size = Math.max(size, (id as number) + 1);
    }
    this.added = parseAddedTokens(json.added_tokens);
    for (const token of this.added) {
      this.vocab.set(token.content, token.id); // not the model's: the Rust library's WordPiece cannot spell with it
      this.tokens[token.id] = token.content;
      this.addedByContent.set(token.content, token);
      size = Math.max(size, token.id + 1);
    }
    this.unkToken = typeof model.unk_token === "string" ? model.unk_token : null;
    const normalizer = json.normalizer === null ? null : record(json.normalizer, "normalizer");
    if (normalizer !== null && normalizer.type !== "BertNormalizer") {
      fail(`unsupported normalizer "${normalizer.type}" (supported: none, BertNormalizer)`);
    }
    this.normalizer = normalizer as BertNormalizerOptions | null;
    for (const token of this.added) {
      if (token.normalized && this.normalizer) {
        const content = bertNormalize(token.content, 0, this.normalizer).text;
        this.normalizedAdded.push({ content, token });
        this.addedByContent.set(content, token);
      } else {
        this.rawAdded.push({ content: token.content, token });
      }
    }
    const pre = record(json.pre_tokenizer, "pre_tokenizer");
    if (model.type === "BPE" && pre.type === "ByteLevel") {
      if (this.normalizer) fail("a byte-level BPE model with a normalizer is not supported");
      for (const field of ["dropout", "end_of_word_suffix", "continuing_subword_prefix"]) {
        if (model[field]) fail(`unsupported BPE model.${field} ${JSON.stringify(model[field])}`);
      }
      if (model.byte_fallback === true) fail("unsupported BPE model.byte_fallback");
      if (this.unkToken !== null && !this.modelVocab.has(this.unkToken)) {
        fail(`BPE model.unk_token ${JSON.stringify(this.unkToken)} is not in the vocabulary`);
      }
      this.model = {
        kind: "bpe",
        ranks: mergeRanks(bpeMerges(model.merges, this.modelVocab)),
        ignoreMerges: model.ignore_merges === true,
        addPrefixSpace: pre.add_prefix_space === true,
        trimming: offsetTrimming(json.post_processor),
      };
    } else if (model.type === "WordPiece" && pre.type === "BertPreTokenizer") {
      if (this.unkToken === null || !this.modelVocab.has(this.unkToken)) {
        fail(`WordPiece model.unk_token ${JSON.stringify(model.unk_token)} is not in the vocabulary`);
      }
      const { continuing_subword_prefix: prefix, max_input_chars_per_word: maxChars } = model;
      if (typeof prefix !== "string") {
        fail(`WordPiece model.continuing_subword_prefix must be a string, got ${JSON.stringify(prefix)}`);
      }
      // Hugging Face reads it as a `usize`; 2^64 - 1, its largest, reads as 2^64 in JavaScript.
      if (!Number.isInteger(maxChars) || (maxChars as number) < 0 || (maxChars as number) > 2 ** 64) {
        fail(
          `WordPiece model.max_input_chars_per_word ${JSON.stringify(maxChars)} is not an integer from 0 up`,
        );
      }
      this.model = {
        kind: "wordpiece",
        prefix,
        maxChars: maxChars as number,
        decoder: wordPieceDecoder(json.decoder),
      };
    } else {
      fail(
        `unsupported model "${model.type}" with pre_tokenizer "${pre.type}" ` +
          `(supported: WordPiece + BertPreTokenizer, BPE + ByteLevel)`,
      );
    }
    this.vocabSize = size;
    const find = (...names: string[]) =>
      names.map((n) => this.vocab.get(n)).find((id) => id !== undefined) ?? -1;
    this.special = {
      pad: find("[PAD]", "<pad>", "<|endoftext|>"),
      unk: find("[UNK]", "<unk>", "<|endoftext|>"),
      cls: find("[CLS]", "<s>", "<|endoftext|>"),
      sep: find("[SEP]", "</s>", "<|endoftext|>"),
      mask: find("[MASK]", "<mask>"),
    };
    this.pairLayout = pairLayoutOf(json.post_processor, this.special);
  }

  /** Reads a parsed tokenizer.json; throws naming the field it cannot use. */
  static fromJson(json: unknown): Tokenizer {
    return new Tokenizer(structuredClone(record(json, "tokenizer.json")));
  }

  /**
   * The tokenizer.json object: the file read (a copy), and, where its post-processor adds no special
   * tokens (GPT-2's only trims offsets), a `TemplateProcessing` after it that adds what this project's
   * encoders add around a text (`cls text sep`) and a pair ({@linkcode Tokenizer.pairLayout}), so that
   * Hugging Face's tokenizer of a saved model gives the inputs the model was trained on.
   */
  toJson(): object {
    const json = structuredClone(this.json);
    const { cls, sep } = this.special;
    if (laysOutSpecialTokens(json.post_processor) || cls < 0 || sep < 0) return json;
    const template = templateProcessing([cls, sep], this.pairLayout, (id) => this.tokens[id]);
    const { type } = (json.post_processor ?? {}) as { type?: unknown };
    json.post_processor = json.post_processor && type !== "TemplateProcessing"
      ? { type: "Sequence", processors: [json.post_processor, template] }
      : template;
    return json;
  }

  /** The token string of an id (undefined outside the vocabulary). */
  idToToken(id: number): string | undefined {
    return this.tokens[id];
  }

  /** Encodes `text` without special tokens. */
  encode(text: string): Encoding {
    const ids: number[] = [];
    const offsets: [number, number][] = [];
    for (const section of splitAtAddedTokens(text, this.rawAdded)) {
      if (section.token) {
        // Its span holds the whitespace it swallowed, which a trimming byte-level file trims again.
        const span: [number, number] = [section.start, section.start + section.text.length];
        const trim = this.model.kind === "bpe" && this.model.trimming !== null;
        const [leading, trailing] = trim
          ? [whitespace(section.text, "start"), whitespace(section.text, "end")]
          : [0, 0];
        offsets.push(
          this.trimmed(span, leading, trailing, ids.length === 0, (n) => span[0] + n, (n) => span[1] - n),
        );
        ids.push(section.token.id);
        continue;
      }
      if (this.model.kind === "bpe") {
        this.encodeBytes(section.text, section.start, ids, offsets); // byte-level BPE has no normalizer
        continue;
      }
      const normalized = this.normalizer
        ? bertNormalize(section.text, section.start, this.normalizer)
        : identityNormalize(section.text, section.start);
      for (const sub of splitAtAddedTokens(normalized.text, this.normalizedAdded)) {
        if (sub.token) {
          ids.push(sub.token.id);
          offsets.push([normalized.starts[sub.start], normalized.ends[sub.start + sub.text.length - 1]]);
        } else {
          this.encodeWords(sub.text, sub.start, normalized, ids, offsets);
        }
      }
    }
    return { ids, offsets };
  }

  /** Decodes ids to text; special tokens are left out unless `keepSpecial`. */
  decode(ids: readonly number[], keepSpecial = false): string {
    const model = this.model;
    const parts: string[] = [];
    let bytes = ""; // byte-level characters not yet decoded
    for (const id of ids) {
      const token = this.tokens[id];
      const added = token === undefined ? undefined : this.addedByContent.get(token);
      if (token === undefined || (added?.special && !keepSpecial)) continue;
      if (model.kind === "wordpiece") {
        parts.push(model.decoder ? wordPieceDecode(token, parts.length === 0, model.decoder) : token);
      } else if (added) {
        parts.push(byteLevelDecode(bytes), token);
        bytes = "";
      } else {
        bytes += token;
      }
    }
    if (model.kind === "wordpiece") return parts.join(model.decoder ? "" : " ");
    const text = parts.join("") + byteLevelDecode(bytes);
    return model.addPrefixSpace && text.startsWith(" ") ? text.slice(1) : text; // the space encode added
  }

  /** WordPiece on a normalized section `sub` starting at `subStart` of `normalized.text`. */
  private encodeWords(
    sub: string,
    subStart: number,
    normalized: Normalized,
    ids: number[],
    offsets: [number, number][],
  ): void {
    const model = this.model as Extract<Model, { kind: "wordpiece" }>;
    for (const [from, to] of bertPreTokenize(sub)) {
      const word = sub.slice(from, to);
      const pieces = wordPiece(word, this.modelVocab, model.prefix, model.maxChars);
      const at = subStart + from;
      for (const piece of pieces ?? [{ token: this.unkToken!, start: 0, end: word.length }]) {
        ids.push(this.idOf(piece.token));
        offsets.push([normalized.starts[at + piece.start], normalized.ends[at + piece.end - 1]]);
      }
    }
  }

  /** Byte-level BPE on the section `sub` of the text, which starts at `origin`. */
  private encodeBytes(
    sub: string,
    origin: number,
    ids: number[],
    offsets: [number, number][],
  ): void {
    const model = this.model as Extract<Model, { kind: "bpe" }>;
    for (const piece of byteLevelPieces(sub, origin, model.addPrefixSpace)) {
      const { ids: pieceIds, ends } = this.bpePiece(piece.text);
      for (let k = 0, from = 0; k < pieceIds.length; from = ends[k], k++) {
        if (pieceIds[k] < 0) continue;
        const to = ends[k];
        // The library counts the token's spaces (Ġ; an unknown token's string has none) and moves its span
        // past as many characters; here each space byte's own span is used, so the space a prefix put
        // before a section, which has no span, does not cut the character after it.
        const token = this.tokens[pieceIds[k]];
        const [leading, trailing] = model.trimming
          ? [byteSpaces(token, "start"), byteSpaces(token, "end")]
          : [0, 0];
        const span = pieceSpan(piece, from, to, origin);
        offsets.push(this.trimmed(
          span,
          leading,
          trailing,
          ids.length === 0 || span[0] === 0,
          (n) => n < to - from ? pieceSpan(piece, from + n, to, origin)[0] : span[1],
          (n) => n < to - from ? pieceSpan(piece, from, to - n, origin)[1] : span[0],
        ));
        ids.push(pieceIds[k]);
      }
    }
  }

  /**
   * A token's span trimmed as the library's byte-level post-processor trims it: `leading` spaces off its
   * start, `trailing` off its end (`after(n)` and `before(n)` say where), never past each other; a single
   * leading space of the first token stays when the post-processor's `add_prefix_space` is on (the library's
   * rule, whatever the pre-tokenizer does).
   */
  private trimmed(
    [start, end]: [number, number],
    leading: number,
    trailing: number,
    first: boolean,
    after: (n: number) => number,
    before: (n: number) => number,
  ): [number, number] {
    const keepsFirstSpace = this.model.kind === "bpe" && this.model.trimming?.addPrefixSpace === true;
    if (leading > 0 && !(first && keepsFirstSpace && leading === 1)) start = Math.min(after(leading), end);
    if (trailing > 0) end = Math.max(before(trailing), start);
    return [start, end];
  }

  /**
   * Ids of one byte-level piece (-1 for a token outside the vocabulary with no unknown token: dropped, as the
   * library drops it). Only a single character can be outside it: the loader refuses merges that make one.
   */
  private bpePiece(text: string): { ids: number[]; ends: number[] } {
    const cached = this.cache.get(text);
    if (cached) return cached;
    const model = this.model as Extract<Model, { kind: "bpe" }>;
    let result: { ids: number[]; ends: number[] };
    if (model.ignoreMerges && this.modelVocab.has(text)) {
      result = { ids: [this.modelVocab.get(text)!], ends: [text.length] };
    } else {
      const { tokens, ends } = bpeWord(text, model.ranks);
      const unknown = this.unkToken === null ? -1 : this.idOf(this.unkToken);
      result = { ids: tokens.map((t) => (this.modelVocab.has(t) ? this.idOf(t) : unknown)), ends };
    }
    if (this.cache.size > 200_000) this.cache.clear();
    if (text.length < 256) this.cache.set(text, result);
    return result;
  }

  /** The library's id of a model token: an added token's id first, then the vocabulary. */
  private idOf(token: string): number {
    return this.addedByContent.get(token)?.id ?? this.vocab.get(token)!;
  }
}

/**
 * Trains a byte-level BPE on `texts` (the training split of a run's data); see
 * {@linkcode trainByteLevelBpe} for the rule. Deterministic: the same texts in the same order give the
 * same tokenizer.
 */
export function trainTokenizer(texts: readonly string[], options: TrainOptions = {}): Tokenizer {
  return Tokenizer.fromJson(trainByteLevelBpe(texts, options));
}

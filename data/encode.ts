/**
 * Examples to padded model inputs on the host (typed arrays [B, T], row-major); the training loop turns
 * them into int32 tensors. Every sequence is `cls ... sep` (a language-model text cut at maxLength has
 * no sep; pairs follow the tokenizer's pair layout, `cls question sep context sep` for a trained one),
 * padded with the pad id and attention mask 0 up to `maxLength`.
 *
 * The same encoding serves every family: BERT and RoBERTa classify from the first token (`cls`), GPT-2
 * from the last real one (`sep`), so the added tokens are harmless for GPT-2 and give its causal LM a
 * start token to predict the first word from. Labels follow Hugging Face: -100 is ignored by the loss.
 *
 * @module
 */
import { Random } from "../engine/random.ts";
import type { LmExample, QaExample, TaggedExample, TextExample } from "./datasets.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Label value the losses ignore (Hugging Face's convention). */
export const IGNORE_INDEX: number = -100;

/** Share of tokens a masked-LM batch selects, and how selected tokens are changed (BERT's 80/10/10). */
const MASKING = { probability: 0.15, mask: 0.8, random: 0.1 } as const;

/** Padded inputs of one batch; every [B, T] array is row-major. */
export interface EncodedBatch {
  /** Token ids [B, T]. */
  inputIds: Int32Array;
  /** 1 for real tokens, 0 for padding [B, T]. */
  attentionMask: Int32Array;
  /** B: rows (an example each; with {@linkcode encodeQa}'s windows, a window each). */
  batch: number;
  /** T (= maxLength). */
  length: number;
  /** Classification: class ids [B]; tagging and LM: [B, T] with -100 where no loss is taken. */
  labels?: Int32Array;
  /** QA: answer start token [B] (0, the `cls` token, when the answer is cut off by truncation). */
  startPositions?: Int32Array;
  /** QA: answer end token [B], inclusive (0 when cut off). */
  endPositions?: Int32Array;
  /** QA: 1 for `context sep`, 0 elsewhere [B, T]; for BERT only (RoBERTa has a single token type). */
  tokenTypeIds?: Int32Array;
  /** Tagging: the word each token belongs to, -1 for special tokens and padding [B, T]. */
  wordIds?: Int32Array;
  /** QA: each context token's [start, end) in its context [B, T, 2]; -1 for other tokens. */
  contextOffsets?: Int32Array;
  /** QA: the example each row comes from, an index into the examples encoded [B] (windows share one). */
  exampleIndex?: Int32Array;
}

function check(
  what: string,
  examples: readonly unknown[],
  tokenizer: Tokenizer,
  maxLength: number,
  min: number,
) {
  if (examples.length === 0) throw new Error(`${what}: no examples`);
  if (!Number.isInteger(maxLength) || maxLength < min) {
    throw new Error(`${what}: maxLength must be an integer >= ${min}, got ${maxLength}`);
  }
  const { pad, cls, sep } = tokenizer.special;
  if (pad < 0 || cls < 0 || sep < 0) {
    throw new Error(
      `${what}: the tokenizer needs pad, cls and sep tokens (has ${JSON.stringify(tokenizer.special)})`,
    );
  }
}

/** A batch of B rows of `length`, all padding. */
function emptyBatch(batch: number, length: number, pad: number): EncodedBatch {
  return {
    inputIds: new Int32Array(batch * length).fill(pad),
    attentionMask: new Int32Array(batch * length),
    batch,
    length,
  };
}

/** Writes `ids` into row `b` from column 0 and sets their attention mask. */
function putRow(out: EncodedBatch, b: number, ids: readonly number[]): void {
  out.inputIds.set(ids, b * out.length);
  out.attentionMask.fill(1, b * out.length, b * out.length + ids.length);
}

/** `cls text sep` per example (text truncated to maxLength - 2 tokens); labels [B] are the class ids. */
export function encodeClassification(
  examples: readonly TextExample[],
  tokenizer: Tokenizer,
  maxLength: number,
): EncodedBatch {
  check("encodeClassification", examples, tokenizer, maxLength, 3);
  const { pad, cls, sep } = tokenizer.special;
  const out = emptyBatch(examples.length, maxLength, pad);
  out.labels = new Int32Array(examples.length);
  examples.forEach((example, b) => {
    if (!Number.isInteger(example.label) || example.label < 0) {
      throw new Error(`encodeClassification: example ${b} has label ${example.label}`);
    }
    putRow(out, b, [cls, ...tokenizer.encode(example.text).ids.slice(0, maxLength - 2), sep]);
    out.labels![b] = example.label;
  });
  return out;
}

/**
 * `cls words sep` with the words joined by single spaces. Labels [B, T]: a word's tag on its first
 * token, -100 on its other tokens, on special tokens and on padding; `wordIds` maps every token to its
 * word, so predictions map back to words. Words past the truncation (or that the tokenizer drops, such
 * as control characters under a BERT normalizer) have no token; wordIds shows which words are present.
 */
export function encodeTagging(
  examples: readonly TaggedExample[],
  tokenizer: Tokenizer,
  maxLength: number,
): EncodedBatch {
  check("encodeTagging", examples, tokenizer, maxLength, 3);
  const { pad, cls, sep } = tokenizer.special;
  const out = emptyBatch(examples.length, maxLength, pad);
  out.labels = new Int32Array(examples.length * maxLength).fill(IGNORE_INDEX);
  out.wordIds = new Int32Array(examples.length * maxLength).fill(-1);
  examples.forEach((example, b) => {
    if (example.words.length !== example.tags.length) {
      throw new Error(
        `encodeTagging: example ${b} has ${example.words.length} words but ${example.tags.length} tags`,
      );
    }
    const wordEnds: number[] = [];
    let text = "";
    example.words.forEach((word, i) => {
      text += (i > 0 ? " " : "") + word;
      wordEnds.push(text.length);
    });
    const { ids, offsets } = tokenizer.encode(text);
    const kept = Math.min(ids.length, maxLength - 2);
    putRow(out, b, [cls, ...ids.slice(0, kept), sep]);
    let word = 0;
    let labelled = -1;
    for (let t = 0; t < kept; t++) {
      while (word < wordEnds.length - 1 && offsets[t][0] >= wordEnds[word]) word++;
      const at = b * maxLength + 1 + t;
      out.wordIds![at] = word;
      if (word !== labelled) {
        out.labels![at] = example.tags[word];
        labelled = word;
      }
    }
  });
  return out;
}

/** Index of the first token whose span ends after `char`, in [from, to); `to` when none. */
function tokenAt(offsets: readonly [number, number][], char: number, from: number, to: number): number {
  let t = from;
  while (t < to && offsets[t][1] <= char) t++;
  return t;
}

/** Special tokens the tokenizer's pair layout adds around a question and its context (3 or 4 usually). */
export function pairSpecialTokens(tokenizer: Tokenizer): number {
  return tokenizer.pairLayout.reduce((n, piece) => n + ("special" in piece ? piece.special.length : 0), 0);
}

/** Options of {@linkcode encodeQa}. */
export interface QaEncodeOptions {
  /**
   * Tokens of context that consecutive windows share (Hugging Face's `doc_stride`): a context longer
   * than a row holds is split into overlapping windows, one row each, so no answer is out of reach.
   * Absent: one row per example, its context cut at the end.
   */
  stride?: number;
}

/** One row of {@linkcode encodeQa}: its ids, where its context window starts in the row, and its answer. */
interface QaRow {
  ids: number[];
  typeIds: number[];
  example: number;
  first: number;
  window: [number, number];
  offsets: readonly [number, number][];
  answer: [number, number] | null;
}

/**
 * A question and its context in the tokenizer's pair layout ({@linkcode Tokenizer.pairLayout}: `cls
 * question sep context sep` with token type 1 from the context on for a trained tokenizer or BERT's,
 * `<s> question </s></s> context </s>` for RoBERTa's): the question keeps at most half of maxLength, the
 * context fills the rest. Without `stride` the context is cut at the end, one row per example; with
 * it, as Hugging Face's `return_overflowing_tokens` with `stride`, a long context becomes windows that
 * each share `stride` tokens with the one before, a row each (`exampleIndex` says whose). Start and end
 * positions are the tokens holding the answer's first and last characters; a row whose window does not
 * hold the whole answer points at position 0, as Hugging Face does. `contextOffsets` gives each context
 * token's span in its context, to read predicted answers back. Cloze contexts (10 sentences) have
 * about 270 tokens: cut at the end, 47% of answers fit at maxLength 128, 81% at 256, 97% at 384
 * (validation split, a tokenizer trained on the QA contexts).
 */
export function encodeQa(
  examples: readonly QaExample[],
  tokenizer: Tokenizer,
  maxLength: number,
  options: QaEncodeOptions = {},
): EncodedBatch {
  const { stride } = options;
  const layout = tokenizer.pairLayout;
  const specials = pairSpecialTokens(tokenizer);
  check("encodeQa", examples, tokenizer, maxLength, specials + 2);
  if (stride !== undefined && !(Number.isInteger(stride) && stride >= 0)) {
    throw new Error(`encodeQa: stride must be an integer >= 0, got ${stride}`);
  }
  const rows: QaRow[] = [];
  examples.forEach((example, b) => {
    const { text, start } = example.answer;
    if (example.context.slice(start, start + text.length) !== text || text.length === 0) {
      throw new Error(`encodeQa: example ${b}: the answer "${text}" is not at ${start} of its context`);
    }
    const longest = Math.min(Math.floor(maxLength / 2), maxLength - specials); // the special tokens fit
    const question = tokenizer.encode(example.question).ids.slice(0, longest);
    const context = tokenizer.encode(example.context);
    const room = maxLength - question.length - specials;
    if (stride !== undefined && stride >= room) {
      throw new Error(
        `encodeQa: example ${b}: stride ${stride} must be below the ${room} context tokens a row of ` +
          `${maxLength} holds beside a ${question.length}-token question`,
      );
    }
    const startToken = tokenAt(context.offsets, start, 0, context.ids.length);
    const endToken = tokenAt(context.offsets, start + text.length - 1, startToken, context.ids.length);
    for (let from = 0;; from += room - stride!) {
      const to = Math.min(context.ids.length, from + room);
      const row: QaRow = {
        ids: [],
        typeIds: [],
        example: b,
        first: 0,
        window: [from, to],
        offsets: context.offsets,
        answer: null,
      };
      for (const piece of layout) {
        const ids = "special" in piece
          ? piece.special
          : piece.sequence === "A"
          ? question
          : context.ids.slice(from, to);
        if ("sequence" in piece && piece.sequence === "B") row.first = row.ids.length;
        row.ids.push(...ids);
        row.typeIds.push(...ids.map(() => piece.typeId));
      }
      if (startToken >= from && endToken < to) {
        row.answer = [row.first + startToken - from, row.first + endToken - from];
      }
      rows.push(row);
      if (stride === undefined || to >= context.ids.length) break;
    }
  });
  const out = emptyBatch(rows.length, maxLength, tokenizer.special.pad);
  out.startPositions = new Int32Array(rows.length);
  out.endPositions = new Int32Array(rows.length);
  out.tokenTypeIds = new Int32Array(rows.length * maxLength);
  out.contextOffsets = new Int32Array(rows.length * maxLength * 2).fill(-1);
  out.exampleIndex = Int32Array.from(rows, (row) => row.example);
  rows.forEach((row, r) => {
    putRow(out, r, row.ids);
    out.tokenTypeIds!.set(row.typeIds, r * maxLength);
    const [from, to] = row.window;
    for (let t = from; t < to; t++) {
      out.contextOffsets!.set(row.offsets[t], 2 * (r * maxLength + row.first + t - from));
    }
    if (row.answer) [out.startPositions![r], out.endPositions![r]] = row.answer;
  });
  return out;
}

/**
 * `cls text sep` for language modelling (a text longer than maxLength - 2 tokens is cut, and then has no
 * sep: the row is cls and its first maxLength - 1 tokens). Causal: labels are the ids (the model shifts them), -100 on
 * padding. Masked: each real token (not cls, sep or padding) is selected with probability 0.15; a
 * selected token becomes the mask token (80%), a random non-special token (10%) or stays (10%), and
 * is the only kind of position with a label. Deterministic: the same examples and seed give the same batch.
 */
export function encodeLm(
  examples: readonly LmExample[],
  tokenizer: Tokenizer,
  maxLength: number,
  mode: "causal" | "masked",
  seed: number,
): EncodedBatch {
  check("encodeLm", examples, tokenizer, maxLength, 3);
  const { pad, cls, sep, mask } = tokenizer.special;
  if (mode === "masked" && mask < 0) {
    throw new Error("encodeLm: masked mode needs a tokenizer with a mask token");
  }
  const out = emptyBatch(examples.length, maxLength, pad);
  out.labels = new Int32Array(examples.length * maxLength).fill(IGNORE_INDEX);
  examples.forEach((example, b) => {
    // A row ends in sep only where its text ends and sep fits: a causal model is not taught to predict
    // an end in the middle of a sentence.
    const tokens = tokenizer.encode(example.text).ids;
    const ids = tokens.length <= maxLength - 2
      ? [cls, ...tokens, sep]
      : [cls, ...tokens.slice(0, maxLength - 1)];
    putRow(out, b, ids);
    if (mode === "causal") out.labels!.set(ids, b * maxLength);
  });
  if (mode === "masked") maskTokens(out, tokenizer, seed);
  return out;
}

/** Applies BERT's 80/10/10 masking to the real tokens of a batch, writing their labels. */
function maskTokens(out: EncodedBatch, tokenizer: Tokenizer, seed: number): void {
  const special = new Set(Object.values(tokenizer.special));
  const random = new Random(seed);
  for (let i = 0; i < out.inputIds.length; i++) {
    const id = out.inputIds[i];
    if (out.attentionMask[i] === 0 || special.has(id)) continue;
    if (random.uniform() >= MASKING.probability) continue;
    out.labels![i] = id;
    const action = random.uniform();
    if (action < MASKING.mask) {
      out.inputIds[i] = tokenizer.special.mask;
    } else if (action < MASKING.mask + MASKING.random) {
      let replacement: number;
      do replacement = random.int(tokenizer.vocabSize); while (special.has(replacement));
      out.inputIds[i] = replacement;
    }
  }
}

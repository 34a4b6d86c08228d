/**
 * Evaluation metrics, computed on the host exactly as the reference implementations do, so numbers
 * here can be compared with published ones:
 *
 * - {@linkcode accuracy}, {@linkcode tokenAccuracy}, {@linkcode maskedLmAccuracy}: fractions correct;
 * - {@linkcode spanF1}: entity-level precision, recall and F1 as seqeval computes them for BIO tags
 *   (default mode, micro-averaged over types);
 * - {@linkcode squadScores}: exact match and F1 as the official SQuAD v1.1 evaluation script;
 * - {@linkcode perplexity}: exp of a mean token cross-entropy;
 * - {@linkcode argmaxRows} and {@linkcode bestSpan}: logits to predictions, the latter as Hugging Face's
 *   question-answering pipeline picks an answer span.
 *
 * @module
 */

/** Throws unless two inputs have the same length, naming the metric and both lengths. */
function sameLength(metric: string, what: string, a: { length: number }, b: { length: number }): void {
  if (a.length !== b.length) {
    throw new Error(`${metric}: ${a.length} ${what} but ${b.length} labels`);
  }
}

/**
 * The fraction of predictions equal to their label (classification accuracy), in [0, 1]; NaN for
 * no examples.
 */
export function accuracy<T>(predictions: ArrayLike<T>, labels: ArrayLike<T>): number {
  sameLength("accuracy", "predictions", predictions, labels);
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (predictions[i] === labels[i]) correct++;
  return correct / labels.length;
}

/**
 * The fraction of tokens tagged correctly over all sequences, as seqeval's `accuracy_score` (every
 * token counts, `O` included); NaN for no tokens. Sequences must match in number and length.
 */
export function tokenAccuracy<T>(
  predicted: readonly (readonly T[])[],
  gold: readonly (readonly T[])[],
): number {
  sameLength("tokenAccuracy", "predicted sequences", predicted, gold);
  let correct = 0;
  let total = 0;
  for (let s = 0; s < gold.length; s++) {
    if (predicted[s].length !== gold[s].length) {
      throw new Error(
        `tokenAccuracy: sequence ${s} has ${predicted[s].length} predicted tags but ${
          gold[s].length
        } gold tags`,
      );
    }
    for (let i = 0; i < gold[s].length; i++) if (predicted[s][i] === gold[s][i]) correct++;
    total += gold[s].length;
  }
  return correct / total;
}

/**
 * Masked-LM accuracy: correct predictions over the positions whose label is not `ignoreIndex`
 * (Hugging Face marks unmasked positions with -100); NaN when no position is masked.
 */
export function maskedLmAccuracy(
  predictions: ArrayLike<number>,
  labels: ArrayLike<number>,
  ignoreIndex = -100,
): number {
  sameLength("maskedLmAccuracy", "predictions", predictions, labels);
  let correct = 0;
  let total = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === ignoreIndex) continue;
    total++;
    if (predictions[i] === labels[i]) correct++;
  }
  return correct / total;
}

/** Perplexity from a mean token cross-entropy in nats: `exp(meanCrossEntropy)`. */
export function perplexity(meanCrossEntropy: number): number {
  return Math.exp(meanCrossEntropy);
}

/**
 * The index of the largest value in each row of row-major logits `[N, classes]`. Ties go to the
 * first index, and a row holding NaN gives its first NaN, as NumPy's `argmax` does.
 */
export function argmaxRows(logits: ArrayLike<number>, classes: number): Int32Array {
  if (!Number.isInteger(classes) || classes < 1 || logits.length % classes !== 0) {
    throw new Error(`argmaxRows: ${logits.length} logits do not form rows of ${classes} classes`);
  }
  const rows = logits.length / classes;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    let best = 0;
    for (let c = 0; c < classes; c++) {
      const v = logits[base + c];
      if (Number.isNaN(v)) {
        best = c;
        break;
      }
      if (v > logits[base + best]) best = c;
    }
    out[r] = best;
  }
  return out;
}

/** A chosen answer span: token indices, inclusive, and its score (start logit + end logit). */
export interface Span {
  /** First token of the answer. */
  start: number;
  /** Last token of the answer (inclusive). */
  end: number;
  /** `startLogits[start] + endLogits[end]`. */
  score: number;
}

/**
 * The answer span of one sequence as Hugging Face's question-answering pipeline chooses it: the pair
 * start <= end < start + maxAnswerLength maximising startLogit + endLogit (the pipeline's product of
 * softmax probabilities orders pairs the same way), with both ends at positions `allowed` marks
 * (the context tokens). Ties go to the earliest start, then the earliest end. Null when no position
 * is allowed.
 */
export function bestSpan(
  startLogits: ArrayLike<number>,
  endLogits: ArrayLike<number>,
  allowed: ArrayLike<boolean | number>,
  maxAnswerLength = 15,
): Span | null {
  const n = startLogits.length;
  if (endLogits.length !== n || allowed.length !== n) {
    throw new Error(
      `bestSpan: ${n} start logits, ${endLogits.length} end logits and ${allowed.length} mask entries`,
    );
  }
  if (!Number.isInteger(maxAnswerLength) || maxAnswerLength < 1) {
    throw new Error(`bestSpan: maxAnswerLength must be a positive integer, got ${maxAnswerLength}`);
  }
  let best: Span | null = null;
  for (let s = 0; s < n; s++) {
    if (!allowed[s]) continue;
    for (let e = s; e < Math.min(n, s + maxAnswerLength); e++) {
      if (!allowed[e]) continue;
      const score = startLogits[s] + endLogits[e];
      if (best === null || score > best.score) best = { start: s, end: e, score };
    }
  }
  return best;
}

/** One entity as seqeval finds it: its type and first and last token (inclusive). */
export interface Entity {
  /** The tag's type (`PER` for `B-PER`), or `_` for a bare `B`/`I`. */
  type: string;
  /** First token, counted over the sequences joined with one `O` between them. */
  start: number;
  /** Last token (inclusive), on the same count. */
  end: number;
}

/**
 * The entities of tag sequences as seqeval's `get_entities` (default, non-strict mode) finds them:
 * a chunk starts at `B`, at an `I` after `O`, and at any tag whose type differs from the previous
 * one; it ends before `O`, `B`, or a change of type. Sequences are joined with an `O` between them,
 * so positions count across sequences exactly as seqeval's.
 */
export function entities(sequences: readonly (readonly string[])[]): Entity[] {
  const found: Entity[] = [];
  let prevTag = "O";
  let prevType = "";
  let begin = 0;
  let i = 0;
  const visit = (label: string) => {
    const tag = label.charAt(0);
    const dash = label.indexOf("-", 1);
    const type = (dash < 0 ? label.slice(1) : label.slice(dash + 1)) || "_";
    if (endOfChunk(prevTag, tag, prevType, type)) found.push({ type: prevType, start: begin, end: i - 1 });
    if (startOfChunk(prevTag, tag, prevType, type)) begin = i;
    prevTag = tag;
    prevType = type;
    i++;
  };
  for (const sequence of sequences) {
    for (const label of sequence) visit(label);
    visit("O");
  }
  visit("O");
  return found;
}

function endOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (prevTag === "E" || prevTag === "S") return true;
  if ((prevTag === "B" || prevTag === "I") && (tag === "B" || tag === "S" || tag === "O")) return true;
  return prevTag !== "O" && prevTag !== "." && prevType !== type;
}

function startOfChunk(prevTag: string, tag: string, prevType: string, type: string): boolean {
  if (tag === "B" || tag === "S") return true;
  if ((prevTag === "E" || prevTag === "S" || prevTag === "O") && (tag === "E" || tag === "I")) return true;
  return tag !== "O" && tag !== "." && prevType !== type;
}

/** Precision, recall and F1 with the counts behind them. */
export interface PrecisionRecall {
  /** Correct over predicted (0 when nothing was predicted). */
  precision: number;
  /** Correct over gold (0 when there is no gold entity). */
  recall: number;
  /** Harmonic mean of precision and recall (0 when both are 0). */
  f1: number;
  /** Entities predicted with the right type and boundaries. */
  correct: number;
  /** Entities predicted. */
  predicted: number;
  /** Gold entities. */
  gold: number;
}

/** {@linkcode spanF1}'s result: the micro average over types and each type's own scores. */
export interface SpanScores extends PrecisionRecall {
  /** Scores per entity type, types sorted. */
  byType: Record<string, PrecisionRecall>;
}

function scores(correct: number, predicted: number, gold: number): PrecisionRecall {
  const precision = predicted > 0 ? correct / predicted : 0;
  const recall = gold > 0 ? correct / gold : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, f1, correct, predicted, gold };
}

/**
 * Entity-level precision, recall and F1 of predicted BIO tag sequences, as seqeval's default mode
 * (`f1_score(y_true, y_pred)`) computes them: an entity counts as correct only with the same type,
 * start and end; scores are micro-averaged over types, and a zero division gives 0.
 *
 * ```ts
 * spanF1(
 *   [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
 *   [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
 * ).f1; // 0.5
 * ```
 */
export function spanF1(
  predicted: readonly (readonly string[])[],
  gold: readonly (readonly string[])[],
): SpanScores {
  sameLength("spanF1", "predicted sequences", predicted, gold);
  for (let s = 0; s < gold.length; s++) {
    if (predicted[s].length !== gold[s].length) {
      throw new Error(
        `spanF1: sequence ${s} has ${predicted[s].length} predicted tags but ${gold[s].length} gold tags`,
      );
    }
  }
  const key = (e: Entity) => `${e.type}\u0000${e.start}\u0000${e.end}`;
  const goldKeys = new Map(entities(gold).map((e) => [key(e), e.type]));
  const predictedKeys = new Map(entities(predicted).map((e) => [key(e), e.type]));
  const counts = new Map<string, { correct: number; predicted: number; gold: number }>();
  const count = (type: string) => {
    let c = counts.get(type);
    if (!c) counts.set(type, c = { correct: 0, predicted: 0, gold: 0 });
    return c;
  };
  for (const type of goldKeys.values()) count(type).gold++;
  for (const [k, type] of predictedKeys) {
    count(type).predicted++;
    if (goldKeys.has(k)) count(type).correct++;
  }
  const byType: Record<string, PrecisionRecall> = {};
  let correct = 0;
  for (const type of [...counts.keys()].sort()) {
    const c = counts.get(type)!;
    byType[type] = scores(c.correct, c.predicted, c.gold);
    correct += c.correct;
  }
  return { ...scores(correct, predictedKeys.size, goldKeys.size), byType };
}

/** Python's `str.split()` whitespace, which differs from JavaScript's `\s` (U+001C-1F, U+0085, no U+FEFF). */
// deno-lint-ignore no-control-regex -- Python counts the separators U+001C-001F as whitespace.
const PYTHON_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
/** Python's `string.punctuation`. */
const PUNCTUATION = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;
/** `\b(a|an|the)\b` with Python's Unicode word characters. */
const ARTICLES = /(?<![\p{L}\p{N}_])(?:a|an|the)(?![\p{L}\p{N}_])/gu;

/**
 * The SQuAD v1.1 script's `normalize_answer`: lowercase, drop ASCII punctuation, replace the
 * articles a/an/the by a space, and collapse whitespace.
 */
export function normalizeAnswer(text: string): string {
  const words = text.toLowerCase().replace(PUNCTUATION, "").replace(ARTICLES, " ").split(PYTHON_WHITESPACE);
  return words.filter((w) => w !== "").join(" ");
}

function tokens(text: string): string[] {
  const normalized = normalizeAnswer(text);
  return normalized === "" ? [] : normalized.split(" ");
}

/** SQuAD exact match of one prediction against one gold answer: 1 or 0, after normalisation. */
export function squadExactMatch(prediction: string, answer: string): number {
  return normalizeAnswer(prediction) === normalizeAnswer(answer) ? 1 : 0;
}

/** SQuAD F1 of one prediction against one gold answer: harmonic mean over the bags of normalised tokens. */
export function squadF1(prediction: string, answer: string): number {
  const predicted = tokens(prediction);
  const gold = tokens(answer);
  const remaining = new Map<string, number>();
  for (const t of gold) remaining.set(t, (remaining.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of predicted) {
    const left = remaining.get(t) ?? 0;
    if (left > 0) {
      same++;
      remaining.set(t, left - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / predicted.length;
  const recall = same / gold.length;
  return (2 * precision * recall) / (precision + recall);
}

/** {@linkcode squadScores}' result, in percent as the official script prints them. */
export interface SquadScores {
  /** Mean over questions of the best exact match over gold answers, times 100. */
  exactMatch: number;
  /** Mean over questions of the best F1 over gold answers, times 100. */
  f1: number;
}

/**
 * Exact match and F1 over questions as the official SQuAD v1.1 `evaluate-v1.1.py`: each prediction
 * is scored against every gold answer of its question and keeps the best; the means are in percent
 * (0-100). NaN for no questions.
 */
export function squadScores(
  predictions: readonly string[],
  answers: readonly (readonly string[])[],
): SquadScores {
  sameLength("squadScores", "predictions", predictions, answers);
  let exact = 0;
  let f1 = 0;
  for (let i = 0; i < predictions.length; i++) {
    if (answers[i].length === 0) throw new Error(`squadScores: question ${i} has no gold answer`);
    exact += Math.max(...answers[i].map((a) => squadExactMatch(predictions[i], a)));
    f1 += Math.max(...answers[i].map((a) => squadF1(predictions[i], a)));
  }
  return { exactMatch: (100 * exact) / predictions.length, f1: (100 * f1) / predictions.length };
}

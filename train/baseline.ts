/**
 * Baselines that need no transformer, so a reader of a training report can tell whether the models
 * learned anything beyond what word counts give:
 *
 * - {@linkcode bagOfWordsBaseline}: L2-regularised softmax (logistic) regression on bag-of-words
 *   features, fitted by L-BFGS in float64 (text classification);
 * - {@linkcode mostFrequentTagBaseline}: each word's most frequent training tag (tagging);
 * - {@linkcode nameSpanBaseline}: the context's most frequent name-like span (extractive QA);
 * - {@linkcode unigramPerplexity}: an add-one smoothed unigram model (language modelling).
 *
 * Every baseline is deterministic: no sampling, and a fixed order of every sum.
 *
 * @module
 */
import { spanF1, type SpanScores, squadScores, tokenAccuracy } from "./metrics.ts";

/** The lowercased runs of letters and digits of a text: the bag-of-words baseline's tokens. */
export function wordsOf(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** A text with a class id, as the classification data sets give them. */
export interface LabelledText {
  /** The text. */
  text: string;
  /** The class, an integer from 0. */
  label: number;
}

/** Options of {@linkcode trainBagOfWords}. */
export interface BagOfWordsOptions {
  /** `binary`: 1 if a word occurs (default); `counts`: how often it occurs. */
  features?: "binary" | "counts";
  /**
   * L2 weight λ on the mean loss + (λ/2)·|W|² (biases unpenalised); default 1/n, scikit-learn's
   * multinomial C = 1. With two classes both weight columns are penalised, which equals scikit-learn's
   * binary logistic regression with C = 2.
   */
  l2?: number;
  /** L-BFGS iterations at most (default 100, as scikit-learn). */
  maxIterations?: number;
  /** Stop when the gradient's largest entry is below this (default 1e-6). */
  tolerance?: number;
}

/** A fitted bag-of-words softmax regression; see {@linkcode trainBagOfWords}. */
export interface BagOfWordsClassifier {
  /** Word to feature index, from the training split. */
  vocabulary: Map<string, number>;
  /** Number of classes (largest training label + 1). */
  classes: number;
  /** Row-major [vocabulary size, classes] weights, then one bias per class. */
  parameters: Float64Array;
  /** Training objective (mean cross-entropy + L2 term) at the end. */
  loss: number;
  /** L-BFGS iterations run. */
  iterations: number;
  /** The class with the highest score for a text (ties: the lowest class). */
  predict(text: string): number;
}

/** Accuracy and predictions of a classification baseline on one split. */
export interface ClassificationBaseline {
  /** Fraction of examples predicted correctly. */
  accuracy: number;
  /** The predicted class of each example. */
  predictions: Int32Array;
}

interface SparseRow {
  index: Int32Array;
  value: Float64Array;
}

function featuresOf(text: string, vocabulary: Map<string, number>, counts: boolean): SparseRow {
  const found = new Map<number, number>();
  for (const word of wordsOf(text)) {
    const v = vocabulary.get(word);
    if (v !== undefined) found.set(v, counts ? (found.get(v) ?? 0) + 1 : 1);
  }
  const index = Int32Array.from([...found.keys()].sort((a, b) => a - b));
  return { index, value: Float64Array.from(index, (i) => found.get(i)!) };
}

/** Class scores W·x + b of one row into `z`. */
function scoresOf(
  row: SparseRow,
  theta: Float64Array,
  classes: number,
  biasAt: number,
  z: Float64Array,
): void {
  for (let k = 0; k < classes; k++) z[k] = theta[biasAt + k];
  for (let j = 0; j < row.index.length; j++) {
    const base = row.index[j] * classes;
    for (let k = 0; k < classes; k++) z[k] += row.value[j] * theta[base + k];
  }
}

/**
 * Fits softmax regression on bag-of-words features of the training texts (vocabulary: every word of
 * the training split, see {@linkcode wordsOf}) by minimising mean cross-entropy + (λ/2)·|W|² with
 * L-BFGS (10 pairs, backtracking Armijo line search) in float64. Two classes make it logistic
 * regression (of weight W1 - W0, whose penalty is half of |W|²: see {@linkcode BagOfWordsOptions.l2}).
 */
export function trainBagOfWords(
  train: readonly LabelledText[],
  options: BagOfWordsOptions = {},
): BagOfWordsClassifier {
  if (train.length === 0) throw new Error("trainBagOfWords: the training split is empty");
  const counts = (options.features ?? "binary") === "counts";
  const l2 = options.l2 ?? 1 / train.length;
  const vocabulary = new Map<string, number>();
  let classes = 0;
  for (const [i, { text, label }] of train.entries()) {
    if (!Number.isInteger(label) || label < 0) {
      throw new Error(`trainBagOfWords: example ${i} has label ${label}; labels are integers from 0`);
    }
    classes = Math.max(classes, label + 1);
    for (const word of wordsOf(text)) if (!vocabulary.has(word)) vocabulary.set(word, vocabulary.size);
  }
  const rows = train.map((e) => featuresOf(e.text, vocabulary, counts));
  const biasAt = vocabulary.size * classes;
  const z = new Float64Array(classes);
  const objective = (theta: Float64Array, grad: Float64Array): number => {
    grad.fill(0);
    let loss = 0;
    for (const [i, row] of rows.entries()) {
      scoresOf(row, theta, classes, biasAt, z);
      const max = z.reduce((a, b) => Math.max(a, b));
      let sum = 0;
      const label = train[i].label;
      loss += max - z[label];
      for (let k = 0; k < classes; k++) sum += z[k] = Math.exp(z[k] - max);
      loss += Math.log(sum);
      for (let k = 0; k < classes; k++) {
        const dz = (z[k] / sum - (k === label ? 1 : 0)) / rows.length;
        grad[biasAt + k] += dz;
        for (let j = 0; j < row.index.length; j++) grad[row.index[j] * classes + k] += row.value[j] * dz;
      }
    }
    let penalty = 0;
    for (let p = 0; p < biasAt; p++) {
      penalty += theta[p] * theta[p];
      grad[p] += l2 * theta[p];
    }
    return loss / rows.length + (l2 / 2) * penalty;
  };
  const theta = new Float64Array(biasAt + classes);
  const { loss, iterations } = minimiseLbfgs(
    objective,
    theta,
    options.maxIterations ?? 100,
    options.tolerance ?? 1e-6,
  );
  return {
    vocabulary,
    classes,
    parameters: theta,
    loss,
    iterations,
    predict(text: string): number {
      scoresOf(featuresOf(text, vocabulary, counts), theta, classes, biasAt, z);
      let best = 0;
      for (let k = 1; k < classes; k++) if (z[k] > z[best]) best = k;
      return best;
    },
  };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Minimises `f` from `x` (updated in place) by L-BFGS; returns the final value and iterations run. */
function minimiseLbfgs(
  f: (x: Float64Array, grad: Float64Array) => number,
  x: Float64Array,
  maxIterations: number,
  tolerance: number,
): { loss: number; iterations: number } {
  const memory = 10;
  const n = x.length;
  let grad = new Float64Array(n);
  let value = f(x, grad);
  const history: { s: Float64Array; y: Float64Array; rho: number }[] = [];
  const direction = new Float64Array(n);
  const trial = new Float64Array(n);
  let trialGrad = new Float64Array(n);
  let iteration = 0;
  for (; iteration < maxIterations; iteration++) {
    if (grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0) < tolerance) break;
    // Two-loop recursion: direction = -H·grad with the stored curvature pairs.
    for (let i = 0; i < n; i++) direction[i] = -grad[i];
    const alphas: number[] = [];
    for (let h = history.length - 1; h >= 0; h--) {
      const a = history[h].rho * dot(history[h].s, direction);
      alphas[h] = a;
      for (let i = 0; i < n; i++) direction[i] -= a * history[h].y[i];
    }
    const last = history.at(-1);
    const scale = last ? 1 / (last.rho * dot(last.y, last.y)) : 1 / Math.sqrt(dot(grad, grad));
    for (let i = 0; i < n; i++) direction[i] *= scale;
    for (let h = 0; h < history.length; h++) {
      const b = history[h].rho * dot(history[h].y, direction);
      for (let i = 0; i < n; i++) direction[i] += (alphas[h] - b) * history[h].s[i];
    }
    let slope = dot(grad, direction);
    if (!(slope < 0)) {
      history.length = 0;
      for (let i = 0; i < n; i++) direction[i] = -grad[i];
      slope = -dot(grad, grad);
    }
    let step = 1;
    let trialValue = Infinity;
    for (let halvings = 0; halvings < 60; halvings++, step /= 2) {
      for (let i = 0; i < n; i++) trial[i] = x[i] + step * direction[i];
      trialValue = f(trial, trialGrad);
      if (trialValue <= value + 1e-4 * step * slope) break;
    }
    if (!(trialValue < value)) break;
    const s = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = trial[i] - x[i];
      y[i] = trialGrad[i] - grad[i];
    }
    const sy = dot(s, y);
    if (sy > 1e-12) {
      history.push({ s, y, rho: 1 / sy });
      if (history.length > memory) history.shift();
    }
    x.set(trial);
    [grad, trialGrad] = [trialGrad, grad];
    const previous = value;
    value = trialValue;
    if (previous - value <= 1e-12 * Math.max(1, Math.abs(value))) {
      iteration++;
      break;
    }
  }
  return { loss: value, iterations: iteration };
}

/** Accuracy and predictions of a fitted classifier on labelled texts. */
export function evaluateClassifier(
  classifier: Pick<BagOfWordsClassifier, "predict">,
  examples: readonly LabelledText[],
): ClassificationBaseline {
  const predictions = Int32Array.from(examples, (e) => classifier.predict(e.text));
  let correct = 0;
  for (let i = 0; i < examples.length; i++) if (predictions[i] === examples[i].label) correct++;
  return { accuracy: correct / examples.length, predictions };
}

/** Fits {@linkcode trainBagOfWords} on `train` and scores it on `evaluation`. */
export function bagOfWordsBaseline(
  train: readonly LabelledText[],
  evaluation: readonly LabelledText[],
  options: BagOfWordsOptions = {},
): ClassificationBaseline {
  return evaluateClassifier(trainBagOfWords(train, options), evaluation);
}

/** A sentence as words with one tag per word (tag ids or names). */
export interface TaggedWords<T> {
  /** The words. */
  words: readonly string[];
  /** One tag per word. */
  tags: readonly T[];
}

/** A most-frequent-tag tagger; see {@linkcode trainMostFrequentTag}. */
export interface MostFrequentTagger<T> {
  /** Each known word's most frequent training tag. */
  byWord: Map<string, T>;
  /** The most frequent tag overall, given to words not seen in training. */
  fallback: T;
  /** Tags a sentence. */
  tag(words: readonly string[]): T[];
}

/** The key with the highest count; ties go to the key counted first (Map order). */
function mostFrequent<T>(counts: Map<T, number>): T {
  let best: T | undefined;
  let bestCount = 0;
  for (const [key, count] of counts) {
    if (count > bestCount) [best, bestCount] = [key, count];
  }
  return best!;
}

/**
 * Learns each word's most frequent tag in the training split (words as written, case kept; ties go
 * to the tag the word had first); unknown words get the most frequent tag overall.
 */
export function trainMostFrequentTag<T>(train: readonly TaggedWords<T>[]): MostFrequentTagger<T> {
  const perWord = new Map<string, Map<T, number>>();
  const overall = new Map<T, number>();
  for (const [s, { words, tags }] of train.entries()) {
    if (words.length !== tags.length) {
      throw new Error(
        `trainMostFrequentTag: sentence ${s} has ${words.length} words but ${tags.length} tags`,
      );
    }
    for (let i = 0; i < words.length; i++) {
      let counts = perWord.get(words[i]);
      if (!counts) perWord.set(words[i], counts = new Map());
      counts.set(tags[i], (counts.get(tags[i]) ?? 0) + 1);
      overall.set(tags[i], (overall.get(tags[i]) ?? 0) + 1);
    }
  }
  if (overall.size === 0) throw new Error("trainMostFrequentTag: the training split has no tagged word");
  const byWord = new Map([...perWord].map(([word, counts]) => [word, mostFrequent(counts)]));
  const fallback = mostFrequent(overall);
  return { byWord, fallback, tag: (words) => words.map((w) => byWord.get(w) ?? fallback) };
}

/** Predictions and scores of a tagging baseline on one split. */
export interface TaggingBaseline<T> {
  /** Fraction of words tagged correctly. */
  tokenAccuracy: number;
  /** seqeval span scores, when tag names were given. */
  span?: SpanScores;
  /** The predicted tags of each sentence. */
  predictions: T[][];
}

/**
 * Fits {@linkcode trainMostFrequentTag} on `train` and scores it on `evaluation`. With `tagNames`
 * (the names of tag ids, BIO tags for NER) it also gives seqeval span scores.
 */
export function mostFrequentTagBaseline<T>(
  train: readonly TaggedWords<T>[],
  evaluation: readonly TaggedWords<T>[],
  tagNames?: readonly string[],
): TaggingBaseline<T> {
  const tagger = trainMostFrequentTag(train);
  const predictions = evaluation.map((s) => tagger.tag(s.words));
  const gold = evaluation.map((s) => s.tags);
  const result: TaggingBaseline<T> = { tokenAccuracy: tokenAccuracy(predictions, gold), predictions };
  if (tagNames) {
    const name = (tag: T) => {
      const found = tagNames[tag as number];
      if (found === undefined) throw new Error(`mostFrequentTagBaseline: tag ${tag} has no name in tagNames`);
      return found;
    };
    result.span = spanF1(predictions.map((s) => s.map(name)), gold.map((s) => s.map(name)));
  }
  return result;
}

/** An extractive question with its gold answer, as the QA data set gives it. */
export interface QuestionWithAnswer {
  /** The passage. */
  context: string;
  /** The question. */
  question: string;
  /** The gold answer. */
  answer: { text: string };
}

const WORD = /[\p{L}\p{N}]+(?:['’.\-][\p{L}\p{N}]+)*/gu;

/**
 * The QA baseline's answer: the most frequent name-like span of the context that the question does
 * not mention. A name-like span is a maximal run of capitalised words separated only by spaces; a
 * capitalised word that opens a sentence counts only if it also appears capitalised inside a
 * sentence (so "The" at a sentence start is not a name). A span is dropped when all its words occur
 * in the question (case-insensitive). Ties go to the span that occurs first; "" when there is none.
 */
export function nameSpanAnswer(context: string, question: string): string {
  const words = [...context.matchAll(WORD)].map((m) => ({
    text: m[0],
    start: m.index,
    end: m.index + m[0].length,
  }));
  const initial = words.map((w, i) => i === 0 || /[.!?]/.test(context.slice(words[i - 1].end, w.start)));
  const capitalised = words.map((w) => /^[\p{Lu}\p{Lt}]/u.test(w.text));
  const insideSentence = new Set(words.filter((_, i) => capitalised[i] && !initial[i]).map((w) => w.text));
  const isName = words.map((w, i) => capitalised[i] && (!initial[i] || insideSentence.has(w.text)));
  const asked = new Set(wordsOf(question));
  const counts = new Map<string, number>();
  for (let i = 0; i < words.length;) {
    if (!isName[i]) {
      i++;
      continue;
    }
    let j = i;
    while (
      j + 1 < words.length && isName[j + 1] && /^ +$/.test(context.slice(words[j].end, words[j + 1].start))
    ) j++;
    const span = context.slice(words[i].start, words[j].end);
    if (!wordsOf(span).every((w) => asked.has(w))) counts.set(span, (counts.get(span) ?? 0) + 1);
    i = j + 1;
  }
  return counts.size === 0 ? "" : mostFrequent(counts);
}

/** Predictions and SQuAD scores (percent) of the QA baseline on one split. */
export interface QaBaseline {
  /** SQuAD exact match, 0-100. */
  exactMatch: number;
  /** SQuAD F1, 0-100. */
  f1: number;
  /** The predicted answer of each question. */
  predictions: string[];
}

/** Scores {@linkcode nameSpanAnswer} on questions with the official SQuAD v1.1 metrics. */
export function nameSpanBaseline(evaluation: readonly QuestionWithAnswer[]): QaBaseline {
  const predictions = evaluation.map((e) => nameSpanAnswer(e.context, e.question));
  const scores = squadScores(predictions, evaluation.map((e) => [e.answer.text]));
  return { ...scores, predictions };
}

/** The unigram language-model baseline's score on the evaluation tokens. */
export interface UnigramBaseline {
  /** exp(crossEntropy). */
  perplexity: number;
  /** Mean negative log-probability (nats) of the evaluation tokens. */
  crossEntropy: number;
  /** Evaluation tokens scored. */
  tokens: number;
}

/**
 * Perplexity of an add-one smoothed unigram model, p(t) = (count(t) + 1) / (N + vocabSize), fitted
 * on the training token ids and scored on the evaluation ids. Pass the tokens the models are scored
 * on (the labels): negative ids, such as Hugging Face's ignored label -100, are skipped in both.
 */
export function unigramPerplexity(
  train: Iterable<ArrayLike<number>>,
  evaluation: Iterable<ArrayLike<number>>,
  vocabSize: number,
): UnigramBaseline {
  const counts = new Float64Array(vocabSize);
  const each = (sequences: Iterable<ArrayLike<number>>, split: string, visit: (id: number) => void) => {
    let s = 0;
    for (const ids of sequences) {
      for (let i = 0; i < ids.length; i++) {
        if (ids[i] < 0) continue;
        if (!Number.isInteger(ids[i]) || ids[i] >= vocabSize) {
          throw new Error(
            `unigramPerplexity: ${split} sequence ${s} has id ${ids[i]} outside [0, ${vocabSize})`,
          );
        }
        visit(ids[i]);
      }
      s++;
    }
  };
  let total = 0;
  each(train, "train", (id) => {
    counts[id]++;
    total++;
  });
  let negativeLog = 0;
  let tokens = 0;
  each(evaluation, "evaluation", (id) => {
    negativeLog -= Math.log((counts[id] + 1) / (total + vocabSize));
    tokens++;
  });
  const crossEntropy = negativeLog / tokens;
  return { perplexity: Math.exp(crossEntropy), crossEntropy, tokens };
}

/**
 * Baselines on tiny hand-made data sets whose answers are known: logistic regression separates
 * "good" and "bad" texts, softmax regression handles three classes, the tagger takes each word's
 * most frequent tag, the QA baseline picks the repeated name, the unigram model matches a hand
 * computation.
 */
import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import {
  bagOfWordsBaseline,
  evaluateClassifier,
  mostFrequentTagBaseline,
  nameSpanAnswer,
  nameSpanBaseline,
  trainBagOfWords,
  trainMostFrequentTag,
  unigramPerplexity,
  wordsOf,
} from "../train/baseline.ts";
import type { EncodedBatch } from "../data/encode.ts";
import { taskKind } from "../train/task_kinds.ts";

const SENTIMENT = [
  { text: "a good film", label: 1 },
  { text: "Good acting, good story!", label: 1 },
  { text: "really good", label: 1 },
  { text: "a bad film", label: 0 },
  { text: "Bad acting, BAD story!", label: 0 },
  { text: "really bad", label: 0 },
];

Deno.test("wordsOf lowercases and splits on anything but letters and digits", () => {
  deepStrictEqual(wordsOf("Don't STOP-me now, 2 times… Ünïcode"), [
    "don",
    "t",
    "stop",
    "me",
    "now",
    "2",
    "times",
    "ünïcode",
  ]);
  deepStrictEqual(wordsOf(" ,. "), []);
});

Deno.test("logistic regression on bag-of-words separates good from bad", () => {
  const evaluation = [
    { text: "good", label: 1 },
    { text: "bad", label: 0 },
    { text: "a good story", label: 1 },
    { text: "the acting was bad", label: 0 },
    { text: "not good", label: 0 },
  ];
  for (const features of ["binary", "counts"] as const) {
    const classifier = trainBagOfWords(SENTIMENT, { features });
    strictEqual(classifier.classes, 2);
    strictEqual(classifier.vocabulary.size, 7);
    const good = classifier.parameters[classifier.vocabulary.get("good")! * 2 + 1];
    const bad = classifier.parameters[classifier.vocabulary.get("bad")! * 2 + 1];
    if (!(good > 0.5 && bad < -0.5)) throw new Error(`${features}: weights good ${good}, bad ${bad}`);
    deepStrictEqual(evaluateClassifier(classifier, SENTIMENT).accuracy, 1);
    const result = bagOfWordsBaseline(SENTIMENT, evaluation, { features });
    // "not" was never seen, so "not good" reads as good: bag-of-words cannot see negation.
    deepStrictEqual(result.predictions, new Int32Array([1, 0, 1, 0, 1]));
    strictEqual(result.accuracy, 0.8);
  }
});

/** The gradient's largest entry of mean cross-entropy + (λ/2)|W|² at the classifier's parameters. */
function largestGradient(
  classifier: ReturnType<typeof trainBagOfWords>,
  data: typeof SENTIMENT,
  l2: number,
): number {
  const { vocabulary, classes, parameters } = classifier;
  const grad = new Float64Array(parameters.length);
  const biasAt = vocabulary.size * classes;
  for (const { text, label } of data) {
    const present = [...new Set(wordsOf(text))].map((w) => vocabulary.get(w)!);
    const z = Array.from(
      { length: classes },
      (_, k) => parameters[biasAt + k] + present.reduce((s, v) => s + parameters[v * classes + k], 0),
    );
    const sum = z.reduce((s, v) => s + Math.exp(v), 0);
    for (let k = 0; k < classes; k++) {
      const dz = (Math.exp(z[k]) / sum - (k === label ? 1 : 0)) / data.length;
      grad[biasAt + k] += dz;
      for (const v of present) grad[v * classes + k] += dz;
    }
  }
  for (let p = 0; p < biasAt; p++) grad[p] += l2 * parameters[p];
  return grad.reduce((m, g) => Math.max(m, Math.abs(g)), 0);
}

Deno.test("L-BFGS reaches the optimum: the gradient vanishes and runs are bit-identical", () => {
  for (const l2 of [0.1, 1 / SENTIMENT.length]) {
    const a = trainBagOfWords(SENTIMENT, { l2, maxIterations: 200, tolerance: 1e-9 });
    const b = trainBagOfWords(SENTIMENT, { l2, maxIterations: 200, tolerance: 1e-9 });
    deepStrictEqual(a.parameters, b.parameters);
    const largest = largestGradient(a, SENTIMENT, l2);
    if (!(largest < 1e-8)) throw new Error(`l2 ${l2}: gradient ${largest} after ${a.iterations} iterations`);
    // The L2 term drives each word's weights to sum to zero over classes, and data symmetric under
    // swapping good/bad and the classes make the two biases equal.
    const v = a.vocabulary.get("good")!;
    if (!(Math.abs(a.parameters[v * 2] + a.parameters[v * 2 + 1]) < 1e-8)) {
      throw new Error("weights not opposite");
    }
    const bias = a.parameters.slice(-2);
    if (!(Math.abs(bias[0] - bias[1]) < 1e-8)) throw new Error(`biases differ: ${bias}`);
  }
});

Deno.test("softmax regression with three classes", () => {
  const train = [
    { text: "red apple", label: 0 },
    { text: "red cherry", label: 0 },
    { text: "green leaf", label: 1 },
    { text: "green grass", label: 1 },
    { text: "blue sky", label: 2 },
    { text: "blue sea", label: 2 },
  ];
  const result = bagOfWordsBaseline(train, [
    { text: "red", label: 0 },
    { text: "blue sky", label: 2 },
    { text: "green", label: 1 },
  ]);
  deepStrictEqual(result.predictions, new Int32Array([0, 2, 1]));
  strictEqual(result.accuracy, 1);
  throws(() => trainBagOfWords([{ text: "x", label: -1 }]), /example 0 has label -1/);
  throws(() => trainBagOfWords([]), /the training split is empty/);
});

Deno.test("most-frequent tag per word; unknown words get the most frequent tag overall", () => {
  const O = 0, B = 1, I = 2;
  const train = [
    { words: ["John", "lives", "in", "New", "York"], tags: [B, O, O, B, I] },
    { words: ["York", "is", "very", "big"], tags: [B, O, O, O] },
    { words: ["New", "York", "York"], tags: [B, I, I] },
  ];
  const tagger = trainMostFrequentTag(train);
  strictEqual(tagger.fallback, O);
  strictEqual(tagger.byWord.get("York"), I);
  deepStrictEqual(tagger.tag(["New", "York", "rocks"]), [B, I, O]);
  const names = ["O", "B-LOC", "I-LOC"];
  const result = mostFrequentTagBaseline(train, [
    { words: ["John", "is", "in", "New", "York"], tags: [B, O, O, B, I] },
    { words: ["Paris", "York"], tags: [B, O] },
  ], names);
  deepStrictEqual(result.predictions, [[B, O, O, B, I], [O, I]]);
  strictEqual(result.tokenAccuracy, 5 / 7);
  // Gold: John, New York, Paris; predicted: John, New York, York (an I after O starts an entity).
  deepStrictEqual([result.span!.correct, result.span!.predicted, result.span!.gold], [2, 3, 3]);
  strictEqual(mostFrequentTagBaseline(train, [{ words: ["big"], tags: [O] }]).span, undefined);
  throws(() => trainMostFrequentTag([{ words: ["a"], tags: [] }]), /sentence 0 has 1 words but 0 tags/);
});

Deno.test("tie between tags: the one the word had first wins", () => {
  const tagger = trainMostFrequentTag([{ words: ["run", "run"], tags: ["VB", "NN"] }]);
  strictEqual(tagger.byWord.get("run"), "VB");
});

Deno.test("QA baseline: the most frequent name-like span the question does not mention", () => {
  const context = "The Smith family met Mary Jones in Boston. Mary Jones was late. Then Boston voted. " +
    "The mayor, Mary Jones, spoke.";
  strictEqual(nameSpanAnswer(context, "Who met the _____ family?"), "Mary Jones");
  // Both words of "Mary Jones" are in the question, so the next most frequent name is chosen.
  strictEqual(nameSpanAnswer(context, "Where did Mary Jones go?"), "Boston");
  // "Then" and "The" open sentences and never appear capitalised inside one.
  strictEqual(nameSpanAnswer("Then it rained. The end.", "What?"), "");
  const result = nameSpanBaseline([
    { context, question: "Who was late?", answer: { text: "Mary Jones" } },
    { context, question: "Mary Jones met whom?", answer: { text: "the Smith family" } },
  ]);
  deepStrictEqual(result.predictions, ["Mary Jones", "Boston"]);
  strictEqual(result.exactMatch, 50);
  strictEqual(result.f1, 50);
});

Deno.test("unigram perplexity with add-one smoothing matches a hand computation", () => {
  // Train counts over a vocabulary of 4: id 0 x3, id 1 x1 (N = 4); p = (c + 1) / 8.
  const result = unigramPerplexity([[0, 0, 1], [0, -100]], [new Int32Array([0, 2, -100])], 4);
  strictEqual(result.tokens, 2);
  const expected = -(Math.log(4 / 8) + Math.log(1 / 8)) / 2;
  if (!(Math.abs(result.crossEntropy - expected) < 1e-15)) {
    throw new Error(`${result.crossEntropy} vs ${expected}`);
  }
  if (!(Math.abs(result.perplexity - Math.exp(expected)) < 1e-12)) throw new Error(`${result.perplexity}`);
  throws(() => unigramPerplexity([[4]], [[0]], 4), /train sequence 0 has id 4 outside \[0, 4\)/);
});

Deno.test("the language-modelling baseline is scored on a causal model's targets, not each row's first token", () => {
  // Rows of length 4 starting with <s> (id 3); -100 is padding. A causal model never predicts position 0.
  const batch = (labels: number[]): EncodedBatch => ({
    inputIds: Int32Array.from(labels, (l) => Math.max(l, 0)),
    attentionMask: Int32Array.from(labels, (l) => (l < 0 ? 0 : 1)),
    batch: labels.length / 4,
    length: 4,
    labels: Int32Array.from(labels),
  });
  const encoded = new Map<string, EncodedBatch>([
    ["train", batch([3, 0, 0, 1, 3, 0, -100, -100])],
    ["held out", batch([3, 0, 2, -100])],
  ]);
  const dataset = {
    task: "lm" as const,
    train: [{ text: "train" }],
    validation: [{ text: "held out" }],
    test: [{ text: "held out" }],
    labels: [],
    source: "hand-made",
    splitRule: "hand-made",
    notes: "",
  };
  const result = taskKind("lm", []).baseline(
    dataset,
    (examples) => [encoded.get((examples[0] as { text: string }).text)!],
    4,
  );
  // Train targets: 0 x3, 1 x1 (the two <s> are not counted); scored on 0 and 2: p = (c + 1) / 8.
  const expected = Math.exp(-(Math.log(4 / 8) + Math.log(1 / 8)) / 2);
  if (!(Math.abs(result.validation.perplexity - expected) < 1e-12)) {
    throw new Error(`baseline perplexity ${result.validation.perplexity}, expected ${expected}`);
  }
});

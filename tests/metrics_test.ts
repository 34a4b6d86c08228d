/**
 * Metrics on hand-made cases with known answers: seqeval's own documented examples for span F1,
 * the SQuAD v1.1 script's normalisation and scores, and logits-to-prediction helpers.
 */
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  accuracy,
  argmaxRows,
  bestSpan,
  entities,
  maskedLmAccuracy,
  normalizeAnswer,
  perplexity,
  spanF1,
  squadExactMatch,
  squadF1,
  squadScores,
  tokenAccuracy,
} from "../train/metrics.ts";
import { taskKind } from "../train/task_kinds.ts";
import type { Encoder } from "../train/task_kinds.ts";

function near(actual: number, expected: number, label: string): void {
  if (!(Math.abs(actual - expected) <= 1e-12 * Math.max(1, Math.abs(expected)))) {
    throw new Error(`${label}: ${actual}, expected ${expected}`);
  }
}

/** seqeval's docstring example (f1_score, precision_score, recall_score, accuracy_score). */
const DOC_TRUE = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]];
const DOC_PRED = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]];

Deno.test("accuracy counts equal predictions; NaN for none; lengths must match", () => {
  strictEqual(accuracy([1, 0, 1, 1], [1, 1, 1, 0]), 0.5);
  strictEqual(accuracy(new Int32Array([2, 2]), new Int32Array([2, 2])), 1);
  strictEqual(accuracy([], []), NaN);
  throws(() => accuracy([1], [1, 0]), /accuracy: 1 predictions but 2 labels/);
});

Deno.test("tokenAccuracy is seqeval's accuracy_score (0.8 on its example)", () => {
  strictEqual(tokenAccuracy(DOC_PRED, DOC_TRUE), 0.8);
  throws(() => tokenAccuracy([["O"]], [["O", "O"]]), /sequence 0 has 1 predicted tags but 2 gold tags/);
});

Deno.test("maskedLmAccuracy counts only positions whose label is not -100", () => {
  strictEqual(maskedLmAccuracy([5, 7, 9, 1], [-100, 7, 8, -100]), 0.5);
  strictEqual(maskedLmAccuracy([5, 7], [0, 7], 0), 1);
  strictEqual(maskedLmAccuracy([1, 2], [-100, -100]), NaN);
});

Deno.test("perplexity is exp of the mean cross-entropy", () => {
  strictEqual(perplexity(0), 1);
  near(perplexity(Math.log(50257)), 50257, "uniform over GPT-2's vocabulary");
});

Deno.test("argmaxRows: first maximum wins ties, NaN wins as in NumPy, shape is checked", () => {
  deepStrictEqual(
    argmaxRows(new Float32Array([0, 3, 1, 5, 5, 2, -1, -2, -3, 1, NaN, 9]), 3),
    new Int32Array([1, 0, 0, 1]),
  );
  throws(() => argmaxRows([1, 2, 3], 2), /3 logits do not form rows of 2 classes/);
});

Deno.test("bestSpan maximises start + end logits within the mask and the length limit", () => {
  const start = [9, 1, 5, 0, 0, 0];
  const end = [9, 0, 1, 4, 0, 3];
  const context = [0, 1, 1, 1, 1, 1];
  deepStrictEqual(bestSpan(start, end, context), { start: 2, end: 3, score: 9 });
  // A span may not end before it starts: the best end (3) is before start 4.
  deepStrictEqual(bestSpan([-9, -9, -9, -9, 7, -9], [0, 0, 0, 9, 0, 2], context), {
    start: 4,
    end: 5,
    score: 9,
  });
  // Length 2 at most: 2..5 (score 8) is too long, so 2..3 wins.
  deepStrictEqual(bestSpan([0, 0, 5, 0, 0, 0], [0, 0, 0, 2, 0, 3], context, 2), {
    start: 2,
    end: 3,
    score: 7,
  });
  deepStrictEqual(bestSpan([0, 0, 5, 0, 0, 0], [0, 0, 0, 2, 0, 3], context, 4), {
    start: 2,
    end: 5,
    score: 8,
  });
  deepStrictEqual(bestSpan([1, 1], [1, 1], [true, true]), { start: 0, end: 0, score: 2 });
  strictEqual(bestSpan([1, 2], [3, 4], [false, false]), null);
  throws(() => bestSpan([1, 2], [3], [1, 1]), /2 start logits, 1 end logits and 2 mask entries/);
});

Deno.test("entities: seqeval's get_entities examples, positions across sentences", () => {
  const tuples = (seqs: string[][]) => entities(seqs).map((e) => [e.type, e.start, e.end]);
  deepStrictEqual(tuples([["B-PER", "I-PER", "O", "B-LOC"]]), [["PER", 0, 1], ["LOC", 3, 3]]);
  deepStrictEqual(
    tuples([["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O", "B-PER", "I-PER"]]),
    [["MISC", 3, 5], ["PER", 7, 8]],
  );
  // test_get_entities_with_only_IOB: bare tags have type "_", and sentences join with one O.
  deepStrictEqual(tuples([["O", "O", "O", "B", "I", "I", "O"], ["B", "I", "O"]]), [["_", 3, 5], ["_", 8, 9]]);
  // A bare I after O starts a chunk too (the O and the I then have the same type "_").
  deepStrictEqual(tuples([["O", "I", "I", "O"]]), [["_", 1, 2]]);
});

Deno.test("entities: I without B starts a chunk (default mode, not strict)", () => {
  const tuples = (seqs: string[][]) => entities(seqs).map((e) => [e.type, e.start, e.end]);
  deepStrictEqual(tuples([["I-PER", "I-PER", "O", "I-LOC"]]), [["PER", 0, 1], ["LOC", 3, 3]]);
  deepStrictEqual(tuples([["B-PER", "I-LOC", "I-LOC"]]), [["PER", 0, 0], ["LOC", 1, 2]]);
  deepStrictEqual(tuples([["B-PER", "I-PER", "B-PER"]]), [["PER", 0, 1], ["PER", 2, 2]]);
  deepStrictEqual(tuples([["O", "I-MISC", "B-MISC", "I-MISC"]]), [["MISC", 1, 1], ["MISC", 2, 3]]);
  // An entity at the end of one sentence does not run into the next.
  deepStrictEqual(tuples([["O", "B-ORG"], ["I-ORG"]]), [["ORG", 1, 1], ["ORG", 3, 3]]);
});

Deno.test("spanF1 on seqeval's documented example: 0.5, MISC 0, PER 1", () => {
  const s = spanF1(DOC_PRED, DOC_TRUE);
  strictEqual(s.precision, 0.5);
  strictEqual(s.recall, 0.5);
  strictEqual(s.f1, 0.5);
  deepStrictEqual(Object.keys(s.byType), ["MISC", "PER"]);
  strictEqual(s.byType.MISC.f1, 0);
  strictEqual(s.byType.PER.f1, 1);
  strictEqual(spanF1(DOC_TRUE, DOC_TRUE).f1, 1);
});

Deno.test("spanF1 micro-averages over types (performance_measure's example)", () => {
  const gold = [["O", "O", "O", "B-MISC", "I-MISC", "O", "B-ORG"], ["B-PER", "I-PER", "O", "B-PER"]];
  const predicted = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "O", "O"], ["B-PER", "I-PER", "O", "B-MISC"]];
  const s = spanF1(predicted, gold);
  deepStrictEqual([s.correct, s.predicted, s.gold], [1, 3, 4]);
  near(s.precision, 1 / 3, "precision");
  near(s.recall, 1 / 4, "recall");
  near(s.f1, 2 / 7, "f1");
  deepStrictEqual(s.byType.PER, { precision: 1, recall: 0.5, f1: 2 / 3, correct: 1, predicted: 1, gold: 2 });
  deepStrictEqual(s.byType.ORG, { precision: 0, recall: 0, f1: 0, correct: 0, predicted: 0, gold: 1 });
});

Deno.test("spanF1: zero divisions give 0; I-continuations count as entities", () => {
  deepStrictEqual(spanF1([["O", "O"]], [["O", "O"]]), {
    precision: 0,
    recall: 0,
    f1: 0,
    correct: 0,
    predicted: 0,
    gold: 0,
    byType: {},
  });
  strictEqual(spanF1([["O", "O"]], [["B-PER", "O"]]).f1, 0);
  // The gold "I-PER I-PER" is one PER entity, which the prediction "B-PER I-PER" matches.
  strictEqual(spanF1([["B-PER", "I-PER"]], [["I-PER", "I-PER"]]).f1, 1);
  throws(() => spanF1([["O"]], [["O"], ["O"]]), /spanF1: 1 predicted sequences but 2 labels/);
  throws(
    () => spanF1([["O"], ["O"]], [["O"], ["O", "O"]]),
    /sequence 1 has 1 predicted tags but 2 gold tags/,
  );
});

Deno.test("normalizeAnswer as SQuAD v1.1: lowercase, punctuation, articles, whitespace", () => {
  strictEqual(normalizeAnswer("The  Eiffel Tower!"), "eiffel tower");
  strictEqual(normalizeAnswer("  an apple, a pear & the plum. "), "apple pear plum");
  // Articles only as whole words; punctuation goes first, so "a." is an article and "the-re" is "there".
  strictEqual(normalizeAnswer("Theatre at a. the-re"), "theatre at there");
  strictEqual(normalizeAnswer("Ａ café\u00a0the\u3000Zoë"), "ａ café zoë");
  strictEqual(normalizeAnswer("the a an"), "");
});

Deno.test("squadExactMatch and squadF1 of single answers", () => {
  strictEqual(squadExactMatch("the Eiffel Tower", "Eiffel Tower."), 1);
  strictEqual(squadExactMatch("Eiffel", "Eiffel Tower"), 0);
  strictEqual(squadF1("in Paris France", "Paris"), 0.5);
  // Bags, not sets: one "new" in common; precision 1/2, recall 1/3.
  near(squadF1("new new", "new york city"), 0.4, "f1 over bags");
  strictEqual(squadF1("", "Paris"), 0);
  strictEqual(squadF1("the", "a"), 0);
});

Deno.test("squadScores takes the best gold answer per question and reports percent", () => {
  const scores = squadScores(
    ["Denver Broncos", "in Paris France", "1998"],
    [["Denver Broncos", "the Broncos"], ["Paris", "Paris, France"], ["1999"]],
  );
  // Question 1: EM 1, F1 1; question 2: EM 0, best F1 = 0.8 ("paris france" vs 3 tokens); question 3: 0.
  near(scores.exactMatch, 100 / 3, "exact match");
  near(scores.f1, (100 * (1 + 0.8 + 0)) / 3, "f1");
  throws(() => squadScores(["x"], [[]]), /question 0 has no gold answer/);
});

/** A tagging batch of one sentence in tokens [cls, w0, w1, sep]: two words, and any further ones cut off. */
const encoded = {
  inputIds: Int32Array.of(0, 5, 6, 2),
  attentionMask: Int32Array.of(1, 1, 1, 1),
  batch: 1,
  length: 4,
  labels: Int32Array.of(-100, 0, 0, -100),
  wordIds: Int32Array.of(-1, 0, 1, -1),
};

Deno.test("tagging scores count words cut off by truncation: untagged for parts of speech, O for names", () => {
  // Three words, the third cut off; the logits predict class 0 for w0, 1 for w1.
  const logits = (first: number, second: number) =>
    Float32Array.from({ length: 4 * 3 }, (_, i) => (i === 3 + first || i === 6 + second ? 1 : 0));
  const score = (task: "pos" | "ner", gold: number[], values: Float32Array) =>
    taskKind(task, task === "ner" ? ["O", "B-NAME", "I-NAME"] : ["VERB", "NOUN", "ADJ"]).score(
      [{ words: ["a", "b", "c"], tags: gold }],
      [{ encoded, values: [values] }],
      {} as Encoder,
    );
  // Every word a VERB (tag 0): the cut-off one is not credited.
  strictEqual(score("pos", [0, 0, 0], logits(0, 0)).accuracy, 2 / 3);
  // Names: w0 B-NAME found, the cut-off name missed (predicted O), no false name.
  const ner = score("ner", [1, 0, 1], logits(1, 0));
  deepStrictEqual([ner.precision, ner.recall], [1, 0.5]);
});

Deno.test("a NaN among the logits makes every score NaN, not the share of argmax's first class", () => {
  const withNaN = Float32Array.from({ length: 12 }, (_, i) => (i === 4 ? NaN : 0));
  // Two words tagged 0: argmax over the NaN row would pick tag 0 and credit it.
  const pos = taskKind("pos", ["VERB", "NOUN", "ADJ"]).score(
    [{ words: ["a", "b"], tags: [0, 0] }],
    [{ encoded, values: [withNaN] }],
    {} as Encoder,
  );
  ok(Number.isNaN(pos.accuracy), `pos accuracy ${pos.accuracy}`);
  const ner = taskKind("ner", ["O", "B-NAME", "I-NAME"]).score(
    [{ words: ["a", "b"], tags: [0, 0] }],
    [{ encoded, values: [withNaN] }],
    {} as Encoder,
  );
  deepStrictEqual(Object.keys(ner), ["f1", "precision", "recall"]);
  ok(Object.values(ner).every(Number.isNaN), JSON.stringify(ner));
  // Sentiment: two sentences of label 0, the first row's logits NaN.
  const sentences = { ...encoded, batch: 2, length: 2, labels: Int32Array.of(0, 0) };
  const sentiment = taskKind("sentiment", ["negative", "positive"]).score(
    [{ text: "a", label: 0 }, { text: "b", label: 0 }],
    [{ encoded: sentences, values: [Float32Array.of(NaN, NaN, 1, 0)] }],
    {} as Encoder,
  );
  ok(Number.isNaN(sentiment.accuracy), `sentiment accuracy ${sentiment.accuracy}`);
  const finite = taskKind("sentiment", ["negative", "positive"]).score(
    [{ text: "a", label: 0 }, { text: "b", label: 0 }],
    [{ encoded: sentences, values: [Float32Array.of(0, 1, 1, 0)] }],
    {} as Encoder,
  );
  strictEqual(finite.accuracy, 0.5);
});

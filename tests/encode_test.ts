/**
 * Model inputs from examples: padding and attention masks, tagging labels on the first token of each
 * word, QA positions that read back the answer through offsets, and masked LM's seeded 15% / 80-10-10.
 */
import { loadDataset } from "../data/load.ts";
import { encodeClassification, encodeLm, encodeQa, encodeTagging, IGNORE_INDEX } from "../data/encode.ts";
import { trainTokenizer } from "../data/tokenizer.ts";

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

function expectThrows(fn: () => unknown, fragment: string): void {
  try {
    fn();
  } catch (e) {
    if ((e as Error).message.includes(fragment)) return;
    throw new Error(`expected "${fragment}", got "${(e as Error).message}"`);
  }
  throw new Error(`expected "${fragment}", nothing was thrown`);
}

const [sentiment, ner, qa, lm] = await Promise.all([
  loadDataset("sentiment", { limit: 200 }),
  loadDataset("ner", { limit: 200 }),
  loadDataset("qa", { limit: 200 }),
  loadDataset("lm", { limit: 200 }),
]);
const tokenizer = trainTokenizer([
  ...sentiment.train.map((e) => e.text),
  ...ner.train.map((e) => e.words.join(" ")),
  ...qa.train.map((e) => e.context),
  ...lm.train.map((e) => e.text),
]);
const { pad, cls, sep, mask } = tokenizer.special;

Deno.test("classification: cls text sep, padded with pad and attention mask 0, cut at maxLength", () => {
  const examples = sentiment.validation.slice(0, 16);
  const batch = encodeClassification(examples, tokenizer, 24);
  expect(batch.batch === 16 && batch.length === 24 && batch.inputIds.length === 16 * 24, "shape");
  examples.forEach((example, b) => {
    const ids = tokenizer.encode(example.text).ids.slice(0, 22);
    const row = Array.from(batch.inputIds.subarray(b * 24, (b + 1) * 24));
    const maskRow = Array.from(batch.attentionMask.subarray(b * 24, (b + 1) * 24));
    const expected = [cls, ...ids, sep];
    expect(row.slice(0, expected.length).join() === expected.join(), `row ${b}`);
    expect(row.slice(expected.length).every((id) => id === pad), `row ${b} padding`);
    expect(
      maskRow.join() === expected.map(() => 1).concat(row.slice(expected.length).map(() => 0)).join(),
      `mask ${b}`,
    );
    expect(batch.labels![b] === example.label, `label ${b}`);
  });
  expectThrows(() => encodeClassification([], tokenizer, 24), "encodeClassification: no examples");
  expectThrows(
    () => encodeClassification(examples, tokenizer, 2),
    "maxLength must be an integer >= 3, got 2",
  );
});

Deno.test("tagging: each word's tag on its first token, -100 elsewhere, word ids map tokens back", () => {
  const examples = ner.validation.slice(0, 64);
  const T = 96;
  const batch = encodeTagging(examples, tokenizer, T);
  let multiToken = 0;
  examples.forEach((example, b) => {
    const row = (a: Int32Array) => Array.from(a.subarray(b * T, (b + 1) * T));
    const words = row(batch.wordIds!);
    const labels = row(batch.labels!);
    expect(words[0] === -1 && labels[0] === IGNORE_INDEX, "cls has no word and no label");
    const text = example.words.join(" ");
    const { offsets } = tokenizer.encode(text);
    const seen = new Set<number>();
    for (let t = 1; t < T && words[t] >= 0; t++) {
      const w = words[t];
      const [start, end] = offsets[t - 1];
      expect(
        example.words[w].includes(text.slice(start, end)),
        `token "${text.slice(start, end)}" in word ${w}`,
      );
      if (seen.has(w)) {
        expect(labels[t] === IGNORE_INDEX, `later token of word ${w} is labelled`);
        multiToken++;
      } else {
        expect(labels[t] === example.tags[w], `first token of word ${w}: ${labels[t]} vs ${example.tags[w]}`);
        expect(w === 0 || seen.has(w - 1), `word ${w} before ${w - 1}`);
      }
      seen.add(w);
    }
    expect(
      seen.size === example.words.length,
      `example ${b}: ${seen.size} of ${example.words.length} words labelled`,
    );
    expect(labels.filter((l) => l !== IGNORE_INDEX).length === example.words.length, "one label per word");
  });
  expect(multiToken > 0, "some words have several tokens");
  const cut = encodeTagging([{ words: ["a", "b", "c", "d", "e"], tags: [0, 1, 2, 0, 0] }], tokenizer, 4);
  expect(Array.from(cut.wordIds!).join() === "-1,0,1,-1", `truncation keeps the first words: ${cut.wordIds}`);
  expectThrows(() => encodeTagging([{ words: ["a"], tags: [] }], tokenizer, 8), "has 1 words but 0 tags");
});

Deno.test("QA: start and end positions read the answer back through the context offsets", () => {
  for (const T of [64, 384]) {
    const examples = qa.validation.slice(0, 100);
    const batch = encodeQa(examples, tokenizer, T);
    let found = 0;
    examples.forEach((example, b) => {
      const start = batch.startPositions![b];
      const end = batch.endPositions![b];
      const types = Array.from(batch.tokenTypeIds!.subarray(b * T, (b + 1) * T));
      const ids = Array.from(batch.inputIds.subarray(b * T, (b + 1) * T));
      const firstContext = types.indexOf(1);
      expect(
        ids[0] === cls && ids[firstContext - 1] === sep && types.slice(0, firstContext).every((t) => t === 0),
        "segments",
      );
      if (start === 0) {
        expect(end === 0, "a cut-off answer points at cls for both ends");
        const last = batch.contextOffsets![2 * (b * T + types.lastIndexOf(1) - 1) + 1];
        expect(
          last < example.answer.start + example.answer.text.length,
          "only answers past the cut point at cls",
        );
        return;
      }
      found++;
      const from = batch.contextOffsets![2 * (b * T + start)];
      const to = batch.contextOffsets![2 * (b * T + end) + 1];
      expect(start >= firstContext && end >= start, `positions ${start}..${end}`);
      const text = example.context.slice(from, to);
      expect(text === example.answer.text, `read back "${text}", answer "${example.answer.text}"`);
    });
    expect(found > (T === 384 ? 90 : 5), `${found} answers inside ${T} tokens`);
  }
});

Deno.test("causal LM: labels are the ids, -100 on padding", () => {
  const batch = encodeLm(lm.validation.slice(0, 8), tokenizer, 64, "causal", 1);
  for (let i = 0; i < batch.inputIds.length; i++) {
    const expected = batch.attentionMask[i] === 1 ? batch.inputIds[i] : IGNORE_INDEX;
    expect(batch.labels![i] === expected, `position ${i}`);
  }
  // A text that fits ends in sep; a longer one is cut and has none (no end in mid-sentence to predict).
  const short = { text: "Call me Ishmael." };
  const long = {
    text: "Some years ago, never mind how long precisely, having little or no money. ".repeat(4),
  };
  const rows = encodeLm([short, long], tokenizer, 16, "causal", 1);
  const row = (b: number) => Array.from(rows.inputIds.subarray(b * 16, (b + 1) * 16));
  const ids = tokenizer.encode(short.text).ids;
  expect(row(0).slice(0, ids.length + 2).join() === [cls, ...ids, sep].join(), `short row ${row(0)}`);
  expect(
    row(1).join() === [cls, ...tokenizer.encode(long.text).ids.slice(0, 15)].join() && !row(1).includes(sep),
    `cut row ${row(1)}`,
  );
});

Deno.test("masked LM: about 15% of real tokens selected, 80/10/10, deterministic for a seed", () => {
  const examples = lm.train.slice(0, 200);
  const plain = encodeLm(examples, tokenizer, 128, "causal", 0);
  const batch = encodeLm(examples, tokenizer, 128, "masked", 7);
  let real = 0;
  let selected = 0;
  let masked = 0;
  let kept = 0;
  for (let i = 0; i < batch.inputIds.length; i++) {
    const original = plain.inputIds[i];
    const isReal = plain.attentionMask[i] === 1 && original !== cls && original !== sep;
    if (isReal) real++;
    if (batch.labels![i] === IGNORE_INDEX) {
      expect(batch.inputIds[i] === original, `unselected position ${i} changed`);
      continue;
    }
    expect(isReal && batch.labels![i] === original, `label at ${i}`);
    selected++;
    if (batch.inputIds[i] === mask) masked++;
    else if (batch.inputIds[i] === original) kept++;
  }
  const share = selected / real;
  expect(real > 8000 && Math.abs(share - 0.15) < 0.01, `${selected} of ${real} selected (${share})`);
  expect(Math.abs(masked / selected - 0.8) < 0.03, `mask share ${masked / selected}`);
  expect(Math.abs(kept / selected - 0.1) < 0.03, `kept share ${kept / selected}`);
  expect(Math.abs((selected - masked - kept) / selected - 0.1) < 0.03, "random share");
  const again = encodeLm(examples, tokenizer, 128, "masked", 7);
  const other = encodeLm(examples, tokenizer, 128, "masked", 8);
  expect(
    again.inputIds.join() === batch.inputIds.join() && again.labels!.join() === batch.labels!.join(),
    "same seed",
  );
  expect(other.inputIds.join() !== batch.inputIds.join(), "another seed masks differently");
  expect(batch.attentionMask.join() === plain.attentionMask.join(), "masking keeps the attention mask");
});

/**
 * Model inputs from examples: padding and attention masks, tagging labels on the first token of each
 * word, QA positions that read back the answer through offsets (in overlapping windows, scored as one
 * example), and masked LM's seeded 15% / 80-10-10.
 */
import { loadDataset } from "../data/load.ts";
import { encodeClassification, encodeLm, encodeQa, encodeTagging, IGNORE_INDEX } from "../data/encode.ts";
import { trainTokenizer } from "../data/tokenizer.ts";
import { taskKind } from "../train/task_kinds.ts";

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

Deno.test("QA windows: a long context becomes rows that share `stride` tokens and together hold it all", () => {
  const T = 64;
  const stride = 16;
  const examples = qa.validation.slice(0, 100);
  const batch = encodeQa(examples, tokenizer, T, { stride });
  const rowsOf = (b: number) => [...batch.exampleIndex!.keys()].filter((r) => batch.exampleIndex![r] === b);
  expect(batch.batch > examples.length, `${batch.batch} rows for ${examples.length} long contexts`);
  expect(
    Array.from(batch.exampleIndex!).every((e, r) =>
      r === 0 || e === batch.exampleIndex![r - 1] || e === batch.exampleIndex![r - 1] + 1
    ),
    "rows come in example order",
  );
  examples.forEach((example, b) => {
    const rows = rowsOf(b);
    const context = tokenizer.encode(example.context);
    const answerEnd = example.answer.start + example.answer.text.length;
    // Each row's context tokens, as their offsets in the context.
    const windows = rows.map((r) => {
      const spans: [number, number][] = [];
      for (let t = 0; t < T; t++) {
        const at = 2 * (r * T + t);
        if (batch.contextOffsets![at] >= 0) {
          spans.push([batch.contextOffsets![at], batch.contextOffsets![at + 1]]);
        }
      }
      return spans;
    });
    expect(windows[0][0][0] === context.offsets[0][0], `example ${b}: the first window starts the context`);
    expect(
      windows.at(-1)!.at(-1)![1] === context.offsets.at(-1)![1],
      `example ${b}: the last window ends the context`,
    );
    for (let w = 1; w < windows.length; w++) {
      const shared = windows[w - 1].slice(-stride);
      expect(
        JSON.stringify(shared) === JSON.stringify(windows[w].slice(0, stride)),
        `example ${b}: window ${w} starts with the last ${stride} tokens of window ${w - 1}`,
      );
    }
    const question = (r: number) =>
      Array.from(batch.inputIds.subarray(r * T, r * T + batch.tokenTypeIds!.subarray(r * T).indexOf(1)));
    expect(rows.every((r) => question(r).join() === question(rows[0]).join()), `example ${b}: one question`);
    let holding = 0;
    rows.forEach((r, w) => {
      const [start, end] = [batch.startPositions![r], batch.endPositions![r]];
      const inside = windows[w][0][0] <= example.answer.start && windows[w].at(-1)![1] >= answerEnd;
      if (start === 0) {
        expect(end === 0 && !inside, `example ${b} window ${w}: points at cls only without the answer`);
        return;
      }
      holding++;
      const text = example.context.slice(
        batch.contextOffsets![2 * (r * T + start)],
        batch.contextOffsets![2 * (r * T + end) + 1],
      );
      expect(text === example.answer.text, `example ${b} window ${w}: read back "${text}"`);
    });
    expect(holding >= 1, `example ${b}: some window holds the answer`);
  });
  const single = encodeQa(examples, tokenizer, T);
  expect(Array.from(single.exampleIndex!).every((e, r) => e === r), "without stride a row per example");
  expectThrows(
    () => encodeQa(examples, tokenizer, T, { stride: 1.5 }),
    "stride must be an integer >= 0, got 1.5",
  );
  expectThrows(() => encodeQa(examples, tokenizer, T, { stride: 40 }), "stride 40 must be below the");
});

Deno.test("QA windows: an example's answer is its best span over all its windows, across batches", () => {
  const T = 64;
  const examples = qa.validation.filter((e) => tokenizer.encode(e.context).ids.length > 100).slice(0, 2);
  const kind = taskKind("qa", []);
  const encoder = { tokenizer, objective: null, family: "bert" as const };
  const batches = examples.map((e) => encodeQa([e], tokenizer, T, { stride: 8 }));
  // Logits of 0 everywhere; the rows holding the answer score it `right`, every row scores its first
  // context token alone `wrong`.
  const score = (right: number, wrong: number) => {
    const values = batches.map((encoded) => {
      const start = new Float32Array(encoded.batch * T);
      const end = new Float32Array(encoded.batch * T);
      for (let r = 0; r < encoded.batch; r++) {
        const first = encoded.tokenTypeIds!.subarray(r * T).indexOf(1);
        start[r * T + first] = end[r * T + first] = wrong / 2;
        if (encoded.startPositions![r] > 0) {
          start[r * T + encoded.startPositions![r]] += right / 2;
          end[r * T + encoded.endPositions![r]] += right / 2;
        }
      }
      return { encoded, values: [start, end] };
    });
    return kind.score(examples, values, encoder);
  };
  expect(batches.every((b) => b.batch > 2), "each example spans several windows");
  const found = score(10, 4);
  expect(found.exactMatch === 100, `the answer's window wins: ${JSON.stringify(found)}`);
  const missed = score(2, 4);
  expect(missed.exactMatch === 0, `a higher span in another window wins: ${JSON.stringify(missed)}`);
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

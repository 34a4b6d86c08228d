/**
 * Cloze QA over real text: no extractive QA data set installs from npm, so questions are built from
 * the Brown corpus's gold proper-name tags; see {@linkcode loadQa}.
 *
 * @module
 */
import { BROWN_SPLIT_RULE, brownDocuments, type BrownSentence, isProperNounTag } from "./brown.ts";
import { CLOZE_BLANK, type Dataset, type QaExample } from "./datasets.ts";
import { BROWN_PACKAGE, packageId } from "./packages.ts";
import type { SplitName } from "./splits.ts";

/** Sentences of context before each question. */
const CONTEXT_SENTENCES = 10;

/** A sentence as text (words joined by single spaces) with each word's start offset. */
function sentenceText(sentence: BrownSentence): { text: string; starts: number[] } {
  const starts: number[] = [];
  let text = "";
  for (const word of sentence.words) {
    if (text.length > 0) text += " ";
    starts.push(text.length);
    text += word;
  }
  return { text, starts };
}

/** The proper-name spans of a sentence as [first word, end word) pairs. */
function nameSpans(tags: readonly string[]): [number, number][] {
  const spans: [number, number][] = [];
  for (let i = 0; i < tags.length; i++) {
    if (!isProperNounTag(tags[i])) continue;
    const start = i;
    while (i + 1 < tags.length && isProperNounTag(tags[i + 1])) i++;
    spans.push([start, i + 1]);
  }
  return spans;
}

/** The first whole-word occurrence of `name` in `context` (followed by a space, `'`, or the end), or -1. */
function findName(context: string, name: string): number {
  for (let at = context.indexOf(name); at >= 0; at = context.indexOf(name, at + 1)) {
    const end = at + name.length;
    const before = at === 0 || context[at - 1] === " ";
    const after = end === context.length || context[end] === " " || context[end] === "'";
    if (before && after) return at;
  }
  return -1;
}

/**
 * The question for sentence `index` of a document, or null: context = the 10 sentences before it
 * (words joined by spaces); question = the sentence with its first proper name that also occurs in the
 * context, and not again in the sentence, replaced by {@linkcode CLOZE_BLANK}; answer = that name's first
 * whole-word occurrence in the context. A possessive name (`np$`, `nps$`: "Atlanta's") is asked without its `'s` / `'`, which stays
 * in the question ("_____'s").
 */
function clozeQuestion(sentences: readonly BrownSentence[], index: number): QaExample | null {
  if (index < CONTEXT_SENTENCES) return null;
  const context = sentences.slice(index - CONTEXT_SENTENCES, index).map((s) => sentenceText(s).text).join(
    " ",
  );
  const sentence = sentences[index];
  const { text, starts } = sentenceText(sentence);
  for (const [first, end] of nameSpans(sentence.tags)) {
    const from = starts[first];
    let to = starts[end - 1] + sentence.words[end - 1].length;
    const last = sentence.words[end - 1];
    if (sentence.tags[end - 1].includes("$")) to -= /'s$/i.test(last) ? 2 : last.endsWith("'") ? 1 : 0;
    const name = text.slice(from, to);
    if (!/[A-Za-z0-9]/.test(name)) continue;
    const start = findName(context, name);
    if (start < 0) continue;
    const question = text.slice(0, from) + CLOZE_BLANK + text.slice(to);
    // A name the sentence repeats ("Kennedy said Kennedy's ...") would give its answer away.
    if (findName(question, name) >= 0) continue;
    return { context, question, answer: { text: name, start } };
  }
  return null;
}

/**
 * Cloze questions from every Brown sentence that has one ({@linkcode clozeQuestion}), at most one per
 * sentence; contexts never leave their file, and files are split as for `ner` and `pos`.
 */
export async function loadQa(limit = Infinity): Promise<Dataset<QaExample>> {
  const splits: Record<SplitName, QaExample[]> = { train: [], validation: [], test: [] };
  let documents = 0;
  for await (const doc of brownDocuments((split) => splits[split].length < limit)) {
    documents++;
    for (let i = CONTEXT_SENTENCES; i < doc.sentences.length && splits[doc.split].length < limit; i++) {
      const example = clozeQuestion(doc.sentences, i);
      if (example) splits[doc.split].push(example);
    }
  }
  return {
    task: "qa",
    ...splits,
    labels: [],
    source: packageId(BROWN_PACKAGE),
    splitRule: BROWN_SPLIT_RULE,
    notes: `${documents} files; cloze: ${CONTEXT_SENTENCES} sentences of context, the next sentence with ` +
      `a proper name that occurs in the context (and once in the sentence) blanked as ${CLOZE_BLANK}`,
  };
}

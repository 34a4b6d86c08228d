/**
 * The SpamAssassin public corpus as a two-class text data set (0 ham, 1 spam); see {@linkcode loadSpam}.
 *
 * @module
 */
import type { Dataset, TextExample } from "./datasets.ts";
import { messageText } from "./mime.ts";
import { expectPackage, packageId, readPackageJson, SPAM_PACKAGE } from "./packages.ts";
import {
  fnv1a,
  HASH_SPLIT_RULE,
  NEAR_DUPLICATE_JACCARD,
  nearDuplicateKeys,
  SplitCollector,
  splitOfKey,
} from "./splits.ts";

const MESSAGES = 6046;

const READ_BATCH = 64;

/** The raw message stored in `data/<group>/<name>.json` for a `file_list.json` entry `<group>/<name>.txt`. */
async function readMessage(file: string): Promise<string> {
  expectPackage(
    SPAM_PACKAGE,
    /^(easy-ham|hard-ham|spam)-\d\/[\w.]+\.txt$/.test(file),
    `unexpected entry ${file}`,
  );
  const stored = await readPackageJson(SPAM_PACKAGE, `data/${file.replace(/\.txt$/, ".json")}`);
  const text = (stored as { text?: unknown })?.text;
  expectPackage(SPAM_PACKAGE, typeof text === "string", `data/${file} has no "text"`);
  return text as string;
}

/**
 * Loads the 6,046 messages of `data/file_list.json` (easy-ham-1, easy-ham-2, hard-ham-1: ham; spam-1,
 * spam-2: spam), each reduced to its Subject and decoded body by {@linkcode messageText}. Messages are
 * read in FNV-1a order of their file name (so a limited load sees both classes); a text already seen is
 * dropped, and the split is a hash of the first text of its group of near-duplicates ({@linkcode nearDuplicateKeys}),
 * so neither equal texts nor a campaign's variants straddle two splits.
 */
export async function loadSpam(limit = Infinity): Promise<Dataset<TextExample>> {
  const list = await readPackageJson(SPAM_PACKAGE, "data/file_list.json");
  expectPackage(
    SPAM_PACKAGE,
    Array.isArray(list) && list.length === MESSAGES && list.every((f) => typeof f === "string"),
    `data/file_list.json should list ${MESSAGES} messages`,
  );
  const files = (list as string[]).slice().sort((a, b) => fnv1a(a) - fnv1a(b) || (a < b ? -1 : 1));
  const collector = new SplitCollector<TextExample>(limit);
  const seen = new Set<string>();
  const messages: TextExample[] = [];
  let duplicates = 0;
  // Every message is read, also for a limited load: near-duplicates are found among all of them.
  // Reads run a batch at a time (in parallel, kept in order): one by one they take most of the load time.
  for (let at = 0; at < files.length; at += READ_BATCH) {
    const batch = files.slice(at, at + READ_BATCH);
    const stored = await Promise.all(batch.map((file) => readMessage(file)));
    for (let i = 0; i < batch.length; i++) {
      const text = messageText(stored[i]);
      if (seen.has(text)) {
        duplicates++;
        continue;
      }
      seen.add(text);
      messages.push({ text, label: batch[i].startsWith("spam") ? 1 : 0 });
    }
  }
  const keys = nearDuplicateKeys(messages.map((m) => m.text));
  for (let i = 0; i < messages.length && !collector.done; i++) {
    collector.add(splitOfKey(keys[i]), messages[i]);
  }

  return {
    task: "spam",
    ...collector.splits,
    labels: ["ham", "spam"],
    source: packageId(SPAM_PACKAGE),
    splitRule:
      `by message text after decoding, near-duplicates (8-word shingles, Jaccard >= ${NEAR_DUPLICATE_JACCARD}) ` +
      `by their group's first text (${HASH_SPLIT_RULE}); exact duplicate texts dropped`,
    notes:
      `${files.length} messages read, ${duplicates} duplicate texts dropped; text = Subject + decoded body`,
  };
}

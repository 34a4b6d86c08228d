/**
 * Tensors, arenas and the joint optimizer beyond one storage binding, at small sizes: a forced small
 * `maxStorageBindingBytes` makes every windowed path run, and results must equal the unwindowed ones.
 */
import { manualSeed } from "../engine/random.ts";
import { tensor, tidy } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { assertBitwiseEqual, setup, withProfile } from "./helpers.ts";

await setup();

/** A GPT-2 whose token table (1000 x 32 floats, 125 KiB) exceeds a 64 KiB binding while its activations fit. */
const WIDE_VOCAB = { vocabSize: 1000, hiddenSize: 32, numLayers: 1, numHeads: 2, maxPositions: 16 };

Deno.test("a parameter beyond one binding lives in one arena chunk and the forward pass equals the unwindowed one", async () => {
  const ids = tensor(Int32Array.from({ length: 8 }, (_, i) => (i * 131) % 1000), { shape: [1, 8] });
  const lossAt = async (limit: number | null) => {
    const run = async () => {
      manualSeed(5);
      const model = new TransformerModel(modelConfig("gpt2", WIDE_VOCAB), { task: "causal-lm", seed: 3 });
      if (limit !== null && model.parameterSet.arena.chunks.length !== 1) {
        throw new Error("one chunk expected");
      }
      const loss = tidy(() => model.forward({ inputIds: ids, labels: ids }).loss!);
      const value = await loss.data();
      model.dispose();
      return value;
    };
    return limit === null ? await run() : await withProfile({ maxStorageBindingBytes: limit }, run);
  };
  assertBitwiseEqual(await lossAt(65536), await lossAt(null), "loss");
});

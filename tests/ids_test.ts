/**
 * Int32 ids have one source of truth: overwriting them in place (writeTensor, copyInto) changes
 * what gather's backward, range checks and RoBERTa's positions see, for the tensor and its views.
 */
import { copyInto, readAll, tensor, writeTensor } from "../engine/tensor.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { sum } from "../kernels/reduce.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { assertBitwiseEqual, assertClose, expectError, setup } from "./helpers.ts";

await setup();

async function rowGradients(ids: ReturnType<typeof tensor>): Promise<number[]> {
  const table = tensor(new Float32Array(6 * 4).fill(1), { shape: [6, 4], requiresGrad: true });
  sum(gatherRows(table, ids)).backward();
  const [grad] = await readAll([table.grad!]);
  return Array.from({ length: 6 }, (_, row) => grad[row * 4]);
}

Deno.test("gather gradients land on the rows of ids overwritten in place, also through a detached alias", async () => {
  const ids = tensor(Int32Array.of(1, 2, 3));
  const view = ids.detach();
  writeTensor(ids, Int32Array.of(0, 0, 5));
  assertClose(await rowGradients(view), [2, 0, 0, 0, 0, 1], {}, "after writeTensor");
  copyInto(ids, tensor(Int32Array.of(4, 4, 4)));
  assertClose(await rowGradients(ids), [0, 0, 0, 0, 3, 0], {}, "after copyInto");
  assertClose(await rowGradients(view.reshape([3, 1])), [0, 0, 0, 0, 3, 0], {}, "reshaped view");
});

Deno.test("range checks see ids and targets overwritten in place", () => {
  const table = tensor(new Float32Array(6 * 4), { shape: [6, 4] });
  const ids = tensor(Int32Array.of(1, 2, 3));
  copyInto(ids, tensor(Int32Array.of(7, 0, 0)));
  expectError(() => gatherRows(table, ids), "gatherRows: id 7 is outside [0, 6) for table [6, 4]");
  const logits = tensor(new Float32Array(3 * 4), { shape: [3, 4] });
  const targets = tensor(Int32Array.of(0, 1, 2));
  writeTensor(targets, Int32Array.of(0, 9, 2));
  expectError(
    () => crossEntropy(logits, targets),
    "crossEntropy: target 9 is outside [0, 4) for logits [3, 4] and is not ignoreIndex (-100)",
  );
  expectError(
    () => writeTensor(targets, Float32Array.of(0, 1, 2)),
    "writeTensor: Float32Array values for tensor int32[3]",
  );
});

Deno.test("RoBERTa's padding-aware positions follow ids overwritten in place", async () => {
  const config = modelConfig("roberta", {
    hiddenSize: 8,
    numHeads: 2,
    numLayers: 1,
    intermediateSize: 16,
    vocabSize: 20,
    maxPositions: 12,
  });
  const model = new TransformerModel(config, { seed: 4 }).eval();
  const padded = Int32Array.of(5, 6, 7, 1, 1, 9, 1, 1, 1, 1);
  const ids = tensor(Int32Array.of(5, 6, 7, 8, 9, 10, 11, 12, 13, 14), { shape: [2, 5] });
  writeTensor(ids, padded);
  const mask = tensor(Int32Array.from(padded, (id) => (id === 1 ? 0 : 1)), { shape: [2, 5] });
  const [inPlace] = await readAll([model.forward({ inputIds: ids, attentionMask: mask }).lastHiddenState]);
  const fresh = tensor(padded, { shape: [2, 5] });
  const [expected] = await readAll([model.forward({ inputIds: fresh, attentionMask: mask }).lastHiddenState]);
  assertBitwiseEqual(inPlace, expected, "hidden state");
});

/**
 * A malformed batch or an unknown task is rejected up front with a message naming the batch field
 * (or the task) and its shape, never with a shape error from a kernel deep inside the forward pass.
 */
import { type Tensor, tensor } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import { expectError, setup } from "./helpers.ts";

await setup();

const SMALL = {
  hiddenSize: 8,
  numLayers: 1,
  numHeads: 2,
  intermediateSize: 16,
  vocabSize: 50,
  maxPositions: 16,
  padTokenId: 1,
};

function model(family: ModelFamily): TransformerModel {
  return new TransformerModel(modelConfig(family, SMALL), { task: "sequence-classification" });
}

function zeros(shape: number[]): Tensor {
  return tensor(new Int32Array(shape.reduce((a, b) => a * b, 1)), { shape });
}

Deno.test("an unknown task is rejected with the list of valid tasks, with or without weights", () => {
  const expected = 'unknown task "foo"; valid tasks: base, sequence-classification, token-classification, ' +
    "question-answering, causal-lm, masked-lm";
  for (const allocate of [false, true]) {
    expectError(
      () => new TransformerModel(modelConfig("bert", SMALL), { task: "foo" as Task, allocate }),
      expected,
    );
  }
});

Deno.test("a batch field with another name (Hugging Face's input_ids, attention_mask) is refused naming it", () => {
  const m = model("bert");
  const ids = zeros([2, 4]);
  const accepted = "accepted: inputIds, attentionMask, tokenTypeIds, labels, startPositions, endPositions";
  expectError(
    () => m.forward({ input_ids: ids } as never),
    `forward: unknown batch field "input_ids" (Hugging Face's input_ids is inputIds here); ${accepted}`,
  );
  expectError(
    () => m.forward({ inputIds: ids, attention_mask: ids } as never),
    `forward: unknown batch field "attention_mask" (Hugging Face's attention_mask is attentionMask here); ${accepted}`,
  );
  expectError(
    () => m.forward({ inputIds: ids, mask: ids } as never),
    `forward: unknown batch field "mask"; ${accepted}`,
  );
  expectError(() => m.forward({} as never), "forward: the batch has no inputIds");
  expectError(
    () => m.forward(ids as never),
    "forward: the batch must be an object with inputIds ({ inputIds, ... }), got Tensor(int32[2, 4])",
  );
  // An optional field left undefined is not an error.
  m.forward({ inputIds: ids, attentionMask: undefined }).logits!.dispose();
  m.dispose();
});

Deno.test("an empty batch or a zero-length sequence names inputIds and its shape", () => {
  for (const family of ["bert", "gpt2", "roberta"] as const) {
    const m = model(family);
    for (const shape of [[0, 4], [2, 0], [0, 0]]) {
      expectError(
        () => m.forward({ inputIds: zeros(shape) }),
        `forward: inputIds [${shape.join(", ")}] is empty; batch size and sequence length must be at least 1`,
      );
    }
  }
});

Deno.test("inputIds of the wrong rank, mismatched companions and over-long sequences are named", () => {
  const bert = model("bert");
  expectError(
    () => bert.forward({ inputIds: zeros([4]) }),
    "forward: inputIds must be [batch, length], got [4]",
  );
  expectError(
    () => bert.forward({ inputIds: zeros([1, 2, 2]) }),
    "forward: inputIds must be [batch, length], got [1, 2, 2]",
  );
  for (const family of ["bert", "gpt2", "roberta"] as const) {
    const m = model(family);
    expectError(
      () => m.forward({ inputIds: zeros([2, 3]), attentionMask: zeros([2, 4]) }),
      "forward: attentionMask [2, 4] does not match inputIds [2, 3]",
    );
    // GPT-2 has no token-type embedding, yet a token-type tensor of the wrong shape is still a wrong batch.
    expectError(
      () => m.forward({ inputIds: zeros([2, 3]), tokenTypeIds: zeros([3, 2]) }),
      "forward: tokenTypeIds [3, 2] does not match inputIds [2, 3]",
    );
  }
  expectError(
    () => bert.forward({ inputIds: zeros([1, 17]) }),
    "forward: inputIds [1, 17]: sequence length 17 exceeds the 16 positions the model can use (maxPositions 16)",
  );
  // RoBERTa numbers positions from pad + 1, so 15 tokens already overflow its 16 position embeddings.
  expectError(
    () => model("roberta").forward({ inputIds: zeros([1, 15]) }),
    "forward: inputIds [1, 15]: sequence length 15 exceeds the 14 positions the model can use (maxPositions 16)",
  );
});

Deno.test("token-classification labels of the wrong shape are named with the shape they need", () => {
  const tagger = new TransformerModel(modelConfig("bert", SMALL), {
    task: "token-classification",
    numLabels: 3,
  });
  expectError(
    () => tagger.forward({ inputIds: zeros([2, 5]), labels: zeros([2]) }),
    "labels: expected [2, 5] (a tag per token), got [2]",
  );
  tagger.dispose();
});

/**
 * One joint training step of `deno task train`'s default run: BERT-, GPT-2- and RoBERTa-style
 * sequence classifiers at the cpu preset's size (hidden 64, 2 layers, 4 heads, feed-forward 256,
 * dropout 0.2; a 1,024-entry vocabulary where the default run's tokenizer has 4,096), a batch of 32 sequences of 64 tokens, forward, backward and the
 * fused optimizer with every mechanism on. Run it with `MM_KERNELS=...` to compare kernel variants on
 * the whole step (docs/benchmarks.md).
 */
import { Random } from "../engine/random.ts";
import { tensor, tidy } from "../engine/tensor.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { benchGpu } from "./harness.ts";

const BATCH = 32, LENGTH = 64, VOCAB = 1024;
const FAMILIES: ModelFamily[] = ["bert", "gpt2", "roberta"];

let models: Record<string, TransformerModel> = {};
let optimizer: MultiModelOptimizer;
let inputIds: Int32Array;
let labels: Int32Array;

/**
 * Floating-point operations of a step, by the usual 6 x parameters x tokens (forward 2, backward 4)
 * over the parameters that multiply (embedding tables are gathered, not multiplied); attention's
 * T x T products and the optimizer are not counted, so the rate is a lower bound.
 */
function stepFlops(): number {
  const multiplying = Object.values(models).flatMap((m) => m.parameterSet.infos)
    .filter((info) => info.site !== "embeddings")
    .reduce((n, info) => n + info.shape.reduce((p, d) => p * d, 1), 0);
  return 6 * multiplying * BATCH * LENGTH;
}

benchGpu({
  name: "joint train step, 3 models h64 l2, batch 32 x 64",
  reps: 2,
  get flops() {
    return stepFlops();
  },
  setup() {
    models = Object.fromEntries(FAMILIES.map((family, k) => [
      family,
      new TransformerModel(
        modelConfig(family, {
          vocabSize: VOCAB,
          hiddenSize: 64,
          numLayers: 2,
          numHeads: 4,
          intermediateSize: 256,
          maxPositions: LENGTH + 2,
          hiddenDropout: 0.2,
          attentionDropout: 0.2,
        }),
        { task: "sequence-classification", numLabels: 2, seed: k + 1 },
      ),
    ]));
    optimizer = new MultiModelOptimizer({
      models,
      lr: 1e-3,
      gradientSharing: { ratio: 0.2 },
      parameterSync: { ratio: 0.1 },
    });
    const random = new Random(0);
    inputIds = Int32Array.from({ length: BATCH * LENGTH }, () => 3 + random.int(VOCAB - 3));
    labels = Int32Array.from({ length: BATCH }, () => random.int(2));
  },
  run() {
    tidy(() => {
      optimizer.zeroGrad();
      const ids = tensor(inputIds, { shape: [BATCH, LENGTH] });
      const target = tensor(labels, { shape: [BATCH] });
      const losses = Object.fromEntries(
        Object.entries(models).map((
          [name, model],
        ) => [name, model.forward({ inputIds: ids, labels: target }).loss!]),
      );
      for (const loss of Object.values(losses)) loss.backward();
      optimizer.logMetrics(losses);
      optimizer.step();
    });
  },
});

import { type Tensor, tensor } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { crossEntropy, softCrossEntropy } from "../kernels/cross_entropy.ts";
import { benchGpu } from "./harness.ts";

/** GPT-2's vocabulary over a batch of rows: the language-model loss. */
const VOCAB = 50257, ROWS = 128;
/** A classifier's few classes over many rows: the soft-target (distillation) loss. */
const CLASSES = 1000, SOFT_ROWS = 1024;
let logits: Tensor, targets: Tensor, softLogits: Tensor, probabilities: Tensor;

const random = new Random(1);

benchGpu({
  name: `crossEntropy forward + backward, [${ROWS}, ${VOCAB}]`,
  group: "cross entropy",
  bytes: 3 * ROWS * VOCAB * 4,
  reps: 5,
  setup() {
    const values = new Float32Array(ROWS * VOCAB).map(() => random.normal());
    logits = tensor(values, { shape: [ROWS, VOCAB], requiresGrad: true });
    targets = tensor(Int32Array.from({ length: ROWS }, () => random.int(VOCAB)));
  },
  run() {
    const loss = crossEntropy(logits, targets);
    loss.backward();
    loss.dispose();
    logits.grad!.dispose();
    logits.grad = null;
  },
});

benchGpu({
  name: `crossEntropy forward only, [${ROWS}, ${VOCAB}]`,
  group: "cross entropy",
  bytes: ROWS * VOCAB * 4,
  reps: 10,
  setup() {},
  run() {
    crossEntropy(logits.detach(), targets).dispose();
  },
});

benchGpu({
  name: `softCrossEntropy forward + backward, [${SOFT_ROWS}, ${CLASSES}]`,
  group: "cross entropy",
  // Forward reads logits and targets; backward reads both again and writes the gradient.
  bytes: 5 * SOFT_ROWS * CLASSES * 4,
  reps: 10,
  setup() {
    softLogits = tensor(random.normals(SOFT_ROWS * CLASSES), {
      shape: [SOFT_ROWS, CLASSES],
      requiresGrad: true,
    });
    const raw = random.normals(SOFT_ROWS * CLASSES).map(Math.exp);
    for (let r = 0; r < SOFT_ROWS; r++) {
      const row = raw.subarray(r * CLASSES, (r + 1) * CLASSES);
      const total = row.reduce((s, v) => s + v, 0);
      row.forEach((v, c) => (row[c] = v / total));
    }
    probabilities = tensor(raw, { shape: [SOFT_ROWS, CLASSES] });
  },
  run() {
    const loss = softCrossEntropy(softLogits, probabilities);
    loss.backward();
    loss.dispose();
    softLogits.grad!.dispose();
    softLogits.grad = null;
  },
});

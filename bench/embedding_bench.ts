import { type Tensor, tensor } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { dropout } from "../kernels/dropout.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { benchGpu } from "./harness.ts";

const VOCAB = 50257, WIDTH = 768, TOKENS = 1024;
const CLASSES_ROWS = 128;
let table: Tensor, ids: Tensor, upstream: Tensor, logits: Tensor, targets: Tensor, activations: Tensor;

const random = new Random(1);

benchGpu({
  name: `gatherRows forward, ${TOKENS} ids from [${VOCAB}, ${WIDTH}]`,
  group: "embedding",
  bytes: 2 * TOKENS * WIDTH * 4,
  reps: 20,
  setup() {
    table = tensor(new Float32Array(VOCAB * WIDTH), { shape: [VOCAB, WIDTH], requiresGrad: true });
    ids = tensor(Int32Array.from({ length: TOKENS }, () => random.int(VOCAB)));
    upstream = tensor(new Float32Array(TOKENS * WIDTH), { shape: [TOKENS, WIDTH] });
  },
  run() {
    gatherRows(table.detach(), ids).dispose();
  },
});

benchGpu({
  name: `gatherRows forward + backward (table gradient cleared and written), ${TOKENS} ids`,
  group: "embedding",
  bytes: (3 * TOKENS * WIDTH + VOCAB * WIDTH) * 4,
  reps: 5,
  setup() {},
  run() {
    const out = gatherRows(table, ids);
    out.backward(upstream);
    out.dispose();
    table.grad!.dispose();
    table.grad = null;
  },
});

benchGpu({
  name: `crossEntropy forward + backward, [${CLASSES_ROWS}, ${VOCAB}]`,
  group: "cross entropy",
  bytes: 3 * CLASSES_ROWS * VOCAB * 4,
  reps: 5,
  setup() {
    const values = new Float32Array(CLASSES_ROWS * VOCAB).map(() => random.normal());
    logits = tensor(values, { shape: [CLASSES_ROWS, VOCAB], requiresGrad: true });
    targets = tensor(Int32Array.from({ length: CLASSES_ROWS }, () => random.int(VOCAB)));
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
  name: `crossEntropy forward only, [${CLASSES_ROWS}, ${VOCAB}]`,
  group: "cross entropy",
  bytes: CLASSES_ROWS * VOCAB * 4,
  reps: 10,
  setup() {},
  run() {
    crossEntropy(logits.detach(), targets).dispose();
  },
});

benchGpu({
  name: `dropout p 0.1, ${TOKENS * WIDTH} floats`,
  group: "dropout",
  bytes: 2 * TOKENS * WIDTH * 4,
  reps: 20,
  setup() {
    activations = tensor(new Float32Array(TOKENS * WIDTH), { shape: [TOKENS, WIDTH] });
  },
  run() {
    dropout(activations, 0.1).dispose();
  },
});

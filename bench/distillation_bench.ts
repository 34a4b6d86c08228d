import { type Tensor, tensor } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { mutualDistillation } from "../kernels/distillation.ts";
import { benchGpu } from "./harness.ts";

/** Three classifiers' logits over a batch of rows: each model distils from the other two. */
const ROWS = 512, CLASSES = 1000, PEERS = 2;
let logits: Tensor, peers: Tensor[];

benchGpu({
  name: `mutualDistillation forward + backward, [${ROWS}, ${CLASSES}] from ${PEERS} peers`,
  group: "distillation",
  // Per peer, besides its softmax and cross-entropy: the non-finite count (a pass out, a sum back in)
  // and the cleaned copy (a pass in, one out) that keep a faulted peer's rows out.
  bytes: (3 + 7 * PEERS) * ROWS * CLASSES * 4,
  reps: 5,
  setup() {
    const random = new Random(1);
    logits = tensor(random.normals(ROWS * CLASSES), { shape: [ROWS, CLASSES], requiresGrad: true });
    peers = Array.from(
      { length: PEERS },
      () => tensor(random.normals(ROWS * CLASSES), { shape: [ROWS, CLASSES] }),
    );
  },
  run() {
    const loss = mutualDistillation(logits, peers);
    loss.backward();
    loss.dispose();
    logits.grad!.dispose();
    logits.grad = null;
  },
});

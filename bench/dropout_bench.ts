import { type Tensor, tensor } from "../engine/tensor.ts";
import { dropout } from "../kernels/dropout.ts";
import { benchGpu } from "./harness.ts";

const TOKENS = 1024, WIDTH = 768;
let activations: Tensor, trainable: Tensor, upstream: Tensor;

benchGpu({
  name: `dropout p 0.1, ${TOKENS * WIDTH} floats`,
  group: "dropout",
  bytes: 2 * TOKENS * WIDTH * 4,
  reps: 20,
  setup() {
    activations = tensor(new Float32Array(TOKENS * WIDTH), { shape: [TOKENS, WIDTH] });
    trainable = tensor(new Float32Array(TOKENS * WIDTH), { shape: [TOKENS, WIDTH], requiresGrad: true });
    upstream = tensor(new Float32Array(TOKENS * WIDTH), { shape: [TOKENS, WIDTH] });
  },
  run() {
    dropout(activations, 0.1).dispose();
  },
});

benchGpu({
  name: `dropout p 0.1 forward + backward, ${TOKENS * WIDTH} floats`,
  group: "dropout",
  bytes: 4 * TOKENS * WIDTH * 4,
  reps: 10,
  setup() {},
  run() {
    const out = dropout(trainable, 0.1);
    out.backward(upstream);
    out.dispose();
    trainable.grad!.dispose();
    trainable.grad = null;
  },
});

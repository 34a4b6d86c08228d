import { type Tensor, tensor } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { benchGpu } from "./harness.ts";

const VOCAB = 50257, WIDTH = 768, TOKENS = 1024;
let table: Tensor, ids: Tensor, upstream: Tensor;

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

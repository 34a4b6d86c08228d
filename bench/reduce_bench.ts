import { noGrad, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { benchGpu } from "./harness.ts";

const ROWS = 1024, COLS = 768, N = ROWS * COLS;
let x: Tensor;

function setup(): void {
  x ??= tensor(new Random(1).normals(N), { shape: [ROWS, COLS], requiresGrad: true });
}

benchGpu({
  name: `sum over the last axis (row tree), ${ROWS} x ${COLS}`,
  group: "reduce",
  bytes: N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => noGrad(() => sum(x, -1)));
  },
});

benchGpu({
  name: `mean over axis 0 (strided chunks), ${ROWS} x ${COLS}`,
  group: "reduce",
  bytes: N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => noGrad(() => mean(x, 0)));
  },
});

benchGpu({
  name: `sum of everything + backward (broadcast), ${ROWS} x ${COLS}`,
  group: "reduce",
  bytes: 2 * N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => sum(x).backward());
    x.grad!.dispose();
    x.grad = null;
  },
});

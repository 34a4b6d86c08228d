import { gpu } from "../engine/device.ts";
import { noGrad, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { benchGpu } from "./harness.ts";

/** LayerNorm's bench shape (bench/layernorm_bench.ts), so the two norms compare directly. */
const ROWS = 4096;
const COLS = 768;
const N = ROWS * COLS;
const reps = gpu().profile.isSoftware ? 8 : 50;

let x: Tensor, gamma: Tensor, dy: Tensor;

function setup(): void {
  if (x) return;
  const random = new Random(1);
  x = tensor(random.normals(N), { shape: [ROWS, COLS], requiresGrad: true });
  gamma = tensor(random.normals(COLS), { requiresGrad: true });
  dy = tensor(random.normals(N), { shape: [ROWS, COLS] });
}

// Bytes are the least any implementation moves: forward reads x and writes y; backward reads x and
// dy and writes dx (gamma and its gradient are negligible).
benchGpu({
  name: `rmsNorm forward, ${ROWS} x ${COLS}`,
  group: "rmsnorm",
  bytes: 2 * N * 4,
  reps,
  setup,
  run() {
    tidy(() => noGrad(() => rmsNorm(x, gamma, 1e-6)));
  },
});

benchGpu({
  name: `rmsNorm forward + backward (x, gamma), ${ROWS} x ${COLS}`,
  group: "rmsnorm",
  bytes: 5 * N * 4,
  reps,
  setup,
  run() {
    tidy(() => rmsNorm(x, gamma, 1e-6).backward(dy));
    for (const t of [x, gamma]) {
      t.grad?.dispose();
      t.grad = null;
    }
  },
});

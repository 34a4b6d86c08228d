import { gpu } from "../engine/device.ts";
import { noGrad, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { benchGpu } from "./harness.ts";

const ROWS = 4096;
const COLS = 768;
const N = ROWS * COLS;
const reps = gpu().profile.isSoftware ? 8 : 50;

let x: Tensor, gamma: Tensor, beta: Tensor, dy: Tensor;

function setup(): void {
  if (x) return;
  const random = new Random(1);
  x = tensor(random.normals(N), { shape: [ROWS, COLS], requiresGrad: true });
  gamma = tensor(random.normals(COLS), { requiresGrad: true });
  beta = tensor(random.normals(COLS), { requiresGrad: true });
  dy = tensor(random.normals(N), { shape: [ROWS, COLS] });
}

function clearGrads(...tensors: Tensor[]): void {
  for (const t of tensors) {
    t.grad?.dispose();
    t.grad = null;
  }
}

// Bytes are the least any implementation moves: forward reads x and writes y; backward reads x and
// dy and writes dx (gamma, beta and their gradients are negligible).
benchGpu({
  name: `layerNorm forward, ${ROWS} x ${COLS}`,
  group: "layernorm",
  bytes: 2 * N * 4,
  reps,
  numpy: `layernorm ${ROWS} ${COLS} fwd`,
  setup,
  run() {
    tidy(() => noGrad(() => layerNorm(x, gamma, beta, 1e-5)));
  },
});

benchGpu({
  name: `layerNorm forward + backward (x, gamma, beta), ${ROWS} x ${COLS}`,
  group: "layernorm",
  bytes: 5 * N * 4,
  reps,
  numpy: `layernorm ${ROWS} ${COLS} bwd`,
  setup,
  run() {
    tidy(() => layerNorm(x, gamma, beta, 1e-5).backward(dy));
    clearGrads(x, gamma, beta);
  },
});

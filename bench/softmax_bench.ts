import { gpu } from "../engine/device.ts";
import { noGrad, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { logSoftmax, softmax } from "../kernels/softmax.ts";
import { benchGpu } from "./harness.ts";

const ROWS = 4096;
const COLS = 1024;
const reps = gpu().profile.isSoftware ? 8 : 50;

let logits: Tensor, upstream: Tensor;

function setup(): void {
  if (logits) return;
  const random = new Random(1);
  logits = tensor(random.normals(ROWS * COLS, 3), { shape: [ROWS, COLS], requiresGrad: true });
  upstream = tensor(random.normals(ROWS * COLS), { shape: [ROWS, COLS] });
}

function clearGrad(): void {
  logits.grad?.dispose();
  logits.grad = null;
}

// Bytes are the least any implementation moves: forward reads x and writes y; backward reads y and
// dy and writes dx.
benchGpu({
  name: `softmax forward, ${ROWS} x ${COLS}`,
  group: "softmax",
  bytes: 2 * ROWS * COLS * 4,
  reps,
  numpy: `softmax ${ROWS} ${COLS} fwd`,
  setup,
  run() {
    tidy(() => noGrad(() => softmax(logits)));
  },
});

benchGpu({
  name: `softmax forward + backward, ${ROWS} x ${COLS}`,
  group: "softmax",
  bytes: 5 * ROWS * COLS * 4,
  reps,
  numpy: `softmax ${ROWS} ${COLS} bwd`,
  setup,
  run() {
    tidy(() => softmax(logits).backward(upstream));
    clearGrad();
  },
});

benchGpu({
  name: `logSoftmax forward + backward, ${ROWS} x ${COLS}`,
  group: "softmax",
  bytes: 5 * ROWS * COLS * 4,
  reps,
  setup,
  run() {
    tidy(() => logSoftmax(logits).backward(upstream));
    clearGrad();
  },
});

benchGpu({
  name: `softmax over axis 0 (strided kernel), ${ROWS / 16} x ${COLS * 16}`,
  group: "softmax",
  bytes: 2 * ROWS * COLS * 4,
  reps,
  setup,
  run() {
    tidy(() => noGrad(() => softmax(logits.reshape([ROWS / 16, COLS * 16]), 0)));
  },
});

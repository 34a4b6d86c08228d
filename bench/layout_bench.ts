import { noGrad, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { concat, narrow, permute, transpose } from "../kernels/layout.ts";
import { benchGpu } from "./harness.ts";

/** A batch of hidden states split into heads, [B, T, H, D]: the layouts attention reshapes between. */
const B = 8, T = 128, H = 12, D = 64, N = B * T * H * D;
let x: Tensor, matrix: Tensor;

function setup(): void {
  if (x) return;
  const random = new Random(1);
  x = tensor(random.normals(N), { shape: [B, T, H, D] });
  matrix = tensor(random.normals(N), { shape: [B * T, H * D] });
}

benchGpu({
  name: `permute [B, T, H, D] -> [B, H, T, D], ${N} floats`,
  group: "layout",
  bytes: 2 * N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => noGrad(() => permute(x, [0, 2, 1, 3])));
  },
});

benchGpu({
  name: `transpose [${B * T}, ${H * D}]`,
  group: "layout",
  bytes: 2 * N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => noGrad(() => transpose(matrix)));
  },
});

benchGpu({
  name: `narrow half the columns of [${B * T}, ${H * D}]`,
  group: "layout",
  bytes: N * 4,
  reps: 20,
  setup,
  run() {
    tidy(() => noGrad(() => narrow(matrix, 1, 0, (H * D) / 2)));
  },
});

/** The two halves concat joins, made once: narrow copies, which the concat row must not time. */
let halves: [Tensor, Tensor];

benchGpu({
  name: `concat two [${B * T}, ${(H * D) / 2}] along columns`,
  group: "layout",
  bytes: 2 * N * 4,
  reps: 20,
  setup() {
    setup();
    halves ??= noGrad(() => [narrow(matrix, 1, 0, (H * D) / 2), narrow(matrix, 1, (H * D) / 2, (H * D) / 2)]);
  },
  run() {
    tidy(() => noGrad(() => concat(halves, 1)));
  },
});

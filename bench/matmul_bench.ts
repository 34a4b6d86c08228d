import { type Tensor, tensor } from "../engine/tensor.ts";
import { linear, matmul } from "../kernels/matmul.ts";
import { benchGpu } from "./harness.ts";

/** A product [M, K] x [K, N] (or x [N, K]^T, the Linear weight layout) and its repetitions per iteration. */
interface Product {
  name: string;
  M: number;
  N: number;
  K: number;
  transposeB: boolean;
  reps: number;
}

const products: Product[] = [
  { name: "square 256", M: 256, N: 256, K: 256, transposeB: false, reps: 20 },
  { name: "square 512", M: 512, N: 512, K: 512, transposeB: false, reps: 4 },
  { name: "square 1024", M: 1024, N: 1024, K: 1024, transposeB: false, reps: 1 },
  { name: "square 2048", M: 2048, N: 2048, K: 2048, transposeB: false, reps: 1 },
  {
    name: "[4096, 768] x [768, 768]^T (attention projection)",
    M: 4096,
    N: 768,
    K: 768,
    transposeB: true,
    reps: 1,
  },
  { name: "[4096, 768] x [3072, 768]^T (MLP up)", M: 4096, N: 3072, K: 768, transposeB: true, reps: 1 },
  { name: "[4096, 3072] x [768, 3072]^T (MLP down)", M: 4096, N: 768, K: 3072, transposeB: true, reps: 1 },
  { name: "[512, 256] x [256, 256]", M: 512, N: 256, K: 256, transposeB: false, reps: 10 },
];

/** Small deterministic values, so that no denormals or infinities skew the timing. */
function filled(shape: number[]): Tensor {
  const values = new Float32Array(shape[0] * shape[1]).map((_, i) => ((i * 7919) % 255) / 255 - 0.5);
  return tensor(values, { shape });
}

for (const p of products) {
  let a: Tensor, b: Tensor;
  benchGpu({
    name: p.name,
    group: "matmul",
    flops: 2 * p.M * p.N * p.K,
    reps: p.reps,
    numpy: `matmul ${p.M} ${p.N} ${p.K} ${p.transposeB ? "T" : "N"}`,
    setup() {
      a = filled([p.M, p.K]);
      b = filled(p.transposeB ? [p.N, p.K] : [p.K, p.N]);
    },
    run() {
      matmul(a, b, { transposeB: p.transposeB }).dispose();
    },
  });
}

let x: Tensor, weight: Tensor, bias: Tensor;
benchGpu({
  name: "linear [512, 256] x [256, 256]^T + bias",
  group: "matmul",
  flops: 2 * 512 * 256 * 256,
  reps: 10,
  setup() {
    [x, weight, bias] = [filled([512, 256]), filled([256, 256]), tensor(new Float32Array(256).fill(0.1))];
  },
  run() {
    linear(x, weight, bias).dispose();
  },
});

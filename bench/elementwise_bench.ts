import { type Tensor, tensor } from "../engine/tensor.ts";
import { fused, gelu } from "../kernels/elementwise.ts";
import { benchGpu } from "./harness.ts";

const N = 1 << 22;
let x: Tensor, bias: Tensor, residual: Tensor;

benchGpu({
  name: `fused chain gelu(x + bias) + residual, ${N} floats`,
  group: "elementwise",
  bytes: 3 * N * 4,
  reps: 20,
  setup() {
    x = tensor(new Float32Array(N), { shape: [N / 1024, 1024] });
    bias = tensor(new Float32Array(1024));
    residual = tensor(new Float32Array(N), { shape: [N / 1024, 1024] });
  },
  run() {
    fused([x, bias, residual], (a, b, r) => a.add(b).gelu("erf").add(r)).dispose();
  },
});

benchGpu({
  name: `gelu alone, ${N} floats`,
  group: "elementwise",
  bytes: 2 * N * 4,
  reps: 20,
  setup() {},
  run() {
    gelu(x).dispose();
  },
});

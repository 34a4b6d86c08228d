import { type Tensor, tensor } from "../engine/tensor.ts";
import {
  add,
  div,
  exp,
  fused,
  gelu,
  log,
  mul,
  neg,
  relu,
  scale,
  sigmoid,
  sqrt,
  sub,
  tanh,
} from "../kernels/elementwise.ts";
import { benchGpu } from "./harness.ts";

const N = 1 << 22;
let x: Tensor, bias: Tensor, residual: Tensor;

benchGpu({
  name: `fused chain gelu_tanh(x + bias) + residual, ${N} floats`,
  group: "elementwise",
  bytes: 3 * N * 4,
  reps: 20,
  numpy: `chain ${N / 1024} 1024`,
  setup() {
    x = tensor(new Float32Array(N), { shape: [N / 1024, 1024] });
    bias = tensor(new Float32Array(1024));
    residual = tensor(new Float32Array(N), { shape: [N / 1024, 1024] });
  },
  run() {
    fused([x, bias, residual], (a, b, r) => a.add(b).gelu("tanh").add(r)).dispose();
  },
});

benchGpu({
  name: `gelu_tanh alone, ${N} floats`,
  group: "elementwise",
  bytes: 2 * N * 4,
  reps: 20,
  numpy: `gelu ${N}`,
  setup() {},
  run() {
    gelu(x, "tanh").dispose();
  },
});

/** Every other elementwise op alone, at a quarter of the size: one kernel each, all memory-bound. */
const M = N / 4;
let a: Tensor, b: Tensor;
const ops: [string, number, () => Tensor][] = [
  ["add", 3, () => add(a, b)],
  ["sub", 3, () => sub(a, b)],
  ["mul", 3, () => mul(a, b)],
  ["div", 3, () => div(a, b)],
  ["scale", 2, () => scale(a, 0.5)],
  ["neg", 2, () => neg(a)],
  ["exp", 2, () => exp(a)],
  ["log", 2, () => log(b)],
  ["sqrt", 2, () => sqrt(b)],
  ["tanh", 2, () => tanh(a)],
  ["sigmoid", 2, () => sigmoid(a)],
  ["relu", 2, () => relu(a)],
];
for (const [op, arrays, run] of ops) {
  benchGpu({
    name: `${op}, ${M} floats`,
    group: "elementwise ops",
    bytes: arrays * M * 4,
    reps: 10,
    setup() {
      a ??= tensor(new Float32Array(M).fill(0.5));
      b ??= tensor(new Float32Array(M).fill(2));
    },
    run() {
      run().dispose();
    },
  });
}

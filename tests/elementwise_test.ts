import { tensor } from "../engine/tensor.ts";
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
import { sum } from "../kernels/reduce.ts";
import type { Expr } from "../kernels/elementwise_ops.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { array64, mapBroadcast, sumToShape } from "../kernels/reference/array.ts";
import * as ref from "../kernels/reference/elementwise.ts";
import {
  assertBitwiseEqual,
  assertClose,
  numericGradient,
  randomValues,
  setup,
  withProfile,
} from "./helpers.ts";

await setup();

const SIZES = [1, 7, 33, 129, 257, 1000];

Deno.test("reference derivatives agree with finite differences", () => {
  const ops: [string, ref.ScalarOp, number[]][] = [
    ["gelu erf", ref.geluErf, [-3.1, -0.7, 0, 0.3, 2.4, 5.2]],
    ["gelu tanh", ref.geluTanh, [-3.1, -0.7, 0, 0.3, 2.4, 5.2]],
    ["tanh", ref.tanh, [-2, -0.1, 0.5, 3]],
    ["sigmoid", ref.sigmoid, [-4, 0, 0.2, 6]],
    ["exp", ref.exp, [-1, 0, 2]],
    ["log", ref.log, [0.1, 1, 7]],
    ["sqrt", ref.sqrt, [0.1, 1, 7]],
  ];
  for (const [name, op, points] of ops) {
    for (const x of points) {
      const numeric = numericGradient((v) => op.f(v[0]), Float64Array.of(x))[0];
      assertClose([op.df(x)], [numeric], { atol: 1e-8, rtol: 1e-7 }, `${name}'(${x})`);
    }
  }
});

Deno.test("unary ops match the float64 reference, forward and backward, at every size", async () => {
  for (const size of SIZES) await unaryOps(size);
});

async function unaryOps(size: number): Promise<void> {
  const cases: [string, (t: ReturnType<typeof tensor>) => ReturnType<typeof tensor>, ref.ScalarOp, number][] =
    [
      ["gelu erf", (t) => gelu(t, "erf"), ref.geluErf, 0],
      ["gelu tanh", (t) => gelu(t, "tanh"), ref.geluTanh, 0],
      ["tanh", tanh, ref.tanh, 0],
      ["sigmoid", sigmoid, ref.sigmoid, 0],
      ["exp", exp, ref.exp, 0],
      ["relu", relu, ref.relu, 0],
      ["neg", neg, ref.neg, 0],
      ["log", log, ref.log, 3],
      ["sqrt", sqrt, ref.sqrt, 3],
    ];
  {
    for (const [name, op, reference, shift] of cases) {
      const values = randomValues(size, size, 2).map((v) => (shift ? Math.abs(v) + 0.1 : v));
      const upstream = randomValues(size, size + 1);
      const x = tensor(values, { requiresGrad: true });
      const y = op(x);
      y.backward(tensor(upstream));
      const [out, grad] = [await y.data(), await x.grad!.data()];
      const expected = Array.from(values, (v) => reference.f(v));
      const expectedGrad = Array.from(values, (v, i) => reference.df(v) * upstream[i]);
      assertClose(out, expected, { atol: 2e-6, rtol: 2e-6 }, `${name} forward, size ${size}`);
      assertClose(grad, expectedGrad, { atol: 5e-6, rtol: 5e-6 }, `${name} backward, size ${size}`);
    }
  }
}

Deno.test("tanh and GELU stay finite for large inputs", async () => {
  const x = tensor([-1e4, -90, -20, 20, 90, 1e4]);
  for (const y of [tanh(x), gelu(x, "tanh"), gelu(x, "erf"), sigmoid(x)]) {
    for (const v of await y.data()) if (!Number.isFinite(v)) throw new Error(`non-finite output ${v}`);
  }
});

Deno.test("relu passes a NaN and its gradient on, as PyTorch does, in both variants", async () => {
  for (const variant of ["scalar", "texel"]) {
    await withKernels(`elementwise:${variant}`, async () => {
      const x = tensor([NaN, -1, 0, 2, NaN, -3, 4, 5], { requiresGrad: true });
      const y = relu(x);
      y.backward(tensor([1, 1, 1, 1, 1, 1, 1, 1]));
      const [out, grad] = [Array.from(await y.data()), Array.from(await x.grad!.data())];
      if (String(out) !== "NaN,0,0,2,NaN,0,4,5" || String(grad) !== "1,0,0,1,1,0,1,1") {
        throw new Error(`${variant}: relu ${out}, gradient ${grad}`);
      }
    });
  }
});

Deno.test("binary ops broadcast like NumPy and reduce gradients to each input's shape", async () => {
  await binaryOps([
    [[7], [7]],
    [[3, 33], [33]],
    [[2, 5, 7], [5, 1]],
    [[1, 129], [4, 1]],
    [[2, 1, 3], [1, 4, 1]],
    [[1], [2, 3]],
    [[257, 3], [257, 1]],
  ]);
});

Deno.test("the texel variant (software adapters) reads every broadcast pattern in vec4s", async () => {
  // Each input a quad of its own, a contiguous row, one value per quad (a column or a scalar).
  const shapes: [number[], number[]][] = [[[12], [12]], [[3, 32], [32]], [[2, 5, 8], [5, 1]], [[1], [4, 4]]];
  await withKernels("elementwise:texel", async () => {
    for (const [sa, sb] of shapes) {
      const a = tensor(new Float32Array(sa.reduce((p, d) => p * d, 1)), { shape: sa });
      const b = tensor(new Float32Array(sb.reduce((p, d) => p * d, 1)), { shape: sb });
      const kernel = traceDispatches(() => add(a, b)).dispatches[0].kernel;
      if (kernel !== "add_texel") throw new Error(`[${sa}] + [${sb}] ran ${kernel}`);
    }
    await binaryOps([...shapes, [[3, 7], [7]]]);
    for (const size of [4, 1000]) await unaryOps(size);
  });
  await withKernels("elementwise:scalar", () => unaryOps(1000));
});

async function binaryOps(shapes: [number[], number[]][]): Promise<void> {
  const ops: [
    string,
    typeof add,
    (a: number, b: number) => number,
    (a: number, b: number) => [number, number],
  ][] = [
    ["add", add, (a, b) => a + b, () => [1, 1]],
    ["sub", sub, (a, b) => a - b, () => [1, -1]],
    ["mul", mul, (a, b) => a * b, (a, b) => [b, a]],
    ["div", div, (a, b) => a / b, (a, b) => [1 / b, -(a / b) / b]],
  ];
  let seed = 1;
  for (const [sa, sb] of shapes) {
    for (const [name, op, f, df] of ops) {
      const va = randomValues(sa.reduce((p, d) => p * d, 1), seed++);
      const vb = randomValues(sb.reduce((p, d) => p * d, 1), seed++).map((v) => v + Math.sign(v) * 0.5);
      const a = tensor(va, { shape: sa, requiresGrad: true });
      const b = tensor(vb, { shape: sb, requiresGrad: true });
      const y = op(a, b);
      const A = array64(sa, va), B = array64(sb, vb);
      const expected = mapBroadcast([A, B], f);
      const upstream = randomValues(expected.data.length, seed++);
      y.backward(tensor(upstream, { shape: expected.shape }));
      const G = array64(expected.shape, upstream);
      const ga = sumToShape(mapBroadcast([A, B, G], (x, z, g) => df(x, z)[0] * g), sa);
      const gb = sumToShape(mapBroadcast([A, B, G], (x, z, g) => df(x, z)[1] * g), sb);
      const label = `${name} [${sa}] with [${sb}]`;
      if (y.shape.join() !== expected.shape.join()) throw new Error(`${label}: shape ${y.shape}`);
      assertClose(await y.data(), expected.data, { atol: 1e-6, rtol: 1e-6 }, `${label} forward`);
      assertClose(await a.grad!.data(), ga.data, { atol: 1e-5, rtol: 1e-5 }, `${label} grad a`);
      assertClose(await b.grad!.data(), gb.data, { atol: 1e-5, rtol: 1e-5 }, `${label} grad b`);
    }
  }
}

Deno.test("a fused chain is one kernel and matches the unfused ops", async () => {
  const va = randomValues(3 * 33, 11), vb = randomValues(33, 12);
  const a = tensor(va, { shape: [3, 33], requiresGrad: true });
  const b = tensor(vb, { shape: [33], requiresGrad: true });
  const { result: y, dispatches } = traceDispatches(() =>
    fused([a, b], (x, z) => x.mul(z).add(0.5).gelu("tanh").mul(x))
  );
  if (dispatches.length !== 1) throw new Error(`fused forward took ${dispatches.length} dispatches`);
  const backward = traceDispatches(() => sum(y).backward()).dispatches.map((d) => d.kernel);
  // sum, its backward, the fused backward, and the sum of b's gradient over the broadcast axis
  if (backward.filter((k) => k === "fused_backward").length !== 1) throw new Error(`backward: ${backward}`);
  const [out, ga, gb] = [await y.data(), await a.grad!.data(), await b.grad!.data()];
  const A = array64([3, 33], va), B = array64([33], vb);
  const f = (x: number, z: number) => ref.geluTanh.f(x * z + 0.5) * x;
  const dfa = (x: number, z: number) => ref.geluTanh.df(x * z + 0.5) * z * x + ref.geluTanh.f(x * z + 0.5);
  const dfb = (x: number, z: number) => ref.geluTanh.df(x * z + 0.5) * x * x;
  assertClose(out, mapBroadcast([A, B], f).data, { atol: 2e-6, rtol: 2e-6 }, "fused forward");
  assertClose(ga, mapBroadcast([A, B], dfa).data, { atol: 1e-5, rtol: 1e-5 }, "fused grad a");
  assertClose(
    gb,
    sumToShape(mapBroadcast([A, B], dfb), [33]).data,
    { atol: 1e-5, rtol: 1e-5 },
    "fused grad b",
  );
});

Deno.test("scale takes its factor as a uniform and the same inputs give bit-identical results", async () => {
  const values = randomValues(129, 5);
  const x = tensor(values, { requiresGrad: true });
  const first = await scale(x, 0.37).data();
  const second = await scale(x, 0.37).data();
  assertBitwiseEqual(first, second, "scale twice");
  assertClose(await scale(x, -2).data(), Array.from(values, (v) => -2 * v), { atol: 0 }, "scale -2");
});

Deno.test("gradients of the same structure with other constants (folded 1 and -1 among them) are right", async () => {
  // Differentiation folds x * 1 and x * -1, so the gradient's kernel depends on the constants' values:
  // each case runs after one of the same structure with other constants.
  const cases: [(x: Expr) => Expr, number][] = [
    [(x) => x.mul(-1).add(x.mul(5)), 4],
    [(x) => x.mul(5).add(x.mul(1)), 6],
    [(x) => x.mul(1).add(x.mul(-1)), 0],
    [(x) => x.mul(2).add(x.mul(3)), 5],
  ];
  for (const [fn, slope] of cases) {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    sum(fused([x], fn)).backward();
    assertClose(await x.grad!.data(), [slope, slope, slope], { atol: 0 }, `d/dx = ${slope}`);
  }
  for (const factor of [-1, 0.5, 1, 2]) {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    sum(scale(x, factor)).backward();
    assertClose(await x.grad!.data(), [factor, factor, factor], { atol: 0 }, `scale by ${factor}`);
    const y = tensor([1, 2, 3], { requiresGrad: true });
    sum(mul(y, factor)).backward();
    assertClose(await y.grad!.data(), [factor, factor, factor], { atol: 0 }, `mul by ${factor}`);
  }
});

Deno.test("shape errors name the op and the shapes", () => {
  const a = tensor(new Float32Array(6), { shape: [2, 3] });
  const b = tensor(new Float32Array(4), { shape: [4] });
  let message = "";
  try {
    add(a, b);
  } catch (e) {
    message = (e as Error).message;
  }
  if (message !== "add: shapes [2, 3] and [4] do not broadcast") throw new Error(`got "${message}"`);
});

Deno.test("tensors beyond one storage binding are processed a window at a time, forward and backward", async () => {
  await windowed(30); // 30 columns: the scalar kernel
  await windowed(32); // 32: the texel kernel on a software adapter
});

async function windowed(columns: number): Promise<void> {
  const va = randomValues(100 * columns, 21), vb = randomValues(columns, 22);
  const A = array64([100, columns], va), B = array64([columns], vb);
  await withProfile({ maxStorageBindingBytes: 4096 }, async () => {
    const a = tensor(va, { shape: [100, columns], requiresGrad: true });
    const b = tensor(vb, { shape: [columns] }); // broadcast, bound whole (its gradient would need a windowed reduction)
    const { result: y, dispatches } = traceDispatches(() => fused([a, b], (x, z) => x.mul(z).tanh()));
    if (dispatches.length !== Math.ceil(100 * columns / 1024)) {
      throw new Error(`expected windows of 1024 elements, got ${dispatches.length}`);
    }
    const ones = tensor(new Float32Array(100 * columns).fill(1), { shape: [100, columns] });
    y.backward(ones); // the gradients of a arrive through the windowed backward kernel
    scale(a, 2).backward(ones); // and accumulate into a.grad window by window
    const f = (x: number, z: number) => Math.tanh(x * z);
    const dfa = (x: number, z: number) => (1 - Math.tanh(x * z) ** 2) * z + 2;
    assertClose(await y.data(), mapBroadcast([A, B], f).data, { atol: 2e-6, rtol: 2e-6 }, "windowed forward");
    assertClose(
      await a.grad!.data(),
      mapBroadcast([A, B], dfa).data,
      { atol: 1e-5, rtol: 1e-5 },
      "windowed gradient",
    );
  });
}

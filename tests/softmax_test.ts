import { withKernels } from "../engine/variants.ts";
import { readAll, tensor } from "../engine/tensor.ts";
import { logSoftmax, softmax } from "../kernels/softmax.ts";
import { forceRowLayout } from "../kernels/rows.ts";
import { array64 } from "../kernels/reference/array.ts";
import { softmaxBackward, softmaxForward } from "../kernels/reference/softmax.ts";
import { assertBitwiseEqual, assertClose, dot, numericGradient, randomValues, setup } from "./helpers.ts";

await setup();

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);
const LOWEST = -3.4028234663852886e38;

interface Case {
  shape: number[];
  axis?: number;
  seed: number;
  /** Standard deviation of the logits. */
  std?: number;
  /** Rewrites the logits before the run (offsets, masks). */
  edit?: (values: Float32Array) => Float32Array;
}

/** Runs softmax and log-softmax forward and backward and checks them against the reference. */
async function check(c: Case, label = `[${c.shape}] axis ${c.axis ?? -1}`): Promise<Float32Array[]> {
  const { shape, axis = -1, seed, std = 2, edit = (v) => v } = c;
  const values = edit(randomValues(size(shape), seed, std));
  const upstream = randomValues(size(shape), seed + 1);
  const a = axis < 0 ? axis + shape.length : axis;
  const results: Float32Array[] = [];
  for (const log of [false, true]) {
    const x = tensor(values, { shape, requiresGrad: true });
    const y = log ? logSoftmax(x, axis) : softmax(x, axis);
    y.backward(tensor(upstream, { shape }));
    const [out, grad] = (await readAll([y, x.grad!])) as Float32Array[];
    const x64 = array64(shape, values);
    const name = `${log ? "logSoftmax" : "softmax"} ${label}`;
    assertClose(out, softmaxForward(x64, a, log).data, { atol: log ? 1e-5 : 1e-6, rtol: 1e-5 }, name);
    assertClose(grad, softmaxBackward(x64, upstream, a, log).data, { atol: 1e-5, rtol: 1e-5 }, `${name} dx`);
    results.push(out, grad);
  }
  return results;
}

Deno.test("reference backward agrees with finite differences", () => {
  const shape = [3, 4];
  const xs = Float64Array.from(randomValues(12, 1, 2));
  const w = Float64Array.from(randomValues(12, 2));
  for (const log of [false, true]) {
    for (const axis of [0, 1]) {
      const numeric = numericGradient((x) => dot(softmaxForward({ shape, data: x }, axis, log).data, w), xs);
      const analytic = softmaxBackward({ shape, data: xs }, w, axis, log).data;
      assertClose(analytic, numeric, { atol: 1e-8, rtol: 1e-6 }, `${log ? "log" : ""}softmax axis ${axis}`);
    }
  }
});

Deno.test("last axis: every row length and row count matches the reference", async () => {
  // Lengths 1..4096, scalar and vec4 rows around the 8 vectors cached per invocation on CPU
  // adapters, row counts around the 16 rows of a workgroup, 3-D inputs and batch 1.
  const shapes = [
    [1, 1],
    [7, 7],
    [33, 33],
    [129, 129],
    [15, 9],
    [16, 28],
    [17, 32],
    [1, 36],
    [7, 768],
    [2, 3, 1024],
    [1, 4096],
    [3, 4097],
    [1, 1, 5],
  ];
  // Software adapters choose the texel form by size (engine/texels.ts): every shape runs both forms.
  for (const variant of ["rows:texel", "rows:serial"]) {
    let seed = 10;
    await withKernels(variant, async () => {
      for (const shape of shapes) await check({ shape, seed: seed += 5 });
    });
  }
});

Deno.test("other axes: the strided kernel matches the reference", async () => {
  const cases: [number[], number][] = [
    [[7, 33], 0],
    [[2, 5, 7], 1],
    [[2, 5, 7], 0],
    [[3, 129, 4], 1],
    [[1, 1, 3], 1],
    [[33, 1], 0],
    [[4, 1, 6], -2],
  ];
  let seed = 100;
  for (const [shape, axis] of cases) await check({ shape, axis, seed: seed += 5 });
});

Deno.test("GPU-sized layouts: trees over 8 and 32 invocations and register tails", async () => {
  const layouts = [
    { threads: 8, rowsPerGroup: 4, perThread: 2, width: 4 as const },
    { threads: 32, rowsPerGroup: 1, perThread: 1, width: 1 as const },
  ];
  try {
    let seed = 200;
    for (const layout of layouts) {
      forceRowLayout(layout);
      for (const shape of [[1, 1], [3, 7], [5, 60], [4, 64], [9, 68], [7, 129], [2, 1024]]) {
        await check({ shape, seed: seed += 5 }, `[${shape}] with ${JSON.stringify(layout)}`);
      }
    }
  } finally {
    forceRowLayout(null);
  }
});

Deno.test("large logits, offsets of 1e4 and masked entries stay finite and exact", async () => {
  const edits: [string, (v: Float32Array) => Float32Array][] = [
    ["offset 1e4", (v) => v.map((x) => x + 1e4)],
    ["offset -1e4", (v) => v.map((x) => x - 1e4)],
    ["spread 1e4", (v) => v.map((x) => x * 1e4)],
    ["masked", (v) => v.map((x, i) => (i % 3 === 1 ? LOWEST : x))],
    ["masked -1e9", (v) => v.map((x, i) => (i % 5 < 2 ? -1e9 : x))],
  ];
  let seed = 300;
  for (const [name, edit] of edits) {
    for (const [shape, axis] of [[[5, 33], -1], [[3, 768], -1], [[6, 5, 3], 1]] as [number[], number][]) {
      const results = await check({ shape, axis, seed: seed += 5, edit }, `${name} [${shape}] axis ${axis}`);
      for (const r of results) if (!r.every(Number.isFinite)) throw new Error(`${name}: non-finite value`);
    }
  }
});

Deno.test("the same inputs give bit-identical outputs and gradients", async () => {
  for (const [shape, axis] of [[[33, 768], -1], [[4, 33, 5], 1]] as [number[], number][]) {
    const first = await check({ shape, axis, seed: 400 });
    const second = await check({ shape, axis, seed: 400 });
    first.forEach((r, k) => assertBitwiseEqual(r, second[k], `[${shape}] axis ${axis} result ${k}`));
  }
});

Deno.test("empty tensors, bad axes and dtypes give clear errors or empty results", async () => {
  const empty = softmax(tensor(new Float32Array(0), { shape: [0, 5] }));
  if (empty.shape.join() !== "0,5" || (await empty.data()).length !== 0) throw new Error("empty softmax");
  const expectError = (fn: () => unknown, message: string) => {
    let got = "";
    try {
      fn();
    } catch (e) {
      got = (e as Error).message;
    }
    if (got !== message) throw new Error(`expected "${message}", got "${got}"`);
  };
  const x = tensor(new Float32Array(6), { shape: [2, 3] });
  expectError(() => softmax(x, 2), "softmax: axis 2 is out of range for rank 2");
  expectError(() => logSoftmax(x, -3), "logSoftmax: axis -3 is out of range for rank 2");
  expectError(() => softmax(x, 0.5), "softmax: axis must be an integer, got 0.5");
  expectError(
    () => softmax(tensor(new Int32Array(3))),
    "softmax: tensor int32[3] is not float32",
  );
});

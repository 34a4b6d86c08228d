import { traceDispatches } from "../engine/recorder.ts";
import { tensor } from "../engine/tensor.ts";
import { withKernels } from "../engine/variants.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { array64, sumAxis } from "../kernels/reference/array.ts";
import { assertBitwiseEqual, assertClose, randomValues, setup } from "./helpers.ts";

await setup();

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

Deno.test("sum and mean over every axis match the reference, with broadcast gradients", async () => {
  // Covers the row kernel (last axis), the strided kernel, and the chunked two-pass path (long axis, few outputs).
  const shapes = [[1], [7], [33, 1], [3, 129], [2, 5, 7], [1000, 3], [4097], [2, 300, 2], [129, 33]];
  let seed = 1;
  for (const shape of shapes) {
    for (let axis = 0; axis < shape.length; axis++) {
      for (const op of ["sum", "mean"] as const) {
        const values = randomValues(size(shape), seed++);
        const x = tensor(values, { shape, requiresGrad: true });
        const y = op === "sum" ? sum(x, axis) : mean(x, axis);
        const expected = sumAxis(array64(shape, values), axis);
        const factor = op === "mean" ? 1 / shape[axis] : 1;
        const upstream = randomValues(Math.max(1, y.size), seed++);
        y.backward(tensor(upstream, { shape: y.shape }));
        const label = `${op} [${shape}] axis ${axis}`;
        if (y.shape.join() !== expected.shape.join()) throw new Error(`${label}: shape [${y.shape}]`);
        assertClose(await y.data(), expected.data.map((v) => v * factor), { atol: 1e-5, rtol: 1e-5 }, label);
        const inner = size(shape.slice(axis + 1));
        const grad = Array.from(
          values,
          (_, i) => upstream[Math.floor(i / (inner * shape[axis])) * inner + (i % inner)] * factor,
        );
        assertClose(await x.grad!.data(), grad, { atol: 1e-6, rtol: 1e-6 }, `${label} gradient`);
      }
    }
  }
});

Deno.test("sum of all elements, keepDims, and bit-identical repeats", async () => {
  const values = randomValues(5000, 9);
  const x = tensor(values, { shape: [50, 100], requiresGrad: true });
  const total = sum(x);
  if (total.rank !== 0) throw new Error(`sum() rank ${total.rank}`);
  assertClose([await total.item()], [values.reduce((s, v) => s + v, 0)], { atol: 1e-3 }, "sum all");
  mean(x).backward();
  assertClose(await x.grad!.data(), new Array(5000).fill(1 / 5000), { atol: 1e-9 }, "mean all gradient");
  const kept = sum(x, 1, { keepDims: true });
  if (kept.shape.join() !== "50,1") throw new Error(`keepDims shape [${kept.shape}]`);
  assertBitwiseEqual(await sum(x, 0).data(), await sum(x, 0).data(), "sum twice");
});

Deno.test("reductions name the op and the axis when it is out of range", () => {
  let message = "";
  try {
    sum(tensor([1, 2, 3]), 1);
  } catch (e) {
    message = (e as Error).message;
  }
  if (message !== "sum: axis 1 is out of range for rank 1") throw new Error(message);
});

Deno.test("the texel and scalar strided sums give bit-identical results", async () => {
  // Axis 1 of [3, 150, 8] (150 rows: chunks of 64 then a second pass) and axis 0 of [2050, 12].
  for (const [shape, axis] of [[[3, 150, 8], 1], [[2050, 12], 0]] as const) {
    const x = tensor(randomValues(shape.reduce((p, d) => p * d, 1), 7), { shape: [...shape] });
    const run = async () => {
      const { result, dispatches } = traceDispatches(() => sum(x, axis));
      const values = await result.data();
      result.dispose();
      return { values, kernels: dispatches.map((d) => d.kernel) };
    };
    const texel = await withKernels("reduce_strided:texel", run);
    const scalar = await withKernels("reduce_strided:scalar", run);
    if (!texel.kernels.includes("reduce_strided_texel") || scalar.kernels.includes("reduce_strided_texel")) {
      throw new Error(`${shape}: kernels texel ${texel.kernels}, scalar ${scalar.kernels}`);
    }
    assertBitwiseEqual(texel.values, scalar.values, `sum over axis ${axis} of [${shape}]`);
    x.dispose();
  }
});

Deno.test("over an empty axis the sum is 0 and the mean NaN, as in PyTorch; the gradient is empty", async () => {
  const x = tensor(new Float32Array(0), { shape: [3, 0], requiresGrad: true });
  const total = sum(x, 1);
  const average = mean(x, 1);
  const [sums, means] = [Array.from(await total.data()), Array.from(await average.data())];
  if (String(sums) !== "0,0,0" || !means.every(Number.isNaN) || means.length !== 3) {
    throw new Error(`sum ${sums}, mean ${means}`);
  }
  if ((await sum(tensor([])).item()) !== 0) throw new Error("sum of [] is not 0");
  sum(total).backward();
  if (x.grad!.shape.join() !== "3,0") throw new Error(`gradient shape ${x.grad!.shape}`);
});

/**
 * Reductions, layout copies and cross-entropy's final loss sum beyond one storage binding: under a
 * forced 4 KiB `maxStorageBindingBytes` they bind windows, and outputs and gradients equal the
 * one-dispatch results bit for bit (every sum keeps its order, every copy is exact, the loss sum's
 * lanes carry over), broadcast inputs larger than a binding included. A whole-tensor sum whose single
 * row exceeds a binding is summed in chunks instead, checked against float64.
 */
import { traceDispatches } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { crossEntropy, softCrossEntropy } from "../kernels/cross_entropy.ts";
import { add, gelu, mul } from "../kernels/elementwise.ts";
import { concat, narrow, permute, transpose } from "../kernels/layout.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { assertBitwiseEqual, randomValues, setup, withProfile } from "./helpers.ts";

await setup();

/** 4 KiB: a window spans at most 956 floats (the binding less its 256-byte alignment and 16 bytes). */
const LIMIT = 4096;

/** Seeded inputs of the given shapes (float32 ones requiring gradients, int32 ones as given). */
type Input = number[] | Int32Array;

/** Runs `op` and its backward (with a seeded output gradient): output, gradients, and dispatch count. */
async function run(inputs: Input[], shapes: number[][], op: (inputs: Tensor[]) => Tensor) {
  const tensors = inputs.map((input, k) =>
    input instanceof Int32Array
      ? tensor(input, { shape: shapes[k] })
      : tensor(randomValues(input.reduce((p, d) => p * d, 1), 20 + k), { shape: input, requiresGrad: true })
  );
  const traced = traceDispatches(() => {
    const y = op(tensors);
    y.backward(tensor(randomValues(Math.max(1, y.size), 7), { shape: y.shape }));
    return y;
  });
  const grads = tensors.filter((t) => t.requiresGrad).map((t) => t.grad!);
  const values = (await readAll([traced.result, ...grads])) as Float32Array[];
  for (const t of [traced.result, ...tensors]) t.dispose();
  return { values, dispatches: traced.dispatches.length };
}

/** Checks that `op` dispatches more often under the forced limit and gives bit-identical results. */
async function checkWindowed(
  label: string,
  inputs: Input[],
  op: (inputs: Tensor[]) => Tensor,
  shapes: number[][] = [],
) {
  const whole = await run(inputs, shapes, op);
  const windowed = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run(inputs, shapes, op));
  if (windowed.dispatches <= whole.dispatches) {
    throw new Error(`${label}: ${windowed.dispatches} dispatches windowed, ${whole.dispatches} whole`);
  }
  whole.values.forEach((v, k) => assertBitwiseEqual(windowed.values[k], v, `${label} value ${k}`));
}

Deno.test("sum and mean bind windows of whole outputs beyond one binding, bit-identical to one dispatch", async () => {
  // Rows of 301 (3 to a window), odd shapes, batch 1; a middle axis of 301 chunked by 64 with 7 and 13
  // inner elements; an axis of length 1 with 2000 inner elements (windows inside one row).
  await checkWindowed("sum last axis [37, 301]", [[37, 301]], ([x]) => sum(x, -1));
  await checkWindowed("sum axis 0 [301, 7]", [[301, 7]], ([x]) => sum(x, 0));
  await checkWindowed("mean axis 1 [3, 301, 13]", [[3, 301, 13]], ([x]) => mean(x, 1, { keepDims: true }));
  await checkWindowed("sum axis 0 [1, 2000]", [[1, 2000]], ([x]) => sum(x, 0));
  await checkWindowed("mean axis 1 [1, 1, 1500]", [[1, 1, 1500]], ([x]) => mean(x, 1));
  // Inner rows too long for two to share a binding: runs of rows continue the stored sums.
  await checkWindowed("sum axis 0 [3, 600]", [[3, 600]], ([x]) => sum(x, 0));
  await checkWindowed("mean axis 1 [2, 70, 1100]", [[2, 70, 1100]], ([x]) => mean(x, 1));
  // A broadcast add's bias gradient is sumToShape over the rows.
  await checkWindowed("add [301, 7] + [7]", [[301, 7], [7]], ([x, b]) => add(x, b));
});

Deno.test("a broadcast input larger than one binding is read in windows of its own, bit-identical", async () => {
  // [1500] over rows of [2, 1500], [1500, 1] over columns of [1500, 3], a middle broadcast, and a chain.
  await checkWindowed("add [2, 1500] + [1500]", [[2, 1500], [1500]], ([x, b]) => add(x, b));
  await checkWindowed("mul [1500, 3] x [1500, 1]", [[1500, 3], [1500, 1]], ([x, s]) => mul(x, s));
  await checkWindowed("add [3, 2, 700] + [3, 1, 700]", [[3, 2, 700], [3, 1, 700]], ([x, y]) => add(x, y));
  await checkWindowed(
    "gelu(x + b) * b, [2, 1201] and [1201]",
    [[2, 1201], [1201]],
    ([x, b]) => mul(gelu(add(x, b)), b),
  );
});

Deno.test("a whole-tensor sum whose one row exceeds a binding is summed in chunks, to float64 precision", async () => {
  const shape = [53, 41];
  const values = randomValues(53 * 41, 5);
  const expected = values.reduce((s, v) => s + v, 0);
  const scale = values.reduce((s, v) => s + Math.abs(v), 0);
  const got = await withProfile({ maxStorageBindingBytes: LIMIT }, async () => {
    const x = tensor(values, { shape, requiresGrad: true });
    const y = sum(x);
    y.backward();
    const [total, grad] = (await readAll([y, x.grad!])) as Float32Array[];
    x.dispose();
    y.dispose();
    return { total: total[0], grad };
  });
  if (Math.abs(got.total - expected) > 1e-6 * scale) throw new Error(`sum ${got.total}, float64 ${expected}`);
  if (!got.grad.every((g) => g === 1)) throw new Error("the gradient of a sum is not all ones");
});

Deno.test("permute, transpose, narrow and concat copy in windows beyond one binding, bit-identical", async () => {
  await checkWindowed("transpose [67, 45]", [[67, 45]], ([x]) => transpose(x));
  await checkWindowed("permute [5, 13, 29] to [2, 0, 1]", [[5, 13, 29]], ([x]) => permute(x, [2, 0, 1]));
  await checkWindowed("permute [1, 3000] to [1, 0]", [[1, 3000]], ([x]) => permute(x, [1, 0]));
  await checkWindowed("narrow [301, 7] rows 50..250", [[301, 7]], ([x]) => narrow(x, 0, 50, 200));
  await checkWindowed("narrow [7, 301] columns 3..290", [[7, 301]], ([x]) => narrow(x, 1, 3, 287));
  await checkWindowed(
    "concat [100, 9] and [150, 9] on rows",
    [[100, 9], [150, 9]],
    ([a, b]) => concat([a, b], 0),
  );
  await checkWindowed(
    "concat [90, 5] and [90, 11] on columns",
    [[90, 5], [90, 11]],
    ([a, b]) => concat([a, b], 1),
  );
});

Deno.test("cross-entropy's final loss sum carries lane sums across windows, bit-identical", async () => {
  // 1000 rows: windows of 768 rows (three lane strides) and 232; some targets ignored.
  const rows = 1000;
  const labels = Int32Array.from({ length: rows }, (_, i) => i % 7 === 0 ? -100 : i % 3);
  await checkWindowed("crossEntropy mean", [[rows, 3], labels], ([x, t]) => crossEntropy(x, t), [[rows, 3], [
    rows,
  ]]);
  await checkWindowed(
    "crossEntropy sum",
    [[rows, 3], labels],
    ([x, t]) => crossEntropy(x, t, { reduction: "sum" }),
    [[rows, 3], [rows]],
  );
  await checkWindowed("softCrossEntropy mean", [[rows, 3], [rows, 3]], ([x, t]) => softCrossEntropy(x, t));
});

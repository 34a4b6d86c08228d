import { Random } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { withKernels } from "../engine/variants.ts";
import { crossEntropy, softCrossEntropy } from "../kernels/cross_entropy.ts";
import * as ref from "../kernels/reference/cross_entropy.ts";
import {
  assertBitwiseEqual,
  assertClose,
  dot,
  expectError,
  f64,
  maxAbs,
  numericGradient,
  randomValues,
  setup,
  withProfile,
} from "./helpers.ts";

await setup();

const REDUCTIONS = ["none", "sum", "mean"] as const;
const TOLERANCE = { atol: 1e-5, rtol: 1e-5 };

/** Targets in [0, C) with about a fifth of the rows set to `ignore` (never all of them unless rows is 1). */
function makeTargets(rows: number, cols: number, seed: number, ignore = -100): Int32Array {
  const random = new Random(seed);
  return Int32Array.from({ length: rows }, (_, n) => (n % 5 === 3 ? ignore : random.int(cols)));
}

function upstreamFor(reduction: ref.Reduction, rows: number, seed: number): Float32Array {
  return reduction === "none" ? randomValues(rows, seed) : Float32Array.of(0.75);
}

async function checkHard(
  rows: number,
  cols: number,
  reduction: ref.Reduction,
  seed: number,
  std = 3,
  ignoreIndex = -100,
): Promise<void> {
  const values = randomValues(rows * cols, seed, std);
  const targetValues = makeTargets(rows, cols, seed + 1, ignoreIndex);
  const upstream = upstreamFor(reduction, rows, seed + 2);
  const logits = tensor(values, { shape: [rows, cols], requiresGrad: true });
  const loss = crossEntropy(logits, tensor(targetValues), { reduction, ignoreIndex });
  loss.backward(tensor(upstream, { shape: loss.shape }));
  const [out, grad] = await readAll([loss, logits.grad!]);
  const label = `hard N ${rows}, C ${cols}, ${reduction}, std ${std}`;
  const expected = ref.crossEntropyForward(values, cols, targetValues, reduction, ignoreIndex);
  assertClose(out, expected, { atol: 1e-5, rtol: 2e-6 }, `${label} loss`);
  const expectedGrad = ref.crossEntropyBackward(values, cols, targetValues, upstream, reduction, ignoreIndex);
  assertClose(grad, expectedGrad, TOLERANCE, `${label} grad`);
  for (const t of [logits, loss, logits.grad!]) t.dispose();
}

async function checkSoft(rows: number, cols: number, reduction: ref.Reduction, seed: number): Promise<void> {
  const values = randomValues(rows * cols, seed, 3);
  const targetValues = randomValues(rows * cols, seed + 1).map(Math.abs);
  const upstream = upstreamFor(reduction, rows, seed + 2);
  const logits = tensor(values, { shape: [rows, cols], requiresGrad: true });
  const targets = tensor(targetValues, { shape: [rows, cols], requiresGrad: true });
  const loss = softCrossEntropy(logits, targets, { reduction });
  loss.backward(tensor(upstream, { shape: loss.shape }));
  const [out, gradLogits, gradTargets] = await readAll([loss, logits.grad!, targets.grad!]);
  const label = `soft N ${rows}, C ${cols}, ${reduction}`;
  const expected = ref.softCrossEntropyForward(values, targetValues, cols, reduction);
  assertClose(out, expected, { atol: 1e-5, rtol: 2e-6 * Math.max(1, Math.log2(cols)) }, `${label} loss`);
  const grads = ref.softCrossEntropyBackward(values, targetValues, cols, upstream, reduction);
  const scale = Math.max(1, maxAbs(grads.logits));
  assertClose(gradLogits, grads.logits, { atol: 1e-5 * scale, rtol: 1e-5 }, `${label} logits grad`);
  assertClose(gradTargets, grads.targets, TOLERANCE, `${label} targets grad`);
  for (const t of [logits, targets, loss, logits.grad!, targets.grad!]) t.dispose();
}

Deno.test("reference backwards agree with finite differences", () => {
  const rows = 4, cols = 5;
  const logits = f64(randomValues(rows * cols, 1, 2));
  const hard = [2, -100, 0, 4];
  const soft = f64(randomValues(rows * cols, 2).map(Math.abs));
  for (const reduction of REDUCTIONS) {
    const g = f64(upstreamFor(reduction, rows, 3));
    const hardLoss = (z: Float64Array) => dot(ref.crossEntropyForward(z, cols, hard, reduction), g);
    assertClose(
      ref.crossEntropyBackward(logits, cols, hard, g, reduction),
      numericGradient(hardLoss, logits),
      { atol: 1e-8 },
      `hard ${reduction}`,
    );
    const softGrads = ref.softCrossEntropyBackward(logits, soft, cols, g, reduction);
    const byLogits = (z: Float64Array) => dot(ref.softCrossEntropyForward(z, soft, cols, reduction), g);
    const byTargets = (t: Float64Array) => dot(ref.softCrossEntropyForward(logits, t, cols, reduction), g);
    assertClose(
      softGrads.logits,
      numericGradient(byLogits, logits),
      { atol: 1e-8 },
      `soft ${reduction} logits`,
    );
    assertClose(
      softGrads.targets,
      numericGradient(byTargets, soft),
      { atol: 1e-8 },
      `soft ${reduction} targets`,
    );
  }
});

// Classes around the 64-logit blocks (256 = 4 blocks), odd sizes and a large vocabulary.
const CLASSES = [1, 7, 33, 129, 255, 256, 257, 1000];
const ROWS = [1, 7, 33, 129];

Deno.test("crossEntropy matches the reference over rows, classes, reductions and ignored rows", async () => {
  let seed = 10;
  for (const [i, cols] of CLASSES.entries()) {
    for (const [j, reduction] of REDUCTIONS.entries()) {
      await checkHard(ROWS[(i + j) % 4], cols, reduction, seed++);
    }
  }
  for (const rows of [63, 64, 65, 255, 256, 257]) await checkHard(rows, 7, "mean", seed++);
  await checkHard(3, 50257, "mean", seed++);
  await checkHard(5, 33, "sum", seed++, 3, 0);
});

Deno.test("softCrossEntropy matches the reference over rows, classes and reductions", async () => {
  let seed = 100;
  for (const [i, cols] of CLASSES.entries()) {
    for (const [j, reduction] of REDUCTIONS.entries()) {
      await checkSoft(ROWS[(i + j) % 4], cols, reduction, seed++);
    }
  }
  for (const rows of [63, 64, 65, 257]) await checkSoft(rows, 7, "mean", seed++);
  await checkSoft(2, 50257, "sum", seed++);
});

Deno.test("logits around 1e4 stay finite and exact", async () => {
  let seed = 200;
  for (const cols of [7, 1000]) {
    for (const reduction of REDUCTIONS) await checkHard(33, cols, reduction, seed++, 1e4);
  }
});

Deno.test("mean over all-ignored rows is NaN with zero gradients; sum is 0", async () => {
  const values = randomValues(3 * 5, 1);
  const targets = tensor(Int32Array.of(-100, -100, -100));
  for (const reduction of ["mean", "sum"] as const) {
    const logits = tensor(values, { shape: [3, 5], requiresGrad: true });
    const loss = crossEntropy(logits, targets, { reduction });
    loss.backward();
    const [out, grad] = await readAll([loss, logits.grad!]);
    if (reduction === "mean" ? !Number.isNaN(out[0]) : out[0] !== 0) {
      throw new Error(`${reduction}: ${out[0]}`);
    }
    assertBitwiseEqual(grad, new Float32Array(15), `${reduction} gradient`);
  }
});

Deno.test("leading dimensions, batch 1 and constant inputs", async () => {
  const values = randomValues(2 * 3 * 7, 5);
  const targetValues = Int32Array.of(1, 6, 0, -100, 3, 2);
  const logits = tensor(values, { shape: [2, 3, 7], requiresGrad: true });
  const losses = crossEntropy(logits, tensor(targetValues, { shape: [2, 3] }), { reduction: "none" });
  if (losses.shape.join() !== "2,3") throw new Error(`losses shape [${losses.shape}]`);
  assertClose(
    await losses.data(),
    ref.crossEntropyForward(values, 7, targetValues, "none"),
    TOLERANCE,
    "[2, 3, 7]",
  );
  const single = crossEntropy(tensor(values.slice(0, 7)), tensor(Int32Array.of(4), { shape: [] }));
  if (single.shape.length !== 0 || single.requiresGrad) throw new Error("[7] logits: not a constant scalar");
  assertClose(await single.data(), ref.crossEntropyForward(values, 7, [4]), TOLERANCE, "[7] logits");
  const soft = tensor(randomValues(7, 6).map(Math.abs), { shape: [1, 7], requiresGrad: true });
  const softLoss = softCrossEntropy(tensor(values.slice(0, 7), { shape: [1, 7] }), soft);
  softLoss.backward();
  const expected = ref.softCrossEntropyBackward(values.slice(0, 7), await soft.data(), 7, [1]).targets;
  assertClose(await soft.grad!.data(), expected, TOLERANCE, "targets-only gradient");
});

Deno.test("results are bit-identical run to run", async () => {
  const run = async (cols: number) => {
    const values = randomValues(33 * cols, cols);
    const logits = tensor(values, { shape: [33, cols], requiresGrad: true });
    const targets = tensor(values.map(Math.abs), { shape: [33, cols], requiresGrad: true });
    const hard = crossEntropy(logits, tensor(makeTargets(33, cols, 1)));
    const soft = softCrossEntropy(logits, targets);
    hard.backward();
    soft.backward();
    return await readAll([hard, soft, logits.grad!, targets.grad!]);
  };
  for (const cols of [33, 1000]) {
    const [first, second] = [await run(cols), await run(cols)];
    first.forEach((values, k) => assertBitwiseEqual(values, second[k], `C ${cols}, output ${k}`));
  }
});

Deno.test("the GPU layouts (rows split over a workgroup tree) match the reference", async () => {
  // perRow 1, 2, 4, 16, 32, 64 and 256 invocations per row, with 256 / perRow rows per workgroup.
  await withKernels("cross_entropy:tree", async () => {
    let seed = 300;
    for (const [i, cols] of [1, 17, 33, 129, 257, 1000, 4100].entries()) {
      const reduction = REDUCTIONS[i % 3];
      const rows = [1, 7, 65, 129, 257][i % 5];
      await checkHard(rows, cols, reduction, seed++);
      await checkSoft(rows, cols, reduction, seed++);
    }
  });
});

Deno.test("inputs above maxStorageBindingBytes are processed in aligned row chunks", async () => {
  // A 16 KiB binding limit splits 200 rows of 33 logits into chunks of 64 rows (offsets 256-aligned).
  await withProfile({ maxStorageBindingBytes: 16384 }, async () => {
    const logits = tensor(new Float32Array(200 * 33), { shape: [200, 33] });
    const { dispatches } = traceDispatches(() => crossEntropy(logits, tensor(makeTargets(200, 33, 1))));
    const rowDispatches = dispatches.filter((d) => d.kernel.startsWith("hard_cross_entropy_rows")).length;
    if (rowDispatches !== 4) throw new Error(`${rowDispatches} row dispatches, expected 4 chunks`);
    let seed = 400;
    for (const reduction of REDUCTIONS) {
      await checkHard(200, 33, reduction, seed++);
      await checkSoft(200, 33, reduction, seed++);
    }
  });
});

Deno.test("bad targets and shapes give errors naming the op and the shapes; device targets give NaN", async () => {
  const logits = tensor(new Float32Array(21), { shape: [3, 7] });
  expectError(
    () => crossEntropy(logits, tensor(Int32Array.of(1, 7, 2))),
    "crossEntropy: target 7 is outside [0, 7) for logits [3, 7] and is not ignoreIndex (-100)",
  );
  expectError(
    () => crossEntropy(logits, tensor(Int32Array.of(1, 2))),
    "crossEntropy: targets tensor int32[2] do not match logits [3, 7]; expected int32[3]",
  );
  expectError(
    () => crossEntropy(logits, tensor([1, 2, 3])),
    "crossEntropy: targets tensor float32[3] do not match logits [3, 7]; expected int32[3]",
  );
  expectError(
    () => crossEntropy(logits, tensor(Int32Array.of(1, 2, 3)), { reduction: "avg" as "mean" }),
    'crossEntropy: reduction must be "mean", "sum" or "none", got "avg"',
  );
  expectError(
    () => softCrossEntropy(logits, tensor(new Float32Array(7), { shape: [1, 7] })),
    "softCrossEntropy: targets tensor float32[1, 7] do not match logits [3, 7]; expected float32[3, 7]",
  );
  expectError(
    () => crossEntropy(tensor(new Float32Array(0), { shape: [2, 0] }), tensor(Int32Array.of(0, 0))),
    "crossEntropy: logits [2, 0] have no classes",
  );
  const deviceTargets: Tensor = tensor(Int32Array.of(1, 9, 2));
  deviceTargets.hostValues = undefined;
  const losses = await crossEntropy(logits, deviceTargets, { reduction: "none" }).data();
  if (!Number.isNaN(losses[1]) || Number.isNaN(losses[0])) throw new Error(`device targets: ${losses}`);
  // The bad row's gradient is NaN too, not the gradient of a row without a target.
  const trained = tensor(new Float32Array(21), { shape: [3, 7], requiresGrad: true });
  crossEntropy(trained, deviceTargets, { reduction: "sum" }).backward();
  const grad = await trained.grad!.data();
  if (!grad.slice(7, 14).every(Number.isNaN) || grad.slice(0, 7).some(Number.isNaN)) {
    throw new Error(`device targets' gradient: ${grad}`);
  }
});

import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { forceColumnLayout } from "../kernels/layernorm.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { forceRowLayout } from "../kernels/rows.ts";
import { array64 } from "../kernels/reference/array.ts";
import { rmsNormBackward, rmsNormForward } from "../kernels/reference/rmsnorm.ts";
import {
  assertBitwiseEqual,
  assertClose,
  dot,
  expectError,
  maxAbs,
  numericGradient,
  randomValues,
  setup,
} from "./helpers.ts";

await setup();

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

interface Case {
  shape: number[];
  eps?: number;
  seed: number;
  /** Standard deviation of x. */
  std?: number;
  /** Which of x and gamma require gradients. */
  grads?: [boolean, boolean];
}

interface Run {
  y: Float32Array;
  grads: (Float32Array | null)[];
}

/** Runs rmsNorm forward and backward on seeded inputs and checks both against the float64 reference. */
async function check(c: Case, label = `rmsNorm [${c.shape}]`): Promise<Run> {
  const { shape, eps = 1e-6, seed, std = 1, grads = [true, true] } = c;
  const cols = shape[shape.length - 1];
  const xs = randomValues(size(shape), seed, std);
  const gs = randomValues(cols, seed + 1).map((v) => 1 + 0.5 * v);
  const dys = randomValues(size(shape), seed + 2);
  const x = tensor(xs, { shape, requiresGrad: grads[0] });
  const gamma = tensor(gs, { requiresGrad: grads[1] });
  const y = rmsNorm(x, gamma, eps);
  y.backward(tensor(dys, { shape }));
  const inputs = [x, gamma];
  const present = inputs.filter((t) => t.grad) as Tensor[];
  const [out, ...values] = (await readAll([y, ...present.map((t) => t.grad!)])) as Float32Array[];
  const run: Run = { y: out, grads: inputs.map((t) => (t.grad ? values[present.indexOf(t)] : null)) };
  const x64 = array64(shape, xs);
  const expected = rmsNormForward(x64, gs, eps);
  const expectedGrads = rmsNormBackward(x64, gs, dys, eps);
  assertClose(run.y, expected.y.data, { atol: 1e-5, rtol: 1e-5 }, `${label} forward`);
  const references = [expectedGrads.dx.data, expectedGrads.dgamma];
  ["x", "gamma"].forEach((name, k) => {
    if (!grads[k]) {
      if (run.grads[k]) throw new Error(`${label}: ${name} got a gradient it did not ask for`);
      return;
    }
    const scale = Math.max(1, maxAbs(references[k]));
    assertClose(run.grads[k]!, references[k], { atol: 1e-5 * scale, rtol: 1e-5 }, `${label} d${name}`);
  });
  for (const t of [x, gamma, y]) t.dispose();
  return run;
}

Deno.test("reference backward agrees with finite differences", () => {
  const shape = [3, 5];
  const xs = Float64Array.from(randomValues(15, 1));
  const gs = Float64Array.from(randomValues(5, 2));
  const w = Float64Array.from(randomValues(15, 4));
  for (const eps of [1e-6, 0.3]) {
    const loss = (x: Float64Array, g: Float64Array) =>
      dot(rmsNormForward({ shape, data: x }, g, eps).y.data, w);
    const analytic = rmsNormBackward({ shape, data: xs }, gs, w, eps);
    const tolerance = { atol: 1e-7, rtol: 1e-6 };
    assertClose(analytic.dx.data, numericGradient((x) => loss(x, gs), xs), tolerance, `dx, eps ${eps}`);
    assertClose(analytic.dgamma, numericGradient((g) => loss(xs, g), gs), tolerance, `dgamma, eps ${eps}`);
  }
});

Deno.test("forward and both gradients match the reference for every row length and row count", async () => {
  // Row lengths 1..4096 (scalar and vec4 rows, past the 8 vectors cached per invocation on CPU
  // adapters, past a 64-column column-sum tile), row counts around the 16 rows of a workgroup and the
  // 128-row blocks of gamma's gradient, 3-D inputs and batch 1.
  const shapes = [
    [1, 1],
    [7, 1],
    [33, 7],
    [129, 33],
    [7, 129],
    [15, 28],
    [16, 32],
    [17, 36],
    [1, 768],
    [33, 768],
    [127, 252],
    [128, 256],
    [130, 260],
    [2, 3, 1024],
    [1, 1, 4096],
    [2, 3, 7],
    [257, 9],
    [5],
  ];
  let seed = 10;
  for (const shape of shapes) await check({ shape, seed: seed += 5 });
});

Deno.test("GPU-sized layouts: trees over 8 and 32 invocations, register tails, lane trees", async () => {
  const layouts = [
    { threads: 8, rowsPerGroup: 4, perThread: 2, width: 4 as const },
    { threads: 32, rowsPerGroup: 1, perThread: 1, width: 1 as const },
  ];
  forceColumnLayout({ tile: 4, lanes: 4 });
  try {
    let seed = 200;
    for (const layout of layouts) {
      forceRowLayout(layout);
      for (const shape of [[1, 1], [3, 7], [5, 60], [4, 64], [129, 68], [7, 33], [9, 129], [2, 768]]) {
        await check({ shape, seed: seed += 5 }, `[${shape}] with ${JSON.stringify(layout)}`);
      }
    }
  } finally {
    forceRowLayout(null);
    forceColumnLayout(null);
  }
});

Deno.test("eps is added to the mean of the squares; a zero row gives zeros and finite gradients", async () => {
  // Rows whose mean square is near eps, where the place of eps shows.
  for (const eps of [1e-6, 1e-2]) {
    for (const shape of [[7, 33], [5, 768]]) await check({ shape, eps, seed: 31, std: 1e-3 });
  }
  for (const cols of [1, 7, 768]) {
    const x = tensor(new Float32Array(3 * cols), { shape: [3, cols], requiresGrad: true });
    const gamma = tensor(randomValues(cols, 5), { requiresGrad: true });
    const y = rmsNorm(x, gamma, 1e-6);
    y.backward(tensor(randomValues(3 * cols, 7), { shape: [3, cols] }));
    const [out, dx, dgamma] = await readAll([y, x.grad!, gamma.grad!]);
    const label = `zero rows [3, ${cols}]`;
    assertClose(out, new Float32Array(3 * cols), { atol: 0 }, label);
    if (!dx.every(Number.isFinite)) throw new Error(`${label}: non-finite dx`);
    assertClose(dgamma, new Float32Array(cols), { atol: 0 }, `${label} dgamma`);
  }
});

Deno.test("no rows: an empty output and zero gradients", async () => {
  const x = tensor(new Float32Array(0), { shape: [0, 6], requiresGrad: true });
  const gamma = tensor(randomValues(6, 3), { requiresGrad: true });
  const y = rmsNorm(x, gamma, 1e-6);
  if (y.shape.join() !== "0,6") throw new Error(`shape ${y.shape}`);
  y.backward(tensor(new Float32Array(0), { shape: [0, 6] }));
  assertClose(await gamma.grad!.data(), new Float32Array(6), { atol: 0 }, "dgamma over no rows");
});

Deno.test("only the gradients that require it are computed", async () => {
  const cases: [boolean, boolean, number][] = [[true, false, 2], [false, true, 1], [true, true, 2]];
  for (const [gx, gg, dispatches] of cases) {
    const traced = traceDispatches(() => check({ shape: [129, 36], seed: 50, grads: [gx, gg] }));
    await traced.result;
    // 129 rows are two blocks of gamma's column sums, added by a second pass.
    const kernels = traced.dispatches.map((d) => d.kernel).filter((k) => k.startsWith("rmsnorm"));
    const sums = traced.dispatches.filter((d) => d.kernel.startsWith("layernorm_column_sums")).length;
    if (kernels.length !== dispatches || sums !== (gg ? 2 : 0)) {
      throw new Error(`grads ${[gx, gg]}: dispatches ${kernels}, ${sums} column sums`);
    }
  }
});

Deno.test("the same inputs give bit-identical outputs and gradients", async () => {
  for (const shape of [[300, 768], [33, 7]]) {
    const first = await check({ shape, seed: 60 });
    const second = await check({ shape, seed: 60 });
    assertBitwiseEqual(first.y, second.y, `[${shape}] y`);
    first.grads.forEach((g, k) => assertBitwiseEqual(g!, second.grads[k]!, `[${shape}] gradient ${k}`));
  }
});

Deno.test("bad inputs name the op and the shapes", () => {
  const x = tensor(new Float32Array(6), { shape: [2, 3] });
  const three = tensor(new Float32Array(3));
  expectError(
    () => rmsNorm(x, tensor(new Float32Array(5)), 1e-6),
    "rmsNorm: gamma [5] does not match the last dimension of x [2, 3] (expected [3])",
  );
  expectError(
    () => rmsNorm(tensor(new Float32Array(0), { shape: [2, 0] }), three, 1e-6),
    "rmsNorm: x [2, 0] has no values along its last axis to normalise",
  );
  expectError(() => rmsNorm(x, three, -1), "rmsNorm: eps must be a finite number >= 0, got -1");
  expectError(() => rmsNorm(x, three, NaN), "rmsNorm: eps must be a finite number >= 0, got NaN");
  expectError(
    () => rmsNorm(tensor(Int32Array.of(1, 2, 3)), three, 1e-6),
    "rmsNorm: tensor int32[3] is not float32",
  );
});

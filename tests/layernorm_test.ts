import { withKernels } from "../engine/variants.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { forceColumnLayout, layerNorm } from "../kernels/layernorm.ts";
import { forceRowLayout } from "../kernels/rows.ts";
import { array64 } from "../kernels/reference/array.ts";
import { layerNormBackward, layerNormForward } from "../kernels/reference/layernorm.ts";
import {
  assertBitwiseEqual,
  assertClose,
  dot,
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
  /** Added to every x value. */
  offset?: number;
  /** Standard deviation of x. */
  std?: number;
  /** Which of x, gamma, beta require gradients. */
  grads?: [boolean, boolean, boolean];
}

interface Run {
  y: Float32Array;
  grads: (Float32Array | null)[];
}

/** Runs layerNorm forward and backward on seeded inputs and checks both against the reference. */
async function check(c: Case, label = `layerNorm [${c.shape}]`): Promise<Run> {
  const { shape, eps = 1e-5, seed, offset = 0, std = 1, grads = [true, true, true] } = c;
  const cols = shape[shape.length - 1];
  const xs = randomValues(size(shape), seed, std).map((v) => v + offset);
  const gs = randomValues(cols, seed + 1).map((v) => 1 + 0.5 * v);
  const bs = randomValues(cols, seed + 2);
  const dys = randomValues(size(shape), seed + 3);
  const x = tensor(xs, { shape, requiresGrad: grads[0] });
  const gamma = tensor(gs, { requiresGrad: grads[1] });
  const beta = tensor(bs, { requiresGrad: grads[2] });
  const y = layerNorm(x, gamma, beta, eps);
  y.backward(tensor(dys, { shape }));
  const inputs = [x, gamma, beta];
  const present = inputs.filter((t) => t.grad) as Tensor[];
  const [out, ...values] = (await readAll([y, ...present.map((t) => t.grad!)])) as Float32Array[];
  const run: Run = { y: out, grads: inputs.map((t) => (t.grad ? values[present.indexOf(t)] : null)) };
  const x64 = array64(shape, xs);
  const expected = layerNormForward(x64, gs, bs, eps);
  const expectedGrads = layerNormBackward(x64, gs, dys, eps);
  assertClose(run.y, expected.y.data, { atol: 1e-5, rtol: 1e-5 }, `${label} forward`);
  const references = [expectedGrads.dx.data, expectedGrads.dgamma, expectedGrads.dbeta];
  ["x", "gamma", "beta"].forEach((name, k) => {
    if (!grads[k]) {
      if (run.grads[k]) throw new Error(`${label}: ${name} got a gradient it did not ask for`);
      return;
    }
    const scale = Math.max(1, maxAbs(references[k]));
    assertClose(run.grads[k]!, references[k], { atol: 1e-5 * scale, rtol: 1e-5 }, `${label} d${name}`);
  });
  return run;
}

Deno.test("reference backward agrees with finite differences", () => {
  const shape = [3, 5];
  const xs = Float64Array.from(randomValues(15, 1));
  const gs = Float64Array.from(randomValues(5, 2));
  const bs = Float64Array.from(randomValues(5, 3));
  const w = Float64Array.from(randomValues(15, 4));
  for (const eps of [1e-5, 0.3]) {
    const loss = (x: Float64Array, g: Float64Array, b: Float64Array) =>
      dot(layerNormForward({ shape, data: x }, g, b, eps).y.data, w);
    const analytic = layerNormBackward({ shape, data: xs }, gs, w, eps);
    const tolerance = { atol: 1e-7, rtol: 1e-6 };
    assertClose(analytic.dx.data, numericGradient((x) => loss(x, gs, bs), xs), tolerance, `dx, eps ${eps}`);
    assertClose(
      analytic.dgamma,
      numericGradient((g) => loss(xs, g, bs), gs),
      tolerance,
      `dgamma, eps ${eps}`,
    );
    assertClose(analytic.dbeta, numericGradient((b) => loss(xs, gs, b), bs), tolerance, `dbeta, eps ${eps}`);
  }
});

Deno.test("forward and all gradients match the reference for every row length and row count", async () => {
  // Row lengths 1..4096 (scalar and vec4 rows, 8 vectors cached per invocation on CPU adapters, 64
  // columns per column-sum workgroup), row counts around the 16 rows of a workgroup and the
  // 128-row blocks of the parameter gradients, 3-D inputs and batch 1.
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
    [3, 4096],
    [2, 3, 7],
    [257, 9],
  ];
  // Software adapters choose the texel form by size (engine/texels.ts): every shape runs both forms.
  for (
    const variants of ["rows:texel,layernorm_column_sums:texel", "rows:serial,layernorm_column_sums:serial"]
  ) {
    let seed = 10;
    await withKernels(variants, async () => {
      for (const shape of shapes) await check({ shape, seed: seed += 5 });
    });
  }
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
      const shapes = [[1, 1], [3, 7], [5, 60], [4, 64], [129, 68], [7, 33], [9, 129], [2, 768]];
      for (const shape of shapes) {
        await check({ shape, seed: seed += 5 }, `[${shape}] with ${JSON.stringify(layout)}`);
      }
    }
  } finally {
    forceRowLayout(null);
    forceColumnLayout(null);
  }
});

Deno.test("eps is respected and a constant row gives beta, not NaN", async () => {
  // Rows with a tiny spread, where eps 1e-5 (GPT-2) and 1e-12 (BERT) give different results.
  for (const eps of [1e-12, 1e-5]) {
    for (const shape of [[7, 33], [5, 768]]) await check({ shape, eps, seed: 31, std: 1e-3 });
  }
  for (const eps of [1e-12, 1e-5]) {
    for (const cols of [1, 7, 768]) {
      for (const value of [0, 0.1, -3.7, 1e4]) {
        const x = tensor(new Float32Array(3 * cols).fill(value), { shape: [3, cols], requiresGrad: true });
        const gamma = tensor(randomValues(cols, 5), { requiresGrad: true });
        const betaValues = randomValues(cols, 6);
        const beta = tensor(betaValues, { requiresGrad: true });
        const y = layerNorm(x, gamma, beta, eps);
        y.backward(tensor(randomValues(3 * cols, 7), { shape: [3, cols] }));
        const [out, dx, dgamma] = await readAll([y, x.grad!, gamma.grad!]);
        const label = `constant ${value}, [3, ${cols}], eps ${eps}`;
        assertClose(
          out,
          Array.from({ length: 3 * cols }, (_, i) => betaValues[i % cols]),
          { atol: 0 },
          label,
        );
        if (![...dx, ...dgamma].every(Number.isFinite)) throw new Error(`${label}: non-finite gradient`);
        assertClose(dgamma, new Float32Array(cols), { atol: 0 }, `${label} dgamma`);
      }
    }
  }
  // Without eps, PyTorch's default 1e-5.
  const x = tensor(randomValues(2 * 9, 8, 1e-3), { shape: [2, 9] });
  const [gamma, beta] = [tensor(randomValues(9, 9)), tensor(randomValues(9, 10))];
  const [plain, explicit] = await readAll([layerNorm(x, gamma, beta), layerNorm(x, gamma, beta, 1e-5)]);
  assertBitwiseEqual(plain, explicit, "default eps");
});

Deno.test("rows with a large offset keep their precision", async () => {
  for (const shape of [[9, 129], [4, 768]]) await check({ shape, seed: 41, offset: 1e4 });
});

Deno.test("only the gradients that require it are computed", async () => {
  const cases: [boolean, boolean, boolean, number][] = [
    [true, false, false, 2],
    [false, true, false, 3],
    [false, false, true, 3],
    [false, true, true, 3],
    [true, true, true, 4],
  ];
  for (const [gx, gg, gb, dispatches] of cases) {
    const traced = traceDispatches(() => check({ shape: [129, 36], seed: 50, grads: [gx, gg, gb] }));
    await traced.result;
    const kernels = traced.dispatches.filter((d) => d.kernel.startsWith("layernorm")).map((d) => d.kernel);
    if (kernels.length !== dispatches) throw new Error(`grads ${[gx, gg, gb]}: dispatches ${kernels}`);
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
  const expectError = (fn: () => unknown, message: string) => {
    let got = "";
    try {
      fn();
    } catch (e) {
      got = (e as Error).message;
    }
    if (got !== message) throw new Error(`expected "${message}", got "${got}"`);
  };
  expectError(
    () => layerNorm(x, tensor(new Float32Array(5)), three, 1e-5),
    "layerNorm: gamma [5] does not match the last dimension of x [2, 3] (expected [3])",
  );
  expectError(
    () => layerNorm(x, three, tensor(new Float32Array(3), { shape: [1, 3] }), 1e-5),
    "layerNorm: beta [1, 3] does not match the last dimension of x [2, 3] (expected [3])",
  );
  expectError(
    () => layerNorm(tensor(new Float32Array(0), { shape: [2, 0] }), three, three, 1e-5),
    "layerNorm: x [2, 0] has no values along its last axis to normalise",
  );
  expectError(() => layerNorm(x, three, three, -1), "layerNorm: eps must be a finite number >= 0, got -1");
});

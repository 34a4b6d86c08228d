/**
 * Row kernels beyond one storage binding: LayerNorm, RMSNorm, softmax and log-softmax (last axis and
 * strided) bind runs of whole rows under a forced small `maxStorageBindingBytes`, and their outputs
 * and gradients equal the one-dispatch results bit for bit (every row, and every block of LayerNorm's
 * parameter-gradient sums, adds the same values in the same order).
 */
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { forceColumnLayout, layerNorm } from "../kernels/layernorm.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { forceRowLayout } from "../kernels/rows.ts";
import { logSoftmax, softmax } from "../kernels/softmax.ts";
import { assertBitwiseEqual, randomValues, setup, withProfile } from "./helpers.ts";

await setup();

/**
 * 32 KiB: rows of 33 floats go in runs of 192 (a multiple of 64, so that runs start on 256-byte
 * offsets), LayerNorm's 128-row gradient blocks one to a run.
 */
const LIMIT = 32768;

/**
 * Runs `op` on seeded inputs of the given shapes (all requiring gradients) and a seeded output
 * gradient: the output, every input's gradient, and the kernels dispatched.
 */
async function run(shapes: number[][], op: (inputs: Tensor[]) => Tensor) {
  const inputs = shapes.map((shape, k) =>
    tensor(randomValues(shape.reduce((p, d) => p * d, 1), 10 + k), { shape, requiresGrad: true })
  );
  const traced = traceDispatches(() => {
    const y = op(inputs);
    y.backward(tensor(randomValues(y.size, 99), { shape: y.shape }));
    return y;
  });
  const values = (await readAll([traced.result, ...inputs.map((t) => t.grad!)])) as Float32Array[];
  for (const t of [traced.result, ...inputs]) t.dispose();
  return { values, kernels: traced.dispatches.map((d) => d.kernel) };
}

/** Checks that `op` dispatches more often under the forced limit and gives bit-identical results. */
async function checkWindowed(label: string, shapes: number[][], op: (inputs: Tensor[]) => Tensor) {
  const whole = await run(shapes, op);
  const windowed = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run(shapes, op));
  if (windowed.kernels.length <= whole.kernels.length) {
    throw new Error(
      `${label}: ${windowed.kernels.length} dispatches windowed, ${whole.kernels.length} whole`,
    );
  }
  whole.values.forEach((v, k) => assertBitwiseEqual(windowed.values[k], v, `${label} output ${k}`));
}

Deno.test("layerNorm and rmsNorm bind row windows beyond one binding, bit-identical to one dispatch", async () => {
  // 301 rows (3 blocks of parameter-gradient sums, the last partial) of 33 floats (not vec4) and of 36
  // (vec4), batch 1 and odd row counts: 2 row runs, 3 block runs.
  for (const shape of [[1, 301, 33], [7, 43, 36]]) {
    const cols = shape[2];
    await checkWindowed(
      `layerNorm ${shape}`,
      [shape, [cols], [cols]],
      ([x, g, b]) => layerNorm(x, g, b, 1e-5),
    );
    await checkWindowed(`rmsNorm ${shape}`, [shape, [cols]], ([x, g]) => rmsNorm(x, g, 1e-6));
  }
});

Deno.test("layerNorm's parameter gradients add blocks in the same order in windows with the lane tree", async () => {
  forceRowLayout({ threads: 4, rowsPerGroup: 2, perThread: 2, width: 4 });
  forceColumnLayout({ tile: 4, lanes: 4 });
  try {
    await checkWindowed("layerNorm tree", [[450, 20], [20], [20]], ([x, g, b]) => layerNorm(x, g, b, 1e-5));
  } finally {
    forceRowLayout(null);
    forceColumnLayout(null);
  }
});

Deno.test("layerNorm's partial sums beyond one binding are added in blocks again", async () => {
  // 131200 rows of 8 floats: 1025 blocks of partial sums (32800 bytes) exceed a 32 KiB binding, so
  // the blocks are summed in blocks; the order differs from one pass, so compare against float64.
  const rows = 131200, cols = 8;
  const dys = randomValues(rows * cols, 7);
  const x = tensor(randomValues(rows * cols, 8), { shape: [rows, cols] });
  const beta = tensor(new Float32Array(cols), { requiresGrad: true });
  await withProfile({ maxStorageBindingBytes: LIMIT }, async () => {
    const y = layerNorm(x, tensor(new Float32Array(cols).fill(1)), beta, 1e-5);
    y.backward(tensor(dys, { shape: [rows, cols] }));
    const got = await beta.grad!.data();
    for (let c = 0; c < cols; c++) {
      let expected = 0;
      for (let r = 0; r < rows; r++) expected += dys[r * cols + c];
      if (Math.abs(got[c] - expected) > 1e-3) throw new Error(`dbeta[${c}] ${got[c]}, expected ${expected}`);
    }
  });
});

Deno.test("softmax and logSoftmax bind row and slab windows beyond one binding, bit-identical", async () => {
  for (const op of [softmax, logSoftmax]) {
    await checkWindowed(`${op.name} rows`, [[1, 301, 33]], ([x]) => op(x));
    await checkWindowed(`${op.name} vec4 rows`, [[3, 70, 40]], ([x]) => op(x, 2));
    // Axis 1 of [241, 5, 8]: 241 slabs of 40 floats, in runs of 200.
    await checkWindowed(`${op.name} strided`, [[241, 5, 8]], ([x]) => op(x, 1));
  }
});

Deno.test("the texel and serial row forms give bit-identical outputs and gradients", async () => {
  // Rows of 40 floats (vec4): the texel form reads through textures what the serial form loads.
  const cases: [string, number[][], (inputs: Tensor[]) => Tensor][] = [
    ["layerNorm", [[37, 40], [40], [40]], ([x, g, b]) => layerNorm(x, g, b, 1e-5)],
    ["softmax", [[37, 40]], ([x]) => softmax(x)],
    ["logSoftmax", [[37, 40]], ([x]) => logSoftmax(x)],
  ];
  for (const [label, shapes, op] of cases) {
    const texel = await withKernels("rows:texel,layernorm_column_sums:texel", () => run(shapes, op));
    const serial = await withKernels("rows:serial,layernorm_column_sums:serial", () => run(shapes, op));
    if (!texel.kernels.some((k) => k.includes("texel")) || serial.kernels.some((k) => k.includes("texel"))) {
      throw new Error(`${label}: kernels ${texel.kernels} and ${serial.kernels}`);
    }
    serial.values.forEach((v, k) => assertBitwiseEqual(texel.values[k], v, `${label} value ${k}`));
  }
});

/**
 * Row kernels beyond one storage binding: LayerNorm, RMSNorm, softmax and log-softmax (last axis and
 * strided) bind runs of whole rows under a forced small `maxStorageBindingBytes`, and their outputs
 * and gradients equal the one-dispatch results bit for bit (every row, and every block of LayerNorm's
 * parameter-gradient sums, adds the same values in the same order). Rows too wide for a run of them
 * to fit a binding take paths composed of windowed ops, equal to the row kernels to rounding.
 */
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { crossEntropy, softCrossEntropy } from "../kernels/cross_entropy.ts";
import { forceColumnLayout, layerNorm } from "../kernels/layernorm.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { forceRowLayout } from "../kernels/rows.ts";
import { logSoftmax, softmax } from "../kernels/softmax.ts";
import { assertBitwiseEqual, assertClose, randomValues, setup, withProfile } from "./helpers.ts";

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

Deno.test("rows too wide for a binding-sized run are composed of windowed ops, equal to the row kernels to rounding", async () => {
  // At 32 KiB, 20 rows of 513 floats (odd: a run must be 64 rows to start aligned) and rows of 9001
  // floats (beyond one binding, in parts of 8064, 896 and 41) do not fit; batch 1 and several rows.
  for (const shape of [[20, 513], [1, 2, 9001]]) {
    const cols = shape[shape.length - 1];
    const cases: [string, number[][], (inputs: Tensor[]) => Tensor][] = [
      ["layerNorm", [shape, [cols], [cols]], ([x, g, b]) => layerNorm(x, g, b, 1e-5)],
      ["rmsNorm", [shape, [cols]], ([x, g]) => rmsNorm(x, g, 1e-6)],
      ["softmax", [shape], ([x]) => softmax(x)],
      ["logSoftmax", [shape], ([x]) => logSoftmax(x)],
    ];
    for (const [label, shapes, op] of cases) {
      const whole = await run(shapes, op);
      const wide = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run(shapes, op));
      const rowKernel = wide.kernels.find((k) => k.startsWith(label === "rmsNorm" ? "rmsnorm" : "layernorm"));
      if (label.endsWith("Norm") && rowKernel) throw new Error(`${label} ${shape}: ran ${rowKernel}`);
      whole.values.forEach((v, k) =>
        assertClose(wide.values[k], v, { atol: 1e-5, rtol: 1e-4 }, `${label} ${shape} output ${k}`)
      );
    }
  }
});

Deno.test("softmax along an axis whose slab exceeds a binding runs on the axis moved last", async () => {
  // Axis 0 of [300, 40]: one slab of 12 000 floats (47 KiB) beyond 32 KiB; axis 1 of [2, 300, 3, 5].
  for (const [shape, axis] of [[[300, 40], 0], [[2, 300, 3, 5], 1]] as const) {
    for (const op of [softmax, logSoftmax]) {
      const f = ([x]: Tensor[]) => op(x, axis);
      const whole = await run([[...shape]], f);
      const moved = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run([[...shape]], f));
      const strided = (kernels: string[]) => kernels.filter((k) => k.includes("_strided")).length;
      if (strided(moved.kernels) > 0 || strided(whole.kernels) === 0) {
        throw new Error(`${op.name} ${shape}: ${strided(moved.kernels)} strided kernels moved`);
      }
      whole.values.forEach((v, k) =>
        assertClose(
          moved.values[k],
          v,
          { atol: 1e-6, rtol: 1e-5 },
          `${op.name} ${shape} axis ${axis} output ${k}`,
        )
      );
    }
  }
});

Deno.test("cross-entropy over rows too wide for a binding-sized run is composed of windowed ops", async () => {
  // Hard targets with one ignored row and every reduction; soft targets with their own gradient.
  const lossAndGrads = async (shape: number[], loss: (logits: Tensor) => Tensor, soft: Tensor | null) => {
    const logits = tensor(randomValues(shape[0] * shape[1], 5, 3), { shape, requiresGrad: true });
    const { result: y, dispatches } = traceDispatches(() => {
      const y = loss(logits);
      y.backward(tensor(randomValues(y.size, 6), { shape: y.shape }));
      return y;
    });
    const values = (await readAll([y, logits.grad!, ...(soft ? [soft.grad!] : [])])) as Float32Array[];
    logits.dispose();
    y.dispose();
    return { values, rowKernels: dispatches.filter((d) => d.kernel.includes("cross_entropy_rows")).length };
  };
  type Run = Awaited<ReturnType<typeof lossAndGrads>>;
  const compare = (label: string, wide: Run, whole: Run) => {
    if (wide.rowKernels > 0 || whole.rowKernels === 0) {
      throw new Error(`${label}: ${wide.rowKernels} row kernels composed, ${whole.rowKernels} whole`);
    }
    whole.values.forEach((v, k) =>
      assertClose(wide.values[k], v, { atol: 1e-5, rtol: 1e-4 }, `${label} ${k}`)
    );
  };
  const narrowBinding = { maxStorageBindingBytes: LIMIT };
  // 20 rows of 513 logits: a run would need 64 rows (to start aligned) of 2 KiB, beyond 32 KiB.
  for (const [rows, cols] of [[20, 513], [2, 9001]]) {
    const targets = tensor(Int32Array.from({ length: rows }, (_, r) => r === 1 ? -100 : (r * 977) % cols), {
      shape: [rows],
    });
    for (const reduction of ["mean", "sum", "none"] as const) {
      const loss = (logits: Tensor) => crossEntropy(logits, targets, { reduction });
      const whole = await lossAndGrads([rows, cols], loss, null);
      const wide = await withProfile(narrowBinding, () => lossAndGrads([rows, cols], loss, null));
      compare(`crossEntropy ${rows}x${cols} ${reduction}`, wide, whole);
    }
    const soft = tensor(randomValues(rows * cols, 8, 0.1), { shape: [rows, cols], requiresGrad: true });
    const softLoss = (logits: Tensor) => softCrossEntropy(logits, soft);
    const whole = await lossAndGrads([rows, cols], softLoss, soft);
    soft.grad!.dispose();
    soft.grad = null;
    const wide = await withProfile(narrowBinding, () => lossAndGrads([rows, cols], softLoss, soft));
    compare(`softCrossEntropy ${rows}x${cols}`, wide, whole);
    const allIgnored = tensor(Int32Array.from({ length: rows }, () => -100), { shape: [rows] });
    const nan = await withProfile(narrowBinding, async () => {
      const logits = tensor(randomValues(rows * cols, 5), { shape: [rows, cols] });
      const value = await crossEntropy(logits, allIgnored).data();
      logits.dispose();
      return value[0];
    });
    if (!Number.isNaN(nan)) throw new Error(`crossEntropy with every target ignored: ${nan}, expected NaN`);
    for (const t of [targets, soft, allIgnored]) t.dispose();
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

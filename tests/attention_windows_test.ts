/**
 * Attention beyond one storage binding: under a forced small `maxStorageBindingBytes` every pass runs
 * over runs of heads (kernels/attention_windows.ts), in every kernel family, with masks, causality
 * and dropout; outputs and gradients equal one dispatch over all heads bit for bit. Fused QKV whose
 * single head exceeds a binding is copied apart and equals the fused kernels to rounding.
 */
import { manualSeed } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor } from "../engine/tensor.ts";
import { withKernels } from "../engine/variants.ts";
import { attention, type AttentionOptions, fusedQkvAttention } from "../kernels/attention.ts";
import { assertBitwiseEqual, assertClose, expectError, randomValues, setup, withProfile } from "./helpers.ts";

await setup();

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/** Forward and backward of `op` on seeded inputs: output, input gradients, forward dispatches. */
async function run(shapes: number[][], op: (inputs: Tensor[]) => Tensor) {
  manualSeed(11);
  const inputs = shapes.map((shape, k) =>
    tensor(randomValues(size(shape), 20 + k), { shape, requiresGrad: true })
  );
  const traced = traceDispatches(() => {
    const y = op(inputs);
    y.backward(tensor(randomValues(y.size, 98), { shape: y.shape }));
    return y;
  });
  const values = (await readAll([traced.result, ...inputs.map((t) => t.grad!)])) as Float32Array[];
  for (const t of [traced.result, ...inputs]) t.dispose();
  const forwards = traced.dispatches.filter((d) => d.kernel.startsWith("attention_forward")).length;
  return { values, forwards };
}

/** A 4 KiB binding: runs of one to three heads at the sizes below. */
const LIMIT = 4096;

/** Checks that `op` runs in several runs of heads under {@linkcode LIMIT} and matches one dispatch bit for bit. */
async function checkWindowed(
  label: string,
  shapes: number[][],
  op: (inputs: Tensor[]) => Tensor,
) {
  const whole = await run(shapes, op);
  const windowed = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run(shapes, op));
  if (whole.forwards !== 1 || windowed.forwards < 2) {
    throw new Error(`${label}: ${windowed.forwards} forward dispatches windowed, ${whole.forwards} whole`);
  }
  whole.values.forEach((v, k) => assertBitwiseEqual(windowed.values[k], v, `${label} output ${k}`));
}

/** Key masks of 40 and 9 keys, each hiding a few keys of every batch. */
const maskOf = (keys: number) =>
  tensor(Float32Array.from({ length: 3 * keys }, (_, i) => (i % 5 === 3 ? 0 : 1)), { shape: [3, keys] });
const optionsOf = (
  keys: number,
): AttentionOptions[] => [{ causal: true, dropout: 0.2 }, { keyMask: maskOf(keys) }];

for (const variant of ["rows", "texel", "tiled_small", "tiled"]) {
  Deno.test(`attention (${variant}) runs in windows of heads, bit-identical to one dispatch`, async () => {
    await withKernels(`attention:${variant}`, async () => {
      // q [3, 4, 9, D] and k, v [3, 4, 40, D]: runs of one to three heads, and windows
      // of the logsumexp (108 floats) and the mask (120) that start past their first aligned offset.
      // D = 6 reads rows that are not whole vec4s (the texel family falls back to rows there).
      for (const dim of [8, 6]) {
        for (const o of optionsOf(40)) {
          await checkWindowed(
            `attention ${variant} D=${dim} ${JSON.stringify(o)}`,
            [[3, 4, 9, dim], [3, 4, 40, dim], [3, 4, 40, dim]],
            ([q, k, v]) => attention(q, k, v, o),
          );
        }
      }
      // qkv [3, 9, 3 * 3 * 8] interleaves heads in its rows: a run of heads binds every row it spans.
      for (const o of optionsOf(9)) {
        await checkWindowed(
          `fusedQkvAttention ${variant} ${JSON.stringify(o)}`,
          [[3, 9, 72]],
          ([qkv]) => fusedQkvAttention(qkv, 3, o),
        );
      }
    });
  });
}

Deno.test("fusedQkvAttention copies q, k and v apart when one head's rows of qkv exceed a binding", async () => {
  // qkv [3, 40, 2 * 3 * 8]: one head spans 39 rows of 48 floats (7.5 KiB) while a head of the separate
  // q, k and v takes 1.25 KiB.
  for (const o of [{ causal: true }, { keyMask: maskOf(40) }]) {
    const op = ([qkv]: Tensor[]) => fusedQkvAttention(qkv, 2, o);
    const whole = await run([[3, 40, 48]], op);
    const separate = await withProfile({ maxStorageBindingBytes: LIMIT }, () => run([[3, 40, 48]], op));
    whole.values.forEach((v, k) =>
      assertClose(separate.values[k], v, { atol: 1e-6, rtol: 1e-5 }, `${JSON.stringify(o)} output ${k}`)
    );
  }
});

Deno.test("attention names the operand when one head exceeds the binding limit", async () => {
  const q = tensor(new Float32Array(2 * 64 * 8), { shape: [1, 2, 64, 8] });
  await withProfile({ maxStorageBindingBytes: 1024 }, () =>
    expectError(
      () => attention(q, q, q),
      `attention: one head of ${q.describe()} spans more than the 1024-byte binding limit`,
    ));
  q.dispose();
});

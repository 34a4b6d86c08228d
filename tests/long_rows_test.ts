/**
 * Rows longer than one invocation may walk on a software adapter. Mesa's llvmpipe stops an invocation's
 * loops after 65535 iterations in all, silently, so kernels that walk a whole row in one invocation there
 * (softmax, log-softmax, LayerNorm, RMSNorm, cross-entropy, a strided softmax's column, a row sum's lanes)
 * share long rows among invocations (engine/kernel.ts, walkLimit). Each op runs on rows past that limit
 * with the software adapter's layouts, forward and backward, against its float64 reference: before the
 * rows were shared, llvmpipe gave softmax rows of 30001 floats that summed to 0.15. Attention is refused
 * past what its kernels may walk (the texel ones, and the row ones where a head dimension is not a multiple
 * of 4 leaves them the only ones); an embedding gradient walks a repeated id's positions in runs. The
 * cross-entropy loss's reduction and LayerNorm's parameter-gradient sums walk in bounded steps too, checked
 * by hand at 2^24 and 9.4 M rows (too large for this suite).
 */
import { attention, gatherRows, matmul, readAll, sum, type Tensor, tensor } from "../mod.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { logSoftmax, softmax } from "../kernels/softmax.ts";
import { crossEntropyBackward, crossEntropyForward } from "../kernels/reference/cross_entropy.ts";
import { layerNormBackward, layerNormForward } from "../kernels/reference/layernorm.ts";
import { rmsNormBackward, rmsNormForward } from "../kernels/reference/rmsnorm.ts";
import { softmaxBackward, softmaxForward } from "../kernels/reference/softmax.ts";
import { assertClose, f64, randomValues, setup, thrownMessage, withProfile } from "./helpers.ts";

await setup();

/** Runs `op` on a seeded input (and seeded output gradient) with a software adapter's layouts. */
function onSoftwareLayouts<T>(fn: () => T | Promise<T>): Promise<T> {
  return withProfile({ isSoftware: true }, fn);
}

async function forwardBackward(
  shape: number[],
  op: (x: Tensor) => Tensor,
  extra: Tensor[] = [],
): Promise<{ x: Float32Array; dy: Float32Array; y: Float32Array; dx: Float32Array; grads: Float32Array[] }> {
  const x = randomValues(shape.reduce((p, d) => p * d, 1), 7, 2);
  const input = tensor(x, { shape, requiresGrad: true });
  const y = op(input);
  const dy = randomValues(y.size, 8);
  y.backward(tensor(dy, { shape: y.shape }));
  const [out, dx, ...grads] =
    (await readAll([y, input.grad!, ...extra.map((t) => t.grad!)])) as Float32Array[];
  for (const t of [y, input, ...extra]) t.dispose();
  return { x, dy, y: out, dx, grads };
}

Deno.test("softmax and log-softmax over rows past a software invocation's loop limit match the reference", async () => {
  // 30001 floats (not whole vec4s: 3 walks of 30001 steps) and 131072 (vec4s); a strided axis of 20000.
  for (const [shape, axis] of [[[2, 30001], 1], [[1, 131072], 1], [[20000, 3], 0]] as const) {
    for (const log of [false, true]) {
      const label = `${log ? "logSoftmax" : "softmax"} ${JSON.stringify(shape)} axis ${axis}`;
      const r = await onSoftwareLayouts(() =>
        forwardBackward([...shape], (x) => (log ? logSoftmax : softmax)(x, axis))
      );
      const x64 = { shape: [...shape], data: f64(r.x) };
      assertClose(r.y, softmaxForward(x64, axis, log).data, { atol: 1e-6, rtol: 1e-4 }, `${label} output`);
      assertClose(
        r.dx,
        softmaxBackward(x64, r.dy, axis, log).data,
        { atol: 1e-5, rtol: 1e-3 },
        `${label} dx`,
      );
    }
  }
});

Deno.test("crossEntropy over more classes than a software invocation may walk matches the reference", async () => {
  const cols = 70001;
  const targets = [3, 70000];
  const r = await onSoftwareLayouts(() =>
    forwardBackward([2, cols], (x) => crossEntropy(x, tensor(Int32Array.from(targets))))
  );
  assertClose(r.y, crossEntropyForward(r.x, cols, targets), { rtol: 1e-5 }, "loss");
  assertClose(r.dx, crossEntropyBackward(r.x, cols, targets, r.dy), { atol: 1e-9, rtol: 1e-3 }, "dlogits");
});

Deno.test("layerNorm and rmsNorm over rows past a software invocation's loop limit match the reference", async () => {
  const cols = 40001;
  const gammaValues = randomValues(cols, 3);
  const betaValues = randomValues(cols, 4);
  const gamma = tensor(gammaValues, { requiresGrad: true });
  const beta = tensor(betaValues, { requiresGrad: true });
  const ln = await onSoftwareLayouts(() =>
    forwardBackward([2, cols], (x) => layerNorm(x, gamma, beta, 1e-5), [gamma, beta])
  );
  const x64 = { shape: [2, cols], data: f64(ln.x) };
  assertClose(
    ln.y,
    layerNormForward(x64, gammaValues, betaValues, 1e-5).y.data,
    { atol: 1e-4 },
    "layerNorm y",
  );
  const lnGrads = layerNormBackward(x64, gammaValues, ln.dy, 1e-5);
  assertClose(ln.dx, lnGrads.dx.data, { atol: 1e-3 }, "layerNorm dx");
  assertClose(ln.grads[0], lnGrads.dgamma, { atol: 1e-4 }, "layerNorm dgamma");
  const weight = tensor(gammaValues, { requiresGrad: true });
  const rms = await onSoftwareLayouts(() =>
    forwardBackward([2, cols], (x) => rmsNorm(x, weight, 1e-6), [weight])
  );
  const r64 = { shape: [2, cols], data: f64(rms.x) };
  assertClose(rms.y, rmsNormForward(r64, gammaValues, 1e-6).y.data, { atol: 1e-4 }, "rmsNorm y");
  const rmsGrads = rmsNormBackward(r64, gammaValues, rms.dy, 1e-6);
  assertClose(rms.dx, rmsGrads.dx.data, { atol: 1e-3 }, "rmsNorm dx");
  assertClose(rms.grads[0], rmsGrads.dgamma, { atol: 1e-4 }, "rmsNorm dgamma");
});

Deno.test("a sum of more elements than a software workgroup's lanes may walk is exact on integers", async () => {
  // 2^24 + 4 ones (a float32 integer): each of a workgroup's 256 lanes would walk 65537 of them.
  const n = 2 ** 24 + 4;
  const total = await onSoftwareLayouts(async () => {
    const ones = tensor(new Float32Array(n).fill(1));
    const s = sum(ones);
    const [value] = (await readAll([s])) as Float32Array[];
    s.dispose();
    ones.dispose();
    return value[0];
  });
  if (total !== n) throw new Error(`sum of ${n} ones gave ${total}`);
});

Deno.test("attention the software adapter's row kernels would walk too far is refused, not computed wrong", async () => {
  // Head dimensions not a multiple of 4 leave the texel kernels out; each key costs 2 * ceil(D / 4) + 2
  // loop steps there: 2730 keys of 30, 1445 of 62 are the most they take.
  for (const [dim, tokens, longest] of [[30, 2731, 2730], [62, 1446, 1445]]) {
    const make = () => tensor(new Float32Array(tokens * dim), { shape: [1, 1, tokens, dim] });
    const [q, k, v] = [make(), make(), make()];
    const message = await onSoftwareLayouts(() => thrownMessage(() => attention(q, k, v).dispose()));
    for (const t of [q, k, v]) t.dispose();
    const expected =
      `attention: ${tokens} queries and ${tokens} keys of dimension ${dim} are more than this ` +
      `software adapter's row kernels walk (${longest})`;
    if (!message.startsWith(expected)) throw new Error(`got "${message}"`);
  }
});

Deno.test("a matrix product over more inner steps than a software invocation may walk matches the reference", async () => {
  // 300001 ones: the inner loop of one invocation would take 75001 steps.
  const K = 300001;
  const product = await onSoftwareLayouts(async () => {
    const a = tensor(new Float32Array(K).fill(1), { shape: [1, K] });
    const b = tensor(new Float32Array(K).fill(1), { shape: [K, 1] });
    const c = matmul(a, b);
    const [value] = (await readAll([c])) as Float32Array[];
    for (const t of [a, b, c]) t.dispose();
    return value[0];
  });
  if (product !== K) throw new Error(`sum of ${K} products of ones gave ${product}`);
});

Deno.test("rows longer than a software workgroup may walk go in parts, as rows wider than a binding do", async () => {
  // 8388609 floats: 256 invocations of 8192 vec4s hold one fewer; the composed path takes the row in parts.
  const n = 8388609;
  const total = await onSoftwareLayouts(async () => {
    const x = tensor(new Float32Array(n).map((_, i) => Math.sin(i)), { shape: [1, n] });
    const y = softmax(x);
    const s = sum(y);
    const [value] = (await readAll([s])) as Float32Array[];
    for (const t of [x, y, s]) t.dispose();
    return value[0];
  });
  if (!(Math.abs(total - 1) < 1e-3)) throw new Error(`softmax of ${n} floats sums to ${total}`);
});

Deno.test("attention longer than the software adapter's texel kernels walk is refused, not computed wrong", async () => {
  // A head dimension of 4 is texel-readable; their invocations loop once a key (70000 came out wrong).
  const [tokens, dim] = [49153, 4];
  const q = tensor(new Float32Array(8 * dim), { shape: [1, 1, 8, dim] });
  const kv = tensor(new Float32Array(tokens * dim), { shape: [1, 1, tokens, dim] });
  const message = await onSoftwareLayouts(() => thrownMessage(() => attention(q, kv, kv).dispose()));
  for (const t of [q, kv]) t.dispose();
  const expected =
    `attention: 8 queries and ${tokens} keys are more than this software adapter's kernels walk (49152)`;
  if (message !== expected) throw new Error(`got "${message}"`);
});

Deno.test("an embedding gradient of an id repeated more times than a software invocation may walk adds them all", async () => {
  // 270001 copies of one id: one invocation walked them 4 at a time and stopped after 262140.
  const n = 270001;
  const row = await onSoftwareLayouts(async () => {
    const table = tensor(new Float32Array(10), { shape: [10, 1], requiresGrad: true });
    const picked = gatherRows(table, tensor(new Int32Array(n).fill(3)));
    picked.backward(tensor(new Float32Array(n).fill(1), { shape: picked.shape }));
    const [grad] = (await readAll([table.grad!])) as Float32Array[];
    for (const t of [table, picked]) t.dispose();
    return grad[3];
  });
  if (row !== n) throw new Error(`gradient of an id repeated ${n} times: ${row}`);
});

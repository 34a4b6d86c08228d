import { readAll, Tensor, tensor } from "../engine/tensor.ts";
import { poolStats } from "../engine/pool.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { gpu } from "../engine/device.ts";
import { withKernels } from "../engine/variants.ts";
import { linear, matmul } from "../kernels/matmul.ts";
import { type Array64, array64 } from "../kernels/reference/array.ts";
import * as ref from "../kernels/reference/matmul.ts";
import {
  assertBitwiseEqual,
  assertClose,
  dot,
  maxAbs,
  numericGradient,
  randomValues,
  setup,
  withProfile,
} from "./helpers.ts";

await setup();

const size = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/** One product to check: stored shapes of a and b, and flags. */
interface Case {
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
  bias?: boolean;
  /** Skip the backward pass (keeps the forced GPU variants to few compiled kernels). */
  forwardOnly?: boolean;
}

/** Float32 rounding error of sums of `terms` products grows with their count; scale by the largest value. */
function tolerance(expected: Array64, terms: number) {
  return { atol: 1e-5 * Math.max(1, maxAbs(expected.data)) * Math.max(1, Math.sqrt(terms) / 8) };
}

/** Runs a case on the GPU and the float64 reference; returns the GPU values for determinism checks. */
async function check(c: Case, seed: number): Promise<Float32Array[]> {
  const { transposeA = false, transposeB = false } = c;
  const label = `[${c.a}]${transposeA ? "^T" : ""} x [${c.b}]${transposeB ? "^T" : ""}${
    c.bias ? " + bias" : ""
  }`;
  const N = c.b[c.b.length - (transposeB ? 2 : 1)];
  const K = c.a[c.a.length - (transposeA ? 2 : 1)];
  const va = randomValues(size(c.a), seed), vb = randomValues(size(c.b), seed + 1);
  const vbias = randomValues(N, seed + 2);
  const a = tensor(va, { shape: c.a, requiresGrad: !c.forwardOnly });
  const b = tensor(vb, { shape: c.b, requiresGrad: !c.forwardOnly });
  const bias = c.bias ? tensor(vbias, { requiresGrad: !c.forwardOnly }) : undefined;
  const options = { transposeA, transposeB };
  const y = matmul(a, b, { ...options, bias });
  const A = array64(c.a, va), B = array64(c.b, vb);
  const refOptions = { ...options, bias: c.bias ? array64([N], vbias) : undefined };
  const expected = ref.matmul(A, B, refOptions);
  if (y.shape.join() !== expected.shape.join()) throw new Error(`${label}: shape [${y.shape}]`);
  const tensors: Tensor[] = [y];
  const wanted: [Array64, number, string][] = [[expected, K, "forward"]];
  if (!c.forwardOnly) {
    const upstream = randomValues(y.size, seed + 3);
    y.backward(tensor(upstream, { shape: y.shape }));
    const grads = ref.matmulBackward(A, B, array64(expected.shape, upstream), refOptions);
    const batch = size(expected.shape) / (expected.shape.at(-1)! * expected.shape.at(-2)!);
    tensors.push(a.grad!, b.grad!);
    wanted.push([grads.a, N, "grad a"], [grads.b, expected.shape.at(-2)! * batch, "grad b"]);
    if (bias) {
      tensors.push(bias.grad!);
      wanted.push([grads.bias!, size(expected.shape) / N, "grad bias"]);
    }
  }
  const values = (await readAll(tensors)) as Float32Array[];
  wanted.forEach(([e, terms, what], i) =>
    assertClose(values[i], e.data, tolerance(e, terms), `${label} ${what}`)
  );
  for (const t of [a, b, y, ...(bias ? [bias] : [])]) {
    t.grad?.dispose();
    t.dispose();
  }
  return values;
}

/** The four transpose combinations of a product [M, K] x [K, N], with stored shapes. */
function transposed(M: number, N: number, K: number, batch: number[] = [], bias = false): Case[] {
  return [false, true].flatMap((transposeA) =>
    [false, true].map((transposeB) => ({
      a: [...batch, ...(transposeA ? [K, M] : [M, K])],
      b: [...batch, ...(transposeB ? [N, K] : [K, N])],
      transposeA,
      transposeB,
      bias,
    }))
  );
}

Deno.test("reference backward agrees with finite differences", () => {
  const shapes: [number[], number[], boolean, boolean][] = [
    [[3, 4], [4, 2], false, false],
    [[4, 3], [4, 2], true, false],
    [[3, 4], [2, 4], false, true],
    [[2, 1, 4, 3], [3, 2, 4], true, true],
  ];
  let seed = 100;
  for (const [sa, sb, transposeA, transposeB] of shapes) {
    const A = array64(sa, randomValues(size(sa), seed++)), B = array64(sb, randomValues(size(sb), seed++));
    const N = sb[sb.length - (transposeB ? 2 : 1)];
    const bias = array64([N], randomValues(N, seed++));
    const out = ref.matmul(A, B, { transposeA, transposeB, bias });
    const G = array64(out.shape, randomValues(out.data.length, seed++));
    const grads = ref.matmulBackward(A, B, G, { transposeA, transposeB, bias });
    const loss = (a: Array64, b: Array64, c: Array64) =>
      dot(G.data, ref.matmul(a, b, { transposeA, transposeB, bias: c }).data);
    const label = `[${sa}] x [${sb}] ${transposeA} ${transposeB}`;
    const tol = { atol: 1e-7, rtol: 1e-6 };
    assertClose(
      grads.a.data,
      numericGradient((x) => loss({ ...A, data: x }, B, bias), A.data),
      tol,
      `${label} a`,
    );
    assertClose(
      grads.b.data,
      numericGradient((x) => loss(A, { ...B, data: x }, bias), B.data),
      tol,
      `${label} b`,
    );
    assertClose(
      grads.bias!.data,
      numericGradient((x) => loss(A, B, { ...bias, data: x }), bias.data),
      tol,
      label,
    );
  }
});

Deno.test("odd sizes around every tile edge match the reference, forward and backward", async () => {
  // Tile edges of the software configuration (16, 32, 64; k-step 4) and of the GPU ones (8, 16, 32, 64, 128).
  const sizes = [1, 3, 5, 7, 9, 15, 17, 31, 33, 63, 65, 127, 129];
  let seed = 1;
  for (const s of sizes) {
    const cases = [[s, 7, 5], [9, s, 3], [5, 17, s]].flatMap(([M, N, K], i) =>
      transposed(M, N, K, [], i !== 1)
    );
    for (const c of cases) await check(c, seed += 4);
  }
});

Deno.test("aligned and partly aligned sizes (vec4 paths) match the reference", async () => {
  let seed = 1000;
  for (const [M, N, K] of [[4, 4, 4], [32, 64, 4], [64, 32, 16], [16, 128, 8]]) {
    for (const c of transposed(M, N, K, [], true)) await check(c, seed += 4);
  }
  // Operands aligned differently take vec4 reads for some bindings and scalar ones for others.
  await check({ a: [8, 7], b: [7, 12], bias: true }, seed += 4);
  await check({ a: [12, 7], b: [12, 8], transposeA: true, forwardOnly: true }, seed += 4);
  await check({ a: [12, 8], b: [7, 8], transposeB: true, forwardOnly: true }, seed += 4);
});

Deno.test("batches: batch 1, batch 3, broadcast batch dims and a shared 2-D weight", async () => {
  const cases: Case[] = [
    ...transposed(7, 9, 5, [1], true),
    ...transposed(33, 5, 17, [3], true),
    { a: [2, 3, 5, 7], b: [3, 7, 9], bias: true },
    { a: [2, 1, 5, 7], b: [1, 3, 7, 9] },
    { a: [2, 1, 3, 7, 5], b: [1, 2, 1, 9, 7], transposeA: true, transposeB: true },
    { a: [5, 7], b: [3, 7, 9] },
    { a: [2, 3, 7, 33], b: [33, 9], bias: true },
    { a: [2, 3, 7, 33], b: [9, 33], transposeB: true, bias: true },
    { a: [2, 33, 7], b: [33, 9], transposeA: true },
    { a: [3, 0], b: [0, 4], bias: true },
  ];
  let seed = 2000;
  for (const c of cases) await check(c, seed += 4);
});

Deno.test("1-D operands are vectors as in torch.matmul: a row for a, a column for b, dropped from the result", async () => {
  const cases: (Case & { shape: number[] })[] = [
    { a: [7], b: [5, 7], transposeB: true, shape: [5] },
    { a: [7], b: [7, 5], bias: true, shape: [5] },
    { a: [7], b: [3, 7, 5], shape: [3, 5] },
    { a: [3, 5, 7], b: [7], shape: [3, 5] },
    { a: [7, 5], b: [7], transposeA: true, shape: [5] },
    { a: [33], b: [33], shape: [] },
    { a: [1], b: [1, 1], shape: [1] },
  ];
  let seed = 2500;
  const inUse = poolStats().inUseBytes;
  for (const c of cases) {
    const { transposeA = false, transposeB = false } = c;
    const label = `[${c.a}]${transposeA ? "^T" : ""} x [${c.b}]${transposeB ? "^T" : ""}`;
    // The float64 reference of the same product with the vectors as one-row and one-column matrices.
    const matrixA = c.a.length === 1 ? [1, c.a[0]] : c.a;
    const matrixB = c.b.length === 1 ? [c.b[0], 1] : c.b;
    const N = matrixB[matrixB.length - (transposeB ? 2 : 1)];
    const va = randomValues(size(c.a), seed += 4), vb = randomValues(size(c.b), seed + 1);
    const vbias = randomValues(N, seed + 2);
    const a = tensor(va, { shape: c.a, requiresGrad: true });
    const b = tensor(vb, { shape: c.b, requiresGrad: true });
    const bias = c.bias ? tensor(vbias, { requiresGrad: true }) : undefined;
    const y = matmul(a, b, { transposeA, transposeB, bias });
    if (y.shape.join() !== c.shape.join()) {
      throw new Error(`${label}: shape [${y.shape}], torch's [${c.shape}]`);
    }
    const refOptions = { transposeA, transposeB, bias: c.bias ? array64([N], vbias) : undefined };
    const [A, B] = [array64(matrixA, va), array64(matrixB, vb)];
    const expected = ref.matmul(A, B, refOptions);
    const upstream = randomValues(y.size, seed + 3);
    const seedGrad = tensor(upstream, { shape: y.shape });
    y.backward(seedGrad);
    seedGrad.dispose();
    const grads = ref.matmulBackward(A, B, array64(expected.shape, upstream), refOptions);
    const tensors = [y, a.grad!, b.grad!, ...(bias ? [bias.grad!] : [])];
    const wanted = [expected, grads.a, grads.b, ...(bias ? [grads.bias!] : [])];
    const values = await readAll(tensors);
    if (a.grad!.shape.join() !== c.a.join() || b.grad!.shape.join() !== c.b.join()) {
      throw new Error(`${label}: gradient shapes [${a.grad!.shape}], [${b.grad!.shape}]`);
    }
    wanted.forEach((e, i) => assertClose(values[i], e.data, tolerance(e, 33), `${label} output ${i}`));
    for (const x of [a, b, y, ...(bias ? [bias] : [])]) {
      x.grad?.dispose();
      x.dispose();
    }
  }
  // The views of the vectors as matrices, and the products before their dimension is dropped, are freed.
  if (poolStats().inUseBytes !== inUse) {
    throw new Error(`${poolStats().inUseBytes - inUse} bytes left in use`);
  }
});

Deno.test("a 2-D weight folds the batch into one product, forward and for its gradient", async () => {
  const x = tensor(randomValues(2 * 3 * 33, 1), { shape: [2, 3, 33], requiresGrad: true });
  const w = tensor(randomValues(9 * 33, 2), { shape: [9, 33], requiresGrad: true });
  const bias = tensor(randomValues(9, 3), { requiresGrad: true });
  const { result: y, dispatches } = traceDispatches(() => linear(x, w, bias));
  if (dispatches.length !== 1 || dispatches[0].workgroups[2] !== 1) {
    throw new Error(`linear forward: ${JSON.stringify(dispatches)}`);
  }
  const backward = traceDispatches(() => y.backward(tensor(randomValues(y.size, 4), { shape: y.shape })));
  // The bias's gradient comes out of the weight's product: two dispatches in all.
  const products = backward.dispatches.filter((d) => d.kernel.startsWith("matmul"));
  if (
    products.length !== 2 || backward.dispatches.length !== 2 || products.some((d) => d.workgroups[2] !== 1)
  ) {
    throw new Error(`linear backward: ${JSON.stringify(backward.dispatches)}`);
  }
  const v = randomValues(33, 5);
  const vector = linear(tensor(v), w, bias);
  if (vector.shape.join() !== "9") throw new Error(`linear of a vector: [${vector.shape}]`);
  const [vw, vb] = [randomValues(9 * 33, 2), randomValues(9, 3)];
  const expected = ref.matmul(array64([1, 33], v), array64([9, 33], vw), {
    transposeB: true,
    bias: array64([9], vb),
  });
  assertClose(await vector.data(), expected.data, tolerance(expected, 33), "linear of a vector");
  // Its gradients, as PyTorch's F.linear of a vector: dx = W^T g, dW = g x^T, dbias = g.
  const input = tensor(v, { requiresGrad: true });
  const [w2, b2] = [tensor(vw, { shape: [9, 33], requiresGrad: true }), tensor(vb, { requiresGrad: true })];
  const out = linear(input, w2, b2);
  const g = randomValues(9, 6);
  out.backward(tensor(g));
  const gx = Array.from({ length: 33 }, (_, i) => g.reduce((s, gj, j) => s + gj * vw[j * 33 + i], 0));
  const gw = Array.from({ length: 9 * 33 }, (_, k) => g[Math.floor(k / 33)] * v[k % 33]);
  assertClose(await input.grad!.data(), gx, { atol: 1e-5, rtol: 1e-5 }, "linear of a vector: dx");
  assertClose(await w2.grad!.data(), gw, { atol: 1e-6, rtol: 1e-5 }, "linear of a vector: dW");
  assertClose(await b2.grad!.data(), g, { atol: 0 }, "linear of a vector: dbias");
});

Deno.test("a 2-D weight that already has a gradient gets the next ones added in place", async () => {
  // Both weight layouts (Linear's [out, in] and [in, out]), a batch folded into rows, and the weight
  // used twice in one graph; the first backward creates .grad, the later ones add into it.
  for (const transposeB of [true, false]) {
    const x = [
      tensor(randomValues(2 * 5 * 12, 91), { shape: [2, 5, 12] }),
      tensor(randomValues(3 * 12, 92), {
        shape: [3, 12],
      }),
    ];
    const wShape = transposeB ? [7, 12] : [12, 7];
    const wValues = randomValues(84, 93);
    const w = tensor(wValues, { shape: wShape, requiresGrad: true });
    const expected = new Float64Array(84);
    for (let step = 0; step < 3; step++) {
      const ys = x.map((xi) => matmul(xi, w, { transposeB }));
      const upstreams = ys.map((y, k) => randomValues(y.size, 94 + 2 * step + k));
      const { dispatches } = traceDispatches(() =>
        ys.forEach((y, k) => y.backward(tensor(upstreams[k], { shape: y.shape })))
      );
      const kernels = dispatches.map((d) => d.kernel);
      if (step > 0 && (kernels.length !== 2 || kernels.some((k) => !k.startsWith("matmul")))) {
        throw new Error(`transposeB ${transposeB}, step ${step}: the backward ran ${kernels}`);
      }
      x.forEach((xi, k) => {
        const rows = xi.size / 12, A = array64([rows, 12], randomValues(xi.size, 91 + k));
        const grads = ref.matmulBackward(A, array64(wShape, wValues), array64([rows, 7], upstreams[k]), {
          transposeB,
        });
        grads.b.data.forEach((v, i) => expected[i] += v);
      });
    }
    const label = `transposeB ${transposeB}: weight gradient over three backward passes`;
    assertClose(await w.grad!.data(), expected, { atol: 1e-5, rtol: 1e-5 }, label);
  }
});

Deno.test("the staged GPU tile configurations are correct on small odd and aligned shapes", async () => {
  await withKernels(
    "matmul:tiled128",
    () => check({ a: [2, 129, 9], b: [7, 9], transposeB: true, bias: true, forwardOnly: true }, 1),
  );
  // Each slice layout ([i][k / 4] and [k][i / 4]) with scalar and with vec4 loads.
  await withKernels("matmul:tiled32", async () => {
    await check({ a: [17, 33], b: [17, 31], transposeA: true, forwardOnly: true }, 5);
    await check({ a: [36, 20], b: [20, 28], bias: true, forwardOnly: true }, 9);
    const both = { transposeA: true, transposeB: true, forwardOnly: true };
    await check({ a: [20, 36], b: [28, 20], ...both }, 13);
    // A bias's gradient summed by the weight's product, over 2 x 2 tiles of it, for both weight layouts.
    await check({ a: [2, 19, 40], b: [37, 40], transposeB: true, bias: true }, 17);
    await check({ a: [2, 19, 40], b: [40, 37], bias: true }, 21);
  });
});

Deno.test("the texel variant (software adapters) matches at every shape class and transpose", async () => {
  await withKernels("matmul:texel", async () => {
    let seed = 3000;
    // Its tile is 16 x 64 per workgroup and 8 x 16 per invocation; the contiguous dimension of each
    // operand must be a multiple of 4, and K may be odd only for a^T b (its partial last quad).
    const cases: [number, number, number, boolean, boolean][] = [
      [1, 4, 4, false, false],
      [7, 60, 12, false, false],
      [17, 68, 8, false, false],
      [33, 132, 20, false, false],
      [8, 12, 1, true, false],
      [16, 64, 7, true, false],
      [20, 68, 33, true, false],
      [9, 5, 12, false, true],
      [15, 65, 8, false, true],
      [4, 17, 16, true, true],
      [36, 63, 4, true, true],
    ];
    for (const [M, N, K, transposeA, transposeB] of cases) {
      const a = transposeA ? [K, M] : [M, K], b = transposeB ? [N, K] : [K, N];
      const { dispatches } = traceDispatches(() =>
        matmul(tensor(new Float32Array(M * K), { shape: a }), tensor(new Float32Array(K * N), { shape: b }), {
          transposeA,
          transposeB,
        })
      );
      if (dispatches[0].kernel !== "matmul_texel") {
        throw new Error(`[${M}, ${N}, ${K}] ran ${dispatches[0].kernel}`);
      }
      await check({ a, b, transposeA, transposeB, bias: true }, seed += 4);
    }
    await check({ a: [1, 12, 8], b: [8, 20], bias: true }, seed += 4);
    await check({ a: [3, 9, 8], b: [3, 8, 12], forwardOnly: true }, seed += 4);
    await check({ a: [2, 1, 8, 12], b: [1, 3, 12, 16], forwardOnly: true }, seed += 4);
    // Rows that are not whole texels run the direct kernel instead.
    const odd = traceDispatches(() =>
      matmul(tensor(new Float32Array(15), { shape: [3, 5] }), tensor(new Float32Array(20), { shape: [5, 4] }))
    );
    if (odd.dispatches[0].kernel !== "matmul_direct") {
      throw new Error(`[3, 5] x [5, 4] ran ${odd.dispatches[0].kernel}`);
    }
  });
});

Deno.test("the same inputs give bit-identical outputs and gradients", async () => {
  const first = await check({ a: [3, 33, 65], b: [65, 17], bias: true }, 7);
  const second = await check({ a: [3, 33, 65], b: [65, 17], bias: true }, 7);
  first.forEach((v, i) => assertBitwiseEqual(v, second[i], `run ${i}`));
});

Deno.test("problems beyond the device's workgroup and binding limits are split into chunks", async () => {
  // 70000 batches exceed 65535 workgroups in z.
  await check({ a: [70000, 1, 2], b: [70000, 2, 1], forwardOnly: true }, 11);
  // A weight just over the storage binding limit is bound in windows.
  const K = 1024, N = Math.floor(gpu().profile.maxStorageBindingBytes / 4 / K) + 32;
  const w = new Float32Array(N * K).map((_, i) => ((i * 7919) % 1001) / 1000 - 0.5);
  const x = randomValues(3 * K, 12);
  const y = await linear(tensor(x, { shape: [3, K] }), tensor(w, { shape: [N, K] })).data();
  for (const n of [0, 1, N >> 1, N - 1]) {
    for (let m = 0; m < 3; m++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      assertClose([y[m * N + n]], [s], { atol: 1e-3 }, `windowed weight, row ${m} column ${n}`);
    }
  }
});

Deno.test("an inner dimension beyond one binding is split, each later chunk accumulating onto the output, bit for bit", async () => {
  // At a 64 KiB limit each large operand (K = 1000 rows of 64) is bound 256 rows at a time; the
  // products whose K runs along memory ([1, K] x [K]^T) split at 1 KiB. Every accumulator still
  // adds its products in ascending k, so outputs and gradients equal the one-dispatch ones.
  const cases: [Case, number][] = [
    [{ a: [4, 1000], b: [1000, 64], bias: true }, 65536],
    [{ a: [1000, 4], b: [1000, 64], transposeA: true, bias: true }, 65536],
    [{ a: [1000, 64], b: [4, 1000], transposeA: true, transposeB: true }, 65536],
    [{ a: [1, 1000], b: [1, 1000], transposeB: true, bias: true }, 1024],
    // The weight's gradient (K = 1000 rows of dY) is split too, and with it the bias's sums.
    [{ a: [1000, 4], b: [64, 4], transposeB: true, bias: true }, 65536],
  ];
  // Texel (software adapters) in every layout with its backward; the others' kernels compile slowly
  // here, so each runs two layouts forward, and the split weight gradient (with its bias's sums).
  const runs = { texel: [0, 1, 2, 3, 4], texel_narrow: [0, 3], direct: [0, 2, 4], tiled32: [1, 3, 4] };
  for (const [variant, chosen] of Object.entries(runs)) {
    await withKernels(`matmul:${variant}`, async () => {
      for (const [c, limit] of chosen.map((i) => cases[i])) {
        const forwardOnly = !variant.startsWith("texel") && c !== cases[4][0];
        const whole = await check({ ...c, forwardOnly }, 40);
        const split = await withProfile({ maxStorageBindingBytes: limit }, () => {
          const { dispatches } = traceDispatches(() =>
            matmul(
              tensor(new Float32Array(size(c.a)), { shape: c.a }),
              tensor(new Float32Array(size(c.b)), { shape: c.b }),
              { transposeA: c.transposeA, transposeB: c.transposeB },
            )
          );
          if (dispatches.length < 2) throw new Error(`${variant} [${c.a}] x [${c.b}]: not split`);
          return check({ ...c, forwardOnly }, 40);
        });
        whole.forEach((v, i) =>
          assertBitwiseEqual(split[i], v, `${variant} [${c.a}] x [${c.b}] output ${i}`)
        );
      }
    });
  }
});

Deno.test("packed views at unaligned offsets are read from the aligned offset below them", async () => {
  const values = randomValues(4096, 21);
  const storage = tensor(values);
  const view = (offset: number, shape: number[]) => {
    storage.storage.refs++;
    return new Tensor(shape, "float32", storage.storage, storage.byteOffset + offset * 4);
  };
  // 7 floats in: no vec4 reads; 68 floats in: 16-byte aligned, so vec4 reads of a buffer bound below it.
  for (const [offsetA, offsetB, N] of [[7, 1001, 21], [68, 2052, 20]]) {
    const a = view(offsetA, [12, 16]), b = view(offsetB, [16, N]), bias = view(3001, [N]);
    const expected = ref.matmul(
      array64([12, 16], values.subarray(offsetA, offsetA + 192)),
      array64([16, N], values.subarray(offsetB, offsetB + 16 * N)),
      { bias: array64([N], values.subarray(3001, 3001 + N)) },
    );
    assertClose(
      await matmul(a, b, { bias }).data(),
      expected.data,
      tolerance(expected, 16),
      `views at ${offsetA}, ${offsetB}`,
    );
  }
});

Deno.test("errors name the op and the shapes", () => {
  const t = (shape: number[]) => tensor(new Float32Array(size(shape)), { shape });
  const expectError = (f: () => unknown, message: string) => {
    let got = "";
    try {
      f();
    } catch (e) {
      got = (e as Error).message;
    }
    if (got !== message) throw new Error(`expected "${message}", got "${got}"`);
  };
  expectError(() => matmul(t([2, 3]), t([4, 5])), "matmul: inner dimensions differ, [2, 3] x [4, 5]");
  expectError(
    () => matmul(t([2, 3]), t([4, 5]), { transposeB: true }),
    "matmul: inner dimensions differ, [2, 3] x [4, 5] (transposeB)",
  );
  expectError(
    () => matmul(t([2, 3]), t([3, 5]), { bias: t([4]) }),
    "matmul: bias tensor float32[4] does not match the 5 output columns of [2, 3] x [3, 5]",
  );
  expectError(
    () => matmul(t([2, 2, 3]), t([3, 3, 5])),
    "matmul: batch dimensions do not broadcast, [2, 2, 3] x [3, 3, 5]",
  );
  expectError(() => matmul(t([]), t([3, 5])), "matmul: both operands need rank >= 1, [] x [3, 5]");
  expectError(
    () => matmul(t([3]), t([5, 3]), { transposeA: true }),
    "matmul: a transpose needs a matrix, not a vector, [3] x [5, 3]",
  );
  expectError(
    () => matmul(t([2, 3]), t([3]), { bias: t([2]) }),
    "matmul: a bias needs output columns, which a vector b has not, [2, 3] x [3]",
  );
  // A refused vector product names the caller's shapes and leaves nothing in use.
  const inUse = poolStats().inUseBytes;
  const [vector, matrix] = [t([4]), t([3, 5])];
  expectError(() => matmul(vector, matrix), "matmul: inner dimensions differ, [4] x [3, 5]");
  vector.dispose();
  matrix.dispose();
  if (poolStats().inUseBytes !== inUse) throw new Error("a refused vector product kept its operands");
  expectError(() => matmul(t([2, 4]), t([3])), "matmul: inner dimensions differ, [2, 4] x [3]");
  expectError(
    () => matmul(t([4]), t([4, 3]), { bias: t([5]) }),
    "matmul: bias tensor float32[5] does not match the 3 output columns of [4] x [4, 3]",
  );
  expectError(() => linear(t([2, 3]), t([4, 5])), "linear: input [2, 3] does not match weight [4, 5]");
  expectError(
    () => linear(t([2, 5]), t([4, 5]), t([5])),
    "linear: bias tensor float32[5] does not match weight [4, 5]; expected [4]",
  );
});

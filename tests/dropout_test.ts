import { tensor } from "../engine/tensor.ts";
import { manualSeed, nextKernelSeed } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { dropout } from "../kernels/dropout.ts";
import { dropoutBackward, dropoutForward, dropoutMask } from "../kernels/reference/dropout.ts";
import { assertBitwiseEqual, assertClose, expectError, randomValues, setup, withProfile } from "./helpers.ts";

await setup();

/** The seed the next dropout will draw after `manualSeed(base)`. */
function seedAfter(base: number): number {
  manualSeed(base);
  const seed = nextKernelSeed();
  manualSeed(base);
  return seed;
}

Deno.test("dropout matches the reference mask and values, forward and backward, at every size", async () => {
  for (const size of [1, 7, 33, 129, 255, 256, 257, 1000]) {
    for (const p of [0.1, 0.5, 0.9]) {
      const values = randomValues(size, size);
      const upstream = randomValues(size, size + 1);
      const seed = seedAfter(size * 10 + p * 10);
      const x = tensor(values, { shape: [size], requiresGrad: true });
      const y = dropout(x, p);
      y.backward(tensor(upstream));
      const label = `size ${size}, p ${p}`;
      const out = await y.data();
      const mask = dropoutMask(size, p, seed);
      for (let i = 0; i < size; i++) {
        if ((out[i] !== 0) !== (mask[i] === 1)) throw new Error(`${label}: mask differs at ${i}`);
      }
      assertClose(out, dropoutForward(values, p, seed), { atol: 0, rtol: 1e-6 }, `${label} forward`);
      assertClose(
        await x.grad!.data(),
        dropoutBackward(upstream, p, seed),
        { atol: 0, rtol: 1e-6 },
        `${label} backward`,
      );
    }
  }
});

Deno.test("dropout keeps a fraction 1 - p of 100k elements, within 5 standard deviations", async () => {
  const size = 100_000;
  const x = tensor(new Float32Array(size).fill(1), { shape: [100, 1000] });
  for (const p of [0.1, 0.3, 0.5]) {
    const out = Array.from(await dropout(x, p).data());
    const kept = out.filter((v) => v !== 0).length / size;
    const std = Math.sqrt(p * (1 - p) / size);
    if (Math.abs(kept - (1 - p)) > 5 * std) throw new Error(`p ${p}: kept fraction ${kept}`);
    const scale = Math.fround(1 / (1 - p));
    if (!out.every((v) => v === 0 || v === scale)) throw new Error(`p ${p}: kept values are not 1 / (1 - p)`);
  }
});

Deno.test("manualSeed reproduces masks bit for bit; successive calls draw different masks", async () => {
  const values = randomValues(4096, 3);
  const run = async () => {
    const x = tensor(values, { shape: [64, 64], requiresGrad: true });
    const y = dropout(x, 0.4);
    y.backward(tensor(values, { shape: [64, 64] }));
    return [await y.data(), await x.grad!.data()];
  };
  manualSeed(1234);
  const [first, firstGrad] = await run();
  manualSeed(1234);
  const [second, secondGrad] = await run();
  const [third] = await run();
  assertBitwiseEqual(first, second, "forward after the same manualSeed");
  assertBitwiseEqual(firstGrad, secondGrad, "backward after the same manualSeed");
  if (first.every((v, i) => Object.is(v, third[i]))) throw new Error("two dropout calls drew the same mask");
});

Deno.test("dropout is the identity when p is 0 or training is false", () => {
  const x = tensor([1, 2, 3], { requiresGrad: true });
  if (dropout(x, 0) !== x) throw new Error("p = 0 did not return x");
  if (dropout(x, 0.5, { training: false }) !== x) throw new Error("training false did not return x");
});

Deno.test("a dropped NaN or infinity stays one, and p = 1 gives zeros, as in PyTorch, in both variants", async () => {
  for (const variant of ["scalar", "texel"]) {
    await withKernels(`dropout:${variant}`, async () => {
      const x = tensor(new Float32Array(8192).fill(NaN), { requiresGrad: true });
      const y = dropout(x, 0.5);
      y.backward(tensor(new Float32Array(8192).fill(Infinity)));
      const [out, grad] = [await y.data(), await x.grad!.data()];
      if (!out.every(Number.isNaN) || !grad.every((v) => Number.isNaN(v) || v === Infinity)) {
        throw new Error(`${variant}: a dropped NaN became a number`);
      }
      const zeros = await dropout(tensor(new Float32Array(8192).fill(3)), 1).data();
      if (!zeros.every((v) => v === 0)) throw new Error(`${variant}: p = 1 kept values`);
    });
  }
});

Deno.test("dropout rejects p outside [0, 1] and int32 tensors with clear errors", () => {
  const x = tensor([1, 2, 3]);
  expectError(() => dropout(x, 1.5), "dropout: p must be in [0, 1], got 1.5 for tensor float32[3]");
  expectError(() => dropout(x, -0.1), "dropout: p must be in [0, 1], got -0.1 for tensor float32[3]");
  expectError(() => dropout(x, NaN), "dropout: p must be in [0, 1], got NaN for tensor float32[3]");
  expectError(
    () => dropout(tensor(new Int32Array(3)), 0.5),
    "dropout: tensor int32[3] is not float32",
  );
});

Deno.test("a tensor above maxStorageBindingBytes is masked in chunks with the same global mask", async () => {
  // A forced 64 KiB binding: 17 384 floats in two chunks, through both variants.
  for (const variant of ["scalar", "texel"]) {
    await withKernels(`dropout:${variant}`, () =>
      withProfile({ maxStorageBindingBytes: 65536 }, async () => {
        const size = 65536 / 4 + 1000;
        const x = tensor(new Float32Array(size).fill(1));
        const seed = seedAfter(99);
        const { result: y, dispatches } = traceDispatches(() => dropout(x, 0.5));
        if (dispatches.length !== 2) {
          throw new Error(`${variant}: ${dispatches.length} dispatches, expected 2`);
        }
        const out = await y.data();
        const mask = dropoutMask(size, 0.5, seed);
        for (let i = 0; i < size; i++) {
          if ((out[i] === 2) !== (mask[i] === 1)) {
            throw new Error(`${variant}: element ${i} of ${size} differs`);
          }
        }
        x.dispose();
        y.dispose();
      }));
  }
});

Deno.test("the texel and scalar variants write the same values", async () => {
  const x = tensor(randomValues(4 * 300, 3), { shape: [300, 4], requiresGrad: true });
  const run = async () => {
    manualSeed(21);
    const y = dropout(x, 0.3);
    y.backward(tensor(randomValues(y.size, 4), { shape: y.shape }));
    const values = [await y.data(), await x.grad!.data()];
    const kernels = traceDispatches(() => dropout(x, 0.3)).dispatches.map((d) => d.kernel);
    y.dispose();
    x.grad!.dispose();
    x.grad = null;
    return { values, kernels };
  };
  const texel = await withKernels("dropout:texel", run);
  const scalar = await withKernels("dropout:scalar", run);
  if (!texel.kernels.includes("dropout_texel") || scalar.kernels.includes("dropout_texel")) {
    throw new Error(`kernels: texel ${texel.kernels}, scalar ${scalar.kernels}`);
  }
  texel.values.forEach((v, k) => assertBitwiseEqual(v, scalar.values[k], `output ${k}`));
  x.dispose();
});

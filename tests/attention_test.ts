import { manualSeed, nextKernelSeed } from "../engine/random.ts";
import { readAll, tensor } from "../engine/tensor.ts";
import {
  attention,
  attentionBlockSizes,
  type AttentionOptions,
  fusedQkvAttention,
} from "../kernels/attention.ts";
import { withKernels } from "../engine/variants.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionReferenceOptions,
  type AttentionShape,
} from "../kernels/reference/attention.ts";
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

/** A test problem: sizes and options; `masked` pads some keys of every batch ("all": every key of batch 0). */
interface Case extends AttentionShape {
  causal?: boolean;
  masked?: boolean | "all";
  dropout?: number;
  /** The scale option; undefined leaves the default 1/sqrt(D). */
  scale?: number;
}

const sizeOf = (...dims: number[]) => dims.reduce((p, d) => p * d, 1);

/** 0/1 key mask [B, Tk]: about a quarter padding, or all of batch 0 with "all". */
function keyMaskValues(c: Case, seed: number): Float32Array {
  const r = randomValues(c.batch * c.keys, seed);
  return r.map((x, i) => (c.masked === "all" && i < c.keys ? 0 : x > 0.67 ? 0 : 1));
}

/** Random inputs of a case, with the upstream gradient. */
function inputs(c: Case, seed: number) {
  const { batch: b, heads: h, queries: tq, keys: tk, dim: d } = c;
  return {
    q: randomValues(sizeOf(b, h, tq, d), seed),
    k: randomValues(sizeOf(b, h, tk, d), seed + 1),
    v: randomValues(sizeOf(b, h, tk, d), seed + 2),
    g: randomValues(sizeOf(b, h, tq, d), seed + 3),
    mask: c.masked ? keyMaskValues(c, seed + 4) : undefined,
  };
}

/** Runs attention forward and backward on the GPU; returns output, dq, dk, dv and the dropout seed it drew. */
async function runGpu(c: Case, x: ReturnType<typeof inputs>, seedBase = 7) {
  const shape = (t: number) => [c.batch, c.heads, t, c.dim];
  const q = tensor(x.q, { shape: shape(c.queries), requiresGrad: true });
  const k = tensor(x.k, { shape: shape(c.keys), requiresGrad: true });
  const v = tensor(x.v, { shape: shape(c.keys), requiresGrad: true });
  const keyMask = x.mask ? tensor(x.mask, { shape: [c.batch, c.keys] }) : undefined;
  manualSeed(seedBase);
  const seed = nextKernelSeed();
  manualSeed(seedBase);
  const out = attention(q, k, v, { causal: c.causal, keyMask, dropout: c.dropout, scale: c.scale });
  out.backward(tensor(x.g, { shape: out.shape }));
  const [o, dq, dk, dv] = await readAll([out, q.grad!, k.grad!, v.grad!]);
  for (const t of [q, k, v, out, keyMask]) t?.dispose();
  return { o, dq, dk, dv, seed };
}

/** Compares the GPU's output and gradients with the float64 reference, within 1e-5 of the largest value (or of 1). */
async function check(c: Case, seed: number): Promise<void> {
  const x = inputs(c, seed);
  const gpu = await runGpu(c, x);
  const options: AttentionReferenceOptions = {
    causal: c.causal,
    keyMask: x.mask,
    dropout: c.dropout,
    seed: gpu.seed,
    scale: c.scale,
  };
  const grads = attentionBackward(x.q, x.k, x.v, x.g, c, options);
  const expected = {
    o: attentionForward(x.q, x.k, x.v, c, options),
    dq: grads.dq,
    dk: grads.dk,
    dv: grads.dv,
  };
  for (const name of ["o", "dq", "dk", "dv"] as const) {
    const atol = 1e-5 * Math.max(maxAbs(expected[name]), 1);
    assertClose(gpu[name], expected[name], { atol }, `${JSON.stringify(c)} ${name}`);
  }
}

/** Sizes 1, 7, 33, 129 and just below, at and above every block size, for Tq = Tk. */
function sizesAround(dim: number): number[] {
  const blocks = attentionBlockSizes(dim).flatMap((s) => [s - 1, s, s + 1]);
  return [...new Set([1, 7, 33, 129, ...blocks])].filter((s) => s > 0).sort((a, b) => a - b);
}

/** Every size class and mask combination at head dimension `dim`. */
async function sweep(dim: number, seed: number): Promise<void> {
  for (const t of sizesAround(dim)) {
    const masks: Partial<Case>[] = [{}, { causal: true }, { masked: true }, { causal: true, masked: true }];
    for (const m of masks) {
      await check({ batch: t > 33 ? 1 : 2, heads: t > 33 ? 1 : 3, queries: t, keys: t, dim, ...m }, seed++);
    }
  }
  for (const [queries, keys] of [[1, 9], [7, 33], [33, 7], [20, 3]]) {
    await check({ batch: 2, heads: 2, queries, keys, dim, masked: true }, seed++);
    await check({ batch: 1, heads: 2, queries, keys, dim, causal: true }, seed++);
  }
  await check(
    { batch: 2, heads: 2, queries: 19, keys: 19, dim, masked: "all", causal: true, dropout: 0.25 },
    seed,
  );
}

Deno.test("reference backward agrees with central finite differences", () => {
  const c: Case = { batch: 2, heads: 2, queries: 3, keys: 4, dim: 3 };
  const x = inputs(c, 1);
  const cases: AttentionReferenceOptions[] = [
    {},
    { causal: true },
    { keyMask: Float64Array.of(1, 0, 1, 1, 0, 1, 1, 0), scale: 0.7 },
    { causal: true, dropout: 0.3, seed: 99 },
  ];
  for (const options of cases) {
    const grads = attentionBackward(x.q, x.k, x.v, x.g, c, options);
    const loss = (q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>) =>
      dot(attentionForward(q, k, v, c, options), x.g);
    const label = JSON.stringify(options);
    const q = Float64Array.from(x.q), k = Float64Array.from(x.k), v = Float64Array.from(x.v);
    const numeric = {
      dq: numericGradient((t) => loss(t, k, v), q),
      dk: numericGradient((t) => loss(q, t, v), k),
      dv: numericGradient((t) => loss(q, k, t), v),
    };
    for (const name of ["dq", "dk", "dv"] as const) {
      assertClose(grads[name], numeric[name], { atol: 1e-7, rtol: 1e-6 }, `${label} ${name}`);
    }
  }
});

Deno.test("attention matches the reference at every size class and mask combination (head dim 8)", async () => {
  await sweep(8, 100);
});

Deno.test("attention handles head dims 1, 3, 64 and 256", async () => {
  await check({ batch: 1, heads: 2, queries: 17, keys: 17, dim: 1, causal: true, masked: true }, 300);
  await check({ batch: 2, heads: 1, queries: 9, keys: 18, dim: 3, masked: true, dropout: 0.1 }, 310);
  await check({ batch: 1, heads: 2, queries: 33, keys: 33, dim: 64, causal: true, masked: true }, 320);
  await check({ batch: 1, heads: 1, queries: 5, keys: 9, dim: 256, masked: true }, 330);
});

Deno.test("the texel kernels (software adapters) match the reference at head dims 4, 16 and 32", async () => {
  await withKernels("attention:texel", async () => {
    let seed = 340;
    for (const dim of [4, 16, 32]) {
      const block = attentionBlockSizes(dim)[0];
      for (const t of [block - 1, block + 1]) {
        await check({ batch: 2, heads: 2, queries: t, keys: t, dim, causal: true, masked: true }, seed++);
      }
      await check({ batch: 1, heads: 3, queries: 9, keys: 21, dim, masked: true, dropout: 0.2 }, seed++);
    }
  });
});

Deno.test("the row kernels (the software fallback where D % 4 != 0) match the reference at head dim 8", async () => {
  await withKernels("attention:rows", () => sweep(8, 500));
});

Deno.test("the tiled kernels (the GPU path, with small tiles) match the reference too", async () => {
  await withKernels("attention:tiled_small", async () => {
    await sweep(8, 400);
    // D = 9 leaves some threads without a vec4 of D and pads the last vec4.
    await check({ batch: 2, heads: 2, queries: 17, keys: 10, dim: 9, masked: true, dropout: 0.2 }, 450);
    await check({ batch: 1, heads: 1, queries: 9, keys: 9, dim: 9, causal: true, masked: true }, 460);
  });
});

Deno.test("the scale option matches the reference at 0, a non-default value, a negative one and a large one", async () => {
  // Default 1/sqrt(8) = 0.354; 0 makes every visible key equally likely; -0.7 prefers the least similar key;
  // 6 makes the rows nearly one-hot (the online maximum matters). Every variant applies scale in its own code.
  const scales = [0, 0.3, -0.7, 6];
  const shapes: Case[] = [
    { batch: 2, heads: 2, queries: 7, keys: 7, dim: 8, causal: true, masked: true },
    { batch: 1, heads: 3, queries: 9, keys: 21, dim: 8, masked: true, dropout: 0.2 },
    { batch: 1, heads: 1, queries: 5, keys: 3, dim: 5 },
  ];
  let seed = 700;
  for (const variant of ["", "attention:rows", "attention:texel", "attention:tiled_small"]) {
    await withKernels(variant, async () => {
      for (const scale of scales) {
        for (const c of shapes) await check({ ...c, scale }, seed++);
      }
    });
  }
});

Deno.test("scale 0 averages the visible values; an explicit 1/sqrt(D) equals the default bit for bit", async () => {
  const c: Case = { batch: 1, heads: 2, queries: 4, keys: 6, dim: 4, causal: true };
  const x = inputs(c, 720);
  const { o } = await runGpu({ ...c, scale: 0 }, x);
  // Causal query i sees keys 0..i, each with probability 1 / (i + 1), independently of q and k.
  const expected = new Float64Array(o.length);
  for (let h = 0; h < c.heads; h++) {
    for (let i = 0; i < c.queries; i++) {
      for (let d = 0; d < c.dim; d++) {
        let total = 0;
        for (let j = 0; j <= i; j++) total += x.v[(h * c.keys + j) * c.dim + d];
        expected[(h * c.queries + i) * c.dim + d] = total / (i + 1);
      }
    }
  }
  assertClose(o, expected, { atol: 1e-6 }, "scale 0");
  const byDefault = await runGpu(c, x);
  const explicit = await runGpu({ ...c, scale: 1 / Math.sqrt(c.dim) }, x);
  for (const name of ["o", "dq", "dk", "dv"] as const) {
    assertBitwiseEqual(explicit[name], byDefault[name], `explicit scale ${name}`);
  }
});

Deno.test("rows whose keys are all masked output zeros and get zero gradients", async () => {
  // Batch 0 pads every key; in batch 1 key 0 is padding, so causal row 0 sees nothing.
  const c: Case = { batch: 2, heads: 2, queries: 6, keys: 6, dim: 4, causal: true };
  const x = inputs(c, 500);
  x.mask = Float32Array.from([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
  const gpu = await runGpu(c, x);
  // Index i of a [B, H, T, D] tensor lies in head b * H + h and row (i / D) % T.
  const silent = (i: number) =>
    Math.floor(i / (c.queries * c.dim)) < c.heads || Math.floor(i / c.dim) % c.queries === 0;
  gpu.o.forEach((value, i) => {
    if (silent(i) !== (value === 0)) throw new Error(`out[${i}] = ${value}`);
  });
  // Keys of batch 0 and key 0 of batch 1 are padding; no row of batch 0 and row 0 of batch 1 see a key.
  for (const [name, values] of [["dq", gpu.dq], ["dk", gpu.dk], ["dv", gpu.dv]] as const) {
    values.forEach((value, i) => {
      if (silent(i) && value !== 0) throw new Error(`${name}[${i}] = ${value}, expected 0`);
    });
  }
  await check({ ...c, masked: "all" }, 501);
});

Deno.test("fusedQkvAttention equals attention on the split tensors, bit for bit", async () => {
  // Head dim 5 runs the row kernels on a software adapter, 8 the texel ones (strided fused rows).
  for (const dim of [5, 8]) await fusedEqualsSplit(dim);
});

async function fusedEqualsSplit(dim: number): Promise<void> {
  const [batch, tokens, heads] = [2, 13, 3];
  const width = 3 * heads * dim;
  const qkvValues = randomValues(batch * tokens * width, 600);
  const upstream = randomValues(batch * tokens * heads * dim, 601);
  const keyMask = tensor(Float32Array.from({ length: batch * tokens }, (_, i) => (i % 5 === 2 ? 0 : 1)), {
    shape: [batch, tokens],
  });
  const options: AttentionOptions = { causal: true, keyMask, dropout: 0.2, scale: 0.3 };
  // Part p of `values` [B, T, parts * H * D] (heads along the last dim) as [B, H, T, D].
  const split = (values: ArrayLike<number>, parts: number, p: number) =>
    Float32Array.from({ length: batch * heads * tokens * dim }, (_, i) => {
      const [b, h, t, d] = [
        Math.floor(i / (heads * tokens * dim)),
        Math.floor(i / (tokens * dim)) % heads,
        Math.floor(i / dim) % tokens,
        i % dim,
      ];
      return values[((b * tokens + t) * parts + p) * heads * dim + h * dim + d];
    });

  const qkv = tensor(qkvValues, { shape: [batch, tokens, width], requiresGrad: true });
  manualSeed(3);
  const fused = fusedQkvAttention(qkv, heads, options);
  fused.backward(tensor(upstream, { shape: fused.shape }));

  const shape = [batch, heads, tokens, dim];
  const [q, k, v] = [0, 1, 2].map((p) => tensor(split(qkvValues, 3, p), { shape, requiresGrad: true }));
  manualSeed(3);
  const separate = attention(q, k, v, options);
  separate.backward(tensor(split(upstream, 1, 0), { shape }));

  const [fusedOut, dqkv, out, dq, dk, dv] = await readAll([
    fused,
    qkv.grad!,
    separate,
    q.grad!,
    k.grad!,
    v.grad!,
  ]);
  assertBitwiseEqual(split(fusedOut, 1, 0), out, "output");
  assertBitwiseEqual(split(dqkv, 3, 0), dq, "dq");
  assertBitwiseEqual(split(dqkv, 3, 1), dk, "dk");
  assertBitwiseEqual(split(dqkv, 3, 2), dv, "dv");
}

Deno.test("dropout: the reference rebuilds the mask, p = 0 equals no dropout, a seed repeats bit for bit", async () => {
  const c: Case = {
    batch: 2,
    heads: 2,
    queries: 21,
    keys: 21,
    dim: 8,
    causal: true,
    masked: true,
    dropout: 0.4,
  };
  await check(c, 700);
  const x = inputs(c, 701);
  const first = await runGpu(c, x, 11);
  const again = await runGpu(c, x, 11);
  const other = await runGpu(c, x, 12);
  for (const key of ["o", "dq", "dk", "dv"] as const) {
    assertBitwiseEqual(first[key], again[key], `same seed ${key}`);
  }
  if (maxAbs(first.o.map((value, i) => value - other.o[i])) === 0) {
    throw new Error("another seed gave the same output");
  }
  const none = await runGpu({ ...c, dropout: undefined }, x);
  const zero = await runGpu({ ...c, dropout: 0 }, x);
  for (const key of ["o", "dq", "dk", "dv"] as const) {
    assertBitwiseEqual(none[key], zero[key], `p = 0 ${key}`);
  }
});

Deno.test("the same inputs give bit-identical outputs and gradients", async () => {
  for (const kind of ["texel", "rows", "tiled_small"] as const) {
    await withKernels(`attention:${kind}`, async () => {
      const c: Case = { batch: 2, heads: 2, queries: 25, keys: 19, dim: 8, masked: true };
      const x = inputs(c, 800);
      const [first, second] = [await runGpu(c, x), await runGpu(c, x)];
      for (const key of ["o", "dq", "dk", "dv"] as const) {
        assertBitwiseEqual(first[key], second[key], `${kind} ${key}`);
      }
    });
  }
});

Deno.test("gradients are computed only for inputs that need them", async () => {
  const shape = [1, 2, 5, 4];
  const [qv, kv, vv, gv] = [900, 901, 902, 903].map((seed) => randomValues(40, seed));
  const q = tensor(qv, { shape }), k = tensor(kv, { shape }), v = tensor(vv, { shape, requiresGrad: true });
  attention(q, k, v).backward(tensor(gv, { shape }));
  if (q.grad || k.grad || !v.grad) throw new Error("only v should have a gradient");
  const expected = attentionBackward(qv, kv, vv, gv, { batch: 1, heads: 2, queries: 5, keys: 5, dim: 4 });
  assertClose(await v.grad.data(), expected.dv, { atol: 1e-5 }, "dv alone");
});

Deno.test("bad shapes and options throw errors naming the op and the shapes", () => {
  const t = (shape: number[]) => tensor(new Float32Array(sizeOf(...shape)), { shape });
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
    () => attention(t([2, 3, 4]), t([2, 3, 4]), t([2, 3, 4])),
    "attention: expected q [B, H, Tq, D] and k, v [B, H, Tk, D], got q [2, 3, 4], k [2, 3, 4], v [2, 3, 4]",
  );
  expectError(
    () => attention(t([2, 3, 4, 8]), t([2, 3, 5, 8]), t([2, 3, 6, 8])),
    "attention: k and v must be [2, 3, Tk, 8] like q, got q [2, 3, 4, 8], k [2, 3, 5, 8], v [2, 3, 6, 8]",
  );
  expectError(
    () => attention(t([2, 3, 4, 8]), t([2, 1, 5, 8]), t([2, 1, 5, 8])),
    "attention: k and v must be [2, 3, Tk, 8] like q, got q [2, 3, 4, 8], k [2, 1, 5, 8], v [2, 1, 5, 8]",
  );
  expectError(
    () => attention(t([1, 1, 2, 257]), t([1, 1, 2, 257]), t([1, 1, 2, 257])),
    "attention: head dimension 257 is outside 1..256 (q [1, 1, 2, 257], k [1, 1, 2, 257], v [1, 1, 2, 257])",
  );
  expectError(
    () => attention(t([2, 1, 4, 8]), t([2, 1, 5, 8]), t([2, 1, 5, 8]), { keyMask: t([2, 4]) }),
    "attention: keyMask [2, 4] must be [B, Tk] = [2, 5] (q [2, 1, 4, 8], k [2, 1, 5, 8], v [2, 1, 5, 8])",
  );
  expectError(
    () => attention(t([1, 1, 4, 8]), t([1, 1, 4, 8]), t([1, 1, 4, 8]), { dropout: 1 }),
    "attention: dropout 1 is outside [0, 1)",
  );
  for (const scale of [Infinity, NaN]) {
    expectError(
      () => attention(t([1, 1, 4, 8]), t([1, 1, 4, 8]), t([1, 1, 4, 8]), { scale }),
      `attention: scale ${scale} is not finite`,
    );
  }
  expectError(
    () => fusedQkvAttention(t([2, 5, 30]), 4),
    "fusedQkvAttention: qkv [2, 5, 30] does not split into q, k and v of 4 heads",
  );
  expectError(
    () => fusedQkvAttention(t([5, 30]), 2),
    "fusedQkvAttention: expected qkv [B, T, 3*H*D], got [5, 30]",
  );
});

import { gpu } from "../engine/device.ts";
import { Random } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { type Tensor, tensor } from "../engine/tensor.ts";
import { gatherRows } from "../kernels/embedding.ts";
import { gatherRowsBackward, gatherRowsForward } from "../kernels/reference/embedding.ts";
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

type Pattern = "repeats" | "single" | "distinct";

function makeIds(count: number, vocab: number, pattern: Pattern, seed: number): Int32Array {
  const random = new Random(seed);
  if (pattern === "single") return new Int32Array(count).fill(random.int(vocab));
  if (pattern === "repeats") return Int32Array.from({ length: count }, () => random.int(vocab));
  const order = Array.from({ length: vocab }, (_, i) => i);
  for (let i = vocab - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return Int32Array.from(order.slice(0, count));
}

async function checkGather(
  vocab: number,
  cols: number,
  idShape: number[],
  pattern: Pattern,
  seed: number,
  withBackward = true,
): Promise<void> {
  const count = idShape.reduce((p, d) => p * d, 1);
  const values = randomValues(vocab * cols, seed);
  const idValues = makeIds(count, vocab, pattern, seed + 1);
  const upstream = randomValues(count * cols, seed + 2);
  const table = tensor(values, { shape: [vocab, cols], requiresGrad: withBackward });
  const ids = tensor(idValues, { shape: idShape });
  const out = gatherRows(table, ids);
  const label = `V ${vocab}, C ${cols}, ids [${idShape}] ${pattern}`;
  if (out.shape.join() !== [...idShape, cols].join()) throw new Error(`${label}: shape [${out.shape}]`);
  assertClose(await out.data(), gatherRowsForward(values, cols, idValues), { atol: 0 }, `${label} forward`);
  if (withBackward) {
    out.backward(tensor(upstream, { shape: out.shape }));
    const expected = gatherRowsBackward(upstream, vocab, cols, idValues);
    const scale = Math.max(1, maxAbs(expected));
    assertClose(await table.grad!.data(), expected, { atol: 1e-6 * scale, rtol: 1e-6 }, `${label} grad`);
    table.grad!.dispose();
  }
  for (const t of [table, ids, out]) t.dispose();
}

Deno.test("reference backward agrees with finite differences", () => {
  const vocab = 5, cols = 3;
  const ids = [4, 0, 4, 2, 4];
  const table = f64(randomValues(vocab * cols, 1));
  const weights = f64(randomValues(ids.length * cols, 2));
  const numeric = numericGradient((t) => dot(gatherRowsForward(t, cols, ids), weights), table);
  assertClose(gatherRowsBackward(weights, vocab, cols, ids), numeric, { atol: 1e-8 }, "gather reference");
});

Deno.test("gatherRows matches the reference for every width class and id pattern", async () => {
  // Scalar and vec4 widths, below and above the 64- and 256-column blocks of backward, and 256-element tiles.
  const widths = [1, 7, 33, 63, 64, 65, 129, 255, 257, 4, 252, 256, 260, 1020, 1028];
  const counts = [1, 7, 33, 129, 257];
  let seed = 10;
  for (const [k, cols] of widths.entries()) {
    const count = counts[k % counts.length];
    for (const pattern of ["repeats", "single", "distinct"] as const) {
      const vocab = pattern === "distinct" ? count + 3 : [1, 7, 33, 129][k % 4];
      await checkGather(vocab, cols, [count], pattern, seed++);
    }
  }
});

Deno.test("the GPU backward (workgroups of 256 id-column pairs) matches the reference", async () => {
  await withKernels("gather_rows_backward:block256", async () => {
    let seed = 50;
    for (const cols of [255, 256, 257, 1020, 1024, 1028]) {
      await checkGather(33, cols, [129], "repeats", seed++);
    }
  });
});

Deno.test("a small binding limit splits table, output and output gradient into aligned row chunks", async () => {
  // With 16 KiB per binding, rows of 33 floats go 64 to a chunk: 5 table chunks x 4 output chunks.
  await withProfile({ maxStorageBindingBytes: 16384 }, async () => {
    const table = tensor(new Float32Array(300 * 33), { shape: [300, 33] });
    const dispatches = traceDispatches(() => gatherRows(table, tensor(makeIds(200, 300, "repeats", 1))))
      .dispatches.length;
    if (dispatches !== 20) throw new Error(`${dispatches} dispatches, expected 20 chunks`);
    await checkGather(300, 33, [200], "repeats", 59, false);
    let seed = 60;
    for (const pattern of ["repeats", "single", "distinct"] as const) {
      await checkGather(300, 33, [100], pattern, seed++);
      await checkGather(300, 32, [100], pattern, seed++);
    }
  });
  // An output gradient of 200 rows of 33 floats (26 KiB) is grouped and summed in runs of 64
  // positions, each adding onto the sums the earlier runs stored: bit for bit the one-run gradient.
  const ids = makeIds(200, 300, "repeats", 2);
  const upstream = randomValues(200 * 33, 61);
  const tableGrad = async () => {
    const table = tensor(new Float32Array(300 * 33), { shape: [300, 33], requiresGrad: true });
    gatherRows(table, tensor(ids)).backward(tensor(upstream, { shape: [200, 33] }));
    return await table.grad!.data();
  };
  const whole = await tableGrad();
  assertBitwiseEqual(
    await withProfile({ maxStorageBindingBytes: 16384 }, tableGrad),
    whole,
    "table gradient",
  );
});

Deno.test("gatherRows takes ids of any shape and batch 1", async () => {
  await checkGather(11, 5, [2, 3], "repeats", 100);
  await checkGather(11, 8, [1, 4], "distinct", 101);
  await checkGather(11, 8, [3, 1, 2], "repeats", 102);
  await checkGather(3, 6, [1], "single", 103);
});

Deno.test("gatherRows backward is bit-identical run to run with many repeats", async () => {
  const vocab = 9, cols = 129;
  const values = randomValues(vocab * cols, 7);
  const idValues = makeIds(2000, 5, "repeats", 8);
  const upstream = randomValues(2000 * cols, 9);
  const run = async () => {
    const table = tensor(values, { shape: [vocab, cols], requiresGrad: true });
    const out = gatherRows(table, tensor(idValues));
    out.backward(tensor(upstream, { shape: out.shape }));
    return [await out.data(), await table.grad!.data()];
  };
  const [out1, grad1] = await run();
  const [out2, grad2] = await run();
  assertBitwiseEqual(out1, out2, "forward twice");
  assertBitwiseEqual(grad1, grad2, "table gradient twice");
  const expected = gatherRowsBackward(upstream, vocab, cols, idValues);
  assertClose(grad1, expected, { atol: 1e-4, rtol: 1e-5 }, "many repeats");
});

Deno.test("gatherRows binds a table above maxStorageBindingBytes in row chunks", async () => {
  const cols = 1024;
  const fitting = Math.floor(gpu().profile.maxStorageBindingBytes / (cols * 4));
  const vocab = fitting + 100;
  const values = new Float32Array(vocab * cols);
  for (let i = 0; i < values.length; i++) values[i] = (i % 997) - 498;
  const idValues = Int32Array.of(0, fitting - 1, fitting, vocab - 1, fitting, 5, vocab - 1);
  const upstream = randomValues(idValues.length * cols, 3);
  const table = tensor(values, { shape: [vocab, cols], requiresGrad: true });
  const { result: out, dispatches } = traceDispatches(() => gatherRows(table, tensor(idValues)));
  if (dispatches.length !== 2) throw new Error(`${dispatches.length} forward dispatches, expected 2 chunks`);
  out.backward(tensor(upstream, { shape: out.shape }));
  assertClose(await out.data(), gatherRowsForward(values, cols, idValues), { atol: 0 }, "chunked forward");
  const grad = await table.grad!.data();
  const expected = gatherRowsBackward(upstream, vocab, cols, idValues);
  assertClose(grad, expected, { atol: 1e-6, rtol: 1e-6 }, "chunked gradient");
  for (const t of [table, out, table.grad!]) t.dispose();
});

Deno.test("a constant table gathers from device ids; ids no row owns read as NaN", async () => {
  const values = randomValues(12, 4);
  const table = tensor(values, { shape: [4, 3] });
  const ids = tensor(Int32Array.of(3, -2, 1, 4));
  ids.hostValues = undefined;
  const out = gatherRows(table, ids);
  if (out.requiresGrad) throw new Error("the output of a constant table requires a gradient");
  const got = await out.data();
  assertClose(got.slice(0, 3), values.slice(9, 12), { atol: 0 }, "id 3");
  assertClose(got.slice(6, 9), values.slice(3, 6), { atol: 0 }, "id 1");
  if (![...got.slice(3, 6), ...got.slice(9, 12)].every(Number.isNaN)) {
    throw new Error(`ids -2 and 4 should read as NaN: ${got}`);
  }
});

Deno.test("gatherRows errors name the op, the bad id and the table", () => {
  const table = tensor(new Float32Array(21), { shape: [7, 3], requiresGrad: true });
  expectError(
    () => gatherRows(table, tensor(Int32Array.of(1, 7))),
    "gatherRows: id 7 is outside [0, 7) for table [7, 3]",
  );
  expectError(
    () => gatherRows(table, tensor(Int32Array.of(-1))),
    "gatherRows: id -1 is outside [0, 7) for table [7, 3]",
  );
  const deviceIds: Tensor = tensor(Int32Array.of(1, 2));
  deviceIds.hostValues = undefined;
  expectError(
    () => gatherRows(table, deviceIds),
    "gatherRows: the table's gradient needs the ids' host values; create tensor int32[2] " +
      "from host values (tensor() or writeTensor())",
  );
  expectError(
    () => gatherRows(table, tensor([1, 2])),
    "gatherRows: ids must be int32, got tensor float32[2]",
  );
  expectError(
    () => gatherRows(tensor(new Float32Array(7)), tensor(Int32Array.of(1))),
    "gatherRows: table must be a float32 [V, C] tensor, got tensor float32[7]",
  );
});

Deno.test("the padding row receives no gradient, like nn.Embedding(padding_idx)", async () => {
  const vocab = 7, cols = 33;
  const idValues = Int32Array.of(1, 0, 3, 1, 1, 6, 1, 2);
  const values = randomValues(vocab * cols, 71);
  const upstream = randomValues(idValues.length * cols, 72);
  const table = tensor(values, { shape: [vocab, cols], requiresGrad: true });
  const out = gatherRows(table, tensor(idValues), { paddingIndex: 1 });
  assertClose(await out.data(), gatherRowsForward(values, cols, idValues), { atol: 0 }, "padding forward");
  out.backward(tensor(upstream, { shape: out.shape }));
  const expected = gatherRowsBackward(upstream, vocab, cols, idValues, 1);
  if (expected.slice(cols, 2 * cols).some((v) => v !== 0)) {
    throw new Error("reference padding row is not zero");
  }
  assertClose(await table.grad!.data(), expected, { atol: 1e-6, rtol: 1e-6 }, "padding gradient");
});

Deno.test("paddingIndex counts from the end when negative and must lie in [-V, V), as in nn.Embedding", async () => {
  const vocab = 4, cols = 3;
  const idValues = Int32Array.of(3, 0, 3, 1);
  const table = tensor(randomValues(vocab * cols, 91), { shape: [vocab, cols], requiresGrad: true });
  const out = gatherRows(table, tensor(idValues), { paddingIndex: -1 });
  out.backward(tensor(new Float32Array(idValues.length * cols).fill(1), { shape: out.shape }));
  const grad = await table.grad!.data();
  if (grad.slice(9, 12).some((v) => v !== 0) || grad[0] !== 1) throw new Error(`padding -1 = row 3: ${grad}`);
  for (const bad of [4, -5, 1.5]) {
    expectError(
      () => gatherRows(table, tensor(idValues), { paddingIndex: bad }),
      `gatherRows: paddingIndex ${bad} is not an integer in [-4, 4) for table [4, 3]`,
    );
  }
});

Deno.test("a table that already has a gradient gets the next one added in place, padding row untouched", async () => {
  const vocab = 9, cols = 36;
  const ids = [Int32Array.of(1, 0, 3, 1, 8), Int32Array.of(2, 1, 3, 3, 0, 5)];
  const table = tensor(randomValues(vocab * cols, 81), { shape: [vocab, cols], requiresGrad: true });
  const upstreams = ids.map((id, k) => randomValues(id.length * cols, 82 + k));
  const expected = new Float64Array(vocab * cols);
  for (const [k, id] of ids.entries()) {
    const out = gatherRows(table, tensor(id), { paddingIndex: 1 });
    const { dispatches } = traceDispatches(() => out.backward(tensor(upstreams[k], { shape: out.shape })));
    const kernels = dispatches.map((d) => d.kernel);
    // The second backward scatters into .grad itself: no fresh table, no accumulation.
    if (k === 1 && (kernels.length !== 1 || !kernels[0].startsWith("gather_rows_backward"))) {
      throw new Error(`second backward ran ${kernels}`);
    }
    gatherRowsBackward(upstreams[k], vocab, cols, id, 1).forEach((v, i) => expected[i] += v);
  }
  assertClose(await table.grad!.data(), expected, { atol: 1e-6, rtol: 1e-6 }, "summed table gradient");
});

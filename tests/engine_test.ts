import { copyInto, keep, noGrad, readAll, tensor, tidy, writeTensor, zeros } from "../engine/tensor.ts";
import { Arena } from "../engine/arena.ts";
import { poolStats, setMemoryBudget, trimPool } from "../engine/pool.ts";
import { copyBuffer, recorderStats, traceDispatches } from "../engine/recorder.ts";
import { add, exp, mul, scale, sub } from "../kernels/elementwise.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { assertBitwiseEqual, assertClose, expectError, setup } from "./helpers.ts";
import { withKernels } from "../engine/variants.ts";

await setup();

Deno.test("tensors round-trip values, shapes and dtypes", async () => {
  const a = tensor([[1, 2, 3], [4, 5, 6]]);
  if (a.shape.join() !== "2,3" || a.dtype !== "float32") throw new Error(`${a}`);
  assertClose(await a.data(), [1, 2, 3, 4, 5, 6], { atol: 0 }, "float32 values");
  const ids = tensor(Int32Array.of(3, -1, 7));
  if (ids.dtype !== "int32") throw new Error("Int32Array should make an int32 tensor");
  assertClose(await ids.data(), [3, -1, 7], { atol: 0 }, "int32 values");
  const [x, y] = await readAll([tensor([9]), zeros([2, 2])]);
  assertClose([...x, ...y], [9, 0, 0, 0, 0], { atol: 0 }, "readAll");
  const target = zeros([3]);
  writeTensor(target, Float32Array.of(1, 2, 3));
  assertClose(await target.data(), [1, 2, 3], { atol: 0 }, "writeTensor");
  expectError(() => tensor([1, 2, 3], { shape: [2, 2] }), "tensor: 3 values do not fill shape [2, 2]");
  // Ragged nested arrays are refused (as torch.tensor does), not read into a shape of their first entries.
  expectError(
    () => tensor([[1, 2], [3], [4, 5, 6]]),
    "tensor: nested arrays are not rectangular: expected 2 entries at [1], found 1 entries " +
      "(shape [3, 2] from the first entries)",
  );
  expectError(
    () => tensor([new Float32Array(2), new Float32Array(2)] as unknown as number[]),
    "tensor: nested arrays are not rectangular: expected a number at [0], found a Float32Array " +
      "(shape [2] from the first entries)",
  );
  expectError(
    () => tensor([[1, 2], [3, [4]]] as number[][]),
    "tensor: nested arrays are not rectangular: expected a number at [1, 1], found 1 entries " +
      "(shape [2, 2] from the first entries)",
  );
  expectError(
    () => tensor(["1", 2] as unknown as number[]),
    'tensor: nested arrays are not rectangular: expected a number at [0], found the string "1" ' +
      "(shape [2] from the first entries)",
  );
  // A nested shape (a PyTorch habit: torch.tensor(data).view((2, 2)) takes a tuple) is named as such.
  expectError(
    () => tensor([1, 2, 3, 4], { shape: [[2, 2]] as unknown as number[] }),
    "tensor: shape must be an array of integers >= 0, got [[2,2]]",
  );
  expectError(
    () => tensor(Int32Array.of(1, 2), { requiresGrad: true }),
    "tensor: an int32 tensor [2] cannot require a gradient (ids are not differentiable)",
  );
  expectError(
    () => zeros([2], { dtype: "int32", requiresGrad: true }),
    "zeros: an int32 tensor [2] cannot require a gradient (ids are not differentiable)",
  );
  // JavaScript callers get no type error for a plain array.
  expectError(
    () => writeTensor(target, [3, 4, 5] as unknown as Float32Array),
    "writeTensor: values must be a Float32Array or an Int32Array, got Array for tensor float32[3]",
  );
});

Deno.test("reshape is a view: no copy, no new buffer, gradient flows back in the original shape", async () => {
  const x = tensor([1, 2, 3, 4, 5, 6], { requiresGrad: true });
  const before = poolStats().inUseBytes;
  const { result: y, dispatches } = traceDispatches(() => x.reshape([2, -1]));
  if (dispatches.length !== 0 || poolStats().inUseBytes !== before) throw new Error("reshape copied");
  if (y.shape.join() !== "2,3") throw new Error(`shape ${y.shape}`);
  sum(mul(y, y)).backward();
  assertClose(await x.grad!.data(), [2, 4, 6, 8, 10, 12], { atol: 0 }, "gradient through reshape");
  expectError(() => x.reshape([4, 2]), "reshape: cannot view tensor float32[6] as [4, 2]");
});

Deno.test("a leaf's first gradient that is a view of a live tensor is copied, and nothing is left behind", async () => {
  // y's gradient reaches x as a view of the seed, which the caller still holds during backward.
  const inUse = poolStats().inUseBytes;
  const x = tensor([1, 2, 3, 4, 5, 6], { requiresGrad: true });
  const y = x.reshape([2, 3]);
  const seed = tensor([1, 2, 3, 4, 5, 6], { shape: [2, 3] });
  y.backward(seed);
  seed.dispose();
  assertClose(await x.grad!.data(), [1, 2, 3, 4, 5, 6], { atol: 0 }, "gradient");
  for (const t of [x.grad!, x, y]) t.dispose();
  if (poolStats().inUseBytes !== inUse) {
    throw new Error(`${poolStats().inUseBytes - inUse} bytes left in use`);
  }
});

Deno.test("gradients accumulate across backward calls and over shared subexpressions", async () => {
  const x = tensor([1, 2, 3], { requiresGrad: true, name: "x" });
  const y = mul(x, x); // x used twice in one op
  const z = add(y, x); // and again through another path
  sum(z).backward();
  assertClose(await x.grad!.data(), [3, 5, 7], { atol: 0 }, "d(x^2 + x)");
  sum(scale(x, 2)).backward();
  assertClose(await x.grad!.data(), [5, 7, 9], { atol: 0 }, "accumulated");
  const c = tensor([1, 1, 1]); // no requiresGrad: gets nothing
  sum(sub(x, c)).backward();
  if (c.grad) throw new Error("a constant received a gradient");
  expectError(
    () => z.backward(),
    "backward: tensor float32[3] is not a scalar; pass its gradient explicitly",
  );
  expectError(() => c.backward(), "backward: tensor float32[3] does not require a gradient");
  // As PyTorch: the gradient given must have the output's shape, not only its size.
  const square = mul(x, x).reshape([3, 1]);
  expectError(
    () => square.backward(tensor([1, 1, 1])),
    "backward: gradient tensor float32[3] does not match tensor float32[3, 1]",
  );
});

Deno.test("a graph goes through backward once, as in PyTorch, unless the first keeps it (retainGraph)", async () => {
  const x = tensor([1, 2, 3], { requiresGrad: true, name: "x" });
  const squares = mul(x, x);
  const loss = sum(squares);
  loss.backward();
  const again = () => {
    try {
      loss.backward();
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  const message = again();
  if (!message.startsWith("backward: the graph through ") || !message.includes("{ retainGraph: true }")) {
    throw new Error(message);
  }
  assertClose(await x.grad!.data(), [2, 4, 6], { atol: 0 }, "nothing added by the refused backward");
  // A new op on an intermediate of the consumed graph leads back through its consumed ops.
  if (
    !(() => {
      try {
        sum(scale(squares, 2)).backward();
      } catch {
        return true;
      }
      return false;
    })()
  ) throw new Error("a backward through a consumed op was not refused");
  const kept = sum(mul(x, x));
  kept.backward(undefined, { retainGraph: true });
  kept.backward();
  assertClose(await x.grad!.data(), [6, 12, 18], { atol: 0 }, "retained once, then consumed");
});

Deno.test("detach is PyTorch's: same storage, no gradient history, disposed on its own", async () => {
  const x = tensor([1, 2, 3], { requiresGrad: true });
  const y = mul(x, x);
  const d = y.detach();
  if (d.requiresGrad || d.node) throw new Error("a detached tensor is linked to the graph");
  if (d.storage !== y.storage) throw new Error("detach copied");
  writeTensor(y, Float32Array.of(7, 8, 9));
  assertClose(await d.data(), [7, 8, 9], { atol: 0 }, "a write through the original shows in the detached");
  sum(mul(d, x)).backward();
  assertClose(await x.grad!.data(), [7, 8, 9], { atol: 0 }, "no gradient flows through the detached factor");
  y.dispose();
  assertClose(await d.data(), [7, 8, 9], { atol: 0 }, "the detached tensor outlives the original");
  d.dispose();
});

Deno.test("copies within one buffer (arena neighbours, a tensor and its view) go through a staging buffer", async () => {
  const x = tensor([1, 2, 3, 4, 5, 6, 7, 8]);
  const y = exp(tensor([0])); // recorded work in the same command buffer must survive the copies
  copyBuffer(x.window(4, 4), x.window(0, 4));
  copyInto(x, x.detach()); // the same range: nothing to do
  const [values, e] = await readAll([x, y]);
  assertClose(values, [5, 6, 7, 8, 5, 6, 7, 8], { atol: 0 }, "copied within the buffer");
  assertClose(e, [1], { atol: 0 }, "other recorded work");
});

Deno.test("noGrad records no graph", () => {
  const x = tensor([1, 2], { requiresGrad: true });
  const y = noGrad(() => mul(x, x));
  if (y.requiresGrad || y.node) throw new Error("noGrad output is linked to the graph");
});

Deno.test("tidy disposes what it does not return; keep and returned tensors survive", async () => {
  const before = poolStats().inUseBytes;
  let inner = tensor([0]);
  const kept = tidy(() => {
    inner = tensor([1, 2, 3]);
    const k = keep(tensor([4]));
    const returned = add(inner, 1);
    return { returned, k };
  });
  if (!inner.isDisposed) throw new Error("tidy left an inner tensor alive");
  assertClose(await kept.returned.data(), [2, 3, 4], { atol: 0 }, "returned tensor");
  assertClose(await kept.k.data(), [4], { atol: 0 }, "kept tensor");
  kept.returned.dispose();
  kept.k.dispose();
  inner.dispose();
  if (poolStats().inUseBytes !== before + 256) throw new Error("buffers leaked"); // `inner` before tidy is alive
  expectError(() => inner.range(), "tensor float32[3] was used after dispose()");
  expectError(() => tidy(() => Promise.resolve(1)), "tidy() takes a synchronous function; await outside it");
});

Deno.test("a steady training loop creates no buffer after its first step and keeps the pool flat", async () => {
  const w = tensor(new Float32Array(300).fill(0.5), { requiresGrad: true, name: "w" });
  const x = tensor(Float32Array.from({ length: 300 }, (_, i) => Math.sin(i)));
  const target = tensor(Float32Array.from({ length: 300 }, (_, i) => 2 * Math.sin(i)));
  const step = () =>
    tidy(() => {
      w.grad?.dispose();
      w.grad = null;
      const error = sub(mul(w, x), target);
      const loss = mean(mul(error, error));
      loss.backward();
      copyInto(w, noGrad(() => sub(w, scale(w.grad!, 50))));
      return loss;
    });
  // Warm-up: the first step and the first readback create what the loop will reuse.
  const firstLoss = await step().item();
  const buffersAfterWarmUp = poolStats().buffersCreated;
  const pooledAfterWarmUp = poolStats().pooledBytes;
  const submitsBefore = recorderStats().submits;
  let lastLoss = NaN;
  for (let i = 0; i < 500; i++) {
    const loss = step();
    if (i === 499) lastLoss = await loss.item();
    loss.dispose();
  }
  const stats = poolStats();
  if (stats.buffersCreated !== buffersAfterWarmUp) {
    throw new Error(`${stats.buffersCreated - buffersAfterWarmUp} buffers created after the first step`);
  }
  if (stats.pooledBytes !== pooledAfterWarmUp) {
    throw new Error(`pool grew from ${pooledAfterWarmUp} to ${stats.pooledBytes}`);
  }
  // 500 steps were recorded without a submission of their own: only the final readback flushed.
  if (recorderStats().submits - submitsBefore > 2) throw new Error("steps submitted work on their own");
  if (!(lastLoss < firstLoss * 1e-3)) throw new Error(`loss went from ${firstLoss} to ${lastLoss}`);
});

Deno.test("a free buffer of up to twice a request's class serves it; under the budget free buffers go first", async () => {
  trimPool();
  zeros([1000]).dispose(); // a 4096-byte buffer, free
  let created = poolStats().buffersCreated;
  const shorter = zeros([700]); // 2816 bytes: served by the free 4096
  if (poolStats().buffersCreated !== created) throw new Error("a shorter tensor made a buffer of its own");
  const tiny = zeros([100]); // 512 bytes: 4096 is more than twice, and in use anyway
  if (poolStats().buffersCreated !== created + 1) {
    throw new Error("a tiny tensor took a buffer 8 times its size");
  }
  for (const t of [shorter, tiny]) t.dispose();
  trimPool();
  // A free 1 MiB buffer stands between a 2 MiB one and the budget: it is destroyed, and the tensor made.
  zeros([2 ** 18]).dispose();
  setMemoryBudget(poolStats().liveBytes + 1.5 * 2 ** 20);
  try {
    created = poolStats().buffersCreated;
    zeros([2 ** 19]).dispose();
    if (poolStats().buffersCreated !== created + 1 || poolStats().freeBuffers !== 1) {
      throw new Error(`${poolStats().freeBuffers} free buffers`);
    }
  } finally {
    setMemoryBudget(null);
  }
  // A copy within one buffer takes its staging buffer before the encoder (taking it may submit), and a
  // readback's buffer, like an arena's, makes room the same way.
  const arena = new Arena([[1024], [1024]], "test");
  const [a, b] = [arena.parameterTensor(0), arena.parameterTensor(1)];
  writeTensor(a, Float32Array.from({ length: 1024 }, (_, i) => i + 1));
  zeros([300000]).dispose();
  setMemoryBudget(poolStats().liveBytes + 2048);
  try {
    copyInto(b, a);
    const [copied] = await readAll([b]);
    if (copied[1023] !== 1024) throw new Error(`copied ${copied[1023]}`);
  } finally {
    setMemoryBudget(null);
  }
  arena.destroy();
});

Deno.test("reads in flight together reuse their readback buffers the next time", async () => {
  const values = [1, 2, 3].map((v) => tensor(Float32Array.of(v)));
  const readTogether = () => Promise.all(values.map((t) => readAll([t])));
  await readTogether();
  const created = poolStats().buffersCreated;
  const again = await readTogether();
  if (again.map(([v]) => v[0]).join() !== "1,2,3") throw new Error(`read ${again}`);
  if (poolStats().buffersCreated !== created) {
    throw new Error(`${poolStats().buffersCreated - created} readback buffers made again`);
  }
  for (const t of values) t.dispose();
});

Deno.test("MM_DEBUG=1 lists every dispatch with its kernel, workgroups and bytes", async () => {
  const script = `
    import { initGpu } from "${new URL("../engine/device.ts", import.meta.url)}";
    import { tensor } from "${new URL("../engine/tensor.ts", import.meta.url)}";
    import { gelu } from "${new URL("../kernels/elementwise.ts", import.meta.url)}";
    await initGpu();
    await gelu(tensor(new Float32Array(1000))).data();`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    // The scalar variant everywhere: the texel one (software adapters) binds a texture and a buffer.
    env: { MM_DEBUG: "1", MM_KERNELS: "elementwise:scalar" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(output.stderr).split("\n").filter((l) => l.startsWith("[mm]"));
  if (lines.length !== 1 || lines[0] !== "[mm] gelu_erf wg=(4,1,1) bytes=8000") {
    throw new Error(`MM_DEBUG printed ${JSON.stringify(lines)}`);
  }
});

Deno.test("without an adapter, a command stops with one line saying what to install", async () => {
  const script = `import { openGpuOrExit } from "${new URL("../engine/start.ts", import.meta.url)}";
    await openGpuOrExit();`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: { DENO_WEBGPU_BACKEND: "metal" }, // a backend Linux does not have: requestAdapter() returns null
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr).trim();
  if (output.code !== 1 || !stderr.startsWith("No WebGPU adapter is available.") || stderr.includes("\n")) {
    throw new Error(`exit ${output.code}: ${stderr}`);
  }
});

Deno.test("the texel and scalar gradient accumulations give bit-identical sums", async () => {
  // 1000 elements (whole texels) and 7 (scalar either way); the gradient reaches x twice and
  // accumulates over two backward calls.
  for (const size of [1000, 7]) {
    const run = async () => {
      const x = tensor(Float32Array.from({ length: size }, (_, i) => Math.sin(i) * 3), {
        requiresGrad: true,
      });
      const kernels: string[] = [];
      for (let k = 0; k < 2; k++) {
        const traced = traceDispatches(() => tidy(() => sum(mul(add(x, x), scale(x, 0.37))).backward()));
        kernels.push(...traced.dispatches.map((d) => d.kernel));
      }
      const values = await x.grad!.data();
      x.dispose();
      return { values, kernels };
    };
    const texel = await withKernels("accumulate:texel", run);
    const scalar = await withKernels("accumulate:scalar", run);
    if (
      texel.kernels.includes("accumulate_texel") !== (size % 4 === 0) ||
      scalar.kernels.includes("accumulate_texel")
    ) {
      throw new Error(`size ${size}: kernels texel ${texel.kernels}, scalar ${scalar.kernels}`);
    }
    assertBitwiseEqual(texel.values, scalar.values, `size ${size}`);
  }
});

Deno.test("tidy frees what its function made when it throws, and backward says when tidy took a saved tensor", () => {
  const before = poolStats().inUseBytes;
  for (let i = 0; i < 3; i++) {
    try {
      tidy(() => {
        const a = tensor(new Float32Array(1 << 14));
        mul(a, a);
        throw new Error("a bad batch");
      });
    } catch {
      // skipped, as a loop would
    }
  }
  if (poolStats().inUseBytes !== before) throw new Error(`${poolStats().inUseBytes - before} bytes kept`);
  const x = tensor([1, 2], { requiresGrad: true });
  const loss = tidy(() => sum(mul(exp(x), x)));
  expectError(
    () => loss.backward(),
    "backward of mul: tensor float32[2] was used after dispose(): a tensor it saved for backward was disposed " +
      "(tidy() disposes what its function does not return, so call backward() inside the tidy() that ran the " +
      "forward; an optimizer built or a model disposed after the forward frees the model's old tensors too)",
  );
  // null is "no gradient given", as PyTorch's None; a gradient must be a float32 tensor; options go second.
  sum(mul(x, x)).backward(null);
  const y = mul(x, x);
  expectError(
    () => y.backward(tensor(Int32Array.of(1, 10))),
    "backward: gradient tensor int32[2] is not float32",
  );
  expectError(
    () => y.backward({ retainGraph: true } as never),
    "backward: the gradient must be a Tensor (options go second: backward(undefined, { retainGraph: true }))",
  );
});

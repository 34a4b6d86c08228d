/**
 * What a PyTorch user writes by habit reaches the engine unchecked when nothing type-checks it
 * (`deno run`, the browser bundle): misspelt or PyTorch-named options, positional flags, arrays where
 * tensors go, rounded or wrapped ids, async no-grad blocks, replaced gradients. Each is refused with
 * an error naming the call and the fix, or (a gradient set to null) does what PyTorch does.
 */
import { attention } from "../kernels/attention.ts";
import { crossEntropy } from "../kernels/cross_entropy.ts";
import { dropout } from "../kernels/dropout.ts";
import { add, gelu, mul } from "../kernels/elementwise.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { softmax } from "../kernels/softmax.ts";
import { concat, permute } from "../kernels/layout.ts";
import { linear, matmul } from "../kernels/matmul.ts";
import { mean, sum } from "../kernels/reduce.ts";
import { poolStats } from "../engine/pool.ts";
import { full, keep, noGrad, readAll, type Tensor, tensor, tidy, zeros } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { expectError, setup } from "./helpers.ts";

await setup();

// deno-lint-ignore no-explicit-any -- the point is what plain JavaScript passes
type Loose = any;

Deno.test("options under PyTorch's names, or flags in their place, are refused naming the accepted ones", () => {
  const x = tensor([[1, 2], [3, 4]]);
  const q = zeros([1, 1, 2, 4]);
  const cases: [() => unknown, string][] = [
    [
      () => mean(x, 1, { keepdim: true } as Loose),
      'mean: unknown option "keepdim" (did you mean "keepDims"?); accepted: keepDims',
    ],
    [() => sum(x, 1, true as Loose), "sum: options must be an object ({ keepDims }), got true"],
    [
      () => tensor([1, 2], { requires_grad: true } as Loose),
      'tensor: unknown option "requires_grad" (did you mean "requiresGrad"?); accepted: dtype, shape, ' +
      "requiresGrad, name",
    ],
    [() => dropout(x, 0.5, false as Loose), "dropout: options must be an object ({ training }), got false"],
    [
      () => dropout(x, 0.5, { train: false } as Loose),
      'dropout: unknown option "train" (did you mean "training"?); accepted: training',
    ],
    [
      () => crossEntropy(x, tensor(Int32Array.of(0, 1)), { ignore_index: 0 } as Loose),
      'crossEntropy: unknown option "ignore_index" (did you mean "ignoreIndex"?); accepted: ignoreIndex, reduction',
    ],
    [
      () => attention(q, q, q, { is_causal: true } as Loose),
      'attention: unknown option "is_causal" (did you mean "causal"?); accepted: causal, keyMask, scale, dropout',
    ],
    [
      () => matmul(x, x, { transpose_b: true } as Loose),
      'matmul: unknown option "transpose_b" (did you mean "transposeB"?); accepted: transposeA, transposeB, bias',
    ],
    [
      () => matmul(x, x, { label_smoothing: 0.1 } as Loose),
      'matmul: unknown option "label_smoothing"; accepted: transposeA, transposeB, bias',
    ],
    [
      () => zeros([2], { shape: [3] } as Loose),
      'zeros: unknown option "shape"; accepted: dtype, requiresGrad, name',
    ],
    [
      () => tensor([1], { dtype: "float16" as Loose }),
      'tensor: dtype must be "float32" or "int32", got "float16"',
    ],
    [
      () => gelu(x, "none" as Loose),
      'gelu: form must be "erf" or "tanh", got "none" (PyTorch\'s approximate="none" is "erf")',
    ],
  ];
  for (const [fn, message] of cases) expectError(fn, message);
  for (const t of [x, q]) t.dispose();
});

Deno.test("arrays, strings and numbers where tensors or shapes go are named as such", () => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  const cases: [() => unknown, string][] = [
    [
      () => (x as Loose).reshape(3, 2),
      "reshape: the shape (x.reshape([2, 3])) must be one array of numbers, got number 3",
    ],
    [
      () => permute(x, 1 as Loose),
      "permute: the order (permute(x, [1, 0])) must be one array of numbers, got number 1",
    ],
    [() => concat(x as Loose, x as Loose), "concat: takes one array of tensors (concat([a, b], axis))"],
    [
      () => concat([x, [1, 2] as Loose]),
      "concat: tensors[1] must be a Tensor, got an array [1,2] (make one with tensor([...]))",
    ],
    [
      () => add(x, [1, 2, 3] as Loose),
      "add: operand b (a Tensor or a number) must be a Tensor, got an array [1,2,3] (make one with tensor([...]))",
    ],
    [
      () => mul(x, "2" as Loose),
      'mul: operand b (a Tensor or a number) must be a Tensor, got the string "2"',
    ],
    [() => matmul(x, 2 as Loose), "matmul: operand b must be a Tensor, got number 2"],
    [
      () => softmax([[1, 2], [3, 4]] as Loose),
      "softmax: x must be a Tensor, got an array [[1,2],[3,4]] (make one with tensor([...]))",
    ],
    [
      () => layerNorm(x, [1, 2, 3] as Loose, x),
      "layerNorm: gamma must be a Tensor, got an array [1,2,3] (make one with tensor([...]))",
    ],
    [
      () => linear([[1, 2]] as Loose, x),
      "linear: x must be a Tensor, got an array [[1,2]] (make one with tensor([...]))",
    ],
    [() => mean(x, "1" as Loose), 'mean: axis must be an integer, got "1"'],
    [
      () => x.reshape([-1, -1]),
      "reshape: cannot view tensor float32[2, 3] as [-1, -1]: only one dimension can be -1",
    ],
    [
      () => zeros([0, 3]).reshape([-1, 0]),
      "reshape: cannot view tensor float32[0, 3] as [-1, 0]: a -1 beside a 0 could be any length",
    ],
    [() => sum(x, [0, 1] as Loose), "sum: axis must be an integer, got [0,1] (one axis at a time)"],
    [
      () => crossEntropy(zeros([2, 3, 4]), zeros([2, 4], { dtype: "int32" })),
      "crossEntropy: targets tensor int32[2, 4] do not match logits [2, 3, 4]; expected int32[2, 3] (classes " +
      "go on the last axis: PyTorch's [N, C, L] logits are permuted to [N, L, C])",
    ],
    [
      () => tensor(x as Loose),
      "tensor: tensor float32[2, 3] is already a tensor (copyOf() copies it, detach() shares it without a gradient)",
    ],
  ];
  for (const [fn, message] of cases) expectError(fn, message);
  x.dispose();
});

Deno.test("int32 tensors take integers of int32's range only; other typed arrays are read as numbers", async () => {
  for (const [value, shown] of [[1.7, "1.7"], [3e10, "30000000000"], [NaN, "NaN"], [Infinity, "Infinity"]]) {
    expectError(
      () => tensor([0, value as number], { dtype: "int32" }),
      `tensor: value ${shown} at index 1 is not an int32 (an integer from -2^31 to 2^31 - 1)`,
    );
  }
  expectError(
    () => full([2], 1.5, { dtype: "int32" }),
    "full: value 1.5 is not an int32 (an integer from -2^31 to 2^31 - 1)",
  );
  expectError(
    () => tensor(Float64Array.of(2, -0.5), { dtype: "int32" }),
    "tensor: value -0.5 at index 1 is not an int32 (an integer from -2^31 to 2^31 - 1)",
  );
  const made = [
    tensor(Float64Array.of(1.5, -2.25)),
    tensor(Uint8Array.of(3, 250), { dtype: "int32" }),
    tensor([-(2 ** 31), 2 ** 31 - 1], { dtype: "int32" }),
  ];
  const values = (await readAll(made)).map((v) => Array.from(v).join());
  if (values.join(" ") !== "1.5,-2.25 3,250 -2147483648,2147483647") throw new Error(values.join(" "));
  if (made[0].dtype !== "float32" || made[1].dtype !== "int32") throw new Error("dtypes");
  for (const t of made) t.dispose();
});

Deno.test("noGrad refuses an async function, whose ops after an await would record gradients", async () => {
  const w = tensor([1, 2, 3], { requiresGrad: true });
  expectError(
    () =>
      noGrad(async () => {
        await Promise.resolve();
        tidy(() => mul(w, 2));
      }),
    "noGrad() takes a synchronous function: after its first await, ops would record gradients again " +
      "(wrap each synchronous part, or detach() the results)",
  );
  await new Promise((resolve) => setTimeout(resolve, 0));
  const inside = noGrad(() => mul(w, 2));
  if (inside.requiresGrad) throw new Error("noGrad recorded a gradient");
  for (const t of [w, inside]) t.dispose();
});

Deno.test("setting .grad to null frees it; a gradient of another shape or a parameter's is refused", () => {
  const w = tensor(new Float32Array(4096).fill(1), { requiresGrad: true, shape: [64, 64], name: "w" });
  const step = () => tidy(() => sum(mul(w, w)).backward());
  step();
  const held = poolStats().inUseBytes;
  for (let i = 0; i < 5; i++) {
    w.grad = null; // PyTorch's zero_grad(set_to_none=True): the old gradient is freed
    step();
  }
  if (poolStats().inUseBytes !== held) {
    throw new Error(`setting grad to null leaks: ${held} then ${poolStats().inUseBytes} bytes in use`);
  }
  const wrong: [Tensor, string][] = [
    [zeros([64]), "float32[64]"],
    [zeros([64, 64], { dtype: "int32" }), "int32[64, 64]"],
  ];
  for (const [grad, shape] of wrong) {
    expectError(
      () => (w.grad = grad),
      `tensor "w" float32[64, 64]: its grad must be null or a float32[64, 64] tensor, got tensor ${shape}`,
    );
    grad.dispose();
  }
  const model = new TransformerModel(
    modelConfig("gpt2", { vocabSize: 8, hiddenSize: 8, numHeads: 2, numLayers: 1, maxPositions: 4 }),
  );
  const parameter = model.parameters[0];
  expectError(
    () => (parameter.value.grad = null),
    `tensor "${parameter.info.name}" float32[${
      parameter.info.shape.join(", ")
    }]: its gradient lives in its ` +
      "model's arena, where the optimizer reads it, and cannot be replaced (the optimizer's zeroGrad() zeroes it)",
  );
  // A parameter's tensor taken before an optimizer adopts the model goes stale; its error says why.
  const taken = parameter.value;
  const optimizer = new MultiModelOptimizer({ models: { tiny: model } });
  expectError(
    () => add(taken, 1),
    `tensor "${parameter.info.name}" float32[${parameter.info.shape.join(", ")}] was used after dispose() ` +
      "(gpt2's parameters moved into the arena of the MultiModelOptimizer over [tiny]: read " +
      "model.parameters[i].value again)",
  );
  expectError(
    () => (taken as Loose).reshape([-1]),
    `tensor "${parameter.info.name}" float32[${parameter.info.shape.join(", ")}] was used after dispose() ` +
      "(gpt2's parameters moved into the arena of the MultiModelOptimizer over [tiny]: read " +
      "model.parameters[i].value again)",
  );
  expectError(
    () => optimizer.step({ close_cycle: true } as Loose),
    'MultiModelOptimizer.step: unknown option "close_cycle" (did you mean "closeCycle"?); accepted: closeCycle',
  );
  expectError(
    () => optimizer.step((() => 0) as Loose),
    "MultiModelOptimizer.step: takes no closure (PyTorch's step(closure)): compute the loss first",
  );
  optimizer.dispose();
  model.dispose();
  // A tensor owns its gradient: disposed with it (a leaf made and trained inside tidy() kept it before).
  const made = () =>
    tidy(() => {
      const x = zeros([1024], { requiresGrad: true });
      x.grad = full([1024], 1);
      sum(mul(x, x)).backward();
    });
  made();
  const inUse = poolStats().inUseBytes;
  for (let i = 0; i < 5; i++) made();
  if (poolStats().inUseBytes !== inUse) {
    throw new Error(`a disposed leaf's gradient leaks: ${inUse} then ${poolStats().inUseBytes}`);
  }
  // linear takes null for no bias, as PyTorch's bias=None.
  tidy(() => linear(w, zeros([3, 64]), null));
  // A gradient assigned inside tidy() belongs to its tensor, not to the scope.
  tidy(() => {
    w.grad = mul(w.grad!, 0.5);
  });
  if (w.grad!.isDisposed) throw new Error("a gradient assigned inside tidy() was disposed with the scope");
  w.grad = null;
  w.dispose();
});

Deno.test("requiresGrad changes on leaves only, and never on int32 tensors", () => {
  const x = tensor([1, 2], { requiresGrad: true });
  const y = tidy(() => mul(x, 2));
  expectError(
    () => (y.requiresGrad = false),
    "tensor float32[2]: requiresGrad can only be changed on a leaf tensor, not on the output of mul (detach() " +
      "gives the values without a gradient)",
  );
  const ids = tensor(Int32Array.of(1, 2));
  expectError(
    () => (ids.requiresGrad = true),
    "tensor int32[2]: an int32 tensor cannot require a gradient (ids are not differentiable)",
  );
  expectError(
    () => (x.requiresGrad = 1 as Loose),
    "tensor float32[2]: requiresGrad must be true or false, got 1",
  );
  x.requiresGrad = false;
  if (x.requiresGrad || !y.requiresGrad) throw new Error("a leaf's setting or the output's changed wrongly");
  for (const t of [x, y, ids]) t.dispose();
});

Deno.test("a backward after an optimizer adopted the model says the forward must come after", () => {
  const model = new TransformerModel(
    modelConfig("bert", { vocabSize: 8, hiddenSize: 8, numHeads: 2, numLayers: 1, maxPositions: 4 }),
    { task: "sequence-classification" },
  );
  tidy(() => {
    const loss = model.forward({
      inputIds: tensor(Int32Array.of(1, 2, 3), { shape: [1, 3] }),
      labels: tensor(Int32Array.of(1)),
    }).loss!;
    const optimizer = new MultiModelOptimizer({ models: { bert: model } });
    let message = "";
    try {
      loss.backward();
    } catch (error) {
      message = (error as Error).message;
    }
    const expected =
      /^backward of \w+: tensor "[^"]+" float32\[[\d, ]+\] was used after dispose\(\): a tensor it saved for backward was disposed after the forward: bert's parameters moved into the arena of the MultiModelOptimizer over \[bert\] \(run the forward after building the optimizer\)$/;
    if (!expected.test(message)) throw new Error(message);
    optimizer.dispose();
  });
  // A model disposed between its forward and backward: nothing to run again, so the advice differs.
  tidy(() => {
    const loss = model.forward({
      inputIds: tensor(Int32Array.of(1, 2, 3), { shape: [1, 3] }),
      labels: tensor(Int32Array.of(1)),
    }).loss!;
    model.dispose();
    let message = "";
    try {
      loss.backward();
    } catch (error) {
      message = (error as Error).message;
    }
    if (!message.endsWith("after the forward: bert was disposed (dispose a model after its last backward)")) {
      throw new Error(message);
    }
  });
});

Deno.test("a gradient returned from tidy() or kept is the caller's; another tensor's gradient cannot be borrowed", async () => {
  const returned = tidy(() => {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    sum(mul(x, x)).backward();
    return x.grad!;
  });
  const kept = tidy(() => {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    sum(mul(x, x)).backward();
    return keep(x.grad!);
  });
  const values = (await readAll([returned, kept])).map((v) => Array.from(v).join());
  if (values.join(" ") !== "2,4,6 2,4,6") throw new Error(values.join(" "));
  const a = tensor([1, 2], { requiresGrad: true }), b = tensor([3, 4], { requiresGrad: true });
  a.grad = full([2], 1);
  expectError(
    () => (b.grad = a.grad),
    "tensor float32[2]: tensor float32[2] is already the gradient of tensor float32[2] (copyOf() gives one " +
      "of its own)",
  );
  // A disposed tensor takes no gradient, and a backward reaching a disposed leaf drops its gradient.
  b.dispose();
  expectError(() => (b.grad = full([2], 1)), "tensor float32[2] was used after dispose()");
  const reached = () => {
    const loss = tidy(() => zeros([1024], { requiresGrad: true }).reshape([32, 32]));
    const seed = full([32, 32], 1);
    loss.backward(seed);
    seed.dispose();
    loss.dispose();
  };
  reached();
  const inUse = poolStats().inUseBytes;
  for (let i = 0; i < 5; i++) reached();
  if (poolStats().inUseBytes !== inUse) throw new Error(`a disposed leaf's late gradient leaks`);
  // Returned from an inner tidy, a taken gradient joins the enclosing scope like any returned tensor.
  const nested = () =>
    tidy(() => {
      const g = tidy(() => {
        const x = zeros([1024], { requiresGrad: true });
        sum(mul(x, x)).backward();
        return x.grad!;
      });
      sum(g);
    });
  nested();
  const held = poolStats().inUseBytes;
  for (let i = 0; i < 5; i++) nested();
  if (poolStats().inUseBytes !== held) throw new Error("a gradient returned from an inner tidy leaks");
  // Only a tensor's current gradient is taken: an older one, freed by `x.grad = null`, returned from the
  // tidy takes nothing (it had unlinked, and leaked, the tensor's new gradient).
  const older = () =>
    tidy(() => {
      const x = zeros([1024], { requiresGrad: true });
      sum(mul(x, x)).backward();
      const first = x.grad!;
      x.grad = null;
      sum(mul(x, x)).backward();
      return first;
    });
  older();
  const before = poolStats().inUseBytes;
  for (let i = 0; i < 5; i++) older();
  if (poolStats().inUseBytes !== before) throw new Error("returning a freed gradient leaks the current one");
  // keep() does not take a gradient from its tensor: a parameter's cannot be borrowed that way, nor
  // disposed by hand (the arena frees it).
  const model = new TransformerModel(
    modelConfig("bert", { vocabSize: 8, hiddenSize: 8, numHeads: 2, numLayers: 1, maxPositions: 4 }),
  );
  const parameter = model.parameters[0].value;
  const other = zeros(parameter.shape as number[]);
  let borrowed = "";
  try {
    other.grad = keep(parameter.grad!);
  } catch (error) {
    borrowed = (error as Error).message;
  }
  if (!borrowed.includes("is already the gradient of")) throw new Error(`borrowed: ${borrowed}`);
  expectError(
    () => parameter.grad!.dispose(),
    `tensor "${model.parameters[0].info.name}.grad" float32[${
      parameter.shape.join(", ")
    }] is a parameter's ` +
      "gradient, a view of its model's arena, which frees it (the optimizer's zeroGrad() zeroes it)",
  );
  other.dispose();
  model.dispose();
  // A gradient disposed by hand is replaced by the next backward, through a sink (matmul's weight) too;
  // a disposed leaf reached by a backward is skipped without an error.
  const weight = zeros([4, 4], { requiresGrad: true });
  const input = full([2, 4], 1);
  tidy(() => sum(matmul(input, weight)).backward());
  weight.grad!.dispose();
  tidy(() => sum(matmul(input, weight)).backward());
  const [grad] = await readAll([weight.grad!]);
  if (Array.from(grad).join() !== new Array(16).fill(2).join()) throw new Error(`replaced gradient: ${grad}`);
  const out = matmul(input, weight);
  weight.dispose();
  tidy(() => sum(out).backward());
  for (const t of [returned, kept, a, input, out]) t.dispose();
});

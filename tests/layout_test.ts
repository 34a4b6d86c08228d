import { tensor } from "../engine/tensor.ts";
import { concat, narrow, permute, transpose } from "../kernels/layout.ts";
import { array64 } from "../kernels/reference/array.ts";
import * as ref from "../kernels/reference/layout.ts";
import { assertClose, randomValues, setup } from "./helpers.ts";

await setup();

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

Deno.test("permute and transpose match the reference, with the inverse permutation as gradient", async () => {
  const cases: [number[], number[]][] = [
    [[7], [0]],
    [[33, 7], [1, 0]],
    [[2, 3, 5], [2, 0, 1]],
    [[1, 129, 3], [1, 2, 0]],
    [[2, 12, 4, 8], [0, 2, 1, 3]],
    [[2, 1, 3, 4, 5], [4, 3, 2, 1, 0]],
  ];
  let seed = 1;
  for (const [shape, order] of cases) {
    const values = randomValues(size(shape), seed++);
    const x = tensor(values, { shape, requiresGrad: true });
    const y = permute(x, order);
    const expected = ref.permute(array64(shape, values), order);
    const upstream = randomValues(y.size, seed++);
    y.backward(tensor(upstream, { shape: expected.shape }));
    const inverse = new Array(order.length);
    order.forEach((a, i) => (inverse[a] = i));
    const expectedGrad = ref.permute(array64(expected.shape, upstream), inverse);
    if (y.shape.join() !== expected.shape.join()) throw new Error(`permute ${order}: shape ${y.shape}`);
    assertClose(await y.data(), expected.data, { atol: 0 }, `permute [${shape}] by [${order}]`);
    assertClose(await x.grad!.data(), expectedGrad.data, { atol: 0 }, `permute [${shape}] gradient`);
  }
  const t = transpose(tensor([[1, 2, 3], [4, 5, 6]]));
  assertClose(await t.data(), [1, 4, 2, 5, 3, 6], { atol: 0 }, "transpose");
});

Deno.test("narrow slices any axis and scatters its gradient into zeros", async () => {
  const cases: [number[], number, number, number][] = [
    [[7], 0, 2, 3],
    [[2, 12, 2], 2, 1, 1],
    [[3, 33, 5], 1, 0, 33],
    [[129, 4], 0, 128, 1],
    [[1, 5, 7], 2, 3, 4],
  ];
  let seed = 100;
  for (const [shape, axis, start, length] of cases) {
    const values = randomValues(size(shape), seed++);
    const x = tensor(values, { shape, requiresGrad: true });
    const y = narrow(x, axis, start, length);
    const expected = ref.narrow(array64(shape, values), axis, start, length);
    const upstream = randomValues(y.size, seed++);
    y.backward(tensor(upstream, { shape: expected.shape }));
    const expectedGrad = ref.narrowBackward(array64(expected.shape, upstream), shape, axis, start);
    assertClose(await y.data(), expected.data, { atol: 0 }, `narrow [${shape}] axis ${axis}`);
    assertClose(await x.grad!.data(), expectedGrad.data, { atol: 0 }, `narrow [${shape}] gradient`);
  }
});

Deno.test("concat joins along an axis and splits its gradient", async () => {
  const shapes = [[2, 3, 4], [2, 1, 4], [2, 7, 4]];
  const values = shapes.map((s, i) => randomValues(size(s), 200 + i));
  const xs = shapes.map((s, i) => tensor(values[i], { shape: s, requiresGrad: i !== 1 }));
  const y = concat(xs, 1);
  const expected = ref.concat(shapes.map((s, i) => array64(s, values[i])), 1);
  const upstream = randomValues(y.size, 300);
  y.backward(tensor(upstream, { shape: expected.shape }));
  assertClose(await y.data(), expected.data, { atol: 0 }, "concat forward");
  const g = array64(expected.shape, upstream);
  assertClose(await xs[0].grad!.data(), ref.narrow(g, 1, 0, 3).data, { atol: 0 }, "concat grad 0");
  assertClose(await xs[2].grad!.data(), ref.narrow(g, 1, 4, 7).data, { atol: 0 }, "concat grad 2");
  if (xs[1].grad) throw new Error("a tensor without requiresGrad got a gradient");
});

Deno.test("layout errors name the op and the shapes", () => {
  const x = tensor(new Float32Array(6), { shape: [2, 3] });
  const messages: string[] = [];
  for (
    const bad of [() => narrow(x, 1, 2, 2), () => permute(x, [0, 0]), () => concat([x, tensor([1, 2])], 0)]
  ) {
    try {
      bad();
    } catch (e) {
      messages.push((e as Error).message);
    }
  }
  const expected = [
    "narrow: [2, 4) is outside axis 1 of tensor float32[2, 3]",
    "permute: order [0,0] is not a permutation of the axes of tensor float32[2, 3]",
    "concat: float32[2, 3], float32[2] along axis 0",
  ];
  if (messages.join("\n") !== expected.join("\n")) throw new Error(messages.join("\n"));
});

Deno.test("narrow takes a negative start from the end of the axis, as torch.narrow", async () => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  assertClose(await narrow(x, 1, -2, 2).data(), [2, 3, 5, 6], { atol: 0 }, "start -2");
  let message = "";
  try {
    narrow(x, 1, -4, 1);
  } catch (e) {
    message = (e as Error).message;
  }
  if (message !== "narrow: [-4, -3) is outside axis 1 of tensor float32[2, 3]") throw new Error(message);
});

Deno.test("int32 ids keep their host values through permute, narrow and concat", async () => {
  const ids = tensor(Int32Array.from({ length: 24 }, (_, i) => i), { shape: [2, 3, 4] });
  const results = [
    permute(ids, [2, 0, 1]),
    narrow(ids, 1, 1, 2),
    narrow(ids, -1, -3, 2),
    concat([ids, narrow(ids, 2, 0, 1)], 2),
    concat([narrow(ids, 0, 1, 1), narrow(ids, 0, 0, 1)], 0),
  ];
  for (const [i, t] of results.entries()) {
    const device = Array.from(await t.data());
    if (String(t.hostValues) !== String(device)) {
      throw new Error(`case ${i}: host ${t.hostValues}, GPU ${device}`);
    }
  }
  // Without host values on every input, none are made up.
  const computed = tensor(Int32Array.of(1, 2));
  computed.hostValues = undefined;
  if (concat([computed, tensor(Int32Array.of(3))]).hostValues !== undefined) {
    throw new Error("host values invented");
  }
});

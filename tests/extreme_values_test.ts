/**
 * Values at float32's edges where PyTorch gives a finite answer: the divisor's gradient of a / b for
 * tiny and huge b (written -(a / b) / b, as PyTorch, since b * b leaves the range), and cross-entropy
 * over logits below -3e38 (its running maximum starts at the lowest float32, as softmax's does).
 */
import { crossEntropy, div, readAll, sum, tensor } from "../mod.ts";
import { setup } from "./helpers.ts";

await setup();

Deno.test("the divisor's gradient of a / b stays finite where PyTorch's does", async () => {
  // [a, b, d(a/b)/db as torch.float32 gives it; -1e40 overflows to -Infinity there too]
  const cases = [[0, 1e-30, -0], [1e-30, 1e-30, -1e30], [3e38, 1e20, -0.03], [1, 1e-20, -1e40]];
  const a = tensor(Float32Array.from(cases, (c) => c[0]));
  const b = tensor(Float32Array.from(cases, (c) => c[1]), { requiresGrad: true });
  const loss = sum(div(a, b));
  loss.backward();
  const [grad] = (await readAll([b.grad!])) as Float32Array[];
  cases.forEach(([x, y, expected], i) => {
    const want = Math.fround(expected);
    const close = grad[i] === want || Math.abs(grad[i] - want) <= 1e-6 * Math.abs(want);
    if (!close) throw new Error(`d(${x} / ${y})/db = ${grad[i]}, expected ${want}`);
  });
  for (const t of [a, b, loss]) t.dispose();
});

Deno.test("cross-entropy over logits below -3e38 is finite, as PyTorch's", async () => {
  const logits = tensor(new Float32Array(4).fill(-3.3e38), { shape: [1, 4], requiresGrad: true });
  const loss = crossEntropy(logits, tensor(Int32Array.from([0])));
  loss.backward();
  const [value, grad] = (await readAll([loss, logits.grad!])) as Float32Array[];
  if (Math.abs(value[0] - Math.log(4)) > 1e-6) throw new Error(`loss ${value[0]}, expected ln 4`);
  const expected = [-0.75, 0.25, 0.25, 0.25];
  if (expected.some((g, i) => Math.abs(grad[i] - g) > 1e-6)) throw new Error(`gradient ${grad}`);
  for (const t of [logits, loss]) t.dispose();
});

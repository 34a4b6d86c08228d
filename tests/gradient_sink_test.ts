/**
 * Ops that add a parameter's gradient straight into its existing `.grad` (gradientSink in
 * engine/tensor.ts): LayerNorm's gamma and beta, RMSNorm's gamma and a linear layer's bias give the
 * sum autograd's own accumulation gives, bit for bit, with no accumulation dispatch. (Matmul's weight
 * and the embedding table are tested in their own files.)
 */
import { type Tensor, tensor } from "../engine/tensor.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { linear, matmul } from "../kernels/matmul.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { assertBitwiseEqual, randomValues, setup } from "./helpers.ts";

await setup();

/** An op of `x` and the parameters, and the parameters' shapes. */
interface Case {
  label: string;
  x: number[];
  params: number[][];
  op: (x: Tensor, params: Tensor[]) => Tensor;
}

/**
 * Two backward passes of `c` with different upstream gradients into parameters that then have a
 * .grad, against float32 sums of the gradients each pass gives fresh parameters (the engine's own
 * accumulation), and the second pass's kernels.
 */
async function check(c: Case, seed: number): Promise<void> {
  const x = tensor(randomValues(c.x.reduce((p, d) => p * d, 1), seed), { shape: c.x });
  const values = c.params.map((shape, k) => randomValues(shape.reduce((p, d) => p * d, 1), seed + 1 + k));
  const make = () => values.map((v, k) => tensor(v, { shape: c.params[k], requiresGrad: true }));
  const upstream = (pass: number, size: number) => randomValues(size, seed + 10 + pass);
  const fresh: Float32Array[][] = [];
  for (const pass of [0, 1]) {
    const params = make();
    const y = c.op(x, params);
    y.backward(tensor(upstream(pass, y.size), { shape: y.shape }));
    fresh.push(await Promise.all(params.map((p) => p.grad!.data() as Promise<Float32Array>)));
  }
  const params = make();
  let kernels: string[] = [];
  for (const pass of [0, 1]) {
    const y = c.op(x, params);
    const { dispatches } = traceDispatches(() =>
      y.backward(tensor(upstream(pass, y.size), { shape: y.shape }))
    );
    kernels = dispatches.map((d) => d.kernel);
  }
  if (kernels.some((k) => k.startsWith("accumulate"))) {
    throw new Error(`${c.label}: second pass ran ${kernels}`);
  }
  for (const [k, p] of params.entries()) {
    const expected = fresh[0][k].map((v, i) => Math.fround(v + fresh[1][k][i]));
    assertBitwiseEqual(await p.grad!.data(), expected, `${c.label}, parameter ${k}`);
  }
}

Deno.test("LayerNorm, RMSNorm and bias gradients add into an existing .grad as autograd would", async () => {
  // One block of rows and several (partial sums then a pass over the blocks); rows of whole vec4s
  // and odd ones; biases summed in one pass (through a texture from 8192 floats: [2, 32, 128]) or
  // over chunks of 64 rows first; then each with the storage forms forced, and with a GPU's matmul.
  const cases: Case[] = [
    ...[[3, 12], [300, 40], [2, 90, 7]].map((x) => ({
      label: `layerNorm [${x}]`,
      x,
      params: [[x.at(-1)!], [x.at(-1)!]],
      op: (input: Tensor, [gamma, beta]: Tensor[]) => layerNorm(input, gamma, beta, 1e-5),
    })),
    ...[[5, 16], [260, 9]].map((x) => ({
      label: `rmsNorm [${x}]`,
      x,
      params: [[x.at(-1)!]],
      op: (input: Tensor, [gamma]: Tensor[]) => rmsNorm(input, gamma, 1e-6),
    })),
    // The weight is a constant here: its in-kernel accumulation adds in another order (matmul_test.ts).
    ...[[4, 10, 36], [3, 70, 36], [300, 40], [2, 32, 128], [2, 5, 7]].map((x) => {
      const n = x.at(-1)!, weight = tensor(randomValues(n * n, n), { shape: [n, n] });
      return {
        label: `linear bias [${x}]`,
        x,
        params: [[n]],
        op: (input: Tensor, [bias]: Tensor[]) => linear(input, weight, bias),
      };
    }),
    // With a trained weight the weight's product sums the bias's gradient too (rows of dY^T for
    // Linear's layout, columns of dY for Conv1D's), over several tiles of the weight.
    ...[[3, 70, 36], [2, 5, 72], [2, 5, 7]].flatMap((x) =>
      [true, false].map((transposeB) => {
        const n = x.at(-1)!, weight = tensor(randomValues(n * n, n), { shape: [n, n], requiresGrad: true });
        return {
          label: `${transposeB ? "linear" : "Conv1D"} bias with a trained weight [${x}]`,
          x,
          params: [[n]],
          op: (input: Tensor, [bias]: Tensor[]) => matmul(input, weight, { transposeB, bias }),
        };
      })
    ),
  ];
  let seed = 100;
  for (const variants of ["", "reduce_strided:scalar,layernorm_column_sums:serial", "matmul:tiled32"]) {
    await withKernels(variants, async () => {
      for (const c of cases) await check(c, seed += 20);
    });
  }
});

/**
 * The kernel workloads: matrix products, attention forward + backward, LayerNorm forward +
 * backward and the GELU + bias + residual chain. Inputs come from the shared hash streams; the
 * expected outputs from PyTorch's files, or from the float64 references of kernels/reference/ in the
 * dry run.
 *
 * @module
 */
import { readAll, type Tensor, tensor, tidy } from "../../engine/tensor.ts";
import { attention } from "../../kernels/attention.ts";
import { fused } from "../../kernels/elementwise.ts";
import { layerNorm } from "../../kernels/layernorm.ts";
import { matmul } from "../../kernels/matmul.ts";
import { array64 } from "../../kernels/reference/array.ts";
import { attentionBackward, attentionForward } from "../../kernels/reference/attention.ts";
import { geluErf } from "../../kernels/reference/elementwise.ts";
import { layerNormBackward, layerNormForward } from "../../kernels/reference/layernorm.ts";
import * as reference from "../../kernels/reference/matmul.ts";
import { compare, type Comparison, type Expected, need, type Source, TOLERANCE } from "./check.ts";
import {
  type AttentionCase,
  type AttentionSpec,
  type MatmulSpec,
  streamValues,
  validLengths,
} from "./inputs.ts";
import { measure, type TimingOptions } from "./timing.ts";
import { clearGrads, type Workload } from "./workload.ts";

/** Compares every named output with the expected tensor of the same name. */
function compareAll(
  id: string,
  file: string,
  actual: Record<string, ArrayLike<number>>,
  expected: Expected,
): Comparison[] {
  return Object.entries(actual).map(([name, values]) =>
    compare(id, name, values, need(expected, file, name), TOLERANCE.kernel)
  );
}

/** c = a b (or a bᵀ): file `matmul-<id>`, output `c`. */
export function matmulWorkload(s: MatmulSpec, source: Source): Workload {
  const id = `matmul/${s.id}`, file = `matmul-${s.id}`;
  const bShape = s.transposeB ? [s.n, s.k] : [s.k, s.n];
  const aValues = streamValues("matmul.a", s.m * s.k), bValues = streamValues("matmul.b", s.k * s.n);
  const a = tensor(aValues, { shape: [s.m, s.k] });
  const b = tensor(bValues, { shape: bShape });
  const options = { transposeB: s.transposeB };
  return {
    id,
    async check() {
      const c = matmul(a, b, options);
      const actual = { c: await c.data() };
      c.dispose();
      const expected = await source.expected(file, () => {
        const product = reference.matmul(array64([s.m, s.k], aValues), array64(bShape, bValues), options);
        return new Map([["c", product.data]]);
      });
      return compareAll(id, file, actual, expected);
    },
    async time(timing: TimingOptions) {
      return [await measure(id, () => matmul(a, b, options).dispose(), timing)];
    },
    dispose() {
      a.dispose();
      b.dispose();
    },
  };
}

/**
 * softmax(q kᵀ / sqrt(D) + mask) v and its gradients for an upstream gradient: file
 * `attention-<id>`, outputs `o`, `dq`, `dk`, `dv`. Padded cases mask keys past each sequence's
 * {@linkcode validLengths}.
 */
export function attentionWorkload(s: AttentionSpec, c: AttentionCase, source: Source): Workload {
  const id = `attention/${c.id}`, file = `attention-${c.id}`;
  const shape = [s.batch, s.heads, c.tokens, s.dim];
  const size = shape.reduce((p, d) => p * d, 1);
  const values = ["q", "k", "v", "grad"].map((name) => streamValues(`attention.${name}`, size));
  const [q, k, v] = values.slice(0, 3).map((x) => tensor(x, { shape, requiresGrad: true }));
  const upstream = tensor(values[3], { shape });
  const lengths = validLengths(s.batch, c.tokens);
  const maskValues = Float32Array.from(
    { length: s.batch * c.tokens },
    (_, i) => i % c.tokens < lengths[Math.floor(i / c.tokens)] ? 1 : 0,
  );
  const keyMask = c.mask === "padded" ? tensor(maskValues, { shape: [s.batch, c.tokens] }) : undefined;
  const options = { causal: c.mask === "causal", keyMask };
  const run = () => {
    tidy(() => attention(q, k, v, options).backward(upstream));
    clearGrads(q, k, v);
  };
  return {
    id,
    async check() {
      const out = attention(q, k, v, options);
      out.backward(upstream);
      const [o, dq, dk, dv] = await readAll([out, q.grad!, k.grad!, v.grad!]);
      out.dispose();
      clearGrads(q, k, v);
      const expected = await source.expected(file, () => {
        const dims = { batch: s.batch, heads: s.heads, queries: c.tokens, keys: c.tokens, dim: s.dim };
        const refOptions = { causal: options.causal, keyMask: keyMask ? maskValues : undefined };
        const [qv, kv, vv, gv] = values;
        const grads = attentionBackward(qv, kv, vv, gv, dims, refOptions);
        return new Map<string, ArrayLike<number>>([
          ["o", attentionForward(qv, kv, vv, dims, refOptions)],
          ["dq", grads.dq],
          ["dk", grads.dk],
          ["dv", grads.dv],
        ]);
      });
      return compareAll(id, file, { o, dq, dk, dv }, expected);
    },
    async time(timing: TimingOptions) {
      return [await measure(id, run, timing)];
    },
    dispose() {
      for (const t of [q, k, v, upstream, keyMask]) t?.dispose();
    },
  };
}

/** LayerNorm over the last axis, forward and backward: file `layernorm`, outputs `y`, `dx`, `dgamma`, `dbeta`. */
export function layerNormWorkload(s: { rows: number; cols: number; eps: number }, source: Source): Workload {
  const id = "layernorm", file = "layernorm";
  const n = s.rows * s.cols;
  const xValues = streamValues("layernorm.x", n);
  const gammaValues = streamValues("layernorm.gamma", s.cols);
  const betaValues = streamValues("layernorm.beta", s.cols);
  const gradValues = streamValues("layernorm.grad", n);
  const x = tensor(xValues, { shape: [s.rows, s.cols], requiresGrad: true });
  const gamma = tensor(gammaValues, { requiresGrad: true });
  const beta = tensor(betaValues, { requiresGrad: true });
  const upstream = tensor(gradValues, { shape: [s.rows, s.cols] });
  const run = () => {
    tidy(() => layerNorm(x, gamma, beta, s.eps).backward(upstream));
    clearGrads(x, gamma, beta);
  };
  return {
    id,
    async check() {
      const y = layerNorm(x, gamma, beta, s.eps);
      y.backward(upstream);
      const [yv, dx, dgamma, dbeta] = await readAll([y, x.grad!, gamma.grad!, beta.grad!]);
      y.dispose();
      clearGrads(x, gamma, beta);
      const expected = await source.expected(file, () => {
        const x64 = array64([s.rows, s.cols], xValues);
        const grads = layerNormBackward(x64, gammaValues, gradValues, s.eps);
        return new Map<string, ArrayLike<number>>([
          ["y", layerNormForward(x64, gammaValues, betaValues, s.eps).y.data],
          ["dx", grads.dx.data],
          ["dgamma", grads.dgamma],
          ["dbeta", grads.dbeta],
        ]);
      });
      return compareAll(id, file, { y: yv, dx, dgamma, dbeta }, expected);
    },
    async time(timing: TimingOptions) {
      return [await measure(id, run, timing)];
    },
    dispose() {
      for (const t of [x, gamma, beta, upstream]) t.dispose();
    },
  };
}

/** gelu(x + bias) + residual (erf GELU), forward: file `chain`, output `y`. */
export function chainWorkload(s: { rows: number; cols: number }, source: Source): Workload {
  const id = "chain", file = "chain";
  const n = s.rows * s.cols;
  const xValues = streamValues("chain.x", n);
  const biasValues = streamValues("chain.bias", s.cols);
  const residualValues = streamValues("chain.residual", n);
  const x = tensor(xValues, { shape: [s.rows, s.cols] });
  const bias = tensor(biasValues);
  const residual = tensor(residualValues, { shape: [s.rows, s.cols] });
  const chain = (): Tensor => fused([x, bias, residual], (a, b, r) => a.add(b).gelu("erf").add(r), "chain");
  return {
    id,
    async check() {
      const y = chain();
      const actual = { y: await y.data() };
      y.dispose();
      const expected = await source.expected(file, () => {
        const y64 = Float64Array.from(
          { length: n },
          (_, i) => geluErf.f(xValues[i] + biasValues[i % s.cols]) + residualValues[i],
        );
        return new Map([["y", y64]]);
      });
      return compareAll(id, file, actual, expected);
    },
    async time(timing: TimingOptions) {
      return [await measure(id, () => chain().dispose(), timing)];
    },
    dispose() {
      for (const t of [x, bias, residual]) t.dispose();
    },
  };
}

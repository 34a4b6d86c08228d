/**
 * Float64 reference of batched matmul (transposes, broadcast batch dimensions, bias) and its backward.
 *
 * @module
 */
import { type Array64, broadcastIndex, broadcastShape, coordinates, sizeOf } from "./array.ts";

/** Options of the reference {@linkcode matmul}, as in the kernel. */
export interface MatmulReferenceOptions {
  /** a is [..., K, M]. */
  transposeA?: boolean;
  /** b is [..., N, K]. */
  transposeB?: boolean;
  /** [N] added to every output row. */
  bias?: Array64;
}

/** Gradients of the reference matmul; null for the bias when there is none. */
export interface MatmulGradients {
  /** Gradient of a, with a's shape. */
  readonly a: Array64;
  /** Gradient of b, with b's shape. */
  readonly b: Array64;
  /** Gradient of the bias, [N]. */
  readonly bias: Array64 | null;
}

/** Sizes and per-batch element offsets of a product, shared by forward and backward. */
function layout(a: Array64, b: Array64, options: MatmulReferenceOptions) {
  const { transposeA = false, transposeB = false } = options;
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const M = transposeA ? ac : ar, K = transposeA ? ar : ac, N = transposeB ? br : bc;
  if ((transposeB ? bc : br) !== K) throw new Error(`reference matmul: inner dimensions differ`);
  const batchA = a.shape.slice(0, -2), batchB = b.shape.slice(0, -2);
  const batch = broadcastShape(batchA, batchB);
  const offsets = Array.from({ length: sizeOf(batch) }, (_, z) => {
    const coord = coordinates(z, batch);
    return [broadcastIndex(batchA, coord) * M * K, broadcastIndex(batchB, coord) * K * N, z * M * N];
  });
  // Element (m, k) of op(a) and (k, n) of op(b) in their stored layouts.
  const indexA = (m: number, k: number) => (transposeA ? k * M + m : m * K + k);
  const indexB = (k: number, n: number) => (transposeB ? n * K + k : k * N + n);
  return { M, K, N, batch, offsets, indexA, indexB };
}

/** op(a) x op(b) + bias over broadcast batch dimensions, in float64. */
export function matmul(a: Array64, b: Array64, options: MatmulReferenceOptions = {}): Array64 {
  const { M, K, N, batch, offsets, indexA, indexB } = layout(a, b, options);
  const data = new Float64Array(sizeOf(batch) * M * N);
  for (const [oa, ob, oc] of offsets) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = options.bias ? options.bias.data[n] : 0;
        for (let k = 0; k < K; k++) s += a.data[oa + indexA(m, k)] * b.data[ob + indexB(k, n)];
        data[oc + m * N + n] = s;
      }
    }
  }
  return { shape: [...batch, M, N], data };
}

/** Gradients of sum(grad * matmul(a, b, options)) with respect to a, b and the bias. */
export function matmulBackward(
  a: Array64,
  b: Array64,
  grad: Array64,
  options: MatmulReferenceOptions = {},
): MatmulGradients {
  const { M, K, N, offsets, indexA, indexB } = layout(a, b, options);
  const gradA = new Float64Array(a.data.length), gradB = new Float64Array(b.data.length);
  const gradBias = new Float64Array(N);
  for (const [oa, ob, oc] of offsets) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        const g = grad.data[oc + m * N + n];
        gradBias[n] += g;
        for (let k = 0; k < K; k++) {
          gradA[oa + indexA(m, k)] += g * b.data[ob + indexB(k, n)];
          gradB[ob + indexB(k, n)] += g * a.data[oa + indexA(m, k)];
        }
      }
    }
  }
  return {
    a: { shape: [...a.shape], data: gradA },
    b: { shape: [...b.shape], data: gradB },
    bias: options.bias ? { shape: [N], data: gradBias } : null,
  };
}

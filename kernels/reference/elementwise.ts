/**
 * Float64 reference of the elementwise ops and their derivatives, written from the formulas, not
 * from the WGSL (kernels/elementwise_ops.ts points each op at its reference here).
 *
 * @module
 */
import { erf } from "./array.ts";

/** A scalar function with its derivative. */
export interface ScalarOp {
  /** f(x) */
  readonly f: (x: number) => number;
  /** f'(x) */
  readonly df: (x: number) => number;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** GELU, exact form: x * Phi(x). */
export const geluErf: ScalarOp = {
  f: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  df: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI),
};

/** GELU, tanh approximation (GPT-2's `gelu_new`). */
export const geluTanh: ScalarOp = {
  f: (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))),
  df: (x) => {
    const t = Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
  },
};

/** Hyperbolic tangent. */
export const tanh: ScalarOp = { f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2 };

/** Logistic sigmoid. */
export const sigmoid: ScalarOp = {
  f: (x) => 1 / (1 + Math.exp(-x)),
  df: (x) => {
    const s = 1 / (1 + Math.exp(-x));
    return s * (1 - s);
  },
};

/** Exponential. */
export const exp: ScalarOp = { f: Math.exp, df: Math.exp };

/** Natural logarithm. */
export const log: ScalarOp = { f: Math.log, df: (x) => 1 / x };

/** Square root. */
export const sqrt: ScalarOp = { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x) };

/** max(x, 0). */
export const relu: ScalarOp = { f: (x) => (x < 0 ? 0 : x), df: (x) => (x <= 0 ? 0 : 1) };

/** Negation. */
export const neg: ScalarOp = { f: (x) => -x, df: () => -1 };

/** The unit step, 0 for x <= 0 and 1 otherwise, NaN included (relu's derivative); flat wherever it is differentiable. */
export const step: ScalarOp = { f: (x) => (x <= 0 ? 0 : 1), df: () => 0 };

/** 1 where x is finite, 0 where it is NaN or infinite (no derivative: it marks values, under noGrad). */
export const isFinite: { readonly f: (x: number) => number } = { f: (x) => (Number.isFinite(x) ? 1 : 0) };

/** x where it is finite, 0 where it is NaN or infinite (no derivative: it masks values, under noGrad). */
export const finiteOrZero: { readonly f: (x: number) => number } = { f: (x) => (Number.isFinite(x) ? x : 0) };

/** A function of two operands with its partial derivatives. */
export interface BinaryScalarOp {
  /** f(a, b) */
  readonly f: (a: number, b: number) => number;
  /** df/da */
  readonly da: (a: number, b: number) => number;
  /** df/db */
  readonly db: (a: number, b: number) => number;
}

/** a + b. */
export const add: BinaryScalarOp = { f: (a, b) => a + b, da: () => 1, db: () => 1 };

/** a - b. */
export const sub: BinaryScalarOp = { f: (a, b) => a - b, da: () => 1, db: () => -1 };

/** a * b. */
export const mul: BinaryScalarOp = { f: (a, b) => a * b, da: (_, b) => b, db: (a) => a };

/** a / b. */
export const div: BinaryScalarOp = { f: (a, b) => a / b, da: (_, b) => 1 / b, db: (a, b) => -(a / b) / b };

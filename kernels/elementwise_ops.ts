/**
 * The elementwise ops, one record each: the WGSL that computes the op, its derivative as an
 * expression, and the float64 reference it is tested against. Everything else is derived from the
 * records: the {@linkcode Expr} methods, the kernels' WGSL (elementwise_kernel.ts), the symbolic
 * backward (elementwise.ts) and the test of every op against its reference.
 *
 * Adding an op is its record here and its name in the {@linkcode Unary} or {@linkcode Binary} union
 * (public types must be written out for JSR; the compiler rejects a name without a record or a record
 * without a name). A method op (`method: true`, and its name in {@linkcode MethodUnary}) also gets an
 * exported function in elementwise.ts (export names cannot be generated) and a line in mod.ts.
 * docs/adding-an-op.md walks through a whole op.
 *
 * @module
 */
import * as ref from "./reference/elementwise.ts";

/** The float64 reference of a unary op: the function and, where the op has a derivative, the derivative. */
export interface UnaryReference {
  /** f(x) */
  readonly f: (x: number) => number;
  /** f'(x), where the op has a derivative. */
  readonly df?: (x: number) => number;
}

/** The float64 reference of a binary op: the function and its partial derivatives. */
export interface BinaryReference {
  /** f(a, b) */
  readonly f: (a: number, b: number) => number;
  /** df/da */
  readonly da: (a: number, b: number) => number;
  /** df/db */
  readonly db: (a: number, b: number) => number;
}

/** Everything there is to an elementwise op of one operand. */
export interface UnaryOp {
  /**
   * WGSL of the op on the f32 value `a`. The texel kernel applies it to each lane, so there is no
   * separate vec4 form.
   */
  readonly wgsl: (a: string) => string;
  /**
   * d op(a) / da as an expression of `a` and of `self`, the op's own node (so that exp, tanh, sqrt
   * and sigmoid reuse their forward value); null where there is none (no double backward).
   */
  readonly derivative: ((a: Expr, self: Expr) => Expr) | null;
  /** Its float64 reference in kernels/reference/elementwise.ts. */
  readonly reference: UnaryReference;
  /** True when the op is an {@linkcode Expr} method and an exported function of the same name. */
  readonly method: boolean;
}

/** Everything there is to an elementwise op of two operands (all are Expr methods and exported functions). */
export interface BinaryOp {
  /** WGSL of the op on the f32 values `a` and `b`. */
  readonly wgsl: (a: string, b: string) => string;
  /** The partial derivatives [d/da, d/db] as expressions. */
  readonly derivative: (a: Expr, b: Expr) => [Expr, Expr];
  /** Its float64 reference in kernels/reference/elementwise.ts. */
  readonly reference: BinaryReference;
}

/**
 * Unary operations of elementwise expressions. The union is written out because JSR requires public
 * types to be explicit; the compiler checks that it and {@linkcode UNARY_OPS} name the same ops.
 */
export type Unary =
  | MethodUnary
  | "gelu_erf"
  | "gelu_tanh"
  | "gelu_erf_grad"
  | "gelu_tanh_grad"
  | "step"
  | "is_finite"
  | "finite_or_zero";
/** The unary ops that are {@linkcode Expr} methods and exported functions (`method: true` in their records). */
export type MethodUnary = "neg" | "exp" | "log" | "sqrt" | "tanh" | "sigmoid" | "relu";
/** Binary operations of elementwise expressions; the compiler checks it against {@linkcode BINARY_OPS}. */
export type Binary = "add" | "sub" | "mul" | "div";

/**
 * The unary ops, one record each; the *_grad ones and `step` are derivatives backward uses, and
 * `is_finite` and `finite_or_zero` masks of non-finite values (distillation.ts), not methods.
 */
export const UNARY_OPS: {
  readonly [K in Unary]: UnaryOp & { readonly method: K extends MethodUnary ? true : false };
} = {
  /** -x */
  neg: { wgsl: (a) => `-(${a})`, derivative: () => lift(-1), reference: ref.neg, method: true },
  /** e^x */
  exp: { wgsl: (a) => `exp(${a})`, derivative: (_, self) => self, reference: ref.exp, method: true },
  /** natural logarithm */
  log: {
    wgsl: (a) => `log(${a})`,
    derivative: (a) => lift(1).div(a),
    reference: ref.log,
    method: true,
  },
  /** square root */
  sqrt: {
    wgsl: (a) => `sqrt(${a})`,
    derivative: (_, self) => lift(0.5).div(self),
    reference: ref.sqrt,
    method: true,
  },
  /** hyperbolic tangent, safe for large |x| */
  tanh: {
    wgsl: (a) => `safe_tanh(${a})`,
    derivative: (_, self) => lift(1).sub(self.mul(self)),
    reference: ref.tanh,
    method: true,
  },
  /** logistic sigmoid */
  sigmoid: {
    wgsl: (a) => `sigmoid(${a})`,
    derivative: (_, self) => self.mul(lift(1).sub(self)),
    reference: ref.sigmoid,
    method: true,
  },
  /** max(x, 0); NaN stays NaN, as in PyTorch (WGSL's max may return either operand for a NaN) */
  relu: {
    wgsl: (a) => `select(${a}, 0.0, ${a} < 0.0)`,
    derivative: (a) => unary("step", a),
    reference: ref.relu,
    method: true,
  },
  /** GELU, exact form (BERT's `gelu`); the method is {@linkcode Expr.gelu} */
  gelu_erf: {
    wgsl: (a) => `gelu_erf(${a})`,
    derivative: (a) => unary("gelu_erf_grad", a),
    reference: ref.geluErf,
    method: false,
  },
  /** GELU, tanh approximation (GPT-2's `gelu_new`); the method is {@linkcode Expr.gelu} */
  gelu_tanh: {
    wgsl: (a) => `gelu_tanh(${a})`,
    derivative: (a) => unary("gelu_tanh_grad", a),
    reference: ref.geluTanh,
    method: false,
  },
  /** derivative of the exact GELU */
  gelu_erf_grad: {
    wgsl: (a) => `gelu_erf_grad(${a})`,
    derivative: null,
    reference: { f: ref.geluErf.df },
    method: false,
  },
  /** derivative of the tanh GELU */
  gelu_tanh_grad: {
    wgsl: (a) => `gelu_tanh_grad(${a})`,
    derivative: null,
    reference: { f: ref.geluTanh.df },
    method: false,
  },
  /** 0 where x <= 0, else 1 (NaN included, so a NaN's gradient passes as in PyTorch): relu's derivative */
  step: {
    wgsl: (a) => `select(1.0, 0.0, ${a} <= 0.0)`,
    derivative: () => lift(0),
    reference: ref.step,
    method: false,
  },
  /**
   * 1 where x is finite, 0 where it is NaN or +-Inf. A bit test, not `x != x` or comparisons, which
   * WGSL lets compilers fold (it may assume no NaN or Inf); no derivative (masks are built under noGrad).
   */
  is_finite: {
    wgsl: (a) => `select(0.0, 1.0, ${finiteBits(a)})`,
    derivative: null,
    reference: ref.isFinite,
    method: false,
  },
  /**
   * x where it is finite, 0 where it is NaN or +-Inf (a `select`: multiplying by a 0 mask would keep a
   * NaN, as NaN * 0 is NaN); the same bit test as `is_finite`, and no derivative.
   */
  finite_or_zero: {
    wgsl: (a) => `select(0.0, ${a}, ${finiteBits(a)})`,
    derivative: null,
    reference: ref.finiteOrZero,
    method: false,
  },
};

/** WGSL true where the f32 `a` is finite: its exponent bits are not all ones (as optim/wgsl.ts's `finite`). */
function finiteBits(a: string): string {
  return `((bitcast<u32>(${a}) & 0x7f800000u) != 0x7f800000u)`;
}

/** The binary ops, one record each. */
export const BINARY_OPS: { readonly [K in Binary]: BinaryOp } = {
  /** a + b */
  add: {
    wgsl: (a, b) => `${a} + ${b}`,
    derivative: () => [lift(1), lift(1)],
    reference: ref.add,
  },
  /** a - b */
  sub: {
    wgsl: (a, b) => `${a} - ${b}`,
    derivative: () => [lift(1), lift(-1)],
    reference: ref.sub,
  },
  /** a * b */
  mul: { wgsl: (a, b) => `${a} * ${b}`, derivative: (a, b) => [b, a], reference: ref.mul },
  /** a / b */
  div: {
    wgsl: (a, b) => `${a} / ${b}`,
    // -(a / b) / b, as PyTorch: b * b leaves float32's range for |b| below 1e-19 or above 1.8e19.
    derivative: (a, b) => [lift(1).div(b), a.neg().div(b).div(b)],
    reference: ref.div,
  },
};

/** A node of an elementwise expression. */
export type ExprNode =
  | { readonly kind: "input"; readonly index: number }
  | { readonly kind: "const"; readonly value: number }
  | { readonly kind: "unary"; readonly op: Unary; readonly a: Expr }
  | { readonly kind: "binary"; readonly op: Binary; readonly a: Expr; readonly b: Expr };

/** The Expr method of each unary op with `method: true`, e.g. `x.exp()`. */
export type UnaryMethods = { readonly [K in MethodUnary]: () => Expr };
/** The Expr method of each binary op, e.g. `x.add(y)` or `x.mul(2)`. */
export type BinaryMethods = { readonly [K in Binary]: (other: Expr | number) => Expr };

/**
 * A symbolic elementwise expression; build one with the methods inside a `fused` callback: one per binary op (`add`, `sub`, `mul`, `div`) and per unary op with a method (`neg`,
 * `exp`, `log`, `sqrt`, `tanh`, `sigmoid`, `relu`), generated from the op records, and `gelu`.
 */
export class Expr {
  /** Wraps an expression node; build expressions with the methods instead. */
  constructor(readonly node: ExprNode) {}

  /** GELU, exact ("erf", BERT's `gelu`) or tanh-approximated ("tanh", GPT-2's `gelu_new`) */
  gelu(form: GeluForm = "erf"): Expr {
    if (form !== "erf" && form !== "tanh") {
      // PyTorch spells the exact form "none" (approximate="none"); anything else read as tanh would be silent.
      const meant = (form as string) === "none" ? ' (PyTorch\'s approximate="none" is "erf")' : "";
      throw new TypeError(`gelu: form must be "erf" or "tanh", got ${JSON.stringify(form)}${meant}`);
    }
    return unary(form === "erf" ? "gelu_erf" : "gelu_tanh", this);
  }
}

/**
 * The methods the op records describe ({@linkcode UnaryMethods}, {@linkcode BinaryMethods}), merged
 * into the class's type and put on its prototype below.
 */
export interface Expr extends UnaryMethods, BinaryMethods {}
for (const [op, spec] of Object.entries(UNARY_OPS) as [Unary, UnaryOp][]) {
  if (spec.method) {
    Object.defineProperty(Expr.prototype, op, {
      value(this: Expr) {
        return unary(op, this);
      },
    });
  }
}
for (const op of Object.keys(BINARY_OPS) as Binary[]) {
  Object.defineProperty(Expr.prototype, op, {
    value(this: Expr, other: Expr | number) {
      return binary(op, this, other);
    },
  });
}

/** The two GELU forms of Hugging Face models. */
export type GeluForm = "erf" | "tanh";

/** `x` as an expression: itself, or a constant node. */
function lift(x: Expr | number): Expr {
  return x instanceof Expr ? x : new Expr({ kind: "const", value: x });
}
/** The node op(a). */
export function unary(op: Unary, a: Expr): Expr {
  return new Expr({ kind: "unary", op, a });
}
/** The node op(a, b), numbers becoming constants. */
export function binary(op: Binary, a: Expr | number, b: Expr | number): Expr {
  return new Expr({ kind: "binary", op, a: lift(a), b: lift(b) });
}

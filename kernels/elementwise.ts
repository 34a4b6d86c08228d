/**
 * Elementwise ops with NumPy broadcasting, and fusion of a chain of them into one kernel.
 *
 * Every elementwise op is an expression over its inputs ({@linkcode Expr}); {@linkcode fused}
 * compiles any such expression to one WGSL kernel, and its backward to one more kernel that
 * computes the gradients of all inputs at once from symbolic derivatives. `add`, `gelu` and the
 * others are one-node expressions of the same machinery. Constants travel as uniforms, so changing
 * a scale does not compile a new pipeline.
 *
 * @module
 */
import { dispatch } from "../engine/recorder.ts";
import { bindingWindows, grid, kernelFor, linearIndex } from "../engine/kernel.ts";
import { attachGrad, emptyTensor, type Tensor } from "../engine/tensor.ts";
import { broadcastShapes, broadcastStrides, formatShape, sameShape } from "../engine/shape.ts";
import { sumToShape } from "./reduce.ts";
import { WGSL_MATH } from "./wgsl.ts";

/** Unary operations of elementwise expressions (the *_grad ones are derivatives used by backward). */
export type Unary =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "tanh"
  | "sigmoid"
  | "relu"
  | "gelu_erf"
  | "gelu_tanh"
  | "gelu_erf_grad"
  | "gelu_tanh_grad"
  | "step";
/** Binary operations of elementwise expressions. */
export type Binary = "add" | "sub" | "mul" | "div";
/** A node of an elementwise expression. */
export type ExprNode =
  | { readonly kind: "input"; readonly index: number }
  | { readonly kind: "const"; readonly value: number }
  | { readonly kind: "unary"; readonly op: Unary; readonly a: Expr }
  | { readonly kind: "binary"; readonly op: Binary; readonly a: Expr; readonly b: Expr };

/** A symbolic elementwise expression; build one with the methods inside a {@linkcode fused} callback. */
export class Expr {
  /** Wraps an expression node; build expressions with the methods instead. */
  constructor(readonly node: ExprNode) {}

  /** this + other */
  add(other: Expr | number): Expr {
    return binary("add", this, other);
  }
  /** this - other */
  sub(other: Expr | number): Expr {
    return binary("sub", this, other);
  }
  /** this * other */
  mul(other: Expr | number): Expr {
    return binary("mul", this, other);
  }
  /** this / other */
  div(other: Expr | number): Expr {
    return binary("div", this, other);
  }
  /** -this */
  neg(): Expr {
    return unary("neg", this);
  }
  /** e^this */
  exp(): Expr {
    return unary("exp", this);
  }
  /** natural logarithm */
  log(): Expr {
    return unary("log", this);
  }
  /** square root */
  sqrt(): Expr {
    return unary("sqrt", this);
  }
  /** hyperbolic tangent */
  tanh(): Expr {
    return unary("tanh", this);
  }
  /** logistic sigmoid */
  sigmoid(): Expr {
    return unary("sigmoid", this);
  }
  /** max(this, 0) */
  relu(): Expr {
    return unary("relu", this);
  }
  /** GELU, exact ("erf", BERT's `gelu`) or tanh-approximated ("tanh", GPT-2's `gelu_new`) */
  gelu(form: GeluForm = "erf"): Expr {
    return unary(form === "erf" ? "gelu_erf" : "gelu_tanh", this);
  }
}

/** The two GELU forms of Hugging Face models. */
export type GeluForm = "erf" | "tanh";

function lift(x: Expr | number): Expr {
  return x instanceof Expr ? x : new Expr({ kind: "const", value: x });
}
function unary(op: Unary, a: Expr): Expr {
  return new Expr({ kind: "unary", op, a });
}
function binary(op: Binary, a: Expr | number, b: Expr | number): Expr {
  return new Expr({ kind: "binary", op, a: lift(a), b: lift(b) });
}

const UNARY_WGSL: Record<Unary, (a: string) => string> = {
  neg: (a) => `-(${a})`,
  exp: (a) => `exp(${a})`,
  log: (a) => `log(${a})`,
  sqrt: (a) => `sqrt(${a})`,
  tanh: (a) => `safe_tanh(${a})`,
  sigmoid: (a) => `sigmoid(${a})`,
  relu: (a) => `max(${a}, 0.0)`,
  gelu_erf: (a) => `gelu_erf(${a})`,
  gelu_tanh: (a) => `gelu_tanh(${a})`,
  gelu_erf_grad: (a) => `gelu_erf_grad(${a})`,
  gelu_tanh_grad: (a) => `gelu_tanh_grad(${a})`,
  step: (a) => `select(0.0, 1.0, ${a} > 0.0)`,
};
const BINARY_WGSL: Record<Binary, string> = { add: "+", sub: "-", mul: "*", div: "/" };

/**
 * The local derivatives of a node with respect to its operands, as expressions; `self` is the
 * node itself so that exp, tanh, sqrt and sigmoid reuse their forward value.
 */
function localDerivatives(self: Expr): [Expr, Expr][] {
  const n = self.node;
  if (n.kind === "unary") {
    const a = n.a;
    const d: Record<Unary, () => Expr | null> = {
      neg: () => lift(-1),
      exp: () => self,
      log: () => lift(1).div(a),
      sqrt: () => lift(0.5).div(self),
      tanh: () => lift(1).sub(self.mul(self)),
      sigmoid: () => self.mul(lift(1).sub(self)),
      relu: () => unary("step", a),
      gelu_erf: () => unary("gelu_erf_grad", a),
      gelu_tanh: () => unary("gelu_tanh_grad", a),
      gelu_erf_grad: () => null,
      gelu_tanh_grad: () => null,
      step: () => lift(0),
    };
    const derivative = d[n.op]();
    if (!derivative) throw new Error(`elementwise: ${n.op} has no derivative (no double backward)`);
    return [[a, derivative]];
  }
  if (n.kind === "binary") {
    const { a, b } = n;
    switch (n.op) {
      case "add":
        return [[a, lift(1)], [b, lift(1)]];
      case "sub":
        return [[a, lift(1)], [b, lift(-1)]];
      case "mul":
        return [[a, b], [b, a]];
      case "div":
        return [[a, lift(1).div(b)], [b, a.neg().div(b.mul(b))]];
    }
  }
  return [];
}

/** Multiplies two expressions, folding multiplications by the constants 1 and -1. */
function times(x: Expr, y: Expr): Expr {
  const isConst = (e: Expr, v: number) => e.node.kind === "const" && e.node.value === v;
  if (isConst(y, 1)) return x;
  if (isConst(x, 1)) return y;
  if (isConst(y, -1)) return x.neg();
  return x.mul(y);
}

/** Reverse-mode symbolic differentiation: the gradient expression of each input, given the output gradient. */
function gradientExprs(root: Expr, inputCount: number, outputGrad: Expr): (Expr | null)[] {
  const order: Expr[] = [];
  const seen = new Set<Expr>();
  const visit = (e: Expr) => {
    if (seen.has(e)) return;
    seen.add(e);
    const n = e.node;
    if (n.kind === "unary") visit(n.a);
    if (n.kind === "binary") {
      visit(n.a);
      visit(n.b);
    }
    order.push(e);
  };
  visit(root);
  const adjoint = new Map<Expr, Expr>([[root, outputGrad]]);
  for (let i = order.length - 1; i >= 0; i--) {
    const e = order[i];
    const g = adjoint.get(e);
    if (!g) continue;
    for (const [operand, derivative] of localDerivatives(e)) {
      const contribution = times(g, derivative);
      const previous = adjoint.get(operand);
      adjoint.set(operand, previous ? previous.add(contribution) : contribution);
    }
  }
  const grads: (Expr | null)[] = new Array(inputCount).fill(null);
  for (const [e, g] of adjoint) if (e.node.kind === "input") grads[e.node.index] = g;
  return grads;
}

/** Emits WGSL `let` statements for a set of expressions, sharing common subexpressions. */
class Emitter {
  readonly lines: string[] = [];
  readonly constants: number[] = [];
  readonly #names = new Map<Expr, string>();
  readonly #byText = new Map<string, string>();

  constructor(readonly inputName: (index: number) => string) {}

  /** The WGSL name holding the value of `e`. */
  emit(e: Expr): string {
    const known = this.#names.get(e);
    if (known) return known;
    const n = e.node;
    let text: string;
    if (n.kind === "input") text = this.inputName(n.index);
    else if (n.kind === "const") {
      text = `params.c${this.constants.length}`;
      this.constants.push(n.value);
    } else if (n.kind === "unary") text = UNARY_WGSL[n.op](this.emit(n.a));
    else text = `${this.emit(n.a)} ${BINARY_WGSL[n.op]} ${this.emit(n.b)}`;
    let name = n.kind === "const" ? text : this.#byText.get(text);
    if (!name) {
      name = `v${this.lines.length}`;
      this.lines.push(`let ${name} = ${text};`);
      this.#byText.set(text, name);
    }
    this.#names.set(e, name);
    return name;
  }
}

/** A structural key of an expression (constants by position, not value), for kernel caching. */
function structureKey(e: Expr, memo = new Map<Expr, string>()): string {
  const hit = memo.get(e);
  if (hit) return hit;
  const n = e.node;
  const key = n.kind === "input"
    ? `i${n.index}`
    : n.kind === "const"
    ? "c"
    : n.kind === "unary"
    ? `${n.op}(${structureKey(n.a, memo)})`
    : `${n.op}(${structureKey(n.a, memo)},${structureKey(n.b, memo)})`;
  memo.set(e, key);
  return key;
}

/** Output dims and per-input strides after merging dimensions that every input walks contiguously. */
function collapse(outShape: readonly number[], strides: number[][]): { dims: number[]; strides: number[][] } {
  const dims: number[] = [];
  const merged: number[][] = strides.map(() => []);
  for (let r = 0; r < outShape.length; r++) {
    if (outShape[r] === 1) continue;
    const last = dims.length - 1;
    const contiguous = last >= 0 && strides.every((s, k) => merged[k][last] === s[r] * outShape[r]);
    if (contiguous) {
      dims[last] *= outShape[r];
      strides.forEach((s, k) => (merged[k][last] = s[r]));
    } else {
      dims.push(outShape[r]);
      strides.forEach((s, k) => merged[k].push(s[r]));
    }
  }
  if (dims.length === 0) return { dims: [1], strides: strides.map(() => [1]) };
  return { dims, strides: merged };
}

interface Layout {
  /** Collapsed output dims. */
  dims: number[];
  /** Per input: its collapsed strides, or null when it is read at the output's own index. */
  strides: (number[] | null)[];
  /** Part of the kernel variant key. */
  key: string;
}

function layoutOf(outShape: readonly number[], shapes: readonly (readonly number[])[]): Layout {
  const c = collapse(outShape, shapes.map((s) => broadcastStrides(s, outShape)));
  const full = (s: number[]) =>
    s.length === c.dims.length && s.every((v, r) => v === c.dims.slice(r + 1).reduce((p, d) => p * d, 1));
  const strides = c.strides.map((s, k) => (sameShape(shapes[k], outShape) || full(s) ? null : s));
  const key = `${c.dims.length}:${strides.map((s) => (s ? "b" : "f")).join("")}`;
  return { dims: c.dims, strides, key };
}

function indexParams(layout: Layout): Record<string, "u32"> {
  const params: Record<string, "u32"> = { count: "u32", base: "u32" };
  if (layout.strides.some((s) => s)) layout.dims.forEach((_, r) => (params[`d${r}`] = "u32"));
  layout.strides.forEach((s, k) => s?.forEach((_, r) => (params[`s${k}_${r}`] = "u32")));
  return params;
}

function indexValues(layout: Layout, count: number, base: number): number[] {
  const values = [count, base];
  if (layout.strides.some((s) => s)) values.push(...layout.dims);
  for (const s of layout.strides) if (s) values.push(...s);
  return values;
}

function offsetCode(layout: Layout): string {
  if (!layout.strides.some((s) => s)) return "";
  const rank = layout.dims.length;
  const lines = ["var rem = params.base + i;"];
  for (let r = rank - 1; r >= 0; r--) {
    lines.push(`let x${r} = rem % params.d${r};`);
    if (r > 0) lines.push(`rem = rem / params.d${r};`);
  }
  layout.strides.forEach((s, k) => {
    if (s) lines.push(`let o${k} = ${s.map((_, r) => `x${r} * params.s${k}_${r}`).join(" + ")};`);
  });
  return lines.join("\n  ");
}

function checkInputs(op: string, inputs: readonly Tensor[]): void {
  for (const t of inputs) {
    if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
  }
}

/**
 * Computes `fn` over its inputs elementwise, with broadcasting, as one kernel; its gradient is one
 * more kernel (plus a sum over broadcast dimensions where an input was broadcast).
 *
 * ```ts
 * const y = fused([x, bias], (x, b) => x.add(b).gelu("tanh"));
 * ```
 */
export function fused(inputs: readonly Tensor[], fn: (...xs: Expr[]) => Expr, name = "fused"): Tensor {
  checkInputs(name, inputs);
  const root = fn(...inputs.map((_, index) => new Expr({ kind: "input", index })));
  const outShape = broadcastShapes(name, inputs.map((t) => t.shape));
  const out = evaluate(name, root, inputs, outShape);
  return attachGrad(out, name, inputs, (g) => backward(name, root, inputs, g));
}

function evaluate(name: string, root: Expr, inputs: readonly Tensor[], outShape: readonly number[]): Tensor {
  const out = emptyTensor(outShape);
  if (out.size === 0) return out;
  const layout = layoutOf(outShape, inputs.map((t) => t.shape));
  const emitter = new Emitter((k) => `in${k}[${layout.strides[k] ? `o${k}` : "i"}]`);
  const result = emitter.emit(root);
  const kernel = kernelFor(`elementwise/${structureKey(root)}/${layout.key}`, () => ({
    name,
    params: { ...indexParams(layout), ...constParams(emitter.constants.length) },
    bindings: [...inputs.map((_, k) => ({ name: `in${k}` })), { name: "out", write: true }],
    code: `${WGSL_MATH}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i >= params.count) { return; }
  ${offsetCode(layout)}
  ${emitter.lines.join("\n  ")}
  out[i] = ${result};
}`,
  }));
  // Tensors beyond one storage binding are walked a window at a time; broadcast inputs are bound whole.
  for (const [start, length] of bindingWindows(out.size)) {
    dispatch(
      kernel,
      [...indexValues(layout, length, start), ...emitter.constants],
      [
        ...inputs.map((t, k) => (layout.strides[k] ? t.range() : t.window(start, length))),
        out.window(start, length),
      ],
      grid(length, 256),
    );
  }
  return out;
}

function constParams(count: number): Record<string, "f32"> {
  const params: Record<string, "f32"> = {};
  for (let c = 0; c < count; c++) params[`c${c}`] = "f32";
  return params;
}

function backward(name: string, root: Expr, inputs: readonly Tensor[], g: Tensor): (Tensor | null)[] {
  const gradInput = new Expr({ kind: "input", index: inputs.length });
  const exprs = gradientExprs(root, inputs.length, gradInput)
    .map((e, k) => (inputs[k].requiresGrad ? e : null));
  const grads: (Tensor | null)[] = inputs.map(() => null);
  const computed: number[] = [];
  exprs.forEach((e, k) => {
    if (!e) return;
    if (e === gradInput) grads[k] = g.view();
    else computed.push(k);
  });
  if (computed.length > 0) {
    const all = [...inputs, g];
    const layout = layoutOf(g.shape, all.map((t) => t.shape));
    const emitter = new Emitter((k) => `in${k}[${layout.strides[k] ? `o${k}` : "i"}]`);
    const results = computed.map((k) => emitter.emit(exprs[k]!));
    const variant = `elementwise_grad/${structureKey(root)}/${computed.join(",")}/${layout.key}`;
    const kernel = kernelFor(variant, () => ({
      name: `${name}_backward`,
      params: { ...indexParams(layout), ...constParams(emitter.constants.length) },
      bindings: [
        ...all.map((_, k) => ({ name: `in${k}` })),
        ...computed.map((k) => ({ name: `grad${k}`, write: true })),
      ],
      code: `${WGSL_MATH}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = ${linearIndex(256)};
  if (i >= params.count) { return; }
  ${offsetCode(layout)}
  ${emitter.lines.join("\n  ")}
  ${computed.map((k, j) => `grad${k}[i] = ${results[j]};`).join("\n  ")}
}`,
    }));
    const outputs = computed.map(() => emptyTensor(g.shape));
    for (const [start, length] of bindingWindows(g.size)) {
      dispatch(
        kernel,
        [...indexValues(layout, length, start), ...emitter.constants],
        [
          ...all.map((t, k) => (layout.strides[k] ? t.range() : t.window(start, length))),
          ...outputs.map((t) => t.window(start, length)),
        ],
        grid(length, 256),
      );
    }
    computed.forEach((k, j) => (grads[k] = outputs[j]));
  }
  return grads.map((grad, k) => {
    if (!grad || sameShape(grad.shape, inputs[k].shape)) return grad;
    const reduced = sumToShape(grad, inputs[k].shape);
    grad.dispose();
    return reduced;
  });
}

/** A tensor or a number (a scalar broadcast to the tensor's shape). */
export type Operand = Tensor | number;

function binaryOp(op: Binary, a: Operand, b: Operand): Tensor {
  if (typeof a === "number" && typeof b === "number") {
    throw new Error(`${op}: at least one operand must be a tensor`);
  }
  const tensors = [a, b].filter((x): x is Tensor => typeof x !== "number");
  let next = 0;
  const operands = [a, b].map((
    x,
  ) => (typeof x === "number" ? x : new Expr({ kind: "input", index: next++ })));
  return fused(tensors, () => binary(op, operands[0], operands[1]), op);
}

/** a + b, broadcasting. */
export function add(a: Operand, b: Operand): Tensor {
  return binaryOp("add", a, b);
}
/** a - b, broadcasting. */
export function sub(a: Operand, b: Operand): Tensor {
  return binaryOp("sub", a, b);
}
/** a * b, broadcasting. */
export function mul(a: Operand, b: Operand): Tensor {
  return binaryOp("mul", a, b);
}
/** a / b, broadcasting. */
export function div(a: Operand, b: Operand): Tensor {
  return binaryOp("div", a, b);
}
/** a * s for a number s. */
export function scale(a: Tensor, s: number): Tensor {
  return fused([a], (x) => x.mul(s), "scale");
}
/** -a */
export function neg(a: Tensor): Tensor {
  return fused([a], (x) => x.neg(), "neg");
}
/** e^a */
export function exp(a: Tensor): Tensor {
  return fused([a], (x) => x.exp(), "exp");
}
/** ln a */
export function log(a: Tensor): Tensor {
  return fused([a], (x) => x.log(), "log");
}
/** sqrt(a) */
export function sqrt(a: Tensor): Tensor {
  return fused([a], (x) => x.sqrt(), "sqrt");
}
/** tanh(a), safe for large |a| */
export function tanh(a: Tensor): Tensor {
  return fused([a], (x) => x.tanh(), "tanh");
}
/** logistic sigmoid */
export function sigmoid(a: Tensor): Tensor {
  return fused([a], (x) => x.sigmoid(), "sigmoid");
}
/** max(a, 0) */
export function relu(a: Tensor): Tensor {
  return fused([a], (x) => x.relu(), "relu");
}
/** GELU in its exact erf form (BERT, RoBERTa) or its tanh approximation (GPT-2's `gelu_new`). */
export function gelu(a: Tensor, form: GeluForm = "erf"): Tensor {
  return fused([a], (x) => x.gelu(form), `gelu_${form}`);
}

/** Checks that two tensors have the same shape, naming the op; used by ops without broadcasting. */
export function assertSameShape(op: string, a: Tensor, b: Tensor): void {
  if (!sameShape(a.shape, b.shape)) {
    throw new Error(`${op}: shapes ${formatShape(a.shape)} and ${formatShape(b.shape)} differ`);
  }
}

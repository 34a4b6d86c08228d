/**
 * Elementwise ops with NumPy broadcasting, and fusion of a chain of them into one kernel.
 *
 * Every elementwise op is an expression over its inputs ({@linkcode Expr}, built from the op records
 * of elementwise_ops.ts); {@linkcode fused} compiles any such expression to one WGSL kernel, and its
 * backward to one more kernel that computes the gradients of all inputs at once from the records'
 * symbolic derivatives. `add`, `gelu` and the others are one-node expressions of the same machinery.
 * Constants travel as uniforms, so changing a scale does not compile a new pipeline.
 *
 * @module
 */
import { attachGrad, emptyTensor, expectTensor, type Tensor } from "../engine/tensor.ts";
import { broadcastShapes, sameShape } from "../engine/shape.ts";
import { recordElementwise, structureKey } from "./elementwise_kernel.ts";
import {
  type Binary,
  binary,
  BINARY_OPS,
  Expr,
  type GeluForm,
  type MethodUnary,
  unary,
  UNARY_OPS,
} from "./elementwise_ops.ts";
import { sumToShape } from "./reduce.ts";

/**
 * The local derivatives of a node with respect to its operands, as expressions, from the op records;
 * `self` is the node itself so that exp, tanh, sqrt and sigmoid reuse their forward value.
 */
function localDerivatives(self: Expr): [Expr, Expr][] {
  const n = self.node;
  if (n.kind === "unary") {
    const { derivative } = UNARY_OPS[n.op];
    if (!derivative) throw new Error(`elementwise: ${n.op} has no derivative (no double backward)`);
    return [[n.a, derivative(n.a, self)]];
  }
  if (n.kind === "binary") {
    const [da, db] = BINARY_OPS[n.op].derivative(n.a, n.b);
    return [[n.a, da], [n.b, db]];
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

function checkInputs(op: string, inputs: readonly Tensor[]): void {
  inputs.forEach((t, i) => expectTensor(op, t, inputs.length > 1 ? `input ${i}` : "its input"));
  for (const t of inputs) {
    if (t.dtype !== "float32") throw new Error(`${op}: ${t.describe()} is not float32`);
  }
}

/**
 * Computes `fn` over its inputs elementwise, with broadcasting, as one kernel; its gradient is one
 * more kernel (plus a sum over broadcast dimensions where an input was broadcast).
 *
 * ```ts
 * import { fused, initGpu, tensor } from "@multimodel/multimodel";
 * await initGpu();
 * const x = tensor([[1, -2], [3, 4]]);
 * const bias = tensor([0.5, -0.5]);
 * const y = fused([x, bias], (x, b) => x.add(b).gelu("tanh")); // gelu(x + bias), one kernel
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
  recordElementwise({
    name,
    key: `elementwise/${structureKey(root)}`,
    exprs: [root],
    inputs,
    outputs: [out],
    outputNames: ["out"],
    shape: outShape,
  });
  return out;
}

function backward(name: string, root: Expr, inputs: readonly Tensor[], g: Tensor): (Tensor | null)[] {
  const gradInput = new Expr({ kind: "input", index: inputs.length });
  const exprs = gradientExprs(root, inputs.length, gradInput)
    .map((e, k) => (inputs[k].requiresGrad ? e : null));
  const grads: (Tensor | null)[] = inputs.map(() => null);
  const computed: number[] = [];
  exprs.forEach((e, k) => {
    if (!e) return;
    if (e === gradInput) grads[k] = g.detach();
    else computed.push(k);
  });
  if (computed.length > 0) {
    const outputs = computed.map(() => emptyTensor(g.shape));
    recordElementwise({
      name: `${name}_backward`,
      // Keyed by the gradients' own structure: the forward's structure does not fix it, since `times`
      // folds constants by value (x * -1 and x * 5 differentiate to different kernels).
      key: `elementwise_grad/${computed.map((k) => `${k}:${structureKey(exprs[k]!)}`).join("|")}`,
      exprs: computed.map((k) => exprs[k]!),
      inputs: [...inputs, g],
      outputs,
      outputNames: computed.map((k) => `grad${k}`),
      shape: g.shape,
    });
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
  for (const [x, name] of [[a, "a"], [b, "b"]] as const) {
    if (typeof x !== "number") expectTensor(op, x, `operand ${name} (a Tensor or a number)`);
  }
  const tensors = [a, b].filter((x): x is Tensor => typeof x !== "number");
  let next = 0;
  const operands = [a, b].map((
    x,
  ) => (typeof x === "number" ? x : new Expr({ kind: "input", index: next++ })));
  return fused(tensors, () => binary(op, operands[0], operands[1]), op);
}

function unaryOp(op: MethodUnary, a: Tensor): Tensor {
  return fused([a], (x) => unary(op, x), op);
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
  return unaryOp("neg", a);
}
/** e^a */
export function exp(a: Tensor): Tensor {
  return unaryOp("exp", a);
}
/** ln a */
export function log(a: Tensor): Tensor {
  return unaryOp("log", a);
}
/** sqrt(a) */
export function sqrt(a: Tensor): Tensor {
  return unaryOp("sqrt", a);
}
/** tanh(a), safe for large |a| */
export function tanh(a: Tensor): Tensor {
  return unaryOp("tanh", a);
}
/** logistic sigmoid */
export function sigmoid(a: Tensor): Tensor {
  return unaryOp("sigmoid", a);
}
/** max(a, 0) */
export function relu(a: Tensor): Tensor {
  return unaryOp("relu", a);
}
/** GELU in its exact erf form (BERT, RoBERTa) or its tanh approximation (GPT-2's `gelu_new`). */
export function gelu(a: Tensor, form: GeluForm = "erf"): Tensor {
  return fused([a], (x) => x.gelu(form), `gelu_${form}`);
}

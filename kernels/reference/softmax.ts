/**
 * Float64 reference of softmax and log-softmax along one axis, forward and backward.
 *
 * @module
 */
import { type Array64, sizeOf } from "./array.ts";

/** Calls `fn` with the flat indices of every line of `x` along `axis`. */
function forEachLine(x: Array64, axis: number, fn: (indices: number[]) => void): void {
  const outer = sizeOf(x.shape.slice(0, axis));
  const length = x.shape[axis];
  const inner = sizeOf(x.shape.slice(axis + 1));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      fn(Array.from({ length }, (_, l) => (o * length + l) * inner + i));
    }
  }
}

/** Softmax (`log` false) or log-softmax (`log` true) of x along `axis` (non-negative). */
export function softmaxForward(x: Array64, axis: number, log = false): Array64 {
  const y = new Float64Array(x.data.length);
  forEachLine(x, axis, (indices) => {
    const m = indices.reduce((top, i) => Math.max(top, x.data[i]), -Infinity); // no spread: rows may be long
    let s = 0;
    for (const i of indices) s += Math.exp(x.data[i] - m);
    for (const i of indices) y[i] = log ? x.data[i] - m - Math.log(s) : Math.exp(x.data[i] - m) / s;
  });
  return { shape: [...x.shape], data: y };
}

/**
 * Gradient of sum(dy * f(x)) for f = softmax (dx = y * (dy - sum(dy * y))) or log-softmax
 * (dx = dy - exp(y) * sum(dy)) along `axis`.
 */
export function softmaxBackward(x: Array64, dy: ArrayLike<number>, axis: number, log = false): Array64 {
  const y = softmaxForward(x, axis, log).data;
  const dx = new Float64Array(x.data.length);
  forEachLine(x, axis, (indices) => {
    let s = 0;
    for (const i of indices) s += log ? dy[i] : dy[i] * y[i];
    for (const i of indices) dx[i] = log ? dy[i] - Math.exp(y[i]) * s : y[i] * (dy[i] - s);
  });
  return { shape: [...x.shape], data: dx };
}

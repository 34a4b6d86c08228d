/**
 * Float64 reference of the layout ops (permute, narrow, concat). Their backward passes are the
 * inverse permutation, a zero-padded placement, and slicing the gradient.
 *
 * @module
 */
import { type Array64, coordinates, sizeOf } from "./array.ts";

function flatIndex(coord: readonly number[], shape: readonly number[]): number {
  let index = 0;
  for (let r = 0; r < shape.length; r++) index = index * shape[r] + coord[r];
  return index;
}

/** Output axis i is input axis order[i]. */
export function permute(x: Array64, order: readonly number[]): Array64 {
  const shape = order.map((a) => x.shape[a]);
  const data = new Float64Array(x.data.length);
  for (let i = 0; i < data.length; i++) {
    const coord = coordinates(i, shape);
    const source = new Array(x.shape.length);
    order.forEach((a, r) => (source[a] = coord[r]));
    data[i] = x.data[flatIndex(source, x.shape)];
  }
  return { shape, data };
}

/** Elements start..start+length-1 of `axis`. */
export function narrow(x: Array64, axis: number, start: number, length: number): Array64 {
  const shape = x.shape.map((d, i) => (i === axis ? length : d));
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    const coord = coordinates(i, shape);
    coord[axis] += start;
    data[i] = x.data[flatIndex(coord, x.shape)];
  }
  return { shape, data };
}

/** The gradient of narrow: `g` placed at start..start+length-1 of `axis` in zeros of `shape`. */
export function narrowBackward(g: Array64, shape: readonly number[], axis: number, start: number): Array64 {
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < g.data.length; i++) {
    const coord = coordinates(i, g.shape);
    coord[axis] += start;
    data[flatIndex(coord, shape)] = g.data[i];
  }
  return { shape: [...shape], data };
}

/** Joins along `axis`. */
export function concat(xs: readonly Array64[], axis: number): Array64 {
  const shape = xs[0].shape.map((d, i) => (i === axis ? xs.reduce((s, x) => s + x.shape[axis], 0) : d));
  const data = new Float64Array(sizeOf(shape));
  let start = 0;
  for (const x of xs) {
    for (let i = 0; i < x.data.length; i++) {
      const coord = coordinates(i, x.shape);
      coord[axis] += start;
      data[flatIndex(coord, shape)] = x.data[i];
    }
    start += x.shape[axis];
  }
  return { shape, data };
}

/**
 * Float64 CPU arrays for the reference implementations: the trusted, slow and obvious versions of
 * every kernel that tests compare the WGSL kernels against. They share nothing with the engine, not
 * even its shape helpers, so that a mistake there cannot hide in both sides of a comparison.
 *
 * @module
 */

/** A float64 array with a shape (row-major). */
export interface Array64 {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Values, row-major. */
  readonly data: Float64Array;
}

/** Number of elements of a shape. */
export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** Builds an Array64, widening the values; throws if they do not fill the shape. */
export function array64(shape: readonly number[], values: ArrayLike<number>): Array64 {
  if (values.length !== sizeOf(shape)) {
    throw new Error(`array64: ${values.length} values for shape [${shape.join(", ")}]`);
  }
  return { shape: [...shape], data: Float64Array.from(values) };
}

/** The broadcast shape of two shapes (NumPy rules). */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`broadcast: [${a}] and [${b}]`);
    out.push(Math.max(da, db) === 0 ? 0 : da === 1 ? db : da);
  }
  return out;
}

/** Index into an array of `shape` for the output coordinate `coord` of a broadcast result. */
export function broadcastIndex(shape: readonly number[], coord: readonly number[]): number {
  let index = 0;
  const offset = coord.length - shape.length;
  for (let i = 0; i < shape.length; i++) index = index * shape[i] + (shape[i] === 1 ? 0 : coord[offset + i]);
  return index;
}

/** Coordinates of flat index `i` in `shape`. */
export function coordinates(i: number, shape: readonly number[]): number[] {
  const coord = new Array(shape.length);
  for (let r = shape.length - 1; r >= 0; r--) {
    coord[r] = i % shape[r];
    i = Math.floor(i / shape[r]);
  }
  return coord;
}

/** Applies `f` elementwise over broadcast inputs. */
export function mapBroadcast(inputs: readonly Array64[], f: (...xs: number[]) => number): Array64 {
  const shape = inputs.map((x) => x.shape).reduce((s, t) => broadcastShape(s, t));
  const data = new Float64Array(sizeOf(shape));
  const args = new Array(inputs.length);
  for (let i = 0; i < data.length; i++) {
    const coord = coordinates(i, shape);
    for (let k = 0; k < inputs.length; k++) args[k] = inputs[k].data[broadcastIndex(inputs[k].shape, coord)];
    data[i] = f(...args);
  }
  return { shape, data };
}

/** Sums a broadcast result back to `shape` (the gradient of a broadcast input). */
export function sumToShape(x: Array64, shape: readonly number[]): Array64 {
  const data = new Float64Array(sizeOf(shape));
  for (let i = 0; i < x.data.length; i++) data[broadcastIndex(shape, coordinates(i, x.shape))] += x.data[i];
  return { shape: [...shape], data };
}

/** Sum over one axis (all axes when omitted), without keeping the axis. */
export function sumAxis(x: Array64, axis?: number): Array64 {
  if (axis === undefined) return { shape: [], data: Float64Array.of(x.data.reduce((s, v) => s + v, 0)) };
  const outer = sizeOf(x.shape.slice(0, axis));
  const length = x.shape[axis];
  const inner = sizeOf(x.shape.slice(axis + 1));
  const data = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let r = 0; r < length; r++) {
      for (let i = 0; i < inner; i++) data[o * inner + i] += x.data[(o * length + r) * inner + i];
    }
  }
  return { shape: x.shape.filter((_, i) => i !== axis), data };
}

/** erf to about 1e-15: Taylor series below 2.5, continued fraction for erfc above. */
export function erf(x: number): number {
  const z = Math.abs(x);
  let r: number;
  if (z < 2.5) {
    let term = z;
    let total = z;
    for (let n = 1; n < 80; n++) {
      term *= -z * z / n;
      const add = term / (2 * n + 1);
      total += add;
      if (Math.abs(add) < 1e-17 * Math.abs(total)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * total;
  } else {
    // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))), evaluated from the tail.
    let f = z;
    for (let n = 60; n >= 1; n--) f = z + (n / 2) / f;
    r = 1 - Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}

/**
 * Shape arithmetic shared by ops: sizes, broadcasting and the error messages that name the op and
 * the shapes involved.
 *
 * @module
 */

/** Number of elements of a shape. */
export function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (const d of shape) size *= d;
  return size;
}

/** Formats a shape as `[2, 3]`. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Throws unless every dimension is a non-negative integer. */
export function assertShape(shape: readonly number[], op: string): void {
  if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`${op}: invalid shape ${formatShape(shape)}`);
  }
}

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The broadcast shape of several shapes (NumPy rules: align from the right, a dimension of 1
 * stretches); throws an error naming the op and the shapes when they do not broadcast.
 */
export function broadcastShapes(op: string, shapes: readonly (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const sd = s[s.length - rank + i] ?? 1;
      if (sd === 1) continue;
      if (d !== 1 && d !== sd) {
        throw new Error(`${op}: shapes ${shapes.map(formatShape).join(" and ")} do not broadcast`);
      }
      d = sd;
    }
    out.push(d);
  }
  return out;
}

/** Row-major element strides of a contiguous `shape` (the last dimension's is 1). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array(shape.length);
  let stride = 1;
  for (let r = shape.length - 1; r >= 0; r--) {
    strides[r] = stride;
    stride *= shape[r];
  }
  return strides;
}

/** The row-major coordinates of element `index` of a contiguous `shape` whose strides are `strides`. */
export function coordinatesOf(index: number, shape: readonly number[], strides: readonly number[]): number[] {
  return shape.map((d, r) => Math.floor(index / strides[r]) % d);
}

/**
 * Element strides of `shape` when broadcast to `outShape`: 0 along stretched or missing dimensions,
 * so that `index = sum(coordinate[i] * stride[i])` reads the right element.
 */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const strides = new Array(outShape.length).fill(0);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const o = outShape.length - shape.length + i;
    strides[o] = shape[i] === 1 && outShape[o] !== 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

/** Normalises a possibly negative axis for a tensor of the given rank; throws naming the op. */
export function normalizeAxis(axis: number, rank: number, op: string): number {
  if (!Number.isInteger(axis)) {
    const shown = Array.isArray(axis) ? `[${axis}] (one axis at a time)` : JSON.stringify(axis);
    throw new TypeError(`${op}: axis must be an integer, got ${shown}`);
  }
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

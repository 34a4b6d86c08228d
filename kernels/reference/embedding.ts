/**
 * Float64 reference of the embedding gather and its gradient.
 *
 * @module
 */

/** out[n, c] = table[ids[n], c] for a [V, C] table (row-major); throws on an id outside [0, V). */
export function gatherRowsForward(
  table: ArrayLike<number>,
  cols: number,
  ids: ArrayLike<number>,
): Float64Array {
  const vocab = table.length / cols;
  const out = new Float64Array(ids.length * cols);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (!(id >= 0 && id < vocab)) throw new RangeError(`gatherRowsForward: id ${id} outside [0, ${vocab})`);
    for (let c = 0; c < cols; c++) out[n * cols + c] = table[id * cols + c];
  }
  return out;
}

/**
 * dtable[v, c] = sum over positions n with ids[n] = v of g[n, c]; zero for unused rows and for the
 * padding row when `paddingIndex` is given.
 */
export function gatherRowsBackward(
  g: ArrayLike<number>,
  vocab: number,
  cols: number,
  ids: ArrayLike<number>,
  paddingIndex: number | null = null,
): Float64Array {
  const grad = new Float64Array(vocab * cols);
  for (let n = 0; n < ids.length; n++) {
    if (ids[n] === paddingIndex) continue;
    for (let c = 0; c < cols; c++) grad[ids[n] * cols + c] += g[n * cols + c];
  }
  return grad;
}

/**
 * Every elementwise op record (kernels/elementwise_ops.ts) against the float64 reference it points
 * to, forward and backward, so a new record is tested without a new test; and kernel names that
 * stay with their op when two ops compile to the same WGSL.
 */
import { type Tensor, tensor } from "../engine/tensor.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { withKernels } from "../engine/variants.ts";
import * as elementwise from "../kernels/elementwise.ts";
import { fused, mul, scale } from "../kernels/elementwise.ts";
import { type Binary, binary, BINARY_OPS, type Unary, unary, UNARY_OPS } from "../kernels/elementwise_ops.ts";
import { assertClose, expectError, randomValues, setup } from "./helpers.ts";

await setup();

/** Sizes below, at and above a workgroup and a texel. */
const SIZES = [1, 7, 256, 1001];

/** Indices where every value is finite (log and sqrt of negatives are NaN on both sides). */
const finiteAt = (...arrays: ArrayLike<number>[]) =>
  Array.from({ length: arrays[0].length }, (_, i) => i).filter((i) =>
    arrays.every((a) => Number.isFinite(a[i]))
  );
const pick = (values: ArrayLike<number>, at: number[]) => at.map((i) => values[i]);

/** Runs `check` under each form software adapters choose between by size (engine/texels.ts). */
async function bothForms(check: () => Promise<void>): Promise<void> {
  for (const variant of ["elementwise:texel", "elementwise:scalar"]) await withKernels(variant, check);
}

Deno.test("every unary op record matches its float64 reference, forward and backward", () =>
  bothForms(async () => {
    for (const op of Object.keys(UNARY_OPS) as Unary[]) {
      const { reference, derivative } = UNARY_OPS[op];
      for (const size of SIZES) {
        const values = randomValues(size, size, 2);
        const upstream = randomValues(size, size + 1);
        const x = tensor(values, { requiresGrad: true });
        const y = fused([x], (a) => unary(op, a), op);
        const expected = Array.from(values, (v) => reference.f(v));
        const out = await y.data();
        const at = finiteAt(expected);
        const label = `${op}, size ${size}`;
        assertClose(pick(out, at), pick(expected, at), { atol: 2e-6, rtol: 2e-6 }, `${label} forward`);
        if (!derivative) {
          expectError(
            () => y.backward(tensor(upstream)),
            `elementwise: ${op} has no derivative (no double backward)`,
          );
        } else {
          if (!reference.df) throw new Error(`${op} has a derivative but its reference has no df`);
          y.backward(tensor(upstream));
          const grad = await x.grad!.data();
          const expectedGrad = Array.from(values, (v, i) => reference.df!(v) * upstream[i]);
          const gradAt = finiteAt(expected, expectedGrad);
          assertClose(
            pick(grad, gradAt),
            pick(expectedGrad, gradAt),
            { atol: 5e-6, rtol: 5e-6 },
            `${label} backward`,
          );
        }
        x.dispose();
        y.dispose();
      }
    }
  }));

Deno.test("every binary op record matches its float64 reference, forward and both gradients", () =>
  bothForms(async () => {
    for (const op of Object.keys(BINARY_OPS) as Binary[]) {
      const { reference } = BINARY_OPS[op];
      for (const size of SIZES) {
        const [av, bv] = [randomValues(size, size, 2), randomValues(size, size + 2, 2)];
        const upstream = randomValues(size, size + 1);
        const a = tensor(av, { requiresGrad: true }), b = tensor(bv, { requiresGrad: true });
        const y = fused([a, b], (x, z) => binary(op, x, z), op);
        y.backward(tensor(upstream));
        const label = `${op}, size ${size}`;
        const expect = (f: (x: number, z: number) => number, scaled: boolean) =>
          Array.from(av, (x, i) => f(x, bv[i]) * (scaled ? upstream[i] : 1));
        assertClose(
          await y.data(),
          expect(reference.f, false),
          { atol: 2e-6, rtol: 2e-6 },
          `${label} forward`,
        );
        const tolerance = { atol: 5e-6, rtol: 5e-6 };
        assertClose(await a.grad!.data(), expect(reference.da, true), tolerance, `${label} d/da`);
        assertClose(await b.grad!.data(), expect(reference.db, true), tolerance, `${label} d/db`);
        for (const t of [a, b, y]) t.dispose();
      }
    }
  }));

Deno.test("every method op is an Expr method and an exported function computing the same", async () => {
  const exported = elementwise as unknown as Record<string, (x: Tensor) => Tensor>;
  const values = randomValues(33, 5).map((v) => Math.abs(v) + 0.1);
  const x = tensor(values);
  for (const op of Object.keys(UNARY_OPS) as Unary[]) {
    if (!UNARY_OPS[op].method) continue;
    if (typeof exported[op] !== "function") throw new Error(`kernels/elementwise.ts exports no ${op}()`);
    const viaMethod = await fused([x], (a) => (a as unknown as Record<string, () => typeof a>)[op]()).data();
    assertClose(await exported[op](x).data(), viaMethod, { atol: 0 }, `${op}() and Expr.${op}()`);
  }
});

Deno.test("ops that compile to the same WGSL dispatch under their own names, forward and backward", () => {
  const x = tensor(randomValues(40, 9), { requiresGrad: true });
  const names = (fn: () => Tensor) => {
    const { result, dispatches } = traceDispatches(() => {
      const y = fn();
      y.backward(tensor(randomValues(40, 10)));
      return y;
    });
    result.dispose();
    return dispatches.map((d) => d.kernel.replace(/_texel$/, "")).filter((k) => !k.startsWith("accumulate"));
  };
  // scale(x, 2) and mul(x, 2) are both x * constant: one pipeline, two names.
  for (
    const [fn, name] of [[() => scale(x, 2), "scale"], [() => mul(x, 2), "mul"], [
      () => scale(x, 3),
      "scale",
    ]] as const
  ) {
    const listed = names(fn);
    if (listed.join() !== `${name},${name}_backward`) {
      throw new Error(`${name} dispatched as ${listed.join(", ")}`);
    }
  }
});

import { kernelFor } from "../engine/kernel.ts";
import { dispatch } from "../engine/recorder.ts";
import { zeros } from "../engine/tensor.ts";
import { assertClose, expectError, setup } from "./helpers.ts";

await setup();

/** Scalars and arrays in an order that makes WGSL's layout pad: arrays start on 16-byte boundaries. */
const kernel = () =>
  kernelFor("uniforms_test", () => ({
    name: "uniforms_test",
    params: {
      count: "u32",
      offsets: { type: "u32", length: 5 },
      shift: "i32",
      weights: { type: "f32", length: 9 },
      scale: "f32",
    },
    bindings: [{ name: "out", write: true }],
    code: `
@compute @workgroup_size(1)
fn main() {
  out[0] = f32(params.count);
  for (var i = 0u; i < 5u; i++) { out[1u + i] = f32(offsets(i)); }
  out[6] = f32(params.shift);
  for (var i = 0u; i < 9u; i++) { out[7u + i] = weights(i); }
  out[16] = params.scale;
}`,
  }));

const weights = [0.5, -1, 2, 3.25, 4, 5, 6, 7, -8];

Deno.test("dispatch packs named scalars and fixed-size arrays where the WGSL reads them", async () => {
  const out = zeros([17]);
  dispatch(
    kernel(),
    { count: 7, offsets: [10, 11, 12, 13, 14], shift: -3, weights, scale: 0.125 },
    [out.range()],
    [1],
  );
  assertClose(await out.data(), [7, 10, 11, 12, 13, 14, -3, ...weights, 0.125], { atol: 0 }, "uniforms");
  out.dispose();
});

Deno.test("a missing, unknown or misshapen uniform is a type error and an error naming the kernel and key", () => {
  const out = zeros([17]);
  const given = { count: 1, offsets: [0, 0, 0, 0, 0], shift: 0, weights, scale: 1 };
  const { scale: _, ...withoutScale } = given;
  expectError(
    // @ts-expect-error: "scale" is missing.
    () => dispatch(kernel(), withoutScale, [out.range()], [1]),
    'kernel uniforms_test: uniform "scale" is missing',
  );
  expectError(
    // @ts-expect-error: "scales" is not declared.
    () => dispatch(kernel(), { ...given, scales: 2 }, [out.range()], [1]),
    'kernel uniforms_test: unknown uniform "scales" (declared: count, offsets, shift, weights, scale)',
  );
  expectError(
    // @ts-expect-error: an array parameter needs an array.
    () => dispatch(kernel(), { ...given, offsets: 3 }, [out.range()], [1]),
    'kernel uniforms_test: uniform "offsets" needs an array of 5 numbers, got 3',
  );
  expectError(
    () => dispatch(kernel(), { ...given, weights: [1, 2] }, [out.range()], [1]),
    'kernel uniforms_test: uniform "weights" needs an array of 9 numbers, got 1,2',
  );
  out.dispose();
});

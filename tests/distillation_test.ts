import { traceDispatches } from "../engine/recorder.ts";
import { readAll, tensor, tidy } from "../engine/tensor.ts";
import { withKernels } from "../engine/variants.ts";
import { mutualDistillation } from "../kernels/distillation.ts";
import { fused } from "../kernels/elementwise.ts";
import { unary, UNARY_OPS } from "../kernels/elementwise_ops.ts";
import * as ref from "../kernels/reference/distillation.ts";
import { assertClose, expectError, f64, maxAbs, numericGradient, randomValues, setup } from "./helpers.ts";

await setup();

Deno.test("reference backward agrees with central finite differences", () => {
  const cols = 4;
  const logits = f64(randomValues(3 * cols, 1, 2));
  const peers = [f64(randomValues(3 * cols, 2, 2)), f64(randomValues(3 * cols, 3, 2))];
  const weights = [1, 0, 2];
  const numeric = numericGradient((x) => ref.distillationForward(x, peers, cols, weights), logits);
  assertClose(ref.distillationBackward(logits, peers, cols, weights), numeric, { atol: 1e-8 }, "gradient");
});

Deno.test("KL is zero towards an identical peer and positive otherwise", () => {
  const logits = f64(randomValues(10, 4, 3));
  assertClose([ref.distillationForward(logits, [logits], 5)], [0], { atol: 1e-12 }, "identical");
  if (!(ref.distillationForward(logits, [f64(randomValues(10, 5, 3))], 5) > 0)) {
    throw new Error("not positive");
  }
});

async function check(rows: number, cols: number, peers: number, weighted: boolean, seed: number) {
  const logitValues = randomValues(rows * cols, seed, 3);
  const peerValues = Array.from({ length: peers }, (_, j) => randomValues(rows * cols, seed + 10 + j, 3));
  const weights = weighted
    ? Float32Array.from({ length: rows }, (_, r) => (r % 3 === 1 ? 0 : 1 + (r % 2)))
    : null;
  const total = weights ? weights.reduce((s, v) => s + v, 0) : rows;
  if (weights && total === 0) return;
  const logits = tensor(logitValues, { shape: [rows, cols], requiresGrad: true });
  const out = tidy(() => {
    const peerTensors = peerValues.map((v) => tensor(v, { shape: [rows, cols], requiresGrad: true }));
    const out = mutualDistillation(
      logits,
      peerTensors,
      weights ? { rowWeights: { weights: tensor(weights), total } } : {},
    );
    out.backward();
    if (peerTensors.some((p) => p.grad)) throw new Error("a peer received a gradient");
    return out;
  });
  const [loss, grad] = await readAll([out, logits.grad!]);
  out.dispose();
  const label = `rows ${rows}, cols ${cols}, ${peers} peers${weighted ? ", weighted" : ""}`;
  const expected = ref.distillationForward(logitValues, peerValues, cols, weights ?? undefined);
  assertClose(loss, [expected], { atol: 2e-6, rtol: 1e-5 }, `${label}: loss`);
  const expectedGrad = ref.distillationBackward(logitValues, peerValues, cols, weights ?? undefined);
  assertClose(grad, expectedGrad, { atol: 1e-6 * Math.max(1, maxAbs(expectedGrad)) }, `${label}: gradient`);
  logits.grad!.dispose();
  logits.dispose();
}

Deno.test("the GPU op matches the reference in value and gradient at every size class", async () => {
  let seed = 100;
  for (const [rows, cols] of [[1, 2], [7, 5], [33, 130], [2, 1]]) {
    for (const peers of [1, 2]) {
      for (const weighted of [false, true]) await check(rows, cols, peers, weighted, seed++);
    }
  }
});

Deno.test("bad peers and weights are errors naming the shapes", () => {
  const logits = tensor(new Float32Array(6), { shape: [2, 3] });
  expectError(() => mutualDistillation(logits, []), "mutualDistillation: no peers given");
  expectError(
    () => mutualDistillation(logits, [tensor(new Float32Array(6), { shape: [3, 2] })]),
    "mutualDistillation: peer tensor float32[3, 2] does not match logits [2, 3]",
  );
  expectError(
    () =>
      mutualDistillation(logits, [logits], {
        rowWeights: { weights: tensor(new Float32Array(3)), total: 1 },
      }),
    "mutualDistillation: row weights tensor float32[3] with total 1 for 2 rows",
  );
});

/** The GPU loss and gradient with respect to `logits` [rows, cols], the peers and weights as given. */
async function gpuDistillation(
  logitValues: Float32Array,
  peerValues: readonly Float32Array[],
  cols: number,
  weights?: Float32Array,
): Promise<{ loss: number; grad: Float32Array }> {
  const rows = logitValues.length / cols;
  const logits = tensor(logitValues, { shape: [rows, cols], requiresGrad: true });
  const out = tidy(() => {
    const out = mutualDistillation(
      logits,
      peerValues.map((v) => tensor(v, { shape: [rows, cols] })),
      weights ? { rowWeights: { weights: tensor(weights), total: weights.reduce((s, v) => s + v, 0) } } : {},
    );
    out.backward();
    return out;
  });
  const [loss, grad] = await readAll([out, logits.grad!]);
  for (const t of [out, logits.grad!, logits]) t.dispose();
  return { loss: loss[0], grad: grad as Float32Array };
}

function assertFinite(values: ArrayLike<number>, label: string): void {
  const at = Array.from(values).findIndex((v) => !Number.isFinite(v));
  if (at >= 0) throw new Error(`${label}: element ${at} is ${values[at]}`);
}

/** Row r of [rows, cols] values. */
const row = (values: ArrayLike<number>, cols: number, r: number) =>
  Array.from(values).slice(r * cols, r * cols + cols);

Deno.test("a peer row holding NaN or Inf adds nothing to the loss and exactly nothing to the gradient", async () => {
  const [rows, cols] = [6, 5];
  const logitValues = randomValues(rows * cols, 201, 3);
  const finitePeer = randomValues(rows * cols, 202, 3);
  const faulted = randomValues(rows * cols, 203, 3);
  faulted[1 * cols + 2] = NaN;
  faulted[3 * cols + 0] = Infinity;
  faulted[4 * cols + 4] = -Infinity;
  const bad = [1, 3, 4];
  // The expectation from the finite formula alone: the faulted rows replaced by anything finite and
  // weighted 0, the sum rescaled to the full rows' weight (the denominators do not change).
  const repaired = Float64Array.from(faulted, (v, i) => (bad.includes(Math.floor(i / cols)) ? 0 : v));
  const kept = Float64Array.from({ length: rows }, (_, r) => (bad.includes(r) ? 0 : 1));
  const share = (rows - bad.length) / rows;
  for (const weights of [undefined, Float32Array.from([1, 2, 0, 1, 3, 2])]) {
    const label = weights ? "weighted" : "unweighted";
    const w = weights ?? new Float32Array(rows).fill(1);
    const keptWeights = w.map((v, r) => v * kept[r]);
    const keptShare = keptWeights.reduce((s, v) => s + v, 0) / w.reduce((s, v) => s + v, 0);
    const alone = {
      loss: ref.distillationForward(logitValues, [repaired], cols, keptWeights) * keptShare,
      grad: ref.distillationBackward(logitValues, [repaired], cols, keptWeights).map((g) => g * keptShare),
    };
    if (!weights && keptShare !== share) throw new Error("share");
    assertClose(
      [ref.distillationForward(logitValues, [faulted], cols, weights)],
      [alone.loss],
      { atol: 1e-12 },
      `${label}: reference loss`,
    );
    assertClose(
      ref.distillationBackward(logitValues, [faulted], cols, weights),
      alone.grad,
      { atol: 1e-12 },
      `${label}: reference gradient`,
    );

    const one = await gpuDistillation(logitValues, [faulted], cols, weights);
    assertFinite([one.loss], `${label}: loss`);
    assertFinite(one.grad, `${label}: gradient`);
    assertClose([one.loss], [alone.loss], { atol: 2e-6, rtol: 1e-5 }, `${label}: loss`);
    assertClose(one.grad, alone.grad, { atol: 1e-6 * Math.max(1, maxAbs(alone.grad)) }, `${label}: gradient`);
    for (const r of bad) {
      if (row(one.grad, cols, r).some((g) => g !== 0)) {
        throw new Error(`${label}: row ${r} has gradient ${row(one.grad, cols, r)}, expected exactly 0`);
      }
    }

    // Next to a finite peer: the mean over both peers, the faulted rows counting 0 for the faulted one.
    const two = await gpuDistillation(logitValues, [finitePeer, faulted], cols, weights);
    const expectedLoss = (ref.distillationForward(logitValues, [finitePeer], cols, weights) + alone.loss) / 2;
    const finiteGrad = ref.distillationBackward(logitValues, [finitePeer], cols, weights);
    const expectedGrad = finiteGrad.map((g, i) => (g + alone.grad[i]) / 2);
    assertClose(
      [ref.distillationForward(logitValues, [finitePeer, faulted], cols, weights)],
      [expectedLoss],
      { atol: 1e-12 },
      `${label}, two peers: reference loss`,
    );
    assertFinite(two.grad, `${label}, two peers: gradient`);
    assertClose([two.loss], [expectedLoss], { atol: 2e-6, rtol: 1e-5 }, `${label}, two peers: loss`);
    assertClose(
      two.grad,
      expectedGrad,
      { atol: 1e-6 * Math.max(1, maxAbs(expectedGrad)) },
      `${label}, two peers: gradient`,
    );
  }
});

Deno.test("a wholly NaN or infinite peer next to a finite one halves the finite peer's loss and gradient", async () => {
  for (const [rows, cols, weighted] of [[4, 3, false], [9, 130, true], [1, 2, false]] as const) {
    const logitValues = randomValues(rows * cols, 300 + cols, 3);
    const finitePeer = randomValues(rows * cols, 400 + cols, 3);
    const weights = weighted ? Float32Array.from({ length: rows }, (_, r) => 1 + (r % 3)) : undefined;
    const label = `rows ${rows}, cols ${cols}${weighted ? ", weighted" : ""}`;
    const alone = await gpuDistillation(logitValues, [finitePeer], cols, weights);
    for (const fault of [NaN, Infinity, -Infinity]) {
      const broken = new Float32Array(rows * cols).fill(fault);
      for (const peers of [[finitePeer, broken], [broken, finitePeer]]) {
        const both = await gpuDistillation(logitValues, peers, cols, weights);
        const at = `${label}, ${fault} peer ${peers[0] === broken ? "first" : "second"}`;
        assertFinite(both.grad, `${at}: gradient`);
        // Halving is exact in float32, and the faulted peer's terms are exactly 0.
        assertClose([both.loss], [alone.loss / 2], { atol: 0 }, `${at}: loss`);
        assertClose(both.grad, alone.grad.map((g) => g / 2), { atol: 0 }, `${at}: gradient`);
      }
      const only = await gpuDistillation(logitValues, [broken], cols, weights);
      assertClose([only.loss], [0], { atol: 0 }, `${label}, ${fault} peer alone: loss`);
      assertClose(
        only.grad,
        new Float32Array(rows * cols),
        { atol: 0 },
        `${label}, ${fault} peer alone: gradient`,
      );
    }
    const expected = ref.distillationBackward(logitValues, [finitePeer], cols, weights).map((g) => g / 2);
    assertClose(
      alone.grad.map((g) => g / 2),
      expected,
      { atol: 1e-6 * Math.max(1, maxAbs(expected)) },
      `${label}: against the reference`,
    );
  }
});

Deno.test("is_finite and finite_or_zero match their references on NaN, infinities, zeros, subnormals and extremes", async () => {
  const special = [NaN, Infinity, -Infinity, 0, -0, 1e-45, -1e-45, 1e-40, 1.17549435e-38, 3.4028234e38];
  special.push(-3.4028234e38, 1.5, -2.5, 1e30, -1e-30);
  // 15 values repeated 4 times: each lands once in every lane of a texel (15 = 3 mod 4).
  const values = Float32Array.from({ length: 4 * special.length }, (_, i) => special[i % special.length]);
  const subnormal = (v: number) => v !== 0 && Math.abs(v) < 1.17549435e-38;
  const x = tensor(values);
  for (const variant of ["elementwise:texel", "elementwise:scalar"]) {
    await withKernels(variant, async () => {
      for (const op of ["is_finite", "finite_or_zero"] as const) {
        const { result: y, dispatches } = traceDispatches(() => fused([x], (a) => unary(op, a), op));
        const form = dispatches.map((d) => d.kernel).join();
        if (form !== (variant === "elementwise:texel" ? `${op}_texel` : op)) {
          throw new Error(`${variant}: ${op} dispatched as ${form}`);
        }
        const out = await y.data();
        y.dispose();
        values.forEach((v, i) => {
          const expected = UNARY_OPS[op].reference.f(v);
          // A GPU may flush a subnormal to zero, which is finite all the same.
          const ok = Object.is(out[i], expected) || (subnormal(v) && op === "finite_or_zero" && out[i] === 0);
          if (!ok) throw new Error(`${variant}: ${op}(${v}) at ${i} is ${out[i]}, expected ${expected}`);
        });
      }
    });
  }
  x.dispose();
});

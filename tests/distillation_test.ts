import { readAll, tensor, tidy } from "../engine/tensor.ts";
import { mutualDistillation } from "../kernels/distillation.ts";
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

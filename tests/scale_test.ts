/**
 * Tensors, arenas and the joint optimizer beyond one storage binding, at small sizes: a forced small
 * `maxStorageBindingBytes` makes every windowed path run, and results must equal the unwindowed ones.
 */
import { poolStats } from "../engine/pool.ts";
import { manualSeed } from "../engine/random.ts";
import { traceDispatches } from "../engine/recorder.ts";
import { readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { withKernels } from "../engine/variants.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { ParameterSet } from "../models/parameters.ts";
import { assertBitwiseEqual, assertClose, expectError, setup, withProfile } from "./helpers.ts";

await setup();

/** A GPT-2 whose token table (1000 x 32 floats, 125 KiB) exceeds a 64 KiB binding while its activations fit. */
const WIDE_VOCAB = { vocabSize: 1000, hiddenSize: 32, numLayers: 1, numHeads: 2, maxPositions: 16 };

Deno.test("a parameter beyond one binding lives in one arena chunk and the forward pass equals the unwindowed one", async () => {
  const ids = tensor(Int32Array.from({ length: 8 }, (_, i) => (i * 131) % 1000), { shape: [1, 8] });
  const lossAt = async (limit: number | null) => {
    const run = async () => {
      manualSeed(5);
      const model = new TransformerModel(modelConfig("gpt2", WIDE_VOCAB), { task: "causal-lm", seed: 3 });
      if (limit !== null && model.parameterSet.arena.chunks.length !== 1) {
        throw new Error("one chunk expected");
      }
      const loss = tidy(() => model.forward({ inputIds: ids, labels: ids }).loss!);
      const value = await loss.data();
      model.dispose();
      return value;
    };
    return limit === null ? await run() : await withProfile({ maxStorageBindingBytes: limit }, run);
  };
  assertBitwiseEqual(await lossAt(65536), await lossAt(null), "loss");
});

/** Three small models whose joint arena (about 0.4 MiB) spans several 64 KiB bindings. */
function jointModels(): Record<string, TransformerModel> {
  const shared = { hiddenSize: 32, numHeads: 2, intermediateSize: 64, vocabSize: 200, maxPositions: 16 };
  return {
    bert: new TransformerModel(modelConfig("bert", { ...shared, numLayers: 2 }), {
      name: "bert",
      task: "masked-lm",
      seed: 1,
    }),
    gpt2: new TransformerModel(modelConfig("gpt2", { ...shared, numLayers: 2 }), {
      name: "gpt2",
      task: "causal-lm",
      seed: 2,
    }),
    roberta: new TransformerModel(modelConfig("roberta", { ...shared, numLayers: 1 }), {
      name: "roberta",
      task: "masked-lm",
      seed: 3,
    }),
  };
}

Deno.test("the joint optimizer over an arena beyond one binding and one buffer updates as over one binding", async () => {
  const run = async (clipGradNorm?: number) => {
    manualSeed(9);
    const models = jointModels();
    const optimizer = new MultiModelOptimizer({
      models,
      lr: 1e-2,
      clipGradNorm,
      // The decay mask is numbered across chunks, as the arena is: windows and chunks must find the same bits.
      weightDecay: 0.1,
      decayBiasesAndNorms: false,
      modelWeights: { bert: 1, gpt2: 0.8, roberta: 1.2 },
      gradientSharing: { ratio: 0.3, every: 1 },
      parameterSync: { ratio: 0.2, every: 2 },
      adaptiveLr: { window: 3, min: 0.5, max: 1.5, smoothing: 0.5 },
    });
    const chunks = models.bert.parameterSet.arena.chunks.length;
    let dispatches = 0;
    for (let step = 0; step < 5; step++) {
      const ids = tensor(Int32Array.from({ length: 16 }, (_, i) => 3 + (i * 37 + step * 11) % 190), {
        shape: [2, 8],
      });
      const traced = traceDispatches(() =>
        tidy(() => {
          optimizer.zeroGrad();
          const losses: Record<string, Tensor> = {};
          for (const [name, model] of Object.entries(models)) {
            const loss = model.forward({ inputIds: ids, labels: ids }).loss!;
            loss.backward();
            losses[name] = loss;
          }
          optimizer.logMetrics(losses);
          optimizer.step();
        })
      );
      dispatches = traced.dispatches.filter((d) => d.kernel.startsWith("mm_")).length;
      ids.dispose();
    }
    const values = await readAll(Object.values(models).flatMap((m) => m.parameters.map((p) => p.value)));
    const state = await optimizer.stateDict();
    const norms = Object.values((await optimizer.metrics()).models).map((m) => m.gradNorm);
    optimizer.dispose();
    for (const model of Object.values(models)) model.dispose();
    return { values, state, norms, dispatches, chunks };
  };
  type Run = Awaited<ReturnType<typeof run>>;
  const compare = (name: string, other: Run, whole: Run, exact: boolean) => {
    if (!(other.dispatches > whole.dispatches)) {
      throw new Error(`optimizer dispatches: ${other.dispatches} ${name}, ${whole.dispatches} whole`);
    }
    const check = (a: ArrayLike<number>, b: ArrayLike<number>, label: string) =>
      exact
        ? assertBitwiseEqual(a, b, `${name} ${label}`)
        : assertClose(a, b, { atol: 1e-3 }, `${name} ${label}`);
    whole.values.forEach((v, i) => check(other.values[i], v, `parameter ${i}`));
    for (const [key, moments] of Object.entries(whole.state.moments)) {
      check(other.state.moments[key].expAvg, moments.expAvg, `${key} exp_avg`);
      check(other.state.moments[key].expAvgSq, moments.expAvgSq, `${key} exp_avg_sq`);
    }
  };
  const windowedProfile = { maxStorageBindingBytes: 65536 };
  // An arena of several buffers (128 KiB each: every model spans two), its state read back in several round trips.
  const chunkedProfile = { maxBufferBytes: 131072, maxStorageBindingBytes: 65536 };
  const whole = await run(0.5);
  const windowed = await withProfile(windowedProfile, () => run(0.5));
  compare("windowed", windowed, whole, true);
  assertBitwiseEqual(windowed.state.control, whole.state.control, "windowed control table");
  // The windowed mix's scalar form (members off a vec4) does the same arithmetic.
  compare(
    "windowed, scalar mix",
    await withKernels("mm_mix:scalar", () => withProfile(windowedProfile, () => run(0.5))),
    whole,
    true,
  );
  // Chunks end on whole norm tiles, so tensors after a chunk break sit in other tiles: the gradient
  // norm sums its tiles in another grouping (clipping then differs by rounding); everything else is
  // computed element by element in the same order. Norms agree to rounding; parameters to 1e-3,
  // since AdamW turns rounding in near-zero gradients into steps of up to lr (1e-2).
  const chunked = await withProfile(chunkedProfile, () => run(0.5));
  if (whole.chunks !== 1 || windowed.chunks !== 1 || chunked.chunks < 3) {
    throw new Error(
      `arena chunks: ${whole.chunks} whole, ${windowed.chunks} windowed, ${chunked.chunks} chunked`,
    );
  }
  compare("chunked", chunked, whole, false);
  assertClose(chunked.norms, whole.norms, { rtol: 1e-6 }, "chunked gradient norms");
  compare("chunked without clipping", await withProfile(chunkedProfile, () => run()), await run(), true);
});

Deno.test("models beyond the 2^32 elements the optimizer's kernels address are refused before anything is allocated", () => {
  // Two declared (unallocated) models of eight [8192, 32768] tables each: 2^32 elements together, in
  // chunks below every adapter's largest buffer.
  const models = Object.fromEntries(["a", "b"].map((name) => {
    const set = new ParameterSet(name);
    for (let i = 0; i < 8; i++) {
      set.declare({
        site: "embeddings",
        layer: null,
        layerCount: 1,
        layout: "table",
        role: "token_embedding",
        kind: "weight",
        name: `table${i}`,
        shape: [8192, 32768],
      }, { kind: "zeros" });
    }
    return [name, { parameterSet: set }];
  }));
  const created = poolStats().buffersCreated;
  expectError(
    () => new MultiModelOptimizer({ models }),
    "MultiModelOptimizer: the models' arena spans 4294967296 values with alignment and chunk ends, more than " +
      "the 4294966272 its kernels address",
  );
  if (poolStats().buffersCreated !== created) throw new Error("buffers were created before the refusal");
});

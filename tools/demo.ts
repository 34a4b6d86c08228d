/**
 * `deno task demo`: trains a one-layer GPT-2-style attention model to predict the next character of
 * a short text and prints its falling loss. Every step is recorded on the GPU without readback;
 * losses are read back in one batch every 25 steps. `--steps N` sets the length of the run (200);
 * a bad flag or value exits 2 with one line.
 *
 * @module
 */
import { Random } from "../engine/random.ts";
import { readAll, type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { modelConfig } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { MultiModelOptimizer } from "../optim/multimodel.ts";
import { parseCommand, positiveInteger } from "./args.ts";
import { openGpuOrExit } from "../engine/start.ts";

const TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs. ";
const REPORT_EVERY = 25;
const BATCH = 8;
const LENGTH = 32;

async function main(): Promise<void> {
  const { flags } = parseCommand({
    name: "demo",
    operands: "",
    positionals: [0, 0],
    summary: "Trains a one-layer GPT-2-style model to predict the next character of a sentence, " +
      `printing the loss every ${REPORT_EVERY} steps.`,
    flags: {
      steps: { type: "string", value: "N", default: "200", description: "training steps" },
    },
  });
  const steps = positiveInteger("demo", "steps", flags.steps);
  await openGpuOrExit();
  const alphabet = [...new Set(TEXT)].sort();
  const ids = Int32Array.from(TEXT, (c) => alphabet.indexOf(c));
  const config = modelConfig("gpt2", {
    vocabSize: alphabet.length,
    hiddenSize: 32,
    numLayers: 1,
    numHeads: 2,
    maxPositions: LENGTH,
    hiddenDropout: 0,
    attentionDropout: 0,
  });
  const model = new TransformerModel(config, { task: "causal-lm", seed: 1 });
  const optimizer = new MultiModelOptimizer({ models: { gpt2: model }, lr: 1e-2, adaptiveLr: false });
  console.log(
    `model: one-layer GPT-2, ${model.parameterSet.count} parameters, ${alphabet.length} characters`,
  );
  const random = new Random(0);
  let pending: Tensor[] = [];
  const started = performance.now();
  for (let step = 1; step <= steps; step++) {
    const windows = new Int32Array(BATCH * LENGTH);
    for (let b = 0; b < BATCH; b++) {
      const start = random.int(ids.length - LENGTH);
      windows.set(ids.subarray(start, start + LENGTH), b * LENGTH);
    }
    const loss = tidy(() => {
      optimizer.zeroGrad();
      const batch = tensor(windows, { shape: [BATCH, LENGTH] });
      const output = model.forward({ inputIds: batch, labels: batch });
      output.loss!.backward();
      optimizer.logMetrics({ gpt2: output.loss! });
      optimizer.step();
      return output.loss!;
    });
    pending.push(loss);
    if (step % REPORT_EVERY === 0 || step === steps) {
      const values = await readAll(pending);
      for (const t of pending) t.dispose();
      pending = [];
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      console.log(`step ${String(step).padStart(3)}  loss ${values.at(-1)![0].toFixed(4)}  (${seconds} s)`);
    }
  }
  console.log(`uniform guessing would give ${Math.log(alphabet.length).toFixed(4)}`);
}

await main();

/**
 * The options of a training run (train/options.ts) at their defaults, other values and boundaries:
 * what each becomes in the optimizer's options and the models' configurations, and which values
 * checkTrainOptions accepts or refuses. Host code only; train_test.ts trains with them end to end.
 * docs/reliability.md lists which test covers each option.
 */
import { modelConfig } from "../models/config.ts";
import type { OptimizerOptions } from "../optim/options.ts";
import { buildModel, optimizerOptions } from "../train/models.ts";
import {
  checkTrainOptions,
  defaultDocStride,
  defaultOptions,
  parseModels,
  type TrainOptions,
} from "../train/options.ts";
import { prepareSession } from "../train/session.ts";
import { Tokenizer, trainTokenizer } from "../data/tokenizer.ts";
import type { Dataset, QaExample } from "../data/datasets.ts";
import { setup } from "./helpers.ts";

await setup();

function options(overrides: Partial<TrainOptions> = {}): TrainOptions {
  return { ...defaultOptions("sentiment"), ...overrides };
}

function expectEqual(got: unknown, expected: unknown, label: string): void {
  if (JSON.stringify(got) !== JSON.stringify(expected)) {
    throw new Error(`${label}: got ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
  }
}

Deno.test("the default run's optimizer: AdamW 1e-3, decay 0.01, clip 1, 6% warmup to a cosine, every mechanism", () => {
  const expected: OptimizerOptions = {
    lr: 1e-3,
    weightDecay: 0.01,
    decayBiasesAndNorms: true,
    clipGradNorm: 1,
    gradientAccumulationSteps: 1,
    schedule: { warmupSteps: 6, totalSteps: 100, minRatio: 0.1 },
    gradientSharing: { ratio: 0.2 },
    parameterSync: { ratio: 0.1 },
    adaptiveLr: {},
    alignInitialization: false,
  };
  expectEqual(optimizerOptions(options(), 100), expected, "defaults");
});

Deno.test("each run option reaches the optimizer at other values and at its boundaries", () => {
  const cases: [Partial<TrainOptions>, number, Partial<OptimizerOptions>][] = [
    [{ lr: 0.05, weightDecay: 0 }, 10, { lr: 0.05, weightDecay: 0 }],
    [{ decayBiasesAndNorms: false }, 10, { decayBiasesAndNorms: false }],
    [{ clip: null }, 10, { clipGradNorm: null }],
    [{ accumulate: 4 }, 10, { gradientAccumulationSteps: 4 }],
    [{ warmup: 0 }, 10, { schedule: { warmupSteps: 0, totalSteps: 10, minRatio: 0.1 } }],
    [{ warmup: 0.99 }, 10, { schedule: { warmupSteps: 9, totalSteps: 10, minRatio: 0.1 } }],
    [{ warmup: 0.5 }, 1, { schedule: { warmupSteps: 0, totalSteps: 1, minRatio: 0.1 } }],
    [{ sharing: 0 }, 10, { gradientSharing: { ratio: 0 } }],
    [{ sharing: 1 }, 10, { gradientSharing: { ratio: 1 } }],
    [{ sharing: false }, 10, { gradientSharing: false }],
    [{ sync: 0 }, 10, { parameterSync: { ratio: 0 } }],
    [{ sync: 1 }, 10, { parameterSync: { ratio: 1 } }],
    [{ sync: false }, 10, { parameterSync: false }],
    [{ adaptive: false }, 10, { adaptiveLr: false }],
    [{ alignInit: true }, 10, { alignInitialization: true }],
  ];
  for (const [overrides, updates, expected] of cases) {
    const got = optimizerOptions(options(overrides), updates) as Record<string, unknown>;
    const subset = Object.fromEntries(Object.keys(expected).map((k) => [k, got[k]]));
    expectEqual(subset, expected, JSON.stringify(overrides));
  }
  const weights = { bert: 1, gpt2: 2, roberta: 0.5 };
  expectEqual(optimizerOptions(options({ weights }), 10).modelWeights, weights, "weights");
  if ("modelWeights" in optimizerOptions(options(), 10)) throw new Error("weights null gave modelWeights");
  // Models the weights do not name weigh 1, as with equal weights.
  expectEqual(
    optimizerOptions(options({ weights: { gpt2: 0.8 } }), 10).modelWeights,
    { bert: 1, gpt2: 0.8, roberta: 1 },
    "partial weights",
  );
  // independent: plain AdamW per model, whatever the mechanisms say.
  const alone = optimizerOptions(options({ independent: true, weights, alignInit: true, sharing: 0.5 }), 10);
  expectEqual(
    [
      alone.gradientSharing,
      alone.parameterSync,
      alone.adaptiveLr,
      alone.alignInitialization,
      alone.modelWeights,
    ],
    [false, false, false, false, undefined],
    "independent",
  );
});

Deno.test("dropout reaches every dropout of models built from scratch, the classifier's too", () => {
  const spec = {
    name: "m",
    family: "gpt2" as const,
    hiddenSize: 16,
    numLayers: 1,
    numHeads: 2,
    intermediateSize: 32,
  };
  for (const [dropout, task] of [[0, "sentiment"], [0.25, "sentiment"], [0, "pos"]] as const) {
    const model = buildModel(
      spec,
      { task, maxLength: 16, seed: 0, dropout },
      { vocabSize: 300, padId: 0 },
      ["negative", "positive"],
      0,
    );
    const c = model.config;
    expectEqual(
      [c.hiddenDropout, c.embeddingDropout, c.attentionDropout, c.classifierDropout],
      [dropout, dropout, dropout, dropout],
      "dropout",
    );
    model.dispose();
  }
  // A model of one's own keeps Hugging Face's rule (classifier_dropout unset: GPT-2's head drops 0.1).
  if (modelConfig("gpt2").classifierDropout !== null) throw new Error("classifierDropout is set by default");
});

Deno.test("run options at their boundaries are accepted, and past them refused naming the option", () => {
  const accepted: Partial<TrainOptions>[] = [
    { warmup: 0 },
    { weightDecay: 0 },
    { dropout: 0 },
    { sharing: 0 },
    { sharing: 1 },
    { sync: 0 },
    { sync: 1 },
    { distill: 0 },
    { accumulate: 1 },
    { seed: 0 },
    { maxLength: 8 },
    { vocabSize: 261 },
    { clip: null },
    { steps: 1, epochs: 1, batchSize: 1, logEvery: 1 },
    { task: "qa", maxLength: 256, docStride: 0 },
    { task: "qa", maxLength: 256, docStride: 123 },
    { task: "qa", maxLength: 256, docStride: null },
  ];
  for (const overrides of accepted) checkTrainOptions(options(overrides));
  const refused: [Partial<TrainOptions>, string][] = [
    [{ warmup: 1 }, "warmup must be in [0, 1), got 1"],
    [{ warmup: -0.1 }, "warmup must be in [0, 1), got -0.1"],
    [{ lr: 0 }, "lr must be a positive number, got 0"],
    [{ weightDecay: -1 }, "weight-decay must be >= 0, got -1"],
    [{ dropout: 1 }, "dropout must be in [0, 1), got 1"],
    [{ clip: 0 }, "clip must be > 0, got 0"],
    [{ sharing: 1.5 }, "sharing must be a ratio in [0, 1] or off, got 1.5"],
    [{ sync: -0.1 }, "sync must be a ratio in [0, 1] or off, got -0.1"],
    [{ distill: -1 }, "distill must be >= 0, got -1"],
    [{ accumulate: 0 }, "accumulate must be a positive integer, got 0"],
    [{ seed: -1 }, "seed must be an integer >= 0, got -1"],
    [{ maxLength: 7 }, "max-length must be an integer >= 8, got 7"],
    [{ vocabSize: 260 }, "vocab must be an integer >= 261 (256 bytes and 5 special tokens), got 260"],
    [{ steps: 0 }, "steps must be a positive integer, got 0"],
    [{ evalEvery: 0 }, "eval-every must be a positive integer, got 0"],
    [{ independent: true, weights: { bert: 2 } }, "independent trains each model alone; it excludes weights"],
    [{ independent: true, alignInit: true }, "independent trains each model alone; it excludes align-init"],
    [
      { task: "qa", maxLength: 256, docStride: 124 },
      "doc-stride must be an integer in [0, 124) with max-length 256 (the context tokens a row keeps beside the longest question), got 124",
    ],
    [
      { task: "qa", maxLength: 256, docStride: 1.5 },
      "doc-stride must be an integer in [0, 124) with max-length 256 (the context tokens a row keeps beside the longest question), got 1.5",
    ],
    [{ docStride: 16 }, "doc-stride applies to qa only, not sentiment"],
    [
      { shuffledLabels: ["gpt2"], task: "ner" },
      "shuffled-labels needs a classification task (sentiment, spam), not ner",
    ],
  ];
  for (const [overrides, expected] of refused) {
    let message = "";
    try {
      checkTrainOptions(options(overrides));
    } catch (e) {
      message = (e as Error).message;
    }
    if (message !== `train: ${expected}`) throw new Error(`${JSON.stringify(overrides)}: "${message}"`);
  }
});

Deno.test("train options from plain JavaScript: a misspelt or Hugging Face name and a missing one are refused", () => {
  const refused = (options: unknown, message: string) => {
    let thrown = "";
    try {
      checkTrainOptions(options as TrainOptions);
    } catch (error) {
      thrown = (error as Error).message;
    }
    if (!thrown.startsWith(message)) throw new Error(`expected "${message}...", got "${thrown}"`);
  };
  refused(
    { ...defaultOptions("sentiment"), learning_rate: 5 },
    'train: unknown option "learning_rate" (did you mean "lr"?); accepted: task, models,',
  );
  refused({ ...defaultOptions("sentiment"), stepz: 1 }, 'train: unknown option "stepz"; accepted: task,');
  refused(
    { task: "sentiment", steps: 1, out: "/tmp/x" },
    "train: options models, epochs, batchSize,",
  );
  let unknownTask = "";
  try {
    defaultOptions("nope" as TrainOptions["task"]);
  } catch (error) {
    unknownTask = (error as Error).message;
  }
  if (unknownTask !== 'defaultOptions: unknown task "nope"; valid tasks: sentiment, spam, ner, pos, qa, lm') {
    throw new Error(unknownTask);
  }
});

Deno.test("qa's default doc stride is a quarter of the row, less where a short row has no room, none below that", () => {
  const cases: [number, number | null][] = [[256, 64], [96, 24], [16, 3], [12, 1], [11, 1], [10, 0], [
    8,
    null,
  ]];
  for (const [maxLength, expected] of cases) {
    expectEqual(defaultDocStride(maxLength), expected, `max-length ${maxLength}`);
    checkTrainOptions(options({ task: "qa", maxLength, docStride: expected }));
  }
});

Deno.test("a doc stride that a tokenizer's pair layout leaves no room for is refused before the run starts", async () => {
  const example: QaExample = {
    context: "Alice met Bob in Paris .",
    question: "_____ met Bob .",
    answer: { text: "Alice", start: 0 },
  };
  const dataset: Dataset<QaExample> = {
    task: "qa",
    train: [example],
    validation: [example],
    test: [example],
    labels: [],
    source: "test",
    splitRule: "none",
    notes: "",
  };
  const trained = trainTokenizer([example.context, example.question], { vocabSize: 300 });
  const { cls, sep } = trained.special;
  const json = trained.toJson() as Record<string, unknown>;
  const token = (id: number) => ({ SpecialToken: { id: id === cls ? "c" : "s", type_id: 0 } });
  // Six special tokens in a pair: two before the question, two after it, two after the context.
  const wide = Tokenizer.fromJson({
    ...json,
    post_processor: {
      type: "TemplateProcessing",
      single: [token(cls), { Sequence: { id: "A", type_id: 0 } }, token(sep)],
      pair: [
        token(cls),
        token(cls),
        { Sequence: { id: "A", type_id: 0 } },
        token(sep),
        token(sep),
        { Sequence: { id: "B", type_id: 1 } },
        token(sep),
        token(sep),
      ],
      special_tokens: {
        c: { id: "c", ids: [cls], tokens: ["c"] },
        s: { id: "s", ids: [sep], tokens: ["s"] },
      },
    },
  });
  const run = options({
    task: "qa",
    models: parseModels("bert", { hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 }),
    maxLength: 32,
    docStride: 11,
  });
  checkTrainOptions(run); // room for 4 special tokens: 12
  let message = "";
  await prepareSession(run, dataset as Dataset<unknown>, { tokenizers: { bert: wide } }).catch((e) =>
    message = (e as Error).message
  );
  const expected =
    "train: doc-stride must be below 10 with max-length 32 and bert's tokenizer (6 special tokens in a pair), got 11";
  if (message !== expected) throw new Error(`got "${message}"`);
});

/**
 * `deno task train` end to end on real data with tiny models: every task trains and its loss falls,
 * a resumed run continues bit for bit, distillation and independent training run, and the command
 * rejects bad flags with one line.
 */
import { readSafetensors } from "../models/safetensors_file.ts";
import { readAll } from "../engine/tensor.ts";
import { train, type TrainResult } from "../train/loop.ts";
import { prepareRun } from "../train/tasks.ts";
import { RunFolder } from "../train/run.ts";
import { checkoutCommit } from "../train/checkout.ts";
import type { TaskName } from "../data/datasets.ts";
import { trainTokenizer } from "../data/tokenizer.ts";
import { defaultOptions, parseModels, type TrainOptions } from "../train/options.ts";
import { scheduleFactor } from "../optim/options.ts";
import { optionsFromArgs } from "../tools/train.ts";
import { assertBitwiseEqual, setup } from "./helpers.ts";

await setup();

const TINY = { hiddenSize: 16, numLayers: 1, numHeads: 2, intermediateSize: 32 };

function tiny(task: TaskName, overrides: Partial<TrainOptions> = {}): TrainOptions {
  return {
    ...defaultOptions(task),
    models: parseModels("bert,gpt2,roberta", TINY),
    vocabSize: 320,
    dropout: 0,
    batchSize: 8,
    limit: 24,
    epochs: 4,
    steps: null,
    evalEvery: null,
    evalLimit: null,
    maxLength: task === "qa" ? 96 : 32,
    docStride: task === "qa" ? 24 : null,
    logEvery: 3,
    lr: 3e-3,
    warmup: 0,
    out: Deno.makeTempDirSync({ prefix: `train-${task}-` }),
    quiet: true,
    ...overrides,
  };
}

interface StepLine {
  type: string;
  step: number;
  steps: number;
  tokens: number;
  seconds: number;
  models: Record<string, { loss: number }>;
}

async function stepLines(folder: string): Promise<StepLine[]> {
  const text = await Deno.readTextFile(`${folder}/metrics.jsonl`);
  return text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)).filter((l) => l.type === "step");
}

async function run(options: TrainOptions, resume?: string): Promise<TrainResult> {
  return await train(options, { info: () => {} }, resume);
}

for (const task of ["sentiment", "spam", "ner", "pos", "qa", "lm"] as const) {
  Deno.test(`${task}: three tiny models train on real data, their loss falls, and the run is reported`, async () => {
    const options = tiny(task);
    const result = await run(options);
    const lines = await stepLines(result.folder);
    for (const model of ["bert", "gpt2", "roberta"]) {
      const first = lines[0].models[model].loss;
      const last = lines.at(-1)!.models[model].loss;
      if (!(last < first)) throw new Error(`${task} ${model}: loss ${first} -> ${last}`);
      const test = result.results[model].test;
      if (Object.keys(test).length === 0 || !Object.values(test).every(Number.isFinite)) {
        throw new Error(`${task} ${model}: test metrics ${JSON.stringify(test)}`);
      }
    }
    const report = await Deno.readTextFile(`${result.folder}/report.md`);
    const loads = {
      sentiment: 'pipe = pipeline("text-classification',
      spam: 'pipe = pipeline("text-classification',
      ner: 'pipe = pipeline("token-classification',
      pos: 'pipe = pipeline("token-classification',
      qa: "model = AutoModelForQuestionAnswering.from_pretrained(",
      lm: 'pipe = pipeline("fill-mask',
    };
    for (
      const needed of [
        "| bert |",
        "baseline",
        "![Training loss per model](loss.svg)",
        "## Using the models",
        "| gpt2 | `checkpoints/step-",
        loads[task],
      ]
    ) {
      if (!report.includes(needed)) throw new Error(`${task}: report.md lacks "${needed}"`);
    }
    // Every model's config.json names the tokenizer's pad id, which Hugging Face's GPT-2 classifier needs
    // to classify a padded batch.
    const tokenizer = JSON.parse(await Deno.readTextFile(`${result.folder}/tokenizer.json`));
    const padId = tokenizer.added_tokens.find((t: { content: string }) => t.content === "<pad>").id;
    const state = JSON.parse(await Deno.readTextFile(`${result.folder}/state.json`));
    for (const model of ["bert", "gpt2", "roberta"]) {
      const config = JSON.parse(
        await Deno.readTextFile(
          `${result.folder}/checkpoints/step-${state.step}/models/${model}/config.json`,
        ),
      );
      if (config.pad_token_id !== padId) {
        throw new Error(`${task} ${model}: pad_token_id ${config.pad_token_id}`);
      }
      // A GPT-2's texts start with <s> and end with </s>, where Hugging Face's generate then stops.
      const idOf = (content: string) =>
        tokenizer.added_tokens.find((t: { content: string }) => t.content === content).id;
      if (model === "gpt2" && (config.bos_token_id !== idOf("<s>") || config.eos_token_id !== idOf("</s>"))) {
        throw new Error(
          `${task} gpt2: bos_token_id ${config.bos_token_id}, eos_token_id ${config.eos_token_id}`,
        );
      }
      // The classes are named (Hugging Face's pipelines print these names); qa and lm have none.
      const names = Object.values(config.id2label ?? {});
      const classes = task === "qa" || task === "lm" ? 0 : config.num_labels;
      if (names.length !== classes || (task === "sentiment" && names.join() !== "negative,positive")) {
        throw new Error(`${task} ${model}: id2label ${JSON.stringify(config.id2label)}`);
      }
      // Each model's folder keeps the run's tokenizer and Hugging Face's tokenizer_config.json for its family.
      const folder = `${result.folder}/checkpoints/step-${state.step}/models/${model}`;
      const own = JSON.parse(await Deno.readTextFile(`${folder}/tokenizer.json`));
      if (JSON.stringify(own) !== JSON.stringify(tokenizer)) {
        throw new Error(`${task} ${model}: the checkpoint's tokenizer.json is not the run's`);
      }
      const hfConfig = JSON.parse(await Deno.readTextFile(`${folder}/tokenizer_config.json`));
      const inputs = model === "bert"
        ? "input_ids,token_type_ids,attention_mask"
        : "input_ids,attention_mask";
      if (hfConfig.pad_token !== "<pad>" || hfConfig.model_input_names.join() !== inputs) {
        throw new Error(`${task} ${model}: tokenizer_config.json ${JSON.stringify(hfConfig)}`);
      }
    }
    await Deno.remove(result.folder, { recursive: true });
  });
}

// 24 examples in batches of 8: 3 steps per epoch, or 2 when accumulating 2 batches (of 2 and 1).
for (
  const [evalEvery, accumulate, where] of [
    [null, 1, "an epoch's end"],
    [2, 1, "the middle of an epoch"],
    [1, 2, "the middle of an epoch, accumulating 2 batches a step"],
  ] as const
) {
  const stepsPerEpoch = accumulate === 1 ? 3 : 2;
  Deno.test(`a run resumed from a checkpoint at ${where} continues bit for bit`, async () => {
    const straight = await run(tiny("sentiment", { epochs: 2, evalEvery, accumulate }));
    // Each checkpoint records the run's time so far, counted once however many checkpoints came before.
    const recorded = JSON.parse(await Deno.readTextFile(`${straight.folder}/state.json`)).seconds;
    if (!(recorded > 0 && recorded <= straight.seconds)) {
      throw new Error(`state.json records ${recorded} s of a run that took ${straight.seconds} s`);
    }
    // The same run, stopped during its second evaluation (before that checkpoint), then resumed.
    const interrupted = tiny("sentiment", { epochs: 2, evalEvery, accumulate });
    let evaluations = 0;
    const crash = (line: string) => {
      if (/ validation bert:/.test(line) && ++evaluations === 2) throw new Error("stopped");
    };
    await train(interrupted, { info: crash }).catch(() => {});
    const state = JSON.parse(await Deno.readTextFile(`${interrupted.out}/state.json`));
    if (state.step !== (evalEvery ?? stepsPerEpoch)) {
      throw new Error(`the stopped run's last checkpoint is at step ${state.step}`);
    }
    await run(interrupted, interrupted.out);
    // Everything but the wall-clock time of each interval.
    const withoutTime = async (folder: string) =>
      (await stepLines(folder)).map(({ seconds: _, ...rest }) => rest);
    const [a, b] = [await withoutTime(straight.folder), await withoutTime(interrupted.out)];
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new Error(`step lines differ:\n${JSON.stringify(a)}\n${JSON.stringify(b)}`);
    }
    for (const model of ["bert", "gpt2", "roberta"]) {
      const weights = async (folder: string) =>
        (await readSafetensors(
          `${folder}/checkpoints/step-${2 * stepsPerEpoch}/models/${model}/model.safetensors`,
        ))
          .tensors;
      const [x, y] = [await weights(straight.folder), await weights(interrupted.out)];
      for (const [name, t] of x) assertBitwiseEqual(t.data, y.get(name)!.data, `${model} ${name}`);
    }
    await Deno.remove(straight.folder, { recursive: true });
    await Deno.remove(interrupted.out, { recursive: true });
  });
}

Deno.test("with gradient accumulation a step is an update of accumulate batches, an epoch's last one shorter", async () => {
  // 24 examples in batches of 8: 3 batches per epoch, so accumulating 2 makes 2 steps (updates) per epoch,
  // of 2 batches and 1. 2 epochs make 4 steps; --steps 5 makes 5, the fifth the third epoch's first.
  for (const [overrides, updates, closing] of [[{ epochs: 2 }, 4, 4], [{ steps: 5 }, 5, 5]] as const) {
    const options = tiny("sentiment", {
      accumulate: 2,
      logEvery: 1,
      warmup: 0,
      adaptive: false,
      ...overrides,
    });
    const result = await run(options);
    const lines = await stepLines(result.folder);
    // One line per step, and each epoch's two steps read all its batches once: the same tokens every epoch.
    if (lines.length !== updates || lines.some((line, i) => line.step !== i + 1 || line.steps !== 1)) {
      throw new Error(`step lines ${JSON.stringify(lines.map((l) => [l.step, l.steps]))}`);
    }
    const epochTokens = [0, 2].map((i) => lines[i].tokens + lines[i + 1].tokens);
    if (epochTokens[0] !== epochTokens[1]) throw new Error(`tokens per epoch ${epochTokens}`);
    const last = lines.at(-1)!;
    const figures = (last.models as unknown as Record<string, { updates: number; lr: number }>).bert;
    if (figures.updates !== updates) {
      throw new Error(`${JSON.stringify(overrides)}: ${figures.updates} updates`);
    }
    // The last update ran at the schedule's last step, so its rate is the cosine's end of that many updates.
    const schedule = { warmupSteps: 0, totalSteps: updates, minRatio: 0.1 };
    const expected = options.lr * scheduleFactor(schedule, updates - 1);
    if (Math.abs(figures.lr - expected) > 1e-9) {
      throw new Error(`final lr ${figures.lr}, expected ${expected}`);
    }
    const counters = JSON.parse(
      await Deno.readTextFile(`${result.folder}/checkpoints/step-${closing}/optimizer.json`),
    ).counters;
    if (counters.microBatches !== 0) {
      throw new Error(`the run ended inside a cycle: ${JSON.stringify(counters)}`);
    }
    await Deno.remove(result.folder, { recursive: true });
  }
});

Deno.test("mutual distillation and independent training run and learn", async () => {
  for (const overrides of [{ distill: 0.5 }, { independent: true }] as Partial<TrainOptions>[]) {
    const result = await run(tiny("sentiment", overrides));
    const lines = await stepLines(result.folder);
    for (const model of ["bert", "gpt2", "roberta"]) {
      if (!(lines.at(-1)!.models[model].loss < lines[0].models[model].loss)) {
        throw new Error(`${JSON.stringify(overrides)} ${model}: the loss did not fall`);
      }
    }
    if (overrides.independent) {
      // Its checkpoint holds a folder per optimizer; a joint run can start from it.
      const next = await run(tiny("sentiment", { epochs: 1, from: { "*": result.folder } }));
      const before = lines.at(-1)!.models.bert.loss;
      const after = (await stepLines(next.folder))[0].models.bert.loss;
      if (!(after < before + 0.05)) throw new Error(`--from an independent run: ${before} then ${after}`);
      await Deno.remove(next.folder, { recursive: true });
    }
    await Deno.remove(result.folder, { recursive: true });
  }
});

Deno.test("bad options are errors naming the option", async () => {
  const cases: [Partial<TrainOptions>, string][] = [
    [
      { task: "foo" as TaskName },
      'train: unknown task "foo"; valid tasks: sentiment, spam, ner, pos, qa, lm',
    ],
    [{ distill: 1, task: "lm" }, "train: distill is not defined for lm"],
    [{ weights: { t5: 1 } }, 'train: weights name "t5", which is not a model'],
    [{ batchSize: 0 }, "train: batch must be a positive integer, got 0"],
    [{ out: "" }, "train: options.out names no folder for the run"],
  ];
  for (const [overrides, expected] of cases) {
    let message = "";
    await run(tiny("sentiment", overrides)).catch((e: Error) => (message = e.message));
    if (!message.startsWith(expected)) throw new Error(`expected "${expected}", got "${message}"`);
  }
});

Deno.test("a run that fails before it logs or saves anything removes what it wrote, and only that", async () => {
  const options = tiny("sentiment", { weights: { bert: -1 } });
  let message = "";
  await run(options).catch((e: Error) => (message = e.message));
  if (!message.includes('the weight of model "bert" must be a positive number')) throw new Error(message);
  // The test made the folder, so the run leaves it, empty.
  const empty = async (out: string) => {
    const left = [...Deno.readDirSync(out)].map((e) => e.name);
    if (left.length > 0) throw new Error(`${out} holds ${left}`);
    await Deno.remove(out);
  };
  await empty(options.out);
  // A folder the run made goes; a user's file in a folder of theirs, and a link to it, stay.
  const parent = await Deno.makeTempDir({ prefix: "discard-" });
  const facts = { adapter: "test", versions: {}, counts: {}, started: "2026-12-01T00:00:00Z" };
  const made = await RunFolder.create({ ...tiny("sentiment"), out: `${parent}/new` }, facts);
  await made.discard();
  await Deno.mkdir(`${parent}/mine`);
  await Deno.writeTextFile(`${parent}/mine/notes.txt`, "mine");
  // (ln: the suite's scoped --allow-write does not allow Deno.symlink.)
  await new Deno.Command("ln", { args: ["-s", `${parent}/mine`, `${parent}/link`] }).output();
  const linked = await RunFolder.create({ ...tiny("sentiment"), out: `${parent}/link` }, facts);
  const texts = ["a few words to learn from", "and a few more"];
  await linked.writeTokenizers({
    bert: trainTokenizer(texts, { vocabSize: 280 }),
    gpt2: trainTokenizer(texts, { vocabSize: 290 }),
  });
  await linked.discard();
  // A nested --out the run made goes to the last level; a folder holding files a run writes is not taken.
  const nested = await RunFolder.create({ ...tiny("sentiment"), out: `${parent}/a/b/c` }, facts);
  await nested.discard();
  await Deno.writeTextFile(`${parent}/mine/tokenizer.json`, "mine");
  let taken = "";
  await RunFolder.create({ ...tiny("sentiment"), out: `${parent}/mine` }, facts).catch((e: Error) =>
    taken = e.message
  );
  if (!taken.endsWith("already holds tokenizer.json, which a run would write; use another --out")) {
    throw new Error(taken);
  }
  await Deno.remove(`${parent}/mine/tokenizer.json`);
  const left = [...Deno.readDirSync(parent)].map((e) => e.name).sort().join();
  const mine = [...Deno.readDirSync(`${parent}/mine`)].map((e) => e.name).join();
  if (left !== "link,mine" || mine !== "notes.txt") throw new Error(`left: ${left}; in mine: ${mine}`);
  await Deno.remove(parent, { recursive: true });
  // A run that stops after it logged keeps its folder, logs included; a new run there says what to do.
  const stopped = tiny("sentiment", { epochs: 1 });
  const stop = (line: string) => {
    if (/ validation bert:/.test(line)) throw new Error("stopped");
  };
  await train(stopped, { info: stop }).catch(() => {});
  if ((await stepLines(stopped.out)).length === 0) throw new Error("the stopped run's log is gone");
  let refusal = "";
  await run(tiny("sentiment", { out: stopped.out })).catch((e: Error) => (refusal = e.message));
  if (
    !refusal.includes("holds a run with no checkpoint (it stopped, or has not reached its first evaluation)")
  ) {
    throw new Error(refusal);
  }
  await Deno.remove(stopped.out, { recursive: true });
  // A model's folder as --out is not taken for a run.
  const modelFolder = tiny("sentiment");
  await Deno.writeTextFile(`${modelFolder.out}/config.json`, JSON.stringify({ model_type: "bert" }));
  await run(modelFolder).catch((e: Error) => (refusal = e.message));
  if (!refusal.includes("holds a config.json that is not a run's (a model's folder?); use another --out")) {
    throw new Error(refusal);
  }
  await Deno.remove(modelFolder.out, { recursive: true });
  // A loaded model shorter than --max-length is refused before the run's folder is made.
  const first = await run(tiny("sentiment", { epochs: 1 }));
  const longer = tiny("spam", { epochs: 1, maxLength: 48, from: { "*": first.folder } });
  let positions = "";
  await run(longer).catch((e: Error) => (positions = e.message));
  if (!positions.includes('model "bert" reads at most 32 tokens, fewer than --max-length 48')) {
    throw new Error(positions);
  }
  await empty(longer.out);
  // A tokenizer that gives ids past a loaded model's embeddings is refused before the run's folder is made.
  const tokenizerFile = `${first.folder}/tokenizer.json`;
  const tokenizer = JSON.parse(await Deno.readTextFile(tokenizerFile));
  tokenizer.added_tokens.push({ ...tokenizer.added_tokens[0], id: 5000, content: "<extra>" });
  await Deno.writeTextFile(tokenizerFile, JSON.stringify(tokenizer));
  const wider = tiny("spam", { epochs: 1, from: { "*": first.folder } });
  let embeddings = "";
  await run(wider).catch((e: Error) => (embeddings = e.message));
  if (!embeddings.includes('model "bert" has 320 token embeddings, fewer than its tokenizer\'s 5001 ids')) {
    throw new Error(embeddings);
  }
  await empty(wider.out);
  await Deno.remove(first.folder, { recursive: true });
});

Deno.test("deno task train rejects bad flags with one line and exit 2", async () => {
  const cases: [string[], string][] = [
    [["--bogus"], "train: unknown option --bogus (try --help)"],
    [
      ["--task", "foo"],
      'train: unknown task "foo"; valid tasks: sentiment, spam, ner, pos, qa, lm (try --help)',
    ],
    [["--steps", "x"], 'train: --steps must be a positive integer, got "x" (try --help)'],
    [["--save-limit", "0"], 'train: --save-limit must be a positive integer, got "0" (try --help)'],
    [["--sharing", "2"], 'train: --sharing must be a ratio in [0, 1] or off, got "2" (try --help)'],
    [["--log-every", "0"], 'train: --log-every must be a positive integer, got "0" (try --help)'],
    [
      ["--hidden", "16", "--heads", "3"],
      'train: model "bert": 3 heads do not divide hidden size 16 (try --help)',
    ],
    [
      ["--resume", "runs/any", "--steps", "20"],
      "train: --resume continues the run with its own options; --steps cannot change them (try --help)",
    ],
    [["--models", "t5"], 'train: --models: cannot read "t5"'],
    [
      ["--models", "bert:0x2"],
      'train: --models: "bert:0x2": the hidden size and the layer count must be positive integers',
    ],
    [["--weights", "bert=1,bert=2"], 'train: --weights names "bert" twice'],
    [["--weight-decay=-0.1"], 'train: --weight-decay must be a number >= 0, got "-0.1"'],
    [["--decay-biases-and-norms", "no"], 'train: --decay-biases-and-norms must be on or off, got "no"'],
    [["--doc-stride", "32"], "train: --doc-stride applies to qa only, not sentiment"],
    [
      ["--task", "qa", "--doc-stride", "half"],
      'train: --doc-stride must be an integer >= 0 or off, got "half"',
    ],
    [
      ["--task", "qa", "--max-length", "64", "--doc-stride", "28"],
      "train: doc-stride must be an integer in [0, 28) with max-length 64 (the context tokens a row keeps " +
      "beside the longest question), got 28",
    ],
    [
      ["--independent", "--sync", "0.5", "--sharing", "off", "--adaptive", "off"],
      "train: --independent trains each model alone; it excludes --sync",
    ],
    [
      ["--shuffled-labels", "gpt2", "--task", "ner"],
      "train: shuffled-labels needs a classification task (sentiment, spam), not ner",
    ],
    [
      ["--from", "runs/any", "--hidden", "32"],
      "train: --from loads every model with the sizes, dropout and tokenizer it was saved with; --hidden would " +
      "change none",
    ],
  ];
  for (const [args, expected] of cases) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", "--allow-env", "tools/train.ts", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr).trim();
    if (output.code !== 2 || stderr.split("\n").length !== 1 || !stderr.startsWith(expected)) {
      throw new Error(`${args.join(" ")}: exit ${output.code}, stderr "${stderr}"`);
    }
  }
  const help = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "tools/train.ts", "--help"],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(help.stdout);
  for (
    const flag of [
      "--task",
      "--models",
      "--distill",
      "--independent",
      "--resume",
      "--from",
      "--preset",
      "--log-every",
    ]
  ) {
    if (!text.includes(flag)) throw new Error(`--help does not list ${flag}`);
  }
});

Deno.test("--weight-decay and --decay-biases-and-norms reach the run's options; a run from before keeps decaying all", async () => {
  const { options } = optionsFromArgs(["--weight-decay", "0.1", "--decay-biases-and-norms", "off"]);
  if (options.weightDecay !== 0.1 || options.decayBiasesAndNorms !== false) {
    throw new Error(`options: ${options.weightDecay}, ${options.decayBiasesAndNorms}`);
  }
  const defaults = optionsFromArgs([]).options;
  if (defaults.weightDecay !== 0.01 || defaults.decayBiasesAndNorms !== true) {
    throw new Error(`defaults: ${defaults.weightDecay}, ${defaults.decayBiasesAndNorms}`);
  }
  const out = await Deno.makeTempDir({ prefix: "run-folder-" });
  const facts = { adapter: "test", versions: {}, counts: {}, started: "2026-12-01T00:00:00Z" };
  await RunFolder.create({ ...tiny("sentiment"), decayBiasesAndNorms: false, out }, facts);
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  if (config.options.decayBiasesAndNorms !== false) throw new Error("config.json does not record the option");
  delete config.options.decayBiasesAndNorms;
  await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(config));
  if ((await RunFolder.open(out)).options.decayBiasesAndNorms !== true) {
    throw new Error("an older run resumes otherwise");
  }
  await Deno.remove(out, { recursive: true });
});

Deno.test("a run from before steps counted updates is refused on resume when it accumulated, and read otherwise", async () => {
  const out = await Deno.makeTempDir({ prefix: "run-folder-" });
  const facts = {
    adapter: "test",
    versions: { commit: "abc123" },
    counts: {},
    started: "2026-12-01T00:00:00Z",
  };
  await RunFolder.create({ ...tiny("sentiment"), accumulate: 2, out }, facts);
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  if (config.format !== 2) throw new Error(`format ${config.format}`);
  const opened = async (edit: (c: typeof config) => void) => {
    const copy = structuredClone(config);
    edit(copy);
    await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(copy));
    return await RunFolder.open(out).then(() => "", (e: Error) => e.message);
  };
  if (await opened(() => {}) !== "") throw new Error("a current run is refused");
  const older = await opened((c) => delete c.format);
  if (
    !older.includes("from before a step counted its --accumulate batches as one update") ||
    !older.includes("abc123")
  ) {
    throw new Error(older);
  }
  if (await opened((c) => (delete c.format, c.options.accumulate = 1)) !== "") {
    throw new Error("refused at accumulate 1");
  }
  if (!(await opened((c) => (c.format = 3))).includes("has format 3, newer than this version reads (2)")) {
    throw new Error("a newer format is read");
  }
  // Options added since a run was written mean what that run did (no placebo, no evaluation limit, the
  // dropout every model then had); one the first runs had cannot be made up.
  const before = structuredClone(config);
  delete before.options.shuffledLabels;
  delete before.options.evalLimit;
  delete before.options.dropout;
  before.options.accumulate = 1;
  await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(before));
  const read = await RunFolder.open(out);
  if (
    read.options.shuffledLabels.length !== 0 || read.options.evalLimit !== null ||
    read.options.dropout !== 0.1
  ) {
    throw new Error(`an older run's options: ${JSON.stringify(read.options)}`);
  }
  const lacking = await opened((c) => (c.options.accumulate = 1, delete c.options.lr));
  if (!lacking.includes("has no lr: resume it with the version that wrote it (abc123)")) {
    throw new Error(lacking);
  }
  await Deno.remove(out, { recursive: true });
});

Deno.test("--steps spreads three evaluations over the run on every task, as the presets' budgets do", () => {
  for (const task of ["sentiment", "spam", "qa"]) {
    const { options } = optionsFromArgs(["--task", task, "--steps", "6"]);
    if (options.evalEvery !== 2) throw new Error(`${task}: --steps 6 evaluates every ${options.evalEvery}`);
  }
  if (optionsFromArgs(["--save-limit", "3"]).options.saveLimit !== 3) throw new Error("--save-limit 3");
  const { options } = optionsFromArgs(["--task", "spam", "--steps", "6", "--eval-every", "5"]);
  if (options.evalEvery !== 5) throw new Error(`--eval-every 5 gave ${options.evalEvery}`);
});

Deno.test("--from starts from an earlier run's last checkpoint, or from a Hugging Face folder with its tokenizer", async () => {
  const first = await run(tiny("sentiment", { epochs: 1 }));
  const continued = await run(tiny("sentiment", { epochs: 1, from: { "*": first.folder } }));
  const before = (await stepLines(first.folder)).at(-1)!.models.gpt2.loss;
  const after = (await stepLines(continued.folder))[0].models.gpt2.loss;
  if (!(after < before + 0.05)) {
    throw new Error(`a continued run starts from scratch: ${before} then ${after}`);
  }
  // Mistakes in --from name what to do.
  const refusal = async (overrides: Partial<TrainOptions>) => {
    let message = "";
    await run(tiny("sentiment", { epochs: 1, ...overrides })).catch((e: Error) => (message = e.message));
    return message;
  };
  const modelFolder = `${first.folder}/checkpoints/step-3/models/bert`;
  const noName = await refusal({ from: { "*": modelFolder } });
  if (
    !noName.includes(`a model's folder, not a run's: name the model it starts, --from bert=${modelFolder}`)
  ) {
    throw new Error(noName);
  }
  // A folder without a tokenizer (a checkpoint from before they kept one beside each model) says where it is.
  const bare = await Deno.makeTempDir({ prefix: "bare-" });
  for (const file of ["config.json", "model.safetensors"]) {
    await Deno.copyFile(`${modelFolder}/${file}`, `${bare}/${file}`);
  }
  const noTokenizer = await refusal({ from: { bert: bare } });
  if (!noTokenizer.includes("no tokenizer.json in the folder (older checkpoints keep theirs in the run's")) {
    throw new Error(noTokenizer);
  }
  await Deno.remove(bare, { recursive: true });
  const unknown = await refusal({ models: parseModels("x=bert", TINY), from: { "*": first.folder } });
  if (!unknown.includes(`holds no model "x"`)) throw new Error(unknown);
  // A head of another shape is re-initialised, but a body tensor that disagrees with its own config is refused.
  const inconsistent = await Deno.makeTempDir({ prefix: "inconsistent-" });
  for (const file of ["config.json", "model.safetensors"]) {
    await Deno.copyFile(`${modelFolder}/${file}`, `${inconsistent}/${file}`);
  }
  await Deno.copyFile(`${first.folder}/tokenizer.json`, `${inconsistent}/tokenizer.json`);
  const hf = JSON.parse(await Deno.readTextFile(`${inconsistent}/config.json`));
  await Deno.writeTextFile(
    `${inconsistent}/config.json`,
    JSON.stringify({ ...hf, intermediate_size: hf.intermediate_size * 2 }),
  );
  const body = await refusal({ from: { bert: inconsistent } });
  if (!body.includes(`model.safetensors holds "bert.encoder.layer.0.intermediate.dense.weight" as [`)) {
    throw new Error(body);
  }
  await Deno.remove(inconsistent, { recursive: true });
  // Another task from the same run: the sentiment classifier [2, H] becomes a new tagger [3, H].
  const tagging = await run(tiny("ner", { epochs: 1, limit: 8, from: { "*": first.folder } }));
  await Deno.remove(tagging.folder, { recursive: true });
  // A Hugging Face folder: the first run's GPT-2, whose checkpoint keeps its tokenizer, for one model of a new run.
  const folder = `${first.folder}/checkpoints/step-3/models/gpt2`;
  const mixed = await run(tiny("sentiment", { epochs: 1, from: { gpt2: folder } }));
  const tokenizers = [...Deno.readDirSync(`${mixed.folder}/tokenizers`)].map((e) => e.name).sort();
  if (tokenizers.join() !== "bert.json,gpt2.json,roberta.json") throw new Error(`tokenizers: ${tokenizers}`);
  // A run from that run takes each model's own tokenizer with its weights.
  const fromMixed = await run(tiny("sentiment", { epochs: 1, from: { "*": mixed.folder } }));
  for (const name of ["bert", "gpt2", "roberta"]) {
    const [saved, used] = await Promise.all(
      [mixed.folder, fromMixed.folder].map((f) => Deno.readTextFile(`${f}/tokenizers/${name}.json`)),
    );
    if (saved !== used) throw new Error(`--from a run with a tokenizer per model: ${name}'s differs`);
  }
  await Deno.remove(fromMixed.folder, { recursive: true });
  // Loaded for another task, the model gets a new head, initialised from the run's seed as a model built from scratch is.
  const loadedValues = async (seed: number) => {
    const prepared = await prepareRun(tiny("ner", { seed, from: { gpt2: folder } }), () => {});
    const values = await readAll(prepared.models.gpt2.parameters.map((p) => p.value));
    for (const model of Object.values(prepared.models)) model.dispose();
    await Deno.remove(prepared.options.out, { recursive: true });
    return values.map((v) => Array.from(v).join());
  };
  const [one, again, two] = [await loadedValues(1), await loadedValues(1), await loadedValues(2)];
  const differing = one.filter((v, i) => v !== two[i]).length;
  if (one.some((v, i) => v !== again[i]) || differing === 0 || differing === one.length) {
    throw new Error(
      `seeds 1 and 2 differ in ${differing} of ${one.length} loaded parameters (the head only)`,
    );
  }
  // The flags' sizes (width 24) are for models built from scratch: the loaded GPT-2 keeps its width 16, the
  // run records it, and a resumed run rebuilds it from its checkpoint and continues bit for bit.
  const wider = parseModels("bert,gpt2,roberta", { ...TINY, hiddenSize: 24, intermediateSize: 48 });
  const straight = await run(tiny("sentiment", { epochs: 2, models: wider, from: { gpt2: folder } }));
  const interrupted = tiny("sentiment", { epochs: 2, models: wider, from: { gpt2: folder } });
  let evaluations = 0;
  const crash = (line: string) => {
    if (/ validation bert:/.test(line) && ++evaluations === 2) throw new Error("stopped");
  };
  await train(interrupted, { info: crash }).catch(() => {});
  await run(interrupted, interrupted.out);
  const config = JSON.parse(await Deno.readTextFile(`${interrupted.out}/config.json`));
  const widths = config.options.models.map((m: { name: string; hiddenSize: number }) =>
    `${m.name} ${m.hiddenSize}`
  );
  if (widths.join() !== "bert 24,gpt2 16,roberta 24") throw new Error(`recorded widths: ${widths}`);
  if (config.versions.commit !== checkoutCommit()) {
    throw new Error(`recorded commit ${config.versions.commit}, checked out ${checkoutCommit()}`);
  }
  const withoutTime = async (f: string) => (await stepLines(f)).map(({ seconds: _, ...rest }) => rest);
  if (
    JSON.stringify(await withoutTime(straight.folder)) !== JSON.stringify(await withoutTime(interrupted.out))
  ) {
    throw new Error("the resumed run with a loaded model differs from the straight one");
  }
  for (const f of [first.folder, continued.folder, mixed.folder, straight.folder, interrupted.out]) {
    await Deno.remove(f, { recursive: true });
  }
});

Deno.test("a placebo partner trains on the same examples with their labels permuted", async () => {
  const options = tiny("sentiment", { shuffledLabels: ["gpt2"] });
  const { runner, models } = await prepareRun(options, () => {});
  const real: number[] = [];
  const placebo: number[] = [];
  for (const batch of runner.trainBatches(0, 8)) {
    const [a, b] = await readAll([
      runner.trainBatch("bert", batch.index).labels!,
      runner.trainBatch("gpt2", batch.index).labels!,
    ]);
    real.push(...a);
    placebo.push(...b);
  }
  // A permutation of the labels: the same counts, not the same order.
  const sorted = (labels: number[]) => [...labels].sort().join();
  if (sorted(real) !== sorted(placebo) || real.join() === placebo.join()) {
    throw new Error(`labels ${real} and placebo labels ${placebo}`);
  }
  for (const model of Object.values(models)) model.dispose();
  await Deno.remove(options.out, { recursive: true });
});

Deno.test("resuming a finished run says so, then evaluates it on the test split again", async () => {
  const finished = await run(tiny("sentiment", { epochs: 1 }));
  // As a run from before GPT-2 was given the tokenizer's pad id wrote it: resuming rebuilds each model
  // from its checkpoint's config.json, so the run goes on as it began.
  const gpt2Config = `${finished.folder}/checkpoints/step-3/models/gpt2/config.json`;
  const config = JSON.parse(await Deno.readTextFile(gpt2Config));
  await Deno.writeTextFile(gpt2Config, JSON.stringify({ ...config, pad_token_id: null }));
  const lines: string[] = [];
  const again = await train(tiny("sentiment"), { info: (line) => lines.push(line) }, finished.folder);
  if (
    again.steps !== 0 ||
    !lines.includes("the run had finished (step 3): evaluating it on the test split again")
  ) {
    throw new Error(`${again.steps} steps; ${lines.join(" | ")}`);
  }
  await Deno.remove(finished.folder, { recursive: true });
});

Deno.test("a resumed run keeps NaN figures as NaN, and a failed start removes only what the run wrote", async () => {
  const out = await Deno.makeTempDir({ prefix: "run-folder-" });
  const facts = { adapter: "test", versions: {}, counts: {}, started: "2026-12-01T00:00:00Z" };
  const folder = await RunFolder.create({ ...tiny("sentiment"), out }, facts);
  const metrics = { "bert": { loss: NaN, lr: 1e-3, lrMultiplier: 1, gradNorm: NaN, updates: 0, skipped: 1 } };
  await folder.appendSteps([{ step: 2, steps: 2, seconds: 1, tokens: 8, models: metrics }]);
  await folder.appendEvaluations([
    { step: 2, epoch: 0.1, split: "validation", model: "bert", metrics: { accuracy: NaN } },
  ]);
  await Deno.writeTextFile(`${out}/state.json`, JSON.stringify({ step: 2, seconds: 1 }));
  await (await RunFolder.open(out)).restore([], {});
  const lines = (await Deno.readTextFile(`${out}/metrics.jsonl`)).trim().split("\n");
  if (lines.length !== 2 || lines.some((l) => l.includes("null")) || !lines[1].includes('"accuracy":"NaN"')) {
    throw new Error(`metrics.jsonl after resume: ${lines.join("\n")}`);
  }
  // A folder of the user's own, given as --out: discarding the failed run leaves it and its files.
  await Deno.remove(`${out}/state.json`);
  await Deno.mkdir(`${out}/tokenizers`);
  await Deno.writeTextFile(`${out}/tokenizers/mine.json`, "{}");
  await Deno.writeTextFile(`${out}/notes.txt`, "mine");
  await folder.discard();
  const left = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  if (left.join() !== "notes.txt,tokenizers" || !(await Deno.stat(`${out}/tokenizers/mine.json`)).isFile) {
    throw new Error(`left after discard: ${left}`);
  }
  await Deno.remove(out, { recursive: true });
});

Deno.test("a run's files are checked on resume: a line cut by a crash is dropped, a broken one or an edited option named", async () => {
  const out = await Deno.makeTempDir({ prefix: "run-folder-" });
  const facts = { adapter: "test", versions: {}, counts: {}, started: "2026-12-01T00:00:00Z" };
  const folder = await RunFolder.create({ ...tiny("sentiment"), out }, facts);
  const metrics = { "bert": { loss: 0.5, lr: 1e-3, lrMultiplier: 1, gradNorm: 1, updates: 2, skipped: 0 } };
  await folder.appendSteps([{ step: 2, steps: 2, seconds: 1, tokens: 8, models: metrics }]);
  await Deno.writeTextFile(`${out}/state.json`, JSON.stringify({ step: 2, seconds: 1 }));
  const file = `${out}/metrics.jsonl`;
  const complete = await Deno.readTextFile(file);
  await Deno.writeTextFile(file, complete + '{"type":"step","step":3,"mod', { append: false });
  await (await RunFolder.open(out)).restore([], {});
  if ((await Deno.readTextFile(file)) !== complete) throw new Error("the cut line was kept");
  await Deno.writeTextFile(file, "garbage\n" + complete);
  const broken = await (await RunFolder.open(out)).restore([], {}).then(() => "", (e) => e.message);
  if (!broken.includes(`train: ${file}: line 1 is not a JSON object: garbage`)) throw new Error(broken);
  const configFile = `${out}/config.json`;
  const config = JSON.parse(await Deno.readTextFile(configFile));
  await Deno.writeTextFile(
    configFile,
    JSON.stringify({ ...config, options: { ...config.options, batchSize: 1.5 } }),
  );
  const edited = await RunFolder.open(out).then(() => "", (e) => e.message);
  if (!edited.startsWith(`train: ${configFile}: `) || !edited.includes("1.5")) throw new Error(edited);
  // Before --independent refused --weights and --align-init it ignored them: such a run opens without them.
  const older = { ...config.options, independent: true, alignInit: true, weights: { bert: 2 } };
  await Deno.writeTextFile(configFile, JSON.stringify({ ...config, options: older }));
  const opened = (await RunFolder.open(out)).options;
  if (opened.alignInit || opened.weights !== null) throw new Error(JSON.stringify(opened));
  await Deno.remove(out, { recursive: true });
});

Deno.test("--save-limit keeps the newest checkpoints, and the run resumes from the last", async () => {
  const kept = await run(tiny("sentiment", { epochs: 3, saveLimit: 2 }));
  const folders = [...Deno.readDirSync(`${kept.folder}/checkpoints`)].map((e) => e.name).sort();
  if (folders.join() !== "step-6,step-9") throw new Error(`checkpoints left: ${folders}`);
  const lines: string[] = [];
  await train(tiny("sentiment"), { info: (line) => lines.push(line) }, kept.folder);
  if (!lines.includes("the run had finished (step 9): evaluating it on the test split again")) {
    throw new Error(lines.join(" | "));
  }
  await Deno.remove(kept.folder, { recursive: true });
  // Only checkpoints count and go, with what interrupted saves of theirs left; a user's step-N stays.
  const out = await Deno.makeTempDir({ prefix: "run-folder-" });
  const facts = { adapter: "test", versions: {}, counts: {}, started: "2026-12-01T00:00:00Z" };
  const folder = await RunFolder.create({ ...tiny("sentiment"), out, saveLimit: 1 }, facts);
  for (const name of ["step-3", "step-6", "step-9/bert", "step-100", "step-3.tmp-" + crypto.randomUUID()]) {
    await Deno.mkdir(`${out}/checkpoints/${name}`, { recursive: true });
  }
  for (const name of ["step-3", "step-6", "step-9/bert"]) {
    await Deno.writeTextFile(`${out}/checkpoints/${name}/optimizer.json`, "{}");
  }
  await Deno.writeTextFile(`${out}/checkpoints/step-100/notes.txt`, "mine");
  await folder.checkpoint(9, [], {}, 1);
  const left = [...Deno.readDirSync(`${out}/checkpoints`)].map((e) => e.name).sort();
  if (left.join() !== "step-100,step-9") throw new Error(`left: ${left}`);
  await Deno.remove(out, { recursive: true });
});

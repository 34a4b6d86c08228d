/**
 * The mutations `deno task mutants` tries: small plausible bugs across kernels, models, heads, the
 * optimizer and its options, the data and the metrics, each with the test files expected to catch it.
 * A mutation replaces the one occurrence of `find` in `file` by `replace`.
 *
 * @module
 */

/** One plausible bug and the tests that must catch it. */
export interface Mutation {
  /** Short name. */
  name: string;
  /** Source file, relative to the repository root. */
  file: string;
  /** Text occurring exactly once in the file. */
  find: string;
  /** What it becomes. */
  replace: string;
  /** Test files (in tests/) expected to fail. */
  tests: string[];
}

/** Every mutation, by area. */
export const MUTATIONS: Mutation[] = [
  // Models and heads.
  {
    name: "bert: tanh GELU instead of erf",
    file: "models/bert.ts",
    find: `gelu(x, activation === "gelu" ? "erf" : "tanh")`,
    replace: `gelu(x, "tanh")`,
    tests: ["models_test.ts", "heads_parity_test.ts"],
  },
  {
    name: "roberta: positions without the pad offset",
    file: "models/inputs.ts",
    find: "positions[b * T + t] = real ? count + pad : pad;",
    replace: "positions[b * T + t] = real ? count : pad;",
    tests: ["models_test.ts", "model_reference_test.ts"],
  },
  {
    name: "causal LM: labels not shifted",
    file: "models/heads.ts",
    find: "(i % T === T - 1 ? -100 : labels[i + 1])",
    replace: "(i % T === T - 1 ? -100 : labels[i])",
    tests: ["models_test.ts", "heads_parity_test.ts"],
  },
  // Optimizer.
  {
    name: "optimizer: AdamW without the second bias correction",
    file: "optim/kernels.ts",
    find:
      "let denom = sqrt(${secondMoment}) / sqrt(control[row + ${CONTROL.biasCorrection2}u]) + params.eps;",
    replace: "let denom = sqrt(${secondMoment}) + params.eps;",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: AMSGrad divides by the second moment, not its running maximum",
    file: "optim/kernels.ts",
    find: 'const secondMoment = amsgrad ? "max_v" : "v";',
    replace: 'const secondMoment = "v";',
    tests: ["amsgrad_test.ts"],
  },
  {
    name: "optimizer: weight decay ignored",
    file: "optim/kernels.ts",
    find: "let p = values[i] * (1.0 - lr * params.weight_decay);",
    replace: "let p = values[i];",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: a skipped model read by sharing (0 x NaN)",
    file: "optim/kernels.ts",
    find: "if (k < count && weights[k] > 0.0) { total += weights[k] * mixed[offsets[k] + e]; }",
    replace: "if (k < count) { total += weights[k] * mixed[offsets[k] + e]; }",
    tests: ["faults_test.ts"],
  },
  {
    name: "optimizer: a skipped model counts in the adaptive mean",
    file: "optim/plan.ts",
    find: "if (trend_valid[m] == 1u && control[m * S + ${CONTROL.skip}u] < 0.5) {",
    replace: "if (trend_valid[m] == 1u) {",
    tests: ["faults_test.ts"],
  },
  {
    name: "optimizer: clipping ignored",
    file: "optim/plan.ts",
    find: "if (params.clip > 0.0) { clip_factor = min(1.0, params.clip / (norm + 1e-6)); }",
    replace: "if (params.clip > 0.0) { clip_factor = 1.0; }",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: a rising loss may raise its multiplier",
    file: "optim/plan.ts",
    find: "if (trend_slope[m] > 0.0) { goal = min(goal, multiplier); }",
    replace: "",
    tests: ["optimizer_test.ts", "adaptive_lr_test.ts"],
  },
  {
    name: "optimizer: equal learning-rate factors whatever the weights",
    file: "optim/options.ts",
    find: "return weights.map((w) => w / mean);",
    replace: "return weights.map(() => 1);",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: sharing period off by one",
    file: "optim/multimodel.ts",
    find: "(update + 1) % o.gradientSharing.every === 0",
    replace: "update % o.gradientSharing.every === 0",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: sync period off by one",
    file: "optim/multimodel.ts",
    find: "(update + 1) % o.parameterSync.every === 0",
    replace: "update % o.parameterSync.every === 0",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "checkpoint: weights written before the optimizer state is checked",
    file: "optim/checkpoint.ts",
    find:
      "  const state = await readOptimizerTensors(`${root}/optimizer.safetensors`, json, optimizer.options.amsgrad);",
    replace: "  for (const w of weights) w.apply();\n" +
      "  const state = await readOptimizerTensors(`${root}/optimizer.safetensors`, json, optimizer.options.amsgrad);",
    tests: ["checkpoint_files_test.ts"],
  },
  // Engine.
  {
    name: "autograd: a leaf's gradient overwritten instead of accumulated",
    file: "engine/tensor.ts",
    find: "if (i < params.count) { into[i] = into[i] + grad[i]; }",
    replace: "if (i < params.count) { into[i] = grad[i]; }",
    tests: ["engine_test.ts", "optimizer_test.ts"],
  },
  {
    name: "ids: copyInto leaves the host copy stale",
    file: "engine/tensor.ts",
    find: "if (target.storage !== source.storage) target.storage.hostInts = source.storage.hostInts;",
    replace: "",
    tests: ["ids_test.ts"],
  },
  // Data and metrics.
  {
    name: "tagging: every sub-word labelled, not only the first",
    file: "data/encode.ts",
    find: "if (word !== labelled) {",
    replace: "if (word >= 0) {",
    tests: ["encode_test.ts"],
  },
  {
    name: "seqeval: an I- tag after O does not start a chunk",
    file: "train/metrics.ts",
    find:
      `if ((prevTag === "E" || prevTag === "S" || prevTag === "O") && (tag === "E" || tag === "I")) return true;`,
    replace: `if ((prevTag === "E" || prevTag === "S") && (tag === "E" || tag === "I")) return true;`,
    tests: ["metrics_test.ts"],
  },
  {
    name: "SQuAD: articles kept by the normalisation",
    file: "train/metrics.ts",
    find: `.replace(ARTICLES, " ")`,
    replace: "",
    tests: ["metrics_test.ts"],
  },
];

/**
 * The mutations `deno task mutants` tries: small plausible bugs across kernels, models, heads, the
 * optimizer and its options, the data and the metrics, each with the test files expected to catch it.
 * A mutation replaces the one occurrence of `find` in `file` by `replace`. The kernel mutations change
 * WGSL math lines (loop bounds, indices, scales, the place of eps), not the dispatch code around them,
 * which changes more often; `deno task mutants` refuses to run when a text no longer occurs exactly
 * once, naming the mutation. docs/reliability.md records the last run.
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
  /** Only the tests whose names match this (deno test's --filter: a substring, or /a regexp/). */
  filter?: string;
}

/** Every mutation, by area. */
export const MUTATIONS: Mutation[] = [
  // Models and heads.
  {
    name: "bert: tanh GELU instead of erf",
    file: "models/layers.ts",
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
    find: "let p = values[i] * (1.0 - lr * ${decay});",
    replace: "let p = values[i];",
    tests: ["optimizer_test.ts"],
  },
  {
    name: "optimizer: the decay mask's bit read the wrong way round",
    file: "optim/kernels.ts",
    find: "return select(0.0, params.weight_decay, decays == 1u);",
    replace: "return select(params.weight_decay, 0.0, decays == 1u);",
    tests: ["optimizer_test.ts"],
    filter: "decayBiasesAndNorms",
  },
  {
    name: "optimizer: the decay mask indexed from each window's start",
    file: "optim/kernels.ts",
    find: "decay_of(params.window_start + i * 4u)",
    replace: "decay_of(i * 4u)",
    tests: ["scale_test.ts"],
    filter: "joint optimizer",
  },
  {
    name: "optimizer: a skipped model read by sharing (0 x NaN)",
    file: "optim/kernels.ts",
    find: "if (weights[${m}] > 0.0) { x${m} = ${element(m, at(m))}; total += weights[${m}] * x${m}; }",
    replace: "{ x${m} = ${element(m, at(m))}; total += weights[${m}] * x${m}; }",
    tests: ["faults_test.ts"],
  },
  {
    name: "optimizer: a skipped model counts in the adaptive mean",
    file: "optim/plan.ts",
    find: "if (k < params.models && trend_valid[k] == 1u && control[k * S + ${CONTROL.skip}u] < 0.5) {",
    replace: "if (k < params.models && trend_valid[k] == 1u) {",
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
  // Kernels (WGSL).
  {
    name: "matmul: the K guard of the direct kernel reads one step past K",
    file: "kernels/matmul_kernel.ts",
    find: ": `select(vec4<f32>(), ${quad()}, k + ${kk}u < params.k_end)`;",
    replace: ": `select(vec4<f32>(), ${quad()}, k + ${kk}u <= params.k_end)`;",
    tests: ["matmul_test.ts"],
    filter: "/odd sizes|aligned/",
  },
  {
    name: "matmul: every column tile of a weight's gradient adds the bias's sums (texel)",
    file: "kernels/matmul_texel.ts",
    find: "`wid.x + params.col_tile0 == 0u && lid % ${threadsX}u == 0u`,",
    replace: "`lid % ${threadsX}u == 0u`,",
    tests: ["gradient_sink_test.ts"],
  },
  {
    name: "optimizer: the vec4 mix also moves the lanes past a group's end",
    file: "optim/kernels.ts",
    find: "${vectorised ? `select(x${m}, ${mixed(m)}, inside)` : mixed(m)}",
    replace: "${mixed(m)}",
    tests: ["optimizer_test.ts"],
    filter: "vec4",
  },
  {
    name: "matmul: every column of a quad takes the quad's first bias",
    file: "kernels/matmul_kernel.ts",
    find: "v[e] = bias[params.bias_shift + col + e];",
    replace: "v[e] = bias[params.bias_shift + col];",
    tests: ["matmul_test.ts"],
    filter: "/odd sizes|aligned/",
  },
  {
    name: "attention (texel): backward recomputes P without the scale",
    file: "kernels/attention_texel.ts",
    find: "exp(s${r} * params.scale - lse${r})",
    replace: "exp(s${r} - lse${r})",
    tests: ["attention_test.ts"],
  },
  {
    name: "attention (rows): dQ not multiplied by the scale",
    file: "kernels/attention_rows.ts",
    find: "dq[r * D4 + c] * params.scale);",
    replace: "dq[r * D4 + c]);",
    tests: ["attention_test.ts"],
  },
  {
    name: "layerNorm: eps added outside the square root",
    file: "kernels/layernorm.ts",
    find: "let r = inverseSqrt(reduce_squares(hsum(q), lane, slot) / n + params.eps);",
    replace: "let r = 1.0 / (sqrt(reduce_squares(hsum(q), lane, slot) / n) + params.eps);",
    tests: ["layernorm_test.ts"],
  },
  {
    name: "layerNorm: the variance of a row's tail (past the registers) forgets the shift",
    file: "kernels/layernorm.ts",
    find: `"let c = (load_x(base + j) - shift) - mu; q += c * c;",`,
    replace: `"let c = load_x(base + j) - mu; q += c * c;",`,
    tests: ["layernorm_test.ts"],
  },
  {
    name: "log-softmax backward: exp of the output forgotten",
    file: "kernels/softmax.ts",
    find: `"g - exp(v) * total"`,
    replace: `"g - v * total"`,
    tests: ["softmax_test.ts"],
  },
  {
    name: "cross-entropy: the mean counts ignored rows",
    file: "kernels/cross_entropy.ts",
    find: `"select(1.0, 0.0, targets[r] == params.ignore_index)"`,
    replace: `"1.0"`,
    tests: ["cross_entropy_test.ts"],
  },
  {
    name: "embedding backward: the tail loop stops one position early",
    file: "kernels/embedding.ts",
    find: "for (; k < end; k++) {",
    replace: "for (; k + 1u < end; k++) {",
    tests: ["embedding_test.ts"],
  },
  {
    name: "sum over an axis: the strided loop stops one row early",
    file: "kernels/reduce.ts",
    find: "for (var r = start; r < end; r++) {",
    replace: "for (var r = start; r + 1u < end; r++) {",
    tests: ["reduce_test.ts"],
  },
  {
    name: "optimizer: eps inside the square root",
    file: "optim/kernels.ts",
    find:
      "let denom = sqrt(${secondMoment}) / sqrt(control[row + ${CONTROL.biasCorrection2}u]) + params.eps;",
    replace: "let denom = sqrt(${secondMoment} / control[row + ${CONTROL.biasCorrection2}u] + params.eps);",
    tests: ["optimizer_options_test.ts"],
    filter: "eps",
  },
  {
    name: "optimizer: AdamW without the first bias correction",
    file: "optim/kernels.ts",
    find: "let updated = p - (lr / control[row + ${CONTROL.biasCorrection1}u]) * m / denom;",
    replace: "let updated = p - lr * m / denom;",
    tests: ["optimizer_test.ts"],
    filter: "torch.optim.AdamW",
  },
  {
    name: "optimizer: accumulated gradients summed, not averaged",
    file: "optim/plan.ts",
    find: "control[row + ${CONTROL.gradScale}u] = params.inverse_accumulation * clip_factor;",
    replace: "control[row + ${CONTROL.gradScale}u] = clip_factor;",
    tests: ["optimizer_options_test.ts"],
    filter: "accumulation",
  },
  {
    name: "optimizer: clipping also scales small gradients up",
    file: "optim/plan.ts",
    find: "clip_factor = min(1.0, params.clip / (norm + 1e-6));",
    replace: "clip_factor = params.clip / (norm + 1e-6);",
    tests: ["optimizer_options_test.ts"],
    filter: "clipping",
  },
  // Options.
  {
    name: "attention: the scale option ignored",
    file: "kernels/attention.ts",
    find: "const { causal = false, keyMask, scale = 1 / Math.sqrt(dim), dropout = 0 } = o;",
    replace: "const { causal = false, keyMask, dropout = 0 } = o;\n  const scale = 1 / Math.sqrt(dim);",
    tests: ["attention_test.ts"],
    filter: "scale",
  },
  {
    name: "regression head (numLabels 1) trained with cross-entropy",
    file: "models/heads.ts",
    find: "if (this.numLabels === 1) {",
    replace: "if (this.numLabels === 0) {",
    tests: ["heads_parity_test.ts", "model_options_test.ts"],
    filter: "regression",
  },
  {
    name: "GPT-2: the final LayerNorm ignores the configured eps",
    file: "models/gpt2.ts",
    find: "return applyNorm(set, this.#finalNorm, x, c.layerNormEps);",
    replace: "return applyNorm(set, this.#finalNorm, x, 1e-5);",
    tests: ["model_reference_test.ts"],
    filter: "GPT-2",
  },
  {
    name: "BERT: attention probabilities dropped with the hidden dropout",
    file: "models/bert.ts",
    find: "dropout: training ? c.attentionDropout : 0,",
    replace: "dropout: training ? c.hiddenDropout : 0,",
    tests: ["model_options_test.ts"],
    filter: "dropout field",
  },
  {
    name: "schedule: warmup starts at 0 (u / warmup, not (u + 1) / warmup)",
    file: "optim/options.ts",
    find: "if (u < warmupSteps) return (u + 1) / warmupSteps;",
    replace: "if (u < warmupSteps) return u / warmupSteps;",
    tests: ["adaptive_lr_test.ts"],
  },
  {
    name: "optimizer: soft sync's default period 9, not 10",
    file: "optim/options.ts",
    find: 'parameterSync: mixing(options.parameterSync, 0.1, 10, "parameterSync"),',
    replace: 'parameterSync: mixing(options.parameterSync, 0.1, 9, "parameterSync"),',
    tests: ["optimizer_options_test.ts"],
    filter: "default",
  },
  {
    name: "train: --sharing's ratio ignored (always the default)",
    file: "train/models.ts",
    find: "options.sharing === false ? false : { ratio: options.sharing },",
    replace: "options.sharing === false ? false : {},",
    tests: ["train_options_test.ts"],
  },
  {
    name: "optimizer: a cycle closed early divided by the full accumulation",
    file: "optim/multimodel.ts",
    find: "inverseAccumulation: 1 / microBatches,",
    replace: "inverseAccumulation: 1 / o.gradientAccumulationSteps,",
    tests: ["optimizer_test.ts"],
    filter: "closeCycle",
  },
  {
    name: "baseline: the unigram model scores each row's first token",
    file: "train/task_kinds.ts",
    find: "for (let row = 0; row < b.batch; row++) targets[row * b.length] = IGNORE_INDEX;",
    replace: "",
    tests: ["baseline_test.ts"],
  },
  {
    name: "experiment: Fieller's interval without the pairs' covariance",
    file: "experiment/stats.ts",
    find: "const covariance = options.paired",
    replace: "const covariance = false",
    tests: ["experiment_stats_test.ts"],
  },
  // Engine.
  {
    name: "autograd: a leaf's gradient overwritten instead of accumulated",
    file: "engine/tensor.ts",
    find: 'texel ? "into[i] = texel(current, i) + texel(grad, i);" : "into[i] = into[i] + grad[i];"',
    replace: 'texel ? "into[i] = texel(grad, i);" : "into[i] = grad[i];"',
    tests: ["engine_test.ts", "optimizer_test.ts"],
  },
  {
    name: "llvmpipe: one invocation walks a row whatever its length",
    file: "engine/kernel.ts",
    find: "return steps <= limit ? 1 : 2 ** Math.ceil(Math.log2(steps / limit));",
    replace: "return 1;",
    tests: ["long_rows_test.ts"],
  },
  {
    name: "div: the divisor's gradient as -a / (b * b)",
    file: "kernels/elementwise_ops.ts",
    find: "a.neg().div(b).div(b)",
    replace: "a.neg().div(b.mul(b))",
    tests: ["extreme_values_test.ts"],
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
    name: "tokenizer: uncased BERT lowercases whole strings (a final sigma becomes ς)",
    file: "data/wordpiece.ts",
    find: `Array.from(text, (char) => char.toLowerCase()).join("")`,
    replace: "text.toLowerCase()",
    tests: ["tokenizer_test.ts"],
    filter: "Rust library",
  },
  {
    name: "train: GPT-2's token classifier keeps its own dropout",
    file: "train/models.ts",
    find: "    classifierDropout: options.dropout,\n",
    replace: "",
    tests: ["train_options_test.ts"],
  },
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
  // Engine, optimizer, files and runs: the fixes of 2026-12-02.
  {
    name: "zeroGrad: only after an update, keeping an abandoned micro-batch",
    file: "optim/multimodel.ts",
    find: "if (this.#counters.microBatches > 0) return;",
    replace: "if (!this.#counters.gradientsStale) return;",
    tests: ["async_interleaving_test.ts"],
    filter: "zeroGrad",
  },
  {
    name: "pool: a request served by its own size class only",
    file: "engine/pool.ts",
    find: "candidate <= 2 * size",
    replace: "candidate <= size",
    tests: ["engine_test.ts"],
    filter: "twice",
  },
  {
    name: "tokenizer: a BPE merge not checked against the vocabulary",
    file: "data/tokenizer.ts",
    find: "for (const token of [pair[0], pair[1], pair[0] + pair[1]]) {",
    replace: "for (const token of [pair[0], pair[1]]) {",
    tests: ["tokenizer_test.ts"],
  },
  {
    name: "train: --save-limit prunes nothing",
    file: "train/run.ts",
    find: "if (this.options.saveLimit !== null) await this.#pruneCheckpoints(this.options.saveLimit);",
    replace: "",
    tests: ["train_test.ts"],
    filter: "save-limit",
  },
];

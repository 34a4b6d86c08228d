/**
 * Run-time checks of the option objects the engine's functions take. TypeScript catches a misspelt
 * option when it type-checks, but `deno run` does not, and the browser bundle is plain JavaScript:
 * without these checks PyTorch's spellings (`keepdim`, `requires_grad`, `ignore_index`, `is_causal`)
 * and positional flags (`sum(x, 1, true)`) would be ignored in silence.
 *
 * @module
 */

/** PyTorch's and Hugging Face's names of options this project spells otherwise. */
const PYTORCH_NAMES: Readonly<Record<string, string>> = {
  keepdim: "keepDims",
  requires_grad: "requiresGrad",
  ignore_index: "ignoreIndex",
  is_causal: "causal",
  attn_mask: "keyMask",
  key_padding_mask: "keyMask",
  dropout_p: "dropout",
  padding_idx: "paddingIndex",
  retain_graph: "retainGraph",
  train: "training",
  // Hugging Face TrainingArguments' names of train()'s options.
  learning_rate: "lr",
  num_train_epochs: "epochs",
  max_steps: "steps",
  per_device_train_batch_size: "batchSize",
  warmup_ratio: "warmup",
  gradient_accumulation_steps: "accumulate",
  max_grad_norm: "clip",
  eval_steps: "evalEvery",
  logging_steps: "logEvery",
  output_dir: "out",
  save_total_limit: "saveLimit",
};

/**
 * Throws unless `options` is undefined or an object whose every key is in `accepted`; the error
 * names the function, the key (with the accepted spelling of a PyTorch or snake_case name) and what
 * it accepts.
 */
export function checkOptions(op: string, options: unknown, accepted: readonly string[]): void {
  if (options === undefined) return;
  const list = accepted.join(", ");
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    const shown = Array.isArray(options)
      ? `[${options}]`
      : typeof options === "string"
      ? `"${options}"`
      : options;
    throw new TypeError(`${op}: options must be an object ({ ${list} }), got ${shown}`);
  }
  for (const key of Object.keys(options)) {
    if (accepted.includes(key)) continue;
    const camel = key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const meant = [PYTORCH_NAMES[key], camel].find((name) => name !== undefined && accepted.includes(name));
    throw new TypeError(
      `${op}: unknown option "${key}"${meant ? ` (did you mean "${meant}"?)` : ""}; accepted: ${list}`,
    );
  }
}

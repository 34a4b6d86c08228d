/**
 * Loading each head's checkpoint into every other head of its family reports what Hugging Face's
 * `from_pretrained` reports: its missing keys are our newly initialised parameters, its unexpected
 * keys the tensors we ignore, its mismatched keys those we re-initialise. The expected lists are
 * transformers' own, in tests/fixtures/hf/heads/load_matrix.json (written by generate_hf.py).
 */
import { readAll } from "../engine/tensor.ts";
import { loadPretrainedWithReport } from "../models/pretrained.ts";
import type { Task } from "../models/heads.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { assertBitwiseEqual, setup } from "./helpers.ts";

await setup();

const HEADS = new URL("./fixtures/hf/heads/", import.meta.url).pathname;

interface HfReport {
  missing_keys: string[];
  unexpected_keys: string[];
  mismatched_keys: [string, number[], number[]][];
}

const MATRIX = JSON.parse(await Deno.readTextFile(`${HEADS}load_matrix.json`)) as Record<
  string,
  Record<string, HfReport>
>;

/** How each head folder's target is built, with the label counts the generator gave transformers. */
const TARGETS: Record<string, { task: Task; numLabels?: number }> = {
  "base": { task: "base" },
  "sequence-classification": { task: "sequence-classification", numLabels: 3 },
  "regression": { task: "sequence-classification", numLabels: 1 },
  "token-classification": { task: "token-classification", numLabels: 3 },
  "question-answering": { task: "question-answering" },
  "causal-lm": { task: "causal-lm" },
  "masked-lm": { task: "masked-lm" },
};

/**
 * Hugging Face lists the LM decoder's bias under its tied name too (`cls.predictions.decoder.bias`
 * is `cls.predictions.bias`); our LM heads hold that tensor once, under the second name.
 */
const TIED_ALIAS = /^(cls\.predictions|lm_head)\.decoder\.bias$/;

const sorted = (names: string[]) => [...names].sort().join("\n");

Deno.test("the matrix holds every ordered pair of heads of each family: 42 BERT, 30 GPT-2, 42 RoBERTa", () => {
  const pairs = Object.entries(MATRIX).map(([source, targets]) => [source, Object.keys(targets).length]);
  const count = (family: string) =>
    pairs.filter(([s]) => (s as string).startsWith(`${family}-`)).reduce((n, [, k]) => n + (k as number), 0);
  if (count("bert") !== 42 || count("gpt2") !== 30 || count("roberta") !== 42) {
    throw new Error(`pairs: ${count("bert")}, ${count("gpt2")}, ${count("roberta")}`);
  }
});

for (const [source, targets] of Object.entries(MATRIX)) {
  Deno.test(`${source} loads into every other head as Hugging Face loads it`, async () => {
    const file = (await readSafetensors(`${HEADS}${source}/model.safetensors`)).tensors;
    const family = source.split("-")[0];
    const prefix = { bert: "bert.", roberta: "roberta.", gpt2: "transformer." }[family]!;
    for (const [head, hf] of Object.entries(targets)) {
      const pair = `${source} -> ${head}`;
      const { model, report } = await loadPretrainedWithReport(`${HEADS}${source}`, {
        ...TARGETS[head],
        allowNewHead: true,
        ignoreMismatchedSizes: true,
      });
      const expectedNew = hf.missing_keys.filter((n) => !TIED_ALIAS.test(n));
      if (sorted(report.newlyInitialized) !== sorted(expectedNew)) {
        throw new Error(`${pair}: newly initialised [${report.newlyInitialized}], HF [${expectedNew}]`);
      }
      if (sorted(report.ignored) !== sorted(hf.unexpected_keys)) {
        throw new Error(`${pair}: ignored [${report.ignored}], HF [${hf.unexpected_keys}]`);
      }
      const ours = report.mismatched.map((m) => JSON.stringify([m.name, m.found, m.expected]));
      const theirs = hf.mismatched_keys.map((m) => JSON.stringify(m));
      if (sorted(ours) !== sorted(theirs)) throw new Error(`${pair}: mismatched [${ours}], HF [${theirs}]`);
      // Everything else holds the file's values, found under its name with or without the body prefix.
      const values = await readAll(model.parameters.map((p) => p.value));
      const fresh = new Set([...report.newlyInitialized, ...report.mismatched.map((m) => m.name)]);
      model.parameters.forEach((p, i) => {
        if (fresh.has(p.info.name)) return;
        const name = p.info.name;
        const stored = file.get(name) ?? file.get(name.slice(prefix.length)) ?? file.get(prefix + name);
        if (!stored) throw new Error(`${pair}: "${name}" loaded from nowhere`);
        assertBitwiseEqual(values[i], stored.data, `${pair}: ${name}`);
      });
      model.dispose();
    }
  });
}

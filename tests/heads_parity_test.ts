/**
 * Every task head against Hugging Face by value: outputs, Hugging Face's own loss and the gradient
 * of every parameter, on the head folders of tests/fixtures/hf at both weight scales (`heads/` at
 * Hugging Face's initialisation, `heads-std0.25/` where activations are of order 1). The check is
 * `deno task parity`'s own, {@linkcode checkModelFolder}.
 */
import { serializeSafetensors } from "../models/safetensors.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { checkModelFolder, MODEL_TOLERANCE } from "../models/parity.ts";
import { maxAbs, setup } from "./helpers.ts";

await setup();

const FIXTURES = new URL("./fixtures/hf/", import.meta.url).pathname;
const FAMILIES = ["bert", "gpt2", "roberta"];
const HEADS = [
  "base",
  "sequence-classification",
  "regression",
  "token-classification",
  "question-answering",
  "causal-lm",
  "masked-lm",
];
// The task each folder is loaded as: the regression head is a sequence classifier with one label.
const TASK: Record<string, string> = { regression: "sequence-classification" };

function folders(scale: string): string[] {
  return [...Deno.readDirSync(`${FIXTURES}${scale}`)].filter((e) => e.isDirectory).map((e) => e.name).sort();
}

Deno.test("heads/ holds every head of every family (GPT-2 has no masked LM); heads-std0.25/ each body", () => {
  const every = FAMILIES.flatMap((f) =>
    HEADS.filter((h) => f !== "gpt2" || h !== "masked-lm").map((h) => `${f}-${h}`)
  );
  if (folders("heads").join() !== every.sort().join()) throw new Error(`heads/: ${folders("heads")}`);
  const realistic = folders("heads-std0.25");
  if (!FAMILIES.every((f) => realistic.includes(`${f}-base`))) {
    throw new Error(`heads-std0.25/: ${realistic}`);
  }
});

for (
  const [scale, tolerance] of [["heads", MODEL_TOLERANCE["0.02"]], [
    "heads-std0.25",
    MODEL_TOLERANCE["0.25"],
  ]] as const
) {
  for (const name of folders(scale)) {
    Deno.test(`${scale}/${name}: outputs, loss and every gradient match Hugging Face`, async () => {
      const result = await checkModelFolder(`${FIXTURES}${scale}/${name}`);
      if (!result.pass) throw new Error(JSON.stringify(result));
      const [family, ...head] = name.split("-");
      const task = TASK[head.join("-")] ?? head.join("-");
      if (result.model !== `${family}/${task}`) throw new Error(`loaded as ${result.model}`);
      if (result.tolerance !== tolerance) throw new Error(`tolerance ${JSON.stringify(result.tolerance)}`);
    });
  }
}

Deno.test("zero gradients are found by structure: key biases, and the output and last norm biases of QA", async () => {
  const expected = {
    "bert-question-answering": [
      "bert.encoder.layer.0.attention.self.key.bias",
      "bert.encoder.layer.1.attention.self.key.bias",
      "qa_outputs.bias",
      "bert.encoder.layer.1.output.LayerNorm.bias",
    ],
    "gpt2-question-answering": ["qa_outputs.bias", "transformer.ln_f.bias"],
    "roberta-masked-lm": [
      "roberta.encoder.layer.0.attention.self.key.bias",
      "roberta.encoder.layer.1.attention.self.key.bias",
    ],
    "gpt2-causal-lm": [],
  };
  for (const [name, tensors] of Object.entries(expected)) {
    const result = await checkModelFolder(`${FIXTURES}heads/${name}`);
    if (result.zeroGradientTensors.join() !== tensors.join()) {
      throw new Error(`${name}: ${result.zeroGradientTensors}`);
    }
  }
});

Deno.test("a zero gradient off by 1e-3 of its companion weight's largest gradient fails", async () => {
  const source = `${FIXTURES}heads/bert-question-answering`;
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  try {
    for (const f of ["config.json", "model.safetensors", "io.safetensors"]) {
      await Deno.copyFile(`${source}/${f}`, `${folder}/${f}`);
    }
    const { tensors } = await readSafetensors(`${source}/grads.safetensors`);
    tensors.get("qa_outputs.bias")!.data.fill(1e-3 * maxAbs(tensors.get("qa_outputs.weight")!.data));
    await Deno.writeFile(`${folder}/grads.safetensors`, serializeSafetensors(tensors));
    const result = await checkModelFolder(folder);
    if (result.pass || result.worstZeroGradientTensor !== "qa_outputs.bias") {
      throw new Error(JSON.stringify(result));
    }
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

/**
 * Sharded checkpoints (`model.safetensors.index.json` and `model-0000i-of-0000N.safetensors`): the
 * folder Hugging Face's `save_pretrained(max_shard_size="40KB")` wrote (tests/fixtures/hf/sharded)
 * loads; ours round-trip and match Hugging Face's files and index; a bad index or shard is refused.
 */
import { readAll } from "../engine/tensor.ts";
import { loadPretrainedWithReport, savePretrained } from "../models/pretrained.ts";
import { serializeSafetensors } from "../models/safetensors.ts";
import { readSafetensors } from "../models/safetensors_file.ts";
import { planShards } from "../models/sharded.ts";
import { checkModelFolder } from "../models/parity.ts";
import { assertBitwiseEqual, setup, thrownMessage } from "./helpers.ts";

await setup();

const FIXTURES = new URL("./fixtures/hf/", import.meta.url).pathname;
const HF_SHARDED = `${FIXTURES}sharded/bert-sequence-classification`;
const SINGLE = `${FIXTURES}heads/bert-sequence-classification`;
const SHARDS = [
  "model-00001-of-00003.safetensors",
  "model-00002-of-00003.safetensors",
  "model-00003-of-00003.safetensors",
];

async function files(folder: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(folder))).map((e) => e.name).sort();
}

async function copyFolder(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for (const name of await files(from)) await Deno.copyFile(`${from}/${name}`, `${to}/${name}`);
}

Deno.test("Hugging Face's sharded folder loads with the values of the single file, and passes parity", async () => {
  const sharded = await loadPretrainedWithReport(HF_SHARDED);
  const single = await loadPretrainedWithReport(SINGLE);
  if (sharded.source !== `${HF_SHARDED}/model.safetensors.index.json`) throw new Error(sharded.source);
  if (sharded.model.task !== "sequence-classification" || sharded.model.numLabels !== 3) {
    throw new Error(`${sharded.model.task} ${sharded.model.numLabels}`);
  }
  const [a, b] = await Promise.all(
    [sharded.model, single.model].map((m) => readAll(m.parameters.map((p) => p.value))),
  );
  a.forEach((values, i) => assertBitwiseEqual(values, b[i], sharded.model.parameters[i].info.name));
  sharded.model.dispose();
  single.model.dispose();
  const parity = await checkModelFolder(HF_SHARDED);
  if (!parity.pass) throw new Error(JSON.stringify(parity));
});

Deno.test("savePretrained with maxShardBytes writes Hugging Face's shards and index, and loads them back", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "sharded-" });
  const { model } = await loadPretrainedWithReport(SINGLE);
  await savePretrained(model, folder, { maxShardBytes: 40_000 });
  if (
    (await files(folder)).join() !== ["config.json", ...SHARDS, "model.safetensors.index.json"].sort().join()
  ) {
    throw new Error(`files: ${await files(folder)}`);
  }
  // The same weights give Hugging Face's index and the same tensors in each shard.
  const index = await Deno.readTextFile(`${folder}/model.safetensors.index.json`);
  const hfIndex = await Deno.readTextFile(`${HF_SHARDED}/model.safetensors.index.json`);
  if (JSON.stringify(JSON.parse(index)) !== JSON.stringify(JSON.parse(hfIndex))) {
    throw new Error(`index:\n${index}\nHugging Face's:\n${hfIndex}`);
  }
  for (const shard of SHARDS) {
    const [ours, theirs] = await Promise.all(
      [folder, HF_SHARDED].map((f) => readSafetensors(`${f}/${shard}`)),
    );
    if ([...ours.tensors.keys()].sort().join() !== [...theirs.tensors.keys()].sort().join()) {
      throw new Error(`${shard}: [${[...ours.tensors.keys()]}]`);
    }
    for (const [name, t] of ours.tensors) assertBitwiseEqual(t.data, theirs.tensors.get(name)!.data, name);
    if (ours.metadata.format !== "pt") throw new Error(`${shard}: metadata ${JSON.stringify(ours.metadata)}`);
  }
  const again = await loadPretrainedWithReport(folder);
  const [a, b] = await Promise.all(
    [model, again.model].map((m) => readAll(m.parameters.map((p) => p.value))),
  );
  a.forEach((values, i) => assertBitwiseEqual(b[i], values, model.parameters[i].info.name));
  again.model.dispose();
  // Saving again replaces the other layout's files: one file, then shards again, then fewer shards.
  await savePretrained(model, folder);
  if ((await files(folder)).join() !== "config.json,model.safetensors") {
    throw new Error(`${await files(folder)}`);
  }
  await savePretrained(model, folder, { maxShardBytes: 40_000 });
  if ((await files(folder)).includes("model.safetensors")) throw new Error("model.safetensors left");
  await savePretrained(model, folder, { maxShardBytes: 60_000 });
  const two = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  if ((await files(folder)).join() !== [...two, "model.safetensors.index.json"].join()) {
    throw new Error(`${await files(folder)}`);
  }
  // Weights that fit one shard are one model.safetensors, as Hugging Face writes them.
  await savePretrained(model, folder, { maxShardBytes: 1e9 });
  if ((await files(folder)).join() !== "config.json,model.safetensors") {
    throw new Error(`${await files(folder)}`);
  }
  model.dispose();
  await Deno.remove(folder, { recursive: true });
});

Deno.test("shards are planned as Hugging Face plans them: in order, a tensor larger than a shard alone, first", () => {
  const t = (bytes: number) => ({ shape: [bytes / 4], data: new Float32Array(bytes / 4) });
  const entries = [["a", t(40)], ["b", t(40)], ["c", t(200)], ["d", t(40)], ["e", t(80)]] as const;
  const plan = planShards(entries, 100).map((shard) => shard.map(([name]) => name).join("")).join(",");
  if (plan !== "c,ab,d,e") throw new Error(plan);
});

Deno.test("a bad index or shard is refused, naming the file and what is wrong", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "bad-shards-" });
  const indexPath = `${folder}/model.safetensors.index.json`;
  const index = JSON.parse(await Deno.readTextFile(`${HF_SHARDED}/model.safetensors.index.json`));
  const cases: [string, (folder: string) => Promise<void>, string[]][] = [
    ["a shard missing", (f) => Deno.remove(`${f}/${SHARDS[2]}`), [
      indexPath,
      `shard ${SHARDS[2]}, which holds`,
      "is missing",
    ]],
    [
      "a tensor mapped to the wrong shard",
      (f) => {
        const map = { ...index.weight_map, "classifier.bias": SHARDS[0] };
        return Deno.writeTextFile(
          `${f}/model.safetensors.index.json`,
          JSON.stringify({ ...index, weight_map: map }),
        );
      },
      [
        indexPath,
        `"classifier.bias" is mapped to ${SHARDS[0]}, which does not hold it`,
        `${SHARDS[2]} holds "classifier.bias"`,
      ],
    ],
    [
      "a shard outside the folder",
      (f) => {
        const map = { ...index.weight_map, "classifier.bias": "../elsewhere.safetensors" };
        return Deno.writeTextFile(
          `${f}/model.safetensors.index.json`,
          JSON.stringify({ ...index, weight_map: map }),
        );
      },
      [indexPath, '"../elsewhere.safetensors", not a .safetensors file of the folder'],
    ],
    ["an index that is not JSON", (f) => Deno.writeTextFile(`${f}/model.safetensors.index.json`, "{"), [
      indexPath,
    ]],
    [
      "a truncated shard",
      async (f) => {
        const bytes = await Deno.readFile(`${f}/${SHARDS[1]}`);
        await Deno.writeFile(`${f}/${SHARDS[1]}`, bytes.subarray(0, bytes.length - 4));
      },
      [`${folder}/${SHARDS[1]}`, "run past the end of the data region"],
    ],
    [
      "a classifier of another shape in the last shard",
      async (f) => {
        const { tensors } = await readSafetensors(`${f}/${SHARDS[2]}`);
        tensors.set("classifier.weight", { shape: [2, 32], data: new Float32Array(64) });
        await Deno.writeFile(`${f}/${SHARDS[2]}`, serializeSafetensors(tensors));
      },
      [indexPath, 'wrong shape "classifier.weight": expected [3, 32], found [2, 32]'],
    ],
  ];
  for (const [what, damage, fragments] of cases) {
    await Deno.remove(folder, { recursive: true });
    await copyFolder(HF_SHARDED, folder);
    await damage(folder);
    const error = await thrownMessage(() => loadPretrainedWithReport(folder, { numLabels: 3 }));
    for (const fragment of fragments) {
      if (!error.includes(fragment)) throw new Error(`${what}: "${fragment}" not in: ${error}`);
    }
  }
  await Deno.remove(folder, { recursive: true });
});

import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import type { ParameterInfo } from "../models/parameters.ts";
import { buildGroups } from "../optim/groups.ts";

const SIZE = { hiddenSize: 16, numHeads: 2, intermediateSize: 32, vocabSize: 40, maxPositions: 24 };

function infos(
  family: ModelFamily,
  name: string,
  layers: number,
  task: Task = "base",
  vocabSize = 40,
): ParameterInfo[] {
  const config = modelConfig(family, { ...SIZE, numLayers: layers, vocabSize });
  return new TransformerModel(config, { name, task, allocate: false }).parameterSet.infos;
}

function byName(list: ParameterInfo[], name: string): ParameterInfo {
  const found = list.find((p) => p.name === name);
  if (!found) throw new Error(`no ${name}`);
  return found;
}

Deno.test("roles come from structure, not names: bare models, LayerNorm, attention output, a model named 'roberta'", () => {
  // A BERT named "roberta" (defect: "roberta" contains "bert") and a bare model without any family prefix.
  const bert = infos("bert", "roberta", 2);
  const roles = (n: string) => byName(bert, n).role;
  if (roles("encoder.layer.0.attention.output.dense.weight") !== "attention_output") {
    throw new Error("attention output");
  }
  if (roles("encoder.layer.0.output.dense.weight") !== "ffn_out") throw new Error("ffn out");
  if (roles("encoder.layer.0.intermediate.dense.weight") !== "ffn_in") throw new Error("ffn in");
  if (roles("encoder.layer.1.output.LayerNorm.weight") !== "norm_gamma") throw new Error("LayerNorm gamma");
  if (roles("encoder.layer.1.output.LayerNorm.bias") !== "norm_beta") throw new Error("LayerNorm beta");
  if (roles("embeddings.word_embeddings.weight") !== "token_embedding") throw new Error("embedding");
  const gpt2 = infos("gpt2", "g", 2);
  if (byName(gpt2, "h.0.attn.c_attn.weight").role !== "attention_qkv") throw new Error("c_attn");
  if (byName(gpt2, "h.1.mlp.c_proj.weight").role !== "ffn_out") throw new Error("mlp c_proj");
  if (byName(gpt2, "h.1.attn.c_proj.weight").layout !== "in_out") throw new Error("Conv1D layout");
  if (bert.some((p) => p.model !== "roberta")) throw new Error("model name not recorded");
});

Deno.test("groups never mix unrelated tensors: one tensor per model, gamma apart from beta, like with like", () => {
  const models = [infos("bert", "bert", 4), infos("gpt2", "gpt2", 2), infos("roberta", "roberta", 3)];
  const all = new Map(models.flat().map((p) => [`${p.model}/${p.name}`, p]));
  const groups = buildGroups(models);
  const seen = new Set<string>();
  for (const g of groups) {
    const members = g.members.map((m) => all.get(`${m.model}/${m.parameter}`)!);
    if (new Set(members.map((m) => m.model)).size !== members.length) {
      throw new Error(`two of one model: ${g.members}`);
    }
    for (const m of members) {
      const key = `${m.model}/${m.name}`;
      if (seen.has(key)) throw new Error(`${key} is in two groups`);
      seen.add(key);
      const first = members[0];
      const same = m.role === first.role && m.kind === first.kind && m.site === first.site &&
        m.layout === first.layout && m.shape.join() === first.shape.join();
      if (!same) throw new Error(`mixed group: ${first.name} with ${m.name}`);
    }
  }
  // BERT's [C, C] out_in attention output never meets GPT-2's [C, C] in_out c_proj.
  const proj = groups.find((g) => g.members.some((m) => m.parameter === "h.0.attn.c_proj.weight"));
  if (proj) throw new Error(`GPT-2's Conv1D weight was grouped: ${JSON.stringify(proj)}`);
  // Query, key and value of a layer stay apart, and each layer pairs with its depth-matched layers.
  const query1 = groups.find((g) =>
    g.members.some((m) => m.parameter === "encoder.layer.1.attention.self.query.weight")
  )!;
  const members = query1.members.map((m) => `${m.model}:${m.parameter}`).join();
  // Anchor bert (4 layers): layer 1 -> roberta (3 layers) round(0.75) = 1.
  if (
    members !==
      "bert:encoder.layer.1.attention.self.query.weight,roberta:encoder.layer.1.attention.self.query.weight"
  ) {
    throw new Error(members);
  }
});

Deno.test("depth matching: when anchor layers collide on one shallower layer, only the closest keeps it", () => {
  const groups = buildGroups([infos("bert", "deep", 4), infos("bert", "shallow", 2)]);
  const pairs = groups
    .filter((g) => g.role === "ffn_in" && g.shape.length === 2)
    .map((g) => g.members.map((m) => m.parameter.match(/layer\.(\d+)/)![1]).join("->"));
  // i * 2 / 4: 0 -> 0 (exact), 1 -> round(0.5) = 1, 2 -> 1 (exact, wins over layer 1), 3 -> round(1.5) = 2 (none).
  if (pairs.join() !== "0->0,2->1") throw new Error(`pairs ${pairs}`);
});

Deno.test("embeddings group only with embeddings of the same vocabulary size; heads only with heads", () => {
  const a = infos("bert", "a", 2, "sequence-classification");
  const b = infos("bert", "b", 2, "sequence-classification", 41);
  const groups = buildGroups([a, b]);
  if (groups.some((g) => g.role === "token_embedding")) {
    throw new Error("embeddings of vocabularies 40 and 41 grouped");
  }
  const classifier = groups.find((g) => g.members.some((m) => m.parameter === "classifier.weight"))!;
  if (classifier.role !== "head" || classifier.members.length !== 2) {
    throw new Error(JSON.stringify(classifier));
  }
});

Deno.test("deno task groups --json prints an array of { role, shape, members: [{ model, parameter }] }", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      new URL("../tools/groups.ts", import.meta.url).pathname,
      "--json",
    ],
    stdout: "piped",
  }).output();
  const groups = JSON.parse(new TextDecoder().decode(output.stdout));
  const keys = new Set(groups.flatMap((g: Record<string, unknown>) => Object.keys(g)));
  if (!Array.isArray(groups) || groups.length === 0 || [...keys].join() !== "role,shape,members") {
    throw new Error(`keys ${[...keys]}`);
  }
  const qkv = groups.find((g: { members: { parameter: string }[] }) =>
    g.members.some((m) => m.parameter === "encoder.layer.11.attention.self.value.weight")
  );
  if (JSON.stringify(qkv.members.map((m: { model: string }) => m.model)) !== '["bert","roberta"]') {
    throw new Error(JSON.stringify(qkv));
  }
});

/**
 * `deno task groups [--json]`: the sharing and sync groups the multi-model optimizer forms for the
 * default three models (bert-base-uncased, gpt2 and roberta-base shapes, as BertModel, GPT2Model
 * and RobertaModel), from their structural metadata. `--json` prints an array of groups, each
 * `{ role, shape, members: [{ model, parameter }] }`. Exits 2, with one line, on a bad flag.
 *
 * @module
 */
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { TransformerModel } from "../models/model.ts";
import { buildGroups } from "../optim/groups.ts";
import { parseCommand } from "./args.ts";

if (import.meta.main) {
  const { flags } = parseCommand({
    name: "groups",
    operands: "",
    positionals: [0, 0],
    summary: "Prints the sharing and sync groups the optimizer forms for bert-base, gpt2 and roberta-base.",
    flags: {
      json: { type: "boolean", default: false, description: "print the groups as JSON instead of a table" },
    },
  });
  const families: ModelFamily[] = ["bert", "gpt2", "roberta"];
  const infos = families.map((family) =>
    new TransformerModel(modelConfig(family), { name: family, allocate: false }).parameterSet.infos
  );
  const groups = buildGroups(infos);
  if (flags.json) {
    console.log(JSON.stringify(groups, null, 2));
  } else {
    const rows = groups.map((
      g,
    ) => [g.role, `[${g.shape.join(", ")}]`, g.members.map((m) => `${m.model}:${m.parameter}`).join("  ")]);
    const widths = [0, 1].map((i) => Math.max(...rows.map((r) => r[i].length), i === 0 ? 4 : 5));
    console.log(`${"role".padEnd(widths[0])}  ${"shape".padEnd(widths[1])}  members`);
    for (const r of rows) console.log(`${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${r[2]}`);
    console.log(`\n${groups.length} groups`);
  }
}

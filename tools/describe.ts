/**
 * `deno task describe <config.json | bert | gpt2 | roberta> [--task T] [--json]`: prints the
 * structural metadata of every parameter of a model (role, kind, site, layer, shape, layout) -
 * what the multi-model optimizer groups by. Builds metadata only; no weights are allocated.
 *
 * @module
 */
import { modelFromConfigFile } from "../models/checkpoint.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import type { Task } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import type { ParameterInfo } from "../models/parameters.ts";

const FAMILIES = ["bert", "gpt2", "roberta"];

/** Builds the metadata of a model from a family name or a Hugging Face config.json path. */
export async function describeModel(source: string, task: Task = "base"): Promise<ParameterInfo[]> {
  const model = FAMILIES.includes(source)
    ? new TransformerModel(modelConfig(source as ModelFamily), { task, allocate: false })
    : await modelFromConfigFile(source, { task, allocate: false });
  return model.parameterSet.infos;
}

/** Formats metadata as an aligned text table. */
export function metadataTable(infos: readonly ParameterInfo[]): string {
  const rows = infos.map((p) => [
    p.name,
    p.role,
    p.kind,
    p.site,
    p.layer === null ? "-" : `${p.layer}/${p.layerCount}`,
    `[${p.shape.join(", ")}]`,
    p.layout,
  ]);
  const header = ["parameter", "role", "kind", "site", "layer", "shape", "layout"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

if (import.meta.main) {
  const args = [...Deno.args];
  const json = args.includes("--json");
  const taskAt = args.indexOf("--task");
  const task = (taskAt >= 0 ? args[taskAt + 1] : "base") as Task;
  const source = args.find((a, i) => !a.startsWith("--") && (taskAt < 0 || i !== taskAt + 1));
  if (!source) {
    console.error("usage: deno task describe <config.json | bert | gpt2 | roberta> [--task T] [--json]");
    Deno.exit(2);
  }
  const infos = await describeModel(source, task);
  const count = infos.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  if (json) console.log(JSON.stringify(infos, null, 2));
  else console.log(`${metadataTable(infos)}\n\n${infos.length} tensors, ${count} parameters`);
}

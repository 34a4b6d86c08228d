/**
 * `deno task describe <config.json | bert | gpt2 | roberta> [--task T] [--json]`: prints the
 * structural metadata of every parameter of a model (role, kind, site, layer, shape, layout) -
 * what the multi-model optimizer groups by. Builds metadata only; no weights are allocated.
 * Exits 2, with one line, on a bad flag, an unknown task or a source that is neither a family
 * nor a readable, valid config.json.
 *
 * @module
 */
import { modelFromConfigFile } from "../models/checkpoint.ts";
import { modelConfig, type ModelFamily } from "../models/config.ts";
import { type Task, TASKS } from "../models/heads.ts";
import { TransformerModel } from "../models/model.ts";
import type { ParameterInfo } from "../models/parameters.ts";
import { exitWithUsageError, parseCommand } from "./args.ts";

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
  const { flags, positionals: [source] } = parseCommand({
    name: "describe",
    operands: `<config.json | ${FAMILIES.join(" | ")}>`,
    positionals: [1, 1],
    summary: "Prints the structural metadata of every parameter of a model, without allocating weights.",
    flags: {
      task: {
        type: "string",
        short: "t",
        value: "task",
        default: "base",
        description: `the head to build: ${TASKS.join(", ")}`,
      },
      json: { type: "boolean", default: false, description: "print JSON instead of a table" },
    },
  });
  let infos: ParameterInfo[];
  try {
    infos = await describeModel(source, flags.task as Task);
  } catch (error) {
    // Building metadata reads only the arguments, so every failure here is a bad argument: an
    // unknown task, or a config.json that is missing or not a model configuration.
    exitWithUsageError("describe", (error as Error).message);
  }
  const count = infos.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  if (flags.json) console.log(JSON.stringify(infos, null, 2));
  else console.log(`${metadataTable(infos)}\n\n${infos.length} tensors, ${count} parameters`);
}

/**
 * The folders are layers (docs/architecture.md): engine, then kernels, models, optim, with data
 * beside them and train, bench and web above; no import runs back up, and nothing but the commands
 * in tools/ imports tools/.
 */
const root = new URL("../", import.meta.url);

/** The folders each folder's files may import from (besides its own). */
const ALLOWED: Record<string, readonly string[]> = {
  engine: [],
  kernels: ["engine"],
  models: ["engine", "kernels"],
  optim: ["engine", "kernels", "models"],
  data: ["engine"],
  train: ["engine", "kernels", "models", "optim", "data"],
  bench: ["engine", "kernels", "models", "optim", "data", "train"],
  web: ["engine", "kernels", "models", "optim", "data", "train"],
};

/** The .ts files under a folder URL, as URLs. */
async function* sources(folder: URL): AsyncGenerator<URL> {
  for await (const entry of Deno.readDir(folder)) {
    if (entry.isDirectory) yield* sources(new URL(`${entry.name}/`, folder));
    else if (entry.name.endsWith(".ts")) yield new URL(entry.name, folder);
  }
}

/** A URL's path from the repository root. */
const fromRoot = (url: URL) => url.href.slice(root.href.length);

Deno.test("no import runs back up the layers, and only tools/ imports tools/", async () => {
  const violations: string[] = [];
  for (const [folder, allowed] of Object.entries(ALLOWED)) {
    for await (const file of sources(new URL(`${folder}/`, root))) {
      const text = await Deno.readTextFile(file);
      for (const [, specifier] of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
        const target = fromRoot(new URL(specifier, file)).split("/")[0];
        if ((target !== folder && target in ALLOWED && !allowed.includes(target)) || target === "tools") {
          violations.push(`${fromRoot(file)} imports ${specifier}`);
        }
      }
    }
  }
  if (violations.length > 0) throw new Error(`imports against the layering:\n${violations.join("\n")}`);
});

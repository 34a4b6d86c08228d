/**
 * `deno task build`: bundles the core (`mod.ts`) into one minified ES module with a source map,
 * `dist/multimodel.js`, with its TypeScript declarations (`dist/multimodel.d.ts` and `dist/types/`), and
 * the web page (`web/app.ts`) into `web/app.js`, writes the page's data set (`web/sentiment.json`, from
 * the pinned npm package), and prints each file's size. esbuild (npm, pinned in deno.json) bundles; its
 * plugin below admits only the repository's own modules, so an npm package or a `node:` module reaching
 * the core's import graph fails the build, naming the importer. TypeScript (npm, pinned) writes the
 * declarations, file by file from the explicit types every export has (JSR's rule, `isolatedDeclarations`).
 *
 * @module
 */
import { posix } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import ts from "typescript";
import { loadDataset } from "../data/load.ts";
import { parseCommand } from "./args.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

/** What {@linkcode bundle} builds: the core library and the page. */
export const BUNDLES = {
  core: { entry: "mod.ts", out: "dist/multimodel.js" },
  page: { entry: "web/app.ts", out: "web/app.js" },
} as const;

/**
 * An esbuild plugin that resolves only relative paths: a browser bundle takes the repository's own
 * modules and nothing else (deno.json's import map names npm data packages and test tools, which
 * stay with the Deno entry points).
 */
const repositoryOnly: esbuild.Plugin = {
  name: "repository-only",
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => ({
      errors: [{
        text: `"${args.path}" (imported by ${args.importer.replace(root, "")}) is not a module of this ` +
          "repository; the browser bundles take none (npm packages and node: modules belong to deno.ts)",
      }],
    }));
  },
};

/**
 * Bundles one entry into a minified ES module for browsers, with a linked source map; with
 * `write: false` nothing is written and the files come back in `outputFiles`. `define` replaces
 * global identifiers (tests/bundle_test.ts marks every reference to the global `Deno` with it).
 */
export async function bundle(
  which: keyof typeof BUNDLES,
  write = true,
  define: Record<string, string> = {},
): Promise<esbuild.BuildResult<{ write: boolean }>> {
  const { entry, out } = BUNDLES[which];
  return await esbuild.build({
    absWorkingDir: root,
    entryPoints: [entry],
    outfile: out,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: "linked",
    legalComments: "none",
    logLevel: "silent",
    plugins: [repositoryOnly],
    define,
    write,
    metafile: true,
  });
}

/** Where the core's declarations go: the entry, and one file per module under dist/types/. */
export const DECLARATIONS = { entry: "dist/multimodel.d.ts", folder: "dist/types" } as const;

/**
 * The TypeScript declarations of the modules a core build bundled (its metafile's inputs) and of those
 * their declarations import (type-only imports, which esbuild drops): a path under
 * {@linkcode DECLARATIONS} for each, with its text, imports pointing at `.js` as compiled JavaScript's
 * do, which TypeScript (tsc, bundlers, editors) resolves to the `.d.ts` beside the bundle (Deno takes
 * the core's types from mod.ts itself). Throws naming each export whose type is not written out.
 */
export function declarations(build: esbuild.BuildResult<{ write: boolean }>): Map<string, string> {
  const files = new Map<string, string>();
  const problems: string[] = [];
  const pending = Object.keys(build.metafile!.inputs);
  const seen = new Set(pending);
  for (let input = pending.shift(); input !== undefined; input = pending.shift()) {
    const source = Deno.readTextFileSync(`${root}${input}`);
    const { outputText, diagnostics } = ts.transpileDeclaration(source, {
      fileName: input,
      compilerOptions: { isolatedDeclarations: true, allowImportingTsExtensions: true, strict: true },
    });
    for (const d of diagnostics ?? []) {
      const line = d.file && d.start !== undefined
        ? d.file.getLineAndCharacterOfPosition(d.start).line + 1
        : 0;
      problems.push(`${input}:${line}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`);
    }
    const imported = /((?:from|import)\s*\(?\s*")(\.{1,2}\/[^"]*)\.ts"/g;
    for (const [, , specifier] of outputText.matchAll(imported)) {
      const module = posix.normalize(posix.join(posix.dirname(input), `${specifier}.ts`));
      if (!seen.has(module)) {
        seen.add(module);
        pending.push(module);
      }
    }
    files.set(
      `${DECLARATIONS.folder}/${input.replace(/\.ts$/, ".d.ts")}`,
      outputText.replace(imported, '$1$2.js"'),
    );
  }
  if (problems.length > 0) throw new Error(`declarations:\n${problems.join("\n")}`);
  files.set(DECLARATIONS.entry, 'export * from "./types/mod.js";\n');
  return files;
}

/** Stops esbuild's service process (a program exits only after it). */
export async function stopBundler(): Promise<void> {
  await esbuild.stop();
}

/** Bytes as `123.4 kB`, always in kB (formatBytes would switch units), so that sizes compare at a glance. */
function kilobytes(bytes: number): string {
  return `${(bytes / 1000).toFixed(1)} kB`;
}

/** A file's size and its gzip-compressed size (what a web server with compression sends). */
async function sizes(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  const gzipped = (await new Response(stream).arrayBuffer()).byteLength;
  return `${kilobytes(bytes.length)} (${kilobytes(gzipped)} gzipped)`;
}

/**
 * Writes everything `deno task build` makes - the core's bundle and declarations, the page's bundle and
 * its data set - printing each file's size; returns false, having printed why, when a bundle fails.
 */
export async function buildAll(): Promise<boolean> {
  try {
    for (const which of ["core", "page"] as const) {
      const result = await bundle(which);
      const out = BUNDLES[which].out;
      console.log(`${out.padEnd(20)} ${await sizes(`${root}${out}`)}, source map ${out}.map`);
      if (which === "core") {
        await Deno.remove(`${root}${DECLARATIONS.folder}`, { recursive: true }).catch(() => {});
        const files = declarations(result);
        for (const [path, text] of files) {
          await Deno.mkdir(`${root}${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
          await Deno.writeTextFile(`${root}${path}`, text);
        }
        const modules = files.size - 1;
        console.log(
          `${DECLARATIONS.entry.padEnd(20)} its types, with ${modules} modules' in ${DECLARATIONS.folder}/`,
        );
      }
    }
  } catch (error) {
    // esbuild's errors list every message with its file and line.
    console.error(`build: ${(error as Error).message}`);
    return false;
  } finally {
    await stopBundler();
  }
  const dataset = await loadDataset("sentiment");
  await Deno.writeTextFile(`${root}web/sentiment.json`, JSON.stringify(dataset));
  console.log(
    `${"web/sentiment.json".padEnd(20)} ${await sizes(`${root}web/sentiment.json`)}, ${dataset.source}: ` +
      `train ${dataset.train.length}, validation ${dataset.validation.length}, test ${dataset.test.length}`,
  );
  return true;
}

if (import.meta.main) {
  parseCommand({
    name: "build",
    operands: "",
    positionals: [0, 0],
    summary:
      "Bundles the core into dist/multimodel.js (with its declarations) and the page into web/app.js " +
      "with esbuild, writes web/sentiment.json, and prints each file's size.",
    flags: {},
  });
  if (!(await buildAll())) Deno.exit(1);
}

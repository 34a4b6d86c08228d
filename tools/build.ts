/**
 * `deno task build`: bundles the core (`mod.ts`) into one minified ES module with a source map,
 * `dist/multimodel.js`, and the web page (`web/app.ts`) into `web/app.js`, writes the page's data set
 * (`web/sentiment.json`, from the pinned npm package), and prints each file's size. esbuild (npm,
 * pinned in deno.json) bundles; its plugin below admits only the repository's own modules, so an npm
 * package or a `node:` module reaching the core's import graph fails the build, naming the importer.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
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
  });
}

/** Stops esbuild's service process (a program exits only after it). */
export async function stopBundler(): Promise<void> {
  await esbuild.stop();
}

/** Bytes as `123.4 kB`. */
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

if (import.meta.main) {
  parseCommand({
    name: "build",
    operands: "",
    positionals: [0, 0],
    summary: "Bundles the core into dist/multimodel.js and the page into web/app.js with esbuild, writes " +
      "web/sentiment.json, and prints each file's size.",
    flags: {},
  });
  try {
    for (const which of ["core", "page"] as const) {
      await bundle(which);
      const out = BUNDLES[which].out;
      console.log(`${out.padEnd(20)} ${await sizes(`${root}${out}`)}, source map ${out}.map`);
    }
  } catch (error) {
    // esbuild's errors list every message with its file and line.
    console.error(`build: ${(error as Error).message}`);
    Deno.exit(1);
  } finally {
    await stopBundler();
  }
  const dataset = await loadDataset("sentiment");
  await Deno.writeTextFile(`${root}web/sentiment.json`, JSON.stringify(dataset));
  console.log(
    `${"web/sentiment.json".padEnd(20)} ${await sizes(`${root}web/sentiment.json`)}, ${dataset.source}: ` +
      `train ${dataset.train.length}, validation ${dataset.validation.length}, test ${dataset.test.length}`,
  );
}

/**
 * The browser bundles (tools/build.ts, in memory: nothing is written): the core (`mod.ts`) and the page
 * build, and neither refers to the global `Deno` except as `globalThis.Deno?.`, which a browser reads as
 * undefined. (An unguarded `Deno.env.get` in a try/catch still runs there, but only by throwing a
 * ReferenceError; an unguarded `Deno.readFile` reached from the core fails the page.)
 *
 * esbuild's `define` replaces every reference to the free identifier `Deno` - not strings, comments or
 * WGSL, not `globalThis.Deno`, not a local of that name - with a marker, so the marker's occurrences
 * are exactly the bare references; `globalThis.Deno` must then be followed by `?.`.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { posix } from "node:path";
import ts from "typescript";
import { bundle, declarations, stopBundler } from "../tools/build.ts";

const MARKER = "__bare_Deno_reference__";

/** The uses of Deno in a bundle built with `Deno` defined as the marker: bare or unguarded, with surroundings. */
function unguardedDeno(code: string): string[] {
  const around = (index: number) => code.slice(Math.max(0, index - 60), index + 60);
  const bare = [...code.matchAll(new RegExp(MARKER, "g"))].map((m) => around(m.index));
  const unchained = [...code.matchAll(/globalThis\.Deno(?![\w$])(?!\?\.)/g)].map((m) => around(m.index));
  return [...bare, ...unchained];
}

Deno.test({
  name: "the core and page bundles build and use Deno only as globalThis.Deno?.",
  // esbuild's service process outlives one build; stopBundler() ends it.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    try {
      for (const which of ["core", "page"] as const) {
        const result = await bundle(which, false, { Deno: MARKER });
        deepStrictEqual(result.errors, [], `${which}: esbuild errors`);
        const js = result.outputFiles!.find((f) => f.path.endsWith(".js"))!;
        ok(js.text.length > 50_000, `${which}: the bundle is only ${js.text.length} characters`);
        ok(js.text.includes("globalThis.Deno?.env"), `${which}: the guarded environment reads are missing`);
        deepStrictEqual(unguardedDeno(js.text), [], `${which}: Deno used without a globalThis.Deno?. guard`);
      }
    } finally {
      await stopBundler();
    }
  },
});

Deno.test("the check finds a bare Deno reference and an unguarded globalThis.Deno", () => {
  deepStrictEqual(unguardedDeno(`let a=globalThis.Deno?.env.get("X");`), []);
  deepStrictEqual(unguardedDeno(`try{${MARKER}.env.get("X")}catch{}`).length, 1);
  deepStrictEqual(unguardedDeno(`const{readFile:r}=${MARKER};`).length, 1);
  deepStrictEqual(unguardedDeno(`globalThis.Deno.readFile("x");`).length, 1);
  deepStrictEqual(unguardedDeno(`const s="// Deno's WebGPU zeroes it";`), []);
});

Deno.test("the core type-checks with a browser's libraries alone, without Deno's types", async () => {
  // The bundle drops what the page does not reach, so it cannot show a Deno API in the core's source;
  // a TypeScript project that imports mod.ts would: it is checked here as such a project checks it.
  const folder = await Deno.makeTempDir({ prefix: "browser-types-" });
  try {
    const lib = ["dom", "dom.iterable", "esnext", "deno.webgpu"];
    await Deno.writeTextFile(
      `${folder}/deno.json`,
      JSON.stringify({ compilerOptions: { strict: true, lib } }),
    );
    await Deno.writeTextFile(
      `${folder}/main.ts`,
      `export * from "${new URL("../mod.ts", import.meta.url)}";\n`,
    );
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", "--config", `${folder}/deno.json`, `${folder}/main.ts`],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const output = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    ok(code === 0, `mod.ts does not type-check without Deno's types:\n${output}`);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test({
  name: "the bundle's declarations give a TypeScript project the core's types",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const folder = await Deno.makeTempDir({ prefix: "bundle-types-" });
    try {
      const result = await bundle("core", false);
      const js = result.outputFiles!.find((f) => f.path.endsWith(".js"))!;
      await Deno.mkdir(`${folder}/dist`);
      await Deno.writeTextFile(`${folder}/dist/multimodel.js`, js.text);
      const files = declarations(result);
      for (const [path, text] of files) {
        await Deno.mkdir(`${folder}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
        await Deno.writeTextFile(`${folder}/${path}`, text);
        // Every module a declaration imports is declared too (a missing one reads as any where a
        // project skips checking libraries, as most do).
        for (const [, specifier] of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]*)\.js"/g)) {
          const target = posix.normalize(posix.join(posix.dirname(path), `${specifier}.d.ts`));
          ok(files.has(target), `${path} imports ${specifier}.js, which has no declaration`);
        }
      }
      // A project of one's own, as tsc, a bundler or an editor checks it; @ts-expect-error fails the
      // check if the types are missing (everything would be any).
      await Deno.writeTextFile(
        `${folder}/main.ts`,
        [
          "import { crossEntropy, initGpu, matmul, type RunRecord, sum, type Tensor, tensor } from " +
          '"./dist/multimodel.js";',
          "await initGpu();",
          "const product: Tensor = matmul(tensor([[1, 2], [3, 4]]), tensor([[1], [1]]));",
          "const value: number = await sum(product).item();",
          "// @ts-expect-error item() resolves to a number",
          "const text: string = await sum(product).item();",
          "// @ts-expect-error PyTorch's spelling is not an option",
          "crossEntropy(product, tensor([0, 0], { dtype: 'int32' }), { ignore_index: 0 });",
          "declare const run: RunRecord;",
          "// @ts-expect-error a run record has no such field (the type-only modules are declared too)",
          "console.log(value, text, run.noSuchField);",
        ].join("\n"),
      );
      const program = ts.createProgram([`${folder}/main.ts`], {
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.ESNext,
        moduleResolution: ts.ModuleResolutionKind.Bundler,
        lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
        types: [],
      });
      const problems = ts.getPreEmitDiagnostics(program).map((d) =>
        `${d.file?.fileName.replace(folder, "") ?? ""}: ${
          ts.flattenDiagnosticMessageText(d.messageText, " ")
        }`
      );
      deepStrictEqual(problems, []);
      ok(program.getSourceFiles().some((f) => f.fileName.endsWith("dist/types/engine/tensor.d.ts")));
    } finally {
      await stopBundler();
      await Deno.remove(folder, { recursive: true });
    }
  },
});

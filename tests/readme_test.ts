/**
 * README's TypeScript examples run as written: each ```ts block is run in a fresh process from the
 * repository root, with its imports of "./mod.ts" and "./deno.ts" pointed at this checkout.
 */

const root = new URL("../", import.meta.url);
const readme = await Deno.readTextFile(new URL("README.md", root));
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

Deno.test("README has the engine, model and training-loop examples", () => {
  if (blocks.length !== 3) throw new Error(`found ${blocks.length} TypeScript blocks`);
});

blocks.forEach((code, i) => {
  Deno.test(`README example ${i + 1} runs as written`, async () => {
    const file = await Deno.makeTempFile({ dir: "/tmp", suffix: ".ts" });
    await Deno.writeTextFile(
      file,
      code.replace(/from "\.\/(mod|deno)\.ts"/g, (_, entry) => `from "${new URL(`${entry}.ts`, root)}"`),
    );
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-env", file],
      cwd: root.pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    await Deno.remove(file);
    if (!result.success) {
      throw new Error(`example ${i + 1} failed:\n${new TextDecoder().decode(result.stderr)}`);
    }
  });
});

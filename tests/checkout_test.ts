import { strictEqual } from "node:assert/strict";
import { checkoutCommit } from "../train/checkout.ts";
import { pathToFileURL } from "node:url";

const A = "0123456789abcdef0123456789abcdef01234567";
const B = "89abcdef0123456789abcdef0123456789abcdef";

/** Writes `files` (path relative to a new temporary folder: text) and returns the folder's URL. */
async function folderWith(files: Record<string, string>): Promise<{ url: URL; path: string }> {
  const path = await Deno.makeTempDir({ prefix: "checkout_test_" });
  for (const [name, text] of Object.entries(files)) {
    const file = `${path}/${name}`;
    await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(file, text);
  }
  return { url: pathToFileURL(`${path}/`), path };
}

Deno.test("checkoutCommit: a branch's loose ref, then packed-refs, then a detached HEAD", async () => {
  const loose = await folderWith({ ".git/HEAD": "ref: refs/heads/main\n", ".git/refs/heads/main": `${A}\n` });
  strictEqual(checkoutCommit(loose.url), A);
  const packed = await folderWith({
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/packed-refs":
      `# pack-refs with: peeled fully-peeled sorted\n${B} refs/heads/other\n${A} refs/heads/main\n`,
  });
  strictEqual(checkoutCommit(packed.url), A);
  const detached = await folderWith({ ".git/HEAD": `${B}\n` });
  strictEqual(checkoutCommit(detached.url), B);
  for (const f of [loose, packed, detached]) await Deno.remove(f.path, { recursive: true });
});

Deno.test("checkoutCommit: a linked worktree reads its own HEAD and the main checkout's refs", async () => {
  const main = await folderWith({
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/refs/heads/main": `${A}\n`,
    ".git/refs/heads/feature": `${B}\n`,
    ".git/worktrees/wt/HEAD": "ref: refs/heads/feature\n",
    ".git/worktrees/wt/commondir": "../..\n",
  });
  const worktree = await folderWith({ ".git": `gitdir: ${main.path}/.git/worktrees/wt\n` });
  strictEqual(checkoutCommit(worktree.url), B);
  for (const f of [main, worktree]) await Deno.remove(f.path, { recursive: true });
});

Deno.test("checkoutCommit: undefined without a checkout, for an unborn branch and for code loaded over https", async () => {
  const none = await folderWith({ "README.md": "no git here\n" });
  strictEqual(checkoutCommit(none.url), undefined);
  const unborn = await folderWith({ ".git/HEAD": "ref: refs/heads/main\n" });
  strictEqual(checkoutCommit(unborn.url), undefined);
  strictEqual(checkoutCommit(new URL("https://jsr.io/@multimodel/multimodel/0.1.0/")), undefined);
  for (const f of [none, unborn]) await Deno.remove(f.path, { recursive: true });
});

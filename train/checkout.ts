/**
 * The commit of the checkout a run's code came from, read from its `.git` folder without running
 * git (the train and experiment tasks may not run processes), so that a run's record says which
 * code produced it. Uncommitted changes cannot be seen this way.
 *
 * @module
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

const COMMIT = /^[0-9a-f]{40}$/;

/**
 * The commit checked out at `root` (a folder URL; by default this project's checkout): HEAD
 * resolved through loose refs and packed-refs, in a plain clone or a linked worktree. Undefined
 * where there is none to read: code loaded over https (from JSR), no `.git`, no read permission.
 */
export function checkoutCommit(root: URL = new URL("../", import.meta.url)): string | undefined {
  if (root.protocol !== "file:") return undefined;
  try {
    const rootPath = fileURLToPath(root);
    let gitDir = resolve(rootPath, ".git");
    // A linked worktree's .git is a file naming its folder under the main checkout's .git.
    if (Deno.statSync(gitDir).isFile) {
      const target = /^gitdir: (.+)$/m.exec(Deno.readTextFileSync(gitDir))?.[1];
      if (!target) return undefined;
      gitDir = resolve(rootPath, target.trim());
    }
    const head = Deno.readTextFileSync(resolve(gitDir, "HEAD")).trim();
    if (COMMIT.test(head)) return head;
    const ref = /^ref: (.+)$/.exec(head)?.[1];
    if (!ref) return undefined;
    const commonDir = readOptional(resolve(gitDir, "commondir"));
    const common = commonDir ? resolve(gitDir, commonDir.trim()) : gitDir;
    for (const folder of new Set([gitDir, common])) {
      const loose = readOptional(resolve(folder, ref))?.trim();
      if (loose && COMMIT.test(loose)) return loose;
    }
    const packed = readOptional(resolve(common, "packed-refs")) ?? "";
    for (const line of packed.split("\n")) {
      const [commit, name] = line.trim().split(" ");
      if (name === ref && COMMIT.test(commit)) return commit;
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/** A file's text, or undefined when it does not exist. */
function readOptional(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

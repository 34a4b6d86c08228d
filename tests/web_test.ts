/**
 * `deno task web`'s server (tools/web.ts), without a browser: the page and the bundle with their content
 * types, and nothing outside web/ and dist/; and the page's URL parameters (web/training.ts).
 */
import { strictEqual, throws } from "node:assert/strict";
import { CONTENT_TYPES, handle } from "../tools/web.ts";
import { DEFAULT_TOGGLES, pageParameters } from "../web/training.ts";

const get = (path: string, method = "GET") => handle(new Request(`http://localhost${path}`, { method }));

Deno.test("the page is served at / and /index.html as HTML, HEAD without a body", async () => {
  for (const path of ["/", "/index.html"]) {
    const response = await get(path);
    strictEqual(response.status, 200, path);
    strictEqual(response.headers.get("content-type"), "text/html; charset=utf-8");
    const text = await response.text();
    strictEqual(text.includes('<script type="module" src="app.js">'), true, "the page loads app.js");
  }
  const head = await get("/", "HEAD");
  strictEqual(head.status, 200);
  strictEqual(Number(head.headers.get("content-length")) > 1000, true);
  strictEqual(await head.text(), "");
});

Deno.test("content types by extension: scripts, data and source maps", () => {
  strictEqual(CONTENT_TYPES.js, "text/javascript; charset=utf-8");
  strictEqual(CONTENT_TYPES.json, "application/json; charset=utf-8");
  strictEqual(CONTENT_TYPES.map, "application/json; charset=utf-8");
});

Deno.test("nothing outside web/ and dist/, no hidden files, control characters or unknown types, GET and HEAD only", async () => {
  for (
    const path of [
      "/../deno.json",
      "/%2e%2e/deno.json",
      "/dist/../../deno.json",
      "/..%2fdeno.json",
      "/app.ts",
      "/.gitignore",
      "/missing.js",
      "/dist/missing.js",
      "//etc/passwd",
      "/%00.js",
      "/app%0a.js",
    ]
  ) {
    const response = await get(path);
    await response.body?.cancel();
    strictEqual(response.status, 404, path);
  }
  const post = await get("/", "POST");
  await post.body?.cancel();
  strictEqual(post.status, 405);
});

Deno.test("the page is served from a checkout whose path has a space", async () => {
  // The server finds its checkout from its own file URL, where a space is "%20".
  const base = `${await Deno.makeTempDir({ dir: "/tmp", prefix: "web root " })}/`;
  await Deno.mkdir(`${base}tools`);
  await Deno.mkdir(`${base}web`);
  for (const file of ["web.ts", "args.ts"]) {
    await Deno.copyFile(new URL(`../tools/${file}`, import.meta.url), `${base}tools/${file}`);
  }
  for (const file of ["index.html", "app.js", "sentiment.json"]) {
    await Deno.writeTextFile(`${base}web/${file}`, "{}");
  }
  const script = `import { handle } from ${JSON.stringify(`${base}tools/web.ts`)};
const response = await handle(new Request("http://localhost/"));
console.log(response.status, await response.text());`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  strictEqual(text.decode(output.stdout).trim(), "200 {}", text.decode(output.stderr));
  await Deno.remove(base, { recursive: true });
});

Deno.test("the page's URL parameters are checked, naming the one of the wrong form", () => {
  const read = (query: string) => pageParameters(new URLSearchParams(query));
  const plain = read("");
  strictEqual(
    JSON.stringify(plain),
    JSON.stringify({ seed: 0, steps: null, autostart: false, toggles: DEFAULT_TOGGLES }),
  );
  const set = read("seed=7&steps=12&autostart&sharing=0&distill=1&utm_source=x");
  strictEqual(set.seed, 7);
  strictEqual(set.steps, 12);
  strictEqual(set.autostart, true);
  strictEqual(set.toggles.sharing, false);
  strictEqual(set.toggles.distill, true);
  strictEqual(read("autostart=0").autostart, false);
  strictEqual(read("autostart=1").autostart, true);
  for (
    const [query, message] of [
      ["steps=abc", "URL parameter steps=abc: expected an integer >= 1"],
      ["steps=", "URL parameter steps=: expected an integer >= 1"],
      ["steps=-5", "steps=-5"],
      ["steps=2.5", "steps=2.5"],
      ["steps=0", "steps=0"],
      ["seed=abc", "URL parameter seed=abc: expected an integer >= 0"],
      ["sharing=true", "URL parameter sharing=true: expected 0 or 1"],
      ["autostart=yes", "URL parameter autostart=yes: expected 1, 0 or no value"],
    ]
  ) {
    throws(() => read(query), (e: Error) => e.message.includes(message), query);
  }
});

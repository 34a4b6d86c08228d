/**
 * `deno task web`'s server (tools/web.ts), without a browser: the page and the bundle with their content
 * types, and nothing outside web/ and dist/.
 */
import { strictEqual } from "node:assert/strict";
import { CONTENT_TYPES, handle } from "../tools/web.ts";

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

Deno.test("nothing outside web/ and dist/, no hidden files or unknown types, GET and HEAD only", async () => {
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

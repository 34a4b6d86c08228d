/**
 * `deno task web`: builds as `deno task build` does, then serves the page (web/) and
 * the core's bundle (dist/, at /dist/) on localhost with `Deno.serve`, and prints the page's URL.
 * `--port N` chooses the port (8000; 0 picks a free one). WebGPU needs a secure context, which
 * localhost is. The browser test serves the page with {@linkcode serveWeb} too.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { exitWithUsageError, parseCommand } from "./args.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

/** Content types by file extension; other files are not served. */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  json: "application/json; charset=utf-8",
  map: "application/json; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  txt: "text/plain; charset=utf-8",
};

/** The folders served: the page at /, the core's bundle at /dist/. */
const FOLDERS: readonly { prefix: string; folder: string }[] = [
  { prefix: "/dist/", folder: "dist/" },
  { prefix: "/", folder: "web/" },
];

/**
 * Answers one request from the repository: GET and HEAD of files in
 * web/ and dist/ with their content type, "/" as web/index.html, 204 for /favicon.ico; 404 for
 * anything else, 405 for other methods. Paths with "..", control characters or other odd segments are
 * refused.
 */
export async function handle(request: Request): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  let path: string;
  try {
    path = decodeURIComponent(new URL(request.url).pathname);
  } catch {
    return new Response("bad path\n", { status: 400 });
  }
  // Browsers ask for one for every document; the page declares none.
  if (path === "/favicon.ico") return new Response(null, { status: 204 });
  if (path.endsWith("/")) path += "index.html";
  const { prefix, folder } = FOLDERS.find((f) => path.startsWith(f.prefix))!;
  const relative = path.slice(prefix.length);
  const segments = relative.split("/");
  const extension = relative.includes(".") ? relative.slice(relative.lastIndexOf(".") + 1) : "";
  const type = CONTENT_TYPES[extension];
  // deno-lint-ignore no-control-regex -- a NUL or other control character is no file name here
  const odd = (s: string) => s === "" || s.startsWith(".") || s.includes("\\") || /[\u0000-\u001f]/.test(s);
  if (!type || segments.some(odd)) {
    return new Response("not found\n", { status: 404 });
  }
  let body: Uint8Array;
  try {
    body = await Deno.readFile(`${root}${folder}${relative}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.IsADirectory) {
      return new Response("not found\n", { status: 404 });
    }
    throw error;
  }
  const headers = {
    "content-type": type,
    "content-length": String(body.length),
    "cache-control": "no-store",
  };
  return new Response(request.method === "HEAD" ? null : body as Uint8Array<ArrayBuffer>, { headers });
}

/** A running server of the page: its URL and how to stop it. */
export interface WebServer {
  /** The page's URL, e.g. `http://localhost:8000/`. */
  url: string;
  /** The port it listens on. */
  port: number;
  /** Stops listening and waits for open requests to finish. */
  shutdown(): Promise<void>;
}

/** Serves the page on 127.0.0.1 at `port` (0 picks a free one). */
export function serveWeb(port: number): WebServer {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => {} },
    (request) => handle(request),
  );
  const actual = server.addr.port;
  return { url: `http://localhost:${actual}/`, port: actual, shutdown: () => server.shutdown() };
}

if (import.meta.main) {
  const { flags } = parseCommand({
    name: "web",
    operands: "",
    positionals: [0, 0],
    summary: "Builds as `deno task build` does, then serves the page that trains BERT, GPT-2 and RoBERTa " +
      "together in the browser (web/) and the core's bundle (dist/) on localhost.",
    flags: {
      port: {
        type: "string",
        value: "N",
        default: "8000",
        description: "port to listen on; 0 picks a free one",
      },
    },
  });
  const port = Number(flags.port);
  if (!/^\d+$/.test(flags.port) || port > 65535) {
    exitWithUsageError("web", `--port must be an integer from 0 to 65535, got "${flags.port}"`);
  }
  // Built after the flags are read, so that --help and a bad flag answer at once; imported here, so that
  // the server's module (which the tests import) does not load the bundlers.
  const { buildAll } = await import("./build.ts");
  if (!(await buildAll())) Deno.exit(1);
  let server: WebServer;
  try {
    server = serveWeb(port);
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    console.error(`web: port ${port} is in use; choose another with --port N (0 picks a free one)`);
    Deno.exit(1);
  }
  console.log(`multimodel page: ${server.url} (the core's bundle at ${server.url}dist/multimodel.js)`);
  console.log("Open it in a browser with WebGPU (Chrome, Edge, Safari 26, Firefox 141+); Ctrl-C stops.");
}

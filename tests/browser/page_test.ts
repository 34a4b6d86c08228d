/// <reference lib="dom" />
/**
 * The page in a real browser (`deno task test:browser`, which builds it first): headless Chromium
 * (Debian's `chromium`; `CHROMIUM` names another binary) driven by puppeteer-core, with
 * `--enable-unsafe-webgpu`, which on a machine without a GPU runs WebGPU on SwiftShader.
 *
 * - The page trains BERT, GPT-2 and RoBERTa jointly for {@linkcode STEPS} steps with seed
 *   {@linkcode SEED}; the loss falls, and the losses of the first {@linkcode COMPARED} steps match
 *   what the same code (web/training.ts, train/session.ts) gives under Deno, computed here with the
 *   same options, within {@linkcode TOLERANCE}. A screenshot of the page after training is saved as
 *   {@linkcode SCREENSHOT}.
 * - The core's bundle, dist/multimodel.js, runs the README's example when a page imports it.
 * - Failures are shown in the page: a browser without WebGPU, WebGPU without an adapter, and a
 *   WebGPU error (a shader that fails to compile).
 *
 * @module
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { initGpu } from "../../engine/device.ts";
import type { StepLine } from "../../train/session.ts";
import { serveWeb, type WebServer } from "../../tools/web.ts";
import type { TrainingLog } from "../../web/app.ts";
import { DEFAULT_TOGGLES, openPageSession, pageOptions, sentimentDataset } from "../../web/training.ts";

const root = new URL("../../", import.meta.url).pathname;

/** The run: seed and steps, as the page's URL parameters give them. */
const SEED = 0;
const STEPS = 60;
/** Steps whose losses are compared with Deno's (logged in intervals of 2). */
const COMPARED = 10;
/**
 * Largest difference allowed between a logged loss in the browser and under Deno. Both run the same
 * kernels (the software adapters' variants: SwiftShader in Chromium, llvmpipe or lavapipe under Deno),
 * but two float32 implementations round transcendental functions and fused operations differently;
 * the differences seen are below 1e-7 over the compared steps (6e-8 on SwiftShader) and grow with the
 * steps, far below this bound, which is far
 * below what any wrong kernel, seed or data order gives (0.01 and more).
 */
const TOLERANCE = 1e-3;
/** Where the screenshot of the page after training goes (a test artifact, not committed). */
const SCREENSHOT = "/tmp/multimodel-page.png";
/** Longest wait for the page to train (about a minute on 2 cores). */
const TRAINING_TIMEOUT_MS = 8 * 60_000;

const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

async function launch(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM to its path`);
  }
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--enable-unsafe-webgpu",
      "--enable-features=Vulkan",
      // Chromium's sandbox refuses to run as root, as CI does; the browser only opens this test's page.
      "--no-sandbox",
    ],
    defaultViewport: { width: 1400, height: 960 },
  });
}

/** Opens the page, collecting its console errors and uncaught exceptions. */
async function open(
  browser: Browser,
  url: string,
  before?: () => void,
): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(`uncaught: ${(error as Error).message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  if (before) await page.evaluateOnNewDocument(before);
  await page.goto(url, { waitUntil: "load" });
  return { page, errors };
}

/** The page's training log (web/app.ts). */
async function trainingLog(page: Page): Promise<TrainingLog> {
  return await page.evaluate(() => (globalThis as unknown as { trainingLog: TrainingLog }).trainingLog);
}

/** Waits until the page shows an error, and returns its text. */
async function shownError(page: Page): Promise<string> {
  await page.waitForFunction(() => !document.getElementById("error")!.hidden, { timeout: 60_000 });
  return await page.$eval("#error", (e) => e.textContent ?? "");
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** The mean loss of each model over some logged intervals. */
function meanLoss(lines: readonly StepLine[], name: string): number {
  return lines.reduce((s, l) => s + l.models[name].loss, 0) / lines.length;
}

/** The first `steps` steps' logged intervals under Deno, with the page's options. */
async function denoIntervals(steps: number): Promise<StepLine[]> {
  await initGpu();
  const dataset = sentimentDataset(JSON.parse(await Deno.readTextFile(`${root}web/sentiment.json`)));
  const session = await openPageSession(dataset, pageOptions(DEFAULT_TOGGLES, SEED, STEPS));
  const lines: StepLine[] = [];
  try {
    while (session.step < steps) {
      const report = await session.advance();
      if (report.logged) lines.push(report.logged);
    }
  } finally {
    session.dispose();
  }
  return lines;
}

let server: WebServer;
let browser: Browser;

Deno.test({
  name: "the page in headless Chromium",
  // puppeteer's connection and the server's listener span the steps.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    try {
      await Deno.stat(`${root}web/app.js`);
    } catch {
      throw new Error("web/app.js is missing: run `deno task build` (deno task test:browser does)");
    }
    server = serveWeb(0);
    browser = await launch();
    try {
      await t.step("trains three models jointly: the loss falls and matches Deno's first steps", async () => {
        const started = performance.now();
        const { page, errors } = await open(browser, `${server.url}?seed=${SEED}&steps=${STEPS}&autostart=1`);
        await page.waitForFunction(
          () => {
            const log = (globalThis as unknown as { trainingLog?: TrainingLog }).trainingLog;
            return log !== undefined && (log.finished || log.error !== null);
          },
          { timeout: TRAINING_TIMEOUT_MS, polling: 500 },
        );
        const seconds = (performance.now() - started) / 1000;
        const log = await trainingLog(page);
        assert(log.error === null, `the page failed: ${log.error}`);
        assert(errors.length === 0, `console errors: ${errors.join("\n")}`);
        await page.screenshot({ path: SCREENSHOT, fullPage: true });

        const names = Object.keys(log.steps[0].models);
        assert(names.join() === "bert,gpt2,roberta", `models ${names}`);
        assert(log.steps.at(-1)!.step === STEPS, `the last logged step is ${log.steps.at(-1)!.step}`);
        const dom = await page.evaluate(() => ({
          adapter: document.getElementById("adapter")!.textContent,
          step: document.getElementById("step")!.textContent,
          speed: document.getElementById("speed")!.textContent,
          state: document.getElementById("state")!.textContent,
          charts: document.querySelectorAll("#charts svg").length,
          rows: [...document.querySelectorAll("#results tbody tr")].map((r) => r.textContent),
        }));
        assert(dom.adapter === log.adapter && log.adapter, `adapter shown: ${dom.adapter}`);
        assert(
          dom.step === String(STEPS) && dom.state?.startsWith("finished"),
          `status: ${JSON.stringify(dom)}`,
        );
        assert(Number(dom.speed) > 0, `steps/s shown: ${dom.speed}`);
        assert(
          dom.charts === 2 && dom.rows.length === 3,
          `charts ${dom.charts}, table rows ${dom.rows.length}`,
        );
        const tests = log.evaluations.filter((e) => e.split === "test");
        assert(tests.length === 3, `${tests.length} test evaluations`);

        // The loss falls: the mean over the models of the last five intervals against the first five.
        const first = log.steps.slice(0, 5), last = log.steps.slice(-5);
        const falls = names.map((n) => meanLoss(first, n) - meanLoss(last, n));
        const meanFall = falls.reduce((s, f) => s + f, 0) / falls.length;
        console.log(
          `browser (${log.adapter}): ${STEPS} steps in ${seconds.toFixed(1)} s with evaluations, ` +
            `${dom.speed} steps/s at the end; loss fall over the run (first 5 intervals - last 5): ${
              names.map((n, i) => `${n} ${falls[i].toFixed(4)}`).join(", ")
            }; test accuracy ${tests.map((e) => `${e.model} ${e.metrics.accuracy.toFixed(3)}`).join(", ")}`,
        );
        assert(meanFall > 0.01, `the mean loss fell by only ${meanFall.toFixed(4)}`);
        assert(Math.max(...falls) > 0.03, `no model's loss fell by 0.03: ${falls.map((f) => f.toFixed(4))}`);

        // The same code under Deno, same options: the first steps' losses agree.
        const deno = await denoIntervals(COMPARED);
        let worst = 0;
        for (const [i, line] of deno.entries()) {
          const page = log.steps[i];
          assert(
            page.step === line.step,
            `interval ${i}: step ${page.step} in the page, ${line.step} under Deno`,
          );
          for (const name of names) {
            const difference = Math.abs(page.models[name].loss - line.models[name].loss);
            worst = Math.max(worst, difference);
            console.log(
              `  steps to ${line.step} ${name.padEnd(7)} browser ${page.models[name].loss.toFixed(7)} ` +
                `deno ${line.models[name].loss.toFixed(7)} difference ${difference.toExponential(2)}`,
            );
            assert(
              difference <= TOLERANCE,
              `steps to ${line.step}, ${name}: browser ${page.models[name].loss}, Deno ${
                line.models[name].loss
              } (tolerance ${TOLERANCE})`,
            );
          }
        }
        console.log(
          `largest difference over the first ${COMPARED} steps: ${worst.toExponential(2)}; ` +
            `screenshot: ${SCREENSHOT}`,
        );
        await page.close();
      });

      await t.step("Pause and Restart clicked twice run one loop on one session", async () => {
        const { page, errors } = await open(browser, `${server.url}?seed=3&steps=400&autostart=1`);
        const read = () => trainingLog(page);
        const status = () => page.$eval("#state", (e) => e.textContent);
        await page.waitForFunction(
          () => ((globalThis as unknown as { trainingLog: TrainingLog }).trainingLog.steps.length >= 1),
          { timeout: 120_000, polling: 200 },
        );
        await page.evaluate(() => {
          const start = document.getElementById("start")!;
          start.click();
          start.click();
        });
        await page.waitForFunction(() => document.getElementById("state")!.textContent === "paused", {
          timeout: 60_000,
          polling: 100,
        });
        const paused = (await read()).steps.length;
        await new Promise((resolve) => setTimeout(resolve, 2000));
        assert(
          (await status()) === "paused" && (await read()).steps.length === paused,
          `a second click on Pause resumed training: ${await status()}, ${
            (await read()).steps.length
          } intervals`,
        );
        await page.evaluate(() => {
          const restart = document.getElementById("restart")!;
          restart.click();
          restart.click();
        });
        await page.waitForFunction(
          () => {
            const log = (globalThis as unknown as { trainingLog: TrainingLog }).trainingLog;
            return log.steps.length >= 1 || log.error !== null;
          },
          { timeout: 120_000, polling: 200 },
        );
        const log = await read();
        assert(log.error === null && errors.length === 0, `errors: ${log.error} ${errors.join("\n")}`);
        assert(log.openSessions === 1, `${log.openSessions} sessions open after a double-clicked Restart`);
        await page.close();
      });

      await t.step("a URL parameter of the wrong form is shown in the page", async () => {
        const { page } = await open(browser, `${server.url}?steps=abc`);
        const text = await shownError(page);
        assert(text.includes("URL parameter steps=abc"), `shown: ${text}`);
        await page.close();
      });

      await t.step("dist/multimodel.js runs the README's example in a page", async () => {
        // A document of the server's origin that runs nothing itself: the data file.
        const { page, errors } = await open(browser, `${server.url}sentiment.json`);
        const value = await page.evaluate(async (url) => {
          const { initGpu, matmul, sum, tensor } = await import(url) as typeof import("../../mod.ts");
          await initGpu();
          return await sum(matmul(tensor([[1, 2], [3, 4]]), tensor([[1], [1]]))).item();
        }, `${server.url}dist/multimodel.js`);
        assert(value === 10 && errors.length === 0, `got ${value}; ${errors.join("\n")}`);
        await page.close();
      });

      await t.step("a browser without WebGPU gets a message in the page", async () => {
        const { page } = await open(browser, server.url, () => {
          delete (Navigator.prototype as { gpu?: unknown }).gpu;
        });
        const text = await shownError(page);
        assert(text.includes("This browser has no WebGPU"), `shown: ${text}`);
        assert(
          await page.$eval("#adapter", (e) => e.textContent) === "none",
          "the adapter still says opening",
        );
        await page.close();
      });

      await t.step("the bundle's initGpu says in a browser's terms why there is no WebGPU", async () => {
        const { page } = await open(browser, `${server.url}sentiment.json`, () => {
          delete (Navigator.prototype as { gpu?: unknown }).gpu;
        });
        const message = await page.evaluate(async (url) => {
          const { initGpu } = await import(url) as typeof import("../../mod.ts");
          return await initGpu().then(() => "opened", (e: Error) => `${e.name}: ${e.message}`);
        }, `${server.url}dist/multimodel.js`);
        assert(message.startsWith("NoAdapterError: This browser has no WebGPU"), `initGpu: ${message}`);
        assert(!message.includes("apt-get"), `a Linux server's advice in a browser: ${message}`);
        await page.close();
      });

      await t.step(
        "a device lost while training is shown as the cause, and the engine refuses it after",
        async () => {
          const { page } = await open(browser, `${server.url}?seed=3&steps=400&autostart=1`);
          await page.waitForFunction(
            () => ((globalThis as unknown as { trainingLog: TrainingLog }).trainingLog.steps.length >= 1),
            { timeout: 120_000, polling: 200 },
          );
          await page.evaluate(() => {
            const { gpu } =
              (globalThis as unknown as { multimodel: typeof import("../../mod.ts") }).multimodel;
            gpu().device.destroy();
          });
          const text = await shownError(page);
          await new Promise((resolve) => setTimeout(resolve, 500)); // a readback's failure would come after
          const shown = await page.$eval("#error", (e) => e.textContent ?? "");
          assert(shown.startsWith("The GPU device was lost (destroyed"), `shown first: ${text}`);
          assert(!shown.includes("Training failed") && !shown.includes(".."), `shown: ${shown}`);
          assert(await page.$eval("#start", (b) => b.textContent) === "Stopped", "Start still says Pause");
          const after = await page.evaluate(() => {
            const { gpu } =
              (globalThis as unknown as { multimodel: typeof import("../../mod.ts") }).multimodel;
            try {
              gpu();
              return "no error";
            } catch (error) {
              return (error as Error).message;
            }
          });
          assert(after.startsWith("The WebGPU device was lost (destroyed"), `gpu() after the loss: ${after}`);
          await page.close();
        },
      );

      await t.step("WebGPU without an adapter gets a message in the page", async () => {
        const { page } = await open(browser, server.url, () => {
          GPU.prototype.requestAdapter = () => Promise.resolve(null);
        });
        const text = await shownError(page);
        assert(text.includes("found no adapter"), `shown: ${text}`);
        await page.close();
      });

      await t.step("a shader that fails to compile is shown in the page", async () => {
        const { page } = await open(browser, server.url);
        await page.waitForFunction(() => document.getElementById("state")!.textContent!.startsWith("ready"), {
          timeout: 60_000,
        });
        await page.evaluate(async () => {
          const { gpu } = (globalThis as unknown as { multimodel: typeof import("../../mod.ts") }).multimodel;
          const { device } = gpu();
          device.createShaderModule({ code: "fn main( {", label: "broken" });
          // Chromium hands commands to its GPU process, and reports their errors, when it next flushes.
          await device.queue.onSubmittedWorkDone();
        });
        const text = await shownError(page);
        assert(text.includes("WebGPU error") && text.includes("broken"), `shown: ${text}`);
        assert(await page.$eval("#start", (b) => (b as HTMLButtonElement).disabled), "Start stays enabled");
        await page.close();
      });
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});

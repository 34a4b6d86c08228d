/// <reference lib="dom" />
/**
 * The page (web/index.html, bundled to web/app.js by `deno task build`): opens WebGPU, reads the
 * sentiment data set (web/sentiment.json), and trains the three models of training.ts jointly with
 * the core's TrainingSession, drawing the loss and validation accuracy of each model as it goes.
 *
 * Every failure is shown in the page, not only logged: no WebGPU, no adapter, a lost device, an
 * uncaptured WebGPU error (a shader that fails to compile, a validation error), a missing data file,
 * any exception of the training loop.
 *
 * URL parameters, for tests and links ({@linkcode pageParameters}, checked before anything starts):
 * `seed` (default 0), `steps` (a fixed number of steps instead of three epochs), `autostart`, and
 * `sharing`, `sync`, `adaptive`, `distill` (0 or 1). The page keeps
 * what it trained in `globalThis.trainingLog` ({@linkcode TrainingLog}) and exposes the library as
 * `globalThis.multimodel`, for the browser test and for trying it from the console.
 *
 * @module
 */
import * as multimodel from "../mod.ts";
import { gpu, initGpu, NoAdapterError } from "../engine/device.ts";
import { lineChart, PALETTE, type Series } from "../train/plot.ts";
import type { EvaluationLine, StepLine, TrainingSession } from "../train/session.ts";
import {
  openPageSession,
  pageOptions,
  type PageParameters,
  pageParameters,
  sentimentDataset,
  type Toggles,
} from "./training.ts";

/** What the page has trained so far, as the browser test reads it. */
export interface TrainingLog {
  /** The adapter's name, once WebGPU is open. */
  adapter: string | null;
  /** Logged intervals of the current run. */
  steps: StepLine[];
  /** Validation evaluations of the current run, then the test evaluation at its end. */
  evaluations: EvaluationLine[];
  /** Whether the current run has taken all its steps. */
  finished: boolean;
  /** The first error shown, or null. */
  error: string | null;
  /** Sessions open (their models and optimizer on the GPU): 1 once a run is prepared, never more. */
  openSessions: number;
}

const log: TrainingLog = {
  adapter: null,
  steps: [],
  evaluations: [],
  finished: false,
  error: null,
  openSessions: 0,
};
Object.assign(globalThis, { trainingLog: log, multimodel });

type State = "idle" | "running" | "paused" | "finished" | "failed";
let state: State = "idle";
let session: TrainingSession | null = null;
/** The training loop while it runs (and while it stops, after Pause). */
let loop: Promise<void> | null = null;
/** Whether Restart is replacing the run (both buttons wait for it). */
let restarting = false;
let dataset: ReturnType<typeof sentimentDataset> | null = null;
let baseline: number | null = null;

const element = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const startButton = element<HTMLButtonElement>("start");
const restartButton = element<HTMLButtonElement>("restart");
const TOGGLE_NAMES = ["sharing", "sync", "adaptive", "distill"] as const;
/** The URL's parameters, once checked by main(). */
let parameters: PageParameters;

/** The device WebGPU opened, once it has (its lost promise explains a failure that follows a loss). */
let openedDevice: GPUDevice | null = null;

/** Errors shown so far; after the first few, the box only counts them (one fault often cascades). */
let shown = 0;
const SHOWN_ERRORS = 3;

/** Shows an error to the person (and in the console); training stops. */
function showError(text: string): void {
  // WebGPU's messages (a shader's compile errors) end in runs of blank lines.
  const message = text.trim().replace(/\n\s*\n\s*\n/g, "\n\n");
  console.error(message);
  log.error ??= message;
  const box = element("error");
  box.hidden = false;
  shown++;
  if (shown <= SHOWN_ERRORS) {
    box.textContent = box.textContent ? `${box.textContent}\n${message}` : message;
  } else {
    const more = `(${shown - SHOWN_ERRORS} more error${
      shown - SHOWN_ERRORS === 1 ? "" : "s"
    } in the console)`;
    box.textContent = box.textContent!.replace(/\n\(\d+ more errors? in the console\)$/, "") + `\n${more}`;
  }
  state = "failed";
  setStatus("stopped by an error");
  startButton.textContent = "Stopped";
  startButton.disabled = true;
  restartButton.disabled = true;
  element("speed").textContent = "-";
}

globalThis.addEventListener("error", (event) => showError(`Error: ${event.message}`));
globalThis.addEventListener("unhandledrejection", (event) => showError(`Error: ${messageOf(event.reason)}`));

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function setStatus(text: string): void {
  element("state").textContent = text;
}

/** Opens WebGPU, or says in the page why it cannot. */
async function openWebGpu(): Promise<boolean> {
  try {
    await initGpu();
  } catch (error) {
    // The engine's NoAdapterError says, in a browser, which browsers have WebGPU or why there is no adapter.
    showError(
      error instanceof NoAdapterError ? error.message : `WebGPU could not open a device: ${messageOf(error)}`,
    );
    element("adapter").textContent = "none";
    return false;
  }
  const device = openedDevice = gpu().device;
  device.addEventListener("uncapturederror", (event) => {
    showError(`WebGPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
  device.lost.then((info) => {
    const message = info.message.replace(/\.$/, "");
    showError(`The GPU device was lost (${info.reason}${message ? `: ${message}` : ""}). Reload the page.`);
  });
  log.adapter = adapterName(device);
  element("adapter").textContent = log.adapter;
  return true;
}

/** The adapter as Chrome describes it (vendor, architecture, device), else the engine's profile name. */
function adapterName(device: GPUDevice): string {
  const info = (device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
  const parts = [info?.vendor, info?.architecture, info?.device, info?.description].filter((p) => p);
  const name = [...new Set(parts)].join(" ") || gpu().profile.name;
  return gpu().profile.isSoftware ? `${name} (software)` : name;
}

function toggles(): Toggles {
  return Object.fromEntries(
    TOGGLE_NAMES.map((name) => [name, element<HTMLInputElement>(name).checked]),
  ) as unknown as Toggles;
}

/** A new run with the current toggles; the previous run's session is freed first. */
async function newRun(): Promise<void> {
  if (session) {
    session.dispose();
    log.openSessions--;
  }
  session = null;
  Object.assign(log, { steps: [], evaluations: [], finished: false });
  element("step").textContent = "0";
  element("speed").textContent = "-";
  setStatus("preparing: training the tokenizer, building the models");
  await new Promise((resolve) => setTimeout(resolve, 0));
  session = await openPageSession(dataset!, pageOptions(toggles(), parameters.seed, parameters.steps));
  log.openSessions++;
  baseline ??= session.run.runner.baseline().validation.accuracy;
  element("total").textContent = String(session.totalSteps);
  draw();
}

/**
 * Trains until paused, finished or failed, drawing after every logged interval. A pause takes effect
 * at the end of a logged interval, so that no interval's time includes the pause.
 */
async function trainLoop(): Promise<void> {
  const current = session!;
  if (state === "failed") return;
  state = "running";
  startButton.textContent = "Pause";
  setStatus("training");
  let midInterval = false;
  while (
    (state === "running" || (state === "paused" && midInterval)) && session === current && !current.done
  ) {
    const report = await current.advance();
    midInterval = !report.logged;
    if (report.logged) {
      log.steps.push(report.logged);
      element("step").textContent = String(report.step);
      element("speed").textContent = speed().toFixed(2);
    }
    if (report.evaluated) log.evaluations.push(...report.evaluated);
    if (report.logged || report.evaluated) {
      draw();
      // Lets the page paint and take clicks between intervals.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  if (session !== current || (state as State) === "failed") return;
  if (current.done) {
    setStatus("evaluating on the test split");
    const test = await current.evaluate("test");
    if (session !== current || (state as State) === "failed") return;
    log.evaluations.push(...test);
    log.finished = true;
    state = "finished";
    startButton.textContent = "Finished";
    startButton.disabled = true;
    setStatus(`finished ${current.totalSteps} steps`);
    draw();
  } else {
    startButton.textContent = "Resume";
    startButton.disabled = restarting;
    setStatus("paused");
  }
}

/** Steps per second over the last few logged intervals. */
function speed(): number {
  const recent = log.steps.slice(-5);
  const steps = recent.reduce((s, l) => s + l.steps, 0);
  const seconds = recent.reduce((s, l) => s + l.seconds, 0);
  return seconds > 0 ? steps / seconds : 0;
}

function draw(): void {
  if (!session) return;
  const names = session.names;
  const lossSeries: Series[] = names.map((name, i) => ({
    name,
    x: log.steps.map((l) => l.step),
    y: log.steps.map((l) => l.models[name].loss),
    color: PALETTE[i],
  }));
  element("loss-chart").innerHTML = lineChart({
    title: "Training loss (mean of each logged interval)",
    xLabel: "step",
    yLabel: "cross-entropy",
    series: lossSeries,
    width: 640,
    height: 320,
  });
  const validation = log.evaluations.filter((e) => e.split === "validation");
  element("accuracy-chart").innerHTML = lineChart({
    title: "Validation accuracy",
    xLabel: "step",
    yLabel: "accuracy",
    series: names.map((name, i) => {
      const own = validation.filter((e) => e.model === name);
      return { name, x: own.map((e) => e.step), y: own.map((e) => e.metrics.accuracy), color: PALETTE[i] };
    }),
    lines: baseline === null ? [] : [{ name: "bag-of-words baseline", y: baseline }],
    width: 640,
    height: 320,
  });
  const last = log.steps.at(-1);
  const accuracy = (name: string, split: string) =>
    log.evaluations.findLast((e) => e.model === name && e.split === split)?.metrics.accuracy;
  const cell = (value: number | undefined, digits: number) =>
    value === undefined ? "-" : value.toFixed(digits);
  element("results").querySelector("tbody")!.innerHTML = names.map((name) => {
    const figures = last?.models[name];
    return `<tr><td>${name}</td><td>${cell(figures?.loss, 4)}</td><td>${
      cell(accuracy(name, "validation"), 3)
    }</td><td>${cell(accuracy(name, "test"), 3)}</td><td>${cell(figures?.lrMultiplier, 3)}</td><td>${
      figures?.skipped ?? "-"
    }</td></tr>`;
  }).join("");
}

/**
 * Start, Pause and Resume: one button. Pause disables it until the loop has stopped, so that a second
 * click cannot start a second loop on the same session.
 */
async function onStart(): Promise<void> {
  if (state === "running") {
    state = "paused";
    startButton.disabled = true;
    startButton.textContent = "Pausing...";
    setStatus("pausing at the end of the interval");
    return;
  }
  if (loop || restarting) return;
  startButton.disabled = true;
  restartButton.disabled = true;
  if (!session) await newRun();
  if ((state as State) === "failed") return;
  startButton.disabled = false;
  restartButton.disabled = false;
  await run();
}

/**
 * A new run with the current toggles, once the current one has stopped at the end of its interval;
 * both buttons wait for it, so that a second click cannot open a second session.
 */
async function onRestart(): Promise<void> {
  if (restarting) return;
  restarting = true;
  startButton.disabled = true;
  restartButton.disabled = true;
  try {
    if (state === "running") state = "paused";
    await loop;
    await newRun();
  } finally {
    restarting = false;
  }
  if ((state as State) === "failed") return;
  startButton.disabled = false;
  restartButton.disabled = false;
  await run();
}

async function run(): Promise<void> {
  loop = trainLoop();
  try {
    await loop;
  } finally {
    loop = null;
  }
}

/**
 * Reports a failure of a button's action in the page. A lost device fails a readback before its lost
 * promise settles; that loss, which the device's handler reports, is the cause to show, not the readback.
 */
function guarded(action: () => Promise<void>): () => void {
  return () =>
    action().catch(async (error) => {
      const lost = await Promise.race([
        openedDevice?.lost.then(() => true) ?? false,
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 250)),
      ]);
      if (!lost) showError(`Training failed: ${messageOf(error)}`);
    });
}

async function main(): Promise<void> {
  try {
    parameters = pageParameters(new URLSearchParams(location.search));
  } catch (error) {
    showError(messageOf(error));
    return;
  }
  for (const name of TOGGLE_NAMES) element<HTMLInputElement>(name).checked = parameters.toggles[name];
  if (!(await openWebGpu())) return;
  setStatus("loading the data set");
  let response: Response;
  try {
    response = await fetch("sentiment.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    dataset = sentimentDataset(await response.json());
  } catch (error) {
    showError(`Could not load sentiment.json (${messageOf(error)}); run \`deno task build\` first.`);
    return;
  }
  startButton.addEventListener("click", guarded(onStart));
  restartButton.addEventListener("click", guarded(onRestart));
  startButton.disabled = false;
  setStatus(`ready: ${dataset.train.length} training sentences, ${dataset.validation.length} for validation`);
  if (parameters.autostart) await guarded(onStart)();
}

main().catch((error) => showError(`The page failed to start: ${messageOf(error)}`));

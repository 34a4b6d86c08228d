/**
 * The run report and what it is made of: the report of a hand-made run has the right table rows
 * and verdicts and links SVG files that exist and are well-formed XML; the plot module's ticks on
 * known ranges, its NaN gaps, single points, empty series and escaping; the progress display's
 * plain-line and in-place formats.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { createProgress, formatEta, progressLine } from "../train/log.ts";
import { escapeXml, formatTick, lineChart, logTicks, niceTicks } from "../train/plot.ts";
import { formatMetric, renderReport, type RunRecord, smooth } from "../train/report.ts";
import { writeReport } from "../train/run.ts";

/**
 * Checks that `text` is one well-formed XML element tree: tags balance, attributes are quoted,
 * text holds no raw `<` or bare `&`; returns the root element's name and attributes.
 */
function parseXml(text: string, label: string): { root: string; attributes: Record<string, string> } {
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/y;
  const stack: string[] = [];
  let root: { root: string; attributes: Record<string, string> } | null = null;
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`${label}: ${why} at ${i}: ${JSON.stringify(text.slice(i, i + 60))}`);
  };
  while (i < text.length) {
    const next = text.indexOf("<", i);
    const content = text.slice(i, next < 0 ? text.length : next);
    if (/&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[\da-fA-F]+);)/.test(content)) fail("bare &");
    if (content.trim() && stack.length === 0) fail("text outside the root");
    if (next < 0) break;
    i = next;
    tag.lastIndex = i;
    const m = tag.exec(text) ?? fail("malformed tag");
    const [whole, closing, name, attrs, selfClosing] = m;
    if (closing) {
      if (stack.pop() !== name) fail(`unbalanced </${name}>`);
    } else {
      if (stack.length === 0) {
        if (root) fail("second root element");
        const attributes = Object.fromEntries(
          [...attrs.matchAll(/([\w:.-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]]),
        );
        root = { root: name, attributes };
      }
      if (/&(?!(?:amp|lt|gt|quot|apos|#\d+);)/.test(attrs)) fail("bare & in an attribute");
      if (!selfClosing) stack.push(name);
    }
    i += whole.length;
  }
  if (stack.length) throw new Error(`${label}: unclosed <${stack.join("> <")}>`);
  if (!root) throw new Error(`${label}: no element`);
  return root;
}

/** Checks an SVG document's root: `<svg>` with the SVG namespace, width, height and a viewBox. */
function checkSvg(svg: string, label: string): void {
  const { root, attributes } = parseXml(svg, label);
  strictEqual(root, "svg", label);
  strictEqual(attributes.xmlns, "http://www.w3.org/2000/svg", label);
  ok(/^\d+$/.test(attributes.width) && /^\d+$/.test(attributes.height), `${label}: width and height`);
  strictEqual(attributes.viewBox, `0 0 ${attributes.width} ${attributes.height}`, label);
  ok(!/NaN|Infinity|undefined/.test(svg), `${label}: a non-finite number leaked into the SVG`);
}

Deno.test("niceTicks on known ranges", () => {
  deepStrictEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  deepStrictEqual(niceTicks(3, 97), [0, 20, 40, 60, 80, 100]);
  deepStrictEqual(niceTicks(-1, 1), [-1, -0.5, 0, 0.5, 1]);
  deepStrictEqual(niceTicks(0.1, 0.35), [0.1, 0.2, 0.3, 0.4]);
  deepStrictEqual(niceTicks(0, 12345), [0, 5000, 10000, 15000]);
  deepStrictEqual(niceTicks(0.693, 0.7), [0.692, 0.694, 0.696, 0.698, 0.7]);
  // An empty range is widened around its value.
  deepStrictEqual(niceTicks(5, 5), [4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6]);
  deepStrictEqual(niceTicks(0, 0), [-1, -0.5, 0, 0.5, 1]);
});

Deno.test("logTicks: decades, with 2 and 5 between them over short ranges", () => {
  deepStrictEqual(logTicks(0.03, 40), [0.01, 0.1, 1, 10, 100]);
  deepStrictEqual(logTicks(1.5, 30), [1, 2, 5, 10, 20, 50, 100]);
  deepStrictEqual(logTicks(3, 3), [1, 2, 5, 10]);
  deepStrictEqual(logTicks(1e-12, 1e12), [1e-12, 1e-9, 1e-6, 1e-3, 1, 1e3, 1e6, 1e9, 1e12]);
});

Deno.test("formatTick: the step's decimals, exponents for extreme values", () => {
  strictEqual(formatTick(0.2, 0.2), "0.2");
  strictEqual(formatTick(10000, 5000), "10000");
  strictEqual(formatTick(0.5, 0.5), "0.5");
  strictEqual(formatTick(1e-5, 1e-5), "1e-5");
  strictEqual(formatTick(2000000, 1e6), "2e6");
  strictEqual(formatTick(0, 0.1), "0");
});

Deno.test("lineChart: NaN and Infinity are gaps, single points are dots, empty charts say so", () => {
  const gaps = lineChart({
    title: "gaps",
    series: [{ name: "a", x: [0, 1, 2, 3, 4, 5], y: [1, 2, NaN, 3, Infinity, 4] }],
  });
  checkSvg(gaps, "gaps");
  const paths = [...gaps.matchAll(/<path d="([^"]*)"/g)].map((m) => m[1]);
  strictEqual(paths.length, 1);
  strictEqual(paths[0].match(/M/g)!.length, 1, "points 0-1 form the only line");
  strictEqual(gaps.match(/<circle/g)!.length, 2, "points 3 and 5 stand alone");

  const single = lineChart({ title: "single", series: [{ name: "a", x: [7], y: [0.5] }] });
  checkSvg(single, "single");
  ok(single.includes("<circle") && !single.includes("<path"));

  const empty = lineChart({
    title: "empty",
    series: [{ name: "a", x: [], y: [] }, { name: "b", x: [1], y: [NaN] }],
  });
  checkSvg(empty, "empty");
  ok(empty.includes(">no data</text>"));

  const log = lineChart({
    title: "log",
    logY: true,
    series: [{ name: "a", x: [0, 1, 2, 3], y: [10, 0, -1, 1000] }],
  });
  checkSvg(log, "log");
  ok(log.includes(">1000</text>") && log.includes(">10</text>"), "decade labels");
  strictEqual(log.match(/<circle/g)!.length, 2, "zero and negative values are gaps on a log axis");
});

Deno.test("lineChart escapes text, draws reference lines dashed and marks as ticks", () => {
  const svg = lineChart({
    title: `<script>alert("x&y")</script>`,
    xLabel: "step's",
    series: [{ name: "a & b", x: [1, 2, 3], y: [3, 2, 1] }],
    lines: [{ name: "baseline <bow>", y: 2.5 }],
    marks: [{ name: "skipped", x: [2] }],
  });
  checkSvg(svg, "escaped");
  ok(svg.includes("&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"));
  ok(
    svg.includes(">a &amp; b</text>") && svg.includes(">baseline &lt;bow&gt;</text>") &&
      svg.includes("step&apos;s"),
  );
  ok(/<line [^>]*stroke-dasharray="6 4"/.test(svg), "dashed reference line");
  ok(/<path d="M[\d.]+ 312v-10"/.test(svg), "a tick at the bottom of the plot");
  strictEqual(escapeXml("a\u0000b\ud800"), "a\ufffdb\ufffd");
});

Deno.test("lineChart keeps long series small: at most four points per pixel column", () => {
  const n = 100_000;
  const x = Array.from({ length: n }, (_, i) => i);
  const y = x.map((i) => Math.sin(i / 100));
  const svg = lineChart({ title: "long", series: [{ name: "sin", x, y }] });
  checkSvg(svg, "long");
  ok(svg.length < 60_000, `${svg.length} characters`);
});

function handMadeRun(): RunRecord {
  const steps: RunRecord["steps"] = [];
  const bertLoss = [0.7, 0.6, NaN, 0.5];
  const gpt2Loss = [0.7, 0.69, 0.68, 0.67];
  for (let i = 0; i < 4; i++) {
    const common = { step: i + 1, lr: 1e-4, lrMultiplier: 1 - i * 0.1 };
    steps.push({
      ...common,
      model: "bert",
      loss: bertLoss[i],
      gradNorm: i === 2 ? Infinity : 2 - i * 0.3,
      skipped: i === 2,
    });
    steps.push({ ...common, model: "gpt2", loss: gpt2Loss[i], gradNorm: 0.01 * (i + 1), skipped: false });
  }
  const evaluation = (
    step: number,
    split: "validation" | "test",
    model: string,
    accuracy: number,
    loss: number,
  ) => ({
    step,
    epoch: step / 4,
    split,
    model,
    metrics: { accuracy, loss },
  });
  return {
    title: "sentiment - bert, gpt2 (joint)",
    config: { task: "sentiment", steps: 4, optimizer: { lr: 1e-4, betas: [0.9, 0.999] }, note: "a|b" },
    adapter: "llvmpipe (software)",
    started: "2025-01-01T00:00:00Z",
    durationSeconds: 125,
    models: ["bert", "gpt2"],
    metricName: "accuracy",
    higherIsBetter: true,
    steps,
    evaluations: [
      evaluation(2, "validation", "bert", 0.8, 0.5),
      evaluation(4, "validation", "bert", 0.85, 0.4),
      evaluation(4, "test", "bert", 0.84, 0.41),
      evaluation(2, "validation", "gpt2", 0.75, 0.6),
      evaluation(4, "validation", "gpt2", 0.7, 0.65),
      evaluation(4, "test", "gpt2", 0.69, 0.66),
    ],
    baseline: {
      name: "bag-of-words logistic regression",
      validation: { accuracy: 0.78 },
      test: { accuracy: 0.77 },
    },
    throughput: { stepsPerSecond: 0.032, tokensPerSecond: 1234.5 },
  };
}

Deno.test("report.md: one results table with final, test and best values, updates and skips", () => {
  const md = renderReport(handMadeRun())["report.md"];
  ok(md.startsWith("# sentiment - bert, gpt2 (joint)\n"));
  const table = md.split("## Configuration")[0].split("\n").filter((l) => l.startsWith("| "));
  deepStrictEqual(table, [
    "| model | validation accuracy | validation loss | test accuracy | test loss | best validation accuracy (step) | updates | skipped updates |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    "| bert | 0.85 | 0.4 | 0.84 | 0.41 | 0.85 (4) | 3 | 1 |",
    "| gpt2 | 0.7 | 0.65 | 0.69 | 0.66 | 0.75 (2) | 4 | 0 |",
    "| baseline: bag-of-words logistic regression | 0.78 | – | 0.77 | – | – | – | – |",
  ]);
  ok(md.includes("- **bert** beat the baseline on validation: 0.85 vs 0.78 accuracy."));
  ok(md.includes("- **gpt2** did **not** beat the baseline on validation: 0.7 vs 0.78 accuracy."));
  ok(md.includes("ran 2m 5s at 0.032 steps/s and 1235 tokens/s"), "duration and throughput");
  ok(md.includes("<details><summary>"), "collapsed configuration");
  ok(
    md.includes("| optimizer.betas | \\[0.9,0.999\\] |") && md.includes("| note | a\\|b |"),
    "flattened, escaped",
  );
});

Deno.test("report.md says how to load the last checkpoint's models in transformers, when it has them", () => {
  const run = handMadeRun();
  ok(!renderReport(run)["report.md"].includes("## Using the models"), "no folders, no section");
  run.modelFolders = {
    bert: { folder: "checkpoints/step-4/models/bert", pipeline: "text-classification" },
    gpt2: { folder: "checkpoints/step-4/models/gpt2", pipeline: "text-classification" },
  };
  const md = renderReport(run)["report.md"];
  const section = md.split("## Using the models")[1].split("## Configuration")[0];
  ok(section.includes("| bert | `checkpoints/step-4/models/bert` | text-classification |"), section);
  ok(section.includes("| gpt2 | `checkpoints/step-4/models/gpt2` | text-classification |"), section);
  ok(
    section.includes(
      'pipe = pipeline("text-classification", model="checkpoints/step-4/models/bert")  # bert',
    ),
    section,
  );
  // transformers 5 has no question-answering pipeline: the model class instead.
  run.modelFolders = { bert: { folder: "checkpoints/step-4/models/bert", pipeline: null } };
  const qa = renderReport(run)["report.md"];
  ok(qa.includes("| bert | `checkpoints/step-4/models/bert` | – |"), qa);
  ok(
    qa.includes('model = AutoModelForQuestionAnswering.from_pretrained("checkpoints/step-4/models/bert")'),
    qa,
  );
});

Deno.test("report verdicts: a model whose best beat the baseline, lower-is-better, no baseline", () => {
  const run = handMadeRun();
  run.baseline!.validation.accuracy = 0.72;
  const md = renderReport(run)["report.md"];
  ok(md.includes(
    "- **gpt2** did **not** beat the baseline on validation: 0.7 vs 0.72 accuracy. " +
      "Its best, 0.75 at step 2, did beat it.",
  ));
  run.higherIsBetter = false;
  run.primaryMetric = "loss";
  run.baseline!.validation.loss = 0.45;
  const byLoss = renderReport(run)["report.md"];
  ok(byLoss.includes("- **bert** beat the baseline on validation: 0.4 vs 0.45 loss."), byLoss);
  ok(byLoss.includes("| bert | 0.4 | 0.85 |"), "the primary metric comes first");
  run.baseline = null;
  ok(renderReport(run)["report.md"].includes("- **bert**: no baseline to compare with."));
});

Deno.test("writeReport writes report.md and every SVG it links, each well-formed", async () => {
  const folder = await Deno.makeTempDir({ prefix: "report_test_" });
  try {
    const written = await writeReport(`${folder}/run`, handMadeRun());
    const md = await Deno.readTextFile(`${folder}/run/report.md`);
    const links = [...md.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
    deepStrictEqual(links, ["loss.svg", "validation.svg", "lr_multiplier.svg", "grad_norm.svg"]);
    deepStrictEqual(written.map((p) => p.slice(folder.length + 5)).sort(), ["report.md", ...links].sort());
    for (const link of links) checkSvg(await Deno.readTextFile(`${folder}/run/${link}`), link);
    const validation = await Deno.readTextFile(`${folder}/run/validation.svg`);
    ok(/<line [^>]*stroke-dasharray/.test(validation) && validation.includes(">baseline: bag-of-word…<"));
    const loss = await Deno.readTextFile(`${folder}/run/loss.svg`);
    ok(
      loss.includes('stroke-opacity="0.25"') && loss.includes(">bert skipped (1)</text>"),
      "raw loss and skip marks",
    );
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("smooth: debiased EMA that skips non-finite values; formatMetric", () => {
  deepStrictEqual(smooth([2, 2, NaN, 2], 0.9).map((v) => Number.isNaN(v) ? "gap" : v.toFixed(12)), [
    "2.000000000000",
    "2.000000000000",
    "gap",
    "2.000000000000",
  ]);
  deepStrictEqual([0.123456, 12345.6, 0.00012, NaN, -Infinity, undefined].map(formatMetric), [
    "0.1235",
    "12346",
    "1.20e-4",
    "NaN",
    "−∞",
    "–",
  ]);
});

Deno.test("progress: plain lines every N steps and at the end when not a terminal", () => {
  let out = "";
  const progress = createProgress({
    total: 10,
    every: 4,
    isTerminal: true,
    quiet: true,
    write: (t) => out += t,
  });
  for (let step = 1; step <= 9; step++) {
    progress.update({
      step,
      losses: { bert: 1 / step, gpt2: NaN },
      stepsPerSecond: 2,
      tokensPerSecond: 1000.4,
    });
  }
  progress.finish();
  deepStrictEqual(out.split("\n"), [
    "step 4/10  loss bert 0.2500 gpt2 NaN  2.00 steps/s  1000 tok/s  ETA 3s",
    "step 8/10  loss bert 0.1250 gpt2 NaN  2.00 steps/s  1000 tok/s  ETA 1s",
    "step 9/10  loss bert 0.1111 gpt2 NaN  2.00 steps/s  1000 tok/s  ETA 1s",
    "",
  ]);
  strictEqual(formatEta(3723), "1h02m03s");
  strictEqual(formatEta(245), "4m05s");
  strictEqual(formatEta(Infinity), "?");
  strictEqual(
    progressLine({ step: 0, losses: {}, stepsPerSecond: 0, tokensPerSecond: 0 }, 5),
    "step 0/5  loss   0.00 steps/s  0 tok/s  ETA ?",
  );
});

Deno.test("progress on a terminal rewrites one line in place, truncated to the width", () => {
  let out = "";
  const progress = createProgress({ total: 100, isTerminal: true, columns: 30, write: (t) => out += t });
  progress.update({ step: 1, losses: { bert: 0.5 }, stepsPerSecond: 1, tokensPerSecond: 10 });
  progress.update({ step: 2, losses: { bert: 0.4 }, stepsPerSecond: 1, tokensPerSecond: 10 });
  progress.finish();
  strictEqual(out, "\rstep 1/100  loss bert 0.5000 \x1b[K\rstep 2/100  loss bert 0.4000 \x1b[K\n");
});

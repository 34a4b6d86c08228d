/**
 * docs/RESULTS.md from hand-made run lines covering every group: the tables have the expected rows
 * and numbers (worked by hand in the comments), the claims their verdicts, the SVGs are standalone
 * well-formed XML with a viewBox, and partial results (no runs, only a grid, a broken last line, a
 * missing model) render with "not run" instead of failing.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { barChart } from "../experiment/bars.ts";
import { claimRows } from "../experiment/claims.ts";
import {
  formatMarkdown,
  metaFromRuns,
  renderResults,
  type ResultsMeta,
  writeResults,
} from "../experiment/report.ts";
import { type ExperimentRun, parseRuns, selectRuns } from "../experiment/runs.ts";
import { computeRows, stepsRows } from "../experiment/tables.ts";
import { lineChart } from "../train/plot.ts";

const META: ResultsMeta = {
  command: "deno task experiment --scale cpu",
  runsFile: "results/runs-quick.jsonl",
  adapter: "llvmpipe (software)",
  date: "2025-01-01T00:00:00Z",
  durationSeconds: 3723,
};

interface LineSpec {
  group: ExperimentRun["group"];
  task?: string;
  condition: string;
  seed: number;
  lr?: number;
  /** Test score per model; validation is the same, and the curve steps up to it at `reach`. */
  scores?: Record<string, number>;
  /** Per model: the step from which the curve shows the final score (null: never; default 40). */
  reach?: Record<string, number | null>;
  metric?: { name: string; key: string };
  extra?: Record<string, number>;
  timing?: ExperimentRun["timing"];
}

/** One run line: validation = test, curve at steps 10..40 at 0.5 until `reach`, then the final score. */
function line(spec: LineSpec): ExperimentRun {
  const task = spec.task ?? "sentiment";
  const metric = spec.metric ?? { name: "accuracy", key: "accuracy" };
  const scores = spec.scores ?? {};
  const models = Object.keys(scores);
  const lr = spec.lr ?? 1e-3;
  const metrics = (m: string) => ({ [metric.key]: scores[m], ...spec.extra });
  return {
    key: `${spec.group}/${task}/${spec.condition}/lr=${lr}/seed=${spec.seed}/${models.join(",")}`,
    group: spec.group,
    task,
    condition: spec.condition,
    lr,
    seed: spec.seed,
    metricName: metric.name,
    primaryMetric: metric.key,
    higherIsBetter: true,
    models: models.length ? models : ["bert", "gpt2"],
    final: Object.fromEntries(models.map((m) => [m, { validation: metrics(m), test: metrics(m) }])),
    curve: models.flatMap((model) =>
      [10, 20, 30, 40].map((step) => {
        const from = spec.reach?.[model] === undefined ? 40 : spec.reach[model];
        return {
          step,
          model,
          metrics: { [metric.key]: from !== null && step >= from ? scores[model] : 0.5 },
        };
      })
    ),
    stepsPerEpoch: 10,
    totalSteps: 40,
    seconds: 60,
    timing: spec.timing,
    command: "deno task experiment --scale cpu",
    adapter: "llvmpipe (software)",
    date: `2025-01-0${spec.seed}T00:00:00Z`,
  };
}

/** 31 lines: every group, with numbers chosen so the tables can be worked by hand. */
function handMadeRuns(): ExperimentRun[] {
  const runs: ExperimentRun[] = [];
  // Main, sentiment, seeds 1-5. bert: joint - independent = 2, 1, 3, 2, 2 points. gpt2: 0, .5, -.5, 0, 0.
  const bert = { independent: [0.80, 0.82, 0.81, 0.83, 0.79], joint: [0.82, 0.83, 0.84, 0.85, 0.81] };
  const gpt2 = { independent: [0.70, 0.71, 0.72, 0.73, 0.74], joint: [0.70, 0.715, 0.715, 0.73, 0.74] };
  // Steps to the target (evaluations every 10 steps): bert independent 30, 30, 30, 40, 30 vs joint 10
  // everywhere; gpt2 independent 20 everywhere, joint 40 but seed 5, which never gets there (censored at 40).
  const bertReach = { independent: [30, 30, 30, 40, 30], joint: [10, 10, 10, 10, 10] };
  for (let seed = 1; seed <= 5; seed++) {
    for (const condition of ["independent", "joint"] as const) {
      runs.push(line({
        group: "main",
        condition,
        seed,
        scores: { bert: bert[condition][seed - 1], gpt2: gpt2[condition][seed - 1] },
        reach: {
          bert: bertReach[condition][seed - 1],
          gpt2: condition === "independent" ? 20 : seed === 5 ? null : 40,
        },
      }));
    }
  }
  // NER, one seed each side (no interval); QA, joint only, in points with exact match.
  const ner = { name: "span F1", key: "f1" };
  runs.push(
    line({
      group: "main",
      task: "ner",
      condition: "independent",
      seed: 1,
      scores: { bert: 0.6 },
      metric: ner,
    }),
  );
  runs.push(
    line({ group: "main", task: "ner", condition: "joint", seed: 1, scores: { bert: 0.62 }, metric: ner }),
  );
  runs.push(line({
    group: "main",
    task: "qa",
    condition: "joint",
    seed: 1,
    scores: { bert: 45 },
    metric: { name: "exact match / F1", key: "f1" },
    extra: { exactMatch: 30 },
  }));
  // Grid, seed 1: independent and joint both prefer 1e-3.
  for (
    const [condition, lr, b, g] of [
      ["independent", 1e-3, 0.80, 0.70],
      ["independent", 3e-3, 0.78, 0.66],
      ["joint", 1e-3, 0.82, 0.71],
      ["joint", 3e-3, 0.80, 0.70],
    ] as const
  ) {
    runs.push(line({ group: "grid", condition, lr, seed: 1, scores: { bert: b, gpt2: g } }));
  }
  // Ablation without sharing, seeds 1-2, against main joint: bert -2, -1; gpt2 +1, 0.
  runs.push(
    line({ group: "ablation", condition: "joint-no-sharing", seed: 1, scores: { bert: 0.80, gpt2: 0.71 } }),
  );
  runs.push(
    line({ group: "ablation", condition: "joint-no-sharing", seed: 2, scores: { bert: 0.82, gpt2: 0.715 } }),
  );
  // Placebo for bert, seeds 1-2: joint - placebo = .5, 1; placebo - independent = 1.5, 0.
  runs.push(line({ group: "placebo", condition: "placebo", seed: 1, scores: { bert: 0.815 } }));
  runs.push(line({ group: "placebo", condition: "placebo", seed: 2, scores: { bert: 0.82 } }));
  // Pretrained start, seeds 1-2: bert +.5, +1; gpt2 -1, -1.
  for (
    const [condition, seed, b, g] of [
      ["independent", 1, 0.85, 0.75],
      ["independent", 2, 0.86, 0.76],
      ["joint", 1, 0.855, 0.74],
      ["joint", 2, 0.87, 0.75],
    ] as const
  ) {
    runs.push(line({ group: "pretrained", condition, seed, scores: { bert: b, gpt2: g } }));
  }
  // Compute, seeds 1-2: sequential / joint = 3.0 and 3.2; parallel / joint = 1.04 and 1.05.
  for (
    const [condition, step, fb] of [
      ["sequential", [30, 32], [20, 22]],
      ["parallel", [10.4, 10.5], [7, 7]],
      ["joint", [10, 10], [7, 7]],
    ] as const
  ) {
    for (const seed of [1, 2]) {
      runs.push(line({
        group: "compute",
        condition,
        seed,
        timing: {
          stepMs: step[seed - 1],
          forwardBackwardMs: fb[seed - 1],
          optimizerMs: step[seed - 1] - fb[seed - 1],
        },
      }));
    }
  }
  return runs;
}

/** The table rows (lines starting with "| ") of one "## " section of the document. */
function rowsOf(md: string, heading: string): string[] {
  const start = md.indexOf(`\n## ${heading}`);
  ok(start >= 0, `no section "${heading}"`);
  const end = md.indexOf("\n## ", start + 1);
  return md.slice(start, end < 0 ? undefined : end).split("\n").filter((l) => l.startsWith("| "));
}

/**
 * Checks that `text` is one well-formed XML element tree (tags balance, attributes quoted, no raw
 * `<` or bare `&` in text) and returns the root's name and attributes. As in tests/report_test.ts.
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
    const [whole, closing, name, attrs, selfClosing] = tag.exec(text) ?? fail("malformed tag");
    if (closing) {
      if (stack.pop() !== name) fail(`unbalanced </${name}>`);
    } else {
      if (stack.length === 0) {
        if (root) fail("second root element");
        root = {
          root: name,
          attributes: Object.fromEntries(
            [...attrs.matchAll(/([\w:.-]+)="([^"]*)"/g)].map((a) => [a[1], a[2]]),
          ),
        };
      }
      if (!selfClosing) stack.push(name);
    }
    i += whole.length;
  }
  if (stack.length) throw new Error(`${label}: unclosed <${stack.join("> <")}>`);
  if (!root) throw new Error(`${label}: no element`);
  return root;
}

function checkSvg(svg: string, label: string): void {
  const { root, attributes } = parseXml(svg, label);
  strictEqual(root, "svg", label);
  strictEqual(attributes.xmlns, "http://www.w3.org/2000/svg", label);
  strictEqual(attributes.viewBox, `0 0 ${attributes.width} ${attributes.height}`, label);
  ok(!/NaN|Infinity|undefined/.test(svg), `${label}: a non-finite number leaked into the SVG`);
}

Deno.test("Table 1 and the grid: means, t-intervals and paired differences worked by hand", () => {
  const md = renderResults(handMadeRuns(), META)["RESULTS.md"];
  // bert: independent mean 81, sd sqrt(2.5), half-width 2.776445 * 0.7071 = 1.963; differences 2, 1, 3, 2, 2:
  // mean 2, sd sqrt(.5), half-width 0.878.
  deepStrictEqual(rowsOf(md, "Table 1").slice(2), [
    "| sentiment | bert | accuracy | 0.001 / 0.001 | 81.00 [79.04, 82.96] | 83.00 [81.04, 84.96] | +2.00 [+1.12, +2.88] | 5 |",
    "| sentiment | gpt2 | accuracy | 0.001 / 0.001 | 72.00 [70.04, 73.96] | 72.00 [70.09, 73.91] | +0.00 [-0.44, +0.44] | 5 |",
    "| ner | bert | f1 | 0.001 / 0.001 | 60.00 (n=1) | 62.00 (n=1) | +2.00 (no interval) | 1 (< 5) |",
    "| qa | bert | f1 | – / 0.001 | not run | 45.00 (n=1) | not run | 0 |",
    "| qa | bert | exactMatch (secondary) | – / 0.001 | not run | 30.00 (n=1) | not run | 0 |",
  ]);
  deepStrictEqual(rowsOf(md, "Learning-rate grid").slice(2), [
    "| sentiment | independent | 0.001 | 1 | 75.00 (n=1) | bert 80.00, gpt2 70.00 | **yes** |",
    "| sentiment | independent | 0.003 | 1 | 72.00 (n=1) | bert 78.00, gpt2 66.00 |  |",
    "| sentiment | joint | 0.001 | 1 | 76.50 (n=1) | bert 82.00, gpt2 71.00 | **yes** |",
    "| sentiment | joint | 0.003 | 1 | 75.00 (n=1) | bert 80.00, gpt2 70.00 |  |",
  ]);
  ok(
    md.includes("| command | `deno task experiment --scale cpu` |") &&
      md.includes("| run time | 1h 2m 3s (the runs' times summed) |"),
  );
  ok(
    md.includes(
      "_From 13 runs (seeds 1, 2, 3, 4, 5); adapter llvmpipe (software); dates 2025-01-01T00:00:00Z",
    ),
  );
});

Deno.test("Table 2: targets, steps with censoring and the reduction with the evaluation grid", () => {
  const runs = handMadeRuns();
  const md = renderResults(runs, META)["RESULTS.md"];
  // bert target 0.9 * 81 = 72.9; independent mean 32, joint 10: 1 - 10/32 = 68.75% fewer. Joint crossed at
  // the first evaluation, so anywhere in (0, 10]: at best 100% fewer. With every joint run at 10 and every
  // independent at the evaluation before (20, 20, 20, 30, 20: mean 22) the estimate is lowest, 54.5%; the
  // lowest bound comes from a mix of runs at their crossing and before: -5.1% (Fieller with t(0.975, 4)
  // over all 4^5 assignments, worked independently in float64); the union is [-5.1%, 100%].
  // gpt2: target 0.9 * 72; joint 40 but seed 5 censored at 40 (the median is a bound: it is at the median).
  ok(
    md.includes("Validation was evaluated every 10 steps on sentiment, 10 on ner, 10 on qa"),
    "the grid is stated",
  );
  const rows = rowsOf(md, "Table 2").slice(2);
  strictEqual(
    rows[0],
    "| sentiment | bert | 72.90 | 32.0 (median 30) | 0 of 5 | 10.0 (median 10) | 0 of 5 | 68.8% [-5.1%, 100.0%] | 5 |",
  );
  strictEqual(
    rows[1].split(" | ").slice(0, 7).join(" | "),
    "| sentiment | gpt2 | 64.80 | 20.0 (median 20) | 0 of 5 | ≥ 40.0 (median ≥ 40) | 1 of 5",
  );
  ok(rows[1].includes("| -100.0% ["), rows[1]);
  deepStrictEqual(rows.slice(2), [
    "| ner | bert | 54.00 | 40.0 (median 40) | 0 of 1 | 40.0 (median 40) | 0 of 1 | 0.0% (no interval) | 1 (< 5) |",
    "| qa | bert | not run | not run | – | not run | – | not run | 0 |",
  ], "no independent QA run, so no target");
  const data = stepsRows(runs).find((r) => r.model === "bert" && r.task === "sentiment")!;
  strictEqual(data.reduction!.estimate, 68.75);
  strictEqual(data.reduction!.lowestEstimate, 100 * (1 - 10 / 22));
  deepStrictEqual([...data.joint!.steps.values()], [10, 10, 10, 10, 10]);
  deepStrictEqual([...data.independent!.earliest.values()], [20, 20, 20, 30, 20]);
});

Deno.test("an ablation is shown to matter only when its interval excludes zero over all comparisons together", () => {
  const runs = handMadeRuns();
  // No sync, seeds 1-5, against main joint: bert -10 points every seed; gpt2 -1, -3, -.5, -3.5, -2.
  const bert = [0.72, 0.73, 0.74, 0.75, 0.71];
  const gpt2 = [0.69, 0.685, 0.71, 0.695, 0.72];
  for (let seed = 1; seed <= 5; seed++) {
    runs.push(line({
      group: "ablation",
      condition: "joint-no-sync",
      seed,
      scores: { bert: bert[seed - 1], gpt2: gpt2[seed - 1] },
    }));
  }
  const md = renderResults(runs, META)["RESULTS.md"];
  // Four comparisons (no sharing and no sync, two models each): intervals at 1 - .05 / 4. gpt2's mean
  // -2, sd 1.27: half-width 2.776 · 1.27 / √5 = 1.58 at 95%, 4.604 · 1.27 / √5 = 2.62 at 98.75%.
  ok(
    md.includes(
      "Changes shown over the 4 comparisons together (Bonferroni: each interval at 98.75%): joint-no-sync on " +
        "sentiment/bert -10.00 [-10.00, -10.00].",
    ),
    md,
  );
  ok(
    md.includes(
      "Excluding zero at 95% alone, as about 0.2 of 4 comparisons would by chance, so not shown: joint-no-sync " +
        "on sentiment/gpt2 -2.00 [-3.58, -0.42].",
    ),
    md,
  );
  ok(!md.includes("No variant"), "a variant was shown");
});

Deno.test("Table 3 normalises to joint; ablations, placebo and pretrained compare paired seeds", () => {
  const runs = handMadeRuns();
  const md = renderResults(runs, META)["RESULTS.md"];
  const compute = rowsOf(md, "Table 3").slice(2);
  // Sequential step times 30 and 32 against 10 and 10: ratio 3.1; with a constant denominator Fieller's
  // interval is the numerator's t interval over it: (31 ± 12.706 · 1) / 10.
  // Step times 30, 32: mean 31, sd sqrt 2, half-width 12.706 * 1 = 12.71.
  strictEqual(
    compute[0],
    "| sentiment | sequential | 2 (< 5) | 31 [18.29, 43.71] | 21 [8.294, 33.71] | 10 [10, 10] | not measured | " +
      "60 [60, 60] | 3.10 [1.83, 4.37] | – |",
  );
  // Parallel 10.4, 10.5 against 10: (10.45 ± 12.706 · 0.05) / 10.
  ok(compute[1].includes("| 1.04 [0.98, 1.11] |"), compute[1]);
  ok(compute[2].includes("| 1.00 [1.00, 1.00] |"), compute[2]);
  ok(compute.every((r) => r.includes("not measured")), "no GPU time in these runs");
  ok(md.includes("so joint = 1.00. All of them ran on llvmpipe (software)."), "one adapter");
  strictEqual(computeRows(runs)[0].stepMs!.mean, 31);
  // Ablation: bert -2, -1 -> -1.5, half-width 12.706 * .5 = 6.35; gpt2 +1, 0 -> +.5.
  const ablations = rowsOf(md, "Ablations").slice(2);
  ok(
    ablations.includes(
      "| sentiment | joint-no-sharing | bert | 81.00 [68.29, 93.71] | -1.50 [-7.85, +4.85] | 2 (< 5) |",
    ),
    ablations.join("\n"),
  );
  ok(
    ablations.includes(
      "| sentiment | joint-no-sharing | gpt2 | 71.25 [68.07, 74.43] | +0.50 [-5.85, +6.85] | 2 (< 5) |",
    ),
  );
  ok(
    ablations.includes("| sentiment | joint-no-sync | – | not run | not run | 0 |"),
    "a variant that has not run",
  );
  ok(
    ablations.includes(
      "| sentiment | independent | bert | 81.00 [79.04, 82.96] | -2.00 [-2.88, -1.12] | 5 |",
    ),
  );
  ok(md.includes("No variant changed the test score by more than its interval allows"));
  // Placebo: joint - placebo .5, 1 -> .75 +- 3.18; placebo - independent 1.5, 0 -> .75 +- 9.53.
  deepStrictEqual(rowsOf(md, "Placebo").slice(2), [
    "| sentiment | bert | 81.00 [79.04, 82.96] | 83.00 [81.04, 84.96] | 81.75 [78.57, 84.93] | +0.75 [-2.43, +3.93] | +0.75 [-8.78, +10.28] | the placebo is within the interval of joint: not shown to be transfer |",
  ]);
  deepStrictEqual(rowsOf(md, "Pretrained start").slice(2), [
    "| sentiment | bert | accuracy | 0.001 / 0.001 | 85.50 [79.15, 91.85] | 86.25 [76.72, 95.78] | +0.75 [-2.43, +3.93] | 2 (< 5) |",
    "| sentiment | gpt2 | accuracy | 0.001 / 0.001 | 75.50 [69.15, 81.85] | 74.50 [68.15, 80.85] | -1.00 [-1.00, -1.00] | 2 (< 5) |",
  ]);
});

Deno.test("steps: the interval is the union over every assignment of runs to their crossing or the evaluation before", () => {
  // Joint crosses at 10 (so in (0, 10]), independent at 40 (in (30, 40]), on every seed. Of the 4^5
  // assignments, the lowest estimate is 1 - 10/30 = 66.7% and the lowest Fieller bound 48.75% (with
  // t(0.975, 4); worked independently in float64 over the 1,024): confirmed under every one.
  const runs = (seeds: number) =>
    [...Array(seeds).keys()].flatMap((i) =>
      (["independent", "joint"] as const).map((condition) =>
        line({
          group: "main",
          condition,
          seed: i + 1,
          scores: { bert: 0.8 },
          reach: { bert: condition === "joint" ? 10 : 40 },
        })
      )
    );
  const reduction = stepsRows(runs(5))[0].reduction!;
  strictEqual(reduction.assignments, 1024);
  strictEqual(reduction.lowestEstimate, 100 * (1 - 10 / 30));
  strictEqual(reduction.ci!.low.toFixed(2), "48.75");
  strictEqual(reduction.ci!.high, 100);
  const steps = claimRows(runs(5)).find((c) => c.claim === "steps")!;
  strictEqual(steps.verdict, "confirmed");
  // Eleven seeds make 4^11 assignments, past the cap: the two extremes only.
  strictEqual(stepsRows(runs(11))[0].reduction!.assignments, 2);
});

Deno.test("claims: the verdict of each cell under the stated rule", () => {
  const verdicts = claimRows(handMadeRuns()).map((c) =>
    `${c.claim}/${c.scope}/${c.task}/${c.subject}: ${c.verdict}`
  );
  deepStrictEqual(verdicts, [
    "accuracy/main/sentiment/bert: confirmed", // +2.00, at 1 - 0.05/3: [+0.75, +3.25]
    "accuracy/main/sentiment/gpt2: contradicted", // the whole interval below +1.2
    "accuracy/main/ner/bert: not confirmed", // one seed, no interval
    "accuracy/pretrained/sentiment/bert: not confirmed",
    "accuracy/pretrained/sentiment/gpt2: contradicted",
    "steps/main/sentiment/bert: not confirmed", // some mixes of crossings and evaluations before reach -5.1%
    "steps/main/sentiment/gpt2: contradicted", // even the other way round; a censored joint run favours joint
    "steps/main/ner/bert: not confirmed", // 0% fewer, one seed
    "compute/sequential/sentiment/sequential: not confirmed", // two cells: each at 97.5%
    "compute/parallel/sentiment/parallel: contradicted",
  ]);
  const md = renderResults(handMadeRuns(), META)["RESULTS.md"];
  // Three accuracy cells: each interval at 1 - 0.05/3, t(0.99167, 4) = 3.96: 2 ± 3.96 · 0.316.
  ok(md.includes("| joint - independent, points [98.33% CI] |"), "the family-wise level is shown");
  ok(md.includes("| sentiment | bert | +2.00 [+0.75, +3.25] | 5 | **confirmed** |"));
  // Sequential and parallel are one claim: each at 1 - 0.05/2, t(0.9875, 1) = 25.45: (31 ± 25.45) / 10.
  ok(md.includes("| sentiment | sequential | 3.10x [0.55x, 5.65x] | 2 (< 5) | **not confirmed** |"), md);
  ok(
    md.includes("**Contradicted**: the whole interval lies below the claimed minimum"),
    "the rule is stated",
  );
  ok(
    md.includes(
      "**Mixed**: confirmed for some cells only: 1 of 3 confirmed, 1 contradicted, 1 not confirmed",
    ),
  );
});

Deno.test("writeResults writes RESULTS.md and every SVG it links, each standalone XML with a viewBox", async () => {
  const folder = await Deno.makeTempDir({ prefix: "experiment_report_test_" });
  try {
    const written = await writeResults(folder, handMadeRuns(), META);
    const md = await Deno.readTextFile(`${folder}/RESULTS.md`);
    const links = [...md.matchAll(/!\[[^\]]*\]\(([^)]+\.svg)\)/g)].map((m) => m[1]);
    deepStrictEqual(links, [
      "results/curve-sentiment.svg",
      "results/curve-ner.svg",
      "results/curve-qa.svg",
      "results/ablations-sentiment.svg",
      "results/curve-pretrained-sentiment.svg",
    ]);
    deepStrictEqual(written.map((p) => p.slice(folder.length + 1)).sort(), [...links, "RESULTS.md"].sort());
    for (const link of links) checkSvg(await Deno.readTextFile(`${folder}/${link}`), link);
    const curve = await Deno.readTextFile(`${folder}/results/curve-sentiment.svg`);
    strictEqual(
      curve.match(/fill-opacity="0.12" stroke="none"/g)?.length,
      4,
      "a band per model and condition",
    );
    ok(curve.includes(">bert joint</text>") && curve.includes(">gpt2 independent</text>"));
    ok(/<path d="[^"]*" fill="none" stroke="#4e79a7"[^>]*stroke-dasharray/.test(curve), "independent dashed");
    const bars = await Deno.readTextFile(`${folder}/results/ablations-sentiment.svg`);
    ok(
      bars.includes(">joint-no-sharing</text>") && bars.includes(">–</text>"),
      "bars, and dashes where not run",
    );
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("partial results render: no runs, only a grid, a broken last line, a missing model", () => {
  const empty = renderResults([], META);
  deepStrictEqual(Object.keys(empty), ["RESULTS.md"]);
  const md = empty["RESULTS.md"];
  for (const heading of ["Learning-rate grid", "Ablations", "Placebo", "Pretrained start"]) {
    const section = md.slice(md.indexOf(`## ${heading}`)).split("\n").slice(1).join("\n");
    ok(section.trimStart().startsWith("Not run"), heading);
  }
  deepStrictEqual(rowsOf(md, "Table 1").slice(2).map((r) => r.split(" | ")[0]), [
    "| sentiment",
    "| ner",
    "| qa",
  ]);
  ok(rowsOf(md, "Table 3").slice(2).every((r) => r.includes("not run")));
  ok(md.includes("Not run: no runs with both conditions yet, so no verdict."));

  const gridOnly = renderResults(handMadeRuns().filter((r) => r.group === "grid"), META)["RESULTS.md"];
  strictEqual(rowsOf(gridOnly, "Learning-rate grid").length, 6);
  ok(rowsOf(gridOnly, "Table 1").slice(2).every((r) => r.includes("not run")));

  // An interrupted experiment: the runner's "NaN", a line cut short, a run missing a model.
  const lines = handMadeRuns().filter((r) => r.group === "main" && r.task === "sentiment").slice(0, 5)
    .map((r) => JSON.stringify(r));
  const nan = JSON.parse(lines[4]);
  nan.final.gpt2.test.accuracy = "NaN";
  delete nan.final.bert;
  const text = [...lines.slice(0, 4), JSON.stringify(nan), "", lines[0].slice(0, 40)].join("\n");
  const { runs, problems } = parseRuns(text);
  deepStrictEqual(problems, ["line 7: not JSON (an interrupted write?)"]);
  strictEqual(runs.length, 5);
  ok(Number.isNaN(runs[4].final.gpt2.test.accuracy));
  const partial = renderResults(runs, META)["RESULTS.md"];
  // Seeds 1-2 of both conditions and seed 3 independent, which lost bert and has gpt2 NaN: pairs 1-2 only.
  deepStrictEqual(rowsOf(partial, "Table 1").slice(2, 4), [
    "| sentiment | bert | accuracy | 0.001 / 0.001 | 81.00 [68.29, 93.71] | 82.50 [76.15, 88.85] | +1.50 [-4.85, +7.85] | 2 (< 5) |",
    "| sentiment | gpt2 | accuracy | 0.001 / 0.001 | 70.50 [64.15, 76.85] | 70.75 [61.22, 80.28] | +0.25 [-2.93, +3.43] | 2 (< 5) |",
  ]);
  deepStrictEqual(parseRuns('{"key": "x"}\n[1]').problems, [
    "line 1: missing or wrong group, task, condition, primaryMetric, lr, seed, final, models",
    "line 2: missing or wrong key, group, task, condition, primaryMetric, lr, seed, final, models",
  ]);
});

Deno.test("a later line with the same key replaces the earlier; several runs may share a seed", () => {
  const [a, b] = handMadeRuns().filter((r) => r.group === "placebo");
  const again = { ...a, final: { bert: { validation: { accuracy: 0.9 }, test: { accuracy: 0.9 } } } };
  const { runs } = parseRuns([a, b, again].map((r) => JSON.stringify(r)).join("\n"));
  deepStrictEqual(runs.map((r) => r.final.bert.test.accuracy), [0.82, 0.9]);
  const gpt2 = { ...a, key: "placebo/gpt2/seed=1", models: ["gpt2"], final: { gpt2: a.final.bert } };
  strictEqual(selectRuns([a, gpt2], "placebo", "sentiment", "placebo").runs.length, 2);
});

Deno.test("plot additions: a band beneath the lines and bars with whiskers", () => {
  const svg = lineChart({
    title: "band",
    series: [{ name: "mean", x: [1, 2, 3, 4], y: [1, 2, 3, 4] }],
    bands: [{
      name: "95%",
      x: [1, 2, 3, 4],
      low: [0.5, 1.5, NaN, 3.5],
      high: [1.5, 2.5, 3.5, 4.5],
      legend: true,
    }],
  });
  checkSvg(svg, "band");
  const band = svg.match(/<path d="([^"]*)" fill="#4e79a7" fill-opacity="0.18" stroke="none"\/>/);
  ok(band && band[1].split("Z").length === 2, "one polygon: the gap at x = 3 leaves the last point alone");
  ok(
    svg.indexOf('fill-opacity="0.18" stroke="none"') < svg.indexOf('fill="none" stroke="#4e79a7"'),
    "beneath",
  );
  ok(svg.includes(">95%</text>") && svg.includes('<rect x="538"'), "a legend swatch");
  const bars = barChart({
    title: "bars & whiskers",
    yLabel: "points",
    groups: ["a", "b"],
    series: [{ name: "bert", values: [1, -2], low: [0.5, -3], high: [1.5, NaN] }, {
      name: "gpt2",
      values: [NaN, 1],
    }],
  });
  checkSvg(bars, "bars");
  strictEqual(bars.match(/fill-opacity="0.85"/g)?.length, 3 + 2, "three bars and two legend swatches");
  strictEqual(
    bars.match(/stroke="#222222" stroke-width="1.25"/g)?.length,
    1,
    "one whisker: b has no upper end",
  );
  ok(bars.includes("bars &amp; whiskers") && bars.includes(">–</text>"));
  checkSvg(barChart({ title: "empty", groups: [], series: [] }), "empty bars");
});

Deno.test("the header names each commit the runs came from and counts the runs that recorded none", () => {
  const [a, b] = ["0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"];
  const runs = handMadeRuns().map((run, i) => ({ ...run, commit: i < 3 ? a : i < 5 ? b : undefined }));
  const text = renderResults(runs, META)["RESULTS.md"];
  ok(
    text.includes(
      `| commit | \`0123456789ab\` (3 runs), \`89abcdef0123\` (2 runs), not recorded (${
        runs.length - 5
      } runs) |`,
    ),
    text.split("\n").find((l) => l.startsWith("| commit")),
  );
});

Deno.test("the page links the run lines it was built from", () => {
  const text = renderResults(handMadeRuns(), META)["RESULTS.md"];
  ok(
    text.includes("raw run lines in [results/runs-quick.jsonl](results/runs-quick.jsonl)"),
    text.slice(0, 400),
  );
  ok(!text.includes("results/runs.jsonl"), "a link to another scale's file");
});

Deno.test("the published docs/RESULTS.md and its plots are what `deno task experiment --report` builds from docs/results/runs.jsonl", async () => {
  const { runs, problems } = parseRuns(await Deno.readTextFile("docs/results/runs.jsonl"));
  deepStrictEqual(problems, []);
  const files = renderResults(runs, metaFromRuns(runs, "deno task experiment", "results/runs.jsonl"));
  for (const [name, text] of Object.entries(files)) {
    const expected = name.endsWith(".md") ? await formatMarkdown(text) : text;
    const published = await Deno.readTextFile(`docs/${name}`).catch(() => "(missing)");
    if (published !== expected) {
      const lines = [published.split("\n"), expected.split("\n")];
      const at = lines[0].findIndex((line, i) => line !== lines[1][i]);
      throw new Error(
        `docs/${name} is not what its runs build (line ${at + 1}: "${lines[0][at]}" where "${
          lines[1][at]
        }" is built); run \`deno task experiment --report\``,
      );
    }
  }
});

/**
 * The side-by-side benchmark against PyTorch (bench/gpu/): its dry run end to end, the folder path
 * with a reference that is right and one that is wrong (which must fail before anything is timed),
 * the input hash both halves share, and the table's verdicts. With `.venv/bin/python` holding torch
 * and transformers, the PyTorch half runs on the CPU and our side is checked against it.
 */
import { array64 } from "../kernels/reference/array.ts";
import { matmul } from "../kernels/reference/matmul.ts";
import { writeSafetensors } from "../models/safetensors_file.ts";
import { compare, passes } from "../bench/gpu/check.ts";
import { hash32, streamInts, streamValues, workloads } from "../bench/gpu/inputs.ts";
import {
  markdownTable,
  met,
  profileTable,
  ratio,
  replaceResults,
  RESULT_MARKERS,
  type Row,
  verdictLine,
} from "../bench/gpu/report.ts";
import { assertBitwiseEqual } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function ours(...args: string[]): Promise<Result> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "bench/gpu/ours.ts", ...args],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: output.code, stdout: text.decode(output.stdout), stderr: text.decode(output.stderr) };
}

function expectExit(result: Result, code: number, what: string): void {
  if (result.code !== code) {
    throw new Error(`${what}: exit ${result.code}, expected ${code}\n${result.stdout}\n${result.stderr}`);
  }
}

Deno.test("the dry run checks and times every workload on the software adapter and prints the table", async () => {
  const result = await ours("--dry-run");
  expectExit(result, 0, "ours.ts --dry-run");
  const w = workloads("tiny");
  const ids = [
    ...w.matmul.map((m) => `matmul/${m.id}`),
    ...w.attention.cases.map((c) => `attention/${c.id}`),
    "layernorm",
    "chain",
    "optimizer",
    ...w.models.sizes.map((s) => `model/${s.id}`),
  ];
  for (const id of ids) {
    if (!result.stdout.includes(`ok   ${id}:`)) {
      throw new Error(`no passing check of ${id}:\n${result.stdout}`);
    }
  }
  const rows = [
    "| workload | ours | baseline | ours / baseline | target | met |",
    "| matmul square-64",
    "| attention fwd+bwd B2 H2 T24 D16 padded",
    "| LayerNorm fwd+bwd",
    "| gelu(x + bias) + residual",
    "AdamW only",
    "sharing + sync + adaptive every step",
    "| small: joint step vs our sequential",
    "| large: sequential (the three steps alone, summed)",
    "| small: bert over 3 batches at once (bound of fusing 3 models' ops)",
  ];
  for (const row of rows) {
    if (!result.stdout.includes(row)) throw new Error(`the table has no "${row}":\n${result.stdout}`);
  }
  if (result.stdout.includes("**no**") || result.stdout.includes("| yes |")) {
    throw new Error(`a dry run judged a target:\n${result.stdout}`);
  }
  // The profile: every measurement's GPU time by kernel (llvmpipe has timestamp queries).
  const profile = result.stdout.slice(result.stdout.indexOf("### Where the time goes"));
  const measured = [...ids.filter((id) => id !== "optimizer" && !id.startsWith("model/")), "optimizer/on"];
  for (const size of w.models.sizes) {
    measured.push(`model/${size.id}/joint`, `model/${size.id}/gpt2`, `model/${size.id}/bert-x3`);
  }
  for (const id of measured) {
    const row = profile.split("\n").find((line) => line.startsWith(`| ${id} |`));
    const cells = row?.split("|").map((cell) => cell.trim());
    // | id | wall | GPU kernels | busy | dispatches | largest kernels |
    if (!cells || !/ms$/.test(cells[3]) || !/%$/.test(cells[4]) || !/^[a-z]\w* \(/.test(cells[6])) {
      throw new Error(`no GPU profile of ${id}:\n${profile}`);
    }
  }
});

Deno.test("a run's JSON, written as it goes, gives its table again with --results (no GPU)", async () => {
  const folder = await Deno.makeTempDir({ dir: "/tmp" });
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      `--allow-write=${folder}`,
      "bench/gpu/ours.ts",
      "--dry-run",
      "--only",
      "chain",
      "--json",
      `${folder}/results.json`,
    ],
    cwd: root,
    stdout: "null",
    stderr: "null",
  }).output();
  if (output.code !== 0) throw new Error(`dry run with --json: exit ${output.code}`);
  const rebuilt = await ours("--results", `${folder}/results.json`);
  expectExit(rebuilt, 0, "ours.ts --results");
  for (
    const needed of [
      "Rebuilt from the run's results.json",
      "| gelu(x + bias) + residual",
      "### Where the time goes",
    ]
  ) {
    if (!rebuilt.stdout.includes(needed)) {
      throw new Error(`--results printed no "${needed}":\n${rebuilt.stdout}`);
    }
  }
  await Deno.remove(folder, { recursive: true });
});

Deno.test("the profile table gives GPU time, its share of the wall time and the largest kernels per repetition", () => {
  const base = { reps: 8, trials: [2], dispatches: 5 };
  const table = profileTable([
    {
      ...base,
      id: "optimizer/on",
      ms: 2,
      gpu: {
        ms: 1.5,
        reps: 2,
        kernels: [
          { name: "mm_adamw", dispatches: 1, ms: 0.9 },
          { name: "mm_mix_vec4", dispatches: 2, ms: 0.3 },
          { name: "mm_tile_norms_tree", dispatches: 2, ms: 0.15 },
          { name: "mm_plan", dispatches: 2, ms: 0.1 },
          { name: "mm_log_losses", dispatches: 1, ms: 0.05 },
        ],
      },
    },
    { ...base, id: "chain", ms: 0.25, gpu: null },
  ]).split("\n");
  const expected = [
    "| optimizer/on | 2.00 ms | 1.50 ms | 75% | 5 | mm_adamw (1, 60%), mm_mix_vec4 (2, 20%), mm_tile_norms_tree (2, 10%), mm_plan (2, 7%) |",
    "| chain | 0.250 ms | — | — | 5 | — (no timestamp queries) |",
  ];
  for (const [i, line] of expected.entries()) {
    if (table[2 + i] !== line) throw new Error(`row ${i}: ${table[2 + i]}\nexpected ${line}`);
  }
});

/**
 * A folder as torch_side.py writes it, holding only the tiny square-64 product with output `c`;
 * `failed` lists workloads that failed on PyTorch's side.
 */
async function productFolder(
  c: Float32Array | Float64Array,
  failed: Record<string, string> = {},
): Promise<string> {
  const folder = await Deno.makeTempDir({ prefix: "bench-gpu-test-" });
  const record = {
    size: "tiny",
    device: "cpu",
    card: "test",
    driver: "-",
    torch: "-",
    transformers: "-",
    optimizer: "-",
    date: "-",
    timings: { "matmul/square-64": { ms: 1 } },
    failed,
  };
  await Deno.writeTextFile(`${folder}/torch.json`, JSON.stringify(record));
  await writeSafetensors(`${folder}/matmul-square-64.safetensors`, {
    c: { shape: [64, 64], data: Float32Array.from(c) },
  });
  return folder;
}

function expectedProduct(): Float64Array {
  const a = array64([64, 64], streamValues("matmul.a", 64 * 64));
  const b = array64([64, 64], streamValues("matmul.b", 64 * 64));
  return matmul(a, b).data;
}

Deno.test("a folder's reference is checked and the workload timed against its PyTorch time", async () => {
  const folder = await productFolder(expectedProduct());
  try {
    const result = await ours(folder, "--only", "matmul/square-64");
    expectExit(result, 0, "ours.ts with a right reference");
    if (!/\| matmul square-64: .* \| PyTorch a @ b \(TF32 off\): 1\.00 ms/.test(result.stdout)) {
      throw new Error(`no row against PyTorch's 1 ms:\n${result.stdout}`);
    }
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("a reference that disagrees fails the run, naming workload, tensor and element, before timing", async () => {
  const wrong = expectedProduct();
  wrong[64 * 17 + 5] += 1;
  const folder = await productFolder(wrong);
  try {
    const result = await ours(folder, "--only", "matmul/square-64");
    expectExit(result, 1, "ours.ts with a wrong reference");
    if (
      !result.stderr.includes("check failed: matmul/square-64: c: error") ||
      !result.stderr.includes("element 1093")
    ) {
      throw new Error(`the failure does not name the workload, tensor and element:\n${result.stderr}`);
    }
    if (result.stdout.includes("timed ")) throw new Error(`a failed check was timed:\n${result.stdout}`);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("workloads whose check failed are not timed, the others are, and the run exits 1", async () => {
  // square-64 has a right reference, square-96 none, linear-70x48x40 failed on PyTorch's side.
  const folder = await productFolder(expectedProduct(), { "matmul/linear-70x48x40": "RuntimeError: test" });
  try {
    const result = await ours(folder, "--only", "matmul");
    expectExit(result, 1, "ours.ts with one right reference of three");
    const timed = result.stdout.split("\n").filter((line) => line.startsWith("timed "));
    if (timed.length !== 1 || !timed[0].startsWith("timed matmul/square-64:")) {
      throw new Error(`only square-64 should be timed:\n${result.stdout}`);
    }
    for (const id of ["square-96", "linear-70x48x40"]) {
      if (
        !new RegExp(`\\| matmul ${id}: [^|]*\\| \\*\\*failed, not timed\\*\\* \\|`).test(result.stdout)
      ) {
        throw new Error(`the table does not mark ${id} as failed:\n${result.stdout}`);
      }
    }
    if (!/\| matmul square-64: .* \| PyTorch a @ b \(TF32 off\): 1\.00 ms/.test(result.stdout)) {
      throw new Error(`no row for square-64 against PyTorch's 1 ms:\n${result.stdout}`);
    }
    if (
      !result.stdout.includes(
        "2 workload(s) failed (their check, PyTorch's side or their timing) and have no time",
      )
    ) {
      throw new Error(`the header does not say what was not timed:\n${result.stdout}`);
    }
    for (
      const expected of ["matmul-square-96.safetensors", "PyTorch's side failed, so there is no reference"]
    ) {
      if (!result.stderr.includes(expected)) throw new Error(`stderr lacks "${expected}":\n${result.stderr}`);
    }
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("a missing reference file or a bad flag is an error, not a pass", async () => {
  const folder = await productFolder(expectedProduct());
  try {
    const missing = await ours(folder, "--only", "layernorm");
    expectExit(missing, 1, "ours.ts without layernorm.safetensors");
    if (!missing.stderr.includes("layernorm.safetensors")) throw new Error(missing.stderr);
    expectExit(await ours(folder, "--only", "nothing-matches"), 2, "ours.ts --only nothing-matches");
    expectExit(await ours("--dry-run", folder), 2, "ours.ts --dry-run with a folder");
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("the input hash matches torch_side.py's (values pinned from PyTorch 2.13)", () => {
  assertBitwiseEqual([0, 1, 12345, 99999999].map((i) => hash32(i, 7)), [
    2834455371,
    888469281,
    1296396589,
    1295107298,
  ], "hash32");
  assertBitwiseEqual(
    streamValues("optimizer.g1", 4, 99999996),
    Float32Array.of(
      -0.0075382874347269535,
      0.009672751650214195,
      0.010144300758838654,
      -0.012267770245671272,
    ),
    "optimizer.g1",
  );
  assertBitwiseEqual(
    streamValues("layernorm.x", 3),
    Float32Array.of(1.6397923231124878, -0.17254850268363953, 1.1443370580673218),
    "layernorm.x",
  );
  assertBitwiseEqual(streamInts("model.ids", 5, 2, 8192), [266, 6676, 7598, 5692, 6855], "model.ids");
});

Deno.test("comparisons scale by the expected maximum and never pass a NaN or a length mismatch", () => {
  const ok = compare("w", "t", [1, 2.0001], [1, 2], 1e-4);
  if (!passes(ok) || Math.abs(ok.error - 5e-5) > 1e-9) throw new Error(JSON.stringify(ok));
  if (passes(compare("w", "t", [1, NaN], [1, 2], 1))) throw new Error("NaN passed");
  if (passes(compare("w", "t", [1], [1, 2], 1))) throw new Error("a length mismatch passed");
  const floored = compare("w", "t", [1e-6], [0], 1e-3, 1e-2);
  if (!passes(floored)) throw new Error(`the floor was not applied: ${JSON.stringify(floored)}`);
});

Deno.test("rows judge time ratios from above, rate ratios from below, failed rows are not judged, and the doc's results are replaced", () => {
  const time: Row = {
    label: "a",
    ours: 3,
    baseline: 2,
    baselineLabel: "b",
    terms: "time",
    target: { bound: 1.5 },
  };
  const rate: Row = {
    label: "r",
    ours: 4,
    baseline: 2,
    baselineLabel: "b",
    terms: "rate",
    target: { bound: 0.6 },
  };
  if (ratio(time) !== 1.5 || met(time) !== true) throw new Error(`time row: ${ratio(time)} ${met(time)}`);
  if (ratio(rate) !== 0.5 || met(rate) !== false) throw new Error(`rate row: ${ratio(rate)} ${met(rate)}`);
  const table = markdownTable([time, rate], true);
  if (
    !table.includes("| 1.50x time | time ≤ 1.50x | yes |") ||
    !table.includes("| 0.50x rate | rate ≥ 0.60x | **no** |")
  ) {
    throw new Error(table);
  }
  const failed: Row = { ...time, ours: null, failed: true };
  const verdicts = [
    verdictLine([time, rate], true),
    verdictLine([time, rate, failed], true),
    verdictLine([time, rate, failed], false),
  ];
  if (
    verdicts[0] !== "Targets met: 1 of 2." ||
    verdicts[1] !== "Targets met: 1 of 2; 1 more with a target failed and are not judged." ||
    !verdicts[2].includes("no target is judged")
  ) {
    throw new Error(verdicts.join("\n"));
  }
  if (
    !markdownTable([failed], true).includes(
      "| a | **failed, not timed** | b: 2.00 ms | — | time ≤ 1.50x | — |",
    )
  ) {
    throw new Error(markdownTable([failed], true));
  }
  const doc = `# T\n\n${RESULT_MARKERS[0]}\nold\n${RESULT_MARKERS[1]}\n\ntail\n`;
  const replaced = replaceResults(doc, "new", "doc.md");
  if (replaced !== `# T\n\n${RESULT_MARKERS[0]}\n\nnew\n\n${RESULT_MARKERS[1]}\n\ntail\n`) {
    throw new Error(replaced);
  }
});

const python = `${root}.venv/bin/python`;
// Spawning a missing program rejects in a way the test runner reports as uncaught: look first.
const hasPython = await Deno.stat(python).then(() => true, () => false);
const hasTorch = hasPython &&
  (await new Deno.Command(python, {
    args: ["-c", "import torch, transformers, safetensors"],
    stdout: "null",
    stderr: "null",
  }).output()).success;

Deno.test({
  name: "with torch on the CPU: the PyTorch half's tiny references pass our check (skipped without .venv)",
  ignore: !hasTorch,
  async fn() {
    const folder = await Deno.makeTempDir({ prefix: "bench-gpu-torch-" });
    try {
      const torchSide = await new Deno.Command(python, {
        args: ["bench/gpu/torch_side.py", "--out", folder, "--size", "tiny", "--device", "cpu"],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!torchSide.success) throw new Error(new TextDecoder().decode(torchSide.stderr));
      const result = await ours(folder);
      expectExit(result, 0, "ours.ts against PyTorch on the CPU");
      if (!result.stdout.includes("| large: joint step vs PyTorch sequential |")) {
        throw new Error(result.stdout);
      }
    } finally {
      await Deno.remove(folder, { recursive: true });
    }
  },
});

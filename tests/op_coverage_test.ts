/**
 * Every op mod.ts exports from kernels/ has a float64 reference, a test that compares against it and a
 * bench that times it: the table below names the three files of each op, and is itself checked against
 * mod.ts, so a new op without a row, or a row for an op that is gone, fails here.
 */
import * as core from "../mod.ts";

const root = new URL("../", import.meta.url);

/** The files of an op: its float64 reference, the test comparing against it, the bench timing it. */
interface OpFiles {
  /** kernels/reference/<file>: the float64 reference the test imports. */
  reference: string;
  /** tests/<file>: uses the op and imports the reference. */
  test: string;
  /** bench/<file>: uses the op. */
  bench: string;
}

const elementwise: OpFiles = {
  reference: "elementwise.ts",
  test: "elementwise_test.ts",
  bench: "elementwise_bench.ts",
};

const OPS: Record<string, OpFiles> = {
  add: elementwise,
  sub: elementwise,
  mul: elementwise,
  div: elementwise,
  scale: elementwise,
  neg: elementwise,
  exp: elementwise,
  log: elementwise,
  sqrt: elementwise,
  tanh: elementwise,
  sigmoid: elementwise,
  relu: elementwise,
  gelu: elementwise,
  fused: elementwise,
  sum: { reference: "array.ts", test: "reduce_test.ts", bench: "reduce_bench.ts" },
  mean: { reference: "array.ts", test: "reduce_test.ts", bench: "reduce_bench.ts" },
  matmul: { reference: "matmul.ts", test: "matmul_test.ts", bench: "matmul_bench.ts" },
  linear: { reference: "matmul.ts", test: "matmul_test.ts", bench: "matmul_bench.ts" },
  attention: { reference: "attention.ts", test: "attention_test.ts", bench: "attention_bench.ts" },
  fusedQkvAttention: { reference: "attention.ts", test: "attention_test.ts", bench: "attention_bench.ts" },
  layerNorm: { reference: "layernorm.ts", test: "layernorm_test.ts", bench: "layernorm_bench.ts" },
  rmsNorm: { reference: "rmsnorm.ts", test: "rmsnorm_test.ts", bench: "rmsnorm_bench.ts" },
  softmax: { reference: "softmax.ts", test: "softmax_test.ts", bench: "softmax_bench.ts" },
  logSoftmax: { reference: "softmax.ts", test: "softmax_test.ts", bench: "softmax_bench.ts" },
  gatherRows: { reference: "embedding.ts", test: "embedding_test.ts", bench: "embedding_bench.ts" },
  crossEntropy: {
    reference: "cross_entropy.ts",
    test: "cross_entropy_test.ts",
    bench: "cross_entropy_bench.ts",
  },
  softCrossEntropy: {
    reference: "cross_entropy.ts",
    test: "cross_entropy_test.ts",
    bench: "cross_entropy_bench.ts",
  },
  dropout: { reference: "dropout.ts", test: "dropout_test.ts", bench: "dropout_bench.ts" },
  concat: { reference: "layout.ts", test: "layout_test.ts", bench: "layout_bench.ts" },
  narrow: { reference: "layout.ts", test: "layout_test.ts", bench: "layout_bench.ts" },
  permute: { reference: "layout.ts", test: "layout_test.ts", bench: "layout_bench.ts" },
  transpose: { reference: "layout.ts", test: "layout_test.ts", bench: "layout_bench.ts" },
  mutualDistillation: {
    reference: "distillation.ts",
    test: "distillation_test.ts",
    bench: "distillation_bench.ts",
  },
};

/** The functions mod.ts re-exports from kernels/ (classes such as Expr are not ops). */
async function exportedOps(): Promise<string[]> {
  const source = await Deno.readTextFile(new URL("mod.ts", root));
  const names: string[] = [];
  for (const [, list] of source.matchAll(/export \{([^}]*)\} from "\.\/kernels\/[^"]+"/g)) {
    for (const item of list.split(",").map((s) => s.trim()).filter((s) => s && !s.startsWith("type "))) {
      const value = (core as Record<string, unknown>)[item];
      if (typeof value === "function" && !/^class\b/.test(Function.prototype.toString.call(value))) {
        names.push(item);
      }
    }
  }
  return names.sort();
}

const read = (path: string) => Deno.readTextFile(new URL(path, root)).catch(() => null);
/** Whether code uses `op` (calls it or passes it on) outside its import statements. */
const uses = (text: string, op: string) =>
  new RegExp(`(^|[^\\w$"'.])${op}([^\\w$"']|$)`, "m").test(text.replace(/^import[^;]*;/gm, ""));

Deno.test("the table names exactly the ops mod.ts exports from kernels/", async () => {
  const exported = await exportedOps();
  const missing = exported.filter((op) => !(op in OPS));
  const stale = Object.keys(OPS).filter((op) => !exported.includes(op));
  if (missing.length > 0 || stale.length > 0) {
    throw new Error(
      `ops without a row (add their reference, test and bench): ${missing.join(", ") || "none"}; ` +
        `rows for ops mod.ts does not export: ${stale.join(", ") || "none"}`,
    );
  }
});

Deno.test("every op has a float64 reference, a test that imports it and uses the op, and a bench", async () => {
  const problems: string[] = [];
  for (const [op, files] of Object.entries(OPS)) {
    const reference = `kernels/reference/${files.reference}`;
    if (await read(reference) === null) problems.push(`${op}: no ${reference}`);
    const test = await read(`tests/${files.test}`);
    if (test === null) problems.push(`${op}: no tests/${files.test}`);
    else {
      if (!test.includes(`/reference/${files.reference}"`)) {
        problems.push(`${op}: tests/${files.test} does not import ${reference}`);
      }
      if (!uses(test, op)) problems.push(`${op}: tests/${files.test} never uses ${op}()`);
    }
    const bench = await read(`bench/${files.bench}`);
    if (bench === null) problems.push(`${op}: no bench/${files.bench}`);
    else if (!uses(bench, op)) problems.push(`${op}: bench/${files.bench} never uses ${op}()`);
  }
  if (problems.length > 0) throw new Error(problems.join("\n"));
});

/**
 * `decayBiasesAndNorms: false` exempts from weight decay exactly what Hugging Face's `Trainer`
 * exempts: for every head folder, the parameters we decay are the names transformers' own
 * `get_decay_parameter_names` lists in tests/fixtures/hf/heads/decay_names.json (written by
 * generate_hf.py). The optimizer's kernel against the float64 reference is in optimizer_test.ts.
 */
import { loadPretrained } from "../models/pretrained.ts";
import { isBiasOrNorm } from "../optim/placement.ts";
import { setup } from "./helpers.ts";

await setup();

const HEADS = new URL("./fixtures/hf/heads/", import.meta.url).pathname;
const DECAYED = JSON.parse(await Deno.readTextFile(`${HEADS}decay_names.json`)) as Record<string, string[]>;

Deno.test("the decayed parameters of every head are those Hugging Face's Trainer decays", async () => {
  if (Object.keys(DECAYED).length !== 20) throw new Error(`${Object.keys(DECAYED).length} folders`);
  for (const [folder, names] of Object.entries(DECAYED)) {
    const model = await loadPretrained(`${HEADS}${folder}`);
    const ours = model.parameters.filter((p) => !isBiasOrNorm(p.info)).map((p) => p.info.name);
    const exempt = model.parameters.filter((p) => isBiasOrNorm(p.info)).map((p) => p.info.name);
    model.dispose();
    // Hugging Face lists a tied output weight under its own name too; we hold that tensor once.
    const theirs = names.filter((name) =>
      !/^(cls\.predictions\.decoder|lm_head\.decoder|lm_head)\.weight$/.test(name)
    );
    if ([...ours].sort().join() !== [...theirs].sort().join()) {
      throw new Error(`${folder}: we decay [${ours}], Hugging Face [${theirs}]`);
    }
    if (exempt.length === 0) throw new Error(`${folder}: nothing exempt`);
  }
});

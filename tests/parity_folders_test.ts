/**
 * `deno task parity` checks each folder on its own: a folder that cannot be loaded or run becomes
 * its own failing JSON line, and the folders after it are still checked.
 */
const FIXTURES = new URL("./fixtures/hf/", import.meta.url).pathname;

async function copyFolder(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
  }
}

Deno.test("an error in one folder is that folder's failing line; the others are still checked", async () => {
  const root = await Deno.makeTempDir({ dir: "/tmp", prefix: "parity-" });
  // Checked in name order: the broken folders come before the good ones.
  await copyFolder(`${FIXTURES}heads/gpt2-base`, `${root}/a-broken-config`);
  await Deno.writeTextFile(`${root}/a-broken-config/config.json`, "{");
  await copyFolder(`${FIXTURES}heads/gpt2-base`, `${root}/b-no-io`);
  await Deno.remove(`${root}/b-no-io/io.safetensors`);
  await copyFolder(`${FIXTURES}adamw`, `${root}/c-adamw-without-trajectory`);
  await Deno.writeTextFile(`${root}/c-adamw-without-trajectory/cases.json`, '{"z": {}}');
  await copyFolder(`${FIXTURES}heads/gpt2-base`, `${root}/d-good`);
  await copyFolder(`${FIXTURES}adamw`, `${root}/e-adamw`);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-env",
      new URL("../tools/parity.ts", import.meta.url).pathname,
      root,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(root, { recursive: true });
  const lines = new TextDecoder().decode(output.stdout).trimEnd().split("\n").map((l) => JSON.parse(l));
  const summary = lines.map((l) => `${l.folder.slice(root.length + 1)} ${l.pass}`).join(", ");
  const expected =
    "a-broken-config false, b-no-io false, c-adamw-without-trajectory false, d-good true, e-adamw true";
  if (output.code !== 1 || summary !== expected) {
    throw new Error(`exit ${output.code}: ${summary}\n${new TextDecoder().decode(output.stderr)}`);
  }
  const errors = lines.slice(0, 3).map((l) => l.error as string);
  const fragments = [
    "config.json: the configuration is not valid JSON",
    "b-no-io: not a reference folder: it lacks io.safetensors",
    "no z_p1",
  ];
  fragments.forEach((fragment, i) => {
    if (!errors[i]?.includes(fragment)) throw new Error(`line ${i + 1}: "${fragment}" not in ${errors[i]}`);
  });
});

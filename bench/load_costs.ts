/**
 * What one statement costs on the adapter, for choosing kernel shapes on software adapters:
 *
 *     deno run --allow-read --allow-env bench/load_costs.ts
 *
 * Each probe is a kernel of 2048 workgroups of 8 invocations (one 8-lane SIMD batch of llvmpipe)
 * whose invocations run a loop of 1024 iterations of one statement; the printed figure is the
 * time of one iteration of one workgroup in nanoseconds of one core (wall time per iteration times
 * the number of workers, `LP_NUM_THREADS` or the CPU count), as the slope between 4 and 8
 * dispatches, the median of five. The loop's own cost is the `loop` probe; loads read a vec4 (or four
 * floats) at an index that is the same in every lane ("same") or differs ("lanes").
 *
 * @module
 */
import { openGpuOrExit } from "../engine/start.ts";

const GROUPS = 2048, ITERATIONS = 1024;

/** The statement of each probe, run once per iteration with `j` the iteration and `lid` the lane. */
const PROBES: Record<string, string> = {
  loop: "acc += vec4f(f32(j));",
  "4 dependent vec4 FMAs":
    "acc = fma(acc, vec4f(1.0001), vec4f(0.5)); acc2 = fma(acc2, vec4f(1.0001), acc); " +
    "acc3 = fma(acc3, vec4f(0.999), acc2); acc4 = fma(acc4, vec4f(0.9999), acc3);",
  "exp": "acc.x += 1e-9 * exp(acc.x - f32(j) * 1e-6);",
  "texel load, same": "acc += textureLoad(t, vec2u(j & 4095u, 0u), 0);",
  "texel load, lanes": "acc += textureLoad(t, vec2u((j + lid * 64u) & 4095u, 0u), 0);",
  "storage vec4 load, same": "acc += s[j & 4095u];",
  "storage vec4 load, lanes": "acc += s[(j + lid * 64u) & 4095u];",
  "storage 4 f32 loads, lanes":
    "let i = ((j + lid * 64u) & 4095u) * 4u; acc += vec4f(f[i], f[i + 1u], f[i + 2u], f[i + 3u]);",
  "workgroup vec4 load, lanes": "acc += w[(j + lid * 8u) & 255u];",
  "uniform vec4 load, same": "acc += u[j & 4095u];",
};

const { device } = await openGpuOrExit();
const workers = Number(Deno.env.get("LP_NUM_THREADS") ?? navigator.hardwareConcurrency);
const usage = GPUBufferUsage.STORAGE;
const output = device.createBuffer({ size: GROUPS * 8 * 16, usage });
const storage = device.createBuffer({ size: 4096 * 16, usage });
const uniforms = device.createBuffer({
  size: 4096 * 16,
  usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
});
device.queue.writeBuffer(uniforms, 0, new Uint32Array([ITERATIONS]));
const texture = device.createTexture({
  size: [4096, 1],
  format: "rgba32float",
  usage: GPUTextureUsage.TEXTURE_BINDING,
});

console.log(`ns of one core per iteration of an 8-invocation workgroup (${workers} workers):`);
for (const [name, statement] of Object.entries(PROBES)) {
  // Every binding is read after the loop, so that none is optimised away; the trip count is read
  // from the uniform buffer, so that the loop cannot be folded at compile time.
  const code = `
@group(0) @binding(0) var<storage, read_write> o: array<vec4f>;
@group(0) @binding(1) var t: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> s: array<vec4f>;
@group(0) @binding(3) var<uniform> u: array<vec4f, 4096>;
@group(0) @binding(4) var<storage, read> f: array<f32>;
var<workgroup> w: array<vec4f, 256>;
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  var acc = vec4f(f32(lid));
  var acc2 = acc;
  var acc3 = acc;
  var acc4 = acc;
  let iterations = bitcast<u32>(u[0].x);
  for (var j = 0u; j < iterations; j++) { ${statement} }
  o[wid.x * 8u + lid] = acc + acc2 + acc3 + acc4 + textureLoad(t, vec2u(lid, 0u), 0) + s[lid] + w[lid] + f[lid];
}`;
  device.pushErrorScope("validation");
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: output } },
      { binding: 1, resource: texture.createView() },
      { binding: 2, resource: { buffer: storage } },
      { binding: 3, resource: { buffer: uniforms } },
      { binding: 4, resource: { buffer: storage } },
    ],
  });
  // A probe that does not compile would time nothing and print a plausible figure: stop instead.
  const error = await device.popErrorScope();
  if (error) throw new Error(`bench/load_costs.ts: probe "${name}": ${error.message}`);
  const run = async (dispatches: number) => {
    const start = performance.now();
    const encoder = device.createCommandEncoder();
    for (let i = 0; i < dispatches; i++) {
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(GROUPS);
      pass.end();
    }
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - start;
  };
  await run(1);
  const slopes: number[] = [];
  for (let trial = 0; trial < 5; trial++) slopes.push((await run(8) - await run(4)) / 4);
  const ms = slopes.sort((a, b) => a - b)[2];
  console.log(`  ${name.padEnd(28)} ${(ms * 1e6 * workers / (GROUPS * ITERATIONS)).toFixed(1).padStart(6)}`);
}

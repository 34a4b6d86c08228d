import { gpu } from "../engine/device.ts";
import { type Tensor, tensor, tidy } from "../engine/tensor.ts";
import { Random } from "../engine/random.ts";
import { attention, fusedQkvAttention } from "../kernels/attention.ts";
import { benchGpu } from "./harness.ts";

/**
 * Forward + backward of attention at B, H, T, D; FLOPs counted as 4*B*H*T*T*D forward and 2.5
 * times that backward, halved under the causal mask (the PyTorch H100 figures use the same shapes).
 */
function attentionCase(
  batch: number,
  heads: number,
  tokens: number,
  dim: number,
  causal: boolean,
  reps: number,
) {
  const shape = [batch, heads, tokens, dim];
  const size = batch * heads * tokens * dim;
  let q: Tensor, k: Tensor, v: Tensor, g: Tensor;
  benchGpu({
    name: `attention fwd+bwd B${batch} H${heads} T${tokens} D${dim}${causal ? " causal" : ""}`,
    group: "attention",
    flops: 3.5 * 4 * batch * heads * tokens * tokens * dim / (causal ? 2 : 1),
    reps,
    numpy: `attention ${batch} ${heads} ${tokens} ${dim} ${causal ? "causal" : "full"}`,
    setup() {
      const random = new Random(1);
      [q, k, v] = [0, 1, 2].map(() => tensor(random.normals(size), { shape, requiresGrad: true }));
      g = tensor(random.normals(size), { shape });
    },
    run() {
      tidy(() => attention(q, k, v, { causal }).backward(g));
      for (const t of [q, k, v]) {
        t.grad?.dispose();
        t.grad = null;
      }
    },
  });
}

// The performance issue's shapes: batch 8, 12 heads, head dimension 64. On llvmpipe one repetition at T 512
// takes seconds, so B is cut to 2 there; T 128 keeps batch 8 (about 0.1 s).
const software = gpu().profile.isSoftware;
const big = software ? 2 : 8;
attentionCase(2, 4, 12, 8, false, software ? 5 : 50);
attentionCase(8, 12, 128, 64, false, software ? 1 : 20);
attentionCase(big, 12, 512, 64, false, software ? 1 : 10);
attentionCase(big, 12, 512, 64, true, software ? 1 : 10);

/** GPT-2's layout: attention straight from the fused QKV projection [B, T, 3*H*D], causal, forward + backward. */
const [B, T, H, D] = [2, 128, 4, 32];
let qkv: Tensor, upstream: Tensor;
benchGpu({
  name: `fusedQkvAttention fwd+bwd B${B} H${H} T${T} D${D} causal`,
  group: "attention",
  flops: 3.5 * 4 * B * H * T * T * D / 2,
  reps: software ? 2 : 20,
  setup() {
    const random = new Random(2);
    qkv = tensor(random.normals(B * T * 3 * H * D), { shape: [B, T, 3 * H * D], requiresGrad: true });
    upstream = tensor(random.normals(B * T * H * D), { shape: [B, T, H * D] });
  },
  run() {
    tidy(() => fusedQkvAttention(qkv, H, { causal: true }).backward(upstream));
    qkv.grad?.dispose();
    qkv.grad = null;
  },
});

"""PyTorch peer of bench/gpu/check.ts: the same cases (bench/gpu/cases.json) timed in PyTorch.

    python3 bench/peers/clip_torch.py --cases bench/gpu/cases.json --mode full|rehearsal --out FILE

The model is CLIP's ViT architecture as OpenAI's clip/model.py defines it (pre-norm residual
blocks with QuickGELU, a causal text transformer read at the end-of-text token, projections
without bias), written here from that description, with random weights of the same shapes:
timings do not depend on the values. Each row is timed in fp32 with TF32 off and in fp16
autocast (on CUDA), with the same names as clipkit's rows so that check.ts can put them side by
side. The training steps do the towers' work each method's step does:
  coop    text tower forward + backward over C prompts (image features cached)
  cocoop  image tower forward (no grad) + text tower forward + backward over B·C prompts
  maple   image tower and text tower forward + backward (prompts in both towers)
  gopro   three views: image tower forward (no grad) + text forward + backward over 3·B·C prompts
Never needed by the tests; run where PyTorch is installed (the GPU machine has it).
"""

import argparse
import json
import os
import time

import torch
from torch import nn

OOM = getattr(torch, "OutOfMemoryError", RuntimeError)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads, causal_len=None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))
        mask = None
        if causal_len:
            mask = torch.full((causal_len, causal_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask)[0]
        return x + self.mlp(self.ln_2(x))


class Clip(nn.Module):
    def __init__(self, c):
        super().__init__()
        V, W, P, R = c["visionWidth"], c["transformerWidth"], c["visionPatchSize"], c["imageResolution"]
        g = R // P
        self.conv1 = nn.Conv2d(3, V, P, P, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(V) * V**-0.5)
        self.vpos = nn.Parameter(torch.randn(g * g + 1, V) * V**-0.5)
        self.ln_pre, self.ln_post = nn.LayerNorm(V), nn.LayerNorm(V)
        self.vblocks = nn.Sequential(*[Block(V, c["visionHeads"]) for _ in range(c["visionLayers"])])
        self.proj = nn.Parameter(torch.randn(V, c["embedDim"]) * V**-0.5)
        L = c["contextLength"]
        self.token_embedding = nn.Embedding(c["vocabSize"], W)
        self.tpos = nn.Parameter(torch.randn(L, W) * 0.01)
        self.tblocks = nn.Sequential(*[Block(W, c["transformerHeads"], L) for _ in range(c["transformerLayers"])])
        self.ln_final = nn.LayerNorm(W)
        self.text_projection = nn.Parameter(torch.randn(W, c["embedDim"]) * W**-0.5)
        for p in self.parameters():
            p.requires_grad_(False)

    def encode_image(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.vpos)
        return self.ln_post(self.vblocks(x)[:, 0]) @ self.proj

    def encode_embeddings(self, x, eot):
        x = self.ln_final(self.tblocks(x + self.tpos))
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    cases = json.load(open(a.cases))[a.mode]
    c = cases["config"]
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)  # some builds start with one thread
    torch.manual_seed(0)
    model = Clip(c).to(dev).eval()
    reps = cases.get("reps", 3 if cases["arch"] else 1)
    warm = cases.get("warmup", True)
    R, L, W = c["imageResolution"], c["contextLength"], c["transformerWidth"]
    rows = []

    def timed(name, fn, mode, n=reps, per=None, unit=None):
        if warm:
            fn()  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if cuda:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000 / n
        row = {"name": name, "mode": mode, "ms": ms}
        if per:
            row.update(value=1000 * per / ms, unit=unit)
        if cuda:
            row["peakMiB"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
        print(f"torch {mode:5} {name:44} {ms:10.1f} ms", flush=True)

    def text_step(n, grad=True):
        x = torch.randn(n, L, W, device=dev, requires_grad=grad)
        eot = torch.full((n,), 4, device=dev)
        f = model.encode_embeddings(x, eot)
        if grad:
            f.float().square().sum().backward()

    for mode in ["fp32", "fp16"] if cuda else ["fp32"]:
        ac = torch.autocast("cuda", dtype=torch.float16, enabled=mode == "fp16") if cuda else torch.autocast("cpu", enabled=False)
        with ac:
            for M, K, N in cases["matmul"]:
                A, B = torch.randn(M, K, device=dev), torch.randn(K, N, device=dev)
                timed(f"matmul {M}x{K}x{N}", lambda: A @ B, mode, n=10)
                rows[-1].update(value=2 * M * K * N / rows[-1]["ms"] / 1e6, unit="GFLOP/s")
            with torch.no_grad():
                for b in cases["imageBatches"]:
                    px = torch.randn(b, 3, R, R, device=dev)
                    timed(f"image encode batch {b}", lambda: model.encode_image(px), mode, per=b, unit="images/s")
                for n in cases["prompts"]:
                    timed(f"text encode {n} prompts", lambda: text_step(n, grad=False), mode, per=n, unit="prompts/s")
            for method, B in cases["batch"].items():
                for C in cases["classes"]:
                    px = torch.randn(B, 3, R, R, device=dev)

                    def step():
                        if method == "coop":
                            text_step(C)
                        elif method == "cocoop":
                            with torch.no_grad():
                                model.encode_image(px)
                            text_step(B * C)
                        elif method == "maple":
                            p = px.clone().requires_grad_(True)
                            model.encode_image(p).float().square().sum().backward()
                            text_step(C)
                        else:  # gopro
                            with torch.no_grad():
                                for _ in range(3):
                                    model.encode_image(px)
                            text_step(3 * B * C)

                    name = f"{method} step {C} classes batch {B}"
                    try:
                        timed(name, step, mode, per=B, unit="images/s")
                    except OOM as e:
                        rows.append({"name": name, "mode": mode, "error": f"out of memory: {str(e)[:80]}"})
                        torch.cuda.empty_cache()
    blas = "" if cuda else next((l.split("BLAS_INFO=")[1].split(",")[0] for l in torch.__config__.show().split("\n") if "BLAS_INFO=" in l), "?")
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads, build BLAS_INFO {blas} (the system libblas)"
    json.dump({"device": f"PyTorch {torch.__version__} on {device}", "rows": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()

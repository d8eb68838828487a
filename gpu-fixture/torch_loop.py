"""The PyTorch workload of `cargo xtask gpu-check`: a GPT-2-sized decoder (12 layers, 768 wide,
random weights: nothing is downloaded) generating tokens one at a time on the GPU, in half
precision, over a sliding 64-token context. Each token is read back to the host (`.item()`), as
a serving loop does.

Prints `tokens_per_s X` at the end. `--ready-file F` creates F once warmed up (for a live
attach). `--profile` runs a torch.profiler trace (CPU and CUDA) over three seconds in the
middle and prints `profiler_gpu_events N`: how many GPU events torch.profiler itself got."""
import argparse
import time

import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=15.0)
p.add_argument("--ready-file")
p.add_argument("--profile", action="store_true")
args = p.parse_args()

D, LAYERS, HEADS, VOCAB, CONTEXT = 768, 12, 12, 50257, 64


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D)
        self.positions = nn.Embedding(CONTEXT, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, -1]))


torch.manual_seed(0)
model = Decoder().cuda().half().eval()
ids = torch.randint(0, VOCAB, (1, CONTEXT), device="cuda")


def step(ids):
    with torch.no_grad():
        nxt = model(ids).argmax(-1, keepdim=True)
    nxt.item()  # to the host, as a server streams each token
    return torch.cat([ids[:, 1:], nxt], dim=1)


for _ in range(20):  # warm-up: cuBLAS handles, kernels loaded
    ids = step(ids)
torch.cuda.synchronize()
if args.ready_file:
    open(args.ready_file, "w").close()

tokens = 0
start = time.perf_counter()
profiled = None
while time.perf_counter() - start < args.seconds:
    elapsed = time.perf_counter() - start
    if args.profile and profiled is None and elapsed > args.seconds / 3:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 3.0:
                ids = step(ids)
                tokens += 1
        profiled = sum(
            1 for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")
        )
        continue
    ids = step(ids)
    tokens += 1
took = time.perf_counter() - start
if profiled is not None:
    print("profiler_gpu_events", profiled, flush=True)
print("tokens_per_s", round(tokens / took, 2), flush=True)

"""Train and export the small Fashion-MNIST networks that ship with lintwin.

Two architecture families, as in the paper's Inception/ResNet comparison:
- ``fmnist-resnet``: residual blocks with identity shortcuts, 128-dim pooled features;
- ``fmnist-inception``: Inception-style modules (parallel 1x1 / 3x3 / double-3x3 / pool
  branches, concatenated), 160-dim pooled features;

and four more for many-network studies (``lintwin study``), as in the follow-up paper:
- ``fmnist-vgg``: plain stacked 3x3 convolutions and max pooling, 96-dim pooled features;
- ``fmnist-mobilenet``: depthwise-separable convolutions (MobileNet v1 style), 128-dim;
- ``fmnist-mlp``: no convolutions at all, two hidden layers, 64-dim features;
- ``fmnist-resnet-s1``: ``fmnist-resnet``'s architecture trained again from another seed,
  the same-architecture reference.

and one vision transformer, so that token layers (N x T x C) can be studied:
- ``fmnist-vit``: 4x4 patches (49 tokens) plus a class token, 4 pre-norm transformer blocks of
  width 64; its features are the class token after the final LayerNorm.

Each is exported as ``NAME.backbone.onnx`` (image -> pooled post-ReLU features),
``NAME.head.onnx`` (features -> logits) and ``NAME.json`` (preprocessing, class count,
test accuracy), and the composition is checked against the PyTorch model. The whole network,
``NAME.onnx`` (image -> logits, every intermediate tensor under its PyTorch module path, e.g.
``/body/body.4/relu/Relu_output_0``), is the backbone and the head joined by ``onnx.compose``
(so the committed backbone and head files stay exactly as they are), checked against them.

    pip install torch==2.14.1 onnx
    python models/fashion_nets.py [--data /usr/share/datasets/fashion-mnist] [--only NAME ...] [--overwrite]

Networks whose files already exist are skipped unless ``--overwrite`` is given, so the
committed ONNX files stay exactly as they are when new networks are added; a missing whole
network ``NAME.onnx`` is composed from the existing parts. On a busy machine
run with ``OMP_NUM_THREADS=1``: PyTorch's spinning worker threads slow training tenfold when
the cores are shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import compose
from torch import nn

from lintwin.networks.images import DEFAULT_FASHION_MNIST, read_idx

HERE = Path(__file__).resolve().parent / "fashion"
MEAN, STD = 0.2860, 0.3530
CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions plus the identity (or a 1x1 projection)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.short(x))


class ResNetBackbone(nn.Module):
    dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(1, 16), BasicBlock(16, 16),          # 28x28
            BasicBlock(16, 32, 2), BasicBlock(32, 32),   # 14x14
            BasicBlock(32, 64, 2), BasicBlock(64, 64),   # 7x7
            conv_bn(64, self.dim, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class InceptionModule(nn.Module):
    """Parallel 1x1, 1x1->3x3, 1x1->3x3->3x3 (a factorised 5x5) and pool->1x1 branches."""

    def __init__(self, cin: int, b1: int, b3: tuple[int, int], b5: tuple[int, int], bp: int):
        super().__init__()
        self.b1 = conv_bn(cin, b1, 1)
        self.b3 = nn.Sequential(conv_bn(cin, b3[0], 1), conv_bn(b3[0], b3[1]))
        self.b5 = nn.Sequential(conv_bn(cin, b5[0], 1), conv_bn(b5[0], b5[1]), conv_bn(b5[1], b5[1]))
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), conv_bn(cin, bp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class InceptionBackbone(nn.Module):
    dim = 160

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(1, 32), nn.MaxPool2d(2),                        # 14x14
            InceptionModule(32, 16, (16, 32), (8, 16), 16),         # 80 channels
            InceptionModule(80, 32, (24, 48), (12, 24), 24),        # 128 channels
            nn.MaxPool2d(2),                                        # 7x7
            InceptionModule(128, 40, (32, 64), (16, 32), 24),       # 160 channels
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class VGGBackbone(nn.Module):
    """Plain stacked 3x3 convolutions with max pooling, no shortcuts and no branches."""

    dim = 96

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(1, 32), conv_bn(32, 32), nn.MaxPool2d(2),      # 14x14
            conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),     # 7x7
            conv_bn(64, self.dim),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 convolution followed by a pointwise 1x1 convolution (MobileNet v1)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        conv_bn(cin, cout, 1),
    )


class MobileNetBackbone(nn.Module):
    dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(1, 16, 3, 2), separable(16, 32),               # 14x14
            separable(32, 64, 2), separable(64, self.dim),         # 7x7
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLPBackbone(nn.Module):
    """Two fully connected hidden layers on the raw pixels; the second is the feature vector."""

    dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, self.dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Attention(nn.Module):
    """Multi-head self-attention written out (one qkv projection), so the ONNX graph keeps readable names."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x)); tokens N x T x C throughout."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTBackbone(nn.Module):
    """A small vision transformer: 4x4 patches (a 7x7 grid of 49 tokens) plus a class token, 4 blocks of
    width 64; the feature vector is the class token after the final LayerNorm."""

    dim = 64

    def __init__(self, depth: int = 4, heads: int = 4, patch: int = 4) -> None:
        super().__init__()
        tokens = (28 // patch) ** 2 + 1
        self.patch = nn.Conv2d(1, self.dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, self.dim))
        self.pos = nn.Parameter(torch.randn(1, tokens, self.dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(self.dim, heads, 2 * self.dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)                       # N x 49 x 64
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.norm(self.blocks(t))[:, 0]


class Net(nn.Module):
    def __init__(self, backbone: nn.Module, classes: int = 10):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_split(data: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(data / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(data / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy((x[:, None] - MEAN) / STD), torch.from_numpy(y)


def train(net: Net, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    net.train()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        t0, total = time.time(), 0.0
        for i in range(0, len(x) - 127, 128):
            idx = order[i : i + 128]
            xb = x[idx]
            flip = torch.rand(len(xb), generator=g) < 0.5  # horizontal flips: clothes are symmetric
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            step += 1
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / (len(x) // 128):.4f} ({time.time() - t0:.0f} s)", flush=True)


@torch.no_grad()
def accuracy(net: Net, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def export(net: Net, name: str, test_acc: float, out: Path) -> None:
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    x = torch.randn(4, 1, 28, 28)
    f = torch.randn(4, net.backbone.dim)
    for part, module, sample, in_name, out_name in (
        ("backbone", net.backbone, x, "image", "features"),
        ("head", net.head, f, "features", "logits"),
    ):
        torch.onnx.export(module, (sample,), out / f"{name}.{part}.onnx", input_names=[in_name],
                          output_names=[out_name], dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
                          opset_version=17, dynamo=False)
    sidecar = {
        "name": name,
        "backbone": f"{name}.backbone.onnx",
        "head": f"{name}.head.onnx",
        "feature_dim": net.backbone.dim,
        "classes": 10,
        "class_names": CLASSES,
        "preprocess": {"size": [28, 28], "channels": 1, "crop": "resize_then_center_crop", "resize": None,
                       "interpolation": "bilinear", "mean": [MEAN], "std": [STD]},
        "trained_on": "Fashion-MNIST train (60,000 images), models/fashion_nets.py",
        "test_accuracy": round(test_acc, 4),
    }
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    verify(net, out / f"{name}.backbone.onnx", out / f"{name}.head.onnx")


def verify(net: Net, backbone: Path, head: Path) -> float:
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        want = net(x).numpy()
    fb = ort.InferenceSession(str(backbone), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    got = ort.InferenceSession(str(head), providers=["CPUExecutionProvider"]).run(None, {"features": fb})[0]
    diff = float(np.abs(got - want).max())
    print(f"  head(backbone(x)) vs PyTorch: max abs diff {diff:.2e}")
    assert diff < 1e-4, diff
    return diff


def compose_full(name: str, out: Path) -> Path:
    """``NAME.onnx``: ``NAME.backbone.onnx`` and ``NAME.head.onnx`` joined by ``onnx.compose``, checked against them."""
    backbone, head = out / f"{name}.backbone.onnx", out / f"{name}.head.onnx"
    full = compose.merge_models(onnx.load(str(backbone)), onnx.load(str(head)), io_map=[("features", "features")],
                                doc_string=f"{name}: image -> logits (backbone and head joined by onnx.compose)")
    path = out / f"{name}.onnx"
    onnx.save(full, str(path))
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    so = ["CPUExecutionProvider"]
    feats = ort.InferenceSession(str(backbone), providers=so).run(None, {"image": x})[0]
    want = ort.InferenceSession(str(head), providers=so).run(None, {"features": feats})[0]
    got = ort.InferenceSession(str(path), providers=so).run(None, {"image": x})[0]
    diff = float(np.abs(got - want).max())
    print(f"  {path.name} vs head(backbone(x)): max abs diff {diff:.2e}")
    assert diff < 1e-5, diff
    return path


# name: (backbone, seed, epochs); the first two are the committed originals (seeds 0 and 1, 3 epochs)
NETWORKS: dict[str, tuple[type[nn.Module], int, int]] = {
    "fmnist-resnet": (ResNetBackbone, 0, 3),
    "fmnist-inception": (InceptionBackbone, 1, 3),
    "fmnist-vgg": (VGGBackbone, 2, 2),
    "fmnist-mlp": (MLPBackbone, 4, 4),
    "fmnist-mobilenet": (MobileNetBackbone, 3, 2),
    "fmnist-resnet-s1": (ResNetBackbone, 5, 2),
    "fmnist-vit": (ViTBackbone, 6, 10),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_FASHION_MNIST)
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every network (default: per network)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--only", nargs="+", choices=sorted(NETWORKS), help="train only these networks")
    ap.add_argument("--overwrite", action="store_true", help="retrain networks whose files already exist")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x, y = load_split(args.data, "train")
    xt, yt = load_split(args.data, "test")
    for name, (backbone, seed, epochs) in NETWORKS.items():
        if args.only and name not in args.only:
            continue
        if (args.out / f"{name}.json").exists() and not args.overwrite:
            print(f"{name}: already exported to {args.out}, skipped (--overwrite retrains it)", flush=True)
            if not (args.out / f"{name}.onnx").exists():
                compose_full(name, args.out)
            continue
        epochs = args.epochs or epochs
        torch.manual_seed(seed)
        net = Net(backbone())
        print(f"{name}: {sum(p.numel() for p in net.parameters()):,} parameters", flush=True)
        t0 = time.time()
        train(net, x, y, epochs, seed)
        acc = accuracy(net, xt, yt)
        print(f"{name}: test accuracy {acc:.4f} ({acc * 10000:.0f}/10000), trained in {time.time() - t0:.0f} s", flush=True)
        export(net, name, acc, args.out)
        compose_full(name, args.out)


if __name__ == "__main__":
    main()

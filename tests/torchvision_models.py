"""Run in .venv-torchvision (scripts/torchvision_venv.sh): build tiny torchvision models with their
real module names and save each state dict with torch.save (``pt/NAME/step_1.pt``) and safetensors
(``st/NAME/step_1.safetensors``) under the folder given as the only argument.

    python tests/torchvision_models.py OUT
"""
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vision_transformer import VisionTransformer


def models():
    torch.manual_seed(0)
    yield "resnet", ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)  # resnet18's names, one block per stage
    yield "resnet_bottleneck", ResNet(Bottleneck, [1, 1, 1, 1], num_classes=3)  # resnet50's names
    vgg = torchvision.models.vgg11(num_classes=3)
    # keep the real module names, shrink the 4096-wide classifier in place
    vgg.classifier[0] = torch.nn.Linear(512 * 7 * 7, 16)
    vgg.classifier[3] = torch.nn.Linear(16, 16)
    vgg.classifier[6] = torch.nn.Linear(16, 3)
    yield "vgg", vgg
    yield "vit", VisionTransformer(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                                   num_classes=3)


def main(out: Path) -> None:
    for name, model in models():
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        (out / "pt" / name).mkdir(parents=True, exist_ok=True)
        (out / "st" / name).mkdir(parents=True, exist_ok=True)
        torch.save(state, out / "pt" / name / "step_1.pt")
        save_file(state, str(out / "st" / name / "step_1.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

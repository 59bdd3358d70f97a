"""`ToTensor`: (H, W) uint8 -> (1, H, W) float in [0, 1], as torchvision's does for greyscale."""

import torch


class ToTensor:
    def __call__(self, image):
        return torch.from_numpy(image.copy()).float().div(255).unsqueeze(0)

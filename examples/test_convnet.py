"""A small image classifier, in the style of the ``torch.jit.trace`` tutorial.

Conv2d -> ReLU -> MaxPool -> Conv2d -> ReLU -> AdaptiveAvgPool -> Linear, on 1x28x28
images (MNIST-sized). ``dims={"batch": (1, 8)}`` declares the batch dimension dynamic with
its range: hypothesis draws batches of 1 to 8 images, ``torch.export`` and the dynamo
ONNX exporter get a dynamic batch axis with those bounds, and a trace that baked in the
batch size of the example would be caught at the other sizes.

Only the batch is dynamic. Height and width stay at 28x28 (dim 0 is the default dynamic
dim; the others are static unless you name them with ``dynamic=``). A classifier trained
on 28x28 images is not served at other sizes, and with H and W dynamic too
(``dynamic={"images": {0: "batch", 2: "h", 3: "w"}}``) the dynamo ONNX exporter lowers
``AdaptiveAvgPool2d`` to index arithmetic fixed at the export size: onnxruntime then
raises ``GatherND ... invalid index found`` on a 16x16 image (the plugin reports it as a
``run_error``), while ``torch.export`` itself handles it.
"""

import pytest
import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)),  # 14x14 -> 4x4
        )
        self.classifier = nn.Linear(16 * 4 * 4, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@pytest.mark.torchexport(dims={"batch": (1, 8)})
def test_convnet_logits():
    model = ConvNet().eval()
    images = torch.randn(2, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (2, 10)
    # Probabilities sum to one: the test's own assertions still run in every item.
    assert torch.allclose(logits.softmax(dim=1).sum(dim=1), torch.ones(2))

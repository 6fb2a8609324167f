"""Area regressor for the left-ventricular volume multi-task (paper §5.2): from the anatomy factor s to the LV
area of each slice.

Paper: "two convolutional layers (each having a 3×3×16 kernel followed by a ReLU activation), and two fully
connected layers of 16 and 1 neurons respectively, both followed by a ReLU activation. This network regresses the
sum of the pixels of the left ventricle, taking as input the spatial representation." The LV volume is then the
sum over a volume's slices of area × pixel size × slice thickness (:mod:`sdnet.analysis.volume`).

Deviations, both for resolution independence and trainability:

* between the convolutions and the first dense layer we take the spatial **mean** (global average pooling)
  instead of flattening. A pixel count is a spatial sum, so convolutions that light up inside the LV followed by a
  mean compute exactly the area fraction; a flatten would tie the regressor to one image size and give the first
  dense layer 16·H·W inputs (803k at 224 px) for a task that needs 16.
* the output is the LV area in **percent of the image's pixels** (so targets are O(1) whatever the crop size), and
  the last layer's bias starts at 1 % so that the final ReLU does not start dead for every input. Multiply by
  H·W/100 for the pixel count of the paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from sdnet.models.blocks import keras_init_

__all__ = ["AreaRegressor"]


class AreaRegressor(nn.Module):
    """s → LV area of the slice, in percent of its pixels (paper §5.2).

    Args:
        anatomy_channels: C, channels of the anatomy factor s.
        filters: channels of the two 3×3 convolutions (paper: 16).
        hidden: units of the first dense layer (paper: 16).
    """

    def __init__(self, *, anatomy_channels: int = 8, filters: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.anatomy_channels = anatomy_channels
        self.features = nn.Sequential(
            nn.Conv2d(anatomy_channels, filters, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(filters, filters, kernel_size=3, padding=1), nn.ReLU(),
        )
        self.dense = nn.Sequential(nn.Linear(filters, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.ReLU())
        keras_init_(self)
        last = self.dense[2]
        assert isinstance(last, nn.Linear) and last.bias is not None
        nn.init.constant_(last.bias, 1.0)

    def forward(self, anatomy: Tensor) -> Tensor:
        """Regress the LV area.

        Args:
            anatomy: s, (B, C, H, W) float, binary {0, 1} (or soft in [0, 1]).

        Returns:
            (B,) float >= 0: the predicted LV area in percent of the slice's H·W pixels.
        """
        pooled = self.features(anatomy).mean(dim=(2, 3))  # (B, filters)
        out: Tensor = self.dense(pooled)[:, 0]  # (B,)
        return out

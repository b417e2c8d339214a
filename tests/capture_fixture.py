"""A tiny model and loader for the capture test (tests/cli_capture.sh)."""
import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.dw(x))
        return self.head(x.flatten(1))


def build():
    torch.manual_seed(0)
    model = Tiny()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(4)]
    return model, data


def top1_errors(outputs, batch):
    """A user metric for tools/evaluate_plan.py --metric: (wrong, count)."""
    return (outputs.argmax(1) != batch[1]).sum().item(), len(batch[1])


class Shared(nn.Module):
    """q/k/v-style sharing: two layers read the same tensor, a third its output."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(12, 6)
        self.k = nn.Linear(12, 6)
        self.o = nn.Linear(6, 4)

    def forward(self, x):
        return self.o(torch.tanh(self.q(x) * self.k(x)))


def build_shared():
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(3)
    return Shared(), [torch.randn(5, 7, 12, generator=g) for _ in range(3)]

"""A tiny model and loader for the capture test (tests/cli_capture.sh)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


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
    return model, data, cross_entropy


def cross_entropy(outputs, batch):
    """The user's loss: cross entropy against the batch's labels, summed."""
    return F.cross_entropy(outputs, batch[1], reduction="sum")


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


class DictNet(nn.Module):
    """Tiny's layers behind a dict interface: keyword inputs, dict outputs."""

    def __init__(self):
        super().__init__()
        self.inner = Tiny()

    def forward(self, image=None):
        return {"scores": self.inner(image)}


def build_dict():
    """The batches as dicts; inputs, logits and a mean-reduced loss given."""
    model, data, _ = build()
    net = DictNet()
    net.inner.load_state_dict(model.state_dict())

    def loss(outputs, batch):
        return F.cross_entropy(outputs["scores"], batch["label"])
    loss.reduction = "mean"

    def errors(outputs, batch):
        return (outputs["scores"].argmax(1) != batch["label"]).float()
    return dict(model=net, loader=[{"image": x, "label": y} for x, y in data],
                inputs=lambda b: {"image": b["image"]}, logits=lambda out: out["scores"],
                loss=loss, metric=errors)


class Frames(nn.Module):
    """A CTC-style head: per-frame logits N x T x C from N x T x 6 inputs."""

    def __init__(self, classes=5):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)))


def build_ctc(frames=1):
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(5)
    data = [torch.randn(16, frames, 6, generator=g) for _ in range(4)]
    return dict(model=Frames(), loader=data, likelihood="ctc", decode="ctc")


def build_ctc3():
    return build_ctc(3)


def not_a_module():
    return (lambda x: x), [torch.zeros(2, 3)]


def typo_key():
    return dict(modle=Tiny(), loader=[])


def build_one():
    """build() with its four batches as one."""
    model, data, loss = build()
    return model, [(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))], loss


class Softmaxed(nn.Module):
    """Tiny exported with its softmax: the model outputs probabilities."""

    def __init__(self):
        super().__init__()
        self.inner = Tiny()

    def forward(self, x):
        return torch.softmax(self.inner(x), -1)


def build_probs():
    """build()'s model and batches, outputs as probabilities."""
    model, data, _ = build()
    net = Softmaxed()
    net.inner.load_state_dict(model.state_dict())
    return net, data


def build_callable():
    """A plain callable (as an ONNX session or a compiled function would be)."""
    model, data, _ = build()
    return (lambda x: model(x)), data


class Opaque(nn.Module):
    """An nn.Module whose computation is not in nn.Linear / nn.Conv2d modules."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def build_opaque():
    model, data, _ = build()
    return Opaque(lambda x: model(x)), data

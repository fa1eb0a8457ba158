"""Frame-wise probes that reconstruct the log-mel from every hidden layer of a frozen ASR model.

One probe per layer: an (upsampling) input projection, a 4-layer Highway network and a linear
output to the mel bins, applied to each frame on its own — no context, no recurrence, no
attention — so what a probe recovers is what that single frame of the layer holds.

A layer running at ``rate`` input frames per frame (pooling or frame skipping) gets a
``Linear(D, rate * hidden)`` whose output is read as ``rate`` consecutive input-rate frames
(the paper's "up-sampled back by a linear projection"), then cropped to the input length.
Encoders whose subsampling drops edge frames (ESPnet's Conv2dSubsampling) give fewer than
``T / rate`` frames; the last predicted frame is then repeated up to T.

The frozen ASR model is a submodule, so a probe checkpoint is self-contained (the random-
encoder control needs its random weights saved); its parameters have requires_grad False and
it always runs in eval mode under no_grad: one encoder pass feeds every probe.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_probe.asr.blstm import zero_padding
from espnet_probe.layers import extract_layers

try:  # ESPnet's base class when available (training); plain Module for unit use.
    from espnet2.train.abs_espnet_model import AbsESPnetModel as _Base
except ImportError:  # pragma: no cover - espnet is a hard dependency of the package
    _Base = torch.nn.Module


class Highway(torch.nn.Module):
    """``y = g * relu(W_h x) + (1 - g) * x`` with ``g = sigmoid(W_g x)``, per frame."""

    def __init__(self, size: int, num_layers: int = 4, gate_bias: float = -1.0):
        super().__init__()
        self.transforms = torch.nn.ModuleList(torch.nn.Linear(size, size) for _ in range(num_layers))
        self.gates = torch.nn.ModuleList(torch.nn.Linear(size, size) for _ in range(num_layers))
        for gate in self.gates:  # start close to the identity: carry more than transform
            torch.nn.init.constant_(gate.bias, gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform, gate in zip(self.transforms, self.gates):
            g = torch.sigmoid(gate(x))
            x = g * torch.relu(transform(x)) + (1.0 - g) * x
        return x


class LayerProbe(torch.nn.Module):
    """(B, T_l, D) hidden states at ``rate`` -> (B, T, n_mels) log-mel at the input rate."""

    def __init__(self, input_size: int, rate: int, hidden_size: int = 256,
                 highway_layers: int = 4, n_mels: int = 80):
        super().__init__()
        if rate < 1:
            raise ValueError(f"rate must be >= 1, got {rate}")
        self.rate = rate
        self.hidden_size = hidden_size
        self.upsample = torch.nn.Linear(input_size, rate * hidden_size)
        self.highway = Highway(hidden_size, highway_layers)
        self.output = torch.nn.Linear(hidden_size, n_mels)

    def forward(self, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
        b, t_layer, _ = hidden.shape
        x = self.upsample(hidden).reshape(b, t_layer * self.rate, self.hidden_size)
        if x.size(1) >= num_frames:
            x = x[:, :num_frames]
        else:
            x = torch.cat([x, x[:, -1:].expand(b, num_frames - x.size(1), -1)], dim=1)
        return self.output(self.highway(x))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the valid frames and all bins of a padded batch."""
    mask = (torch.arange(pred.size(1), device=pred.device)[None, :] < lengths[:, None]).to(pred.dtype)
    total = ((pred - target).abs().sum(-1) * mask).sum()
    return total / (mask.sum() * pred.size(-1))


class ProbeModel(_Base):
    """Frozen ASR model + one LayerProbe per selected layer; L1 loss to a log-mel target.

    Args:
        asr_model: an ESPnet ASR model (see espnet_probe.layers.load_asr_model).
        layers: (name, feature size, rate) of each probed layer, in encoder order.
        target: "heard" = the static log-mel of the input features (noisy for noisy sets:
            what the encoder heard), "clean" = the batch's ``target`` (clean log-mel).
        n_mels: mel bins; the heard target is the first n_mels feature columns.
    """

    def __init__(self, asr_model: torch.nn.Module, layers: Sequence[Tuple[str, int, int]],
                 target: str = "heard", n_mels: int = 80, hidden_size: int = 256,
                 highway_layers: int = 4):
        super().__init__()
        if target not in ("heard", "clean"):
            raise ValueError(f"target must be 'heard' or 'clean', got {target!r}")
        if not layers:
            raise ValueError("no layers to probe")
        self.asr = asr_model
        for p in self.asr.parameters():
            p.requires_grad_(False)
        self.target = target
        self.n_mels = n_mels
        self.layer_names = [name for name, _, _ in layers]
        self.probes = torch.nn.ModuleDict({
            name: LayerProbe(size, rate, hidden_size, highway_layers, n_mels)
            for name, size, rate in layers
        })

    def train(self, mode: bool = True):
        super().train(mode)
        self.asr.eval()  # frozen: dropout off, whatever the trainer asks
        return self

    def predict(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                layers: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Predicted log-mel (B, T, n_mels) per probed layer, zero beyond each length."""
        wanted = set(self.layer_names if layers is None else layers)
        num_frames = int(speech_lengths.max())
        with torch.no_grad():
            hidden = {layer.name: layer for layer in extract_layers(self.asr, speech, speech_lengths)}
        missing = [n for n in self.layer_names if n not in hidden]
        if missing:
            raise ValueError(f"the ASR model has no layer(s) {missing}; it has {sorted(hidden)}")
        return {
            name: zero_padding(self.probes[name](hidden[name].hidden, num_frames), speech_lengths)
            for name in self.layer_names if name in wanted
        }

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                target: Optional[torch.Tensor] = None, target_lengths: Optional[torch.Tensor] = None,
                **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        speech = speech[:, : int(speech_lengths.max())]
        if self.target == "clean":
            if target is None:
                raise ValueError("target: clean needs a 'target' data entry (the clean log-mel scp)")
            if not torch.equal(target_lengths, speech_lengths):
                raise ValueError(
                    f"clean target lengths {target_lengths.tolist()} differ from the input "
                    f"lengths {speech_lengths.tolist()}")
            reference = target[:, : speech.size(1)]
        else:
            reference = speech[..., : self.n_mels]
        preds = self.predict(speech, speech_lengths)
        losses = {name: masked_l1(pred, reference, speech_lengths) for name, pred in preds.items()}
        # Each probe has its own parameters, so summing gives each exactly its own gradient.
        loss = torch.stack(list(losses.values())).sum()
        stats = {"loss": (loss / len(losses)).detach()}
        stats.update({f"l1_{name}": value.detach() for name, value in losses.items()})
        batch_size = speech.new_tensor(speech.size(0))
        # 1-dim tensors, as ESPnet's trainer gathers them across DDP / DataParallel replicas
        return force_gatherable((loss, stats, batch_size), loss.device)

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                      **kwargs) -> Dict[str, torch.Tensor]:
        return {"feats": speech, "feats_lengths": speech_lengths}


def probe_layer_specs(asr_model: torch.nn.Module, feat_dim: int, wanted: Sequence[str] | str = "all",
                      probe_frames: int = 64) -> List[Tuple[str, int, int]]:
    """(name, size, rate) of the layers to probe, found by one forward pass on zeros."""
    feats = torch.zeros(1, probe_frames, feat_dim)
    layers = extract_layers(asr_model, feats, torch.tensor([probe_frames]))
    specs = [(layer.name, layer.hidden.size(-1), int(layer.frame_rate)) for layer in layers]
    if wanted == "all":
        return specs
    by_name = {s[0]: s for s in specs}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this ASR model has {[s[0] for s in specs]}")
    return [by_name[n] for n in wanted]


def reinitialise_encoder(asr_model: torch.nn.Module, seed: int) -> None:
    """The random-encoder control: fresh weights in the encoder (same shapes), fixed seed.

    The normalisation statistics stay: the control differs from the trained model only in
    what training taught the encoder.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in asr_model.encoder.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)

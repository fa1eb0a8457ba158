"""Frame-wise probes that reconstruct the log-mel from every hidden layer of a frozen ASR model.

One probe per layer: an (upsampling) input projection, a 4-layer Highway network and a linear
output to the mel bins, applied to each frame on its own — no context, no recurrence, no
attention — so what a probe recovers is what that single frame of the layer holds.

Time, not frame counts.  Each layer frame spans ``period`` seconds from ``offset`` (see
espnet_probe.layers); the target log-mel has centred frames every ``target_period`` (10 ms).
A probe's ``Linear(D, slots * hidden)`` reads each layer frame as ``slots = round(period /
target_period)`` consecutive sub-frames (the paper's "up-sampled back by a linear
projection"), sub-frame i centred at ``offset + (i + 0.5) * period / slots``.  Each target frame
then takes the linear interpolation, by time, of the two sub-frames nearest to its centre
(clamped to the utterance's own frames at the edges), and the Highway network and output layer
act on that one vector.  So a target frame sees at most two neighbouring sub-frames, and so at
most two adjacent layer frames, only where the grids do not line up; that is the least context
any mapping between two grids needs.  For our models (integer rates, aligned grids) every
weight is 0 or 1: the paper's probe, exactly.  For a stock model at hop 128 x 4 (32 ms) slots
is 3 and the interpolation does the rest.

The frozen ASR model is a submodule, so a probe checkpoint is self-contained (the random-
encoder control needs its random weights saved); its parameters have requires_grad False and
it always runs in eval mode under no_grad: one encoder pass feeds every probe.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import torch
from espnet2.torch_utils.device_funcs import force_gatherable
from torch.nn.utils.weight_norm import WeightNorm

from espnet_probe.asr.blstm import zero_padding
from espnet_probe.asr.model_input import model_input
from espnet_probe.layer_record import Layer
from espnet_probe.layers import LayerStates, extract_layers

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
    """(B, T_l, D) hidden states -> (B, T, n_mels) log-mel on the target grid.

    ``ratio`` = layer period / target period and ``offset`` = layer offset / target period
    (target frame t is centred at t); see the module doc for the mapping.
    """

    def __init__(self, input_size: int, ratio: float, offset: float = -0.5, hidden_size: int = 256,
                 highway_layers: int = 4, n_mels: int = 80):
        super().__init__()
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio}")
        self.slots = max(1, int(round(ratio)))
        self.step = ratio / self.slots  # sub-frame period, in target frames
        self.first = offset + 0.5 * self.step  # centre of sub-frame 0, in target frames
        self.hidden_size = hidden_size
        self.upsample = torch.nn.Linear(input_size, self.slots * hidden_size)
        self.highway = Highway(hidden_size, highway_layers)
        self.output = torch.nn.Linear(hidden_size, n_mels)

    def interpolation(self, num_frames: int, layer_lengths: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per target frame: the two sub-frame indices and the weight of the second, (B, T)."""
        device = layer_lengths.device
        t = torch.arange(num_frames, device=device, dtype=torch.float64)
        u = (t - self.first) / self.step
        last = (layer_lengths.to(torch.float64) * self.slots - 1).clamp(min=0)[:, None]
        u = torch.minimum(u[None, :].clamp(min=0), last)
        lo = u.floor()
        weight = (u - lo).to(torch.float32)
        hi = torch.minimum(lo + 1, last)
        return lo.long(), hi.long(), weight

    def forward(self, hidden: torch.Tensor, num_frames: int,
                layer_lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t_layer, _ = hidden.shape
        if layer_lengths is None:
            layer_lengths = torch.full((b,), t_layer, dtype=torch.long, device=hidden.device)
        x = self.upsample(hidden).reshape(b, t_layer * self.slots, self.hidden_size)
        lo, hi, weight = self.interpolation(num_frames, layer_lengths.to(hidden.device))
        index = lambda i: i[..., None].expand(-1, -1, self.hidden_size)  # noqa: E731
        x_lo, x_hi = x.gather(1, index(lo)), x.gather(1, index(hi))
        w = weight[..., None].to(x.dtype)
        x = x_lo + w * (x_hi - x_lo) if bool((weight > 0).any()) else x_lo
        return self.output(self.highway(x))

    def forward_at(self, hidden: torch.Tensor, layer_lengths: torch.Tensor, batch_index: torch.Tensor,
                   frame_index: torch.Tensor) -> torch.Tensor:
        """``forward(...)[batch_index, frame_index]``, (K, n_mels), computing only those frames.

        Training on a random sample of target frames: the probe is frame-wise, so the loss over
        the sample estimates the full loss without bias at a fraction of the cost.
        """
        return self.forward_frames(self.frames_at(hidden, layer_lengths, batch_index, frame_index))

    def frames_at(self, hidden: torch.Tensor, layer_lengths: torch.Tensor, batch_index: torch.Tensor,
                  frame_index: torch.Tensor) -> "SampledFrames":
        """What the probe reads for each sampled target frame: the layer frames of its two
        nearest sub-frames, which slot of them, and the interpolation weight."""
        num_frames = int(frame_index.max()) + 1
        lo, hi, weight = self.interpolation(num_frames, layer_lengths.to(hidden.device))
        lo, hi = lo[batch_index, frame_index], hi[batch_index, frame_index]
        weight = weight[batch_index, frame_index]
        frame_of = lambda sub: hidden[batch_index, torch.div(sub, self.slots, rounding_mode="floor")]  # noqa: E731
        if not bool((weight > 0).any()):  # aligned grids: no second frame to keep
            return SampledFrames(frame_of(lo), lo % self.slots, None, None, weight)
        return SampledFrames(frame_of(lo), lo % self.slots, frame_of(hi), hi % self.slots, weight)

    def forward_frames(self, frames: "SampledFrames") -> torch.Tensor:
        """(K, n_mels) from ``frames_at``'s sample."""

        def sub_frames(layer_frames: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
            """One slot of each frame's upsampling: only that slot's rows of the projection are
            computed (a 1/slots share of the work), one matrix product per slot."""
            if self.slots == 1:
                return self.upsample(layer_frames)
            weight = self.upsample.weight.view(self.slots, self.hidden_size, -1)
            bias = self.upsample.bias.view(self.slots, self.hidden_size)
            out = layer_frames.new_empty(layer_frames.size(0), self.hidden_size)
            for s in range(self.slots):
                rows = (slot == s).nonzero().squeeze(1)
                out[rows] = torch.nn.functional.linear(layer_frames[rows], weight[s], bias[s])
            return out

        x = sub_frames(frames.lo, frames.lo_slot)
        if frames.hi is not None:
            x = x + frames.weight[:, None].to(x.dtype) * (sub_frames(frames.hi, frames.hi_slot) - x)
        return self.output(self.highway(x))


@dataclass(frozen=True)
class SampledFrames:
    """The inputs of a probe for K sampled target frames (``LayerProbe.frames_at``)."""

    lo: torch.Tensor                 # (K, D) layer frame of the sub-frame at or before
    lo_slot: torch.Tensor            # (K,) which of its ``slots`` sub-frames
    hi: Optional[torch.Tensor]       # (K, D) layer frame of the next sub-frame; None: weight 0
    hi_slot: Optional[torch.Tensor]
    weight: torch.Tensor             # (K,) interpolation weight of ``hi``

    def take(self, index: torch.Tensor) -> "SampledFrames":
        return SampledFrames(*(None if f is None else f[index] for f in self.fields()))

    def fields(self) -> Tuple[Optional[torch.Tensor], ...]:
        return self.lo, self.lo_slot, self.hi, self.hi_slot, self.weight

    @staticmethod
    def cat(parts: Sequence["SampledFrames"]) -> "SampledFrames":
        if all(p.hi is None for p in parts):
            return SampledFrames(torch.cat([p.lo for p in parts]), torch.cat([p.lo_slot for p in parts]),
                                 None, None, torch.cat([p.weight for p in parts]))
        # where a part has no second frame its weight is 0: its own frame stands in
        return SampledFrames(*(torch.cat(f) for f in zip(*(
            (p.lo, p.lo_slot, p.lo if p.hi is None else p.hi,
             p.lo_slot if p.hi is None else p.hi_slot, p.weight) for p in parts))))


class FrameDealer:
    """Deals each training batch's frame sample out over that step and the next ``n - 1``."""

    def __init__(self, n: int):
        self.n = n
        self.pending: Deque[List[Tuple[Dict[str, SampledFrames], torch.Tensor]]] = deque()

    def deal(self, sample: Dict[str, SampledFrames], wanted: torch.Tensor
             ) -> Tuple[Dict[str, SampledFrames], torch.Tensor]:
        """Split this batch's (randomly ordered) sample into n parts, keep them, and return one
        part of each of the last n batches' samples: per layer the probe inputs, and the targets."""
        parts = torch.tensor_split(torch.arange(wanted.size(0), device=wanted.device), self.n)
        self.pending.append([({name: s.take(index) for name, s in sample.items()}, wanted[index])
                             for index in parts])
        now = [kept.pop(0) for kept in self.pending]
        while self.pending and not self.pending[0]:
            self.pending.popleft()
        mixed = {name: SampledFrames.cat([part[name] for part, _ in now]) for name in sample}
        return mixed, torch.cat([target for _, target in now])


def masked_l1(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the valid frames and all bins of a padded batch."""
    mask = (torch.arange(pred.size(1), device=pred.device)[None, :] < lengths[:, None]).to(pred.dtype)
    total = ((pred - target).abs().sum(-1) * mask).sum()
    return total / (mask.sum() * pred.size(-1))


class ProbeModel(_Base):
    """Frozen ASR model + one LayerProbe per selected layer; L1 loss to a log-mel target.

    Args:
        asr_model: an ESPnet ASR model (see espnet_probe.layers.load_asr_model).
        layers: the record of each probed layer, in encoder order (``probed_layers``).
        target: "heard" = the project's static log-mel of the audio the encoder heard (noisy
            for noisy sets), "clean" = the batch's ``target`` (clean log-mel).
        n_mels: mel bins; the heard target is the first n_mels columns of the features.
        target_period: seconds per target frame (conf/fbank.yaml's hop, 10 ms).
        sample_frames: in training, the loss of each batch is taken over this many target
            frames drawn at random from its valid frames (0: all of them).  The frozen encoder
            still reads whole utterances; only the probes' work shrinks, and it is most of the
            work (every layer's probe runs on every target frame).  Validation uses all frames.
        mix_batches: in training, deal each batch's sample out over this step and the next
            ``mix_batches - 1``: every step's loss is over a 1/mix_batches share of each of the
            last mix_batches batches' samples.  With one long utterance per batch (LibriSpeech)
            a step's frames otherwise all come from one sentence of one speaker, and those
            correlated steps cost the probes a factor of 1.5-4 in L1 at equal updates
            (BENCHMARKS.md section 7).  Same work per step, every sampled frame used once.
            The kept parts are layer outputs of the frozen encoder, so they do not go stale;
            they are not in checkpoints, so a resumed training refills them over its first steps.

    Batches: ``speech`` is what the ASR model takes (``espnet_probe.asr.model_input``).
    For a feature model the heard log-mel is ``speech[..., :n_mels]``; a waveform model also
    needs ``mel``, the project's features of the same audio, which fix the target frames.
    """

    def __init__(self, asr_model: torch.nn.Module, layers: Sequence[Layer],
                 target: str = "heard", n_mels: int = 80, hidden_size: int = 256,
                 highway_layers: int = 4, target_period: float = 0.01, sample_frames: int = 0,
                 mix_batches: int = 1):
        super().__init__()
        if sample_frames < 0:
            raise ValueError(f"sample_frames must be >= 0, got {sample_frames}")
        if mix_batches < 1 or (mix_batches > 1 and not sample_frames):
            raise ValueError(f"mix_batches must be >= 1, and > 1 only with sample_frames > 0; got "
                             f"mix_batches={mix_batches}, sample_frames={sample_frames}")
        self.sample_frames = sample_frames
        self.dealer = FrameDealer(mix_batches) if mix_batches > 1 else None
        if target not in ("heard", "clean"):
            raise ValueError(f"target must be 'heard' or 'clean', got {target!r}")
        if not layers:
            raise ValueError("no layers to probe")
        self.asr = asr_model
        for p in self.asr.parameters():
            p.requires_grad_(False)
        self.target = target
        self.n_mels = n_mels
        self.target_period = target_period
        self.input = model_input(asr_model, target_period)
        self.layers = tuple(layers)
        self.layer_names = [layer.name for layer in layers]
        self.probes = torch.nn.ModuleDict({
            layer.name: LayerProbe(layer.dim, layer.period / target_period, layer.offset / target_period,
                                   hidden_size, highway_layers, n_mels)
            for layer in layers
        })

    def train(self, mode: bool = True):
        super().train(mode)
        self.asr.eval()  # frozen: dropout off, whatever the trainer asks
        return self

    def frame_lengths(self, speech_lengths: torch.Tensor) -> torch.Tensor:
        """Target frames per utterance: the features' own, or 1 + samples // hop (centred)."""
        if self.input.kind == "feats":
            return speech_lengths
        hop = int(round(self.target_period * self.input.sample_rate))
        return 1 + torch.div(speech_lengths, hop, rounding_mode="floor")

    def predict(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                layers: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Predicted log-mel (B, T, n_mels) per probed layer on the target grid, zero beyond
        each utterance's frames (``frame_lengths``)."""
        wanted = set(self.layer_names if layers is None else layers)
        frames = self.frame_lengths(speech_lengths)
        num_frames = int(frames.max())
        hidden = self.hidden_states(speech, speech_lengths)
        return {
            name: zero_padding(
                self.probes[name](hidden[name].hidden, num_frames, hidden[name].lengths), frames)
            for name in self.layer_names if name in wanted
        }

    def cache_layers(self, max_bytes: int) -> None:
        """Keep each batch's probed layers after they are first computed, up to ``max_bytes``:
        the ASR model is frozen and ESPnet's batches keep their members from epoch to epoch,
        so the second and later epochs (and every validation) cost no encoder pass.  Keyed by
        the batch's input (a digest); cleared when the ASR model's weights change (the random
        control re-draws them).  Kept as computed, so the probes see exactly what they would
        without the cache, unless the model asks for less (``layer_cache_dtype``: Whisper's
        layers over 30-s windows are kept in float16, BENCHMARKS.md section 9).  Only the probe
        trainer turns it on."""
        self._cache: Dict[str, Dict[str, LayerStates]] = {}
        self._cache_bytes, self._cache_max = 0, int(max_bytes)
        self._cache_weights = self._asr_weights_version()

    def _asr_weights_version(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.asr.parameters())

    def hidden_states(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """Every probed layer's output of the frozen ASR model, by name."""
        caching = getattr(self, "_cache_max", 0) > 0
        if caching:
            if self._asr_weights_version() != self._cache_weights:
                self.cache_layers(self._cache_max)
            digest = hashlib.sha1(speech_lengths.cpu().numpy().tobytes())
            digest.update(speech[:, : int(speech_lengths.max())].contiguous().cpu().numpy().tobytes())
            key = digest.hexdigest()
            if key in self._cache:
                return {name: LayerStates(s.layer, s.hidden.float(), s.lengths)
                        for name, s in self._cache[key].items()}
        with torch.no_grad():
            hidden = {states.layer.name: states for states in
                      extract_layers(self.asr, speech, speech_lengths, self.target_period)}
        missing = [n for n in self.layer_names if n not in hidden]
        if missing:
            raise ValueError(f"the ASR model has no layer(s) {missing}; it has {sorted(hidden)}")
        if caching:
            dtype = getattr(self.asr, "layer_cache_dtype", None)
            kept = {name: LayerStates(hidden[name].layer, hidden[name].hidden.to(dtype or
                                                                               hidden[name].hidden.dtype),
                                      hidden[name].lengths) for name in self.layer_names}
            size = sum(s.hidden.numel() * s.hidden.element_size() for s in kept.values())
            if self._cache_bytes + size <= self._cache_max:
                self._cache[key] = kept
                self._cache_bytes += size
            if dtype is not None:  # the same values whether this batch was cached or not
                return {name: LayerStates(s.layer, s.hidden.float(), s.lengths) for name, s in kept.items()}
        return hidden

    def sampled_losses(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                       reference: torch.Tensor, frames: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each probe's L1 over ``sample_frames`` target frames drawn uniformly from the batch
        (with ``mix_batches`` > 1: dealt out over this step and the next ones, see __init__)."""
        valid = (torch.arange(reference.size(1), device=frames.device)[None, :]
                 < frames[:, None]).nonzero()
        if valid.size(0) > self.sample_frames or self.dealer is not None:
            valid = valid[torch.randperm(valid.size(0), device=valid.device)[: self.sample_frames]]
        batch_index, frame_index = valid.unbind(1)
        wanted = reference[batch_index, frame_index]
        hidden = self.hidden_states(speech, speech_lengths)
        sample = {name: self.probes[name].frames_at(hidden[name].hidden, hidden[name].lengths,
                                                    batch_index, frame_index)
                  for name in self.layer_names}
        if self.dealer is not None:
            sample, wanted = self.dealer.deal(sample, wanted)
        return {name: (self.probes[name].forward_frames(sample[name]) - wanted).abs().mean()
                for name in self.layer_names}

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                mel: Optional[torch.Tensor] = None, mel_lengths: Optional[torch.Tensor] = None,
                target: Optional[torch.Tensor] = None, target_lengths: Optional[torch.Tensor] = None,
                **kwargs) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        speech = speech[:, : int(speech_lengths.max())]
        self.input.check(speech, "the probed ASR model")
        frames = self.frame_lengths(speech_lengths)
        if self.input.kind == "wave":
            if mel is None:
                raise ValueError("a waveform model's probes need 'mel': the project's features "
                                 "of the same audio (dump/fbank/<set>/feats.scp)")
            if not torch.equal(mel_lengths.to(frames.device), frames):
                raise ValueError(f"feature frames {mel_lengths.tolist()} do not match the "
                                 f"waveforms' {frames.tolist()} (1 + samples // hop)")
            heard = mel
        else:
            heard = speech
        num_frames = int(frames.max())
        if self.target == "clean":
            if target is None:
                raise ValueError("target: clean needs a 'target' data entry (the clean log-mel scp)")
            if not torch.equal(target_lengths.to(frames.device), frames):
                raise ValueError(
                    f"clean target lengths {target_lengths.tolist()} differ from the input "
                    f"frames {frames.tolist()}")
            reference = target[:, :num_frames]
        else:
            reference = heard[:, :num_frames, : self.n_mels]
        if self.training and self.sample_frames:
            losses = self.sampled_losses(speech, speech_lengths, reference, frames)
        else:
            preds = self.predict(speech, speech_lengths)
            losses = {name: masked_l1(pred, reference, frames) for name, pred in preds.items()}
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


def probed_layers(asr_model: torch.nn.Module, wanted: Sequence[str] | str = "all",
                  feature_period: float = 0.01) -> List[Layer]:
    """The records of the layers to probe, in encoder order, from one pass over 1 s of silence."""
    speech, lengths = model_input(asr_model, feature_period).dummy(1.0)
    layers = [states.layer for states in extract_layers(asr_model, speech, lengths, feature_period)]
    if wanted == "all":
        return layers
    unknown = [n for n in wanted if n not in {layer.name for layer in layers}]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this ASR model has {[layer.name for layer in layers]}")
    return [layer for layer in layers if layer.name in wanted]


# the parts of an ESPnet ASR model the probed layers come from, in the order they run
PROBED_PARTS = ("frontend", "preencoder", "encoder")


def reinitialise_encoder(asr_model: torch.nn.Module, seed: int) -> None:
    """The random-encoder control: fresh weights (same shapes, fixed seed) in every part the
    probed layers come from: the frontend's learnt parts (an SSL upstream and the weighted sum
    of its layers), the preencoder and the encoder.

    Each module's own ``reset_parameters`` draws its weights.  A parameter that none of them
    redraws would keep its trained value inside the "random" model, so those are drawn here:
    a conformer's relative-position biases, weight-normalised convolutions (an SSL upstream's
    positional convolution), an upstream's mask embedding, the s3prl featuriser's layer
    weights; Xavier-uniform for a matrix or more (ESPnet's own init of the position biases),
    zeros for a vector (the featuriser's own: equal layer weights).  The normalisation
    statistics stay, and so do the decoders: the control differs from the trained model only
    in what training taught the layers under the probes.
    """
    parts = [part for name in PROBED_PARTS
             if isinstance(part := getattr(asr_model, name, None), torch.nn.Module)]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for part in parts:
            for module in part.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        with torch.no_grad():
            for part in parts:
                for param in _params_not_reset(part):
                    if param.dim() >= 2:
                        torch.nn.init.xavier_uniform_(param)
                    else:
                        param.zero_()
    finally:
        torch.random.set_rng_state(generator_state)


def _params_not_reset(root: torch.nn.Module) -> List[torch.nn.Parameter]:
    """Parameters of ``root`` that no module's ``reset_parameters`` redraws: those of modules
    without one, and the direction and magnitude of a weight norm (torch's old
    ``weight_norm`` keeps them beside the weight its module's reset would draw, then discards
    at the next forward)."""
    params = []
    for module in root.modules():
        own = {name: p for name, p in module._parameters.items() if p is not None}
        if not hasattr(module, "reset_parameters"):
            params.extend(own.values())
            continue
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                params.extend(own[f"{hook.name}{suffix}"] for suffix in ("_g", "_v")
                              if f"{hook.name}{suffix}" in own)
    return params

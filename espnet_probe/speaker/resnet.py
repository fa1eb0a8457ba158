"""ThinResNet-34 + GhostVLAD speaker embeddings (after Xie, Nagrani, Chung & Zisserman, ICASSP
2019), trained with an additive-margin softmax over the training speakers.

Waveform in, so a checkpoint carries its own front end:
  16 kHz audio -> log-mel (espnet_probe.audio.features; 64 bands, 25 ms / 10 ms) -> each band's
  mean over the utterance subtracted -> ThinResNet (residual basic blocks; every stage after the
  first halves time and frequency) -> frequency folded into channels, projected to D-dim frame
  descriptors -> GhostVLAD (K + G clusters, the G ghosts dropped after the soft assignment)
  -> Linear -> embedding (cosine-scored).

64 bands, not conf/fbank.yaml's 80: the stem and three strided stages halve frequency four times,
and 64 bands leave 4 whole bins (80 would leave 5 after rounding at every stage); speaker
models commonly use 40-80 bands, and these are otherwise the ASR front end's settings.

Padding never changes an embedding: before every convolution the frames beyond each utterance's
length are zeroed, which is exactly the zero padding an unpadded utterance gets at its end;
pooling ignores them; and the log-mel is computed per utterance whenever lengths differ (the
STFT's reflect padding at the end depends on the true length). The tests check it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from espnet2.train.abs_espnet_model import AbsESPnetModel

from espnet_probe.audio.features import FbankConfig, LogMelExtractor
from espnet_probe.utils.checkpoint import check_fits, load_state_dict
from espnet_probe.utils.conf import checked_conf, conf_defaults


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True on each utterance's valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def strided_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Output lengths of an odd-kernel convolution with padding kernel // 2 and this stride."""
    return (lengths - 1) // stride + 1


def repeat_pad(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """``wav`` repeated end to end up to ``num_samples`` (a short utterance, not silence, fills
    the window, so the embedding still describes the voice)."""
    if wav.size == 0:
        raise ValueError("cannot repeat an empty waveform")
    reps = -(-num_samples // wav.size)
    return np.tile(wav, reps)[:num_samples]


class LogMelFrontend(torch.nn.Module):
    """(B, N) waveforms + lengths -> per-utterance mean-normalised log-mel (B, T, n_mels)."""

    def __init__(self, fbank: FbankConfig):
        super().__init__()
        self.fbank = fbank
        self.extractor = LogMelExtractor(fbank)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ex = self.extractor
        if ex.window.device != wav.device:  # plain tensors, so .to(device) does not move them
            ex.window, ex.fbank = ex.window.to(wav.device), ex.fbank.to(wav.device)
        frames = 1 + lengths // self.fbank.hop_length
        with torch.no_grad():  # no parameters before this point
            if bool((lengths == wav.size(1)).all()):
                mel = ex.log_mel(wav)
            else:
                mel = wav.new_zeros(wav.size(0), int(frames.max()), self.fbank.n_mels)
                for i, n in enumerate(lengths.tolist()):
                    mel[i, : 1 + n // self.fbank.hop_length] = ex.log_mel(wav[i, :n])
            valid = frame_mask(frames, mel.size(1)).unsqueeze(-1).to(mel.dtype)
            mean = (mel * valid).sum(1, keepdim=True) / frames[:, None, None].to(mel.dtype)
            mel = (mel - mean) * valid
        return mel, frames


def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the padded frames of (B, C, T, F) feature maps."""
    return x * frame_mask(lengths, x.size(2))[:, None, :, None].to(x.dtype)


class BasicBlock(torch.nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(out_channels)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(out_channels)
        self.shortcut = torch.nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = torch.nn.Sequential(
                torch.nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                torch.nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``x`` zero beyond ``lengths`` -> the block's output, also zero beyond its lengths."""
        out_lengths = strided_lengths(lengths, self.stride)
        h = _mask_time(F.relu(self.bn1(self.conv1(x))), out_lengths)
        h = self.bn2(self.conv2(h)) + self.shortcut(x)
        return _mask_time(F.relu(h), out_lengths), out_lengths


class ThinResNet(torch.nn.Module):
    """Stem convolution, then one stage of basic blocks per width; stages 2.. stride 2."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (3, 4, 6, 3), stem_kernel: int = 3, stem_stride: int = 1):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {list(widths)} and blocks {list(blocks)} need one entry "
                             "per stage")
        if stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd (the masking assumes 'same' padding), "
                             f"got {stem_kernel}")
        self.stem_stride = stem_stride
        self.stem = torch.nn.Conv2d(1, widths[0], stem_kernel, stem_stride, stem_kernel // 2,
                                    bias=False)
        self.stem_bn = torch.nn.BatchNorm2d(widths[0])
        layers = []
        in_ch = widths[0]
        for stage, (width, n_blocks) in enumerate(zip(widths, blocks)):
            for b in range(n_blocks):
                layers.append(BasicBlock(in_ch, width, 2 if stage > 0 and b == 0 else 1))
                in_ch = width
        self.blocks = torch.nn.ModuleList(layers)
        self.out_channels = in_ch
        self.total_stride = stem_stride * 2 ** (len(widths) - 1)

    def out_bins(self, n_bins: int) -> int:
        """Frequency bins left after the stem and the strided stages."""
        for block in [self.stem_stride] + [b.stride for b in self.blocks]:
            n_bins = (n_bins - 1) // block + 1
        return n_bins

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) -> (B, C, T', F') and T' lengths."""
        lengths = strided_lengths(lengths, self.stem_stride)
        x = F.relu(self.stem_bn(self.stem(feats.unsqueeze(1))))
        x = _mask_time(x, lengths)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        return x, lengths


class GhostVLAD(torch.nn.Module):
    """NetVLAD with ``ghost_clusters`` extra clusters that take part in the soft assignment and
    are then dropped: frames that fit no real cluster (noise, silence) are absorbed there and
    add little to the output. Output: K residual sums, each L2-normalised (intra-
    normalisation), concatenated and L2-normalised again: (B, K * D), unit length."""

    def __init__(self, dim: int, clusters: int = 8, ghost_clusters: int = 2):
        super().__init__()
        if clusters < 1 or ghost_clusters < 0:
            raise ValueError(f"need clusters >= 1 and ghost_clusters >= 0, got {clusters}, "
                             f"{ghost_clusters}")
        self.clusters = clusters
        self.assign = torch.nn.Conv1d(dim, clusters + ghost_clusters, 1)
        self.centroids = torch.nn.Parameter(0.1 * torch.randn(clusters, dim))
        self.out_dim = clusters * dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, D, T) descriptors, padded frames ignored -> (B, K * D)."""
        weights = torch.softmax(self.assign(x), dim=1)[:, : self.clusters]
        weights = weights * frame_mask(lengths, x.size(2))[:, None, :].to(x.dtype)
        residuals = (torch.einsum("bkt,bdt->bkd", weights, x)
                     - weights.sum(-1, keepdim=True) * self.centroids)
        residuals = F.normalize(residuals, dim=-1)
        return F.normalize(residuals.flatten(1), dim=-1)


class ThinResNetGhostVLAD(torch.nn.Module):
    """Waveform -> speaker embedding (B, embed_dim), not normalised (see ``embed``)."""

    def __init__(self, fbank: FbankConfig, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (3, 4, 6, 3), stem_kernel: int = 3,
                 stem_stride: int = 1, descriptor_dim: int = 512, clusters: int = 8,
                 ghost_clusters: int = 2, embed_dim: int = 512):
        super().__init__()
        self.frontend = LogMelFrontend(fbank)
        self.trunk = ThinResNet(widths, blocks, stem_kernel, stem_stride)
        folded = self.trunk.out_channels * self.trunk.out_bins(fbank.n_mels)
        # The frequency axis is folded into channels: each (strided) frame becomes one
        # descriptor, like the paper's full-height convolution before the VLAD layer.
        self.descriptor = torch.nn.Sequential(
            torch.nn.Conv1d(folded, descriptor_dim, 1, bias=False),
            torch.nn.BatchNorm1d(descriptor_dim), torch.nn.ReLU())
        self.pool = GhostVLAD(descriptor_dim, clusters, ghost_clusters)
        self.output = torch.nn.Linear(self.pool.out_dim, embed_dim)
        self.embed_dim = embed_dim
        self.min_samples = fbank.n_fft // 2 + 1  # the STFT's reflect padding needs this many

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats, frames = self.frontend(wav, lengths)
        maps, frames = self.trunk(feats, frames)
        b, c, t, f = maps.shape
        descriptors = self.descriptor(maps.permute(0, 1, 3, 2).reshape(b, c * f, t))
        return self.output(self.pool(descriptors, frames))

    def embed(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return F.normalize(self(wav, lengths), dim=-1)


ENCODER_DEFAULTS = conf_defaults(ThinResNetGhostVLAD)


def fbank_config(frontend_conf: dict | None) -> FbankConfig:
    return FbankConfig(**checked_conf("frontend_conf", frontend_conf, conf_defaults(FbankConfig)))


def build_encoder(frontend_conf: dict | None, encoder_conf: dict | None) -> ThinResNetGhostVLAD:
    return ThinResNetGhostVLAD(fbank_config(frontend_conf),
                               **checked_conf("encoder_conf", encoder_conf, ENCODER_DEFAULTS))


def load_encoder(config: dict, checkpoint: str | Path, device: str = "cpu") -> ThinResNetGhostVLAD:
    """The trained encoder of a speaker_train experiment, for inference. Built from its
    config.yaml directly: ESPnet's task machinery would cost ~10 s of imports per process."""
    encoder = build_encoder(config.get("frontend_conf"), config.get("encoder_conf"))
    state = load_state_dict(checkpoint, map_location=device)
    prefix = "encoder."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    check_fits(encoder, weights, checkpoint, "its speaker_train config")
    return encoder.to(device)


class AdditiveMarginSoftmax(torch.nn.Module):
    """CosFace / AM-softmax: cross-entropy over ``scale * (cos(e, w_j) - margin [j = y])``.

    Why not a plain softmax: the embeddings are scored by cosine similarity, and this loss
    trains exactly that quantity, with a margin that pulls each speaker's utterances together
    in angle; a plain softmax also learns through the embedding's length and a bias, which the
    cosine score throws away (Wang et al., 2018; Xie et al. 2019 train their GhostVLAD model
    the same way). margin 0 gives the plain normalised (cosine) softmax.
    """

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a speaker classifier needs >= 2 training speakers, got {num_classes}")
        self.weight = torch.nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Loss and the (margin-free) cosine logits."""
        cosine = F.linear(F.normalize(emb, dim=-1), F.normalize(self.weight, dim=-1))
        target = F.one_hot(labels, cosine.size(1)).to(cosine.dtype)
        loss = F.cross_entropy(self.scale * (cosine - self.margin * target), labels)
        return loss, cosine


class SpeakerEmbeddingModel(AbsESPnetModel):
    """The ESPnet model: encoder + AM-softmax over ``num_spk`` training speakers."""

    def __init__(self, encoder: ThinResNetGhostVLAD, num_spk: int, margin: float = 0.2,
                 scale: float = 30.0):
        super().__init__()
        self.encoder = encoder
        self.loss = AdditiveMarginSoftmax(encoder.embed_dim, num_spk, margin, scale)

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                spk_labels: torch.Tensor, **kwargs
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        labels = spk_labels.reshape(-1).long()
        if labels.numel() != speech.size(0):
            raise ValueError(f"{labels.numel()} speaker labels for {speech.size(0)} utterances: "
                             "spk_labels must hold one integer per utterance")
        loss, cosine = self.loss(self.encoder(speech, speech_lengths), labels)
        acc = (cosine.argmax(-1) == labels).float().mean()
        stats = {"loss": loss.detach(), "acc": acc.detach()}
        return loss, stats, speech.new_tensor(speech.size(0))

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                      **kwargs) -> Dict[str, torch.Tensor]:
        feats, frames = self.encoder.frontend(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": frames}

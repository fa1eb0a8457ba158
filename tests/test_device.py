"""--device for the inference tools: a device that is not there is refused while the arguments
are parsed (before any loading), and inputs follow the model to wherever its parameters are.

This machine has no GPU, so a parameter on torch's "meta" device stands in for one: a tool that
forgot to move its inputs would hand the model CPU tensors, which the fakes below record."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from espnet_probe.utils.device import checked_device, model_device

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_accepted_and_unknown_names_are_refused():
    assert checked_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", "cuda:0 "):
        with pytest.raises(ValueError, match="not one of cpu, cuda, cuda:N"):
            checked_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA; the refusal needs one without")
def test_cuda_without_a_gpu_is_refused_with_the_reason():
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match=r"no CUDA device.*is_available\(\) is False"):
            checked_device(name)


@pytest.mark.skipif(NO_CUDA, reason="needs CUDA to check the device-index bound")
def test_cuda_index_beyond_the_devices_is_refused():
    with pytest.raises(ValueError, match="CUDA device"):
        checked_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("tool, args", [
    ("asr_decode", ["--asr_exp", "x", "--feats_dir", "f", "--out", "o"]),
    ("probe_decode", ["--probe_exp", "x", "--feats_dir", "f"]),
    ("speaker_id_probe", ["--asr_exp", "x", "--feats_dir", "f", "--out", "o"]),
    ("score_layers", ["--exp", "x", "--trials_dir", "t"]),
    ("score_speaker", ["--wav_scp", "w", "--trials", "t", "--out", "o"]),
])
def test_every_inference_tool_refuses_a_missing_gpu_while_parsing(tool, args, capsys):
    import importlib

    main = importlib.import_module(f"espnet_probe.bin.{tool}").main
    with pytest.raises(SystemExit) as exit_info:  # the paths do not exist: parsing comes first
        main(args + ["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device: device 'cuda': torch sees no CUDA device" in capsys.readouterr().err


def test_model_device_is_where_the_parameters_are():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(object()) == torch.device("cpu")  # no parameters at all (the oracle)


def write_feats(tmp_path: Path, lengths: dict[str, int], dim: int) -> Path:
    rng = np.random.default_rng(0)
    feats_dir = tmp_path / "feats"
    feats_dir.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{feats_dir / 'feats.ark'},{feats_dir / 'feats.scp'}") as w:
        for utt, n in lengths.items():
            w(utt, rng.standard_normal((n, dim)).astype(np.float32))
    return feats_dir


class OnMeta(torch.nn.Module):
    """Parameters on the meta device; records the device of every input it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.seen: list[torch.device] = []


def test_greedy_decode_moves_features_to_the_model(tmp_path):
    from espnet_probe.asr.decode import greedy_decode
    from espnet_probe.data.model_inputs import open_inputs

    class FakeCTCModel(OnMeta):
        token_list, blank_id = ["<blank>", "a", "b"], 0

        def encode(self, feats, lens):
            self.seen += [feats.device, lens.device]
            # meta tensors hold no values: CPU stand-ins for the encoder output (every
            # utterance padded to the batch's length is fine for this check)
            return torch.zeros(feats.size(0), feats.size(1), 3), torch.full((feats.size(0),),
                                                                           feats.size(1))

        class ctc:  # noqa: N801 - mirrors ESPnet's attribute name
            @staticmethod
            def argmax(enc):
                return torch.ones(enc.shape[:2], dtype=torch.long)

    model = FakeCTCModel()
    feats_dir = write_feats(tmp_path, {"u1": 5, "u2": 7}, 4)
    hyps, frames = greedy_decode(model, open_inputs(feats_dir, "feats"))
    assert hyps == {"u1": "a", "u2": "a"}  # a run of 1s collapses to one token
    assert frames == {"u1": 7, "u2": 7}  # the fake encoder pads every utterance to the batch
    assert model.seen and set(model.seen) == {torch.device("meta")}


def test_probe_decode_moves_features_to_the_model_and_writes_cpu_arrays(tmp_path):
    from espnet_probe.layer_record import Layer
    from espnet_probe.probe.decode import decode_set

    class FakeProbes(OnMeta):
        layers, layer_names, n_mels = (Layer("l1", 1, 8, 1, 0.01, -0.005),), ["l1"], 4

        def predict(self, x, lens):
            self.seen += [x.device, lens.device]
            return {"l1": torch.full((x.size(0), x.size(1), self.n_mels), 0.5)}

    model = FakeProbes()
    feats_dir = write_feats(tmp_path, {"u1": 5, "u2": 7}, 12)
    summary = decode_set(model, feats_dir, tmp_path / "out")
    assert summary.utterances == 2
    assert set(model.seen) == {torch.device("meta")}
    mel = dict(kaldiio.load_scp(str(tmp_path / "out" / "l1" / "mel.scp")))
    assert mel["u2"].shape == (7, 4) and np.allclose(mel["u2"], 0.5)


def test_probe_decode_is_redone_when_the_features_are_rewritten_in_place(tmp_path):
    from espnet_probe.probe.decode import HeardMel, decode_set

    feats_dir = write_feats(tmp_path, {"u1": 5, "u2": 7}, 12)
    out = tmp_path / "out"
    decode_set(HeardMel(n_mels=4), feats_dir, out)
    first = dict(kaldiio.load_scp(str(out / "original" / "mel.scp")))
    made = (out / ".done").stat().st_mtime_ns
    decode_set(HeardMel(n_mels=4), feats_dir, out)  # same features: kept
    assert (out / ".done").stat().st_mtime_ns == made
    # stage 3 redone in place: same paths, other values (the ark is rewritten)
    with kaldiio.WriteHelper(f"ark,scp:{feats_dir / 'feats.ark'},{feats_dir / 'feats.scp'}") as w:
        for utt, n in {"u1": 5, "u2": 7}.items():
            w(utt, np.full((n, 12), 3.0, dtype=np.float32))
    decode_set(HeardMel(n_mels=4), feats_dir, out)
    again = dict(kaldiio.load_scp(str(out / "original" / "mel.scp")))
    assert np.allclose(again["u1"], 3.0) and not np.allclose(first["u1"], again["u1"])


def test_run_sh_refuses_an_unknown_gpu_inference_value():
    proc = subprocess.run(["bash", "run.sh", "--gpu_inference", "yes", "--stage", "99"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "--gpu_inference must be true or false, got 'yes'" in proc.stderr

"""How many batches ESPnet's sampler makes of one pass over a data set, for an ASR config.

  python -m espnet_probe.bin.count_batches --config conf/asr/x.yaml \\
      --shape_file dump/fbank/train/feats_shape [--batch_bins N --batch_type numel ...]

The robust ASR models train on the clean set plus its noisy copy; the recipe gives them
``--num_iters_per_epoch`` = this count for the clean set, so that baseline and robust models
make the same number of updates per epoch (as when the paper adds noise on the fly) and an
epoch costs the same for both.  Options after the known ones are ESPnet trainer overrides
(``--asr_args``); the batch options among them win over the config's, as in ESPnet.
"""

from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # run as a tool (or its DDP worker), not imported
    import espnet_probe.utils.typecheck  # noqa: F401 - first: ESPnet's type checks off

import argparse
import sys

from espnet_probe.utils.yaml_io import load_yaml

BATCH_OPTIONS = ("batch_type", "batch_size", "batch_bins")


def count_batches(config: dict, shape_file: str) -> int:
    from espnet2.samplers.build_batch_sampler import build_batch_sampler

    sampler = build_batch_sampler(
        type=config.get("batch_type", "folded"), batch_size=int(config.get("batch_size", 20)),
        batch_bins=int(config.get("batch_bins", 1000000)), shape_files=[shape_file],
        fold_lengths=config.get("fold_length", [80000, 150])[:1])
    return len(sampler)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--shape_file", required=True)
    args, overrides = parser.parse_known_args(argv)
    with open(args.config) as f:
        config = load_yaml(f) or {}
    override = argparse.ArgumentParser(add_help=False)
    for name in BATCH_OPTIONS:
        override.add_argument(f"--{name}")
    given, _ = override.parse_known_args(overrides)
    config.update({k: v for k, v in vars(given).items() if v is not None})
    print(count_batches(config, args.shape_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())

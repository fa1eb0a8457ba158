"""Console progress of training jobs, read from ESPnet's log lines."""

from __future__ import annotations

import io
import threading
import time

from espnet_probe.bin.follow_training import Progress, follow

LOG = """\
[vm] 2026-12-01 13:13:44,769 (trainer:336) INFO: 1/12epoch started
[vm] 2026-12-01 13:14:01,000 (trainer:811) INFO: 1epoch:train:1-10batch: iter_time=0.01, loss_ctc=644.3, loss=644.359, backward_time=0.5
[vm] 2026-12-01 13:16:21,719 (trainer:394) INFO: 1epoch results: [train] iter_time=0.009, loss_ctc=358.866, loss=358.866, train_time=1.314, time=2 minutes and 29.8 seconds, total_count=110, [valid] loss_ctc=343.988, loss=343.988, time=6.13 seconds, total_count=13
[vm] 2026-12-01 13:16:26,438 (trainer:324) INFO: 2/12epoch started. Estimated time to finish: 29 minutes and 38.36 seconds
[vm] 2026-12-01 13:16:40,000 (trainer:811) INFO: 2epoch:train:11-20batch: iter_time=0.01, loss=181.5
"""


def test_epoch_lines_give_loss_time_and_eta():
    progress = Progress("ASR x")
    shown = [s for s in map(progress.line, LOG.splitlines()) if s]
    assert shown == ["[ASR x] epoch 1/12: train loss 358.866, valid loss 343.988, 156 s/epoch, ETA 29 min"]
    assert progress.heartbeat() == "[ASR x] epoch 2/12: 20 batches, train loss 181.5"


def test_follow_prints_a_heartbeat_while_waiting_and_stops_at_the_accounting_line(tmp_path):
    log = tmp_path / "train.log"
    out = io.StringIO()
    thread = threading.Thread(target=follow, args=(log, "probe y", None, 0.3, 0.1, out))
    thread.start()
    time.sleep(0.5)  # no log yet: a heartbeat
    log.write_text(LOG)
    time.sleep(0.4)
    with open(log, "a") as f:
        f.write("# Ended (code 0) at now, elapsed time 3 seconds\n")
    thread.join(timeout=5)
    assert not thread.is_alive()
    text = out.getvalue()
    assert "[probe y] starting" in text and "[probe y] epoch 1/12: train loss 358.866" in text

"""Training progress: tqdm's live bar on a terminal, one plain line per epoch everywhere else."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from lgeseg.errors import ConfigError
from lgeseg.progress import LineProgress, progress_bar
from lgeseg.run import run


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_plain_line_per_epoch_with_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=4, initial=1, desc="train", stream=out, clock=clock)  # resumed after epoch 1
    for seconds, loss in ((2.0, "0.5000"), (4.0, "0.2500"), (6.0, "0.1250")):
        clock.now += seconds
        bar.set_postfix(loss=loss)
        bar.update(1)
    bar.close()
    # Rates count only the epochs run here: 2/1, (2+4)/2, (2+4+6)/3 s; ETA = rate * epochs left.
    assert out.getvalue().splitlines() == [
        "train: epoch 2/4  loss=0.5000  2.0 s/epoch  ETA 0:00:04",
        "train: epoch 3/4  loss=0.2500  3.0 s/epoch  ETA 0:00:03",
        "train: epoch 4/4  loss=0.1250  4.0 s/epoch",
    ]
    assert "\r" not in out.getvalue()


def test_interval_holds_lines_back_but_never_the_last():
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=5, stream=out, interval=10.0, clock=clock)
    for _ in range(4):
        clock.now += 4.0  # at 4, 8, 12, 16 s: printed at 4 (first), then not before 14 -> 16
        bar.update(1)
    bar.close()  # epoch 4 was printed; nothing more
    assert [line.split("  ")[0] for line in out.getvalue().splitlines()] == ["epoch 1/5", "epoch 4/5"]
    clock.now += 1.0
    bar.update(1)  # the last epoch always prints
    assert out.getvalue().splitlines()[-1] == "epoch 5/5  3.4 s/epoch"  # 17 s / 5 epochs


def test_terminal_gets_the_live_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = progress_bar(total=3, desc="train", stream=terminal)
    bar.update(1)
    bar.close()
    assert isinstance(bar, tqdm) and "\r" in terminal.getvalue()
    monkeypatch.setenv("LGESEG_PROGRESS_SECONDS", "soon")
    with pytest.raises(ConfigError, match="LGESEG_PROGRESS_SECONDS must be a number of seconds >= 0, got 'soon'"):
        progress_bar(total=3, stream=io.StringIO())


def test_training_into_a_log_prints_plain_epoch_lines(make_dataset, tiny_run_config, tmp_path, capsys):
    run(tiny_run_config(train__epochs=2), tmp_path / "run", progress=True, dataset=make_dataset())
    err = capsys.readouterr().err  # captured: not a terminal, as in a log file
    lines = [line for line in err.splitlines() if line.startswith("train: epoch")]
    assert [line.split("  ")[0] for line in lines] == ["train: epoch 1/2", "train: epoch 2/2"]
    assert all("loss=" in line and "val_acc=" in line for line in lines) and "\r" not in err

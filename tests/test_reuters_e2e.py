"""The real job: 20 epochs of the Keras Reuters example on the real data (minutes)."""
import numpy as np
import pytest

import fastlstm


@pytest.mark.slow
def test_train_reuters_reaches_keras_accuracy(data_dir):
    result = fastlstm.train_reuters(seed=1, verbose=0)
    assert result.test_accuracy >= 0.70
    h = result.history.history
    assert len(h["val_accuracy"]) == 20 and h["loss"][-1] < h["loss"][0]
    assert result.test_accuracy == pytest.approx(h["val_accuracy"][-1])
    # evaluate() agrees with an independent numpy computation from predict()
    from fastlstm.datasets import reuters
    from fastlstm.preprocessing import pad_sequences

    _, (x_test, y_test) = reuters.load_data(num_words=1000)
    probs = result.model.predict(pad_sequences(x_test, maxlen=100), batch_size=256)
    assert np.mean(probs.argmax(axis=1) == y_test) == pytest.approx(result.test_accuracy)
    assert -np.mean(np.log(probs[np.arange(len(y_test)), y_test])) == pytest.approx(result.test_loss, rel=1e-5)


def test_cli_runs_one_short_epoch(data_dir, tmp_path, capsys):
    from fastlstm.__main__ import main

    png = tmp_path / "curves.png"
    assert main(["train-reuters", "--epochs", "1", "--units", "8", "--embedding-dim", "8",
                 "--maxlen", "20", "--seed", "3", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "/step - accuracy: " in out and "test accuracy" in out  # Keras prints no "Epoch 1/1"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

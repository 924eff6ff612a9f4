"""Token tasks in training: embedding models, padded batches, length bucketing, traces of
padded batches (lengths recorded, analysis over valid steps), flush-to-zero."""

import json

import numpy as np
import pytest
import torch

from su_neuro import flush_denormal
from su_neuro.analysis.ops import count_layer_ops
from su_neuro.analysis.stats import ActivityAccumulator
from su_neuro.denormal import flush_denormal_enabled
from su_neuro.train import TrainConfig, bucket_order, build_model, epoch_order, load_task, train

SHORT = {"n_train": 256, "n_valid": 16, "n_test": 48, "max_length": 120}


def _cfg(**kw):
    base = dict(task="listops_short", task_options=SHORT, hidden_size=16, batch_size=32, max_steps=3,
                backend="numba", init_rate=0.3, checkpoint_every=0, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_token_model_built_from_the_task():
    cfg = _cfg(embed_dim=12)
    task = load_task(cfg)
    model = build_model(cfg, task)
    assert model.embed.num_embeddings == 16 and model.embed.embedding_dim == 12
    assert model.embed.padding_idx == 0 and model.rnn.input_size == 12
    with pytest.raises(ValueError, match="embed_dim applies to token tasks only"):
        build_model(TrainConfig(task="copy", embed_dim=8), load_task(TrainConfig(task="copy")))


def test_bucket_order_is_a_permutation_of_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 1000, size=1000)
    order = bucket_order(5, 2, lengths, 32, 10)
    assert sorted(order.tolist()) == list(range(1000))
    assert np.array_equal(order, bucket_order(5, 2, lengths, 32, 10))
    assert not np.array_equal(order, bucket_order(5, 3, lengths, 32, 10))
    spread = lambda o: np.mean([np.ptp(lengths[o[i:i + 32]]) for i in range(0, 992, 32)])  # noqa: E731
    random_spread = spread(epoch_order(5, 2, 1000))
    assert spread(order) < 0.2 * random_spread
    # the samples that fill no whole batch are a random choice, not the longest of the last
    # pool: over 20 epochs with one pool covering the set, every sample gets trained on
    lengths = rng.integers(10, 500, size=1000)
    trained = set()
    for epoch in range(20):
        order = bucket_order(0, epoch, lengths, 64, 50)
        left = order[15 * 64:]
        assert np.mean(lengths[left]) < np.quantile(lengths, 0.9)
        trained.update(order[:15 * 64].tolist())
    assert trained == set(range(1000))


def test_train_tokens_with_bucketing_and_trace(tmp_path):
    from su_neuro.traces import TraceReader

    cfg = _cfg(bucket_pool=4, trace=True, trace_samples=20, eval_batch_size=8, rate_target=0.1, rate_weight=1.0)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res["step"] == 3 and 0.0 <= res["test_acc"] <= 1.0
    # the update rate counts only valid steps: a rhythmic gate is batch uniform, so the rate
    # over valid steps is the gate's mean over each sample's own steps
    task = load_task(cfg)
    with TraceReader(tmp_path / "run" / "trace.h5") as r:
        lengths = r.lengths()
        chosen = r.run_meta["test_indices"]
        assert len(chosen) == len(set(chosen)) == 20 and chosen == sorted(chosen)
        assert chosen != list(range(20)) and max(chosen) < len(task.test)
        want = [task.test[i][0].shape[0] for i in chosen]
        assert lengths.tolist() == want
        gates = r.gates("layers.0")
        assert gates.shape[1] == max(want)
        for i, n in enumerate(want):
            assert not gates[i, n:].any()
        nnz = r.input_nnz()
        assert np.all(nnz[np.arange(gates.shape[1])[None, :] >= lengths[:, None]] == 0)
        acc = ActivityAccumulator(gates.shape[1], 16, lif=False)
        acc.update(gates, lengths=lengths)
        act = acc.result()
        assert act.update_rate == pytest.approx(gates.sum() / (sum(want) * 16))
    report = json.loads((tmp_path / "run" / "result.json").read_text())
    assert report["test_rate"] > 0.0


def test_ops_count_only_valid_steps():
    meta = {"cell": "gru", "gate": "event", "input_size": 3, "hidden_size": 4, "recurrent": True,
            "input_kind": "dense"}
    gates = np.zeros((2, 5, 4), bool)
    gates[0, :5, 0] = True
    gates[1, :2, 1] = True
    full = count_layer_ops(meta, gates)
    short = count_layer_ops(meta, gates, lengths=np.array([5, 2]))
    assert full.dense_macs == 10 * 3 * 4 * (3 + 4)
    assert short.dense_macs == 7 * 3 * 4 * (3 + 4)
    assert short.dense_neuron_updates == 7 * 4 and short.neuron_updates == full.neuron_updates == 7
    # the event gate computes every valid neuron's candidate: 4 rows x 3 inputs x 3 gates per step
    assert short.effective_macs < full.effective_macs


def test_padded_and_unpadded_training_steps_agree(tmp_path):
    """One optimiser step on a padded batch = the same step with the loss summed per sequence."""
    from su_neuro.datasets import pad_collate
    from su_neuro.train import _batch_stats

    cfg = _cfg()
    task = load_task(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, task)
    items = [task.train[i] for i in range(6)]
    x, y, lengths = pad_collate(items, pad_id=task.pad_id)
    assert len(set(lengths.tolist())) > 1
    loss, _, _ = _batch_stats(model(x, lengths=lengths), y, "classify")
    loss.backward()
    padded = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for xi, yi in items:
        li, _, _ = _batch_stats(model(xi.unsqueeze(0)), torch.tensor([yi]), "classify")
        li.backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, padded[n], atol=2e-5, rtol=1e-4), n


def test_flush_denormal_context():
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
    with flush_denormal(True) as supported:
        if supported:
            assert flush_denormal_enabled()
            assert float(tiny * 1.0) == 0.0
    assert not flush_denormal_enabled()
    assert float(tiny * 1.0) != 0.0
    with flush_denormal(False):
        assert float(tiny * 1.0) != 0.0
    with pytest.raises(TypeError, match="bool"):
        with flush_denormal("yes"):
            pass

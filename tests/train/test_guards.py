"""Divergence guards and the end-of-run check (issue 26): a NaN or infinite loss or gradient norm, a
bound, or a saturated model stops the run naming the step, the records and the value; the checkpoint
it names is a good one; weights that never moved or are not finite are never written as the model."""

from __future__ import annotations

import json

from vlalign.cli import main


def _train(capsys, base, prefs, out, *sets, resume=False, force=False):
    args = ["train", "--model", str(base / "llava"), "--data", str(prefs), "--out", str(out)]
    args += ["--resume"] * resume + ["--force"] * force
    for kv in ("batch_size=4", "warmup_ratio=0", "schedule=constant", *sets):
        args += ["--set", kv]
    rc = main(args)
    captured = capsys.readouterr() if capsys is not None else None
    if captured is None:
        return rc, "", ""
    errors = [e[e.index("vlalign: error:"):] for e in captured.err.splitlines() if "vlalign: error:" in e]
    return rc, captured.out, errors[-1] if errors else ""


def _steps(out):
    return sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))


def test_a_nan_never_names_the_state_that_produced_it(capsys, tmp_path, tiny_base, tiny_prefs):
    out = tmp_path / "run"
    rc, _, err = _train(capsys, tiny_base, tiny_prefs, out, "lr=1e30", "max_steps=3", "save_every=1")
    # step 1's update (lr 1e30) made the weights that give a NaN at step 2: its checkpoint is not "good"
    assert rc == 2 and err.startswith("vlalign: error: loss is nan at step 2 (records ")
    assert err.endswith("no checkpoint precedes it: --resume starts the run over")
    assert _steps(out) == [] and not (out / "model").exists()


def test_the_checkpoint_a_nan_names_resumes_with_a_sane_lr(capsys, tmp_path, tiny_base, tiny_prefs):
    out = tmp_path / "run"
    assert _train(capsys, tiny_base, tiny_prefs, out, "lr=1e-3", "max_steps=2", "save_every=1")[0] == 0
    rc, _, err = _train(capsys, tiny_base, tiny_prefs, out, "lr=1e30", "max_steps=4", "save_every=1",
                        resume=True, force=True)
    assert rc == 2 and " at step 4 (records " in err, err  # step 3's update broke the weights
    assert err.endswith(f"the last good state is {out}/checkpoints/step-2 (--resume continues from it; "
                        "lower lr with --resume --force)")
    assert _steps(out) == [1, 2]  # step-3, written from the broken weights, is gone
    rc, printed, _ = _train(capsys, tiny_base, tiny_prefs, out, "lr=1e-4", "max_steps=4", "save_every=1",
                            resume=True, force=True)
    assert rc == 0 and "model written" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2, 3, 4] and all(r["grad_norm"] < 1e3 for r in trained)
    assert [r["lr"] for r in trained[2:]] == [1e-4] * 2  # the forced lr, not the restored one


def test_a_saturating_lr_is_stopped_by_the_zero_gradient_guard(capsys, tmp_path, tiny_base, tiny_prefs):
    out = tmp_path / "run"
    rc, _, err = _train(capsys, tiny_base, tiny_prefs, out, "lr=1e6", "max_steps=6", "save_every=1")
    assert rc == 2 and "the gradient norm has been 0 since step 2 (guard_zero_grad_steps=3" in err, err
    assert " at step 4 (records " in err and "no checkpoint precedes it" in err
    assert _steps(out) == [] and not (out / "model").exists()


def test_an_infinite_gradient_norm_stops_at_once(capsys, tmp_path, tiny_base, tiny_prefs):
    rc, _, err = _train(capsys, tiny_base, tiny_prefs, tmp_path / "run", "beta=1e30", "max_steps=3")
    assert rc == 2 and err.startswith("vlalign: error: the gradient norm is inf at step 1 (records "), err
    assert not (tmp_path / "run" / "model").exists()


def test_weights_that_never_moved_are_not_written_as_the_model(capsys, tmp_path, tiny_base, tiny_prefs):
    rc, printed, err = _train(capsys, tiny_base, tiny_prefs, tmp_path / "run", "lr=1e-30", "max_steps=1")
    assert rc == 2 and "model written" not in printed
    assert err.endswith("after 1 steps no trainable weight moved from the start (a zero or vanishing gradient, "
                        "or an lr too small); no model written"), err
    assert not (tmp_path / "run" / "model").exists()


def test_a_configured_bound_stops_the_run(capsys, tmp_path, tiny_base, tiny_prefs):
    rc, _, err = _train(capsys, tiny_base, tiny_prefs, tmp_path / "run", "guard_max_loss=0.5", "max_steps=2")
    assert rc == 2 and "loss is 0.693147, over guard_max_loss=0.5 at step 1 (records " in err, err

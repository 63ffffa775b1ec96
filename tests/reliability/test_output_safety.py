"""Writing output never destroys anything Sentinel did not write (issue 9, item 1).

A folder of user files survives `save_model` and every `--out`; `--out .` and `--out ~` are refused; replacing
an earlier Sentinel model is atomic (a process killed between any two filesystem steps leaves a loadable model);
staging folders of killed saves are cleaned by the next save; permissions are the user's usual ones.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from sentinel import files
from sentinel.cli import main
from sentinel.errors import InvalidOutputError
from sentinel.models import load_model, save_model
from sentinel.models import loading
from tests.conftest import make_char_tokenizer, make_tiny_model


def _model(seed: int) -> torch.nn.Module:
    model = make_tiny_model("gpt2", seed=seed)
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    return model


def _user_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's own files (one nested); returns what it held."""
    (path / "thesis").mkdir(parents=True)
    content = {"notes.txt": b"my notes", "thesis/chapter1.tex": b"\\section{One}", "config.json": b"{\"mine\": 1}"}
    for name, data in content.items():
        (path / name).write_bytes(data)
    return content


def _unchanged(path: Path, content: dict[str, bytes]) -> bool:
    return all((path / name).read_bytes() == data for name, data in content.items()) and sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == sorted(content)


def _first_weight(folder: Path) -> float:
    return float(load_model(folder, device="cpu").model.transformer.h[0].attn.c_attn.weight[0, 0].detach())


def test_save_model_refuses_a_folder_of_user_files(tmp_path):
    user = tmp_path / "mine"
    content = _user_folder(user)
    with pytest.raises(InvalidOutputError, match="did not write"):
        save_model(_model(0), make_char_tokenizer(), user)
    assert _unchanged(user, content)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]   # no staging folder left behind either


def test_cli_prune_out_refuses_user_files_cwd_and_home(tmp_path, monkeypatch, capsys):
    model_dir = save_model(_model(0), make_char_tokenizer(), tmp_path / "model")
    user = tmp_path / "mine"
    content = _user_folder(user)
    prune = ["prune", "--model", str(model_dir), "--device", "cpu", "--heads", "0:1"]

    assert main([*prune, "--out", str(user)]) == 2
    assert _unchanged(user, content)

    monkeypatch.chdir(user)
    assert main([*prune, "--out", "."]) == 2
    assert _unchanged(user, content)

    home = tmp_path / "home"
    home_content = _user_folder(home)
    monkeypatch.setenv("HOME", str(home))
    assert main([*prune, "--out", "~"]) == 2
    assert _unchanged(home, home_content)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: Refusing to write to") for line in err)
    assert "current directory" in err[1] and "home folder" in err[2]


def test_empty_cwd_root_and_parents_of_cwd_are_refused(tmp_path, monkeypatch):
    inside = tmp_path / "a" / "b"
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)
    for path in (".", str(tmp_path / "a"), "/"):
        with pytest.raises(InvalidOutputError, match="Refusing"):
            files.check_output_folder(path)
    with pytest.raises(InvalidOutputError, match="is a file"):
        (tmp_path / "f.txt").write_text("x")
        files.check_output_folder(tmp_path / "f.txt")


def test_new_empty_and_earlier_sentinel_folders_are_accepted_and_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    saved = save_model(_model(0), make_char_tokenizer(), empty)
    assert files.read_marker(saved)["kind"] == "model"
    again = save_model(_model(1), make_char_tokenizer(), saved)
    assert _first_weight(again) == pytest.approx(float(_model(1).transformer.h[0].attn.c_attn.weight[0, 0].detach()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_sentinel_model_folder_with_a_user_file_added_is_not_replaced(tmp_path):
    saved = save_model(_model(0), make_char_tokenizer(), tmp_path / "m")
    (saved / "my-eval.txt").write_text("keep me")
    with pytest.raises(InvalidOutputError, match="my-eval.txt"):
        save_model(_model(1), make_char_tokenizer(), saved)
    assert (saved / "my-eval.txt").read_text() == "keep me"


def test_run_folders_and_model_folders_are_not_mixed(tmp_path):
    run = files.prepare_run_folder(tmp_path / "run")
    assert files.read_marker(run)["kind"] == "run"
    with pytest.raises(InvalidOutputError, match="run output"):
        save_model(_model(0), make_char_tokenizer(), run)
    model = save_model(_model(0), make_char_tokenizer(), tmp_path / "model")
    with pytest.raises(InvalidOutputError, match="model output"):
        files.prepare_run_folder(model)


def test_finetune_benchmark_and_demo_build_out_refuse_user_files_before_any_work(tmp_path, capsys):
    user = tmp_path / "mine"
    content = _user_folder(user)
    assert main(["finetune", "--steps", "1", "--out", str(user)]) == 2
    assert main(["benchmark", "--steps", "1", "--out", str(user)]) == 2
    assert main(["build-demo-model", "--out", str(user)]) == 2
    assert _unchanged(user, content)
    assert capsys.readouterr().err.count("did not write") == 3


def test_folder_permissions_are_the_users_usual_ones(tmp_path):
    old = os.umask(0o022)
    try:
        saved = save_model(_model(0), make_char_tokenizer(), tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o755


def test_stale_staging_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "m"
    dead_pid = _dead_pid()
    stale = tmp_path / f".m{files._STAGING}{dead_pid}-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    other = tmp_path / ".other-hidden-folder"
    other.mkdir()
    save_model(_model(0), make_char_tokenizer(), target)
    assert not stale.exists() and other.exists()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_kill_between_any_two_filesystem_steps_leaves_a_complete_model(tmp_path):
    """Fork a child that saves over an existing model and dies (os._exit) just before its Nth filesystem step,
    for every N; after each death the folder exists and loads as the old model or the new one, never a mix."""
    target = tmp_path / "m"
    tokenizer = make_char_tokenizer()
    old_value = float(_model(0).transformer.h[0].attn.c_attn.weight[0, 0].detach())
    new_value = float(_model(1).transformer.h[0].attn.c_attn.weight[0, 0].detach())
    steps = ["_mkdir", "_write_text", "_rename", "_rmtree", "_exchange"]
    seen: list[str] = []
    for kill_at in range(1, 40):
        save_model(_model(0), tokenizer, target)   # the old model (also cleans the previous child's staging)
        new = _model(1)
        pid = os.fork()
        if pid == 0:   # child: count filesystem steps, die before step `kill_at`
            calls = [0]

            def counted(name: str, fn):
                def step(*args, **kwargs):
                    calls[0] += 1
                    with open(tmp_path / "steps.log", "a") as log:
                        log.write(f"{kill_at} {calls[0]} {name}\n")
                    if calls[0] == kill_at:
                        os._exit(9)
                    return fn(*args, **kwargs)
                return step

            for name in steps:
                setattr(files, name, counted(name, getattr(files, name)))
            loading.safetensors_save_from = counted("save_weights", loading.safetensors_save_from)
            save_model(new, tokenizer, target)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert target.is_dir(), f"the model folder went missing when killed before step {kill_at}"
        value = _first_weight(target)
        assert value == pytest.approx(old_value) or value == pytest.approx(new_value)
        if code == 0:   # the save ran to the end without reaching step `kill_at`
            assert value == pytest.approx(new_value)
            break
        assert code == 9
        seen.append(value == pytest.approx(new_value))
    else:
        pytest.fail("the save never completed")
    logged = (tmp_path / "steps.log").read_text()
    assert "_exchange" in logged and "_rmtree" in logged and "save_weights" in logged
    assert True in seen and False in seen   # some kills left the old model, some (after the swap) the new one
    save_model(_model(0), tokenizer, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "steps.log"]   # every staging folder cleaned


def test_analyze_out_needs_overwrite_to_replace_a_file(tmp_path, capsys):
    model_dir = save_model(_model(0), make_char_tokenizer(), tmp_path / "model")
    csv = tmp_path / "scores.csv"
    csv.write_text("my old scores")
    args = ["analyze", "--model", str(model_dir), "--device", "cpu", "--metrics", "magnitude", "--out", str(csv)]
    assert main(args) == 2
    assert csv.read_text() == "my old scores"
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert csv.read_text().startswith("layer,head,pruned,magnitude")


def test_checkpoint_cleanup_removes_only_sentinel_folders(tmp_path):
    user = tmp_path / "checkpoint"
    content = _user_folder(user)
    assert files.remove_owned_folder(user) is False
    assert _unchanged(user, content)
    ours = save_model(_model(0), make_char_tokenizer(), tmp_path / "ckpt")
    assert files.remove_owned_folder(ours) is True and not ours.exists()


def test_without_an_atomic_exchange_the_replace_still_ends_with_the_new_model(tmp_path, monkeypatch):
    """Systems without renameat2/renamex_np (Windows, some filesystems) take the three-rename fallback."""
    target = save_model(_model(0), make_char_tokenizer(), tmp_path / "m")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    save_model(_model(1), make_char_tokenizer(), target)
    assert _first_weight(target) == pytest.approx(float(_model(1).transformer.h[0].attn.c_attn.weight[0, 0].detach()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_build_demo_model_replaces_its_earlier_build_atomically(tmp_path, capsys):
    out = tmp_path / "demo"
    tiny = ["--out", str(out), "--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
            "--n-positions", "16", "--batch-size", "2", "--max-steps", "1", "--warmup-steps", "1", "--eval-every", "1",
            "--log-every", "1", "--max-files", "20", "--validation-fraction", "0.2", "--no-card", "--device", "cpu"]
    assert main(["build-demo-model", *tiny]) == 0
    assert files.read_marker(out)["kind"] == "model"
    assert json.loads((out / "build_info.json").read_text())["out_dir"] == str(out.resolve())
    assert main(["build-demo-model", *tiny, "--seed", "1"]) == 0
    assert json.loads((out / "build_info.json").read_text())["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

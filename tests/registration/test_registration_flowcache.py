"""The teacher-flow cache stores float16 fields per pair, is reused while the teacher and the
pairs stay the same, and is rebuilt when the teacher checkpoint changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.registration.flowcache import build_flow_cache


def _pair(i):
    g = torch.Generator().manual_seed(i)
    labels = torch.randint(0, 3, (1, 8, 8, 8), generator=g)
    return {
        "fixed": torch.rand(1, 8, 8, 8, generator=g),
        "moving": torch.rand(1, 8, 8, 8, generator=g),
        "fixed_labels": labels,
        "moving_labels": labels,
    }


def test_cache_build_reuse_and_rebuild(tmp_path):
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"teacher v1")
    calls = []

    def teacher(fixed, moving):
        calls.append(fixed.shape[0])
        return torch.cat([fixed - moving, fixed, moving], dim=1) * 3.0

    kwargs = dict(
        teacher_checkpoint=ckpt,
        run_teacher=teacher,
        pair=_pair,
        pairs=5,
        shape=(8, 8, 8),
        source_key="toy",
        has_labels=True,
        batch_size=2,
    )
    cache = build_flow_cache(tmp_path / "cache", **kwargs)
    assert len(cache) == 5 and sum(calls) == 5
    item = cache.get(3)
    expected = _pair(3)
    np.testing.assert_allclose(item["fixed"], expected["fixed"], atol=1e-3)
    np.testing.assert_allclose(item["teacher_disp"][1], 3 * expected["fixed"][0], atol=5e-3)
    assert item["teacher_disp"].dtype == torch.float32 and cache.flows.dtype == np.float16
    assert torch.equal(item["fixed_labels"], expected["fixed_labels"])
    build_flow_cache(tmp_path / "cache", **kwargs)
    assert sum(calls) == 5  # reused: the teacher did not run again
    ckpt.write_bytes(b"teacher v2")
    build_flow_cache(tmp_path / "cache", **kwargs)
    assert sum(calls) == 10  # teacher changed: rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "teacher.pt"]


def test_teacher_without_a_file_is_keyed_by_its_settings_and_may_see_labels(tmp_path):
    seen = []

    def teacher(fixed, moving, fixed_labels=None, moving_labels=None):
        seen.append(fixed_labels is not None and moving_labels is not None)
        return torch.zeros(fixed.shape[0], 3, *fixed.shape[2:]) + float(len(seen))

    kwargs = dict(
        run_teacher=teacher,
        pair=_pair,
        pairs=3,
        shape=(8, 8, 8),
        source_key="toy",
        has_labels=True,
        batch_size=3,
        teacher_labels=True,
    )
    build_flow_cache(tmp_path / "cache", teacher_key="optimise iterations=10", **kwargs)
    build_flow_cache(tmp_path / "cache", teacher_key="optimise iterations=10", **kwargs)
    assert seen == [True]  # reused
    cache = build_flow_cache(tmp_path / "cache", teacher_key="optimise iterations=20", **kwargs)
    assert seen == [True, True]  # settings changed: rebuilt
    assert float(cache.get(0)["teacher_disp"].mean()) == 2.0


def test_optimiser_teacher_distils_a_student_through_the_cli(tmp_path):
    """distill.teacher=optimise: the cache holds the optimiser's fields (keyed by its settings,
    rebuilt when they change) and an L1 student trains on them."""
    import json

    from medistill.cli.main import main
    from medistill.optimise import OptimiseConfig, optimise

    out = tmp_path / "student"
    args = [
        "train", "student", "--config", "demo", "--out", str(out),
        "--set", "loop.steps=2", "--set", "data.subjects=3", "--set", "data.pairs=2",
        "--set", "loop.progress=false", "--set", "distill.mode=l1",
        "--set", "distill.teacher=optimise", "--set", "distill.teacher_config=fast",
    ]  # fmt: skip
    few = ["--set", 'distill.teacher_set=["affine.iterations=[5,5]","deformable.iterations=[5]"]']
    assert main(args + few) == 0
    cache = out / "flow_cache"
    key = json.loads((cache / "index.json").read_text())["key"]
    flows = np.fromfile(cache / "flows.f16", dtype=np.float16)
    assert np.abs(flows).max() > 0  # the optimiser moved something
    more = ["--set", 'distill.teacher_set=["affine.iterations=[5,5]","deformable.iterations=[9]"]']
    assert main(args + more + ["--set", "loop.steps=3", "--resume"]) == 0
    assert json.loads((cache / "index.json").read_text())["key"] != key
    # the cached field of pair 0 is the optimiser's on the cached images
    from medistill.optimise import presets
    from medistill.registration.flowcache import FlowCache
    from medistill.train import load_config

    item = FlowCache(cache).get(0)
    cfg = load_config(
        OptimiseConfig, "fast", presets=presets(),
        overrides=["affine.iterations=[5,5]", "deformable.iterations=[9]"],
    )  # fmt: skip
    ref = optimise(item["fixed"][None], item["moving"][None], cfg).disp[0]
    # float16 images and fields in the cache: equal up to rounding
    assert (ref - item["teacher_disp"]).abs().mean() < 0.01


def test_ranks_share_the_teacher_work_and_build_the_same_cache(tmp_path):
    """Two 'ranks' (threads here) of one run fill disjoint batches of one cache; the result is
    the cache one process builds alone."""
    import threading

    seen = {0: [], 1: []}

    def teacher_for(r):
        def teacher(fixed, moving):
            seen[r].append(fixed.shape[0])
            return torch.cat([fixed - moving, fixed, moving], dim=1) * 3.0

        return teacher

    common = dict(pair=_pair, pairs=5, shape=(8, 8, 8), source_key="toy", has_labels=True,
                  batch_size=2, teacher_key="toy teacher")  # fmt: skip
    single = build_flow_cache(tmp_path / "single", run_teacher=teacher_for(0), **common)
    seen[0].clear()
    errors = []

    def run(r):
        try:
            build_flow_cache(tmp_path / "shared", run_teacher=teacher_for(r), rank=r, world=2,
                             run_id="run-1", wait_s=60, **common)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen[0] == [2, 1] and seen[1] == [2]  # batches 0, 2 on rank 0; batch 1 on rank 1
    shared = build_flow_cache(tmp_path / "shared", run_teacher=teacher_for(0), **common)
    for i in range(5):
        assert torch.equal(shared.get(i)["teacher_disp"], single.get(i)["teacher_disp"])
        assert torch.equal(shared.get(i)["fixed_labels"], single.get(i)["fixed_labels"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "single"]


def test_a_stopped_build_is_continued_not_restarted(tmp_path):
    """A build stopped after some batches keeps its folder; the next build of the same cache runs
    the teacher only on the missing batches and gives the cache a straight build gives; a build
    for another teacher discards the partial one; nothing of a build is left once done."""
    calls: list[int] = []

    def teacher(fixed, moving):
        calls.append(int(fixed.shape[0]))
        if stop_after and len(calls) > stop_after:
            raise KeyboardInterrupt  # e.g. Ctrl-C, or a session that ends
        return torch.cat([fixed - moving, fixed, moving], dim=1) * 3.0

    kwargs = dict(
        run_teacher=teacher,
        pair=_pair,
        pairs=7,
        shape=(8, 8, 8),
        source_key="toy",
        has_labels=True,
        batch_size=2,
    )
    stop_after = 0
    straight = build_flow_cache(tmp_path / "straight", teacher_key="t", **kwargs)
    assert sum(calls) == 7
    calls.clear()
    stop_after = 2
    try:
        build_flow_cache(tmp_path / "cache", teacher_key="t", **kwargs)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the teacher was meant to stop the build")
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("cache.building-")]
    assert len(partial) == 1 and (partial[0] / "progress").read_text() == "4"  # pairs done
    calls.clear()
    stop_after = 0
    cache = build_flow_cache(tmp_path / "cache", teacher_key="t", **kwargs)
    assert calls == [2, 1]  # batches 3 and 4 only (pairs 4-5 and 6)
    for i in range(7):
        a, b = cache.get(i), straight.get(i)
        for name in ("fixed", "moving", "teacher_disp", "fixed_labels"):
            assert torch.equal(a[name], b[name]), (i, name)
    assert not list(tmp_path.glob("cache.building-*"))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        p.name for p in (tmp_path / "straight").iterdir()
    )
    # continued with another batch size: it counts pairs, not batches
    stop_after = 2
    calls.clear()
    try:
        build_flow_cache(tmp_path / "rebatched", teacher_key="t", **kwargs)
    except KeyboardInterrupt:
        pass
    stop_after = 0
    calls.clear()
    cache = build_flow_cache(tmp_path / "rebatched", teacher_key="t", **{**kwargs, "batch_size": 3})
    assert calls == [3]  # pairs 4, 5 and 6
    for i in range(7):
        assert torch.equal(cache.get(i)["teacher_disp"], straight.get(i)["teacher_disp"]), i
    # another teacher: a partial build of the old one is not continued
    stop_after = 1
    calls.clear()
    try:
        build_flow_cache(tmp_path / "other", teacher_key="t", **kwargs)
    except KeyboardInterrupt:
        pass
    stop_after = 0
    calls.clear()
    assert len(list(tmp_path.glob("other.building-*"))) == 1
    build_flow_cache(tmp_path / "other", teacher_key="t2", **kwargs)
    assert sum(calls) == 7
    assert not list(tmp_path.glob("other.building-*"))  # the stale partial build is removed


def test_a_failing_teacher_leaves_nothing(tmp_path):
    """An error (not an interruption) would come back at the same pair: nothing is kept."""
    calls: list[int] = []

    def teacher(fixed, moving):
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("teacher failed")
        return torch.zeros(fixed.shape[0], 3, *fixed.shape[2:])

    kwargs = dict(run_teacher=teacher, pair=_pair, pairs=4, shape=(8, 8, 8), source_key="toy",
                  has_labels=False, batch_size=1)  # fmt: skip
    with pytest.raises(ValueError, match="teacher failed"):
        build_flow_cache(tmp_path / "cache", teacher_key="t", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.lock"]  # an empty lock file


def test_two_builders_of_one_cache_take_turns(tmp_path):
    """Two processes (threads here) asking for the same cache at once: one builds it, the other
    waits for the lock and then reuses it; the teacher runs once per pair."""
    import threading

    calls: list[int] = []

    def teacher(fixed, moving):
        calls.append(int(fixed.shape[0]))
        return torch.zeros(fixed.shape[0], 3, *fixed.shape[2:])

    kwargs = dict(run_teacher=teacher, pair=_pair, pairs=6, shape=(8, 8, 8), source_key="toy",
                  has_labels=False, batch_size=1, teacher_key="t", wait_s=60)  # fmt: skip
    errors = []

    def run():
        try:
            build_flow_cache(tmp_path / "cache", **kwargs)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sum(calls) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]

"""``medistill register``: register one pair, outputs on the fixed image's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def register(
    out: Annotated[str, typer.Option(help="Output folder (a sub-folder per pair for cohorts).")],
    fixed: Annotated[Path | None, typer.Option(help="Fixed image.")] = None,
    moving: Annotated[Path | None, typer.Option(help="Moving image.")] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="Cohort: CSV with fixed, moving (and fixed_labels, moving_labels)."),
    ] = None,
    atlas: Annotated[
        Path | None, typer.Option(help="Cohort: the fixed image every --images image goes to.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Cohort: folder (or CSV) of moving images for --atlas.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Registration checkpoint (.pt) or built-in name for --method network; "
            "default: the built-in 'brain' model (medistill models)."
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="'network' (a trained checkpoint) or 'optimise' (per-pair optimiser)."),
    ] = "network",
    moving_labels: Annotated[
        Path | None, typer.Option(help="Label map on the moving image's grid.")
    ] = None,
    fixed_labels: Annotated[
        Path | None,
        typer.Option(help="Optimiser only: fixed label map for the privileged Dice term."),
    ] = None,
    initial: Annotated[str, typer.Option(help="'com' (match centres of mass) or 'none'.")] = "com",
    config: Annotated[
        str | None,
        typer.Option(
            help="Optimiser preset (brain, fast, multimodal, refine) or YAML; default brain "
            "(refine with --refine)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override an optimiser setting, e.g. --set deformable.kind=svf."
        ),
    ] = None,
    refine: Annotated[
        int, typer.Option(help="Network only: optimiser iterations from the network's field.")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show the optimiser's progress bar.")] = False,
    engine: Annotated[
        str, typer.Option(help="'torch', or 'onnx' (--model is an .onnx export; onnxruntime).")
    ] = "torch",
    outputs: Annotated[
        str,
        typer.Option(
            help="What to write: 'all' or a comma-separated subset of warped, warped_labels, "
            "disp_voxel, disp_mm, jacobian."
        ),
    ] = "all",
    compress: Annotated[
        bool,
        typer.Option(help="Write .nii.gz; --no-compress writes .nii (larger, much faster)."),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            help="Cohort: processes that register pairs side by side, the CPU threads shared "
            "among them (memory grows with each); 0 (default): one per thread (at most 4) for "
            "8 or more pairs, 1 with a GPU or under torchrun."
        ),
    ] = 0,
) -> None:
    """Register MOVING to FIXED (outputs on the fixed image's grid and affine), or a cohort:
    every pair of --pairs, or every --images image to --atlas, one sub-folder per pair; the model
    is loaded once, finished pairs are skipped (rerun to resume), pairs are shared by
    --workers processes, and under torchrun each process takes its share of the pairs."""
    from medistill.cli._methods import check_method
    from medistill.io.validate import check_output_folder
    from medistill.spatial.native import check_outputs

    single = fixed is not None or moving is not None
    cohort = pairs is not None or atlas is not None or images is not None
    if single == cohort or (single and (fixed is None or moving is None)):
        raise InputError(
            "register: give --fixed and --moving, or --pairs CSV, or --atlas A with --images DIR"
        )
    if cohort and (pairs is not None) == (atlas is not None or images is not None):
        raise InputError("register: give --pairs, or --atlas with --images, not both")
    if cohort and pairs is None and (atlas is None or images is None):
        raise InputError("register: --atlas and --images go together")
    if cohort and (moving_labels is not None or fixed_labels is not None):
        raise InputError("register: with a cohort the label maps come from the CSV columns")
    check_method(method, model, refine, config, set_)
    chosen = check_outputs(outputs)
    if engine != "torch" and method == "optimise":
        raise InputError("--engine applies to --method network")
    out = check_output_folder(out)
    if workers < 0:
        raise InputError(f"--workers must be >= 0 (0: automatic), got {workers}")
    if initial not in ("com", "none"):
        raise InputError(f"--initial must be 'com' or 'none', got {initial!r}")
    if fixed_labels is not None and method != "optimise":
        raise InputError("--fixed-labels is used only by --method optimise (privileged term)")
    jobs = _jobs(fixed, moving, moving_labels, fixed_labels, pairs, atlas, images)
    if chosen == ("warped_labels",) and all(j["moving_labels"] is None for j in jobs):
        where = "a moving_labels column in --pairs" if cohort else "--moving-labels"
        raise InputError(f"--outputs warped_labels needs {where}")
    spec = {"method": method, "model": model, "refine": refine, "config": config,
            "set_": set_, "engine": engine}  # fmt: skip
    registrar, ndim = _build_registrar(**spec, progress=progress and single)
    if single:
        reg = _register_one(registrar, jobs[0], ndim, initial, chosen)
        for path in reg.save(out, outputs=chosen, compress=compress):
            typer.echo(str(path))
        what = "optimisation" if method == "optimise" else "network"
        typer.echo(f"{what} {reg.seconds_network:.3f} s, total {reg.seconds_total:.3f} s")
        return
    _register_cohort(
        registrar, jobs, ndim, initial, out, progress, chosen, compress, workers=workers, spec=spec
    )


def _jobs(fixed, moving, moving_labels, fixed_labels, pairs, atlas, images) -> list[dict]:
    """The pairs to register: dicts of fixed, moving, fixed_labels, moving_labels, name."""
    if fixed is not None:
        return [
            {
                "fixed": fixed,
                "moving": moving,
                "fixed_labels": fixed_labels,
                "moving_labels": moving_labels,
                "name": "",
            }
        ]
    from medistill.data import discover, read_pairs_csv

    jobs = []
    if pairs is not None:
        sources, index = read_pairs_csv(pairs, required=("fixed", "moving"))
        rows = [(sources[f], sources[m]) for f, m in index]
    else:
        if not atlas.is_file():
            raise InputError(f"--atlas {atlas}: no such file")
        from medistill.data import SubjectSource

        target = SubjectSource(atlas.name, atlas, None, None)
        rows = [(target, s) for s in discover(images)]
        if not rows:
            raise InputError(f"--images {images}: no images found")
    seen: dict[str, int] = {}
    for f, m in rows:
        name = f"{_stem(f.image)}__{_stem(m.image)}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name += f"_{seen[name]}"
        jobs.append(
            {
                "fixed": f.image,
                "moving": m.image,
                "fixed_labels": None,  # a cohort never hands labels to the method
                "moving_labels": m.labels,
                "name": name,
            }
        )
    return jobs


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npz", ".h5"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _register_one(
    registrar,
    job: dict,
    ndim: int | None,
    initial: str,
    outputs: tuple[str, ...],
    cache: dict | None = None,
):
    """Load, check and register one pair. ``cache`` (a dict the caller keeps): the last fixed
    image, reused while the next pair names the same unchanged file (an atlas cohort reads its
    atlas once)."""
    from medistill.io import check_same_grid, load
    from medistill.io.validate import check_image_values

    path = Path(job["fixed"])
    key = None
    if cache is not None and path.is_file():
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, ndim)
    if key is not None and cache.get("key") == key:
        fixed_img = cache["image"]
    else:
        fixed_img = check_image_values(load(path, is_label=False, dims=ndim), "fixed image")
        if key is not None:
            cache.update(key=key, image=fixed_img)
    moving_img = check_image_values(load(job["moving"], is_label=False, dims=ndim), "moving image")
    if fixed_img.ndim != moving_img.ndim:
        raise InputError(
            f"{job['moving']}: moving image is {moving_img.ndim}-D, "
            f"the fixed image {fixed_img.ndim}-D"
        )
    nd = fixed_img.ndim
    labels = f_labels = None
    if job["moving_labels"] is not None:
        labels = check_same_grid(moving_img, load(job["moving_labels"], is_label=True, dims=nd))
    if job["fixed_labels"] is not None:
        f_labels = check_same_grid(fixed_img, load(job["fixed_labels"], is_label=True, dims=nd))
    return registrar(
        fixed_img,
        moving_img,
        moving_labels=labels,
        fixed_labels=f_labels,
        initial=initial,
        outputs=outputs,
    )


def _register_cohort(
    registrar,
    jobs: list[dict],
    ndim,
    initial: str,
    out: Path,
    progress: bool,
    outputs: tuple[str, ...],
    compress: bool,
    *,
    workers: int = 1,
    spec: dict | None = None,
):
    """Each pair into ``out/NAME`` (written to a temporary folder, then renamed: a folder that
    exists is a finished pair and is skipped); this process's share under torchrun.

    With more than one worker (``workers``, 0 = :func:`auto_workers`; ``spec``: the keyword
    arguments of :func:`_build_registrar` that rebuild ``registrar`` in each worker), this
    process and ``workers - 1`` spawned ones share the pairs and the CPU threads: on a CPU this
    beats one process with every thread, because reading, writing and much of the native-grid
    work run on one thread. A pair whose input is unusable (missing or unreadable file, wrong
    dimensionality...) is reported on its own line and skipped; the others are done, and the
    command then fails with the count.
    """
    import torch

    from medistill.train import rank, world_size

    mine = jobs[rank() :: world_size()]
    todo = [j for j in mine if not (out / j["name"]).is_dir()]
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if workers == 0:
        gpu = torch.cuda.is_available()
        workers = auto_workers(len(todo), threads, gpu) if world_size() == 1 else 1
    workers = max(1, min(workers, len(todo)))
    seconds: list[float] = []
    failed: list[str] = []
    args = (ndim, initial, out, outputs, compress)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="register", unit="pair")
    cache: dict = {}
    if workers == 1 or spec is None:
        results = (_pair_task(registrar, job, *args, cache=cache) for job in todo)
        _collect(results, seconds, failed, bar)
    else:
        per_worker = max(1, threads // workers)
        torch.set_num_threads(per_worker)  # this process is one of the workers
        try:
            results = _with_workers(registrar, todo, args, cache, spec, workers - 1, per_worker)
            _collect(results, seconds, failed, bar)
        finally:
            torch.set_num_threads(threads)
    if bar is not None:
        bar.close()
    done = len(mine) - len(todo)
    mean = f", {sum(seconds) / len(seconds):.3f} s per pair" if seconds else ""
    typer.echo(
        f"registered {len(seconds)} pair(s) into {out}{mean}; {done} already done"
        + (f" ({workers} workers)" if workers > 1 else "")
        + (f" (process {rank()} of {world_size()})" if world_size() > 1 else "")
    )
    if failed:
        raise InputError(
            f"{len(failed)} of {len(todo)} pair(s) failed (reported above; rerun after fixing "
            "them: finished pairs are skipped)"
        )


def auto_workers(pairs: int, threads: int, gpu: bool = False) -> int:
    """Processes for ``--workers 0``: one per CPU thread (``torch.get_num_threads()``), at most
    4, when there are at least 8 ``pairs`` to register; else 1 (the spawn and the model load of
    each worker would not pay). Always 1 with a ``gpu`` (the processes would share it)."""
    return max(1, min(4, threads)) if pairs >= 8 and not gpu else 1


# tests set this to False to send every pair to the spawned workers
_MAIN_TAKES_PAIRS = True


def _with_workers(registrar, todo: list[dict], args: tuple, cache: dict, spec: dict,
                  extra: int, threads: int):  # fmt: skip
    """Results of ``todo`` registered by this process and ``extra`` spawned ones (``threads``
    each), in the order they finish.

    This process starts at once; the spawned workers get pairs once one of them has imported
    torch and loaded the model, then keep up to two per worker waiting, and this process takes
    the next pair whenever they have. Workers that are still starting when the last pair is
    done are stopped rather than waited for. If the workers cannot start or one dies, the pairs
    not yet done are registered here (a warning says so)."""
    import logging
    import multiprocessing
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    log = logging.getLogger(__name__)
    out = args[2]
    pending = deque(todo)
    before = set(multiprocessing.active_children())
    try:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        pool = ProcessPoolExecutor(
            extra, mp_context=context, initializer=_worker_init, initargs=(spec, threads)
        )
        ready = [pool.submit(_worker_ready) for _ in range(extra)]  # done once a worker is up
    except (OSError, NotImplementedError, ImportError, BrokenProcessPool) as err:
        log.warning("no worker processes (%s); every pair runs in this process", err)
        yield from (_pair_task(registrar, job, *args, cache=cache) for job in pending)
        return
    running: dict = {}  # future -> its job
    broken = False

    def give_up(reason: object) -> None:
        nonlocal broken
        if not broken:
            log.warning("a worker process failed (%s); the other pairs run in this process",
                        reason)  # fmt: skip
        broken = True

    try:
        while pending or running:
            failed = [f for f in ready if f.done() and f.exception() is not None]
            if failed:
                give_up(failed[0].exception())
            up = 0 if broken else sum(f.done() for f in ready)
            while pending and len(running) < 2 * up and not broken:
                job = pending.popleft()
                try:
                    running[pool.submit(_worker_pair, job, *args)] = job
                except BrokenProcessPool as err:
                    pending.appendleft(job)
                    give_up(err)
            if pending and (_MAIN_TAKES_PAIRS or broken):
                yield _pair_task(registrar, pending.popleft(), *args, cache=cache)
                finished = [f for f in running if f.done()]
            elif running:
                finished = list(wait(running, return_when=FIRST_COMPLETED).done)
            else:  # only when this process leaves the pairs to the workers: wait for one
                wait(ready, return_when=FIRST_COMPLETED)
                finished = []
            for future in finished:
                job = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    give_up(err)
                    if not (out / job["name"]).is_dir():  # not finished before the failure
                        pending.append(job)
                    continue
                yield result
    except BaseException:
        _stop_workers(pool, before)
        raise
    if all(f.done() for f in ready):
        pool.shutdown()
    else:
        _stop_workers(pool, before)


def _stop_workers(pool, before: set) -> None:
    """Cancel what has not started and end the pool's processes now (their pairs in flight
    leave only a temporary folder, removed by the next run)."""
    import multiprocessing

    pool.shutdown(wait=False, cancel_futures=True)
    for child in set(multiprocessing.active_children()) - before:
        child.terminate()
        child.join(timeout=10)


def _collect(results, seconds: list[float], failed: list[str], bar) -> None:
    """Gather ``(name, seconds, error)`` results: report errors on stderr as they come."""
    for name, took, error in results:
        if error is None:
            seconds.append(took)
        else:
            failed.append(name)
            typer.echo(f"medistill: error: pair {name}: {error}", err=True)
        if bar is not None:
            bar.update(1)


def _pair_task(registrar, job: dict, ndim, initial, out, outputs, compress, cache=None):
    """Register and save one pair: ``(name, seconds, None)``, or ``(name, None, message)``."""
    try:
        reg = _register_one(registrar, job, ndim, initial, outputs, cache)
    except InputError as err:
        return job["name"], None, str(err)
    _save_pair(reg, out, job["name"], outputs, compress)
    return job["name"], reg.seconds_total, None


def _build_registrar(method, model, refine, config, set_, engine, progress: bool = False):
    """``(registrar, ndim)`` of ``register``'s options (in this process and in each worker)."""
    from medistill.cli._methods import network_registrar, optimiser_registrar

    if method == "optimise":
        return optimiser_registrar(config, set_, progress=progress)[:2]
    return network_registrar(model, refine, config, set_, engine=engine)[:2]


_WORKER: dict = {}


def _worker_init(spec: dict, threads: int) -> None:
    """A worker process: ``threads`` CPU threads, its own registrar and fixed-image cache."""
    import signal

    import torch

    from medistill.cli.main import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    configure_logging()
    torch.set_num_threads(threads)
    try:
        _WORKER.update(registrar=_build_registrar(**spec)[0], cache={})
    except Exception as err:  # noqa: BLE001 - handed to the parent by _worker_ready
        _WORKER["error"] = err


def _worker_ready() -> bool:
    """True once the worker is up; raises the error that kept it from building its registrar
    (the parent then registers the pairs itself)."""
    if "error" in _WORKER:
        raise RuntimeError(f"worker start-up: {_WORKER['error']}")
    return True


def _worker_pair(job: dict, *args):
    return _pair_task(_WORKER["registrar"], job, *args, cache=_WORKER["cache"])


def _save_pair(reg, out: Path, name: str, outputs: tuple[str, ...], compress: bool) -> None:
    """Write one pair's outputs into ``out/name`` through a temporary folder, then rename."""
    import shutil

    from medistill.train import rank

    tmp = out / f".{name}.partial-{rank()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    reg.save(tmp, outputs=outputs, compress=compress)
    tmp.rename(out / name)

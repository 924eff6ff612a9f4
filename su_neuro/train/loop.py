"""The training loop: :func:`train` and one optimisation step.

Holds :func:`train` (checks the run folder, resumes from a checkpoint, starts torch.distributed)
and the loop over steps with its logging, evaluation and checkpoint cadence; one training step
computes the loss below, steps the optimiser and returns the sums a log line averages.

Loss. With a global batch of B samples split over W processes, every process computes
the *sum* of its per-sample (per-token) losses and divides it by the global count N
(summed over processes) times 1/W; DistributedDataParallel averages gradients over the
W processes, so the gradient is exactly that of ``sum / N`` over the global batch, the
same as one process with batch B. Sequence targets equal to -100 are not scored.

Update-rate regulariser: ``rate_weight * (mean gate - rate_target)^2`` over all layers
(:func:`su_neuro.gates.rate_penalty`), the target annealed over the first steps when the
config asks (:func:`rate_target_at`); under several processes the mean is the global
one (an all-reduce of the detached local means, with a first-order term that carries the
local gradient), so the penalty and its gradient match one process. The per-neuron floor
``rate_floor_weight * mean_i max(0, rate_floor - r_i)^2`` per layer
(:func:`su_neuro.gates.rate_floor_penalty`) is reduced the same way. After every optimiser
step each gate's ``constrain_`` projects its parameters (the event gate's threshold to >= 0).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..gates import constrain_gates, neuron_rates, rate_floor_penalty
from .build import build_model, build_optimizer, build_scheduler, load_task
from .checkpoint import (
    _atomic_write_json,
    _rng_state,
    _set_rng_state,
    load_checkpoint,
    model_signature,
    params_digest,
    require,
    restore_model,
    save_checkpoint,
    seed_torch,
    task_shape,
)
from .config import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    RESULT_FILE,
    RUN_FILES,
    TRACE_FILE,
    ConfigError,
    TrainConfig,
    config_from_dict,
)
from .data import (
    _batch_stats,
    _collate,
    _dataset_lengths,
    _gate_tensors,
    _valid_count,
    bucket_order,
    epoch_order,
    evaluate,
    export_trace,
)
from .dist import DistInfo, _pick_device, distributed_env, gather_rng, process_group, rank_stream
from .folder import (
    RunFolderError,
    _check_config_file,
    _check_resume_config,
    _failed_start,
    _Log,
    _prepare_folder,
    _stored_config,
    folder_lock,
    remove_stale_temporaries,
)

CHECKPOINT_KEYS = ("config", "model", "optimizer", "scheduler", "rng", "data")
"""What a training checkpoint must hold to be resumed."""


class TrainingStopped(KeyboardInterrupt):
    """The run stopped on SIGINT / SIGTERM at the end of a step, after saving a checkpoint
    there (``step``, ``checkpoint``); ``signum`` is the signal. A ``KeyboardInterrupt``, so
    code that handles Ctrl-C handles it too."""

    def __init__(self, step: int, checkpoint: Path, signum: int):
        import signal

        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum

    def __reduce__(self):  # a train() in a worker process hands it back to its parent
        return type(self), (self.step, self.checkpoint, self.signum)


#: seconds a process of a multi-process run waits, after SIGINT / SIGTERM, for the processes
#: to agree on the stop before it exits at once (:class:`_StopSignals`)
STOP_GRACE_S = 300.0


class _StopSignals:
    """SIGINT / SIGTERM ask the loop to stop at the end of the current step (its state is then
    whole, and a checkpoint of it resumes bit-exact); a second SIGINT stops at once. Installed
    in the main thread only; the processes of a multi-process run agree on the step right
    after each step (:func:`_agreed_stop`), and only rank 0 writes the note (``quiet`` on the
    others).

    ``grace`` (multi-process runs): seconds after the first signal at which the process exits
    at once (128 + the signal) if the processes have not agreed on the stop by then. A process
    waiting in a collective for a peer that hangs runs no Python, not even its signal
    handler, so it would never see the step's end: a watcher thread learns of the signal
    from the wakeup descriptor (``signal.set_wakeup_fd``, written by the interpreter's C
    handler at once), passes every byte on to the descriptor it replaced, and keeps the
    time; :meth:`agreed` ends the count once the stop is agreed (the checkpoint then takes
    what it takes). The first signal is the one that stops the run: a second SIGTERM does
    not cut the stop short (torchrun sends one to every worker after a Ctrl-C has already
    reached them), a second SIGINT does."""

    def __init__(self, quiet: bool = False, grace: float | None = None):
        import signal

        self.signum: int | None = None
        self.note_pending = False  # the note could not be written at once: the loop prints it
        self._quiet = quiet
        self._grace = grace
        self._cancel = threading.Event()
        self._wakeup: tuple[int, int] | None = None  # (the pipe's write end, the wakeup fd it replaced)
        self._watcher: threading.Thread | None = None
        self._enabled = threading.current_thread() is threading.main_thread()
        self._old: dict[int, Any] = {}
        self._signals = (signal.SIGINT, signal.SIGTERM)

    def _handle(self, signum, frame) -> None:
        import signal

        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # asked twice: at once
            return  # the first signal stops the run, and its note has been written
        self.signum = signum
        if self._quiet:
            return
        # straight to the descriptor: a print could land inside another write to the same
        # stream; a redirected stderr (a notebook, a log) gets the note from the loop instead
        if sys.stderr is sys.__stderr__:
            try:
                os.write(sys.stderr.fileno(), f"\n{self.note()}\n".encode())
                return
            except (OSError, ValueError, AttributeError):
                pass
        self.note_pending = True

    def note(self) -> str:
        import signal

        return (f"{signal.Signals(self.signum).name}: stopping after this step with a checkpoint "
                "(Ctrl-C again to stop at once)")

    def agreed(self) -> None:
        """Every process has reached the step's end and stops: no exit by the grace."""
        self._cancel.set()

    def __enter__(self) -> _StopSignals:
        import signal

        if self._enabled:
            for sig in self._signals:
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN or old is None:  # ignored on purpose, or not Python's to replace
                    continue
                self._old[sig] = signal.signal(sig, self._handle)
            if self._grace is not None and self._old:
                read, write = os.pipe()
                os.set_blocking(write, False)
                previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
                self._wakeup = (write, previous)
                self._watcher = threading.Thread(target=self._watch, args=(read, previous),
                                                 name="su_neuro-stop-watch", daemon=True)
                self._watcher.start()
        return self

    def _watch(self, fd: int, previous: int) -> None:
        """The watcher thread: reads ``fd`` to its end (the block's end closes the other end),
        passes each byte on to ``previous`` (another owner's wakeup descriptor, or -1), and on
        the first stop signal starts the grace's count."""
        stops = {int(sig) for sig in self._signals}
        started = False
        try:
            while byte := os.read(fd, 1):
                if previous >= 0:
                    with contextlib.suppress(OSError):
                        os.write(previous, byte)
                if byte[0] in stops and not started:
                    started = True
                    threading.Thread(target=self._give_up, args=(byte[0],), name="su_neuro-stop-grace",
                                     daemon=True).start()
        except OSError:
            pass
        finally:
            os.close(fd)

    def _give_up(self, signum: int) -> None:
        import signal

        if self._cancel.wait(self._grace):
            return  # agreed, or the block ended, in time
        name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
        with contextlib.suppress(OSError):
            os.write(2, (f"\n{name}: no agreed stop within {self._grace:g} s of the signal (a process stuck "
                         "waiting for another?): exiting now; resume from the last checkpoint\n").encode())
        os._exit(128 + signum)

    def __exit__(self, *exc) -> None:
        import signal

        self._cancel.set()
        if self._wakeup is not None:
            write, previous = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write)  # the watcher reads the end of its pipe and returns
            self._wakeup = None
            # joined: every byte is passed on before the block ends (not into a descriptor the
            # owner has closed since, whose number a new file may have taken)
            self._watcher.join(timeout=10.0)
            self._watcher = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _agreed_stop(signum: int | None, dist: DistInfo, device: torch.device) -> int | None:
    """The signal that stops every process of a multi-process run after this step, or None:
    a signal that reached any one process (torchrun passes SIGTERM on to all of them, but a
    ``kill`` may reach only one) stops all of them at the same step. One small all-reduce a
    step; the step has synchronised with the device already."""
    flag = torch.tensor([signum or 0], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item()) or None


def _check_backend_runs(cfg: TrainConfig, device: torch.device) -> None:
    """Raise before anything is written if the configured backend cannot run here."""
    if cfg.backend == "auto":
        return
    from ..backends import resolve

    dtype = torch.get_default_dtype()
    resolve(cfg.backend, device, cfg.cell, cfg.gate, dtype, batch=cfg.batch_size, hidden=cfg.hidden_size)


def _check_splits(cfg: TrainConfig, task) -> None:
    """Refuse a task with an empty train or test split before anything is written: an empty
    test split would report a loss and accuracy of zero that look measured, and a trace
    (``trace = true``) would fail only after the whole training run."""
    from ..datasets import task_options

    for split in ("train", "test"):
        if len(getattr(task, split)) == 0:
            option = f"n_{split}"
            hint = (f"give it samples (e.g. --task-option {option}=1000)" if option in task_options(cfg.task)
                    else "its files hold no samples")
            raise ConfigError(f"task {cfg.task!r} has an empty {split} split; {hint}")


def _first_step_notice(cfg: TrainConfig, device: torch.device, batch: int, bar, main: bool):
    """:class:`su_neuro.warmup.FirstStepNotice` of this run (prints on rank 0 only)."""
    from ..warmup import FirstStepNotice, uses_numba

    numba = main and uses_numba(cfg.backend, device, cfg.cell, cfg.gate, batch=batch, hidden=cfg.hidden_size)
    write = bar.write if bar is not None else (lambda text: print(text, flush=True))
    return FirstStepNotice(numba, bar=bar, write=write)


def train(
    config: TrainConfig | dict,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    explicit_keys: set[str] | None = None,
    desc: str | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or resume) one run into ``out_dir``; returns the final metrics.

    Args:
        config: a :class:`TrainConfig` or a dict of its keys.
        out_dir: the run folder (created). A folder that already holds a run is refused
            unless ``resume`` (continue from its checkpoint) or ``overwrite`` (delete
            the run's files first).
        resume: continue from ``out_dir/checkpoint.pt``; the stored configuration is
            used, and keys of ``config`` named in ``explicit_keys`` must agree with it
            (except the logging / checkpoint cadence keys). Without a checkpoint the
            run starts at step 0.
        progress: show a tqdm bar (rank 0 only).
        explicit_keys: the keys the user set (default: all, i.e. ``config`` must agree
            with the stored run).
        desc: label of the progress bar.
        on_step: called as ``on_step(step, metrics)`` after every step (rank 0).

    Returns:
        ``{"step", "epoch", "train_loss", "test_loss", "test_acc", "test_rate",
        "params_sha256", "time_s", ...}`` (rank 0; other ranks get the same keys
        without test metrics).

    Under torchrun (``WORLD_SIZE`` > 1) the run uses DistributedDataParallel (gloo on
    CPU, nccl on CUDA), ``batch_size`` is the global batch and must divide by the
    number of processes; only rank 0 writes files or progress.

    The run holds ``out_dir``'s lock (:func:`~su_neuro.train.folder.folder_lock`): a second
    run into the same folder raises :class:`RunFolderError`. In the main thread, SIGINT /
    SIGTERM end the step in flight (every process of a multi-process run the same step),
    save a checkpoint there and raise :class:`TrainingStopped`.

    The run seeds the Python, numpy and torch random streams and sets torch's
    deterministic mode for its own duration; the caller's are restored when it ends.
    """
    t_start = time.perf_counter()
    cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
    out = Path(out_dir)
    dist = distributed_env()
    # rank 0 holds the folder for the whole run: a second run into it is refused
    with folder_lock(out, hold=dist.is_main):
        return _train(cfg, out, dist, resume, overwrite, progress, explicit_keys, desc, on_step, t_start)


def _train(cfg, out, dist, resume, overwrite, progress, explicit_keys, desc, on_step, t_start) -> dict:
    if not resume and not overwrite and _failed_start(out):
        overwrite = True  # a start that failed before its first step leaves nothing worth keeping
    _prepare_folder(out, resume, overwrite)

    # Configuration of a run being resumed: the stored one, which the keys given must match.
    ckpt_path = out / CHECKPOINT_FILE
    checkpoint = None
    if resume:
        if ckpt_path.exists():
            checkpoint = load_checkpoint(ckpt_path)
            require(checkpoint, CHECKPOINT_KEYS, ckpt_path)
            cfg = _check_resume_config(checkpoint["config"], cfg, explicit_keys, source=str(ckpt_path))
            _check_config_file(out, checkpoint["config"])
        else:
            stored = _stored_config(out)
            if stored is not None:
                cfg = _check_resume_config(stored, cfg, explicit_keys, source=str(out / CONFIG_FILE))
            elif cfg.task is None:
                raise RunFolderError(
                    f"--resume: {str(out)!r} holds no run to continue (no {CONFIG_FILE} or "
                    f"{CHECKPOINT_FILE}); check --out, or give the run's configuration (--task ...) to start it there"
                )
    cfg.validate()
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) does not divide by the "
            f"{dist.world_size} processes"
        )

    device = _pick_device(cfg, dist)
    _check_backend_runs(cfg, device)
    if dist.active and device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives of objects use the current device
    from ..denormal import flush_denormal

    with process_group(dist, device), flush_denormal(cfg.flush_denormal), _run_globals(cfg, device):
        return _run(cfg, out, dist, device, checkpoint, resume, overwrite, progress, desc, on_step, t_start)


@contextlib.contextmanager
def _run_globals(cfg: TrainConfig, device: torch.device):
    """The process-wide settings of a run, for the run only: torch's deterministic-algorithms
    mode and cuDNN's benchmark flag (``deterministic``), and the Python, numpy and torch
    random streams seeded from ``seed``. The caller's come back when the run ends (the
    streams as a checkpoint holds them: the CUDA ones too where CUDA has started, whatever
    the run's device, as a resume sets them), so a script or notebook that calls
    :func:`train` and goes on finds them as it left them."""
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    streams = _rng_state()
    try:
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = False
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        seed_torch(cfg.seed, device)
        yield
    finally:
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
        torch.backends.cudnn.benchmark = benchmark
        _set_rng_state(streams)


def _run(cfg, out, dist, device, checkpoint, resume, overwrite, progress, desc, on_step, t_start) -> dict:
    if dist.active:
        torch.distributed.barrier()  # every rank has checked the folder before rank 0 writes

    task = load_task(cfg)
    _check_splits(cfg, task)
    pad_id = getattr(task, "pad_id", 0)
    n_train = len(task.train)
    train_lengths = _dataset_lengths(task.train) if cfg.bucket_pool else None
    local_batch = cfg.batch_size // dist.world_size
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is larger than the {n_train} training samples of task {cfg.task!r}"
        )
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = cfg.max_steps

    model = build_model(cfg, task).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer, total_steps)
    step, epoch, position = 0, 0, 0
    sampler_seed = cfg.seed
    history: list[dict] = []
    last_train: dict = {}
    window = {"loss": 0.0, "count": 0.0, "correct": 0.0, "gates": 0.0, "gate_n": 0.0, "skipped": 0.0,
              "norm_steps": 0.0, "grad_norm": 0.0, "grad_norm_max": 0.0, "lr": 0.0, "steps": 0.0}

    if checkpoint is not None:
        restore_model(model, checkpoint, out / CHECKPOINT_FILE)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"])
        data = checkpoint["data"]
        step, epoch, position, sampler_seed = data["step"], data["epoch"], data["position"], data["sampler_seed"]
        history = list(checkpoint.get("metrics", []))
        last_train = dict(checkpoint.get("last_train", {}))
        window = {**window, **checkpoint.get("window", {})}
    if dist.active:
        rank_stream(cfg.seed, dist, step, checkpoint, device)

    main = dist.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # of a run killed while writing (the folder's lock is ours)
        if overwrite and not resume:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        if not (out / CONFIG_FILE).exists() or not resume:
            # a resumed run whose config.json was lost gets the checkpoint's, not this command's overrides
            started = cfg if checkpoint is None else config_from_dict(checkpoint["config"], source="the checkpoint")
            _atomic_write_json(out / CONFIG_FILE, started.to_dict())
    log = _Log(out / LOG_FILE if main else None)
    if resume and main and (checkpoint is not None or (out / LOG_FILE).stat().st_size > 0):
        log.write({"event": "resume", "step": step, "epoch": epoch})
    elif main:
        log.write({"event": "start", "step": 0, "world_size": dist.world_size, "config": cfg.to_dict()})

    net: nn.Module = model
    if dist.active:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint_state(rng_ranks: list | None = None) -> dict:
        return {
            "config": cfg.to_dict(),
            "signature": model_signature(model),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            **({"rng_ranks": rng_ranks} if rng_ranks is not None else {}),
            "data": {"step": step, "epoch": epoch, "position": position, "sampler_seed": sampler_seed},
            "metrics": history,
            "last_train": last_train,
            "window": window,
            "world_size": dist.world_size,
            "torch_version": str(torch.__version__),
            "task": task_shape(task),
        }

    bar = None
    if main and progress:
        from .._progress import progress_bar

        bar = progress_bar(total=total_steps, initial=step, desc=desc or cfg.task, unit="step", dynamic_ncols=True)
    first_step = _first_step_notice(cfg, device, local_batch, bar, main)
    net.train()
    stop = _StopSignals(quiet=not main, grace=STOP_GRACE_S if dist.active else None)
    stop.__enter__()
    try:
        while step < total_steps:
            order_epoch = epoch
            if train_lengths is not None:
                order = bucket_order(sampler_seed, epoch, train_lengths, cfg.batch_size, cfg.bucket_pool)
            else:
                order = epoch_order(sampler_seed, epoch, n_train)
            while epoch == order_epoch and step < total_steps:
                idx = order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
                mine = idx[dist.rank * local_batch:(dist.rank + 1) * local_batch]
                x, y, lengths = _collate([task.train[int(i)] for i in mine], pad_id)
                x, y = x.to(device), y.to(device)
                with first_step:  # a slow first step (compilation) is announced; the ETA restarts after it
                    target = rate_target_at(cfg, step)
                    stats = _train_step(net, model, optimizer, scheduler, cfg, task.kind, x, y, dist, lengths, target,
                                        step=step)
                step += 1
                position += 1
                if position == steps_per_epoch:
                    epoch, position = epoch + 1, 0
                # several processes agree here whether to stop after this step, before its
                # evaluation and checkpoint (the grace of _StopSignals counts up to here)
                agreed = _agreed_stop(stop.signum, dist, device) if dist.active else None
                if agreed is not None:
                    stop.agreed()
                _accumulate(window, stats)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(_postfix(stats, task.kind), refresh=False)
                if step % cfg.log_every == 0 or step == total_steps:
                    last_train = _summarise(window, task.kind)
                    last_train.update(step=step, epoch=epoch)
                    if cfg.rate_weight > 0:
                        last_train["rate_target"] = target
                    log.write({"event": "train", **last_train})
                    window = dict.fromkeys(window, 0.0)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps and main:
                    ev = evaluate(model, task.test, task.kind, cfg.eval_batch_size, device, pad_id=pad_id)
                    rec = {"step": step, "epoch": epoch, **{f"test_{k}": v for k, v in ev.items()}}
                    history.append(rec)
                    log.write({"event": "eval", **rec})
                    if bar is not None:
                        bar.write(f"step {step}: test loss {ev['loss']:.4f}" + _acc_text(ev))
                due = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps
                rng_ranks = gather_rng(dist) if due else None  # a collective: every rank joins
                saved = due and main
                if saved:
                    save_checkpoint(out / CHECKPOINT_FILE, checkpoint_state(rng_ranks))
                    msg = f"checkpoint: step {step} -> {out / CHECKPOINT_FILE}"
                    (bar.write(msg) if bar is not None else print(msg, flush=True))
                if on_step is not None and main:
                    on_step(step, stats)
                signum = agreed if dist.active else stop.signum
                if signum is not None:  # SIGINT / SIGTERM during the step: its state is whole now
                    if stop.note_pending:
                        (bar.write if bar is not None else print)(stop.note(), file=sys.stderr)
                    if not due:
                        rng_ranks = gather_rng(dist)
                    if main and not saved:
                        save_checkpoint(out / CHECKPOINT_FILE, checkpoint_state(rng_ranks))
                    log.write({"event": "stopped", "step": step, "epoch": epoch, "signal": signum})
                    raise TrainingStopped(step, out / CHECKPOINT_FILE, signum)
    except BaseException:
        log.close()  # the lines written so far are flushed already
        raise
    finally:
        stop.__exit__(None, None, None)
        if bar is not None:
            bar.close()

    result: dict[str, Any] = {"step": step, "epoch": epoch}
    result.update({f"train_{k}": v for k, v in last_train.items() if k in ("loss", "acc", "rate")})
    rng_ranks = gather_rng(dist)
    with contextlib.closing(log):  # closed on an error in the evaluation or the trace too
        if main:
            ev = evaluate(model, task.test, task.kind, cfg.eval_batch_size, device, pad_id=pad_id)
            rec = {"step": step, "epoch": epoch, **{f"test_{k}": v for k, v in ev.items()}}
            if not history or history[-1].get("step") != step:
                history.append(rec)
            log.write({"event": "eval", **rec})
            result.update({f"test_{k}": v for k, v in ev.items()})
            result["params_sha256"] = params_digest(model)
            save_checkpoint(out / CHECKPOINT_FILE, checkpoint_state(rng_ranks))
            if cfg.trace:
                result["trace"] = str(export_trace(model, task, cfg, out / TRACE_FILE, device))
            result["time_s"] = round(time.perf_counter() - t_start, 3)
            _atomic_write_json(out / RESULT_FILE, result)
            log.write({"event": "end", **{k: v for k, v in result.items() if k != "time_s"}})
    if dist.active:
        torch.distributed.barrier()
    return result


def _floor_penalty(gates, valid, floor: float, dist) -> torch.Tensor:
    """:func:`su_neuro.gates.rate_floor_penalty` of the batch's records (``valid``: each
    record's valid neuron-steps). Under several processes each neuron's rate is the mean of
    the processes' rates (all-reduced, detached) and the local first-order term carries the
    gradient, so that after DDP's averaging it is that of the global penalty."""
    if not dist.active:
        counts = [n / g.shape[-1] for g, n in zip(gates, valid, strict=True)]
        return rate_floor_penalty(gates, floor, counts)
    total = 0.0
    for g, n in zip(gates, valid, strict=True):
        r = neuron_rates(g, n / g.shape[-1])
        m = r.detach().double().clone()
        torch.distributed.all_reduce(m)
        short = (floor - m / dist.world_size).clamp(min=0).to(r.dtype)
        total = total + (short**2).mean() - 2.0 * (short * (r - r.detach())).mean()
    return total


def rate_target_at(cfg: TrainConfig, step: int) -> float | None:
    """The update rate the regulariser aims for at optimiser step ``step`` (0 = the first).

    ``cfg.rate_target`` throughout, or with ``rate_anneal_steps`` N > 0 a linear path from
    ``rate_target_start`` (step 0) to ``rate_target`` (step N and after): a model can learn
    the task with most neurons open and become sparse gradually, as gradual pruning does.
    """
    if not cfg.rate_anneal_steps or cfg.rate_target is None:
        return cfg.rate_target
    frac = min(step / cfg.rate_anneal_steps, 1.0)
    return cfg.rate_target_start + frac * (cfg.rate_target - cfg.rate_target_start)


def step_loss(net, cfg: TrainConfig, kind: str, x, y, lengths=None, target=None, dist=None):
    """The training objective of one batch as the loop forms it: the task loss plus the
    rate regulariser towards ``target`` (default ``cfg.rate_target``) and the rate floor.
    Returns ``(loss, totals)``, totals a float64 tensor (loss sum, count, correct, gate sum,
    gate count) over all processes. ``tools/grad_norms.py`` uses it on a saved model."""
    dist = DistInfo() if dist is None else dist
    target = cfg.rate_target if target is None else target
    out, records = net(x, record=True, lengths=lengths)
    loss_sum, count, correct = _batch_stats(out, y, kind)
    gates = _gate_tensors(records)
    # padded steps are not part of any sequence: means over the valid steps only
    valid = [_valid_count(r) for r in records.values()]
    local_means = torch.stack([g.detach().float().sum() / n for g, n in zip(gates, valid, strict=True)])
    gate_sum = float(sum(float(g.detach().sum()) for g in gates))
    gate_n = float(sum(valid))
    totals = torch.tensor(
        [float(loss_sum.detach()), count, correct, gate_sum, gate_n], dtype=torch.float64, device=x.device
    )
    means = local_means.double().clone()
    if dist.active:
        packed = torch.cat([totals, means])
        torch.distributed.all_reduce(packed)
        totals, means = packed[:5], packed[5:] / dist.world_size
    n_global = float(totals[1])
    loss = loss_sum * (dist.world_size / max(n_global, 1.0))
    if cfg.rate_weight > 0:
        if dist.active:
            # (mean_global - r)^2 with the local first-order term: after DDP's averaging the
            # gradient is 2 (mean_global - r) d mean_global, as for one process.
            penalty = sum(
                (float(m) - target) ** 2
                + 2.0 * (float(m) - target) * (g.float().sum() - g.detach().float().sum()) / n
                for m, g, n in zip(means, gates, valid, strict=True)
            )
            loss = loss + cfg.rate_weight * penalty
        else:
            loss = loss + cfg.rate_weight * sum(
                (g.float().sum() / n - target) ** 2 for g, n in zip(gates, valid, strict=True)
            )
    if cfg.rate_floor_weight > 0:
        loss = loss + cfg.rate_floor_weight * _floor_penalty(gates, valid, cfg.rate_floor, dist)
    return loss, totals


def _train_step(net, model, optimizer, scheduler, cfg, kind, x, y, dist, lengths=None, target=None, step=0) -> dict:
    loss, totals = step_loss(net, cfg, kind, x, y, lengths, target, dist)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if not math.isfinite(float(totals[0])):
        raise RuntimeError(f"training step {step + 1}: the loss is NaN or inf; lower lr or set grad_clip")
    params = [p for p in model.parameters() if p.grad is not None]
    norm = _grad_norm(params)
    skipped = 0.0
    if norm is None:
        if cfg.nonfinite_grads == "raise":
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            raise RuntimeError(
                f"training step {step + 1}: the gradient is NaN or inf "
                f"({', '.join(bad) if bad else 'its norm overflows float32'}); the parameters were not "
                "updated, so the last checkpoint continues the run. Gradients through many steps of a "
                "surrogate can explode: skip such steps with nonfinite_grads = \"skip\" (also on "
                "--resume), or start a new run with a damped surrogate (gate_options surrogate_params "
                "{\"gain\": 0.3}) or a lower lr"
            )
        optimizer.zero_grad(set_to_none=True)
        skipped = 1.0
    else:
        if cfg.grad_clip is not None:  # as nn.utils.clip_grad_norm_, with the norm computed above
            scale = cfg.grad_clip / (float(norm) + 1e-6)
            if scale < 1.0:
                for p in params:
                    p.grad.mul_(scale)
        optimizer.step()
        constrain_gates(model)
    lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used (the scheduler moves on below)
    scheduler.step()
    return {
        "lr": lr,
        "steps": 1.0,
        "loss": float(totals[0]),
        "count": float(totals[1]),
        "correct": float(totals[2]),
        "gates": float(totals[3]),
        "gate_n": float(totals[4]),
        "skipped": skipped,
        "norm_steps": 0.0 if norm is None else 1.0,
        "grad_norm": float(norm) if norm is not None else 0.0,
        "grad_norm_max": float(norm) if norm is not None else 0.0,
    }


def _accumulate(window: dict, stats: dict) -> None:
    """Adds a step's stats into the log window (``grad_norm_max``: the largest)."""
    for key in window:
        window[key] = max(window[key], stats[key]) if key == "grad_norm_max" else window[key] + stats[key]


def _grad_norm(params: list) -> torch.Tensor | None:
    """The gradients' total 2-norm (as float32), summed in float64 so that large finite
    gradients do not overflow it; None where a gradient holds NaN or inf or the norm exceeds
    float32 (a step that would write NaN or inf into the parameters)."""
    if not params:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.double()) for p in params]))
    if not bool(torch.isfinite(total)) or float(total) > torch.finfo(torch.float32).max:
        return None
    return total.float()


def _summarise(window: dict, kind: str) -> dict:
    res = {"loss": window["loss"] / max(window["count"], 1.0), "rate": window["gates"] / max(window["gate_n"], 1.0)}
    res["acc"] = None if kind == "regress" else window["correct"] / max(window["count"], 1.0)
    if window.get("steps"):
        res["lr"] = window["lr"] / window["steps"]  # the mean rate the window's steps used
    if window.get("skipped"):
        res["skipped"] = int(window["skipped"])  # steps of the window skipped for a NaN / inf gradient
    finite = window.get("norm_steps", 0.0)
    if finite > 0:  # the gradient's norm before clipping: mean and largest over the window's finite steps
        res["grad_norm"] = window["grad_norm"] / finite
        res["grad_norm_max"] = window["grad_norm_max"]
    return res


def _postfix(stats: dict, kind: str) -> dict:
    s = _summarise(stats, kind)
    post = {"loss": f"{s['loss']:.4f}"}
    if s["acc"] is not None:
        post["acc"] = f"{s['acc']:.3f}"
    post["rate"] = f"{s['rate']:.3f}"
    return post


def _acc_text(ev: dict) -> str:
    return f", accuracy {ev['acc']:.4f}" if ev.get("acc") is not None else ""

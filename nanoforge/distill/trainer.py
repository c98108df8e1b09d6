"""Fine-tune an encoder classifier on teacher labels (hard, soft, out-of-scope).

In-scope rows learn from `kd_loss` (CE, plus temperature-scaled KL where the teacher
gave a distribution); out-of-scope rows (label -1) learn low confidence through
outlier exposure. Seeded; AdamW with linear warm-up and decay; early stopping on the
validation accuracy, keeping the best weights.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from nanoforge.distill import parallel
from nanoforge.distill.losses import kd_loss, outlier_exposure_loss
from nanoforge.progress import progress_bar
from nanoforge.runtime.text import TextEncoder
from nanoforge.students.encoder import EncoderClassifier, EncoderTagger
from nanoforge.students.runner import TorchRunner, classifier_outputs
from nanoforge.task import StudentSpec

OE_WEIGHT = 0.5


@dataclass
class LabelledTexts:
    """Texts with label indices for a classifier (-1: out of scope), and soft labels if any."""

    texts: list[str]
    labels: np.ndarray  # int64, -1 = out of scope
    soft: np.ndarray | None = None  # (n, C) teacher probabilities; zero rows = none


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def accuracy(model: EncoderClassifier, enc: TextEncoder, split: LabelledTexts) -> float:
    keep = split.labels >= 0
    if not keep.any():
        return float("nan")
    texts = [t for t, k in zip(split.texts, keep) if k]
    logits, _ = classifier_outputs(TorchRunner(model), enc, texts)
    return float((logits.argmax(1) == split.labels[keep]).mean())


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """The learning rate's factor after `s` steps: linear warm-up, then linear decay to zero at `total`."""
    return lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1))


def make_optimizer(model: torch.nn.Module, cfg: StudentSpec, total: int):
    """AdamW with linear warm-up then linear decay to zero over `total` steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(total, int(cfg.warmup_ratio * total)))


def grouped_by_length(lengths: list[int], batch_size: int, rng: np.random.Generator, window: int = 32) -> np.ndarray:
    """A shuffled order whose consecutive `batch_size` runs have similar lengths: shuffle,
    sort within windows of `window` batches, then shuffle the batches (as group_by_length)."""
    perm = rng.permutation(len(lengths))
    span = batch_size * window
    for s in range(0, len(perm), span):
        chunk = perm[s : s + span]
        perm[s : s + span] = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
    batches = [perm[s : s + batch_size] for s in range(0, len(perm), batch_size)]
    full = len(perm) // batch_size  # a short last batch stays last (the loop slices whole batches)
    return np.concatenate([batches[i] for i in rng.permutation(full)] + batches[full:])


@dataclass
class _Placement:
    """Where a training runs: the device, its autocast and loss scaler, this process's share."""

    device: torch.device
    cast: object
    scaler: object
    parts: int
    part: int

    @classmethod
    def of(cls, model: torch.nn.Module, cfg: StudentSpec) -> "_Placement":
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = parallel.device_of(cfg.device)
        parallel.move_inputs(model, device)
        if hasattr(model, "checkpointing"):
            model.checkpointing = cfg.grad_checkpointing
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        return cls(device, parallel.autocast(device, cfg.precision), scaler, parallel.world_size(), parallel.rank())

    def step(self, model, opt, sched, batch: np.ndarray, batch_loss, grad_accum: int) -> float:
        """One optimiser step on `batch`; returns its loss (this process's share, scaled to the batch)."""
        mine = parallel.share(batch, self.parts, self.part)
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in np.array_split(mine, min(grad_accum, max(len(mine), 1))):
            if not len(micro):
                continue
            with self.cast:
                loss = batch_loss(micro) * (len(micro) / len(batch))
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.item()
        parallel.sum_gradients(model)
        if self.scaler:
            self.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        sched.step()
        return loss_sum * self.parts


def fit(model: torch.nn.Module, n: int, cfg: StudentSpec, batch_loss: Callable[[np.ndarray], torch.Tensor],
        evaluate: Callable[[], float], metric: str, log=print, lengths: list[int] | None = None,
        checkpoint: dict | None = None) -> dict:
    """The training loop every student shares: seeded shuffles of `n` examples, AdamW with
    warm-up and decay, gradient clipping, `evaluate()` on valid after each epoch (higher is
    better), early stopping after `cfg.patience` epochs without gain, best weights kept, then
    `cool_down` from them when early stopping left the learning rate above zero
    (`cfg.cooldown` epochs; 0: none).
    With `lengths`, batches hold examples of similar length (less padding). `checkpoint`, a
    dict, receives the best epoch's weights, optimiser state and step (to try other cool-downs).

    One optimiser step takes `cfg.batch_size` rows: split across the processes of an
    `accelerate launch` run and into `cfg.grad_accum` micro-batches, each micro-batch's mean
    loss weighted by its share of the rows, so the step is the same however it is split
    (distill/parallel.py). `cfg.device` and `cfg.precision` place the model and its autocast."""
    seed_everything(cfg.seed)
    place = _Placement.of(model, cfg)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    opt, sched = make_optimizer(model, cfg, total)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    best = {"score": -math.inf, "epoch": 0, "step": 0, "state": None, "optimizer": None}
    keep_opt = cfg.cooldown or checkpoint is not None  # a cool-down resumes the optimiser's state
    step, bad_epochs, t0 = 0, 0, time.perf_counter()
    with progress_bar("training", total=total) as advance:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            perm = rng.permutation(n) if lengths is None else grouped_by_length(lengths, cfg.batch_size, rng)
            running, b = 0.0, 0
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                batch = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                running += place.step(model, opt, sched, batch, batch_loss, cfg.grad_accum)
                step += 1
                advance(1, f"epoch {epoch} loss {running / (b + 1):.4f}")
            model.eval()
            score = parallel.broadcast(evaluate() if parallel.is_main() else 0.0)
            history.append({"epoch": epoch, "step": step, "train_loss": running / max(b + 1, 1), "valid_score": score})
            log(f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, valid {metric} {score:.4f}")
            if math.isnan(score) or score > best["score"]:
                best = {"score": score, "epoch": epoch, "step": step, "state": copy.deepcopy(model.state_dict()),
                        "optimizer": copy.deepcopy(opt.state_dict()) if keep_opt else None}
                bad_epochs = 0
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    log(f"early stop: no gain for {cfg.patience} epoch(s); keeping epoch {best['epoch']}")
                    break
            if step >= total:
                break
    model.load_state_dict(best["state"])
    lr_left = sched.lr_lambdas[0](best["step"]) * cfg.lr  # where the schedule stood at the best epoch
    if checkpoint is not None:
        checkpoint.update(state=best["state"], optimizer=best["optimizer"], score=best["score"], lr=lr_left)
    result = {"history": history, "metric": metric, "best_epoch": best["epoch"], "best_valid_score": best["score"],
              "steps": step, "seconds": 0.0, "device": str(place.device), "processes": place.parts}
    if cfg.cooldown and lr_left > 0 and not math.isnan(best["score"]):
        result["cooldown"] = cool_down(model, best, lr_left, cfg, n, batch_loss, evaluate, metric, log, lengths)
        result["best_valid_score"] = result["cooldown"]["valid_score"]
    parallel.check_in_sync(model)
    model.to("cpu").eval()  # export, parity and the runtimes' comparisons run on the CPU
    result["seconds"] = time.perf_counter() - t0
    return result


def cool_down(model: torch.nn.Module, best: dict, lr: float, cfg: StudentSpec, n: int,
              batch_loss: Callable[[np.ndarray], torch.Tensor], evaluate: Callable[[], float], metric: str,
              log=print, lengths: list[int] | None = None, epochs: float | None = None) -> dict:
    """The decay phase of a warm-up/stable/decay schedule, run where early stopping cut the
    linear decay short: from the best epoch's weights and optimiser state (`best`), the
    learning rate falls linearly from `lr` (where the schedule left it) to zero over
    `epochs` (default `cfg.cooldown`) of fresh shuffles. It finishes the schedule, so it is
    kept whatever valid says (reported beside the best epoch's score): that score is the
    highest of several epochs on the same valid rows, biased upward, and on EN->JA a cool-down
    raised test chrF on both students measured, also where valid fell (docs/BENCHMARKS.md)."""
    epochs = cfg.cooldown if epochs is None else epochs
    place = _Placement.of(model, cfg)
    model.load_state_dict(best["state"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    opt.load_state_dict(copy.deepcopy(best["optimizer"]))  # the checkpoint stays as it was for another cool-down
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] = lr
    k = max(1, round(epochs * math.ceil(n / cfg.batch_size)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (k - s) / k))
    rng = np.random.default_rng([cfg.seed, 1])
    order = np.concatenate([rng.permutation(n) if lengths is None else grouped_by_length(lengths, cfg.batch_size, rng)
                            for _ in range(math.ceil(k * cfg.batch_size / n))])
    t0, running = time.perf_counter(), 0.0
    model.train()
    with progress_bar("cool-down", total=k) as advance:
        for s in range(k):
            running += place.step(model, opt, sched, order[s * cfg.batch_size : (s + 1) * cfg.batch_size], batch_loss,
                                  cfg.grad_accum)
            advance(1, f"loss {running / (s + 1):.4f}")
    model.eval()
    score = parallel.broadcast(evaluate() if parallel.is_main() else 0.0)
    log(f"cool-down: {k} steps from lr {lr:.2e} to 0, valid {metric} {best['score']:.4f} -> {score:.4f}")
    return {"epochs": epochs, "steps": k, "lr_from": lr, "train_loss": running / k, "valid_score": score,
            "valid_before": best["score"], "seconds": time.perf_counter() - t0}


def train_classifier(
    model: EncoderClassifier, enc: TextEncoder, train: LabelledTexts, valid: LabelledTexts, cfg: StudentSpec, log=print
) -> dict:
    """In-scope rows: `kd_loss`; out-of-scope rows (label -1): outlier exposure."""
    labels = torch.from_numpy(train.labels)
    soft = torch.from_numpy(train.soft.astype(np.float32)) if train.soft is not None else None

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        ids, mask = enc.encode([train.texts[i] for i in idx])
        logits, _ = model(torch.from_numpy(ids), torch.from_numpy(mask))
        return classifier_loss(logits, labels[idx], soft[idx] if soft is not None else None, cfg)

    return fit(model, len(train.texts), cfg, batch_loss, lambda: accuracy(model, enc, valid), "accuracy", log)


def classifier_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, cfg: StudentSpec) -> torch.Tensor:
    """A batch's mean loss: `kd_loss` for in-scope rows, outlier exposure for out-of-scope ones (-1)."""
    y = y.to(logits.device)
    soft = soft.to(logits.device) if soft is not None else None
    oos = y < 0
    per_row = torch.zeros(len(y), device=logits.device)
    if (~oos).any():
        per_row[~oos] = kd_loss(logits[~oos], y[~oos], soft[~oos] if soft is not None else None,
                                cfg.kd_temperature, cfg.kd_alpha)
    if oos.any():
        per_row[oos] = OE_WEIGHT * outlier_exposure_loss(logits[oos])
    return per_row.mean()


def pad_batch(rows: list[np.ndarray], value: int) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def train_tagger(
    model: EncoderTagger,
    windows: list[tuple[np.ndarray, np.ndarray]],
    cfg: StudentSpec,
    evaluate: Callable[[], float],
    pad_id: int = 0,
    log=print,
    soft: list[np.ndarray] | None = None,
) -> dict:
    """Token classification on (ids, labels) windows; labels of -100 are ignored.
    `soft[w]` (tokens, tags), when given, holds a teacher tagger's probabilities at
    `cfg.kd_temperature` for window w: each token then learns `kd_loss`.
    `evaluate()` scores the current model on valid (field F1) for early stopping."""

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        ids = pad_batch([windows[i][0] for i in idx], pad_id)
        labels = torch.from_numpy(pad_batch([windows[i][1] for i in idx], -100)).reshape(-1)
        mask = pad_batch([np.ones(len(windows[i][0]), np.int64) for i in idx], 0)
        logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
        logits = logits.reshape(-1, logits.shape[-1])
        labels = labels.to(logits.device)
        if soft is None:
            return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
        targets = np.zeros((len(idx), ids.shape[1], logits.shape[-1]), np.float32)
        for row, i in enumerate(idx):
            targets[row, : len(soft[i])] = soft[i]
        keep = labels != -100
        targets = torch.from_numpy(targets).to(logits.device).reshape(-1, logits.shape[-1])[keep]
        return kd_loss(logits[keep], labels[keep], targets, cfg.kd_temperature, cfg.kd_alpha).mean()

    return fit(model, len(windows), cfg, batch_loss, evaluate, "field F1", log)

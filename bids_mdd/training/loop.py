"""Train one network on one fold: Adam, ReduceLROnPlateau, best-validation checkpoint, resume.

A plain loop rather than MONAI's ignite-based trainers: it keeps the dependency set small and
makes the resume state (one file per fold, written atomically each epoch) explicit.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bids_mdd.bids.atomic import atomic_output
from bids_mdd.models.task import Task

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: paper A's protocol)."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 0.01
    weight_decay: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    backbone_lr_factor: float = 1.0  # < 1 in transfer learning: LR of all but the head
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = True  # mixed precision, CUDA only
    progress: bool = True

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"


class ArrayDataset(Dataset):
    """In-memory inputs: volumes (n, x, y, z) get a channel axis (``add_channel``); inputs that
    carry their channels already, e.g. 2D (n, c, x, y), are used as they are."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, indices: np.ndarray,
                 add_channel: bool = True) -> None:
        self.inputs, self.targets, self.indices = inputs, targets, np.asarray(indices)
        self.add_channel = add_channel

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[item]
        x = torch.from_numpy(np.ascontiguousarray(self.inputs[index]))
        return (x[None] if self.add_channel else x), torch.as_tensor(self.targets[index])


@dataclass
class TrainResult:
    """Best-validation weights and the per-epoch history."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def _loader(dataset: Dataset, config: TrainConfig, shuffle_seed: int | None,
            train_mode: bool = False) -> DataLoader:
    """Batches of ``dataset``; in train mode a last batch of one sample is dropped (BatchNorm
    cannot normalise a single value per channel; with reshuffling each epoch no sample is
    left out for good)."""
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    lone_last = len(dataset) % config.batch_size == 1 and len(dataset) > config.batch_size
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle_seed is not None,
                      generator=generator, num_workers=config.num_workers,
                      pin_memory=config.cuda, persistent_workers=False,
                      drop_last=train_mode and lone_last)


def _to_device(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    x = x.to(config.device, non_blocking=True)
    if config.cuda and x.ndim == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


def _loss_fn(task: Task) -> nn.Module:
    return nn.CrossEntropyLoss() if task == Task.CLASSIFICATION else nn.MSELoss()


def _batch_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task,
                config: TrainConfig) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.float16, enabled=config.cuda and config.amp):
        out = net(x)
        if task == Task.CLASSIFICATION:
            return _loss_fn(task)(out.float(), y.long())
        return _loss_fn(task)(out.float()[:, 0], y.float())


def param_groups(net: nn.Module, head: str | None, config: TrainConfig) -> list[dict[str, Any]]:
    """One group for the head (``config.lr``), one for the rest (× ``backbone_lr_factor``)."""
    if head is None or config.backbone_lr_factor == 1.0:
        return [{"params": list(net.parameters()), "lr": config.lr}]
    head_params = [p for n, p in net.named_parameters() if n.startswith(head + ".")]
    rest = [p for n, p in net.named_parameters() if not n.startswith(head + ".")]
    return [{"params": head_params, "lr": config.lr},
            {"params": rest, "lr": config.lr * config.backbone_lr_factor}]


@torch.no_grad()
def predict(net: nn.Module, inputs: np.ndarray, indices: np.ndarray,
            config: TrainConfig, add_channel: bool = True) -> np.ndarray:
    """Outputs for ``inputs[indices]``: P(class 1) for a classifier, the value for a regressor."""
    net.eval()
    dataset = ArrayDataset(inputs, np.zeros(len(inputs), np.float32), indices, add_channel)
    outputs = []
    for x, _ in _loader(dataset, config, None):
        with torch.autocast("cuda", dtype=torch.float16, enabled=config.cuda and config.amp):
            out = net(_to_device(x, config)).float()
        outputs.append(torch.softmax(out, 1)[:, 1] if out.shape[1] == 2 else out[:, 0])
    return torch.cat(outputs).cpu().numpy() if outputs else np.zeros(0, np.float32)


@torch.no_grad()
def _evaluate_loss(net: nn.Module, loader: DataLoader, task: Task, config: TrainConfig) -> float:
    net.eval()
    total, count = 0.0, 0
    for x, y in loader:
        loss = _batch_loss(net, _to_device(x, config), y.to(config.device), task, config)
        total += float(loss) * len(y)
        count += len(y)
    return total / max(count, 1)


def train_network(net: nn.Module, inputs: np.ndarray, targets: np.ndarray,
                  train: np.ndarray, val: np.ndarray, task: Task, config: TrainConfig,
                  checkpoint: Path | None = None, head: str | None = None,
                  desc: str = "training", add_channel: bool = True) -> TrainResult:
    """Train ``net`` on ``inputs[train]``; keep the weights of the lowest validation loss
    (the training loss when ``val`` is empty). Resumes from ``checkpoint`` when it exists."""
    net.to(config.device)
    if config.cuda:
        net.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(param_groups(net, head, config), lr=config.lr,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=config.cuda and config.amp)
    train_set = ArrayDataset(inputs, targets, train, add_channel)
    val_loader = (_loader(ArrayDataset(inputs, targets, val, add_channel), config, None)
                  if len(val) else None)
    state: dict[str, Any] = {"epoch": 0, "best_loss": float("inf"), "best_epoch": 0,
                             "best_state": None, "history": []}
    if checkpoint is not None and checkpoint.is_file():
        # our own file from an interrupted run; weights_only=True refuses arbitrary pickles
        saved = torch.load(checkpoint, map_location=config.device, weights_only=True)
        net.load_state_dict(saved.pop("model"))
        optimizer.load_state_dict(saved.pop("optimizer"))
        scheduler.load_state_dict(saved.pop("scheduler"))
        scaler.load_state_dict(saved.pop("scaler", {}) or scaler.state_dict())
        state.update(saved)
        LOGGER.info("%s: resuming after epoch %d from %s", desc, state["epoch"], checkpoint)
    epochs = tqdm(range(state["epoch"], config.epochs), desc=desc, unit="epoch",
                  initial=state["epoch"], total=config.epochs, disable=not config.progress,
                  leave=False)
    for epoch in epochs:
        net.train()
        running, count = 0.0, 0
        for x, y in _loader(train_set, config, shuffle_seed=config.seed * 100_003 + epoch,
                            train_mode=True):
            optimizer.zero_grad(set_to_none=True)
            loss = _batch_loss(net, _to_device(x, config), y.to(config.device), task, config)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += float(loss.detach()) * len(y)
            count += len(y)
        train_loss = running / max(count, 1)
        # "precise BN": BatchNorm statistics recomputed as the plain average over the training
        # part with the current weights. The exponential running average lags far behind while
        # weights move fast, which left eval-mode outputs miscalibrated after short training on
        # small cohorts (measured: eval-mode training accuracy 0.5, train-mode 1.0).
        update_bn(_loader(train_set, config, None, train_mode=True), net, config.device)
        val_loss = _evaluate_loss(net, val_loader, task, config) if val_loader else train_loss
        scheduler.step(val_loss)
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss,
                                 "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"]})
        if val_loss < state["best_loss"] or state["best_state"] is None:
            state.update(best_loss=val_loss, best_epoch=epoch + 1,
                         best_state=copy.deepcopy({k: v.detach().cpu()
                                                   for k, v in net.state_dict().items()}))
        state["epoch"] = epoch + 1
        epochs.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}",
                           best=state["best_epoch"])
        if not config.progress and ((epoch + 1) % 10 == 0 or epoch + 1 == config.epochs):
            LOGGER.info("%s epoch %d/%d: loss %.4f, validation loss %.4f (best epoch %d)", desc,
                        epoch + 1, config.epochs, train_loss, val_loss, state["best_epoch"])
        if checkpoint is not None:
            _save_checkpoint(checkpoint, net, optimizer, scheduler, scaler, state)
    return TrainResult(state=state["best_state"], best_epoch=state["best_epoch"],
                       history=state["history"])


def _save_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, scaler: torch.amp.GradScaler,
                     state: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    **state}, tmp)

"""The training run: setup, optimisation loop, periodic eval, checkpoints, export."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from longspec.attention.sdpa import sdpa_attention
from longspec.attention.select import auto_backend
from longspec.build import resolve_device
from longspec.data.prompts import special_prefix
from longspec.loading import load_target, special_ids
from longspec.models.draft_vocab import count_tokens
from longspec.models.glide_io import load_glide
from longspec.models.target import TargetModel
from longspec.train.checkpoint import export_draft, load_checkpoint, repo_path, save_checkpoint
from longspec.train.checks import validate_train
from longspec.train.data import TrainData, eval_sequences, tokenize_split
from longspec.train.evaluate import (
    autocast,
    decode_tau,
    eval_prompts,
    evaluate,
    make_eval_set,
)
from longspec.train.forward import draft_logits, draft_loss, target_pass
from longspec.train.init import calibrate_output_scale, init_glide
from longspec.train.model_card import model_card
from longspec.train.positions import anchor_offset_positions, sample_lags
from longspec.train.tracker import TrainTracker

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def lr_at(step: int, t: DictConfig) -> float:
    """Linear warmup to t.lr, then cosine down to t.lr * t.min_lr_ratio at t.steps."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(t.steps - t.warmup_steps, 1)
    frac = min((step - t.warmup_steps) / span, 1.0)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def decode_target(hf) -> TargetModel:
    """The target as the benchmarks run it: best attention backend; on CUDA static shapes,
    so the greedy rounds of ``decode_tau`` replay as CUDA graphs (many times faster)."""
    return TargetModel(hf, auto_backend(), static=hf.device.type == "cuda")


def step_generator(seed: int, step: int) -> torch.Generator:
    """Positions/lags of a step depend only on (seed, step): resume reproduces them."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def resolve_save_path(path: str | None, work_dir: Path) -> Path:
    """null -> <work_dir>/final; a relative path is relative to the repository root."""
    return work_dir / "final" if path is None else repo_path(path)


class Trainer:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        t = self.t = cfg.train
        if t.batch_size % t.micro_batch:
            raise ValueError(
                f"train.batch_size={t.batch_size} must be a multiple of "
                f"train.micro_batch={t.micro_batch}"
            )
        self.device = resolve_device(cfg.device)
        if t.threads:
            torch.set_num_threads(int(t.threads))
        cuda = self.device.type == "cuda"
        tdt = t.target_dtype
        self.target_dtype = (
            (torch.float16 if cuda else torch.float32) if tdt == "auto" else DTYPES[tdt]
        )
        amp = t.amp
        self.amp_dtype = (torch.bfloat16 if cuda else None) if amp == "auto" else DTYPES.get(amp)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.work_dir = Path(t.work_dir).expanduser()
        self.save_path = resolve_save_path(t.save_path, self.work_dir)
        self.max_offset = (
            int(cfg.model.context) - t.seq_len if t.max_offset is None else int(t.max_offset)
        )
        if self.max_offset < 0:
            raise ValueError(f"train.seq_len={t.seq_len} exceeds the model context")

    # ----------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Target, data, the GLIDE layer (fresh or resumed), optimiser and tracker."""
        self._load_target()
        self._load_data()
        self.step, self.history, self.evals = 0, [], []
        self.best: dict[str, Any] | None = None  # weights of the best eval/agree so far
        state = self._resume() if self.cfg.resume else self._fresh_layer()
        self.opt = self._optimizer()
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
        self.tracker = TrainTracker(
            self.cfg.get("logger"),
            OmegaConf.to_container(self.cfg, resolve=True),
            self.work_dir,
            f"train-{self.cfg.model.name}-{self.t.name}",
        )

    def _load_target(self) -> None:
        cfg, t0 = self.cfg, time.perf_counter()
        hf, tok = load_target(
            cfg.model.target,
            dtype=self.target_dtype,
            device=self.device,
            trust_remote_code=cfg.trust_remote_code,
        )
        self.hf, self.tokenizer = hf, tok
        self.target = TargetModel(hf, sdpa_attention)
        self.pad_id, self.eos_ids = special_ids(
            tok, cfg.model, getattr(hf, "generation_config", None)
        )
        log.info(
            "target %s loaded in %.1fs on %s (%s)",
            cfg.model.name,
            time.perf_counter() - t0,
            self.device,
            self.target_dtype,
        )

    def _load_data(self) -> None:
        """Train stream (+ self-generated continuations), token counts, eval set."""
        t, tok, t0 = self.t, self.tokenizer, time.perf_counter()
        files, pieces = tokenize_split(tok, "train", t.data_root, t.max_files)
        extra, selfgen_tokens = None, 0
        if t.selfgen.n:
            extra, selfgen_tokens = self.selfgen_data(pieces)
        self.data = TrainData(pieces, t.seq_len, special_prefix(tok), t.seed, extra)
        self.token_counts = count_tokens(pieces, self.hf.config.vocab_size)  # draft_vocab
        ev = eval_sequences(tok, t.seq_len, t.eval.sequences, t.seed, t.data_root, t.max_files)
        self.eval_set = make_eval_set(ev, t.max_anchors, self.max_offset, t.seed)
        self.data_info = {
            "train_files": len(files),
            "train_tokens": int(sum(p.numel() for p in pieces)),
            "train_sequences_per_epoch": self.data.per_epoch,
            "selfgen_sequences": 0 if extra is None else int(extra.shape[0]),
            "selfgen_tokens": selfgen_tokens,
            "eval_sequences": int(ev.shape[0]),
            "split": "pycode: sha256(relpath) % 10 == 0 -> eval",
        }
        log.info("data: %s (%.1fs)", self.data_info, time.perf_counter() - t0)

    def _resume(self) -> dict[str, Any]:
        """The layer, step, curves and best weights of the checkpoint; its saved state."""
        ckpt = self.work_dir / "checkpoint"
        self.layer, state = load_checkpoint(ckpt, self.hf.config, self.device)
        self.step = int(state["step"])
        self.history, self.evals = list(state["history"]), list(state["evals"])
        self.best = state.get("best")
        log.info("resumed from %s at step %d", ckpt, self.step)
        return state

    def _fresh_layer(self) -> None:
        """A new GLIDE layer: the draft of train.init_from (fine-tuning), else by train.init
        with its output projections calibrated if asked."""
        t, ckpt = self.t, self.work_dir / "checkpoint"
        if ckpt.exists():
            log.warning("%s exists and resume=false: starting over", ckpt)
        if t.get("init_from") is not None:
            source = repo_path(t.init_from)
            self.layer = load_glide(source, self.hf.config, torch.float32, self.device)
            self.layer.train().requires_grad_(True)
            log.info("init: the draft in %s", source)
            return
        self.layer = init_glide(self.hf, t.init, t.seed, t.init_layer).to(self.device)
        if t.init != "random" and t.init_scale:
            ids = self.data.batch(0, t.micro_batch)  # (B, T)
            gen = torch.Generator().manual_seed(t.seed + 2**40)
            pos = anchor_offset_positions(
                ids.shape[0], ids.shape[1], t.max_anchors, self.max_offset, gen
            )  # (B, T)
            factor = calibrate_output_scale(
                self.layer, self.target, ids.to(self.device), pos.to(self.device), t.window
            )
            log.info("init: output projections scaled by %.4f", factor)
        self.layer.train().requires_grad_(True)

    def _optimizer(self) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices only."""
        t = self.t
        decay = [p for p in self.layer.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.layer.parameters() if p.ndim < 2]
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": t.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=t.lr,
            betas=tuple(t.betas),
            eps=1e-8,
            fused=self.device.type == "cuda",
        )

    def selfgen_data(self, pieces: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Sequences ending with the target's own continuations of train-stream prompts."""
        from longspec.train.selfgen import selfgen_sequences

        t, g = self.t, self.t.selfgen
        fast = bool(g.get("fast_path", False))
        rows, generated = selfgen_sequences(
            decode_target(self.hf) if fast else self.target,
            torch.cat(pieces),
            special_prefix(self.tokenizer),
            model_name=self.cfg.model.name,
            eos_ids=self.eos_ids,
            pad_id=self.pad_id,
            n=g.n,
            prompt_tokens=g.prompt_tokens,
            new_tokens=g.new_tokens,
            batch=g.batch,
            seed=t.seed,
            seq_len=t.seq_len,
            tag="fast-path" if fast else None,
        )
        return (rows.repeat(int(g.repeat), 1) if g.repeat > 1 else rows), generated

    # ----------------------------------------------------------------------------- train
    def train_step(self, step: int) -> dict[str, float]:
        t, dev = self.t, self.device
        ids = self.data.batch(0 if t.fixed_batch else step, t.batch_size)  # (B, T)
        gen = step_generator(t.seed, step)
        pos = anchor_offset_positions(
            ids.shape[0], ids.shape[1], t.max_anchors, self.max_offset, gen
        )
        lags = sample_lags(ids.shape[0], ids.shape[1], t.lag_min, t.lag_max, t.lag_per_token, gen)
        n_micro = t.batch_size // t.micro_batch
        sums = torch.zeros(5, dtype=torch.float64)
        for m in range(n_micro):
            sl = slice(m * t.micro_batch, (m + 1) * t.micro_batch)
            mid, mpos, mlag = ids[sl].to(dev), pos[sl].to(dev), lags[sl].to(dev)
            out = target_pass(self.target, mid, mpos, keep_logits=t.distill_weight > 0)
            with autocast(dev, self.amp_dtype):
                logits, valid = draft_logits(
                    self.layer, self.target, mid, mpos, out, mlag, t.window
                )
            r = draft_loss(logits, mid, valid, out, t.distill_weight, t.distill_temperature)
            (r.loss / n_micro).backward()
            sums += torch.tensor(
                [float(r.loss.detach()), float(r.ce), float(r.kl), float(r.acc), float(r.agree)],
                dtype=torch.float64,
            )
            del out, logits, r
        lr = lr_at(step, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        gnorm = torch.nn.utils.clip_grad_norm_(self.layer.parameters(), t.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss, ce, kl, acc, agree = (sums / n_micro).tolist()
        return {
            "loss": loss,
            "ce": ce,
            "kl": kl,
            "acc": acc,
            "agree": agree,
            "lr": lr,
            "grad_norm": float(gnorm),
        }

    def run_eval(self, step: int) -> dict[str, float]:
        t = self.t
        t0 = time.perf_counter()
        m = evaluate(
            self.layer,
            self.target,
            self.eval_set,
            window=t.window,
            lags=t.eval.lags,
            batch=t.eval.batch,
            amp_dtype=self.amp_dtype,
        )
        m["eval/seconds"] = time.perf_counter() - t0
        self.evals.append({"step": step, **m})
        if t.eval.keep_best and (self.best is None or m["eval/agree"] > self.best["agree"]):
            weights = {
                k: v.detach().to("cpu", copy=True) for k, v in self.layer.state_dict().items()
            }
            self.best = {"step": step, "agree": m["eval/agree"], "weights": weights}
        log.info("eval @%d: %s", step, {k: round(v, 4) for k, v in m.items()})
        self.tracker.log(m, step)
        return m

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "history": self.history,
            "evals": self.evals,
            "best": self.best,
        }

    def metrics(self, final: dict | None = None) -> dict[str, Any]:
        return {
            "model": self.cfg.model.name,
            "step": self.step,
            "tokens_seen": self.step * self.t.batch_size * self.t.seq_len,
            "max_offset": self.max_offset,
            "data": self.data_info,
            "final": final or {},
            "loss_curve": self.history,
            "evals": self.evals,
            "seconds_per_step": self.seconds_per_step,
        }

    def evals_at(self, step: int) -> dict[str, Any]:
        return next(e for e in reversed(self.evals) if e["step"] == step)

    def save(self) -> None:
        save_checkpoint(
            self.work_dir / "checkpoint",
            self.layer,
            self.hf.config,
            self.cfg,
            self.metrics(),
            self.state(),
        )

    def fit(self) -> dict[str, Any]:
        """Train to train.steps (or stop at train.stop_at), then evaluate and export."""
        if not self._train_steps():
            log.info("stopped at step %d (train.stop_at)", self.step)
            self.tracker.finish()
            return self.metrics()
        final = self.run_eval(self.step) if self.t.eval.final else {}
        self.save()  # the resume point: the last training state
        final = self._pick_export(final)
        if self.t.eval.tau_prompts:
            final.update(self._decode_tau())
        final["train/seconds_per_step"] = self.seconds_per_step
        metrics = self.metrics(final)
        self._export(metrics, final["exported_step"])
        self.tracker.finish({k: v for k, v in final.items() if v is not None})
        return metrics

    def _train_steps(self) -> bool:
        """Steps from self.step on, with logging, evals and checkpoints; False when
        train.stop_at stopped it early (a checkpoint saved: resume=true continues)."""
        t = self.t
        self.seconds_per_step = None
        self._window: list[dict[str, float]] = []
        bar = tqdm(
            range(self.step, t.steps),
            initial=self.step,
            total=t.steps,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not t.progress,
        )
        timed, n_timed, start = 0.0, 0, self.step
        with bar:
            for step in bar:
                t0 = time.perf_counter()
                rec = self.train_step(step)  # ends with a host sync (the loss values)
                if step > start:  # the first step is warm-up (allocations, kernels)
                    timed, n_timed = timed + time.perf_counter() - t0, n_timed + 1
                    self.seconds_per_step = timed / n_timed
                self.step = step + 1
                bar.set_postfix(
                    loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.3f}", lr=f"{rec['lr']:.2e}"
                )
                if not self._after_step(rec):
                    return False
        return True

    def _after_step(self, rec: dict[str, float]) -> bool:
        """Logging, periodic eval and checkpoint after a step; False at train.stop_at."""
        t, step = self.t, self.step
        self._window.append(rec)
        if step % t.log_every == 0 or step == t.steps:
            window = self._window
            avg = {k: sum(r[k] for r in window) / len(window) for k in window[0]}
            avg["lr"] = rec["lr"]
            self.history.append({"step": step, **avg})
            self.tracker.log({f"train/{k}": v for k, v in avg.items()}, step)
            self._window = []
        if step >= t.steps:
            return True
        if t.eval.every and step % t.eval.every == 0:
            self.run_eval(step)
        if t.save_every and step % t.save_every == 0:
            self.save()
        if t.stop_at is not None and step >= t.stop_at:
            self.save()  # interrupted on purpose
            return False
        return True

    def _pick_export(self, final: dict[str, Any]) -> dict[str, Any]:
        """The final metrics of the weights to export: the last step's, or with
        train.eval.keep_best those of the best eval/agree (loaded into the layer)."""
        exported = self.step
        if self.t.eval.keep_best and self.best is not None and self.best["step"] != self.step:
            exported = self.best["step"]
            self.layer.load_state_dict(self.best["weights"])
            final = {k: v for k, v in self.evals_at(exported).items() if k != "step"}
            log.info("exporting the weights of step %d (best eval/agree)", exported)
        return {**final, "exported_step": exported}

    def _decode_tau(self) -> dict[str, float]:
        """tau of greedy tree and chain decoding on eval-split prompts."""
        t, t0 = self.t, time.perf_counter()
        prompts = eval_prompts(
            self.tokenizer, t.eval.tau_prompts, t.eval.tau_prompt_tokens, t.data_root
        )
        taus = decode_tau(
            self.layer,
            decode_target(self.hf),
            prompts,
            eos_ids=self.eos_ids,
            pad_id=self.pad_id,
            new_tokens=t.eval.tau_new_tokens,
            tree_shape=t.eval.tree_shape,
            gamma=t.eval.gamma,
            window=t.window,
        )
        taus["eval/tau_seconds"] = time.perf_counter() - t0
        log.info("decode tau on %d eval prompts: %s", len(prompts), taus)
        self.tracker.log(taus, self.step)
        return taus

    def _export(self, metrics: dict[str, Any], exported: int) -> None:
        """The draft in the published layout, with its model card and token counts."""
        t = self.t
        export_draft(
            self.save_path,
            self.layer,
            self.hf.config,
            self.cfg,
            metrics,
            DTYPES[t.save_dtype],
            model_card(self.cfg.model.name, self.cfg, metrics),
            extra={"step": exported, "dtype": t.save_dtype, "train": t.name},
            token_counts=self.token_counts,
        )
        log.info("draft saved to %s", self.save_path)


def train(cfg: DictConfig) -> int:
    validate_train(cfg)  # every setting, before the target loads
    trainer = Trainer(cfg)
    trainer.setup()
    metrics = trainer.fit()
    if metrics["step"] < cfg.train.steps:
        print(f"stopped at step {metrics['step']}: {trainer.work_dir / 'checkpoint'}")
        return 0
    final = metrics["final"]
    print(f"draft: {trainer.save_path}")
    print(
        "final: "
        + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()
        )
    )
    return 0

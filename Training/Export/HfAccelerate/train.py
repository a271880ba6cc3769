"""Continued pretraining or distillation of a ModelSurgery student on many GPUs and nodes, with Hugging Face
Accelerate (FSDP2) and Transformers.

launch.sh runs it through `accelerate launch --config_file accelerate_config.yaml ... train.py --job job.json`; every
setting comes from job.json, which `modelsurgery export-job` wrote from the local run's options. Accelerate does all of
the distributed work (process groups, sharding, gradient synchronisation, checkpoints); this file is the training loop.
"""
import argparse
import json
import math
import os
import shutil

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from corpus import TokenWindows, open_corpus
from objective import cross_entropy, cross_entropy_per_window, distillation_loss, learning_rate_at, teacher_input_ids

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_args():
    parser = argparse.ArgumentParser(description="ModelSurgery distributed job (Accelerate FSDP2).")
    parser.add_argument("--job", default="job.json", help="the job description written by modelsurgery export-job")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/checkpoints/last")
    return parser.parse_args()


def is_decayed(name):
    """WeightDecayGroups.IsExcluded, negated: biases and norm weights do not decay, every other weight does."""
    if name == "bias" or name.endswith(".bias"):
        return False
    if not name.endswith("weight"):
        return True
    owner = name[: -len(".weight")] if name.endswith(".weight") else ""
    return "norm" not in owner.rsplit(".", 1)[-1].lower()


def evaluate(accelerator, model, loader):
    """Mean next-token loss over the evaluation windows (the windows the local run validated on)."""
    model.eval()
    losses = []
    with torch.no_grad():
        for inputs in loader:
            logits = model(input_ids=inputs["input_ids"], use_cache=False).logits
            losses.append(accelerator.gather_for_metrics(cross_entropy_per_window(logits, inputs["labels"])))
    model.train()
    return torch.cat(losses).mean().item()


def save_checkpoint(accelerator, output, step):
    """The resumable state (sharded model, optimizer, RNG) in <output>/checkpoints/last, with the step it ends."""
    last = os.path.join(output, "checkpoints", "last")
    accelerator.save_state(last)
    if accelerator.is_main_process:
        with open(os.path.join(last, "step.json"), "w", encoding="utf-8") as f:
            json.dump({"step": step}, f)
    accelerator.wait_for_everyone()


def save_final(accelerator, model, student_dir, final):
    """The trained student as a Hugging Face folder: its weights, and every other file of the student folder
    (config.json, the compressed tokenizer, vocab_map.json) copied unchanged, as the architecture did not change."""
    accelerator.wait_for_everyone()
    accelerator.save_model(model, final, max_shard_size="5GB", safe_serialization=True)
    if accelerator.is_main_process:
        for name in os.listdir(student_dir):
            source = os.path.join(student_dir, name)
            if os.path.isfile(source) and not name.endswith(".safetensors") and name != "model.safetensors.index.json":
                shutil.copyfile(source, os.path.join(final, name))
    accelerator.wait_for_everyone()


def main():
    args = parse_args()
    root = os.path.dirname(os.path.abspath(args.job))
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    opt, batch, schedule, kd = job["optimizer"], job["batch"], job["schedule"], job["distillation"]
    output = os.path.join(root, job["output_dir"])
    student_dir = os.path.join(root, job["student"])

    accelerator = Accelerator()
    # The global batch is the local run's; the gradient accumulation follows from the processes actually launched.
    per_pass = batch["micro_batch"] * accelerator.num_processes
    if batch["global_windows"] % per_pass:
        raise SystemExit(
            f"job.json: global_windows {batch['global_windows']} is not a multiple of micro_batch x processes "
            f"({batch['micro_batch']} x {accelerator.num_processes}); export the job again for this world size"
        )
    accelerator.gradient_accumulation_steps = batch["global_windows"] // per_pass
    set_seed(job["seed"])

    tokens, corpus = open_corpus(root, job["data"])
    seq_len = corpus["seq_len"]
    train = TokenWindows(tokens, np.load(os.path.join(root, corpus["train_windows"])), seq_len, seed=job["seed"])
    evaluation = TokenWindows(tokens, np.load(os.path.join(root, corpus["eval_windows"])), seq_len)
    train_loader = DataLoader(train, batch_size=batch["micro_batch"], shuffle=False, drop_last=True, pin_memory=True)
    eval_loader = DataLoader(evaluation, batch_size=batch["micro_batch"], shuffle=False, pin_memory=True)

    # float32 master weights; accelerate_config.yaml's mixed_precision sets the compute dtype (bf16 or none).
    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if is_decayed(n)], "weight_decay": opt["weight_decay"]},
            {"params": [p for n, p in named if not is_decayed(n)], "weight_decay": 0.0},
        ],
        lr=opt["lr"],
        betas=(opt["beta1"], opt["beta2"]),
        eps=opt["eps"],
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    # A run without validation windows (val_fraction 0) has nothing to evaluate.
    eval_loader = accelerator.prepare(eval_loader) if len(evaluation) > 0 else None
    if len(train_loader) == 0:
        raise SystemExit(f"{len(train)} training windows are fewer than one micro-batch per process ({per_pass})")

    teacher = kept = None
    if kd is not None:
        # The teacher is only run forward: every process holds a whole copy (see README.md: it must fit on one GPU).
        teacher = AutoModelForCausalLM.from_pretrained(os.path.join(root, job["teacher"]), dtype=DTYPES[kd["teacher_dtype"]])
        teacher.requires_grad_(False)
        teacher = teacher.to(accelerator.device).eval()
        if kd["vocab_map"] is not None:
            # Student id i is teacher id kept_old_ids[i]: the teacher reads those ids and is compared on those columns.
            with open(os.path.join(root, kd["vocab_map"]), encoding="utf-8") as f:
                kept = torch.tensor(json.load(f)["kept_old_ids"], dtype=torch.long, device=accelerator.device)

    total_steps, warmup_steps = schedule["total_steps"], schedule["warmup_steps"]
    step = 0
    if args.resume:
        accelerator.load_state(os.path.join(output, "checkpoints", "last"))
        with open(os.path.join(output, "checkpoints", "last", "step.json"), encoding="utf-8") as f:
            step = json.load(f)["step"]
    epoch, skip = divmod(step * accelerator.gradient_accumulation_steps, len(train_loader))

    os.makedirs(output, exist_ok=True)
    metrics = open(os.path.join(output, "metrics.jsonl"), "a", encoding="utf-8") if accelerator.is_main_process else None
    non_finite = 0
    step_loss = torch.zeros((), device=accelerator.device)
    model.train()
    while step < total_steps:
        train.set_epoch(epoch)
        for inputs in accelerator.skip_first_batches(train_loader, skip) if skip else train_loader:
            lr = learning_rate_at(step, opt["lr"], opt["min_lr"], total_steps, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            skipped = False
            with accelerator.accumulate(model):
                logits = model(input_ids=inputs["input_ids"], use_cache=False).logits
                if teacher is None:
                    loss = cross_entropy(logits, inputs["labels"])
                else:
                    with torch.no_grad():
                        teacher_ids = teacher_input_ids(inputs["input_ids"], kept)
                        teacher_logits = teacher(input_ids=teacher_ids, use_cache=False).logits
                    loss = distillation_loss(
                        logits, teacher_logits, inputs["labels"], kept, kd["divergence"], kd["temperature"], kd["alpha"]
                    )
                accelerator.backward(loss)
                step_loss += loss.detach()
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), opt["grad_clip"] if opt["grad_clip"] > 0 else math.inf)
                    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                    # As locally: a step whose gradient is not finite is skipped, and too many in a row stop the run.
                    skipped = not bool(torch.isfinite(norm))
                if not skipped:
                    optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue

            mean_loss = accelerator.reduce(step_loss / accelerator.gradient_accumulation_steps, reduction="mean").item()
            step_loss.zero_()
            step += 1
            non_finite = non_finite + 1 if skipped else 0
            if non_finite >= job["max_non_finite_steps"]:
                raise SystemExit(f"{non_finite} steps in a row had a non-finite gradient; stopping at step {step}")
            record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(norm), "skipped": skipped}
            if job["eval_every"] > 0 and step % job["eval_every"] == 0 and eval_loader is not None:
                record["val_loss"] = evaluate(accelerator, model, eval_loader)
            if metrics is not None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if job["checkpoint_every"] > 0 and step % job["checkpoint_every"] == 0:
                save_checkpoint(accelerator, output, step)
            if step >= total_steps:
                break
        skip = 0
        epoch += 1

    if eval_loader is not None:
        accelerator.print(f"final validation loss {evaluate(accelerator, model, eval_loader):.4f}")
    save_final(accelerator, model, student_dir, os.path.join(output, "final"))
    if metrics is not None:
        metrics.close()


if __name__ == "__main__":
    main()

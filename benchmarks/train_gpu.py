"""Tokens/s and model FLOPs utilisation (MFU) of our training step on a Llama-2-7B-shaped model, on one GPU.

What runs is what `alpaca_ft.train.train` does per optimizer step, on synthetic data:

- a randomly initialised `LlamaForCausalLM` of Llama 2 7B's shape (hidden 4096, 32 layers, 32 heads, MLP 11008,
  vocab 32000, untied head; 6.74B parameters), built directly in bf16 on the GPU (no weights downloaded);
- `alpaca_ft.model.freeze(model, n_freeze=24)` (embeddings and the first 24 layers frozen: 8 layers + final norm +
  lm_head train, 1.75B parameters), `enable_checkpointing` (non-reentrant), trainable parameters cast to fp32
  (master weights, as train() does), AdamW on them (fused, betas 0.9/0.99, eps 1e-5, as train());
- synthetic packed rows of `--seq-len` (1,024) tokens: random token ids, several examples per row (lengths drawn
  uniformly in [--min-example, --max-example], the last one cut to fill the row, so no padding), position_ids
  restarting at each example, labels masked (-100) over the first `--prompt-share` of each example, batched by
  `alpaca_ft.batching.collate` (so each micro-batch carries the 4-D block-diagonal bool mask);
- per step: `alpaca_ft.train.step_grads` over `--grad-accum` micro-batches of `--batch-size` rows under bf16
  autocast, `clip_grad_norm_(1.0)`, `opt.step()`, `opt.zero_grad(set_to_none=True)`.

Batches are collated before timing (a pool, reused in turn; collate's own time is printed separately). After
`--warmup-steps` steps, `--steps` steps are timed between two `torch.cuda.synchronize()`.
tokens/s = real tokens processed (all of them: rows are full) / seconds.

FLOPs per token (T = tokens, d = hidden, s = row length, L = layers; N_i = parameters of decoder layer i, N_head =
lm_head; "range" = the layers backward runs through: from the top down to the lowest trainable layer, or all of
them when the embeddings train). MFU = (FLOPs/token * tokens/s) / peak dense bf16 FLOP/s of the GPU.

1. `6N`:       6 * N_total, N_total = every parameter (embedding table included) -- the usual convention for
               a full fine-tune/pre-training, printed for comparison with published numbers. With 3/4 of the
               layers frozen this run does much less work than that, so this figure overstates what was computed.
2. `model`:    2 * (sum_i N_i + N_head)                 forward through every layer and the head
               + 2 * (sum_{i in range} N_i + N_head)    backward, grad w.r.t. activations
               + 2 * (sum_{i trainable} N_i + N_head)   backward, grad w.r.t. trainable weights
               (with n_freeze=24 of 32 and frozen embeddings: 2*N_all + 4*N_trainable, backward only over the top 8
               layers and the head). The embedding lookup counts 0.
3. `model+attn`: 2. plus attention scores and weighted sums: 4*s*d per layer forward (QK^T and AV), 8*s*d per
               layer in range backward. s is the full row: with an explicit mask SDPA computes the whole s x s
               square (neither causal nor block-diagonal sparsity is skipped). This is the MFU to quote.
4. `hardware`: 3. plus the forward that gradient checkpointing recomputes in backward for the layers in range
               (2*N_i + 4*s*d each); frozen layers below the range save nothing and are not recomputed. HFU, not MFU.

Peak dense bf16 TFLOPS by `torch.cuda.get_device_name()` (NVIDIA datasheets, without sparsity): H100 SXM 989,
H100 PCIe 756, H100 NVL 835, H200 989, H200 NVL 835, A100 312; anything else needs `--peak-tflops`.

    python benchmarks/train_gpu.py [--batch-size 8] [--grad-accum 1] [--steps 10] [--peak-tflops 989]
    python benchmarks/train_gpu.py --smoke    # tiny model, fp32, CPU, 2 steps: exercises the code path anywhere

Without CUDA (and without --smoke) it says so and exits 0.
"""
from __future__ import annotations
import argparse, math, random, sys, time

PEAK_BF16_TFLOPS = [('H100 NVL', 835.), ('H100 PCIe', 756.), ('H100', 989.), ('H200 NVL', 835.), ('H200', 989.),
                    ('A100', 312.)]  # first substring match of the device name wins


def peak_tflops(name:str) -> float|None:
    "Dense bf16 peak of the GPU called `name`, if known."
    for key, v in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower(): return v
    return None


def llama2_7b_config():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def smoke_config():
    from alpaca_ft.model import tiny_config
    return tiny_config(1024, layers=4, hidden=64, heads=4, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def build_model(cfg, device, dtype, attn_implementation:str='sdpa'):
    "A randomly initialised LlamaForCausalLM of `cfg`, created in `dtype` directly on `device`."
    import torch
    from transformers import LlamaForCausalLM
    with torch.device(device):
        return LlamaForCausalLM._from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)


def prepare_for_training(model, n_freeze:int, checkpointing:bool):
    "As `alpaca_ft.train.train`: freeze, gradient checkpointing, fp32 master copies of what trains."
    from alpaca_ft.model import enable_checkpointing, freeze
    freeze(model, n_freeze)
    if checkpointing: enable_checkpointing(model)
    for p in model.parameters():
        if p.requires_grad: p.data = p.data.float()
    return model


def synthetic_rows(n:int, seq_len:int, vocab:int, rng:random.Random, lo:int, hi:int, prompt_share:float,
                   first_id:int=3) -> list[dict]:
    "`n` packed rows of exactly `seq_len` tokens, several examples each, position_ids restarting per example."
    rows = []
    for _ in range(n):
        ids, labels, pos = [], [], []
        while len(ids) < seq_len:
            k = min(rng.randint(lo, hi), seq_len - len(ids))
            toks = [rng.randrange(first_id, vocab) for _ in range(k)]
            n_prompt = int(k * prompt_share)
            ids += toks; labels += [-100] * n_prompt + toks[n_prompt:]; pos += list(range(k))
        rows.append({'input_ids': ids, 'labels': labels, 'position_ids': pos})
    return rows


def flops_per_token(model, seq_len:int, checkpointing:bool) -> dict:
    "FLOPs per token of one training step under the four formulas of the module docstring (works on a meta model)."
    layers, d = model.model.layers, model.config.hidden_size
    L = len(layers)
    n_layer = [sum(p.numel() for p in l.parameters()) for l in layers]
    trainable = [any(p.requires_grad for p in l.parameters()) for l in layers]
    head = model.get_output_embeddings().weight
    n_head, head_trains = head.numel(), head.requires_grad
    embed_trains = model.get_input_embeddings().weight.requires_grad
    n_total = sum(p.numel() for p in model.parameters())
    lowest = 0 if embed_trains else next((i for i, t in enumerate(trainable) if t), L)
    in_range = [i >= lowest for i in range(L)]
    bwd_needed = lowest < L or head_trains
    fwd = 2 * (sum(n_layer) + n_head)
    bwd_act = 2 * (sum(n for n, r in zip(n_layer, in_range) if r) + n_head) if bwd_needed else 0
    bwd_w = 2 * (sum(n for n, t in zip(n_layer, trainable) if t) + (n_head if head_trains else 0))
    model_f = fwd + bwd_act + bwd_w
    attn = 4 * seq_len * d * L + 8 * seq_len * d * sum(in_range)
    recompute = sum(2 * n + 4 * seq_len * d for n, r in zip(n_layer, in_range) if r) if checkpointing else 0
    return {'6N': 6 * n_total, 'model': model_f, 'model+attn': model_f + attn, 'hardware': model_f + attn + recompute,
            '_n_total': n_total, '_n_trainable': sum(p.numel() for p in model.parameters() if p.requires_grad),
            '_layers_trainable': sum(trainable), '_layers_in_backward': sum(in_range)}


def flops_table(f:dict, tok_s:float|None, peak:float|None) -> list[str]:
    notes = {'6N': '6 x all params (full-FT convention; overstates this run)',
             'model': 'fwd all layers + bwd (activations, trainable weights)',
             'model+attn': '+ attention 4sd fwd / 8sd bwd per layer (MFU)',
             'hardware': '+ checkpointing recompute (HFU)'}
    out = [f'{"formula":<12}{"GFLOP/token":>13}{"TFLOPS":>12}{"MFU":>8}  note']
    for k, note in notes.items():
        tf = f[k] * tok_s / 1e12 if tok_s else None
        mfu = f'{tf / peak:.1%}' if tf is not None and peak else 'n/a'
        out.append(f'{k:<12}{f[k]/1e9:>13.4g}{(f"{tf:.4g}" if tf is not None else "n/a"):>12}{mfu:>8}  {note}')
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--batch-size', type=int, default=8, help='rows per micro-batch')
    ap.add_argument('--grad-accum', type=int, default=1, help='micro-batches per optimizer step')
    ap.add_argument('--seq-len', type=int, default=1024, help='tokens per packed row')
    ap.add_argument('--steps', type=int, default=10, help='timed optimizer steps')
    ap.add_argument('--warmup-steps', type=int, default=3, help='untimed optimizer steps first')
    ap.add_argument('--n-freeze', type=int, default=24, help='first decoder layers to freeze (embeddings are frozen too)')
    ap.add_argument('--no-checkpointing', action='store_true', help='turn gradient checkpointing off')
    ap.add_argument('--attn', default='sdpa', choices=['sdpa', 'eager'], help='attention implementation')
    ap.add_argument('--min-example', type=int, default=64, help='shortest synthetic example (tokens)')
    ap.add_argument('--max-example', type=int, default=512, help='longest synthetic example (tokens)')
    ap.add_argument('--prompt-share', type=float, default=0.4, help='share of each example masked out of the labels')
    ap.add_argument('--pool', type=int, default=4, help='distinct steps of batches collated up front and reused')
    ap.add_argument('--lr', type=float, default=2e-4, help='AdamW learning rate (constant)')
    ap.add_argument('--peak-tflops', type=float, default=None, help='peak dense bf16 TFLOPS (default: by device name)')
    ap.add_argument('--seed', type=int, default=0, help='model init and synthetic data')
    ap.add_argument('--smoke', action='store_true', help='tiny model, fp32, CPU, 2 steps: check the code path without a GPU')
    a = ap.parse_args(argv)

    import torch
    from alpaca_ft.batching import collate
    from alpaca_ft.train import step_grads
    if a.smoke:
        device, dtype, amp, cfg = torch.device('cpu'), torch.float32, None, smoke_config()
        a.batch_size, a.grad_accum, a.seq_len, a.steps, a.warmup_steps, a.pool = 2, 2, 128, 2, 1, 2
        a.min_example, a.max_example, a.n_freeze = 16, 64, 3
        print('smoke run: tiny Llama (4 layers, hidden 64, vocab 1024), fp32, CPU, batch 2 x accum 2, 128 tokens, 2 steps')
    else:
        if not torch.cuda.is_available():
            print('no CUDA device: this benchmark needs a GPU (try --smoke to check the code path on CPU); nothing run')
            return 0
        device, dtype, amp, cfg = torch.device('cuda'), torch.bfloat16, torch.bfloat16, llama2_7b_config()
    torch.manual_seed(a.seed)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    peak = a.peak_tflops or (peak_tflops(name) if device.type == 'cuda' else None)
    checkpointing = not a.no_checkpointing

    t0 = time.perf_counter()
    model = prepare_for_training(build_model(cfg, device, dtype, a.attn), a.n_freeze, checkpointing)
    model.train()
    if device.type == 'cuda': torch.cuda.synchronize()
    t_build = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0, fused=device.type == 'cuda')
    f = flops_per_token(model, a.seq_len, checkpointing)
    print(f'device {name}; peak bf16 {f"{peak:.0f} TFLOPS" if peak else "unknown (pass --peak-tflops)"}; '
          f'torch {torch.__version__}')
    print(f'model: {f["_n_total"]:,} params, {f["_n_trainable"]:,} trainable (fp32) in {f["_layers_trainable"]} of '
          f'{len(model.model.layers)} layers + final norm + lm_head, rest {dtype}; built in {t_build:.1f} s; '
          f'gradient checkpointing {"on" if checkpointing else "off"}; attention {a.attn}; autocast {amp}')

    rng = random.Random(a.seed)
    pad_id = cfg.pad_token_id
    t0 = time.perf_counter()
    pool = [[collate(synthetic_rows(a.batch_size, a.seq_len, cfg.vocab_size, rng, a.min_example, a.max_example,
                                    a.prompt_share), pad_id=pad_id) for _ in range(a.grad_accum)] for _ in range(a.pool)]
    t_collate = (time.perf_counter() - t0) / (a.pool * a.grad_accum)
    ex_per_row = sum(int((b['position_ids'] == 0).sum()) for s in pool for b in s) / (a.pool * a.grad_accum * a.batch_size)
    mask = pool[0][0]['attention_mask']
    print(f'data: {a.batch_size} rows x {a.seq_len} tokens per micro-batch, grad_accum {a.grad_accum} '
          f'({a.batch_size * a.grad_accum * a.seq_len:,} tokens/step), {ex_per_row:.1f} examples per row on average, '
          f'mask {tuple(mask.shape)} {mask.dtype}; building + collating one micro-batch: {t_collate*1e3:.0f} ms (CPU, not timed)')

    def one_step(micro):
        r = step_grads(model, micro, device, amp, a.attn)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return r

    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(a.warmup_steps): r = one_step(pool[i % a.pool])
    sync()
    t_warm = time.perf_counter() - t0
    n_tok, losses = 0, []
    t0 = time.perf_counter()
    for i in range(a.steps):
        micro = pool[(a.warmup_steps + i) % a.pool]
        r = one_step(micro)
        n_tok += int(sum(b['num_tokens'] for b in micro)); losses.append(r['loss'])
    sync()
    dt = time.perf_counter() - t0
    tok_s = n_tok / dt
    print(f'warmup: {a.warmup_steps} steps in {t_warm:.2f} s; timed: {a.steps} steps, {n_tok:,} tokens in {dt:.2f} s '
          f'= {dt / a.steps:.3f} s/step; losses {losses[0]:.4f} .. {losses[-1]:.4f}')
    if device.type == 'cuda':
        print(f'peak GPU memory allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, '
              f'reserved {torch.cuda.max_memory_reserved() / 2**30:.1f} GiB')
    print(f'\ntokens/s: {tok_s:,.0f}   ({tok_s / (a.batch_size * a.grad_accum * a.seq_len):.2f} optimizer steps/s)')
    for line in flops_table(f, tok_s, peak): print(line)

    if a.smoke:  # what the code path should guarantee, checked where it can run
        assert all(math.isfinite(x) for x in losses), losses
        frozen = [p for p in model.parameters() if not p.requires_grad]
        assert frozen and all(p.grad is None for p in frozen) and all(p.dtype == torch.float32 for p in params)
        # the FLOPs formulas on the real 7B shape, built on the meta device (no memory), frozen as the GPU run is
        meta = prepare_for_training(build_model(llama2_7b_config(), 'meta', torch.bfloat16), 24, True)
        f7 = flops_per_token(meta, 1024, True)
        assert f7['_n_total'] == 6_738_415_616, f7['_n_total']
        print(f'\nLlama-2-7B shape on the meta device: {f7["_n_total"]:,} params, {f7["_n_trainable"]:,} trainable with '
              f'n_freeze=24; FLOPs per token at s=1024 (what the GPU run will use):')
        for line in flops_table(f7, None, None): print(line)
        print('smoke: OK')
    return 0


if __name__ == '__main__': sys.exit(main())

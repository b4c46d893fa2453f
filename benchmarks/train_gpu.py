"""Tokens/s, MFU and peak memory of our training step on a Llama-2-7B-shaped model, one GPU, one run.

One model is built once and set up for each configuration below in turn by
`alpaca_ft.model.setup_for_training` (the call `alpaca_ft train` makes), from the same initial trainable
weights, with a fresh AdamW, on the same batches:

  name           checkpointing                     compile  attention, mask
  shipped        as shipped: transformers'         no       sdpa, dense 4-D block mask
                 activation_checkpointing_enable (+ enable_input_require_grads: backward through all layers)
  ckpt_fixed     on, the layers that train only    no       sdpa, dense 4-D block mask
  ckpt_off       off                               no       sdpa, dense 4-D block mask
  compiled       off                               layers   sdpa, dense 4-D block mask
  compiled_ckpt  on, the layers that train only    layers   sdpa, dense 4-D block mask
  flex           off                               layers   flex_attention, BlockMask (skips masked blocks)
  causal         off                               layers   sdpa, plain causal (2-D all-ones mask, positions
                                                            0..s-1): packed examples see each other; the
                                                            article's way, WRONG, a speed reference only
  lora_all       off                               layers   sdpa, dense 4-D block mask; LoRA (--lora-r 64,
                                                            alpha 16, dropout 0.1, q,k,v,o_proj) on all 32
                                                            layers, base frozen in bf16 (`train --lora-r 64
                                                            --n-freeze 0`)
  lora_top8      off                               layers   the same with adapters on the top 8 layers only,
                                                            24 frozen without adapters (`--n-freeze 24`)

The LoRA configurations are set up by `alpaca_ft.lora.add_lora` (the call `build_model` makes for
`train --lora-r`; they need `peft`: without it they are skipped with a note) and taken off again after
(`unload`), so they run last by default.

The default `alpaca_ft train` picks on a CUDA device: sdpa, compiled layers, checkpointing as the user sets it
(off unless --grad-checkpointing): `compiled` (`compiled_ckpt` with --default-ckpt). On a CPU (--smoke) it
compiles nothing: `ckpt_off` (`ckpt_fixed`). Ratios are to the default.

Per optimizer step, the functions `alpaca_ft train` runs: `alpaca_ft.train.train_step` (`step_grads` over
`--grad-accum` micro-batches of `--batch-size` rows: each moved to the GPU, its block mask built there from
position_ids for the attention implementation, forward under bf16 autocast, summed token loss / label tokens,
backward; then clip 1.0, the AdamW step, the scheduler step, `zero_grad`), with the optimizer and scheduler of
`build_optimizer` (fused AdamW, betas 0.9/0.99, eps 1e-5) and `build_scheduler`, and the model set up as
`build_model` sets it up. Model: a randomly initialised `LlamaForCausalLM` of Llama 2 7B's shape (hidden 4096,
32 layers, 32 heads, MLP 11008, vocab 32000, untied head; 6.74B parameters), built in bf16 on the GPU;
`--n-freeze` 24: embeddings and layers 0-23 frozen (bf16), layers 24-31, final norm and lm_head train (1.75B
parameters, fp32 master weights). Data: synthetic packed rows of `--seq-len` (1,024) tokens, several examples
a row (lengths uniform in [--min-example, --max-example], the last one cut to fill the row: no padding),
position_ids restarting per example, labels masked over the first `--prompt-share` of each example; batched by
`pad_batch` into pinned memory before timing, as train's DataLoader gives them. Each configuration runs
`--warmup-steps` steps (the first compiles; its excess over a timed step is printed as compile time), then
`--steps` steps timed between two `torch.cuda.synchronize()`. tokens/s = tokens processed (rows are full) /
seconds. A one-row probe before the steps counts the layers backward reaches, the layers recomputed and the
MmBackward0 nodes (`alpaca_ft.model.count_layer_passes`).

MFU, by the model+attn formula: FLOPs per token = 2*(sum_i N_i + N_head) forward through every layer and the
head + 2*(sum_{i in B} N_i + N_head) backward for activation gradients + 2*(sum_{i trainable} N_i + N_head)
backward for weight gradients (LoRA: only the adapters' parameters train) + attention: 4*s*d per layer forward and 8*s*d per layer in B backward. N_i:
parameters of decoder layer i; B: the layers backward must run through (`backward_layers`: 24-31 here); s: row
length; d: hidden size; the embedding lookup counts 0. 21.02 GFLOP/token at the 7B shape, s = 1,024, n_freeze
24. MFU = FLOPs/token * tokens/s / peak dense bf16 FLOP/s. Every configuration is credited the same useful
FLOPs: the extra work of `shipped` (backward and recompute through frozen layers) and checkpointing's
recompute are not counted, and for `flex` and `causal` the attention term still counts the full s x s square
they partly skip. Peak dense bf16 TFLOPS by device name (NVIDIA datasheets, no sparsity): H100 SXM 989, H100
PCIe 756, H100 NVL 835, H200 989, H200 NVL 835, A100 312; anything else needs `--peak-tflops`.

    python benchmarks/train_gpu.py --out bench.json               # every configuration, 7B shape, one GPU
    python benchmarks/train_gpu.py --configs ckpt_off,compiled    # a subset
    python benchmarks/train_gpu.py --smoke                        # toy shape, fp32, CPU, seconds

It prints one JSON line per configuration as it finishes (and rewrites `--out` after each, so a run cut short
keeps what it measured), then the table. It imports neither `datasets` nor `wandb`. Without CUDA (and without
--smoke) it says so and exits 0.
"""
from __future__ import annotations
import argparse, gc, json, math, os, random, sys, time
from pathlib import Path

PEAK_BF16_TFLOPS = [('H100 NVL', 835.), ('H100 PCIe', 756.), ('H100', 989.), ('H200 NVL', 835.),
                    ('H200', 989.), ('A100', 312.)]  # the first substring match of the device name wins

# name: (checkpointing, compile, attention implementation, mask); checkpointing 'shipped' = the old path
CONFIGS = {
    'shipped': ('shipped', False, 'sdpa', 'block'),
    'ckpt_fixed': (True, False, 'sdpa', 'block'),
    'ckpt_off': (False, False, 'sdpa', 'block'),
    'compiled': (False, True, 'sdpa', 'block'),
    'compiled_ckpt': (True, True, 'sdpa', 'block'),
    'flex': (False, True, 'flex_attention', 'block'),
    'causal': (False, True, 'sdpa', 'causal'),
    'lora_all': (False, True, 'sdpa', 'block'),
    'lora_top8': (False, True, 'sdpa', 'block'),
}
LORA_N_FREEZE = {'lora_all': 0, 'lora_top8': None}  # None: --n-freeze (24; 2 with --smoke)
SMOKE = 'shipped,ckpt_fixed,ckpt_off'  # compiling on a CPU takes 10-40 s a configuration: name them to run


def peak_tflops(name:str) -> float|None:
    "Dense bf16 peak of the GPU called `name`, if known."
    for key, v in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower(): return v
    return None


def llama2_7b_config():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0)


def smoke_config():
    from alpaca_ft.model import tiny_config
    return tiny_config(1024, layers=4, hidden=64, heads=4, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def build_model(cfg, device, dtype, attn_implementation:str='sdpa'):
    "A randomly initialised LlamaForCausalLM of `cfg`, created in `dtype` directly on `device`."
    import torch
    from transformers import LlamaForCausalLM
    with torch.device(device):
        return LlamaForCausalLM._from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)


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
            ids += toks
            labels += [-100] * n_prompt + toks[n_prompt:]
            pos += list(range(k))
        rows.append({'input_ids': ids, 'labels': labels, 'position_ids': pos})
    return rows


def flops_per_token(model, seq_len:int) -> dict:
    "Useful FLOPs per token of a training step (module docstring), from what trains; works on a meta model."
    from alpaca_ft.model import backward_layers
    layers, d = model.model.layers, model.config.hidden_size
    n_layer = [sum(p.numel() for p in l.parameters()) for l in layers]
    n_train = [sum(p.numel() for p in l.parameters() if p.requires_grad) for l in layers]  # LoRA: adapters
    trainable = [n > 0 for n in n_train]
    head = model.get_output_embeddings().weight
    n_head = head.numel()
    in_b = set(backward_layers(model))
    fwd = 2 * (sum(n_layer) + n_head)
    bwd_act = 2 * (sum(n_layer[i] for i in in_b) + n_head)
    bwd_w = 2 * (sum(n_train) + (n_head if head.requires_grad else 0))
    attn = 4 * seq_len * d * len(layers) + 8 * seq_len * d * len(in_b)
    return {'model': fwd + bwd_act + bwd_w, 'model+attn': fwd + bwd_act + bwd_w + attn,
            '6N': 6 * sum(p.numel() for p in model.parameters()),
            'n_total': sum(p.numel() for p in model.parameters()),
            'n_trainable': sum(p.numel() for p in model.parameters() if p.requires_grad),
            'layers_trainable': sum(trainable), 'layers_backward': len(in_b)}


def make_pool(a, cfg) -> list[list[dict]]:
    "`a.pool` steps of `a.grad_accum` micro-batches as train's DataLoader gives them (`pad_batch`, pinned)."
    import torch
    from alpaca_ft.batching import pad_batch
    rng = random.Random(a.seed)
    def micro():
        rows = synthetic_rows(a.batch_size, a.seq_len, cfg.vocab_size, rng, a.min_example, a.max_example,
                              a.prompt_share)
        b = pad_batch(rows, pad_id=cfg.pad_token_id)
        return {k: v.pin_memory() for k, v in b.items()} if torch.cuda.is_available() else b
    return [[micro() for _ in range(a.grad_accum)] for _ in range(a.pool)]


def causal_step(model, micro, opt, sched, device, amp):
    "The article's way, a speed reference only: no mask, positions 0..s-1, so packed examples see each other."
    import torch
    from alpaca_ft.train import token_loss
    n_label = sum((b['labels'][:, 1:] != -100).sum() for b in micro).to(device)
    total = torch.zeros((), device=device)
    for b in micro:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(input_ids=b['input_ids'].to(device, non_blocking=True), use_cache=False).logits
        loss = token_loss(logits, b['labels'].to(device, non_blocking=True))[0]
        (loss / n_label).backward()
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_(opt.param_groups[0]['params'], 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return total / n_label


def add_lora_to(model, a, name, ckpt, dtype):
    "Configuration `name`'s adapters on `model` (its initial weights, all in `dtype`), as train adds them."
    from alpaca_ft.lora import add_lora
    for p in model.parameters(): p.data = p.data.to(dtype)  # frozen weights stay as loaded (bf16 on a GPU)
    n_freeze = a.n_freeze if LORA_N_FREEZE[name] is None else LORA_N_FREEZE[name]
    return add_lora(model, a.lora_r, a.lora_alpha, 0.1, ('q_proj', 'k_proj', 'v_proj', 'o_proj'), n_freeze,
                    grad_checkpointing=ckpt is True)


def run_config(name, model, a, pool, init, device, flops, peak):
    "Set `model` up as configuration `name`, as train does; run warmup + timed steps; returns the result row."
    import torch
    from alpaca_ft.batching import attention_mask_for
    from alpaca_ft.model import count_layer_passes, setup_for_training
    from alpaca_ft.train import TrainConfig, autocast_dtype, build_optimizer, build_scheduler, train_step
    ckpt, compiled, impl, mask = CONFIGS[name]
    lora = name in LORA_N_FREEZE
    cfg = TrainConfig('synthetic', '-', batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr,
                      grad_clip=1.0, n_freeze=a.n_freeze, grad_checkpointing=ckpt is True, compile=compiled,
                      attn_implementation=impl)
    if lora:
        try: import peft  # noqa: F401
        except ImportError: return {'config': name, 'skipped': 'peft is not installed (pip install peft)'}
    amp = autocast_dtype(cfg.precision, device)
    torch._dynamo.reset()
    for layer in model.model.layers: layer._compiled_call_impl = None  # undo the last configuration's compile
    if model.config._attn_implementation != impl: model.set_attn_implementation(impl)
    setup_for_training(model, cfg.n_freeze, cfg.freeze_embed, cfg.grad_checkpointing)
    if ckpt == 'shipped':  # what alpaca_ft.model.enable_checkpointing did before the fix
        kw = {'use_reentrant': False}
        if hasattr(model, 'activation_checkpointing_enable'): model.activation_checkpointing_enable(kw)
        else: model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    with torch.no_grad():
        for p, p0 in zip([p for p in model.parameters() if p.requires_grad], init): p.copy_(p0)
    base = model
    if lora:  # the model train steps is the PEFT wrapper; the probe and FLOPs look at the base inside it
        frozen = next(p for p in base.parameters() if not p.requires_grad).dtype
        model = add_lora_to(base, a, name, ckpt, frozen)
        base = model.get_base_model()
        flops = flops_per_token(base, a.seq_len)
    ids, pos = pool[0][0]['input_ids'][:1].to(device), pool[0][0]['position_ids'][:1].to(device)
    probe = {'input_ids': ids}
    if mask != 'causal':
        probe.update(position_ids=pos, attention_mask=attention_mask_for(pos, impl, amp or torch.float32))
    passes = None
    if impl != 'flex_attention' or device.type == 'cuda':  # flex has no CPU backward
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            passes = count_layer_passes(base, **probe, labels=ids)
    model.zero_grad(set_to_none=True)
    if compiled and lora:
        for layer in base.model.layers: layer.compile()  # what add_lora(compile=True) does
    elif compiled:  # the same call as train's build_model, now compiling each layer
        setup_for_training(model, cfg.n_freeze, cfg.freeze_embed, cfg.grad_checkpointing, compiled)
    opt = build_optimizer(model, cfg, device)
    sched = build_scheduler(opt, 1, a.warmup_steps + a.steps)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def one_step(i):
        if mask == 'causal': return causal_step(model, pool[i % a.pool], opt, sched, device, amp)
        sums = train_step(model, pool[i % a.pool], opt, sched, cfg.grad_clip, device, amp,
                          cfg.attn_implementation)  # STEP_SUMS
        return sums[0] / sums[2].clamp(min=1)

    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    warm = []
    for i in range(a.warmup_steps):
        t0 = time.perf_counter()
        loss = float(one_step(i))
        warm.append((time.perf_counter() - t0, loss))
    losses = []
    sync()
    t0 = time.perf_counter()
    for i in range(a.warmup_steps, a.warmup_steps + a.steps): losses.append(one_step(i))
    sync()
    dt = time.perf_counter() - t0
    tok_s = a.steps * a.grad_accum * a.batch_size * a.seq_len / dt
    row = {'config': name, 'checkpointing': ckpt, 'compile': compiled, 'attn': impl, 'mask': mask,
           'lora_layers': sum(any(p.requires_grad for p in l.parameters()) for l in base.model.layers)
                          if lora else None,
           'n_trainable': flops['n_trainable'], 'gflop_per_token': round(flops['model+attn'] / 1e9, 3),
           'tokens_per_s': round(tok_s, 1), 's_per_step': round(dt / a.steps, 4),
           'mfu': round(flops['model+attn'] * tok_s / (peak * 1e12), 4) if peak else None,
           'peak_mem_gib': round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == 'cuda'
                           else None,
           'compile_s': round(warm[0][0] - dt / a.steps, 1) if compiled else None,
           'losses': [round(w[1], 4) for w in warm] + [round(float(l), 4) for l in losses]}
    if passes:
        row.update(layers_backward=sum(passes['backward']),
                   layers_recomputed=sum(n > 1 for n in passes['forward']), mm_backward=passes['MmBackward0'])
    del opt, sched
    model.zero_grad(set_to_none=True)
    if lora:
        for layer in base.model.layers: layer._compiled_call_impl = None
        model.unload()  # the plain layers back, for the configurations after this one
    gc.collect()
    if device.type == 'cuda': torch.cuda.empty_cache()
    return row


def write_json(path, obj):
    "Write `obj` as JSON to `path` atomically (temp file beside it, then os.replace)."
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    tmp.write_text(json.dumps(obj, indent=1) + '\n')
    os.replace(tmp, path)


def table(rows, default) -> list[str]:
    base = next((r for r in rows if r['config'] == default), None)
    ref = next((r['losses'] for r in rows if r['config'] == 'ckpt_off'), None)
    out = [f'{"configuration":<15}{"trainable":>10}{"tokens/s":>10}{"MFU":>8}{"peak GiB":>10}'
           f'{"x default":>10}'
           f'{"compile s":>10}{"bwd layers":>11}{"recomputed":>11}{"MmBwd":>7}{"dloss":>9}'
           '  losses (first .. last)']
    def dloss(r):  # largest |loss difference| to ckpt_off over all steps (same weights, same batches)
        if not ref or r.get('lora_layers') is not None: return '-'  # LoRA trains other weights
        return f'{max(abs(x - y) for x, y in zip(r["losses"], ref)):.1e}'
    for r in rows:
        ratio = f'{r["tokens_per_s"] / base["tokens_per_s"]:.2f}' if base else 'n/a'
        fmt = lambda k, f: (f.format(r[k]) if r.get(k) is not None else '-')
        out.append(f'{r["config"]:<15}{r["n_trainable"] / 1e6:>9,.1f}M{r["tokens_per_s"]:>10,.0f}'
                   f'{fmt("mfu", "{:.1%}"):>8}'
                   f'{fmt("peak_mem_gib", "{:.1f}"):>10}{ratio:>10}{fmt("compile_s", "{:.1f}"):>10}'
                   f'{fmt("layers_backward", "{}"):>11}{fmt("layers_recomputed", "{}"):>11}'
                   f'{fmt("mm_backward", "{}"):>7}{dloss(r):>9}  '
                   f'{r["losses"][0]:.4f} .. {r["losses"][-1]:.4f}')
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--configs', default=None,
                    help=f'comma-separated, of {", ".join(CONFIGS)} (default: all; with --smoke: {SMOKE})')
    ap.add_argument('--default-ckpt', action='store_true',
                    help='compare with compiled + checkpointing (what `train --grad-checkpointing` picks)')
    ap.add_argument('--batch-size', type=int, default=8, help='rows per micro-batch')
    ap.add_argument('--grad-accum', type=int, default=1, help='micro-batches per optimizer step')
    ap.add_argument('--seq-len', type=int, default=1024, help='tokens per packed row')
    ap.add_argument('--steps', type=int, default=10, help='timed optimizer steps per configuration')
    ap.add_argument('--warmup-steps', type=int, default=3, help='untimed steps first (compile, allocator)')
    ap.add_argument('--n-freeze', type=int, default=24, help='first decoder layers frozen (and embeddings)')
    ap.add_argument('--lora-r', type=int, default=64, help='LoRA rank of the lora_* configurations')
    ap.add_argument('--lora-alpha', type=float, default=16.0, help='LoRA alpha of the lora_* configurations')
    ap.add_argument('--min-example', type=int, default=64, help='shortest synthetic example (tokens)')
    ap.add_argument('--max-example', type=int, default=512, help='longest synthetic example (tokens)')
    ap.add_argument('--prompt-share', type=float, default=0.4, help='share of each example out of the labels')
    ap.add_argument('--pool', type=int, default=4, help='distinct steps of batches built up front and reused')
    ap.add_argument('--lr', type=float, default=2e-4, help='AdamW learning rate (constant)')
    ap.add_argument('--peak-tflops', type=float, default=None, help='dense bf16 peak (default: by GPU name)')
    ap.add_argument('--seed', type=int, default=0, help='model init and synthetic data')
    ap.add_argument('--out', default=None, help='write the results (JSON) here, after each configuration')
    ap.add_argument('--smoke', action='store_true', help='toy model, fp32, CPU: the code path without a GPU')
    a = ap.parse_args(argv)
    names = [n.strip() for n in (a.configs or (SMOKE if a.smoke else ','.join(CONFIGS))).split(',')]
    if bad := [n for n in names if n not in CONFIGS]:
        ap.error(f'--configs: unknown {bad}; choose from {list(CONFIGS)}')

    import torch
    if a.smoke:
        device, dtype, cfg = torch.device('cpu'), torch.float32, smoke_config()
        a.batch_size, a.grad_accum, a.seq_len, a.steps, a.warmup_steps, a.pool = 2, 2, 128, 2, 2, 2
        a.min_example, a.max_example, a.n_freeze = 16, 64, 2
        print('smoke run: tiny Llama (4 layers, hidden 64, vocab 1024), fp32, CPU, batch 2 x accum 2, '
              '128 tokens, n_freeze 2, 2 + 2 steps per configuration')
    else:
        if not torch.cuda.is_available():
            print('no CUDA device: this benchmark needs a GPU (--smoke checks the code on CPU); nothing run')
            return 0
        device, dtype, cfg = torch.device('cuda'), torch.bfloat16, llama2_7b_config()
    from alpaca_ft.model import setup_for_training
    torch.manual_seed(a.seed)
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    peak = a.peak_tflops or (peak_tflops(gpu) if device.type == 'cuda' else None)
    import transformers
    t0 = time.perf_counter()
    model = setup_for_training(build_model(cfg, device, dtype), a.n_freeze).train()
    init = [p.detach().to('cpu', copy=True) for p in model.parameters() if p.requires_grad]
    t_build = time.perf_counter() - t0
    f = flops_per_token(model, a.seq_len)
    t0 = time.perf_counter()
    pool = make_pool(a, cfg)
    t_pool = time.perf_counter() - t0
    # what `alpaca_ft train` picks: sdpa; compiled layers on CUDA, not on CPU; checkpointing as the user says
    default = {(True, False): 'compiled', (True, True): 'compiled_ckpt', (False, False): 'ckpt_off',
               (False, True): 'ckpt_fixed'}[device.type == 'cuda', a.default_ckpt]
    head = {'device': gpu, 'peak_bf16_tflops': peak, 'torch': torch.__version__,
            'transformers': transformers.__version__, 'shape': '7B' if not a.smoke else 'smoke',
            'n_params': f['n_total'], 'n_trainable': f['n_trainable'], 'n_freeze': a.n_freeze,
            'batch': f'{a.batch_size} x {a.seq_len} x accum {a.grad_accum}', 'steps': a.steps,
            'warmup_steps': a.warmup_steps, 'gflop_per_token_model_attn': round(f['model+attn'] / 1e9, 3),
            'default': default, 'build_s': round(t_build, 1), 'batches_s': round(t_pool, 1)}
    print(json.dumps(head), flush=True)
    rows = []
    for name in names:
        if device.type == 'cpu' and CONFIGS[name][2] == 'flex_attention':
            print(json.dumps({'config': name, 'skipped': 'flex_attention: no backward on CPU'}), flush=True)
            continue
        row = run_config(name, model, a, pool, init, device, f, peak)
        print(json.dumps(row), flush=True)
        if 'skipped' in row: continue
        rows.append(row)
        if a.out: write_json(a.out, {**head, 'results': rows})
    print(f'\n{gpu}; {f["n_total"]:,} params, {f["n_trainable"]:,} train (fp32) in {f["layers_trainable"]} '
          f'layers + norm + head; {head["batch"]}; MFU by model+attn FLOPs '
          f'({f["model+attn"] / 1e9:.2f} GFLOP/token), peak {peak or "unknown"} TFLOPS')
    for line in table(rows, default): print(line)
    if not rows: return 0
    print('dloss: largest |loss - ckpt_off loss| over the steps (same initial weights and batches): bf16 '
          'noise for the exact configurations; causal differs because its examples see each other')
    print(f'default (what `alpaca_ft train` picks on this device: sdpa, compiled layers only with CUDA, '
          f'checkpointing {"on" if a.default_ckpt else "off"} as set): {default}')

    if a.smoke:  # what the code path must guarantee, checked where it runs
        by = {r['config']: r for r in rows}
        assert all(math.isfinite(l) for r in rows for l in r['losses'])
        if 'shipped' in by:
            assert by['shipped']['layers_backward'] == 4 and by['shipped']['layers_recomputed'] == 4
        for n in ('ckpt_fixed', 'compiled_ckpt'):
            if n in by: assert by[n]['layers_backward'] == 2 and by[n]['layers_recomputed'] == 2, by[n]
        if 'ckpt_off' in by: assert by['ckpt_off']['layers_recomputed'] == 0
        for n, layers in (('lora_all', 4), ('lora_top8', 2)):  # adapters: r * (64 + 64) per q, k, v, o
            if n in by:
                assert by[n]['layers_backward'] == by[n]['lora_layers'] == layers, by[n]
                assert by[n]['n_trainable'] == layers * 4 * a.lora_r * 128, by[n]
        same = [by[n]['losses'] for n in ('ckpt_fixed', 'ckpt_off', 'compiled', 'compiled_ckpt') if n in by]
        for l in same[1:]: assert max(abs(x - y) for x, y in zip(l, same[0])) < 1e-3, same
        meta = setup_for_training(build_model(llama2_7b_config(), 'meta', torch.bfloat16), 24)
        f7 = flops_per_token(meta, 1024)
        assert f7['n_total'] == 6_738_415_616 and f7['n_trainable'] == 1_750_142_976, f7
        print(f'7B shape on the meta device: {f7["n_total"]:,} params, {f7["n_trainable"]:,} trainable with '
              f'n_freeze 24; model+attn {f7["model+attn"] / 1e9:.2f} GFLOP/token at s=1024 (as on the GPU)')
        try: import peft  # noqa: F401
        except ImportError: peft = None
        if peft is not None:  # the LoRA configurations at the 7B shape, r 64 on q, k, v, o_proj
            from alpaca_ft.lora import add_lora
            for n, nf, want in (('lora_all', 0, 67_108_864), ('lora_top8', 24, 16_777_216)):
                meta7b = build_model(llama2_7b_config(), 'meta', torch.bfloat16)
                pm = add_lora(meta7b, 64, 16.0, 0.1, n_freeze=nf)
                fl = flops_per_token(pm.get_base_model(), 1024)
                assert fl['n_trainable'] == want and fl['layers_backward'] == 32 - nf, fl
                print(f'7B shape, {n}: {fl["n_trainable"]:,} adapter params train, backward through '
                      f'{fl["layers_backward"]} layers; model+attn {fl["model+attn"] / 1e9:.2f} GFLOP/token')
        # the 7B layer structure (32 layers, 24 frozen) at toy width: MmBackward0 nodes, shipped path vs fixed
        from alpaca_ft.model import count_layer_passes, tiny_llama
        x = torch.randint(3, 1024, (1, 32))
        mm = {}
        for name in ('shipped', 'ckpt_fixed'):
            m = setup_for_training(tiny_llama(1024, layers=32, hidden=32, heads=2), 24,
                                   grad_checkpointing=name == 'ckpt_fixed').train()
            if name == 'shipped': m.activation_checkpointing_enable({'use_reentrant': False})
            p = count_layer_passes(m, input_ids=x, labels=x)
            mm[name] = (p['MmBackward0'], sum(p['backward']), sum(n > 1 for n in p['forward']))
        assert mm == {'shipped': (225, 32, 32), 'ckpt_fixed': (57, 8, 8)}, mm
        print(f'32 layers, 24 frozen (toy width): MmBackward0 nodes, layers in backward, layers recomputed: '
              f'shipped {mm["shipped"]}, fixed {mm["ckpt_fixed"]}')
        print('smoke: OK')
    return 0


if __name__ == '__main__': sys.exit(main())

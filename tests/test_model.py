"""Model setup for training: backward and checkpoint recompute only through layers that train, compiled
layers, attention implementations and packed-example isolation (tiny Llama, CPU)."""
import time, warnings
import pytest
import torch

from alpaca_ft.batching import attention_mask_for
from alpaca_ft.model import (ATTN_IMPLEMENTATIONS, backward_layers, checkpoint_layers, count_layer_passes,
                             load_model, save_tiny_model, setup_for_training, tiny_llama)

N_LAYERS, K = 4, 2  # 4 decoder layers, the first K frozen


def batch(seed=0, rows=2, n=48, vocab=1024):
    x = torch.randint(3, vocab, (rows, n), generator=torch.Generator().manual_seed(seed))
    return {'input_ids': x, 'labels': x}


def model(k=K, ckpt=True, **kw):
    m = setup_for_training(tiny_llama(1024, layers=N_LAYERS), n_freeze=k, grad_checkpointing=ckpt, **kw)
    return m.train()


def layer_outputs_require_grad(m, b) -> list[bool]:
    out = {}
    hooks = [l.register_forward_hook(lambda mod, a, o, i=i: out.__setitem__(i, o.requires_grad))
             for i, l in enumerate(m.model.layers)]
    try: m(**b).loss.backward()
    finally:
        for h in hooks: h.remove()
    return [out[i] for i in range(len(m.model.layers))]


@pytest.mark.parametrize('ckpt', [True, False])
def test_frozen_layers_are_out_of_the_graph(ckpt):
    "Frozen embeddings and n_freeze=k: nothing below layer k requires grad, with or without checkpointing."
    m = model(ckpt=ckpt)
    req = layer_outputs_require_grad(m, batch())
    assert req[K - 1] is False, req
    assert req == [False] * K + [True] * (N_LAYERS - K)
    assert backward_layers(m) == list(range(K, N_LAYERS))


def test_backward_and_recompute_only_where_weights_train():
    "No gradient reaches a frozen layer's output, no frozen layer is recomputed; recomputed = trainable."
    m = model(ckpt=True)
    p = count_layer_passes(m, **batch())
    assert p['backward'][:K] == [0] * K, p
    assert p['backward'][K:] == [1] * (N_LAYERS - K), p
    assert p['forward'] == [1] * K + [2] * (N_LAYERS - K), p  # 2 = forward + checkpoint recompute
    trainable = sum(any(q.requires_grad for q in l.parameters()) for l in m.model.layers)
    assert sum(n == 2 for n in p['forward']) == trainable == N_LAYERS - K
    off = count_layer_passes(model(ckpt=False), **batch())
    assert off['forward'] == [1] * N_LAYERS and off['MmBackward0'] == p['MmBackward0']


def test_backward_hook_on_frozen_layer_never_fires():
    m = model(ckpt=True)
    fired = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the first trainable layer's input needs no grad: torch says so
        hooks = [l.register_full_backward_hook(lambda mod, gi, go, i=i: fired.append(i))
                 for i, l in enumerate(m.model.layers)]
        m(**batch()).loss.backward()
    for h in hooks: h.remove()
    assert sorted(fired) == list(range(K, N_LAYERS)), fired


def test_grads_identical_with_and_without_checkpointing():
    grads = []
    for ckpt in (False, True):
        m = model(ckpt=ckpt)
        m(**batch()).loss.backward()
        grads.append({n: q.grad for n, q in m.named_parameters() if q.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]: torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=0)


def test_setup_undoes_activation_checkpointing_enable():
    "A model set up by transformers' activation_checkpointing_enable (embedding output needs grad) is fixed."
    m = tiny_llama(1024, layers=N_LAYERS).train()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m.activation_checkpointing_enable({'use_reentrant': False})
    setup_for_training(m, n_freeze=K, grad_checkpointing=True)
    p = count_layer_passes(m, **batch())
    assert p['backward'] == [0] * K + [1] * (N_LAYERS - K), p
    assert p['forward'] == [1] * K + [2] * (N_LAYERS - K), p


def test_trainable_embeddings_put_every_layer_on_the_gradient_path():
    m = model(ckpt=True, freeze_embed=False)
    assert backward_layers(m) == list(range(N_LAYERS))
    assert [l.gradient_checkpointing for l in m.model.layers] == [True] * N_LAYERS
    p = count_layer_passes(m, **batch())
    assert p['backward'] == [1] * N_LAYERS and p['forward'] == [2] * N_LAYERS, p


def test_checkpointing_off_by_default_and_switchable():
    m = model(ckpt=False)
    assert not any(l.gradient_checkpointing for l in m.model.layers)
    checkpoint_layers(m)
    assert [l.gradient_checkpointing for l in m.model.layers] == [False] * K + [True] * (N_LAYERS - K)
    assert m.config.use_cache is False


def test_master_weights_fp32_frozen_stay_bf16():
    m = setup_for_training(tiny_llama(1024, layers=N_LAYERS).to(torch.bfloat16), n_freeze=K)
    assert {q.dtype for q in m.parameters() if q.requires_grad} == {torch.float32}
    assert {q.dtype for q in m.parameters() if not q.requires_grad} == {torch.bfloat16}


def test_attn_implementations(tmp_path):
    assert ATTN_IMPLEMENTATIONS == ('sdpa', 'eager', 'flex_attention')
    for bad, why in (('flash_attention_2', 'cu_seqlens'), ('nope', 'unknown')):
        with pytest.raises(ValueError, match=why) as e: tiny_llama(1024, attn_implementation=bad)
        assert repr(bad) in str(e.value) and 'sdpa' in str(e.value)
    save_tiny_model(tmp_path/'tiny')
    with pytest.raises(ValueError, match='flash_attention_2'):
        load_model(tmp_path/'tiny', device='cpu', attn_implementation='flash_attention_2')
    for impl in ATTN_IMPLEMENTATIONS:
        m = load_model(tmp_path/'tiny', device='cpu', attn_implementation=impl)
        assert m.config._attn_implementation == impl


# --- packed-example isolation, compiled layers, flex attention ----------------------------------------------

EXAMPLES = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19, 20, 21, 22, 23]]


def isolation_error(m, impl='sdpa') -> float:
    "Max |logit difference| between EXAMPLES packed into one row (block mask for `impl`) and each run alone."
    flat = torch.tensor([[t for e in EXAMPLES for t in e]])
    pos = torch.tensor([[p for e in EXAMPLES for p in range(len(e))]])
    mask = attention_mask_for(pos, impl, torch.float32)
    with torch.no_grad():
        packed = m(input_ids=flat, attention_mask=mask, position_ids=pos, use_cache=False).logits[0]
        alone = torch.cat([m(input_ids=torch.tensor([e]), use_cache=False).logits[0] for e in EXAMPLES])
    return (packed - alone).abs().max().item()


def train_losses(m, steps=3):
    opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-2)
    out = []
    for _ in range(steps):
        loss = m(**batch()).loss  # the same batch: the loss must fall
        loss.backward()
        opt.step()
        opt.zero_grad()
        out.append(loss.item())
    return out


def test_compiled_layers_follow_uncompiled_losses_and_keep_packs_isolated():
    torch._dynamo.reset()
    eager = train_losses(model(ckpt=True))
    m = model(ckpt=True, compile=True)
    assert all(getattr(l, '_compiled_call_impl', None) is not None for l in m.model.layers)
    t0 = time.perf_counter()
    compiled = train_losses(m)
    print(f'compiled: 3 steps, compile included: {time.perf_counter() - t0:.1f} s; {compiled} vs {eager}')
    assert compiled[-1] < compiled[0]
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), atol=1e-4, rtol=0)
    assert isolation_error(m.eval()) < 1e-5


@pytest.mark.parametrize('impl', ['sdpa', 'eager'])
def test_packed_isolation(impl):
    assert isolation_error(tiny_llama(1024, layers=2, attn_implementation=impl).eval(), impl) < 1e-5


def test_flex_attention_forward_isolation():
    "transformers' Llama takes a flex BlockMask as attention_mask; the forward runs on CPU (inductor)."
    assert isolation_error(tiny_llama(1024, layers=2, attn_implementation='flex_attention').eval(),
                           'flex_attention') < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason='flex_attention has no backward on CPU (torch: "FlexAttention does not support '
                           'backward on CPU"); needs a CUDA device')
def test_flex_attention_backward_matches_sdpa():
    "On a GPU: flex + BlockMask gives the gradients of sdpa + the dense 4-D mask on a packed row."
    flat = torch.tensor([[t for e in EXAMPLES for t in e]], device='cuda')
    pos = torch.tensor([[p for e in EXAMPLES for p in range(len(e))]], device='cuda')
    grads = []
    for impl in ('sdpa', 'flex_attention'):
        m = setup_for_training(tiny_llama(1024, layers=N_LAYERS, attn_implementation=impl).cuda(), n_freeze=K)
        mask = attention_mask_for(pos, impl, torch.float32)
        m(input_ids=flat, attention_mask=mask, position_ids=pos, labels=flat).loss.backward()
        grads.append([q.grad for q in m.parameters() if q.requires_grad])
    for a, b in zip(*grads): torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_enable_checkpointing_is_a_deprecated_alias_of_the_fixed_path():
    m = setup_for_training(tiny_llama(1024, layers=N_LAYERS), n_freeze=K).train()
    with pytest.warns(DeprecationWarning, match='setup_for_training'):
        from alpaca_ft.model import enable_checkpointing
        enable_checkpointing(m)
    assert count_layer_passes(m, **batch())['forward'] == [1] * K + [2] * (N_LAYERS - K)


def test_gpu_benchmark_smoke_runs_without_datasets_wandb_fastcore():
    "The GPU machine has none of them: benchmarks/train_gpu.py --smoke must run with them blocked."
    import subprocess, sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, runpy\n"
            "for m in ('datasets', 'wandb', 'fastcore'): sys.modules[m] = None\n"
            "sys.argv = ['train_gpu.py', '--smoke']\n"
            "runpy.run_path('benchmarks/train_gpu.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and 'smoke: OK' in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'shipped (225, 32, 32), fixed (57, 8, 8)' in r.stdout


def test_load_and_shape_errors_name_the_input(tmp_path):
    with pytest.raises(OSError, match='nothere: not a folder'): load_model(tmp_path/'nothere', device='cpu')
    with pytest.raises(ValueError, match='no causal LM in this folder'): load_model(tmp_path, device='cpu')
    with pytest.raises(ValueError, match='layers must be at least 1'): tiny_llama(1024, layers=0)
    with pytest.raises(ValueError, match='multiple of 2 \\* heads = 8'): tiny_llama(1024, hidden=60)


def test_tiny_config_refuses_sizes_that_are_not_tiny():
    "`tiny-model --hidden 100000000` died of an allocation error, `--layers 100000` ran for minutes."
    from alpaca_ft.model import tiny_config
    for layers, hidden in ((2, 100_000_000), (100_000, 64)):
        with pytest.raises(ValueError, match='keep it under 1B'): tiny_config(1024, layers=layers, hidden=hidden)
    assert tiny_config(32000, layers=2, hidden=64).intermediate_size == 172

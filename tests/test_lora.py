"""LoRA through PEFT (nbs/16_lora.ipynb) in our loop: backward and recompute only where adapters train, fp32
adapters on a bf16 base, merged final models that load as plain ones, adapter-only checkpoints and exact
resume; the HF route (Trainer, TRL SFTTrainer + peft_config) on prepared data (tiny Llama, CPU)."""
import copy, json, warnings
from pathlib import Path
import pytest
import torch

from alpaca_ft.lora import (LORA_TARGETS, add_lora, is_lora, load_adapter, lora_layers, lora_param_count,
                            merged_state_dict, save_adapter, save_merged)
from alpaca_ft.model import backward_layers, count_layer_passes, load_model, tiny_llama
from alpaca_ft.split import read_jsonl

N_LAYERS, K = 4, 2  # 4 decoder layers, the first K without adapters


def batch(seed=0, rows=2, n=48, vocab=1024):
    x = torch.randint(3, vocab, (rows, n), generator=torch.Generator().manual_seed(seed))
    return {'input_ids': x, 'labels': x}


def checkpointing_llama():
    "A tiny Llama as transformers' checkpointing flag leaves it (an input-grad hook on the embeddings)."
    m = tiny_llama(1024, layers=N_LAYERS).train()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m.activation_checkpointing_enable({'use_reentrant': False})
    return m


def nonzero_b(model, seed=1):
    "LoRA starts with B = 0 (no change); give the adapters something to merge."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


# --- backward runs only where weights train ----------------------------------------------------------------

@pytest.mark.parametrize('ckpt', [True, False])
def test_backward_and_recompute_only_where_adapters_train(ckpt):
    "PEFT hooks the embeddings (enable_input_require_grads) on a checkpointing model; add_lora undoes it."
    m = add_lora(checkpointing_llama(), r=4, n_freeze=K, grad_checkpointing=ckpt).train()
    base = m.get_base_model()
    assert backward_layers(base) == list(range(K, N_LAYERS))
    p = count_layer_passes(base, **batch())
    assert p['backward'] == [0] * K + [1] * (N_LAYERS - K), p
    assert p['forward'] == [1] * K + [1 + ckpt] * (N_LAYERS - K), p


def test_the_check_catches_peft_input_grads():
    "The same count on get_peft_model's own result: backward (and recompute) through every frozen layer."
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=4, target_modules=list(LORA_TARGETS), layers_to_transform=list(range(K, N_LAYERS)))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        raw = get_peft_model(checkpointing_llama(), cfg)
    p = count_layer_passes(raw.get_base_model(), **batch())
    assert p['backward'] == [1] * N_LAYERS and p['forward'] == [2] * N_LAYERS, p


def test_lora_on_every_layer():
    m = add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, n_freeze=0, grad_checkpointing=True).train()
    p = count_layer_passes(m.get_base_model(), **batch())
    assert p['backward'] == [1] * N_LAYERS and p['forward'] == [2] * N_LAYERS, p


def test_only_adapters_train_and_count_matches_the_formula():
    m = add_lora(tiny_llama(1024, layers=N_LAYERS), r=8, n_freeze=K)
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all('lora_A' in n or 'lora_B' in n for n in names), names
    assert {int(n.split('layers.')[1].split('.')[0]) for n in names} == set(range(K, N_LAYERS))
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == lora_param_count(m, 8, layers=range(K, N_LAYERS)) == 2 * 4 * 8 * (64 + 64)


def test_adapters_fp32_on_a_bf16_base():
    m = add_lora(tiny_llama(1024, layers=N_LAYERS).to(torch.bfloat16), r=4, n_freeze=K)
    assert {p.dtype for p in m.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in m.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_grads_identical_with_and_without_checkpointing():
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = nonzero_b(add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, dropout=0.0, n_freeze=K,
                               grad_checkpointing=ckpt))
        m(**batch()).loss.backward()
        grads.append({n: q.grad for n, q in m.named_parameters() if q.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]: torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=0)


def test_compiled_layers_follow_eager():
    "Compiled decoder layers with adapters (and checkpointing) give the eager losses over 3 AdamW steps."
    torch._dynamo.reset()
    out = []
    for compile in (False, True):
        torch.manual_seed(0)
        m = add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, dropout=0.0, n_freeze=K,
                     grad_checkpointing=True, compile=compile).train()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        losses = []
        for s in range(3):
            loss = m(**batch(s)).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        out.append(losses)
    assert out[0][-1] < out[0][0]
    torch.testing.assert_close(torch.tensor(out[1]), torch.tensor(out[0]), atol=1e-4, rtol=0)


def test_no_layer_for_adapters_is_refused():
    with pytest.raises(ValueError, match='n_freeze=4 leaves no layer'): lora_layers(4, 4)
    with pytest.raises(ValueError, match='r must be'): add_lora(tiny_llama(1024, layers=2), r=0)
    assert lora_layers(32, 24) == list(range(24, 32)) and lora_layers(4) == [3]


# --- saving: the adapter alone, the merged model -----------------------------------------------------------

def test_merged_folder_is_a_plain_model_with_the_same_outputs(tmp_path):
    m = nonzero_b(add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, n_freeze=K)).eval()
    save_merged(m, tmp_path/'final')
    assert not any('lora' in k for k in merged_state_dict(m))
    assert {'adapter_config.json', 'adapter_model.safetensors'} <= {
        p.name for p in (tmp_path/'final'/'adapter').iterdir()}
    plain = load_model(tmp_path/'final', device='cpu').eval()
    assert not is_lora(plain) and is_lora(m)
    x = batch()['input_ids']
    with torch.no_grad(): ref = m(input_ids=x).logits
    with torch.no_grad(): torch.testing.assert_close(plain(input_ids=x).logits, ref, atol=1e-5, rtol=0)
    # the merge changed the weights (B != 0): the plain base alone would differ
    with torch.no_grad(), m.disable_adapter(): assert (m(input_ids=x).logits - ref).abs().max() > 1e-3
    # the adapter alone, on a fresh base, with PEFT's own loader
    from peft import PeftModel
    again = PeftModel.from_pretrained(tiny_llama(1024, layers=N_LAYERS), tmp_path/'final'/'adapter').eval()
    with torch.no_grad(): torch.testing.assert_close(again(input_ids=x).logits, ref, atol=1e-5, rtol=0)


def test_adapter_round_trip_and_mismatch(tmp_path):
    m = nonzero_b(add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, n_freeze=K))
    save_adapter(m, tmp_path/'a')
    fresh = load_adapter(add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, n_freeze=K), tmp_path/'a')
    for (n, p), (n2, q) in zip(m.named_parameters(), fresh.named_parameters()):
        assert n == n2 and torch.equal(p, q), n
    other = add_lora(tiny_llama(1024, layers=N_LAYERS), r=4, n_freeze=0)  # adapters on layers the file lacks
    with pytest.raises(ValueError, match='does not fit'): load_adapter(other, tmp_path/'a')
    rank2 = add_lora(tiny_llama(1024, layers=N_LAYERS), r=2, n_freeze=K)
    with pytest.raises(ValueError, match='does not fit the model .*size mismatch'):
        load_adapter(rank2, tmp_path/'a')
    with pytest.raises(ValueError, match='no LoRA adapter'): load_adapter(other, tmp_path)


# --- in the loop: alpaca_ft train --lora-r ----------------------------------------------------------------

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from alpaca_ft.prepare import prepare
    d = tmp_path_factory.mktemp('prep')/'data'
    prepare(out=d, max_seq_len=256, wandb='disabled', progress=False, verbose=False)
    return d


def cfg(data, out, **kw):
    from alpaca_ft.train import TrainConfig
    base = dict(max_steps=4, batch_size=4, grad_accum=1, lr=3e-3, n_eval_samples=0, eval_every=2,
                save_every=2, wandb='disabled', progress=False, tiny_layers=4, n_freeze=2, lora_r=8)
    return TrainConfig(str(data), str(out), **{**base, **kw})


def losses(run_dir, key='loss'):
    return [m[key] for m in read_jsonl(Path(run_dir)/'metrics.jsonl') if key in m]


@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    "A finished 4-step LoRA run (rank 8 on layers 2-3 of 4, dropout 0.1) with checkpoints at 2 and 4."
    from alpaca_ft.train import train
    out = tmp_path_factory.mktemp('runs')/'lora'
    train(cfg(data, out))
    return out


def test_checkpoints_hold_the_adapter_and_optimizer_only(finished):
    ck = finished/'checkpoints'/'step-2'
    assert (ck/'adapter_model.safetensors').is_file() and (ck/'trainer_state.pt').is_file()
    assert not (ck/'model.safetensors').exists()
    from safetensors.torch import load_file
    weights = load_file(str(ck/'adapter_model.safetensors'))
    assert weights and all('lora_A' in k or 'lora_B' in k for k in weights), list(weights)
    assert sum(v.numel() for v in weights.values()) == 2 * 4 * 8 * (64 + 64)
    state = torch.load(ck/'trainer_state.pt', weights_only=True)
    assert sum(v['exp_avg'].numel() for v in state['optimizer']['state'].values()) == 2 * 4 * 8 * (64 + 64)


def test_final_is_a_plain_merged_model_and_the_adapter(finished, data):
    final = finished/'final'
    assert (final/'model.safetensors').is_file() and (final/'adapter'/'adapter_model.safetensors').is_file()
    from alpaca_ft.generate import predict_rows
    from alpaca_ft.tokenization import load_tokenizer
    model = load_model(final, device='cpu')
    assert not is_lora(model)
    rows = read_jsonl(data/'eval.jsonl')[:1]
    manifest = json.loads((data/'manifest.json').read_text())
    assert predict_rows(model, load_tokenizer(str(final)), rows, manifest['template'], 3)
    # it differs from the base it started from: the adapters were merged in
    from safetensors.torch import load_file
    w = load_file(str(final/'model.safetensors'))
    base = tiny_llama(model.config.vocab_size, 4, 64, seed=42).state_dict()
    q = 'model.layers.{}.self_attn.q_proj.weight'
    assert not torch.equal(w[q.format(3)], base[q.format(3)])  # adapters merged into layer 3's q_proj
    assert torch.equal(w[q.format(0)], base[q.format(0)])  # layer 0 had none
    assert torch.equal(w['model.layers.3.mlp.up_proj.weight'], base['model.layers.3.mlp.up_proj.weight'])


def test_resume_is_exact(data, finished, tmp_path):
    "Stopped after step 2 and resumed (dropout on: the RNG state matters): the losses of the run in one go."
    from alpaca_ft.train import train
    train(cfg(data, tmp_path/'twice'), on_step=lambda step, m: step >= 2)
    assert not (tmp_path/'twice'/'final').exists()
    train(cfg(data, tmp_path/'twice', resume=True))
    for k in ('loss', 'eval_loss', 'lr'):
        assert losses(tmp_path/'twice', k) == pytest.approx(losses(finished, k), abs=1e-6), k
    a, b = ((r/'final'/'model.safetensors').read_bytes() for r in (tmp_path/'twice', finished))
    assert a == b


KILLED_AT_STEP_3 = """
import json, os, signal, sys
from alpaca_ft import TrainConfig, fine_tune
kill = lambda step, metrics: step == 3 and os.kill(os.getpid(), signal.SIGKILL)
fine_tune(TrainConfig(**json.loads(sys.argv[1])), on_step=kill)
"""


@pytest.mark.parametrize('lora_r', [8, 0], ids=['lora', 'full'])
def test_resume_after_kill_9_is_exact(data, finished, tmp_path, lora_r):
    "kill -9 after step 3 (checkpoint at 2; lock, run.json as left): --resume gives the run in one go."
    import dataclasses, subprocess, sys
    from alpaca_ft.train import train
    ref = finished
    if not lora_r: train(cfg(data, ref := tmp_path/'full', lora_r=0))
    run = cfg(data, tmp_path/'killed', lora_r=lora_r)
    p = subprocess.run([sys.executable, '-c', KILLED_AT_STEP_3, json.dumps(dataclasses.asdict(run))],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert [c.name for c in (tmp_path/'killed'/'checkpoints').iterdir()] == ['step-2']
    assert not (tmp_path/'killed'/'final').exists()
    train(dataclasses.replace(run, resume=True))
    for k in ('loss', 'eval_loss', 'lr'):
        assert losses(tmp_path/'killed', k) == pytest.approx(losses(ref, k), abs=1e-6), k
    a, b = ((r/'final'/'model.safetensors').read_bytes() for r in (tmp_path/'killed', ref))
    assert a == b
    if lora_r: assert (tmp_path/'killed'/'final'/'adapter'/'adapter_model.safetensors').is_file()


def test_resume_refuses_another_rank(data, finished, tmp_path):
    import shutil
    from alpaca_ft.train import train
    shutil.copytree(finished, tmp_path/'run')
    shutil.rmtree(tmp_path/'run'/'final')
    (tmp_path/'run'/'checkpoints'/'step-4').rename(tmp_path/'run'/'checkpoints'/'x')
    with pytest.raises(ValueError, match='adapter does not fit the model .*size mismatch'):
        train(cfg(data, tmp_path/'run', resume=True, lora_r=4))
    with pytest.raises(ValueError, match='cannot resume with lora='):  # same shapes, another alpha
        train(cfg(data, tmp_path/'run', resume=True, lora_alpha=32.0))


@pytest.mark.parametrize('lora_r, kind', [(8, {'weights': 'LoRA merged', 'adapter': 'adapter'}),
                                           (0, {'weights': 'full'})], ids=['lora', 'full'])
def test_w_and_b_model_artifact_says_merged(data, tmp_path, monkeypatch, lora_r, kind):
    from alpaca_ft.train import train
    monkeypatch.setenv('WANDB_SILENT', 'true')
    train(cfg(data, tmp_path/'run', max_steps=1, wandb='offline', save_every=1, eval_every=1, lora_r=lora_r))
    info = json.loads((tmp_path/'run'/'run.json').read_text())
    art = info['model_artifact']
    assert {k: art.get(k) for k in ('weights', 'adapter')} == {'adapter': None, **kind}


@pytest.mark.parametrize('bad, name', [
    (dict(lora_r=-1), 'lora_r'), (dict(lora_r=1.5), 'lora_r'), (dict(lora_alpha=0.0), 'lora_alpha'),
    (dict(lora_alpha=float('nan')), 'lora_alpha'), (dict(lora_dropout=1.0), 'lora_dropout'),
    (dict(lora_target_modules='q_proj,,v_proj'), 'lora_target_modules'),
    (dict(freeze_embed=False), 'freeze_embed=False with lora_r'), (dict(n_freeze=4), 'n_freeze=4'),
])
def test_bad_lora_options_fail_before_any_work(data, tmp_path, bad, name):
    from alpaca_ft.train import train
    with pytest.raises(ValueError, match=name): train(cfg(data, tmp_path/'run', **bad))
    assert not (tmp_path/'run').exists()


def test_cli_has_the_lora_options(data, tmp_path, capsys):
    from alpaca_ft.cli import main
    try: main(['train', '--help'])
    except SystemExit: pass
    out = capsys.readouterr().out
    for flag in ('--lora-r', '--lora-alpha', '--lora-dropout', '--lora-target-modules'): assert flag in out
    code = main(['train', str(data), '--out', str(tmp_path/'run'), '--lora-r', '8', '--lora-dropout', '2',
                 '--wandb', 'disabled'])
    err = capsys.readouterr().err
    assert code == 2 and 'lora_dropout' in err and 'Traceback' not in err, err
    assert not (tmp_path/'run').exists()


# --- the HF route (nbs/17_hf_route.ipynb): third-party trainers with LoRA on a prepared folder --------------

def watch_packs(model) -> dict:
    """Hook `model`: per training forward, max |logits of each packed example - the example run alone|; every
    token of a row (Collator gives a pad token position 0 and a mask row of its own: a one-token example)."""
    seen = {'worst': 0.0, 'examples': 0, 'calls': 0, 'packed_rows': 0, 'busy': False}
    def check(module, args, kwargs, out):
        if seen['busy'] or not module.training: return
        seen['busy'], seen['calls'] = True, seen['calls'] + 1
        with torch.no_grad():
            logits = getattr(out, 'logits', None)
            if logits is None:  # TRL's fused LM head returns log-probs: the same inputs, for logits
                fed = {k: v for k, v in kwargs.items() if k not in ('labels', 'fused_lm_head')}
                logits = module(**fed).logits
            for ids, pos, lg in zip(kwargs['input_ids'], kwargs['position_ids'], logits):
                starts = [i for i in range(len(ids)) if pos[i] == 0] + [len(ids)]
                seen['packed_rows'] += sum(e - s > 1 for s, e in zip(starts, starts[1:])) > 1
                for s, e in zip(starts, starts[1:]):
                    alone = module(input_ids=ids[None, s:e], use_cache=False).logits[0]
                    seen['worst'] = max(seen['worst'], (lg[s:e] - alone).abs().max().item())
                    seen['examples'] += 1
        seen['busy'] = False
    model.register_forward_hook(check, with_kwargs=True)
    return seen


def hf_start(data):
    from alpaca_ft.train import load_prepared
    from alpaca_ft.tokenization import load_tokenizer
    manifest, ds, _ = load_prepared(data)
    tok = load_tokenizer(manifest['tokenizer'])
    model = tiny_llama(len(tok), 2, 64, seed=42, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    args = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                report_to='none', save_strategy='no', use_cpu=True, disable_tqdm=True, seed=42)
    return manifest, ds, tok, model, args


def test_hf_trainer_with_add_lora_keeps_packs_apart(data, tmp_path):
    "transformers.Trainer + Collator.for_model on add_lora's model: packs isolated, only adapters change."
    from transformers import Trainer, TrainingArguments
    from alpaca_ft.batching import Collator
    manifest, ds, tok, model, args = hf_start(data)
    m = add_lora(model, r=8, dropout=0.0, n_freeze=0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    seen = watch_packs(m.get_base_model())
    Trainer(model=m, args=TrainingArguments(output_dir=str(tmp_path), **args), train_dataset=ds,
            data_collator=Collator.for_model(m)).train()
    assert seen['calls'] == 2 and seen['packed_rows'] >= 1 and seen['worst'] < 1e-5, seen
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all('lora_B' in n or 'lora_A' in n for n in changed), changed


def sft_lora(data, tmp_path, use_cache:bool=True):
    "Two steps of SFTTrainer(peft_config, padding_free) on a prepared split; what the hook saw, the trainer."
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer
    manifest, ds, tok, model, args = hf_start(data)
    model.config.use_cache = use_cache
    seen = watch_packs(model)
    cfg = SFTConfig(output_dir=str(tmp_path), padding_free=True, max_length=None, bf16=False,
                    activation_checkpointing=False,
                    dataset_kwargs={'skip_prepare_dataset': True}, **args)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type='CAUSAL_LM',
                      target_modules=list(LORA_TARGETS))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sft = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora)
        sft.train()
    return seen, sft, model


def test_trl_sft_with_peft_config_keeps_packs_apart(data, tmp_path):
    "SFTTrainer(peft_config, padding_free), fp32: packs isolated, the adapters asked for."
    seen, sft, model = sft_lora(data, tmp_path)
    assert seen['calls'] == 2 and seen['packed_rows'] >= 1 and seen['worst'] < 1e-5, seen
    assert sum(p.numel() for p in sft.model.parameters() if p.requires_grad) == lora_param_count(model, 8)



def test_trl_defaults_that_nbs_17_turns_off(tmp_path):
    "SFTConfig's defaults nbs/17_hf_route names: gradient checkpointing (PEFT's hook) and bf16 autocast."
    from trl import SFTConfig
    cfg = SFTConfig(output_dir=str(tmp_path), use_cpu=True)
    assert cfg.gradient_checkpointing is True and cfg.bf16 is True

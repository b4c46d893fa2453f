"""End-to-end checks of training: accumulation, packed isolation, resume, two processes, CLI errors, demo."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

from alpaca_ft.prepare import prepare
from alpaca_ft.train import TrainConfig, train, pack_isolation_error, ATTN_IMPLEMENTATIONS
from alpaca_ft.model import tiny_llama
from alpaca_ft.split import read_jsonl

CLI = str(Path(sys.executable).parent/'alpaca_ft')
ENV = {**os.environ, 'WANDB_MODE': 'disabled', 'TOKENIZERS_PARALLELISM': 'false'}


def cli(*args, **kw):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600, **kw)


def losses(run_dir, key='loss'):
    return [m[key] for m in read_jsonl(Path(run_dir)/'metrics.jsonl') if key in m]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('prep')/'data'
    prepare(out=d, max_seq_len=256, wandb='disabled', progress=False, verbose=False)
    return d


def cfg(data, out, **kw):
    base = dict(max_steps=4, batch_size=4, grad_accum=1, lr=3e-3, n_eval_samples=0, eval_every=100, save_every=100,
                wandb='disabled', progress=False)
    return TrainConfig(str(data), str(out), **{**base, **kw})


def test_grad_accum_matches_large_batch(data, tmp_path):
    "4 sequences in one micro-batch and 2 x 2 with grad_accum=2 give the same losses step after step."
    train(cfg(data, tmp_path/'big', batch_size=4, grad_accum=1))
    train(cfg(data, tmp_path/'acc', batch_size=2, grad_accum=2))
    assert losses(tmp_path/'acc') == pytest.approx(losses(tmp_path/'big'), abs=1e-5)
    # and they are not trivially equal to a run with a different batch
    train(cfg(data, tmp_path/'small', batch_size=2, grad_accum=1))
    assert losses(tmp_path/'small') != pytest.approx(losses(tmp_path/'big'), abs=1e-5)


@pytest.mark.parametrize('impl', ATTN_IMPLEMENTATIONS)
def test_packed_examples_are_isolated(impl):
    g = torch.Generator().manual_seed(0)
    exs = [[1] + torch.randint(3, 60, (n,), generator=g).tolist() for n in (7, 12, 3, 20)]
    model = tiny_llama(64, 2, 32, attn_implementation=impl).eval()
    assert pack_isolation_error(model, exs, impl) < 1e-5


def test_plain_causal_mask_would_leak():
    "The isolation test can fail: without the block mask the second example sees the first."
    from alpaca_ft.batching import collate
    model = tiny_llama(64, 2, 32).eval()
    a, c = [1, 5, 9, 14, 2], [1, 7, 3, 2]
    b = collate([{'input_ids': a + c, 'labels': a + c, 'position_ids': [0, 1, 2, 3, 4, 0, 1, 2, 3]}], pad_id=0)
    with torch.no_grad():
        leaky = model(input_ids=b['input_ids'], attention_mask=torch.ones(1, 9, dtype=torch.long), position_ids=b['position_ids']).logits[0]
        alone = model(input_ids=torch.tensor([c])).logits[0]
    assert (leaky[5:] - alone).abs().max() > 1e-3


def test_resume_gives_same_losses(data, tmp_path):
    r = cli('train', data, '--out', tmp_path/'once', '--max-steps', 8, '--save-every', 4, '--batch-size', 4,
            '--eval-every', 4, '--n-eval-samples', 0, '--lr', 3e-3, '--wandb', 'disabled')
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli('train', data, '--out', tmp_path/'twice', '--max-steps', 8, '--save-every', 4, '--batch-size', 4,
            '--eval-every', 4, '--n-eval-samples', 0, '--lr', 3e-3, '--wandb', 'disabled', '--stop-after', 4)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path/'twice'/'checkpoints'/'step-4'/'model.safetensors').exists()
    assert not (tmp_path/'twice'/'final').exists()
    r = cli('train', data, '--out', tmp_path/'twice', '--max-steps', 8, '--save-every', 4, '--batch-size', 4,
            '--eval-every', 4, '--n-eval-samples', 0, '--lr', 3e-3, '--wandb', 'disabled', '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert [m['step'] for m in read_jsonl(tmp_path/'twice'/'metrics.jsonl') if 'loss' in m] == list(range(1, 9))
    assert losses(tmp_path/'twice') == pytest.approx(losses(tmp_path/'once'), abs=1e-6)
    assert losses(tmp_path/'twice', 'eval_loss') == pytest.approx(losses(tmp_path/'once', 'eval_loss'), abs=1e-6)
    for f in ('config.json', 'model.safetensors', 'tokenizer.json'):
        assert (tmp_path/'twice'/'final'/f).exists()


def test_two_processes_match_one(data, tmp_path):
    "torchrun with 2 CPU processes x batch 2 takes the same steps as 1 process x batch 4."
    torchrun = Path(sys.executable).parent/'torchrun'
    common = ['--max-steps', 3, '--grad-accum', 1, '--eval-every', 3, '--n-eval-samples', 1, '--max-new-tokens', 4,
              '--lr', 3e-3, '--wandb', 'disabled']
    r = subprocess.run([str(torchrun), '--nproc_per_node', '2', '--master_port', '29613', CLI, 'train', str(data),
                        '--out', str(tmp_path/'ddp'), '--batch-size', '2', *map(str, common)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert cli('train', data, '--out', tmp_path/'single', '--batch-size', 4, *common).returncode == 0
    ddp, single = read_jsonl(tmp_path/'ddp'/'metrics.jsonl'), read_jsonl(tmp_path/'single'/'metrics.jsonl')
    assert len(ddp) == len(single)  # only rank 0 writes
    assert losses(tmp_path/'ddp') == pytest.approx(losses(tmp_path/'single'), abs=1e-4)
    assert losses(tmp_path/'ddp', 'eval_loss') == pytest.approx(losses(tmp_path/'single', 'eval_loss'), abs=1e-4)
    assert len(read_jsonl(tmp_path/'ddp'/'eval_predictions.jsonl')) == 1
    assert (tmp_path/'ddp'/'final'/'model.safetensors').exists()


def test_bf16_autocast_on_cpu(data, tmp_path):
    last = train(cfg(data, tmp_path/'bf16', max_steps=2, precision='bf16'))
    assert all(torch.isfinite(torch.tensor(l)) for l in losses(tmp_path/'bf16'))


@pytest.mark.parametrize('args, msg', [
    (['--n-freeze', '9'], 'n_freeze=9 but the model has 2 layers'),
    (['--batch-size', '0'], 'batch_size must be >= 1'),
    (['--precision', 'fp64'], 'invalid choice'),
])
def test_train_bad_arguments(data, tmp_path, args, msg):
    r = cli('train', data, '--out', tmp_path/'run', '--wandb', 'disabled', *args)
    assert r.returncode == 2 and msg in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'run').exists()


def test_train_refuses_what_is_not_a_prepare_output(tmp_path):
    (tmp_path/'notdata').mkdir()
    r = cli('train', tmp_path/'notdata', '--out', tmp_path/'run')
    assert r.returncode == 2 and 'not an alpaca_ft prepare output' in r.stderr
    assert not (tmp_path/'run').exists()


def test_train_refuses_existing_run_dir(data, tmp_path):
    (tmp_path/'run').mkdir(); (tmp_path/'run'/'keep.txt').write_text('x')
    r = cli('train', data, '--out', tmp_path/'run', '--wandb', 'disabled')
    assert r.returncode == 2 and '--resume' in r.stderr and '--overwrite' in r.stderr
    assert [p.name for p in (tmp_path/'run').iterdir()] == ['keep.txt']


def test_tiny_model_and_generate_cli(tmp_path):
    r = cli('tiny-model', tmp_path/'tiny', '--layers', 1, '--hidden', 32)
    assert r.returncode == 0, r.stderr
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(tmp_path/'tiny')
    assert m.config.num_hidden_layers == 1 and (tmp_path/'tiny'/'model.safetensors').exists()
    r = cli('generate', tmp_path/'tiny', '--instruction', 'Say hi.', '--max-new-tokens', 5)
    assert r.returncode == 0, r.stderr
    r = cli('generate', tmp_path/'tiny', '--instruction', 'Say hi.', '--prompt', 'x')
    assert r.returncode == 2
    assert cli('tiny-model', tmp_path/'tiny').returncode == 2  # exists


def test_demo_loss_falls(tmp_path):
    r = subprocess.run([CLI, 'demo', str(tmp_path/'demo'), '--max-steps', '42'], capture_output=True, text=True,
                       env={**ENV, 'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path)}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    l = losses(tmp_path/'demo'/'run')
    assert sum(l[-5:]) / 5 < sum(l[:5]) / 5 - 0.5  # ln(1024) = 6.93 at the start
    assert (tmp_path/'demo'/'run'/'final'/'model.safetensors').exists()
    assert len(read_jsonl(tmp_path/'demo'/'run'/'eval_predictions.jsonl')) == 5
    assert 'train loss' in r.stdout
    evals = [m for m in read_jsonl(tmp_path/'demo'/'run'/'metrics.jsonl') if 'eval_loss' in m]
    assert [m['step'] for m in evals] == [0, 10, 20, 30, 40, 42]  # every eval_every (42 // 4) steps, and the last one
    assert evals[-1]['eval_accuracy'] > evals[0]['eval_accuracy']
    assert f"eval token accuracy {evals[0]['eval_accuracy']:.1%} -> {evals[-1]['eval_accuracy']:.1%}" in r.stdout

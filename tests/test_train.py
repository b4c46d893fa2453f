"""End-to-end checks of training: accumulation, packed isolation, resume, two processes, safety of the run
folder, checked options, verified data, host syncs, CLI errors, demo."""
import json, math, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

from alpaca_ft.prepare import prepare
from alpaca_ft.train import (RUN_MARKER, TrainConfig, build_data, check_config,
                             pack_isolation_error, train)
from alpaca_ft.model import tiny_llama
from alpaca_ft.split import read_jsonl

CLI = str(Path(sys.executable).parent/'alpaca_ft')
ENV = {**os.environ, 'WANDB_MODE': 'disabled', 'TOKENIZERS_PARALLELISM': 'false'}


def cli(capsys, *args) -> tuple[int, str, str]:
    "Run the `alpaca_ft` command in this process (no start-up cost): exit code, stdout, stderr."
    from alpaca_ft.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def losses(run_dir, key='loss'):
    return [m[key] for m in read_jsonl(Path(run_dir)/'metrics.jsonl') if key in m]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('prep')/'data'
    prepare(out=d, max_seq_len=256, wandb='disabled', progress=False, verbose=False)
    return d


def cfg(data, out, **kw):
    base = dict(max_steps=4, batch_size=4, grad_accum=1, lr=3e-3, n_eval_samples=0, eval_every=100,
                save_every=100, wandb='disabled', progress=False)
    return TrainConfig(str(data), str(out), **{**base, **kw})


def stop_at(n):
    "An `on_step` that stops the run after step `n`, as if it had been interrupted."
    return lambda step, m: step >= n


@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    "A finished 4-step run with checkpoints at steps 2 and 4 (copy it before changing it)."
    out = tmp_path_factory.mktemp('runs')/'finished'
    train(cfg(data, out, save_every=2))
    return out


# --- the loop computes the right thing ----------------------------------------------------------------------

def test_grad_accum_matches_large_batch(data, finished, tmp_path):
    "4 sequences in one micro-batch and 2 x 2 with grad_accum=2 give the same losses step after step."
    train(cfg(data, tmp_path/'acc', batch_size=2, grad_accum=2))
    assert losses(tmp_path/'acc') == pytest.approx(losses(finished), abs=1e-5)
    # and they are not trivially equal to a run with a different batch
    train(cfg(data, tmp_path/'small', batch_size=2, grad_accum=1, max_steps=2))
    assert losses(tmp_path/'small') != pytest.approx(losses(finished)[:2], abs=1e-5)


@pytest.mark.parametrize('impl', ['sdpa', 'eager'])  # flex_attention: tests/test_model.py (slow on CPU)
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
    row = {'input_ids': a + c, 'labels': a + c, 'position_ids': [0, 1, 2, 3, 4, 0, 1, 2, 3]}
    b = collate([row], pad_id=0)
    with torch.no_grad():
        leaky = model(input_ids=b['input_ids'], attention_mask=torch.ones(1, 9, dtype=torch.long),
                      position_ids=b['position_ids']).logits[0]
        alone = model(input_ids=torch.tensor([c])).logits[0]
    assert (leaky[5:] - alone).abs().max() > 1e-3


def test_resume_gives_same_losses(data, tmp_path, finished):
    "Stopped after step 2 and resumed: the same losses, eval losses and learning rates as the run in one go."
    train(cfg(data, tmp_path/'twice', save_every=2), on_step=stop_at(2))
    assert (tmp_path/'twice'/'checkpoints'/'step-2'/'model.safetensors').exists()
    assert not (tmp_path/'twice'/'final').exists()
    train(cfg(data, tmp_path/'twice', save_every=2, resume=True))
    assert [m['step'] for m in read_jsonl(tmp_path/'twice'/'metrics.jsonl') if 'loss' in m] == [1, 2, 3, 4]
    for k in ('loss', 'eval_loss', 'lr'):
        assert losses(tmp_path/'twice', k) == pytest.approx(losses(finished, k), abs=1e-6)
    for f in ('config.json', 'model.safetensors', 'tokenizer.json'):
        assert (tmp_path/'twice'/'final'/f).exists()


def test_two_processes_match_one(data, tmp_path):
    "torchrun with 2 CPU processes x batch 2 takes the same steps as 1 process x batch 4."
    torchrun = Path(sys.executable).parent/'torchrun'
    common = dict(max_steps=3, grad_accum=1, eval_every=3, n_eval_samples=1, max_new_tokens=4, lr=3e-3)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in common.items()]
    r = subprocess.run([str(torchrun), '--nproc_per_node', '2', '--master_port', '29613', CLI, 'train',
                        str(data), '--out', str(tmp_path/'ddp'), '--batch-size', '2', '--wandb', 'disabled',
                        *args],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    train(cfg(data, tmp_path/'single', batch_size=4, **common))
    ddp, single = read_jsonl(tmp_path/'ddp'/'metrics.jsonl'), read_jsonl(tmp_path/'single'/'metrics.jsonl')
    assert len(ddp) == len(single)  # only rank 0 writes
    assert losses(tmp_path/'ddp') == pytest.approx(losses(tmp_path/'single'), abs=1e-4)
    ddp_eval, single_eval = losses(tmp_path/'ddp', 'eval_loss'), losses(tmp_path/'single', 'eval_loss')
    assert ddp_eval == pytest.approx(single_eval, abs=1e-4)
    assert len(read_jsonl(tmp_path/'ddp'/'eval_predictions.jsonl')) == 1
    assert (tmp_path/'ddp'/'final'/'model.safetensors').exists()


def test_bf16_autocast_on_cpu(data, tmp_path):
    train(cfg(data, tmp_path/'bf16', max_steps=2, precision='bf16'))
    assert all(math.isfinite(l) for l in losses(tmp_path/'bf16'))


# --- GPU speed properties, observed on CPU (issue 7.5) ------------------------------------------------------

SYNCS = ('item', 'tolist', 'cpu', 'numpy', '__float__', '__int__', '__bool__', '__index__')


def test_one_host_sync_per_step(data, tmp_path, monkeypatch):
    "The loop reads numbers back from the device once per optimizer step (one .tolist() of the step's sums)."
    import alpaca_ft.loop as L, alpaca_ft.train as T
    calls, at_step, files = [], [], {T.__file__, L.__file__}  # the run and its loop
    def counting(name):
        real = getattr(torch.Tensor, name)
        def f(self, *a, **kw):
            if sys._getframe(1).f_code.co_filename in files: calls.append(name)
            return real(self, *a, **kw)
        return f
    for name in SYNCS: monkeypatch.setattr(torch.Tensor, name, counting(name))
    train(cfg(data, tmp_path/'run', max_steps=4, grad_accum=2, batch_size=2),
          on_step=lambda step, m: at_step.append(len(calls)))
    per_step = [b - a for a, b in zip(at_step, at_step[1:3])]  # steps 2 and 3: no eval, no save
    assert per_step == [1, 1], calls


def test_batches_pinned_on_cuda(data):
    "On CUDA the loaders pin their batches (so non_blocking copies overlap compute); not on CPU."
    import datasets
    ds = datasets.load_from_disk(str(data/'train'))
    manifest = json.loads((data/'manifest.json').read_text())
    c = cfg(data, 'unused')
    for device, pinned in ((torch.device('cuda', 0), True), (torch.device('cpu'), False)):
        train_dl, eval_dl = build_data(c, manifest, ds, ds, 0, 1, device)
        assert train_dl.pin_memory == eval_dl.pin_memory == pinned


# --- options are checked before any work (issue 10.2) -------------------------------------------------------

@pytest.mark.parametrize('bad, name', [
    (dict(max_steps=0), 'max_steps'), (dict(max_steps=-3), 'max_steps'), (dict(grad_clip=-1.0), 'grad_clip'),
    (dict(grad_clip=0.0), 'grad_clip'), (dict(lr=float('inf')), 'lr'), (dict(lr=float('nan')), 'lr'),
    (dict(lr=0.0), 'lr'), (dict(warmup=1.0), 'warmup'), (dict(warmup=-0.1), 'warmup'),
    (dict(eval_every=0), 'eval_every'), (dict(save_every=-1), 'save_every'),
    (dict(keep_checkpoints=0), 'keep_checkpoints'),
    (dict(n_eval_samples=2, max_new_tokens=0), 'max_new_tokens'), (dict(n_freeze=9), 'n_freeze=9'),
    (dict(tiny_hidden=20), 'tiny_hidden'),
    (dict(attn_implementation='flash_attention_2'), 'attn_implementation'),
    (dict(batch_size=0), 'batch_size'), (dict(precision='fp64'), 'precision'), (dict(wandb='on'), 'wandb'),
    (dict(resume=True, overwrite=True), 'resume or overwrite'),
    (dict(seed=10**20), 'seed must be below 2\\*\\*63'),
])
def test_bad_options_fail_before_any_work(data, tmp_path, bad, name):
    with pytest.raises(ValueError, match=name):
        train(cfg(data, tmp_path/'run', **bad))
    assert not (tmp_path/'run').exists()


def test_zero_label_tokens_refused(data, tmp_path):
    "Data whose responses were all cut off would train on nothing (NaN loss): refused before step 1."
    d = tmp_path/'data'
    shutil.copytree(data, d)
    m = json.loads((d/'manifest.json').read_text())
    m['splits']['train']['label_tokens'] = 0
    (d/'manifest.json').write_text(json.dumps(m))
    with pytest.raises(ValueError, match='no label tokens'):
        train(cfg(d, tmp_path/'run'))
    assert not (tmp_path/'run').exists()


# --- the run folder: nothing lost (issue 10.1) --------------------------------------------------------------

def test_overwrite_refuses_a_folder_it_did_not_make(data, tmp_path):
    (tmp_path/'mine').mkdir()
    (tmp_path/'mine'/'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match=f'no {RUN_MARKER}'):
        train(cfg(data, tmp_path/'mine', overwrite=True))
    assert [p.name for p in (tmp_path/'mine').iterdir()] == ['notes.txt']


def test_overwrite_refuses_a_folder_with_a_foreign_marker(data, tmp_path):
    "A run.json some other tool wrote (no `made_by: alpaca_ft ...`) does not make a folder ours."
    (tmp_path/'webapp').mkdir()
    (tmp_path/'webapp'/RUN_MARKER).write_text('{"name": "my app"}')
    (tmp_path/'webapp'/'index.js').write_text('code')
    with pytest.raises(FileExistsError, match='written by alpaca_ft'):
        train(cfg(data, tmp_path/'webapp', overwrite=True))
    assert (tmp_path/'webapp'/'index.js').read_text() == 'code'


def test_weights_have_normal_permissions(finished):
    "safetensors writes through mkstemp (0600); the saved models are readable like any other output."
    umask = os.umask(0)
    os.umask(umask)
    for f in [finished/'final'/'model.safetensors', *(finished/'checkpoints').glob('step-*/model.safetensors')]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_resume_killed_while_saving_final_writes_it(data, finished, tmp_path, caplog):
    "Killed after the last checkpoint, before final/ was in place: --resume writes final/ and finishes."
    caplog.set_level('INFO', logger='alpaca_ft')  # the library logs; it does not print
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    shutil.rmtree(run/'final')
    info = json.loads((run/RUN_MARKER).read_text())
    (run/RUN_MARKER).write_text(json.dumps({**info, 'status': 'running', 'final': None}))
    train(cfg(data, run, save_every=2, resume=True))
    assert 'writing the final model' in caplog.text
    assert (run/'final'/'model.safetensors').is_file()
    assert json.loads((run/RUN_MARKER).read_text())['status'] == 'finished'
    with pytest.raises(ValueError, match='at step 4 already'):  # finished: nothing left to do
        train(cfg(data, run, save_every=2, resume=True))


def test_overwrite_refuses_the_current_folder(data, finished, tmp_path, monkeypatch):
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    before = sorted(p.name for p in run.iterdir())
    monkeypatch.chdir(run)
    with pytest.raises(FileExistsError, match='current folder'):
        train(cfg(data, '.', overwrite=True))
    assert sorted(p.name for p in run.iterdir()) == before


def test_overwrite_replaces_only_a_complete_run(data, finished, tmp_path):
    "--overwrite interrupted (Ctrl-C): the old run whole in replaced-run/, no temp folder; completed, it replaces."
    from alpaca_ft.train import REPLACED
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    old = (run/'metrics.jsonl').read_text()
    def interrupt(step, m):
        if step == 2: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, run, overwrite=True, lr=1e-3), on_step=interrupt)
    assert (run/REPLACED/'metrics.jsonl').read_text() == old
    assert (run/REPLACED/'final'/'model.safetensors').exists()
    assert json.loads((run/RUN_MARKER).read_text())['status'] == 'interrupted' and not (run/'final').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']  # no temp folder beside it
    train(cfg(data, run, overwrite=True, lr=1e-3, max_steps=2))
    assert [m['step'] for m in read_jsonl(run/'metrics.jsonl') if 'loss' in m] == [1, 2]
    assert json.loads((run/RUN_MARKER).read_text())['status'] == 'finished'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


def test_interrupted_run_leaves_whole_files_and_resumes(data, finished, tmp_path):
    "Ctrl-C in a new run: every file is whole (no temp files), and --resume finishes it with the same losses."
    def interrupt(step, m):
        if step == 3: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, tmp_path/'run', save_every=2), on_step=interrupt)
    run = tmp_path/'run'
    assert not [p for p in run.rglob('.*') if '.tmp-' in p.name]
    assert json.loads((run/RUN_MARKER).read_text())['status'] == 'interrupted'
    train(cfg(data, run, save_every=2, resume=True))
    assert losses(run) == pytest.approx(losses(finished), abs=1e-6)


# --- resume: the same run, safely (issue 10.3) --------------------------------------------------------------

@pytest.mark.parametrize('change', [dict(batch_size=2), dict(grad_accum=2), dict(seed=1), dict(lr=1e-3)])
def test_resume_refuses_another_run(data, finished, tmp_path, change):
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    (k, v), = change.items()
    with pytest.raises(ValueError, match=f'cannot resume with {k}={v!r}: the run was made with {k}='):
        train(cfg(data, run, resume=True, max_steps=6, save_every=2, **change))


def test_resume_with_more_steps_stretches_the_schedule(data, finished, tmp_path, caplog):
    "The old schedule ended at lr 0: steps past it would not train. The cosine is recomputed; train says so."
    caplog.set_level('INFO', logger='alpaca_ft')  # the library logs; it does not print
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    train(cfg(data, run, resume=True, max_steps=6, save_every=2))
    assert 'the schedule was 4 steps, now 6' in caplog.text
    lrs = [m['lr'] for m in read_jsonl(run/'metrics.jsonl') if 'lr' in m]
    assert len(lrs) == 6 and min(lrs[4:]) > 0
    assert lrs[:4] == pytest.approx(losses(finished, 'lr'))


def test_trainer_state_loads_weights_only(data, finished, tmp_path):
    "A planted pickle in trainer_state.pt is refused, not run; the checkpoint before it is used instead."
    run, flag = tmp_path/'run', tmp_path/'pwned'
    shutil.copytree(finished, run)
    state = torch.load(finished/'checkpoints'/'step-4'/'trainer_state.pt', weights_only=True)  # loads safely
    assert state['step'] == 4

    class Planted:
        def __reduce__(self): return (Path.write_text, (flag, 'ran'))
    torch.save({'step': 4, 'evil': Planted()}, run/'checkpoints'/'step-4'/'trainer_state.pt')
    train(cfg(data, run, resume=True, max_steps=4, save_every=2))
    assert not flag.exists()
    assert (run/'checkpoints'/'step-4.corrupt').is_dir()
    assert losses(run) == pytest.approx(losses(finished), abs=1e-6)  # steps 3 and 4 again, from step 2


def test_truncated_newest_checkpoint_is_named_and_the_previous_used(data, finished, tmp_path, caplog):
    caplog.set_level('INFO', logger='alpaca_ft')  # the library logs; it does not print
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    w = run/'checkpoints'/'step-4'/'model.safetensors'
    w.write_bytes(w.read_bytes()[:-1000])
    train(cfg(data, run, resume=True, save_every=2))
    out = caplog.text
    assert 'step-4' in out and 'truncated' in out
    assert [m['step'] for m in read_jsonl(run/'metrics.jsonl') if 'loss' in m] == [1, 2, 3, 4]
    assert losses(run) == pytest.approx(losses(finished), abs=1e-6)


def test_resume_with_no_usable_checkpoint_refuses(data, finished, tmp_path):
    "Every checkpoint unreadable: --resume silently started again from step 0."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    for w in (run/'checkpoints').glob('step-*/model.safetensors'): w.write_bytes(w.read_bytes()[:10])
    before = (run/'metrics.jsonl').read_text()
    from alpaca_ft.data import DataError
    with pytest.raises(DataError, match='no usable checkpoint .*step-4, step-2 cannot be read'):
        train(cfg(data, run, resume=True, max_steps=6, save_every=2))
    assert (run/'metrics.jsonl').read_text() == before
    assert sorted(p.name for p in (run/'checkpoints').iterdir()) == ['step-2.corrupt', 'step-4.corrupt']


def test_sigterm_stops_like_ctrl_c(data, tmp_path):
    "SIGTERM (a scheduler, docker stop) exited 143 without a word, run.json still saying 'running'."
    import signal, time
    run = tmp_path/'run'
    args = [CLI, 'train', data, '--out', run, '--max-steps', '500', '--batch-size', '4', '--grad-accum', '1',
            '--n-eval-samples', '0', '--eval-every', '1000', '--save-every', '2', '--wandb', 'disabled',
            '--no-progress']
    p = subprocess.Popen([str(a) for a in args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run/'checkpoints').glob('step-*')) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == 'alpaca_ft train: error: interrupted' and 'Traceback' not in err
    assert json.loads((run/RUN_MARKER).read_text())['status'] == 'interrupted'


def test_stale_temp_folders_are_removed(data, finished, tmp_path):
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    from alpaca_ft.data import OWNER_FILE, owner_record
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    stale = [run/'checkpoints'/'.step-6.tmp-abcd1234', run/'.final.tmp-k2j4h5g6']
    for p in stale:  # temps of a writer on this machine that died (issue 18: only those with an owner record go)
        p.mkdir()
        (p/OWNER_FILE).write_text(json.dumps({**owner_record(), 'pid': int(dead.stdout), 'temp': p.name}))
        (p/'model.safetensors').write_bytes(b'0' * 1000)
    train(cfg(data, run, resume=True, max_steps=5, save_every=2))
    assert not any(p.exists() for p in stale)


def test_torn_metrics_line_is_named(data, finished, tmp_path):
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    lines = (run/'metrics.jsonl').read_text().splitlines()
    lines[1] = lines[1][:10]
    (run/'metrics.jsonl').write_text('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=r'metrics.jsonl, line 2: not valid JSON'):
        train(cfg(data, run, resume=True, max_steps=6, save_every=2))


# --- the data and the model are checked (issue 10.4) --------------------------------------------------------

def test_changed_data_is_refused(data, tmp_path):
    d = tmp_path/'data'
    shutil.copytree(data, d)
    arrow = next((d/'train').glob('*.arrow'))
    b = bytearray(arrow.read_bytes())
    b[-100] ^= 1
    arrow.write_bytes(bytes(b))
    with pytest.raises(ValueError, match='fingerprint'):
        train(cfg(d, tmp_path/'run'))
    assert not (tmp_path/'run').exists()


def test_model_with_another_tokenizer_is_refused(data, tmp_path):
    "A model built for another tokenizer with a vocabulary no smaller than the data's would train silently."
    from alpaca_ft.tokenization import load_tokenizer
    tok = load_tokenizer(None)
    tok.add_tokens(['<extra>'])
    model = tiny_llama(len(tok), 1, 32, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    model.save_pretrained(tmp_path/'other')
    tok.save_pretrained(tmp_path/'other')
    with pytest.raises(ValueError, match='tokenizer differs'):
        train(cfg(data, tmp_path/'run', model=str(tmp_path/'other')))
    assert not (tmp_path/'run').exists()


def test_torn_eval_jsonl_is_named(data, tmp_path):
    d = tmp_path/'data'
    shutil.copytree(data, d)
    lines = (d/'eval.jsonl').read_text(encoding='utf-8').split('\n')
    lines[2] = lines[2][:20]
    (d/'eval.jsonl').write_text('\n'.join(lines), encoding='utf-8')
    with pytest.raises(ValueError, match=r'eval.jsonl, line 3: not valid JSON'):
        train(cfg(d, tmp_path/'run', n_eval_samples=2))
    assert not (tmp_path/'run').exists()


def test_wandb_online_without_a_key_fails_before_any_work(data, tmp_path, monkeypatch):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path/'no-netrc'))
    monkeypatch.setenv('HOME', str(tmp_path))
    with pytest.raises(ValueError, match='API key'):
        train(cfg(data, tmp_path/'run', wandb='online'))
    assert not (tmp_path/'run').exists()


def test_compile_default_follows_the_device(data):
    "compile=None: on with CUDA, off on CPU; compile=True compiles each decoder layer (lazily)."
    from alpaca_ft.tokenization import load_tokenizer
    from alpaca_ft.train import build_model
    manifest = json.loads((data/'manifest.json').read_text())
    tok = load_tokenizer(manifest['tokenizer'])
    compiled = lambda m: [l._compiled_call_impl is not None for l in m.model.layers]
    assert compiled(build_model(cfg(data, 'x'), tok, manifest, torch.device('cpu'))) == [False, False]
    on = build_model(cfg(data, 'x', compile=True), tok, manifest, torch.device('cpu'))
    assert compiled(on) == [True, True]


# --- the run records what it used and made (issue 8.3) ------------------------------------------------------

def test_run_records_dataset_and_model_artifacts(data, tmp_path, monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    run = tmp_path/'run'
    train(cfg(data, run, max_steps=2, wandb='offline'))
    info = json.loads((run/RUN_MARKER).read_text())
    assert info['dataset_artifact']['name'] and info['dataset_artifact']['fingerprint'] == \
        json.loads((data/'manifest.json').read_text())['fingerprint']
    assert info['model_artifact']['type'] == 'model' and info['model_artifact']['path'] == 'final'
    assert (run/'lr_schedule.png').stat().st_size > 0 and (run/'loss.png').stat().st_size > 0


# --- the command line ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('args, msg', [
    (['--n-freeze', '9'], 'n_freeze=9 but the model has 2 layers'),
    (['--batch-size', '0'], 'batch_size must be'),
    (['--precision', 'fp64'], 'invalid choice'),
])
def test_train_bad_arguments(data, tmp_path, capsys, args, msg):
    code, _, err = cli(capsys, 'train', data, '--out', tmp_path/'run', '--wandb', 'disabled', *args)
    assert code == 2 and msg in err, err[-2000:]
    assert not (tmp_path/'run').exists()


def test_train_refuses_what_is_not_a_prepare_output(tmp_path, capsys):
    (tmp_path/'notdata').mkdir()
    code, _, err = cli(capsys, 'train', tmp_path/'notdata', '--out', tmp_path/'run')
    assert code == 2 and 'not an alpaca_ft prepare output' in err
    assert not (tmp_path/'run').exists()


def test_train_refuses_existing_run_dir(data, tmp_path, capsys):
    (tmp_path/'run').mkdir()
    (tmp_path/'run'/'keep.txt').write_text('x')
    code, _, err = cli(capsys, 'train', data, '--out', tmp_path/'run', '--wandb', 'disabled')
    assert code == 2 and '--resume' in err and '--overwrite' in err
    code, _, err = cli(capsys, 'train', data, '--out', tmp_path/'run', '--wandb', 'disabled', '--overwrite')
    assert code == 2 and f'no {RUN_MARKER}' in err
    assert [p.name for p in (tmp_path/'run').iterdir()] == ['keep.txt']


def test_tiny_model_and_generate_cli(tmp_path, capsys):
    code, _, err = cli(capsys, 'tiny-model', tmp_path/'tiny', '--layers', 1, '--hidden', 32)
    assert code == 0, err
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(tmp_path/'tiny')
    assert m.config.num_hidden_layers == 1 and (tmp_path/'tiny'/'model.safetensors').exists()
    code, _, err = cli(capsys, 'generate', tmp_path/'tiny', '--instruction', 'Say hi.', '--max-new-tokens', 5)
    assert code == 0, err
    assert cli(capsys, 'generate', tmp_path/'tiny', '--instruction', 'Say hi.', '--prompt', 'x')[0] == 2
    assert cli(capsys, 'tiny-model', tmp_path/'tiny')[0] == 2  # exists


def test_demo_overwrite_only_replaces_a_demo_folder(tmp_path):
    from alpaca_ft.demo import demo
    (tmp_path/'mine').mkdir()
    (tmp_path/'mine'/'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not replaced'):
        demo(tmp_path/'mine', max_steps=2, overwrite=True, wandb='disabled', progress=False)
    assert [p.name for p in (tmp_path/'mine').iterdir()] == ['notes.txt']


def test_demo_loss_falls(tmp_path):
    "The command as scripts/demo.sh runs it, in its own process (W&B reads WANDB_DIR once per process)."
    env = {k: v for k, v in ENV.items() if k != 'WANDB_DIR'}
    p = subprocess.run([CLI, 'demo', str(tmp_path/'demo'), '--max-steps', '20', '--no-progress'],
                       env={**env, 'WANDB_MODE': 'offline'}, capture_output=True, text=True, timeout=600)
    out, err = p.stdout, p.stderr
    assert p.returncode == 0, err[-3000:]
    assert len(list((tmp_path/'demo'/'wandb').glob('offline-run-*'))) == 1  # prepare's: was lost with a temp folder
    assert len(list((tmp_path/'demo'/'run'/'wandb').glob('offline-run-*'))) == 1  # train's, in its run folder
    l = losses(tmp_path/'demo'/'run')
    assert sum(l[-5:]) / 5 < sum(l[:5]) / 5 - 0.5  # ln(1024) = 6.93 at the start
    assert (tmp_path/'demo'/'run'/'final'/'model.safetensors').exists()
    assert (tmp_path/'demo'/'demo.json').exists()
    assert len(read_jsonl(tmp_path/'demo'/'run'/'eval_predictions.jsonl')) == 5
    assert 'train loss' in out
    evals = [m for m in read_jsonl(tmp_path/'demo'/'run'/'metrics.jsonl') if 'eval_loss' in m]
    assert [m['step'] for m in evals] == [0, 5, 10, 15, 20]  # every 20 // 4 steps (and the last)
    assert evals[-1]['eval_accuracy'] > evals[0]['eval_accuracy']
    assert f"eval token accuracy {evals[0]['eval_accuracy']:.1%} -> {evals[-1]['eval_accuracy']:.1%}" in out


def test_errors_name_what_to_use_instead(data, finished, tmp_path):
    """A run folder given to generate and an answer longer than the context name what to use instead; a tokenizer
    folder gone since prepare no longer matters (the prepared folder keeps its own copy, issue 15)."""
    from alpaca_ft.data import DataError
    from alpaca_ft.generate import generate_answer
    from alpaca_ft.tokenization import load_tokenizer
    with pytest.raises(DataError, match=r'an alpaca_ft run folder, not a model: use .*final'):
        generate_answer(finished, 'Hi.')
    with pytest.raises(ValueError, match="more than the model's context"):
        generate_answer(finished/'final', 'Hi.', max_new_tokens=10**6)
    load_tokenizer(None).save_pretrained(tmp_path/'tok')
    prepare(out=tmp_path/'d', tokenizer=str(tmp_path/'tok'), max_seq_len=256, wandb='disabled', progress=False,
            verbose=False)
    shutil.rmtree(tmp_path/'tok')
    train(cfg(tmp_path/'d', tmp_path/'run', max_steps=1))
    assert (tmp_path/'run'/'final'/'config.json').is_file()


def test_run_folder_inside_the_data_folder_is_refused(data):
    "prepare --overwrite on the data folder would then delete the run (final model, checkpoints) with it."
    with pytest.raises(FileExistsError, match='cannot be inside the data folder'):
        train(cfg(data, data/'run'))
    assert not (data/'run').exists()


def test_a_second_run_into_the_same_folder_is_refused(data, tmp_path):
    "Two runs into one --out both went on, their metrics lines interleaved."
    from alpaca_ft.train import run_lock
    with run_lock(tmp_path/'run'):  # as if another train were running there
        with pytest.raises(FileExistsError, match='another alpaca_ft train is writing to it'):
            train(cfg(data, tmp_path/'run'))
        assert [p.name for p in (tmp_path/'run').iterdir()] == ['.lock']  # the other run's lock, nothing else
    (tmp_path/'run').mkdir(exist_ok=True)
    (tmp_path/'run'/'.lock').write_text('')  # as if a run had died: its lock file stays, nobody holds the lock
    train(cfg(data, tmp_path/'run', max_steps=1))  # a folder holding only a stale lock file counts as empty
    assert json.loads((tmp_path/'run'/RUN_MARKER).read_text())['status'] == 'finished'


def test_resume_keeps_fp32_master_weights_where_frozen_layers_are_bf16(data, tmp_path, monkeypatch):
    "On a GPU a checkpoint was loaded in bf16: the trainable fp32 weights were rounded, resume was not exact."
    import alpaca_ft.model as M, alpaca_ft.train as T
    from safetensors.torch import load_file
    from alpaca_ft.model import save_tiny_model, setup_for_training
    from alpaca_ft.tokenization import load_tokenizer
    from transformers import AutoModelForCausalLM
    save_tiny_model(tmp_path/'tiny', layers=2, hidden=64)
    model = setup_for_training(AutoModelForCausalLM.from_pretrained(tmp_path/'tiny'), n_freeze=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(1e-4)  # fp32 values bf16 cannot hold
            else: p.data = p.data.to(torch.bfloat16)  # frozen as a GPU run keeps them
    model.save_pretrained(tmp_path/'ckpt')
    saved = load_file(tmp_path/'ckpt'/'model.safetensors')
    for mod in (M, T): monkeypatch.setattr(mod, 'default_dtype', lambda device: torch.bfloat16)  # as on a GPU
    manifest, *_ = T.load_prepared(data)
    c = cfg(data, tmp_path/'run', model=str(tmp_path/'tiny'), n_freeze=1)
    got = T.build_model(c, load_tokenizer(manifest['tokenizer']), manifest, torch.device('cpu'), tmp_path/'ckpt')
    for name, p in got.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16), name
        if p.requires_grad: assert torch.equal(p.data, saved[name]), name


# --- prepared datasets in memory (issue 15) ----------------------------------------------------------------

def in_memory(data):
    "The train and eval datasets of the prepared folder `data`, loaded into memory, and its tokenizer folder."
    import datasets
    return (datasets.load_from_disk(str(data/'train')), datasets.load_from_disk(str(data/'eval')),
            str(data/'tokenizer'))


def mem_settings(out, **kw):
    return dict(out=str(out), max_steps=4, batch_size=4, grad_accum=1, lr=3e-3, n_eval_samples=0,
                eval_every=100, wandb='disabled', progress=False, **kw)


def test_fine_tune_takes_datasets_in_memory(data, finished, tmp_path):
    "A prepared folder's datasets, given in memory, train exactly as the folder does; run.json says what."
    from alpaca_ft.train import fine_tune
    tr, ev, tok = in_memory(data)
    res = fine_tune(train_dataset=tr, eval_dataset=ev, tokenizer=tok,
                    **mem_settings(tmp_path/'mem', save_every=2))
    assert losses(tmp_path/'mem') == pytest.approx(losses(finished), abs=1e-6)
    assert losses(tmp_path/'mem', 'eval_loss') == pytest.approx(losses(finished, 'eval_loss'), abs=1e-6)
    assert res.final is not None and (res.final/'config.json').is_file()
    info = json.loads((tmp_path/'mem'/RUN_MARKER).read_text())
    assert info['data']['dir'] is None
    assert info['data']['in_memory']['train']['fingerprint'] == tr._fingerprint
    assert info['data']['in_memory']['eval']['fingerprint'] == ev._fingerprint


def test_in_memory_datasets_are_checked(data, tmp_path):
    "Wrong objects, columns, types and missing partners fail before any work, naming the argument."
    from alpaca_ft.train import fine_tune
    tr, ev, tok = in_memory(data)
    out = tmp_path/'run'
    def fails(exc, match, **kw):
        with pytest.raises(exc, match=match): fine_tune(**{**mem_settings(out), **kw})
        assert not out.exists()
    fails(TypeError, 'train_dataset must be a datasets.Dataset', train_dataset=tr.to_list(), eval_dataset=ev,
          tokenizer=tok)
    fails(ValueError, 'eval_dataset lacks the column.* position_ids', train_dataset=tr,
          eval_dataset=ev.remove_columns('position_ids'), tokenizer=tok)
    as_text = tr.map(lambda r: {'labels': [f'#{x}' for x in r['labels']]})
    fails(TypeError, 'train_dataset: column labels must hold lists of integers', train_dataset=as_text,
          eval_dataset=ev, tokenizer=tok)
    cut = tr.map(lambda r: {'labels': r['labels'][:-1]})
    fails(ValueError, 'train_dataset: .*differ in length', train_dataset=cut, eval_dataset=ev, tokenizer=tok)
    fails(ValueError, 'eval_dataset is None', train_dataset=tr, tokenizer=tok)
    fails(ValueError, 'tokenizer is None', train_dataset=tr, eval_dataset=ev)
    fails(ValueError, 'not both', train_dataset=tr, eval_dataset=ev, tokenizer=tok, data_dir=str(data))
    fails(ValueError, 'data_dir is None', data_dir=None)
    masked = tr.map(lambda r: {'labels': [-100] * len(r['labels'])})
    fails(ValueError, 'train_dataset has no label tokens', train_dataset=masked, eval_dataset=ev,
          tokenizer=tok)


def test_resume_refuses_other_datasets_in_memory(data, tmp_path):
    "A run on datasets in memory resumes on the same datasets only (their fingerprints are its identity)."
    from alpaca_ft.train import fine_tune
    tr, ev, tok = in_memory(data)
    out = tmp_path/'run'
    fine_tune(train_dataset=tr, eval_dataset=ev, tokenizer=tok, on_step=stop_at(2),
              **mem_settings(out, save_every=2))
    other = tr.select(range(len(tr) - 1))
    with pytest.raises(ValueError, match='cannot resume with data_fingerprint='):
        fine_tune(train_dataset=other, eval_dataset=ev, tokenizer=tok,
                  **mem_settings(out, save_every=2, resume=True))
    res = fine_tune(train_dataset=tr, eval_dataset=ev, tokenizer=tok,
                    **mem_settings(out, save_every=2, resume=True))
    assert res.metrics['step'] == 4 and res.final is not None


# --- library messages name Python arguments (issue 15) -----------------------------------------------------

TRAIN_MODULES = ('loop', 'train', 'runs')  # the modules of the training pages

def _messages(module:str) -> list[str]:
    "The string parts of every exception raised and every message logged in `alpaca_ft/<module>.py`."
    import ast, alpaca_ft
    tree = ast.parse((Path(alpaca_ft.__file__).parent/f'{module}.py').read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Raise) or (isinstance(n, ast.Call) and
             isinstance(n.func, ast.Attribute) and n.func.attr in ('warning', 'info', 'error', 'warn'))]
    return [c.value for n in calls for c in ast.walk(n) if isinstance(c, ast.Constant) and isinstance(c.value, str)]


def test_library_messages_name_arguments_not_flags():
    "'pass --overwrite' in a Python exception: the library names `overwrite=True`; the CLI translates."
    msgs = [m for module in TRAIN_MODULES for m in _messages(module)]
    assert any('resume=True' in m for m in msgs)  # the scan finds messages at all
    assert [m for m in msgs if re.search(r'--[a-z]', m)] == []


def test_cli_shows_flags_for_the_library_message(data, finished, tmp_path, capsys):
    "The library says `resume=True`; the command line says `--resume`."
    from alpaca_ft.train import fine_tune
    with pytest.raises(FileExistsError, match='pass resume=True to continue it or overwrite=True'):
        fine_tune(cfg(data, finished))
    code, _, err = cli(capsys, 'train', data, '--out', finished, '--wandb', 'disabled')
    assert code == 2 and 'pass --resume to continue it or --overwrite to replace it' in err, err

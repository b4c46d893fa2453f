"""Issue 18, outside the data layer: one lock for every writer of a run folder (--overwrite included),
signals that cannot land in a worker pool or a finaliser, every length checked against the model's context,
a loss that stays finite, weights checked by content, W&B started before the output is committed, a full
disk named."""
import json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch

from alpaca_ft.data import DataError
from alpaca_ft.prepare import prepare
from alpaca_ft.split import read_jsonl
from alpaca_ft.train import REPLACED, RUN_MARKER, NonFiniteError, TrainConfig, run_lock, train

CLI = str(Path(sys.executable).parent/'alpaca_ft')
ENV = {**os.environ, 'WANDB_MODE': 'disabled', 'TOKENIZERS_PARALLELISM': 'false'}


def cli(capsys, *args) -> tuple[int, str]:
    "Run `alpaca_ft` in this process: exit code and stderr."
    from alpaca_ft.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('prep')/'data'
    prepare(out=d, max_seq_len=256, wandb='disabled', progress=False, verbose=False)
    return d


def cfg(data, out, **kw):
    base = dict(max_steps=4, batch_size=4, grad_accum=1, lr=3e-3, n_eval_samples=0, eval_every=100,
                save_every=2, wandb='disabled', progress=False)
    return TrainConfig(str(data), str(out), **{**base, **kw})


@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    "A finished 4-step run, checkpoints at steps 2 and 4 (copy it before changing it)."
    out = tmp_path_factory.mktemp('runs')/'finished'
    train(cfg(data, out))
    return out


def steps(run):
    return [m['step'] for m in read_jsonl(Path(run)/'metrics.jsonl') if 'loss' in m]


def status(run): return json.loads((Path(run)/RUN_MARKER).read_text())['status']


def interrupt_at(n):
    def on_step(step, m):
        if step == n: raise KeyboardInterrupt
    return on_step


# --- 1. one lock for every writer; an interrupted --overwrite -----------------------------------------------

def test_overwrite_takes_the_run_lock(data, finished, tmp_path):
    "--overwrite ran in a temp folder outside the lock: two runs ended up in one metrics.jsonl."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    before = (run/'metrics.jsonl').read_text()
    with run_lock(run):  # as if another train were writing there
        with pytest.raises(FileExistsError, match='another alpaca_ft train is writing to it'):
            train(cfg(data, run, overwrite=True, max_steps=1))
    assert (run/'metrics.jsonl').read_text() == before and status(run) == 'finished'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


def test_interrupted_overwrite_keeps_the_new_run_resumable_and_the_old_aside(data, finished, tmp_path):
    "SIGTERM during --overwrite deleted the new run's checkpoints and left the old run looking finished."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    old_metrics = (run/'metrics.jsonl').read_text()
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, run, overwrite=True, lr=1e-3), on_step=interrupt_at(3))
    assert status(run) == 'interrupted' and not (run/'final').exists()  # the new run, not looking finished
    assert [p.name for p in (run/'checkpoints').iterdir()] == ['step-2']  # its checkpoint is kept
    assert (run/REPLACED/'metrics.jsonl').read_text() == old_metrics  # the old run: whole, aside
    assert status(run/REPLACED) == 'finished' and (run/REPLACED/'final'/'model.safetensors').is_file()
    with pytest.raises(ValueError, match='cannot resume with lr=0.003'):  # --resume goes on with the new run
        train(cfg(data, run, resume=True))
    train(cfg(data, run, resume=True, lr=1e-3))
    assert steps(run) == [1, 2, 3, 4] and status(run) == 'finished'
    assert not (run/REPLACED).exists()  # deleted only now that the new run has finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


def test_overwrite_after_an_interrupted_overwrite(data, finished, tmp_path):
    "A second --overwrite replaces the unfinished run; the finished one stays aside until a new one finishes."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, run, overwrite=True, lr=1e-3), on_step=interrupt_at(3))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, run, overwrite=True, lr=2e-3), on_step=interrupt_at(1))
    assert status(run/REPLACED) == 'finished' and status(run) == 'interrupted'
    assert json.loads((run/RUN_MARKER).read_text())['config']['lr'] == 2e-3
    train(cfg(data, run, overwrite=True, max_steps=2))
    assert steps(run) == [1, 2] and status(run) == 'finished' and not (run/REPLACED).exists()


def test_a_run_that_fails_before_it_starts_leaves_the_folder_as_it_was(data, finished, tmp_path):
    "A model that cannot load: the old run is back in place; a new folder is not left behind."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob('*'))
    with pytest.raises(DataError, match='cannot load the model'):
        train(cfg(data, run, overwrite=True, model=str(tmp_path/'no-such-model')))
    assert sorted(str(p.relative_to(run)) for p in run.rglob('*')) == before
    with pytest.raises(DataError, match='cannot load the model'):
        train(cfg(data, tmp_path/'new', model=str(tmp_path/'no-such-model')))
    assert not (tmp_path/'new').exists()


# --- 6. what can fail starts before the output is committed -------------------------------------------------

def test_failing_wandb_leaves_nothing_and_the_rerun_works(data, tmp_path, monkeypatch):
    "W&B failing after the run folder was written: the corrected rerun was refused with 'exists'."
    import alpaca_ft.train as T
    def broken(*a, **kw): raise ValueError('W&B (offline): cannot start a run: broken')
    monkeypatch.setattr(T, 'init_run', broken)
    with pytest.raises(ValueError, match='cannot start a run'):
        train(cfg(data, tmp_path/'run', wandb='offline', max_steps=1))
    assert not (tmp_path/'run').exists()
    monkeypatch.undo()
    train(cfg(data, tmp_path/'run', max_steps=1))
    assert status(tmp_path/'run') == 'finished'


def test_prepare_wandb_failure_leaves_no_output(tmp_path, monkeypatch):
    "prepare logged to W&B after its output was in place: a failure left it there, the rerun said 'exists'."
    import alpaca_ft.prepare as P
    def broken(*a, **kw): raise ValueError('W&B: cannot log the packed artifact')
    monkeypatch.setattr(P, 'log_packed', broken)
    (tmp_path/'cwd').mkdir()
    monkeypatch.chdir(tmp_path/'cwd')  # W&B's offline folder goes here
    with pytest.raises(ValueError, match='cannot log the packed artifact'):
        prepare(out=tmp_path/'o'/'data', max_seq_len=64, wandb='offline', progress=False, verbose=False)
    assert list((tmp_path/'o').iterdir()) == []


@pytest.mark.parametrize('bad', ['a/b', 'x' * 200, 'what?'])
def test_bad_wandb_project_is_refused_before_any_work(data, tmp_path, capsys, bad):
    code, err = cli(capsys, 'train', data, '--out', tmp_path/'run', '--wandb-project', bad, '--max-steps', 1)
    assert code == 2 and 'wandb_project' in err and len(err.strip().splitlines()) == 1
    code, err = cli(capsys, 'prepare', '--out', tmp_path/'data', '--wandb-project', bad)
    assert code == 2 and 'wandb_project' in err
    assert list(tmp_path.iterdir()) == []


# --- 3. every length against the model's context ------------------------------------------------------------

def test_packs_longer_than_the_context_are_refused_before_the_run_folder(tmp_path):
    "--max-seq-len 1000000: one huge pack, an attempt to allocate 104 GB, after the run folder was written."
    prepare(out=tmp_path/'data', max_seq_len=4096, wandb='disabled', progress=False, verbose=False)
    with pytest.raises(DataError, match='attends to 2048 positions: prepare the data again with max_seq_len'):
        train(cfg(tmp_path/'data', tmp_path/'run'))
    assert not (tmp_path/'run').exists()


def test_eval_generation_past_the_context_is_refused_before_training(data, tmp_path):
    "--max-new-tokens 100000 trained every step, then generated past the context, with no final model."
    with pytest.raises(ValueError, match=r"max_new_tokens=100000 is more than the model's context \(2048"):
        train(cfg(data, tmp_path/'run', n_eval_samples=2, max_new_tokens=100000))
    assert not (tmp_path/'run').exists()


def test_a_long_generate_prompt_is_refused(tmp_path, capsys):
    from alpaca_ft.model import save_tiny_model
    save_tiny_model(tmp_path/'tiny', layers=1, hidden=32)
    code, err = cli(capsys, 'generate', tmp_path/'tiny', '--prompt', 'word ' * 3000, '--max-new-tokens', 5)
    assert code == 2 and "more than the model's context (2048 tokens)" in err, err


# --- 4. a loss that stays finite ----------------------------------------------------------------------------

def test_non_finite_training_stops_with_the_step_named(data, tmp_path, capsys):
    "--weight-decay 1e6 (a typo for 1e-6) exited 0 with a NaN loss and NaN weights in final/."
    run = tmp_path/'run'
    code, err = cli(capsys, 'train', data, '--out', run, '--max-steps', 40, '--batch-size', 4,
                    '--grad-accum', 1, '--lr', 3e-3, '--weight-decay', 1e6, '--n-eval-samples', 0,
                    '--save-every', 2, '--wandb', 'disabled', '--no-progress')
    assert code == 2 and 'training stopped' in err and 'then --resume or --overwrite' in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (run/'final').exists() and status(run) == 'failed'
    from safetensors.torch import load_file
    ckpts = sorted((run/'checkpoints').glob('step-*'))
    weights = [t for c in ckpts for t in load_file(c/'model.safetensors').values()]
    assert ckpts and all(torch.isfinite(t).all() for t in weights)
    assert all(m['loss'] == m['loss'] for m in read_jsonl(run/'metrics.jsonl') if 'loss' in m)  # no NaN line
    assert f'{ckpts[-1]}' in err  # the last good checkpoint is named


def test_a_non_finite_eval_loss_stops_the_run_too(data, tmp_path, monkeypatch, capsys):
    "Only the training loss was checked: a NaN eval loss was logged, and the run went on to save and finish."
    import alpaca_ft.loop as L  # where the loop evaluates
    real, calls = L.evaluate, []
    def evaluate(model, *a, **kw):  # what bf16 overflow in eval looks like: weights finite, eval loss not
        calls.append(1)
        m = real(model, *a, **kw)
        return {**m, 'eval_loss': float('nan')} if len(calls) == 3 else m
    monkeypatch.setattr(L, 'evaluate', evaluate)
    run = tmp_path/'run'
    code, err = cli(capsys, 'train', data, '--out', run, '--max-steps', 6, '--batch-size', 4,
                    '--grad-accum', 1, '--lr', 3e-3, '--n-eval-samples', 0, '--eval-every', 2,
                    '--save-every', 2, '--wandb', 'disabled', '--no-progress')  # evals at 0, 2, then 4: NaN
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'step 4: the eval loss is nan; training stopped' in err and 'lower the learning rate' in err
    assert f"the last good checkpoint, {run/'checkpoints'/'step-2'}, is kept" in err
    assert [c.name for c in (run/'checkpoints').iterdir()] == ['step-2']
    assert not (run/'final').exists() and status(run) == 'failed'
    assert all(m['eval_loss'] == m['eval_loss'] for m in read_jsonl(run/'metrics.jsonl') if 'eval_loss' in m)
    assert max(m['step'] for m in read_jsonl(run/'metrics.jsonl')) == 4  # the train step, not its NaN eval


# --- 5. weights checked by content --------------------------------------------------------------------------

def test_a_checkpoint_with_missing_tensors_is_refused(data, finished, tmp_path, capsys):
    "A well-formed safetensors file with two tensors missing resumed with them re-initialised at random."
    from safetensors.torch import load_file, save_file
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    w = run/'checkpoints'/'step-4'/'model.safetensors'
    tensors = load_file(w)
    gone = sorted(tensors)[:2]
    save_file({k: v for k, v in tensors.items() if k not in gone}, w, metadata={'format': 'pt'})
    code, err = cli(capsys, 'train', data, '--out', run, '--resume', '--max-steps', 6, '--batch-size', 4,
                    '--grad-accum', 1, '--lr', 3e-3, '--n-eval-samples', 0, '--save-every', 2,
                    '--eval-every', 100, '--wandb', 'disabled', '--no-progress')
    assert code == 2 and str(w) in err and all(k in err for k in gone), err
    assert steps(run) == [1, 2, 3, 4]


def test_a_model_folder_with_an_unexpected_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    from alpaca_ft.model import load_model, save_tiny_model
    save_tiny_model(tmp_path/'tiny', layers=1, hidden=32)
    w = tmp_path/'tiny'/'model.safetensors'
    save_file({**load_file(w), 'extra.weight': torch.zeros(2)}, w, metadata={'format': 'pt'})
    with pytest.raises(ValueError, match='model.safetensors: unexpected tensors extra.weight'):
        load_model(tmp_path/'tiny', device='cpu')


# --- 7. a full disk, named ----------------------------------------------------------------------------------

def test_a_full_disk_while_checkpointing_is_named(data, tmp_path, monkeypatch, capsys):
    "torch reports a full disk as 'unexpected pos' (exit 1); the run stops with exit 2 naming the full disk."
    import alpaca_ft.data as D, alpaca_ft.train as T
    real_save = torch.save
    def full(obj, f, *a, **kw):  # what torch.save does when the disk fills: a RuntimeError of its own words
        real_save({}, f)
        raise RuntimeError('[enforce fail at inline_container.cc:626] . unexpected pos 1024 vs 960')
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(T.torch, 'save', full)
    monkeypatch.setattr(D.shutil, 'disk_usage', lambda p: usage._replace(free=4096))  # what is left: 4 KB
    run = tmp_path/'run'
    code, err = cli(capsys, 'train', data, '--out', run, '--max-steps', 2, '--batch-size', 4,
                    '--grad-accum', 1, '--n-eval-samples', 0, '--save-every', 2, '--wandb', 'disabled',
                    '--no-progress')
    assert code == 2 and f"{run/'checkpoints'/'step-2'}: No space left on device" in err, err
    assert not list((run/'checkpoints').iterdir())  # no half checkpoint
    assert status(run) == 'failed'


def test_an_unrelated_write_error_is_not_called_a_full_disk(data, tmp_path, monkeypatch):
    import alpaca_ft.train as T
    def broken(obj, f, *a, **kw): raise RuntimeError('some other failure')
    monkeypatch.setattr(T.torch, 'save', broken)
    with pytest.raises(RuntimeError, match='some other failure'):
        train(cfg(data, tmp_path/'run', max_steps=2))


# --- 2. signals ---------------------------------------------------------------------------------------------

def _children(pid) -> list[int]:
    try: return [int(c) for c in Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]
    except OSError: return []


def _group(pgid) -> list[int]:
    "The live (not zombie) processes of process group `pgid`."
    found = []
    for p in Path('/proc').iterdir():
        try: state, _, group = (p/'stat').read_text().rsplit(')', 1)[1].split()[:3]
        except (OSError, ValueError): continue
        if int(group) == pgid and state != 'Z': found.append(int(p.name))
    return found


@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='needs /proc to see the worker processes')
@pytest.mark.parametrize('sig, group, times', [(signal.SIGINT, True, 3), (signal.SIGTERM, True, 1),
                                               (signal.SIGTERM, False, 1)],
                         ids=['Ctrl-C to the group, 3 times', 'SIGTERM to the group',
                              'SIGTERM to the process'])
def test_a_signal_during_a_worker_pool_exits_130(tmp_path, sig, group, times):
    """`prepare --num-proc 2` stopped tokenizing on SIGTERM (what docker stop sends) and never exited. Ctrl-C
    in a terminal (SIGINT to every process of the group) hung about one time in two: the workers died of it
    too, the pool started new ones, and one of those was left behind waiting on the pool's queue lock, holding
    the command's output open. Now a worker takes these signals from its parent only (the pool's shutdown)."""
    from alpaca_ft.data import SAMPLE_DATA
    rows = json.loads(SAMPLE_DATA.read_text(encoding='utf-8'))
    src = tmp_path/'big.jsonl'
    # distinct rows: duplicates are dropped before tokenizing, and 130 rows would be done before the signal
    rows = [dict(r, instruction=f"{r['instruction']} ({i})") for i, r in enumerate(rows * 200)]
    src.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    for _ in range(times):
        args = [CLI, 'prepare', src, '--out', tmp_path/'out', '--num-proc', '2', '--wandb', 'disabled',
                '--no-progress']
        p = subprocess.Popen([str(a) for a in args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while len(_children(p.pid)) < 2 and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert p.poll() is None, 'prepare ended before its workers started: give it more rows'
            time.sleep(1)
            if group: os.killpg(p.pid, sig)
            else: p.send_signal(sig)
            out, err = p.communicate(timeout=120)  # until every process holding its output has ended
            left = _group(p.pid)
        finally:
            if p.poll() is None or _group(p.pid): os.killpg(p.pid, signal.SIGKILL)  # the old code's workers
        assert p.returncode == 130 and not left, err
        assert err.strip().splitlines()[-1] == 'alpaca_ft prepare: error: interrupted'
        assert 'Traceback' not in err
        assert not (tmp_path/'out').exists() and sorted(p.name for p in tmp_path.iterdir()) == ['big.jsonl']


def _alive(pid) -> bool:
    try: return (Path(f'/proc/{pid}/stat')).read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='needs /proc to see the worker processes')
def test_a_forked_worker_takes_signals_from_its_parent_only_and_ends_with_it(tmp_path):
    "The mechanism under the test above: signals from elsewhere are the command's; an orphan ends by itself."
    code = '''
import os, signal, sys, time
from alpaca_ft import cli
cli._ON_INTERRUPT.append('running')  # as inside `main`
os.register_at_fork(before=cli._hold_signals, after_in_parent=cli._release_signals,
                    after_in_child=cli._from_parent_only)  # as `main` does
def worker():
    pid = os.fork()
    if pid == 0:  # the fork's hooks have run
        print('ready', os.getpid(), flush=True)
        time.sleep(120)
        os._exit(0)
    return pid
a = worker()
sys.stdin.readline()  # the test has sent its signals to the worker
os.kill(a, signal.SIGTERM)  # as the pool's terminate() does
print(os.waitstatus_to_exitcode(os.waitpid(a, 0)[1]), worker(), flush=True)
os._exit(0)  # the command dies, its second worker left behind
'''
    p = subprocess.Popen([sys.executable, '-c', code], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        a = int(p.stdout.readline().split()[1])
        for sig in (signal.SIGINT, signal.SIGTERM): os.kill(a, sig)  # from elsewhere: a terminal, a scheduler
        time.sleep(1)
        assert _alive(a)
        p.stdin.write('go\n')
        p.stdin.flush()
        lines = sorted([p.stdout.readline().split(), p.stdout.readline().split()])  # 'ready B' comes last
        (code, b), ready = map(int, lines[0]), lines[1]
        assert ready == ['ready', str(b)]
        assert code == 143 and p.wait(timeout=60) == 0
        deadline = time.monotonic() + 60
        while _alive(b) and time.monotonic() < deadline: time.sleep(0.1)
        assert not _alive(b), 'an orphaned worker stayed'
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass


def test_signals_are_held_back_in_a_critical_section():
    """In a fresh process: libraries imported by earlier tests (TRL, accelerate) may have put SIGINT handlers of
    their own in this one."""
    code = textwrap.dedent('''
        import signal
        from alpaca_ft.train import signals_deferred
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
        done = []
        try:
            with signals_deferred():
                signal.raise_signal(signal.SIGINT)
                done.append('the rest of the block ran')
        except KeyboardInterrupt: print('interrupted after', done)
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "interrupted after ['the rest of the block ran']", out.stdout + out.stderr[-2000:]


def test_an_interrupt_in_a_finaliser_is_delivered_after_it():
    "A KeyboardInterrupt raised inside __del__ is printed and dropped: the run would go on."
    code = '''
import os, signal, sys, time
from alpaca_ft import cli
signal.signal(signal.SIGTERM, cli._interrupt)
class Slow:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)  # the signal arrives in here
try:
    Slow()
    time.sleep(10)
    print('not interrupted')
except KeyboardInterrupt: print('interrupted after the finaliser')
'''
    r = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == 'interrupted after the finaliser', r.stderr
    assert 'Exception ignored' not in r.stderr


def test_an_overwrite_killed_while_setting_aside_is_finished_by_the_next(data, finished, tmp_path):
    "SIGKILL between two renames: half the old run aside. --resume says so; the next --overwrite ends it."
    run = tmp_path/'run'
    shutil.copytree(finished, run)
    (run/REPLACED).mkdir()
    for name in (RUN_MARKER, 'metrics.jsonl'): (run/name).rename(run/REPLACED/name)
    with pytest.raises(FileExistsError, match='a run with overwrite=True was stopped before it began'):
        train(cfg(data, run, resume=True))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, run, overwrite=True, lr=1e-3), on_step=interrupt_at(1))
    old = sorted(p.name for p in finished.iterdir() if p.name != '.lock')
    assert sorted(p.name for p in (run/REPLACED).iterdir()) == old
    assert status(run) == 'interrupted'


def _killed_at_the_end(finished, run, recorded:bool):
    "The folder an --overwrite leaves when SIGKILLed after writing final/: before or after recording it."
    shutil.copytree(finished, run)
    shutil.copytree(finished, run/REPLACED)
    old = json.loads((run/REPLACED/RUN_MARKER).read_text())
    (run/REPLACED/RUN_MARKER).write_text(json.dumps({**old, 'config': {**old['config'], 'lr': 0.1}}))
    if recorded: shutil.rmtree(run/REPLACED/'checkpoints')  # killed while deleting the old run
    else:
        info = json.loads((run/RUN_MARKER).read_text())
        (run/RUN_MARKER).write_text(json.dumps({**info, 'status': 'running', 'final': None}))
        (run/'loss.png').unlink()  # written after final/, before run.json


@pytest.mark.parametrize('recorded', [False, True], ids=['final/ not recorded', 'old run half deleted'])
def test_an_overwrite_killed_at_its_end_is_finished_by_the_next_train(data, finished, tmp_path, recorded,
                                                                      caplog):
    "SIGKILL after final/: replaced-run/ stayed for ever, --resume refused, and --overwrite deleted final/."
    run = tmp_path/'run'
    _killed_at_the_end(finished, run, recorded)
    with pytest.raises(FileExistsError, match="exists; pass resume=True"):  # a plain train: taken
        train(cfg(data, run))
    assert status(run) == 'finished' and not (run/REPLACED).exists()  # but the swap is finished first
    assert json.loads((run/RUN_MARKER).read_text())['final'] == 'final' and (run/'loss.png').is_file()
    assert (run/'final'/'model.safetensors').is_file() and steps(run) == [1, 2, 3, 4]
    said = [r.getMessage() for r in caplog.records if 'killed at its end' in r.getMessage()]
    assert len(said) == 1 and ('recorded as finished' in said[0]) != recorded and str(run/REPLACED) in said[0]


def test_an_overwrite_killed_at_its_end_then_resume_on_the_command_line(data, finished, tmp_path, capsys):
    run = tmp_path/'run'
    _killed_at_the_end(finished, run, recorded=False)
    code, err = cli(capsys, 'train', data, '--out', run, '--resume', '--max-steps', 4, '--batch-size', 4,
                    '--grad-accum', 1, '--lr', 3e-3, '--n-eval-samples', 0, '--save-every', 2,
                    '--eval-every', 100, '--wandb', 'disabled', '--no-progress')
    lines = err.strip().splitlines()
    assert code == 2 and 'the run is at step 4 already' in lines[-1], err  # a finished run: nothing to resume
    assert len(lines) == 2 and 'recorded as finished, and the run it replaced is deleted now' in lines[0]
    assert status(run) == 'finished' and not (run/REPLACED).exists()


def test_an_unfinished_replacement_is_left_for_resume(data, finished, tmp_path):
    "No final/: the new run had not finished; nothing is decided for it, --resume continues it as before."
    from alpaca_ft.train import recover_swap
    run = tmp_path/'run'
    _killed_at_the_end(finished, run, recorded=False)
    shutil.rmtree(run/'final')
    assert recover_swap(run) is None and (run/REPLACED/RUN_MARKER).is_file() and status(run) == 'running'


def test_a_run_folder_spelled_with_a_tilde_is_checked_where_written(data, finished, tmp_path, monkeypatch):
    "`--out ~/run`: one spelling checked, another written; now both are $HOME/run."
    monkeypatch.setenv('HOME', str(tmp_path))
    shutil.copytree(finished, tmp_path/'run')
    with pytest.raises(FileExistsError, match='exists; pass resume=True'):
        train(cfg(data, '~/run', max_steps=1))
    assert status(tmp_path/'run') == 'finished'

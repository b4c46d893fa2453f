"""The `alpaca_ft` command's contract: options passed by keyword, `train` options built from
`TrainConfig`, and every failure one line `alpaca_ft CMD: error: ...` with exit 2 (bad input), 1 (internal
error) or 130 (Ctrl-C), never a traceback unless `--debug`.

Cheap cases run the real console script in a subprocess; the rest call `main([...])` in-process with
the command's function patched, so that no model is built.
"""
from __future__ import annotations
import contextlib, dataclasses, io, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

from alpaca_ft import cli
from alpaca_ft.cli import main, parser

REPO = Path(__file__).resolve().parents[1]


def cli_cmd() -> list[str]:
    exe = Path(sys.executable).parent/'alpaca_ft'
    if exe.exists(): return [str(exe)]
    return [sys.executable, '-c', 'import sys; from alpaca_ft.cli import main; sys.exit(main())']


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, 'WANDB_SILENT': 'true', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false', 'MPLBACKEND': 'Agg'}
    return subprocess.run(cli_cmd() + [str(a) for a in args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def call(*args) -> tuple[int, str, str]:
    "`main(args)` in-process: exit code, stdout, stderr."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def one_error_line(stderr:str, command:str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert 'Traceback' not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f'alpaca_ft {command}: error: '), lines[0]
    return lines[0]


# ---------------------------------------------------------------- the real command (subprocess)

def test_bad_input_file_is_one_line_exit_2(tmp_path):
    rows = ['{"instruction": "a", "output": "b"}', '{"instruction": "c", "output": 3}']
    (tmp_path/'bad.jsonl').write_text('\n'.join(rows) + '\n')
    p = run('prepare', tmp_path/'bad.jsonl', '--out', tmp_path/'out', '--wandb', 'disabled')
    assert p.returncode == 2
    assert "bad.jsonl, line 2: field 'output' must be a string" in one_error_line(p.stderr, 'prepare')
    assert not (tmp_path/'out').exists()


def test_bad_option_value_is_one_line_exit_2(tmp_path):
    p = run('prepare', '--out', tmp_path/'out', '--max-seq-len', 'many')
    assert p.returncode == 2
    assert "--max-seq-len: invalid int value: 'many'" in one_error_line(p.stderr, 'prepare')


def test_debug_shows_the_traceback(tmp_path):
    p = run('prepare', tmp_path/'missing.jsonl', '--out', tmp_path/'out', '--debug')
    assert p.returncode == 2
    assert 'Traceback (most recent call last)' in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith('alpaca_ft prepare: error: ')
    assert 'missing.jsonl' in p.stderr


@pytest.mark.parametrize('args, msg', [(['--layers', '0'], '--layers must be at least 1'),
                                       (['--hidden', '30'], '--hidden must be a positive multiple of 8'),
                                       (['--hidden', '0'], '--hidden must be a positive multiple of 8')])
def test_tiny_model_refuses_impossible_shapes_before_work(tmp_path, args, msg):
    p = run('tiny-model', tmp_path/'tiny', *args)
    assert p.returncode == 2
    assert msg in one_error_line(p.stderr, 'tiny-model')
    assert not (tmp_path/'tiny').exists() and list(tmp_path.iterdir()) == []


def test_help_lists_commands_quickly_without_torch():
    "`alpaca_ft --help` builds no command's options, so it does not import torch (checked in-process)."
    code = ('import sys, contextlib, io\nfrom alpaca_ft.cli import main\n'
            'with contextlib.redirect_stdout(io.StringIO()) as out: rc = main(["--help"])\n'
            'print(rc, "torch" in sys.modules, "train" in out.getvalue())')
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert p.stdout.split() == ['0', 'False', 'True'], p.stdout + p.stderr


# ---------------------------------------------------------------- exit codes, in-process

@pytest.fixture
def patched(monkeypatch):
    "Replace a command's function by one that raises `exc`."
    def patch(command, exc):
        add, _ = cli.COMMANDS[command]
        def boom(a): raise exc
        monkeypatch.setitem(cli.COMMANDS, command, (add, boom))
    return patch


@pytest.mark.parametrize('exc, code, text', [
    (FileExistsError('runs/a exists; pass --overwrite to replace it'), 2, 'runs/a exists'),
    (FileNotFoundError(2, 'No such file or directory', 'data/rows.jsonl'), 2, 'data/rows.jsonl: No such'),
    (OSError(28, 'No space left on device'), 2, 'No space left on device while writing'),
    (RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                  'on device" })'), 2, 'No space left on device while writing'),  # safetensors' SafetensorError
    (PermissionError(13, 'Permission denied', '/root/x'), 2, '/root/x: Permission denied'),
    (json.JSONDecodeError('Expecting value', 'x', 0), 2, 'Expecting value'),
    (ValueError('lr must be finite and > 0, got inf'), 2, 'lr must be finite'),
    (RuntimeError('CUDA error:\nbad access'), 1, 'internal error: RuntimeError: CUDA error: bad access'),
    (KeyError('input_ids'), 1, "internal error: KeyError: 'input_ids'"),
    (KeyboardInterrupt(), 130, 'interrupted'),
])
def test_every_failure_is_one_line_with_its_exit_code(patched, tmp_path, exc, code, text):
    patched('prepare', exc)
    rc, _, err = call('prepare', '--out', tmp_path/'out')
    assert rc == code
    assert text in one_error_line(err, 'prepare')


def test_internal_error_points_to_debug(patched, tmp_path):
    patched('demo', ZeroDivisionError('division by zero'))
    rc, _, err = call('demo', tmp_path/'d')
    assert rc == 1 and '--debug' in one_error_line(err, 'demo')


def test_ctrl_c_with_debug_shows_where(patched, tmp_path):
    patched('demo', KeyboardInterrupt())
    rc, _, err = call('demo', tmp_path/'d', '--debug')
    assert rc == 130 and 'Traceback' in err
    assert err.strip().splitlines()[-1] == 'alpaca_ft demo: error: interrupted'


def test_ctrl_c_in_the_real_command(tmp_path):
    "A real SIGINT while a command runs: one line, exit 130 (the command blocks until it is interrupted)."
    code = ('import sys, signal, os, threading\nfrom alpaca_ft import cli\n'
            'def wait(a):\n    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()\n'
            '    threading.Event().wait(60)\n'
            'cli.COMMANDS["demo"] = (cli.COMMANDS["demo"][0], wait)\n'
            'sys.exit(cli.main(["demo", sys.argv[1]]))')
    p = subprocess.run([sys.executable, '-c', code, str(tmp_path/'d')], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 130
    assert one_error_line(p.stderr, 'demo') == 'alpaca_ft demo: error: interrupted'


# ---------------------------------------------------------------- options reach the functions by keyword

def test_prepare_options_reach_prepare_by_keyword(monkeypatch, tmp_path):
    import alpaca_ft.prepare
    got = {}
    def fake(*args, **kw):
        assert not args, f'positional arguments: {args}'
        got.update(kw)
    monkeypatch.setattr(alpaca_ft.prepare, 'prepare', fake)
    rc, _, err = call('prepare', 'a.jsonl', 'b.csv', '--out', tmp_path/'o', '--pack', 'greedy',
                      '--max-seq-len', '64', '--eval-size', '0.2', '--template', 'chat', '--train-turns', 'last',
                      '--overlong', 'drop',
                      '--wandb', 'disabled', '--train-on-inputs', '--overwrite', '--seed', '7',
                      '--num-proc', '2', '--no-progress', '--keep-duplicates', '--weights', '0.7', '0.3',
                      '--weight-by', 'tokens')
    assert rc == 0, err
    assert got == dict(data=['a.jsonl', 'b.csv'], out=str(tmp_path/'o'), tokenizer=None, max_seq_len=64,
                       eval_size=0.2, seed=7, pack_strategy='greedy', train_on_inputs=True, template='chat',
                       train_turns='last', overlong='drop', num_proc=2, wandb='disabled', wandb_project='alpaca_ft',
                       overwrite=True, progress=False, dedup=False, weights=[0.7, 0.3],
                       weight_by='tokens')
    assert call('prepare', '--out', tmp_path/'o')[0] == 0 and got['progress'] is True  # bars by default
    assert got['data'] is None and got['dedup'] is True  # no file: the bundled sample
    assert got['weight_by'] == 'rows'


def test_generate_and_demo_options_by_keyword(monkeypatch, tmp_path):
    import alpaca_ft.generate, alpaca_ft.demo
    calls = []
    def answer(*a, **kw):
        calls.append((a, kw))
        return 'answer'
    monkeypatch.setattr(alpaca_ft.generate, 'generate_answer', answer)
    monkeypatch.setattr(alpaca_ft.demo, 'demo', lambda *a, **kw: calls.append((a, kw)))
    rc, out, _ = call('generate', 'm', '--instruction', 'Say hi', '--input', 'x', '--max-new-tokens', '5')
    assert rc == 0 and out.strip() == 'answer'
    assert calls[0] == (('m',), dict(instruction='Say hi', input='x', prompt=None, max_new_tokens=5))
    assert call('demo', tmp_path/'d', '--max-steps', '3', '--wandb', 'disabled')[0] == 0
    assert calls[1] == ((str(tmp_path/'d'),), dict(max_steps=3, overwrite=False, wandb='disabled',
                                                    progress=True, model='tiny'))
    assert call('demo', tmp_path/'d', '--no-progress')[0] == 0 and calls[2][1]['progress'] is False


@pytest.mark.parametrize('args, msg', [(['generate', 'm', '--prompt', 'p', '--input', 'x'],
                                        '--input goes with'),
                                       (['generate', 'm', '--instruction', 'i', '--max-new-tokens', '0'],
                                        '--max-new-tokens must be at least 1'),
                                       (['demo', 'd', '--max-steps', '0'], '--max-steps must be at least 1')])
def test_options_checked_before_work(monkeypatch, args, msg):
    import alpaca_ft.generate, alpaca_ft.demo
    def never(*a, **kw): raise AssertionError('work started')
    monkeypatch.setattr(alpaca_ft.generate, 'generate_answer', never)
    monkeypatch.setattr(alpaca_ft.demo, 'demo', never)
    rc, _, err = call(*args)
    assert rc == 2 and msg in one_error_line(err, args[0])


# ---------------------------------------------------------------- train options from TrainConfig

@pytest.fixture(scope='module')
def train_parser():
    from alpaca_ft.train import TrainConfig
    ap = parser('train')
    return TrainConfig, ap._subparsers._group_actions[0].choices['train']


def test_train_has_one_option_per_config_field_with_its_help(train_parser):
    TrainConfig, p = train_parser
    actions = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in actions, f'no option for TrainConfig.{f.name}'
        assert f.metadata.get('help') and f.metadata['help'] in (actions[f.name].help or ''), f.name
        if 'choices' in f.metadata:
            assert list(actions[f.name].choices) == list(f.metadata['choices']), f.name


def test_train_options_parse_to_config_values(train_parser):
    TrainConfig, p = train_parser
    a = p.parse_args(['data', '--out', 'run'])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    # the same values, but W&B: the command logs offline by default, the Python API not at all
    assert TrainConfig(**{k: v for k, v in vars(a).items() if k in names}) == TrainConfig('data', 'run', wandb='offline')
    a = p.parse_args(['data', '--out', 'run', '--compile', '--no-freeze-embed', '--grad-clip', 'none',
                      '--max-steps', '5', '--lr', '1e-3', '--resume'])
    got = (a.compile, a.freeze_embed, a.grad_clip, a.max_steps, a.lr, a.resume)
    assert got == (True, False, None, 5, 1e-3, True)
    assert p.parse_args(['d', '--out', 'r', '--no-compile']).compile is False
    assert p.parse_args(['d', '--out', 'r']).compile is None


def test_train_reaches_train_with_a_config(monkeypatch, tmp_path):
    import alpaca_ft.train
    got = []
    monkeypatch.setattr(alpaca_ft.train, 'train', lambda cfg: got.append(cfg))
    rc, _, err = call('train', tmp_path/'data', '--out', tmp_path/'run', '--batch-size', '3', '--no-progress')
    assert rc == 0, err
    want = alpaca_ft.train.TrainConfig(str(tmp_path/'data'), str(tmp_path/'run'), batch_size=3,
                                       progress=False, wandb='offline')  # the command's W&B default
    assert got[0] == want


def test_train_bad_option_value_is_one_line(tmp_path):
    rc, _, err = call('train', tmp_path/'data', '--out', tmp_path/'run', '--grad-clip', 'lots')
    assert rc == 2 and "--grad-clip: invalid float value: 'lots'" in one_error_line(err, 'train')


# ---------------------------------------------------------------- shared choices and --overwrite help

def test_wandb_choices_are_the_tracking_modes():
    from alpaca_ft.tracking import WANDB_MODES
    ap = parser()
    for name, p in ap._subparsers._group_actions[0].choices.items():
        for a in p._actions:
            if a.dest == 'wandb': assert tuple(a.choices) == WANDB_MODES, name


def test_overwrite_help_says_only_what_alpaca_ft_made():
    ap = parser()
    with_overwrite = 0
    for name, p in ap._subparsers._group_actions[0].choices.items():
        for a in p._actions:
            if a.dest == 'overwrite':
                with_overwrite += 1
                assert a.help and 'only if alpaca_ft' in a.help, (name, a.help)
    assert with_overwrite == 5  # prepare, train, tiny-model, demo, judge


def test_ctrl_c_while_building_the_options(monkeypatch):
    "Ctrl-C before the command starts (the train options import torch): still one line and exit 130."
    def interrupted(sub): raise KeyboardInterrupt
    monkeypatch.setitem(cli.COMMANDS, 'train', (interrupted, cli.COMMANDS['train'][1]))
    rc, _, err = call('train', 'data', '--out', 'run')
    assert rc == 130 and one_error_line(err, 'train') == 'alpaca_ft train: error: interrupted'

"""`alpaca_ft` as another project uses it: only its public names, each check in a fresh Python process started
in an empty folder outside this repository, and every Python recipe of the README run as written.

The README is generated from `nbs/index.ipynb` (`python scripts/make_readme.py`); a recipe is a fenced code block
of Python that imports `alpaca_ft`.
"""
from __future__ import annotations
import json, os, re, subprocess, sys, textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def env() -> dict:
    "This checkout first on the path, W&B and the Hub offline, the cache in the test's folder."
    e = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
         'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    for k in ('WANDB_MODE', 'WANDB_DIR', 'WANDB_SILENT'): e.pop(k, None)
    return e


def run_python(code:str, cwd:Path, timeout:int=600) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter in `cwd`; fail with its output if it fails."
    p = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env(), capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f'exit {p.returncode}\n--- code\n{code}\n--- stdout\n{p.stdout[-3000:]}\n' \
                              f'--- stderr\n{p.stderr[-5000:]}'
    return p


def test_import_changes_nothing_and_shows_only_public_names(tmp_path):
    "`import alpaca_ft`: no heavy import, no file, no environment variable, no log handler; a clean `dir()`."
    code = textwrap.dedent('''
        import json, logging, os, sys
        env, handlers = dict(os.environ), len(logging.getLogger().handlers)
        import alpaca_ft
        heavy = [m for m in ('torch', 'transformers', 'datasets', 'wandb') if m in sys.modules]
        print(json.dumps({'heavy': heavy, 'env': dict(os.environ) == env, 'files': os.listdir('.'),
                          'handlers': len(logging.getLogger().handlers) == handlers,
                          'private': [n for n in dir(alpaca_ft) if n.startswith('_') and n != '__version__'],
                          'all': alpaca_ft.__all__, 'file': alpaca_ft.__file__}))
    ''')
    got = json.loads(run_python(code, tmp_path).stdout.strip().splitlines()[-1])
    assert Path(got['file']).parent == REPO/'alpaca_ft', got['file']
    assert got['heavy'] == [] and got['env'] and got['handlers'] and got['files'] == [], got
    assert got['private'] == [], got['private']
    assert {'prepare_dataset', 'fine_tune', 'generate_answer', 'TrainConfig', 'limit_length'} <= set(got['all'])


def test_help_shows_every_parameter_and_names_match(tmp_path):
    "`help()` of the main functions and of TrainConfig documents each parameter; `__name__` is the public name."
    code = textwrap.dedent('''
        import dataclasses, inspect, json, pydoc
        import alpaca_ft
        report = {}
        for name in alpaca_ft.__all__:
            obj = getattr(alpaca_ft, name)
            text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
            params = ([f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
                      else list(inspect.signature(obj).parameters) if inspect.isfunction(obj) else [])
            doc = obj.__doc__ or ''
            report[name] = {'name': obj.__name__, 'undocumented': [p for p in params if f'\\n{p}\\n    ' not in doc],
                            'in_help': all(p in text for p in params)}
        print(json.dumps(report))
    ''')
    report = json.loads(run_python(code, tmp_path).stdout.strip().splitlines()[-1])
    for name, r in report.items():
        assert r['name'] == name, f'alpaca_ft.{name}.__name__ is {r["name"]!r}'
        assert r['in_help'], name
    for name in ('prepare_dataset', 'fine_tune', 'generate_answer', 'TrainConfig'):
        assert report[name]['undocumented'] == [], (name, report[name]['undocumented'])


def test_the_package_ships_its_license_and_type_marker():
    assert (REPO/'alpaca_ft'/'py.typed').is_file()
    text = (REPO/'LICENSE').read_text(encoding='utf-8')
    assert 'Apache License' in text and 'Version 2.0' in text
    assert 'py.typed' in (REPO/'setup.py').read_text(encoding='utf-8')
    assert 'LICENSE' in (REPO/'MANIFEST.in').read_text(encoding='utf-8')


def readme_recipes() -> list[tuple[str, str]]:
    "`(title, code)` of each fenced Python block of README.md that imports alpaca_ft, named by its section."
    text = (REPO/'README.md').read_text(encoding='utf-8')
    out, section = [], 'top'
    for m in re.finditer(r'^## ([^\n]+)$|^```(\w*)\n(.*?)^```', text, flags=re.M | re.S):
        if m.group(1): section = m.group(1).strip()
        elif m.group(2) in ('', 'python') and re.search(r'^(import|from) .*\balpaca_ft\b', m.group(3), re.M):
            out.append((f'{section} #{sum(t.startswith(section) for t, _ in out) + 1}', m.group(3)))
    return out


RECIPES = readme_recipes()


def test_the_readme_has_its_recipes():
    titles = ' | '.join(t for t, _ in RECIPES)
    assert len(RECIPES) >= 4, titles
    assert any('SFTTrainer' in c for _, c in RECIPES) and any('Trainer(' in c for _, c in RECIPES), titles
    assert any('template=' in c and 'DataFrame' in c for _, c in RECIPES), titles


def test_the_readme_is_made_from_the_index_notebook():
    p = subprocess.run([sys.executable, str(REPO/'scripts'/'make_readme.py'), '--check'], capture_output=True,
                       text=True, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize('title, code', RECIPES, ids=[t for t, _ in RECIPES])
def test_readme_recipe_runs_as_written(title, code, tmp_path):
    "Each recipe, as written, in a fresh process in an empty folder (the README's blocks follow on each other"
    " only through `import alpaca_ft`, which each has)."
    if 'from trl' in code:
        pytest.importorskip('trl', reason='the TRL recipe needs trl (pip install trl, or alpaca_ft[dev])')
    run_python(code, tmp_path)
    assert not (tmp_path/'wandb').exists(), 'W&B wrote into the working folder'

"""Build the docs site offline into `_docs/`: execute the notebooks, process them with nbdev, render with mkdocs.

1. Execute every notebook in `nbs/` from `nbs/` (execnb's shell, one fresh process per notebook, as `nbdev_test`
   does; cells flagged `notest`/`slow` or `eval: false` are skipped) into `_build/exec/`. A notebook is executed
   again only when it, the library (`alpaca_ft/**/*.py`) or the presence of `$ALPACA_FT_SHARED` changed, or when it
   raised last time. Executed, cached and processed notebooks whose source is gone from `nbs/` are deleted.
2. Run nbdev's own docs processing on each executed notebook into `_proc/` (what `nbdev.serve.proc_nbs`, the step
   `nbdev_docs` runs before Quarto, does per notebook: `#| hide` cells removed, `#| export` cells shown as code, a
   `show_doc` block for every exported function). Cached in `_build/proc/`.
3. Do what Quarto would do with nbdev's output (front matter -> title, `echo: false` -> hidden input, show_doc
   markdown -> HTML, links into nbdev's Quarto site -> this site's pages), then render `_proc/` with
   mkdocs-material + mkdocs-jupyter (`mkdocs.yml`) into `_docs/`.

Nothing tracked is changed: no `nbs/nbdev.yml` rewrite, no `nbs/sidebar.yml` (those are nbdev_docs' own steps).
Usage: python scripts/docs.py [--jobs N] [--force] [--no-execute] [--allow-errors]   (or: bash scripts/docs.sh ...)"""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, tempfile, time
from itertools import dropwhile, takewhile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, BUILD, PROC, SITE = ROOT/'nbs', ROOT/'_build', ROOT/'_proc', ROOT/'_docs'
SKIP_FLAGS = {'notest', 'slow'}
KEY_VERSION = 'docs-v1'


def notebooks() -> list[Path]:
    "The notebooks of the site, in site order: `index` first, then by file name (the notebooks' own order)."
    nbs = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    return sorted(nbs, key=lambda p: (p.stem != 'index', p.name))


def source_key(nb:Path) -> str:
    "What an executed notebook depends on: its own text, the library's code, and whether shared/ is there."
    h = hashlib.sha256(KEY_VERSION.encode())
    h.update(nb.read_bytes())
    for p in sorted((ROOT/'alpaca_ft').rglob('*.py')): h.update(p.name.encode() + p.read_bytes())
    shared = os.environ.get('ALPACA_FT_SHARED', str(ROOT.parent/'shared'))
    h.update(f'shared={Path(shared).is_dir()}'.encode())
    return h.hexdigest()


def _directives(src:str) -> set[str]:
    out = set()
    for line in src.splitlines():
        m = re.match(r'\s*#\|\s*(.*)', line)
        if not m: break
        out.update(w.rstrip(':') for w in m.group(1).replace(',', ' ').split())
        if re.match(r'\s*#\|\s*eval:\s*false', line, re.I): out.add('eval-false')
    return out


def execute(src:str, dest:str, key:str):
    "Execute notebook `src` into `dest`, outputs kept; a cell that raises stops it and is recorded in its metadata."
    os.environ['IN_TEST'] = '1'
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    src = Path(src)
    nb = read_nb(src)
    def skip(cell):
        if cell.cell_type != 'code': return True
        d = _directives(cell.source)
        return bool(d & SKIP_FLAGS) or 'eval-false' in d
    t0, err = time.time(), None
    k = CaptureShell(src)
    with working_directory(src.parent):  # nbs/, as under nbdev_test and Jupyter (what notebooks write: nbs/tmp/)
        try: k.run_all(nb, exc_stop=True, preproc=skip)
        except Exception: err = k.prettytb(fname=src)
    nb.metadata['alpaca_ft_docs'] = {'key': key, 'error': err, 'seconds': round(time.time() - t0, 1)}
    write_nb(nb, dest)


def _execute_in_subprocess(t:tuple[Path, Path, str]) -> tuple[str, float, str|None]:
    "One fresh Python per notebook, as a reader's kernel would be."
    src, dest, key = t
    r = subprocess.run([sys.executable, __file__, '--execute-one', str(src), str(dest), key],
                       capture_output=True, text=True)
    if r.returncode or not dest.exists():
        return src.name, 0.0, f'executing {src.name} failed:\n{r.stdout}{r.stderr}'
    meta = json.loads(dest.read_text())['metadata']['alpaca_ft_docs']
    return src.name, meta.get('seconds', 0.0), meta['error']


def prune_stale(nbs:list[Path]) -> list[Path]:
    "Delete executed, cached and processed notebooks whose source notebook is gone (renamed or removed)."
    names, gone = {nb.name for nb in nbs}, []
    for folder in (BUILD/'exec', BUILD/'proc', PROC):
        if not folder.is_dir(): continue
        for f in sorted(folder.iterdir()):
            name = f.name[:-len('.key')] if f.name.endswith('.ipynb.key') else f.name
            if f.is_file() and name.endswith('.ipynb') and name not in names:
                f.unlink()
                gone.append(f)
    return gone


def execute_all(nbs:list[Path], jobs:int, force:bool) -> list[str]:
    (BUILD/'exec').mkdir(parents=True, exist_ok=True)
    todo, errors = [], []
    for nb in nbs:
        dest, key = BUILD/'exec'/nb.name, source_key(nb)
        meta = json.loads(dest.read_text()).get('metadata', {}).get('alpaca_ft_docs', {}) if dest.exists() else {}
        if force or meta.get('key') != key or meta.get('error'): todo.append((nb, dest, key))
    print(f'executing {len(todo)} of {len(nbs)} notebooks ({jobs} at a time)', flush=True)
    if todo:
        # longest first, so two workers finish together
        todo.sort(key=lambda t: -t[0].stat().st_size)
        with ThreadPoolExecutor(jobs) as ex:
            for name, secs, err in ex.map(_execute_in_subprocess, todo):
                print(f'  {name:28s} {secs:6.1f} s' + ('  ERROR' if err else ''), flush=True)
                if err: errors.append(f'{name}:\n{err}')
    return errors


def process_one(src:str, dest:str):
    "nbdev's docs processing of one notebook: exactly what `nbdev.serve.proc_nbs` runs for each `.ipynb`."
    import nbdev.serve_drv
    from nbdev.processors import FilterDefaults
    nbdev.serve_drv.main((Path(src), Path(dest), FilterDefaults))


def _process_in_subprocess(t:tuple[Path, Path]) -> str|None:
    "Process `src` into `dest`, reusing `_build/proc/` when the executed notebook is unchanged."
    src, dest = t
    key = hashlib.sha256(KEY_VERSION.encode() + src.read_bytes()).hexdigest()
    cached, stamp = BUILD/'proc'/src.name, BUILD/'proc'/(src.name + '.key')
    if cached.exists() and stamp.exists() and stamp.read_text() == key:
        shutil.copy2(cached, dest)
        return None
    r = subprocess.run([sys.executable, __file__, '--process-one', str(src), str(dest)], capture_output=True, text=True)
    if r.returncode == 0 and dest.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dest, cached)
        stamp.write_text(key)
        return None
    tail = (r.stdout + r.stderr).strip().splitlines()[-12:]
    return f'nbdev processing of {src.name} failed:\n' + '\n'.join(tail)


def process(nbs:list[Path], jobs:int) -> list[str]:
    "nbdev's docs processing of the executed notebooks into `_proc/` (one process per notebook, as proc_nbs does)."
    if PROC.exists(): shutil.rmtree(PROC)
    PROC.mkdir(parents=True)
    shutil.copy2(NBS/'styles.css', PROC/'styles.css')
    todo = [(BUILD/'exec'/nb.name, PROC/nb.name) for nb in nbs]
    with ThreadPoolExecutor(jobs) as ex: errs = list(ex.map(_process_in_subprocess, todo))
    errors = []
    for (src, dest), err in zip(todo, errs):
        if err is not None:
            errors.append(err)
            nb, title = json.loads(src.read_text()), 'This page could not be processed by nbdev'  # shown unprocessed
        else:
            nb, title = json.loads(dest.read_text()), 'This notebook raised an error when the site was built'
            err = json.loads(src.read_text())['metadata'].get('alpaca_ft_docs', {}).get('error')
        if err:
            msg = scrub_paths(err).replace('\n', '\n    ')  # no build-machine paths, even here
            nb['cells'].insert(0, {'cell_type': 'markdown', 'metadata': {}, 'id': 'docs-error',
                                   'source': f'!!! failure "{title}"\n    ```\n    {msg}\n    ```'})
            dest.write_text(json.dumps(nb, indent=1))
    return errors


def _page_of(stem:str, nbs:list[Path]) -> str|None:
    "Site page for nbdev's Quarto page name `stem` (`data` -> `00_data/`)."
    for nb in nbs:
        if re.sub(r'^\d+_', '', nb.stem) == stem: return '' if nb.stem == 'index' else nb.stem + '/'
    return None


_SOURCE_LINK = re.compile(r'\[source\]\(([^)\s]+)\)\{[^}]*\}')


def _text(v) -> str: return ''.join(v) if isinstance(v, list) else v


_TQDM = re.compile(r'\d+%\|.*\| *\d+/\d*|\?it/s\]')
# printed, not logged, by transformers' W&B integration on import when WANDB_MODE=offline: the build's setting
_NOISE = re.compile(r'^\[INFO\] Running in WANDB offline mode$')
_WARNING = re.compile(r'^\S.*:\d+: (\w*Warning): (.*)$', re.M)  # what warnings.warn writes to stderr
_HEADING_LINK = re.compile(r'\[([^\]]*)\]\([^)]*\)')
_SHOW_DOC_HEADING = re.compile(r'^#{2,4} (\S+)\s*$', re.M)


def show_doc_names(nbj:dict) -> set[str]:
    "The anchors of a processed notebook's API blocks (the names nbdev's links point at)."
    out = set()
    for c in nbj['cells']:
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md and 'show_doc' in _text(c['source']):
                out.update(m.group(1).replace('\\', '').lower() for m in _SHOW_DOC_HEADING.finditer(_text(md)))
    return out


def summary(nbj:dict) -> str|None:
    "The whole `> ...` summary under a notebook's title (nbdev's front matter keeps only its first line)."
    md = next((c for c in nbj['cells'] if c['cell_type'] == 'markdown'), None)
    if md is None or not _text(md['source']).lstrip().startswith('# '): return None
    body = dropwhile(lambda l: not l.strip(), _text(md['source']).strip().splitlines()[1:])
    return ' '.join(l[1:].strip() for l in takewhile(lambda l: l.startswith('>'), body)) or None


_NONE_DEFAULT = re.compile(r'(\w+):NoneType=None')
_CLASS_SIG = re.compile(r'def (\w+)\(\s*args:VAR_POSITIONAL, kwargs:VAR_KEYWORD\s*\):')
_DEF = re.compile(r'(```python\s*)def (\w+)\(')


def _class_bases(name:str, module:str|None) -> str|None:
    "`'ValueError'` for a class `name` of `module` whose bases are those; None where `name` is not a class there."
    import importlib, inspect
    try: obj = getattr(importlib.import_module(module), name) if module else None
    except Exception: return None
    if not inspect.isclass(obj): return None
    return ', '.join(b.__name__ for b in obj.__bases__ if b is not object)


def tidy_signature(md:str, module:str|None=None) -> str:
    """A show_doc signature as a reader expects it: `line=None`, not `line:NoneType=None` (a default without an
    annotation); a class as `class Name(Base)`, not as a function of `*args, **kwargs` (an exception) or `def`."""
    md = _NONE_DEFAULT.sub(r'\1=None', md)
    def cls(m):
        bases = _class_bases(m.group(1), module)
        return f'class {m.group(1)}({bases}):' if bases else f'class {m.group(1)}:'
    md = _CLASS_SIG.sub(cls, md)
    return _DEF.sub(lambda m: m.group(0) if _class_bases(m.group(2), module) is None
                    else f'{m.group(1)}class {m.group(2)}(', md)


_TMP = re.compile(re.escape(tempfile.gettempdir().rstrip('/')) + r'/[\w.-]+')


def scrub_paths(text:str) -> str:
    """No build-machine paths on the site: the checkout's `nbs/` and root, then the home folder, are made relative;
    a temporary folder (`/tmp/tmpab12cd`) is shown as `$TMP`; the shared data folder as `../shared`."""
    shared = Path(os.environ.get('ALPACA_FT_SHARED') or ROOT.parent/'shared')
    shared = [(str(p), '../shared') for p in dict.fromkeys([shared.resolve(), shared.absolute()])]
    for prefix, repl in ((f'{NBS}/', ''), (f'{ROOT}/', ''), *shared, (str(Path.home()), '~')):
        text = text.replace(prefix, repl)
    return _TMP.sub('$TMP', text)


def _module(nbj:dict) -> str|None:
    "The module a notebook exports to (`#| default_exp`), as an import name."
    for c in nbj['cells']:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', _text(c['source']), re.M)
        if m: return f'alpaca_ft.{m.group(1)}'
    return None


def code_fold(directives:list[str]) -> str|None:
    """The summary line of a cell folded with Quarto's `#| code-fold: true` (its `#| code-summary:`, default
    'Code'); None when the cell is not folded. nbdev adds `code-fold: show` to `#| exports` cells: shown open."""
    import yaml
    opts = {}
    for l in directives:
        m = re.match(r'#\|\s*(code-fold|code-summary):\s*(.*\S)', l)
        if m:
            try: opts[m.group(1)] = yaml.safe_load(m.group(2))
            except yaml.YAMLError: opts[m.group(1)] = m.group(2)
    if opts.get('code-fold') is not True: return None
    return str(opts.get('code-summary') or 'Code')


def folded_code(code:str, summary:str) -> str:
    "Markdown for `code` folded under `summary` (an HTML `<details>`; the fenced code inside is highlighted)."
    import html
    fence = '```'
    while fence in code: fence += '`'
    return (f'<details class="code-fold"><summary>{html.escape(summary)}</summary>\n\n'
            f'{fence}python\n{code}\n{fence}\n\n</details>')


def fig_alt(directives:list[str]) -> list[str]|None:
    """The texts of a cell's Quarto `#| fig-alt:` option (what a screen reader says for a plot), one per image:
    a YAML list for a cell that shows several, else the one text for all of them; None if it has none."""
    import yaml
    for l in directives:
        m = re.match(r'#\|\s*fig-alt:\s*(.*\S)', l)
        if m:
            try: v = yaml.safe_load(m.group(1))
            except yaml.YAMLError: v = m.group(1)
            return [str(a) for a in v] if isinstance(v, list) else [str(v)]
    return None


def img_with_alt(data:dict, meta:dict, alt:str) -> dict:
    """A PNG output as an `<img>` with `alt` (nbconvert's HTML has no way to take alt text from a cell: it writes
    'No description has been provided'); the width and height the kernel gave it kept."""
    import html
    size = meta.get('image/png', {})
    attrs = ''.join(f' {k}="{int(size[k])}"' for k in ('width', 'height') if k in size)
    png = _text(data.pop('image/png')).replace('\n', '')
    data.pop('text/plain', None)  # `<Figure size 700x300 with 1 Axes>`
    return {'text/html': f'<img src="data:image/png;base64,{png}" alt="{html.escape(alt)}"{attrs}>'}


def tidy_nb(nbj:dict, fix_links, description:str|None=None, module:str|None=None) -> dict:
    "Do to one processed notebook what Quarto does when it renders it (mkdocs knows no Quarto syntax)."
    cells = []
    for c in nbj['cells']:
        src = _text(c['source'])
        if c['cell_type'] == 'raw' and src.startswith('---'):  # Quarto front matter -> a title and a summary
            import yaml
            fm = yaml.safe_load(src.strip().strip('-')) or {}
            desc = description or fm.get('description')
            md = f"# {fm.get('title', '')}" + (f"\n\n> {desc}" if desc else '')
            cells.append({'cell_type': 'markdown', 'metadata': {}, 'id': c.get('id', 'title'), 'source': md})
            continue
        if c['cell_type'] == 'markdown':
            if src.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
            # nbdev links names in headings too; links and code in a heading break mkdocs-jupyter's table of contents
            src = '\n'.join(_HEADING_LINK.sub(r'\1', l).replace('`', '') if l.startswith('#') else l
                            for l in src.splitlines())
        if c['cell_type'] == 'code':
            lines = src.splitlines()
            direc = [l for l in lines if l.startswith('#|')]
            if any(re.match(r'#\|\s*echo:\s*false', l) for l in direc):
                c.setdefault('metadata', {}).setdefault('tags', []).append('hide-input')
            alt = fig_alt(direc)
            summary_ = code_fold(direc)
            if summary_ is not None:  # the input folded away under a summary line, its output shown
                c.setdefault('metadata', {}).setdefault('tags', []).append('hide-input')
                body = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
                cells.append({'cell_type': 'markdown', 'metadata': {}, 'id': f"{c.get('id', 'cell')}-fold",
                              'source': folded_code(body, summary_)})
            src = '\n'.join(l for l in lines if not l.startswith('#|')).strip('\n')
            outs = []
            for o in c.get('outputs', []):  # progress bars mean nothing on a static page
                if o.get('output_type') == 'stream':
                    o['text'] = ''.join(l for l in scrub_paths(_text(o['text'])).splitlines(True)
                                        if not (_TQDM.search(l) or _NOISE.match(l.strip())))
                    if not o['text']: continue
                outs.append(o)
            if 'outputs' in c: c['outputs'] = outs
            n_img = 0
            for o in c.get('outputs', []):
                data = o.get('data', {})
                data.pop('application/vnd.jupyter.widget-view+json', None)  # no widget JS on a static site
                if alt and 'image/png' in data:
                    data.update(img_with_alt(data, o.get('metadata', {}), alt[min(n_img, len(alt) - 1)]))
                    n_img += 1
                for mime in ('text/html', 'text/plain', 'text/markdown'):
                    if mime in data: data[mime] = scrub_paths(_text(data[mime]))
                if 'text/markdown' in data:
                    # no [source] links: the code is on the page, and the repository address may not exist
                    md = _SOURCE_LINK.sub('', _text(data['text/markdown']))
                    if 'show_doc' in src: md = tidy_signature(md, module)
                    if 'show_doc' in src:  # rendered here: mkdocs-jupyter's markdown misses the fenced signature
                        md = _SHOW_DOC_HEADING.sub(lambda m: f'<h3 id="{m.group(1).replace(chr(92), "").lower()}">'
                                                             f'{m.group(1).replace(chr(92), "")}</h3>', md)
                        import markdown
                        data['text/html'] = markdown.markdown(fix_links(md), extensions=['fenced_code', 'tables'])
                        data.pop('text/markdown')
                    else: data['text/markdown'] = fix_links(md)
                    data.pop('text/plain', None)  # show the markdown, not its plain twin
                for mime in ('text/html', 'text/plain'):
                    if mime in data: data[mime] = fix_links(_text(data[mime]))
        c['source'] = fix_links(src)
        cells.append(c)
    nbj['cells'] = cells
    nbj.get('metadata', {}).pop('widgets', None)  # nbdev saves widget state; it would load widget JS from a CDN
    return nbj


def shown_warnings(nbj:dict) -> list[str]:
    "The Python warnings a notebook's outputs show (`cell 8: UserWarning: ...`): library noise a reader should not see."
    out = []
    for i, c in enumerate(nbj['cells']):
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream':
                out += [f'cell {i}: {m.group(1)}: {m.group(2)[:120]}' for m in _WARNING.finditer(_text(o['text']))]
    return out


def tidy(nbs:list[Path], base:str):
    "Quarto's part, for mkdocs: front matter, hidden inputs, and nbdev's links into its Quarto site made local."
    pat = re.compile(re.escape(base.rstrip('/')) + r'/([\w.-]+)\.html(#[\w.-]*)?')
    loaded = {nb.stem: json.loads((PROC/nb.name).read_text()) for nb in nbs}
    anchors = {nb.stem: show_doc_names(loaded[nb.stem]) for nb in nbs}
    for nb in nbs:
        depth = '' if nb.stem == 'index' else '../'
        def fix(m):
            page = _page_of(m.group(1), nbs)
            if page is None: return m.group(0)
            frag = (m.group(2) or '').lower()
            if frag[1:] not in anchors[page.rstrip('/') or 'index']: frag = ''  # a name with no API block there
            return depth + page + frag
        executed = json.loads((BUILD/'exec'/nb.name).read_text())
        nbj = tidy_nb(loaded[nb.stem], lambda s: pat.sub(fix, s), summary(executed), _module(executed))
        (PROC/nb.name).write_text(json.dumps(nbj, indent=1))
        for w in shown_warnings(nbj): print(f'docs: WARNING: {nb.name} shows a Python warning, {w}', file=sys.stderr)


# The sidebar: (title, [(lo, hi), ...]): a notebook numbered lo <= n < hi goes in that section, in file-name order.
SECTIONS = (('Part 1: the dataset', [(0, 10)]),
            ('Part 2: fine-tuning', [(10, 20)]),
            ('Reference', [(20, 50), (90, 100)]),
            ('Appendix: engineering', [(50, 90)]))


def _number(nb:Path) -> int|None:
    m = re.match(r'(\d+)_', nb.stem)
    return int(m.group(1)) if m else None


def nav(nbs:list[Path]) -> list:
    """The sidebar: the home page, then Part 1 (00-09), Part 2 (10-19), Reference (20-49 and the 90s: the CLI, the
    differences from the article, the glossary) and Appendix: engineering (50-89), each in file-name order."""
    out = [{'Home': 'index.ipynb'}] if any(nb.stem == 'index' for nb in nbs) else []
    for title, ranges in SECTIONS:
        pages = [nb.name for nb in nbs
                 if _number(nb) is not None and any(lo <= _number(nb) < hi for lo, hi in ranges)]
        if pages: out.append({title: pages})
    return out


def site_order(nbs:list[Path]) -> list[Path]:
    "The notebooks in sidebar order (what a reader's 'next' button follows)."
    order = [n for d in nav(nbs) for pages in d.values() for n in ([pages] if isinstance(pages, str) else pages)]
    by_name = {nb.name: nb for nb in nbs}
    return [by_name[n] for n in order]


def render(nbs:list[Path]):
    "mkdocs.yml with the sidebar's sections added (written to _build/, so new notebooks need no edit there)."
    import yaml
    cfg = yaml.safe_load((ROOT/'mkdocs.yml').read_text())
    cfg.update(docs_dir=str(PROC), site_dir=str(SITE), nav=nav(nbs))
    BUILD.mkdir(exist_ok=True)
    (BUILD/'mkdocs.yml').write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--clean', '-q', '-f', str(BUILD/'mkdocs.yml')],
                   check=True, cwd=ROOT)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1), help='notebooks executed at once')
    ap.add_argument('--force', action='store_true', help='execute every notebook again')
    ap.add_argument('--no-execute', action='store_true', help='reuse the notebooks executed last time (quick look)')
    ap.add_argument('--allow-errors', action='store_true', help='build the site even if a notebook raises')
    ap.add_argument('--execute-one', nargs=3, metavar=('SRC', 'DEST', 'KEY'), help=argparse.SUPPRESS)
    ap.add_argument('--process-one', nargs=2, metavar=('SRC', 'DEST'), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.execute_one: return execute(*a.execute_one)
    if a.process_one: return process_one(*a.process_one)
    t0 = time.time()
    nbs = notebooks()
    for f in prune_stale(nbs): print(f'removed {f.relative_to(ROOT)}: its notebook is no longer in nbs/')
    errors = [] if a.no_execute else execute_all(nbs, a.jobs, a.force)
    if errors and not a.allow_errors:
        sys.stderr.write('\n'.join(errors) + '\n')
        sys.exit(f'docs: {len(errors)} notebook(s) raised; fix them (or pass --allow-errors to see the site anyway)')
    t1 = time.time()
    perrors = process(nbs, a.jobs)
    if perrors and not a.allow_errors:
        sys.stderr.write('\n'.join(perrors) + '\n')
        sys.exit(f'docs: nbdev could not process {len(perrors)} notebook(s); an import cell may use earlier names')
    errors += perrors
    t2 = time.time()
    from nbdev.config import get_config
    cfg = get_config()
    tidy(nbs, cfg.doc_host + cfg.doc_baseurl)
    render(nbs)
    print(f'docs: {len(nbs)} pages in {SITE.relative_to(ROOT)}/ in {time.time() - t0:.0f} s '
          f'(execute {t1 - t0:.0f} s, nbdev processing {t2 - t1:.0f} s, render {time.time() - t2:.0f} s)')
    if errors: print(f'docs: WARNING: {len(errors)} notebook(s) raised (--allow-errors)', file=sys.stderr)


if __name__ == '__main__': main()
